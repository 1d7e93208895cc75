-- Flow records, one row per NetFlow record.
--
-- Partitioned by day of received_at: the receive time is the collector's own clock, so it
-- only moves forward and every batch lands in one partition (COPY into a partitioned table
-- is fast only when rows for one partition arrive together), and an exporter with a wrong
-- clock cannot scatter rows over old partitions. Retention is a partition drop.
--
-- Indexes: BRIN on the two times only. A B-tree per address costs more than half of the
-- ingest rate (see README, "Indexes"); ensure_flow_partitions() adds the address and
-- exporter B-trees to a day's partition once that day is over, so lookups by address over
-- past days are indexed while the partition being written stays cheap.
CREATE TABLE {schema}.flows (
    flow_start        timestamptz NOT NULL,
    flow_end          timestamptz NOT NULL,
    src_addr          inet        NOT NULL,
    dst_addr          inet        NOT NULL,
    next_hop          inet,
    src_port          int4,
    dst_port          int4,
    protocol          int2        NOT NULL,
    tcp_flags         int2,
    tos               int2,
    input_if          int8,
    output_if         int8,
    packets           int8        NOT NULL,
    bytes             int8        NOT NULL,
    src_as            int8,
    dst_as            int8,
    src_mask          int2,
    dst_mask          int2,
    exporter          inet        NOT NULL,
    engine_type       int2,
    engine_id         int2,
    sampling_interval int4        NOT NULL DEFAULT 0,
    sampling_mode     int2,
    netflow_version   int2        NOT NULL,
    received_at       timestamptz NOT NULL
) PARTITION BY RANGE (received_at);

COMMENT ON COLUMN {schema}.flows.sampling_interval IS
    'Exporter sampling interval (1 in N); 0 = unsampled. Counters are stored as exported: multiply packets and bytes by greatest(sampling_interval, 1) to estimate.';

-- Catches rows outside every day partition (a clock far off); stays empty in normal use.
CREATE TABLE {schema}.flows_default PARTITION OF {schema}.flows DEFAULT;

CREATE INDEX flows_flow_start_brin ON {schema}.flows USING brin (flow_start);
CREATE INDEX flows_received_at_brin ON {schema}.flows USING brin (received_at);

-- Creates the day partitions first_day .. first_day + days - 1 (UTC days) where missing, and
-- the address B-trees on partitions of days before today. Safe to run concurrently from
-- several collectors. Returns the number of partitions created.
CREATE FUNCTION {schema}.ensure_flow_partitions(first_day date, days int)
RETURNS int LANGUAGE plpgsql AS $fn$
DECLARE
    d date;
    part text;
    created int := 0;
BEGIN
    FOR i IN 0 .. days - 1 LOOP
        d := first_day + i;
        part := 'flows_' || to_char(d, 'YYYYMMDD');
        IF to_regclass(format('%I.%I', {schema_literal}, part)) IS NULL THEN
            BEGIN
                EXECUTE format(
                    'CREATE TABLE %I.%I PARTITION OF %I.flows FOR VALUES FROM (%L) TO (%L)',
                    {schema_literal}, part, {schema_literal},
                    d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
                created := created + 1;
            EXCEPTION WHEN duplicate_table THEN
                NULL; -- another collector made it first
            END;
        END IF;
    END LOOP;
    RETURN created;
END
$fn$;

-- The day partitions of flows (not the default one), with their day.
CREATE FUNCTION {schema}.flow_day_partitions()
RETURNS TABLE (relname name, day date) LANGUAGE sql STABLE AS $fn$
    SELECT c.relname, to_date(substr(c.relname, 7), 'YYYYMMDD')
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_class p ON p.oid = i.inhparent
    JOIN pg_namespace n ON n.oid = p.relnamespace
    WHERE n.nspname = {schema_literal} AND p.relname = 'flows'
      AND c.relname ~ '^flows_[0-9]{8}$'
$fn$;

-- Adds the lookup B-trees (source, destination, exporter) to day partitions that are no
-- longer written, i.e. days before `before_day`.
CREATE FUNCTION {schema}.index_closed_flow_partitions(before_day date)
RETURNS int LANGUAGE plpgsql AS $fn$
DECLARE
    part record;
    made int := 0;
BEGIN
    FOR part IN
        SELECT d.relname FROM {schema}.flow_day_partitions() d WHERE d.day < before_day
    LOOP
        IF to_regclass(format('%I.%I', {schema_literal}, part.relname || '_src_addr')) IS NULL THEN
            EXECUTE format('CREATE INDEX %I ON %I.%I (src_addr)', part.relname || '_src_addr', {schema_literal}, part.relname);
            EXECUTE format('CREATE INDEX %I ON %I.%I (dst_addr)', part.relname || '_dst_addr', {schema_literal}, part.relname);
            EXECUTE format('CREATE INDEX %I ON %I.%I (exporter)', part.relname || '_exporter', {schema_literal}, part.relname);
            made := made + 1;
        END IF;
    END LOOP;
    RETURN made;
END
$fn$;

-- Retention: drops day partitions older than `keep_days` days. Returns how many.
CREATE FUNCTION {schema}.drop_flow_partitions_older_than(keep_days int)
RETURNS int LANGUAGE plpgsql AS $fn$
DECLARE
    part record;
    dropped int := 0;
BEGIN
    FOR part IN
        SELECT d.relname FROM {schema}.flow_day_partitions() d
        WHERE d.day < (now() AT TIME ZONE 'UTC')::date - keep_days
    LOOP
        EXECUTE format('DROP TABLE %I.%I', {schema_literal}, part.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$fn$;
