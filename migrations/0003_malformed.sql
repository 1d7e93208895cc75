-- Samples of rejected datagrams, rate-limited per exporter by the collector; every rejected
-- datagram is counted in the statistics whether or not it is sampled here.
CREATE TABLE {schema}.malformed_datagrams (
    id          bigserial   PRIMARY KEY,
    exporter    inet        NOT NULL,
    received_at timestamptz NOT NULL,
    reason      text        NOT NULL,
    -- The offending value: the version, the count, or the length.
    detail      int8,
    length      int4        NOT NULL,
    -- The first bytes of the datagram.
    head        bytea       NOT NULL
);
CREATE INDEX malformed_datagrams_received_at ON {schema}.malformed_datagrams USING brin (received_at);
