-- The original collector's world, unchanged: its four tables as views over nfpg's, with its
-- column names, types of meaning and local-time timestamps, and its `netflow_user` role, which
-- reads them without a schema prefix. The original's queries, scripts and dashboards run as
-- they are (README, "Migrating from the original collector").
--
-- Times: nfpg's own tables hold timestamptz (an instant, shown in the session's TimeZone); the
-- original stored local naive datetimes. The views give `timestamp` (without time zone): the
-- instant in the session's TimeZone, which is what the original wrote for a collector and a
-- reader in the same zone. Comparing such a column with now() converts it back, so
-- `flow_start >= now() - interval '1 hour'` means what it meant (except in the hour a DST
-- change repeats). That comparison cannot use the BRIN index or prune partitions (both sit on
-- the timestamptz columns, and the conversion depends on the session's TimeZone, so no index
-- can be built on it): large windows are faster on `flows` / `flows_with_app`.

-- Every flow, as the original's netflow_flows row. nfpg's flows have no stable row id (COPY
-- into day partitions, no sequence on the hot path): id is NULL, kept so the columns stay in
-- the original's order. created_at (the original's insert time) is the arrival time.
CREATE VIEW {schema}.netflow_flows AS
SELECT NULL::int8                                              AS id,
       f.flow_start::timestamp                                 AS flow_start,
       f.flow_end::timestamp                                   AS flow_end,
       f.src_addr                                              AS src_ip,
       f.dst_addr                                              AS dst_ip,
       f.src_port,
       f.dst_port,
       f.protocol,
       f.packets,
       f.bytes,
       (extract(epoch FROM f.flow_end - f.flow_start) * 1000)::int8 AS flow_duration_ms,
       f.exporter                                              AS exporter_ip,
       f.input_if                                              AS input_snmp,
       f.output_if                                             AS output_snmp,
       f.tcp_flags,
       f.tos                                                   AS src_tos,
       f.tos                                                   AS dst_tos,
       f.src_as,
       f.dst_as,
       f.next_hop,
       f.vlan                                                  AS vlan_id,
       CASE
           WHEN f.protocol IN (6, 17) THEN coalesce(
               a.name,
               CASE WHEN f.dst_port < 1024 THEN 'system-' ELSE 'user-' END || f.dst_port)
           ELSE coalesce(p.name, 'protocol-' || f.protocol)
       END                                                     AS application_name,
       false                                                   AS bidirectional,
       f.netflow_version,
       f.received_at::timestamp                                AS received_at,
       f.received_at::timestamp                                AS created_at
FROM {schema}.flows f
LEFT JOIN {schema}.app_names a ON f.protocol IN (6, 17) AND a.port = f.dst_port
LEFT JOIN {schema}.protocol_names p ON p.protocol = f.protocol;

COMMENT ON VIEW {schema}.netflow_flows IS
    'The original collector''s netflow_flows: one row per flow, local naive timestamps (session TimeZone), id NULL (no stable id), created_at = received_at, dst_tos = src_tos = tos.';

-- One row per exporter address, as the original kept it; nfpg keeps one per address, engine
-- and source id / observation domain, summed here. version and sampling_rate are those of the
-- address's most recently seen row; nfpg's sampling interval 0 (unsampled) is the original's
-- sampling_rate 1. The totals lag up to nfpg's exporter update interval (5 s).
CREATE VIEW {schema}.netflow_exporters AS
SELECT e.exporter                                              AS exporter_ip,
       NULL::text                                              AS exporter_name,
       min(e.first_seen)::timestamp                            AS first_seen,
       max(e.last_seen)::timestamp                             AS last_seen,
       sum(e.flows)::int8                                      AS total_flows,
       sum(e.bytes)::int8                                      AS total_bytes,
       ((array_agg(e.netflow_version ORDER BY e.last_seen DESC))[1])::int4 AS version,
       ((array_agg(greatest(coalesce(e.sampling_interval, 0), 1) ORDER BY e.last_seen DESC))[1])::int4
                                                               AS sampling_rate
