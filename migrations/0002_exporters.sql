-- Per exporter (address + engine) statistics, updated in place every few seconds by each
-- collector with the deltas it counted since its last update.
CREATE TABLE {schema}.exporters (
    exporter          inet        NOT NULL,
    engine_type       int2        NOT NULL,
    engine_id         int2        NOT NULL,
    first_seen        timestamptz NOT NULL,
    last_seen         timestamptz NOT NULL,
    datagrams         int8        NOT NULL DEFAULT 0,
    flows             int8        NOT NULL DEFAULT 0,
    packets           int8        NOT NULL DEFAULT 0,
    bytes             int8        NOT NULL DEFAULT 0,
    -- Flows the exporter sent that never arrived, from its sequence numbers.
    flows_lost        int8        NOT NULL DEFAULT 0,
    -- Sequence resets seen (exporter restarts); not counted as loss.
    restarts          int8        NOT NULL DEFAULT 0,
    last_sequence     int8,
    netflow_version   int2,
    sampling_interval int4,
    sampling_mode     int2,
    PRIMARY KEY (exporter, engine_type, engine_id)
);
