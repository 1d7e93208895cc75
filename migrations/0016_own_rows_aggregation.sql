-- Rows a COPY stores behind the aggregates' watermark (replayed from the spool, or committed
-- late) are added to the hourly aggregates in the COPY's own transaction (0013). 0013 found
-- them again in flows by arrival time and xmin; with the received_at BRIN's newest pages not
-- yet summarized, that scanned the whole unsummarized tail of the day partition for every
-- COPY (measured: about 1 s per COPY on a 5 M-row partition, replay after an outage down to
-- 20,000 rows/s). Now the writer copies such a COPY's rows into a temporary table of its
-- session as well and adds them from there: one rule, over any relation with flows' columns.
--
-- A COPY that adds its own rows records that here (its transaction and the watermark it
-- read): a fold of a pending range that runs after it committed (the watermark moved before
-- the COPY began, the range was not folded yet) sees its rows too and leaves them out, so
-- they are counted once. Entries go once no pending range starts below their watermark.
CREATE TABLE {schema}.flow_aggregates_own (
    xact  xid         NOT NULL,
    upto  timestamptz NOT NULL
);

CREATE FUNCTION {schema}.add_rows_to_flow_aggregates(src regclass, from_ts timestamptz,
                                                     to_ts timestamptz, own_only boolean)
RETURNS int8 LANGUAGE plpgsql AS $fn$
DECLARE
    n int8;
    -- A fold of flows leaves out the rows their own COPY added.
    skip_own boolean := NOT own_only AND src = '{schema}.flows'::regclass;
BEGIN
    EXECUTE format($q$
    WITH g AS (
        SELECT date_trunc('hour', f.flow_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
               f.exporter, f.src_addr, f.dst_addr, f.protocol,
               CASE
                   WHEN f.protocol IN (6, 17) AND f.dst_port IS NOT NULL THEN coalesce(
                       an.name,
                       CASE WHEN f.dst_port < 1024 THEN 'system-' ELSE 'user-' END || f.dst_port)
                   ELSE coalesce(pn.name, 'protocol-' || f.protocol)
               END AS app,
               count(*) AS flows,
               least(sum(f.packets), 9223372036854775807)::int8 AS packets,
               least(sum(f.bytes), 9223372036854775807)::int8 AS bytes,
               sum(greatest(f.sampling_interval, 1)) AS est_flows,
               least(sum(f.packets::numeric * greatest(f.sampling_interval, 1)),
                     9223372036854775807)::int8 AS est_packets,
               least(sum(f.bytes::numeric * greatest(f.sampling_interval, 1)),
                     9223372036854775807)::int8 AS est_bytes
        FROM %s f
        LEFT JOIN {schema}.app_names an ON f.protocol IN (6, 17) AND an.port = f.dst_port
        LEFT JOIN {schema}.protocol_names pn ON pn.protocol = f.protocol
        WHERE f.received_at >= $1 AND f.received_at < $2
          -- Flows whose clock lies (time_suspect) are stored but left out of the analysis.
          AND f.time_suspect IS NOT TRUE
          AND (NOT $3 OR f.xmin = ((txid_current() %% 4294967296)::text)::xid)
          AND (NOT $4 OR NOT EXISTS (
              SELECT 1 FROM {schema}.flow_aggregates_own o
              WHERE o.xact = f.xmin AND f.received_at < o.upto))
        GROUP BY 1, 2, 3, 4, 5, 6
    ), ins AS (
        INSERT INTO {schema}.flow_aggregates_hourly
            (hour, exporter, src_addr, dst_addr, protocol, application_name,
             flows, packets, bytes, est_flows, est_packets, est_bytes)
        SELECT hour, exporter, src_addr, dst_addr, protocol, app,
               flows, packets, bytes, est_flows, est_packets, est_bytes
        FROM g
    )
    SELECT coalesce(sum(g.flows), 0) FROM g
    $q$, src) INTO n USING from_ts, to_ts, own_only, skip_own;
    RETURN n;
END
$fn$;

-- 0013's entry point, now over the rule above (the housekeeper's fold, and own_only where a
-- writer could not make its temporary table).
CREATE OR REPLACE FUNCTION {schema}.add_to_flow_aggregates(from_ts timestamptz, to_ts timestamptz,
                                                           own_only boolean)
RETURNS int8 LANGUAGE sql AS $fn$
    SELECT {schema}.add_rows_to_flow_aggregates('{schema}.flows'::regclass, from_ts, to_ts, own_only)
$fn$;

-- What a COPY calls for its rows below the watermark it read (`to_ts`): adds them from `src`
-- (its temporary copy, or flows by xmin) and records that it did.
CREATE FUNCTION {schema}.add_own_rows_to_flow_aggregates(src regclass, from_ts timestamptz,
                                                         to_ts timestamptz)
RETURNS int8 LANGUAGE plpgsql AS $fn$
DECLARE
    n int8;
BEGIN
    n := {schema}.add_rows_to_flow_aggregates(src, from_ts, to_ts,
                                              src = '{schema}.flows'::regclass);
    INSERT INTO {schema}.flow_aggregates_own (xact, upto)
    VALUES (((txid_current() % 4294967296)::text)::xid, to_ts);
    RETURN n;
END
$fn$;

-- 0013's fold, and then the records of COPYs no pending range can reach any more.
CREATE OR REPLACE FUNCTION {schema}.fold_flow_aggregates()
RETURNS int8 LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
    n int8 := 0;
BEGIN
    FOR r IN SELECT p.from_ts, p.to_ts FROM {schema}.flow_aggregates_pending p
             ORDER BY p.from_ts FOR UPDATE SKIP LOCKED
    LOOP
        n := n + {schema}.add_to_flow_aggregates(r.from_ts, r.to_ts, false);
        DELETE FROM {schema}.flow_aggregates_pending WHERE from_ts = r.from_ts;
    END LOOP;
    DELETE FROM {schema}.flow_aggregates_own o
    WHERE NOT EXISTS (SELECT 1 FROM {schema}.flow_aggregates_pending p WHERE p.from_ts < o.upto);
    RETURN n;
END
$fn$;