FROM {schema}.exporters e
GROUP BY e.exporter;

COMMENT ON VIEW {schema}.netflow_exporters IS
    'The original collector''s netflow_exporters: per address (nfpg''s rows per engine and source id summed), local naive timestamps, sampling_rate 1 = unsampled, exporter_name NULL.';

-- The hourly aggregation the original described and never filled, from nfpg's
-- flow_aggregates_hourly summed over exporter and application name. Periods are UTC hours
-- shown in local time; totals are as exported (the sampling-upscaled estimates are est_* in
-- flow_aggregates_hourly).
CREATE VIEW {schema}.netflow_aggregates AS
SELECT a.hour::timestamp                                       AS period_start,
       (a.hour + interval '1 hour')::timestamp                 AS period_end,
       a.src_addr                                              AS src_ip,
       a.dst_addr                                              AS dst_ip,
       a.protocol,
       sum(a.bytes)::int8                                      AS total_bytes,
       sum(a.packets)::int8                                    AS total_packets,
       sum(a.flows)::int8                                      AS flow_count
FROM {schema}.flow_aggregates_hourly a
GROUP BY a.hour, a.src_addr, a.dst_addr, a.protocol;

COMMENT ON VIEW {schema}.netflow_aggregates IS
    'The original collector''s netflow_aggregates: per hour (local naive times), source, destination and protocol, from flow_aggregates_hourly.';

-- The original's debug log, from nfpg's samples of rejected datagrams (PARSE_ERROR rows).
-- nfpg writes no PACKET_RECEIVED row per datagram: the original committed one row per datagram
-- received, which bounded it to a few thousand datagrams a second; nfpg counts datagrams in its
-- statistics (/metrics, the statistics line) and samples only the rejected ones, rate-limited.
CREATE VIEW {schema}.netflow_debug_log AS
SELECT m.exporter                                              AS exporter_ip,
       m.received_at::timestamp                                AS event_time,
       'PARSE_ERROR'::text                                     AS event_type,
       m.reason || coalesce(': ' || m.detail, '')              AS message,
       m.head                                                  AS packet_data,
       m.length                                                AS packet_length
FROM {schema}.malformed_datagrams m;

COMMENT ON VIEW {schema}.netflow_debug_log IS
    'The original collector''s netflow_debug_log: rejected-datagram samples as PARSE_ERROR rows (message = reason: offending value); no PACKET_RECEIVED rows.';

-- The original's reader role. Roles belong to the cluster, not the database: created only when
-- missing, NOLOGIN (nfpg gives it LOGIN and DB_PASSWORD on its private server; elsewhere the
-- administrator does). It reads everything in the schema, now and later (default privileges
-- for the tables nfpg creates, such as new day partitions), writes nothing, and finds the
-- schema first in this database. A migration run by a role that may not create or alter roles
-- skips what it may not do with a NOTICE; the views are there either way.
DO $role$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'netflow_user') THEN
        IF NOT (SELECT r.rolsuper OR r.rolcreaterole FROM pg_roles r WHERE r.rolname = current_user) THEN
            RAISE NOTICE 'role netflow_user does not exist and % may not create roles: skipped (the views are in schema %; grant them to a reader yourself)',
                current_user, {schema_literal};
            RETURN;
        END IF;
        BEGIN
            CREATE ROLE netflow_user NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- made by a migration of another database of the cluster meanwhile
        END;
    END IF;
    BEGIN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO netflow_user', {schema_literal});
        EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO netflow_user', {schema_literal});
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT ON TABLES TO netflow_user',
                       {schema_literal});
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'granting netflow_user read access to schema % as %: %, skipped',
            {schema_literal}, current_user, SQLERRM;
    END;
    BEGIN
        EXECUTE format('ALTER ROLE netflow_user IN DATABASE %I SET search_path = %I, public',
                       current_database(), {schema_literal});
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'setting netflow_user''s search_path as %: %, skipped (run ALTER ROLE netflow_user IN DATABASE % SET search_path = %, public)',
            current_user, SQLERRM, current_database(), {schema_literal};
    END;
END
$role$;
