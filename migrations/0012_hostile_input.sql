-- Hardening against exporters that lie (issue "locked doors and hostile input").

-- Flows whose times lie far from their arrival (an exporter clock far ahead, or a flow that
-- ended long before it arrived; nfpg's --max-ahead and --max-behind): stored as sent, with
-- this set, and counted (flows_time_suspect). NULL for every other flow. Nullable without a
-- default: a catalog change only, no table rewrite.
ALTER TABLE {schema}.flows ADD COLUMN time_suspect boolean;
COMMENT ON COLUMN {schema}.flows.time_suspect IS
    'true: the flow''s start or end lies more than --max-ahead after its arrival or its end more than --max-behind before it (exporter clock wrong); NULL otherwise.';

-- Datagrams whose sequence number no real exporter run explains (a jump no exporter can make
-- in the time between them, never confirmed by a second datagram): counted here, not as loss.
ALTER TABLE {schema}.exporters ADD COLUMN suspect_datagrams int8 NOT NULL DEFAULT 0;

-- The analysis functions also bound received_at (so only the partitions of the window are
-- read) and leave out flows with suspect times, which would otherwise stay "recent" for as
-- long as their exporter's clock is ahead. A flow that started in the window arrived in it
-- too, so for exporters with sane clocks the results are unchanged.
CREATE OR REPLACE FUNCTION {schema}.top_talkers(hours int DEFAULT 1, top int DEFAULT 10)
RETURNS TABLE (src_addr inet, bytes numeric, packets numeric, flows int8)
LANGUAGE sql STABLE AS $fn$
    SELECT f.src_addr, sum(f.bytes), sum(f.packets), count(*)
    FROM {schema}.flows f
    WHERE f.received_at >= now() - make_interval(hours => hours)
      AND f.flow_start >= now() - make_interval(hours => hours)
      AND f.time_suspect IS NOT TRUE
    GROUP BY f.src_addr
    ORDER BY 2 DESC
    LIMIT top
$fn$;

CREATE OR REPLACE FUNCTION {schema}.anomalies(minutes int DEFAULT 5, min_flows int DEFAULT 1000)
RETURNS TABLE (src_addr inet, destinations int8, bytes numeric, flows int8)
LANGUAGE sql STABLE AS $fn$
    SELECT f.src_addr, count(DISTINCT f.dst_addr), sum(f.bytes), count(*)
    FROM {schema}.flows f
    WHERE f.received_at >= now() - make_interval(mins => minutes)
      AND f.flow_start >= now() - make_interval(mins => minutes)
      AND f.time_suspect IS NOT TRUE
    GROUP BY f.src_addr
    HAVING count(*) > min_flows
    ORDER BY 4 DESC
$fn$;
