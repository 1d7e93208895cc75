-- NetFlow v9 source ids and IPFIX observation domains count their sequence numbers apart:
-- one row per (exporter, engine, domain). v5 rows keep domain 0.
ALTER TABLE {schema}.exporters ADD COLUMN source_id int8 NOT NULL DEFAULT 0;
ALTER TABLE {schema}.exporters DROP CONSTRAINT exporters_pkey;
ALTER TABLE {schema}.exporters ADD PRIMARY KEY (exporter, engine_type, engine_id, source_id);
