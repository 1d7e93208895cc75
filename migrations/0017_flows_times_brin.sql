-- One BRIN index over both times (received_at, flow_start) in place of one per time.
--
-- PostgreSQL 15's brininsert() looks up the index's metapage and revmap for every row it
-- inserts, whether or not the row's block range is summarized yet, so each BRIN index costs
-- a fixed amount per row however few columns it has. One index over both columns pays that
-- once. Measured on the development machine (2 cores, PostgreSQL 15.18, nfpg's private
-- server): server-side COPY of 9.0 M of nfpg's v5 rows, 3 alternating rounds, backend CPU
-- 15.8 s with the two indexes, 14.6 s with one over both, 13.6 s with none; in nfpg's own
-- step (4 writers, 21,000 datagrams/s, 12.6 M flows, 2 alternating runs each) the COPY
-- backends used 27.3 / 27.6 s with the two and 24.9 / 24.4 s with one.
--
-- Nothing a query can use is lost: a multicolumn BRIN index serves conditions on any subset
-- of its columns (PostgreSQL's documentation, "Multicolumn Indexes"), so `received_at`
-- ranges (the aggregates' fold, the dashboard, partition-local scans) and `flow_start`
-- ranges (top talkers, anomalies) still get a bitmap index scan; each range's summary holds
-- both columns' min and max. tests/schema.rs checks both plans.
--
-- On an existing database this builds the new index over every flows partition: one
-- sequential read of the stored flows (BRIN builds do not sort); COPYs into flows wait for it.
-- `nfpg run` applies migrations before it starts receiving, so on a large database run
-- `nfpg migrate` ahead of the upgrade. Measured here: 2.5 s for a 12.6 M-row, 2.2 GB
-- partition in the page cache; from disk, about the time to read the flows once.
DROP INDEX IF EXISTS {schema}.flows_flow_start_brin;
DROP INDEX IF EXISTS {schema}.flows_received_at_brin;
CREATE INDEX flows_times_brin ON {schema}.flows USING brin (received_at, flow_start);
