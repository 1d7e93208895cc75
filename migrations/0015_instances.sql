-- Several collectors writing into one database (issue 14). Each nfpg has an instance name
-- (--instance, NFPG_INSTANCE; default: the host name), stored where one collector's rows could
-- otherwise meet another's. Rows written before this migration keep the instance '' (empty).

-- Exporter statistics: one row per collector instance and exporter (address, engine, source
-- id). Counters were already added as deltas, but last_sequence, sampling and the rate are
-- one collector's view: two collectors hearing one exporter (an anycast address that moved)
-- would overwrite each other's. Readers sum the counters over instances where they want one
-- figure per exporter (the netflow_exporters view does).
ALTER TABLE {schema}.exporters ADD COLUMN instance text NOT NULL DEFAULT '';
ALTER TABLE {schema}.exporters DROP CONSTRAINT exporters_pkey;
ALTER TABLE {schema}.exporters
    ADD PRIMARY KEY (instance, exporter, engine_type, engine_id, source_id);

-- v9/IPFIX templates: per instance, so two collectors never overwrite each other's row; a
-- collector loads its own first and another's where it has none (an exporter that moved).
ALTER TABLE {schema}.templates ADD COLUMN instance text NOT NULL DEFAULT '';
ALTER TABLE {schema}.templates DROP CONSTRAINT templates_pkey;
ALTER TABLE {schema}.templates ADD PRIMARY KEY (instance, exporter, domain, template_id);

-- COPY markers: the instance that wrote (or spooled) the COPY is part of the marker, so two
-- collectors' markers can never be taken for one another (the writer id is random per
-- process as well). A spooled COPY keeps the instance it was first tried with.
ALTER TABLE {schema}.nfpg_copies ADD COLUMN instance text NOT NULL DEFAULT '';
ALTER TABLE {schema}.nfpg_copies DROP CONSTRAINT nfpg_copies_pkey;
ALTER TABLE {schema}.nfpg_copies
    ADD CONSTRAINT nfpg_copies_pkey PRIMARY KEY (instance, writer, seq, part);

-- Exporter statistics exactly once: each update of the exporters table commits a marker here
-- with its rows; an update whose reply was lost (the connection broke after it committed) is
-- found by its marker before its deltas are sent again, so no counter is added twice. Pruned
-- after a day.
CREATE TABLE {schema}.nfpg_exporter_flushes (
    instance     text        NOT NULL,
    flush        int8        NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance, flush)
);

-- Aggregates bookkeeping. The watermark stays one for the whole database: it is moved with
-- the database's clock (now() - lag), every COPY of every instance holds the aggregates' lock
-- shared while it writes, and rows that arrive below the watermark (a collector whose clock
-- is behind, a late commit, a replay) are added by the COPY that stores them. So one hour's
-- flows from several instances are each counted once, whichever instance moves the watermark
-- and whichever folds the range. What is recorded per instance is who did it.
ALTER TABLE {schema}.flow_aggregates_watermark ADD COLUMN moved_by text;
ALTER TABLE {schema}.flow_aggregates_pending ADD COLUMN instance text NOT NULL DEFAULT '';

-- advance_flow_aggregates_watermark with the instance that moves it.
CREATE FUNCTION {schema}.advance_flow_aggregates_watermark(upto timestamptz,
                                                           max_span interval,
                                                           instance text)
RETURNS boolean LANGUAGE plpgsql AS $fn$
DECLARE
    from_ts timestamptz;
    to_ts timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock({schema}.flow_aggregates_lock_key());
    SELECT w.upto INTO from_ts FROM {schema}.flow_aggregates_watermark w FOR UPDATE;
    to_ts := least(upto, from_ts + max_span);
    IF to_ts <= from_ts THEN
        RETURN false;
    END IF;
    INSERT INTO {schema}.flow_aggregates_pending (from_ts, to_ts, instance)
    VALUES (from_ts, to_ts, coalesce(advance_flow_aggregates_watermark.instance, ''));
    UPDATE {schema}.flow_aggregates_watermark
    SET upto = to_ts, moved_by = advance_flow_aggregates_watermark.instance;
    RETURN true;
END
$fn$;

-- The two-argument form (tests, by hand) records no instance.
CREATE OR REPLACE FUNCTION {schema}.advance_flow_aggregates_watermark(upto timestamptz,
                                                                      max_span interval)
RETURNS boolean LANGUAGE sql AS $fn$
    SELECT {schema}.advance_flow_aggregates_watermark(upto, max_span, NULL::text)
$fn$;

-- Partition upkeep (creating, indexing, dropping day partitions) from several collectors at
-- once: nfpg runs it under this advisory lock, one instance at a time (db::with_upkeep_lock).
CREATE FUNCTION {schema}.upkeep_lock_key()
RETURNS int8 LANGUAGE sql IMMUTABLE AS $fn$
    SELECT hashtext('nfpg upkeep ' || {schema_literal})::int8
$fn$;
