-- Exporter health: datagrams per second over the collector's last update interval.
ALTER TABLE {schema}.exporters ADD COLUMN datagrams_per_s float8;
