-- The original collector's two analysis queries, as functions.

-- Top talkers: per source address over the last `hours` hours, by bytes.
CREATE FUNCTION {schema}.top_talkers(hours int DEFAULT 1, top int DEFAULT 10)
RETURNS TABLE (src_addr inet, bytes numeric, packets numeric, flows int8)
LANGUAGE sql STABLE AS $fn$
    SELECT f.src_addr, sum(f.bytes), sum(f.packets), count(*)
    FROM {schema}.flows f
    WHERE f.flow_start >= now() - make_interval(hours => hours)
    GROUP BY f.src_addr
    ORDER BY 2 DESC
    LIMIT top
$fn$;

-- Anomalies: sources with more than `min_flows` flows in the last `minutes` minutes (scans,
-- floods), with how many distinct destinations they reached.
CREATE FUNCTION {schema}.anomalies(minutes int DEFAULT 5, min_flows int DEFAULT 1000)
RETURNS TABLE (src_addr inet, destinations int8, bytes numeric, flows int8)
LANGUAGE sql STABLE AS $fn$
    SELECT f.src_addr, count(DISTINCT f.dst_addr), sum(f.bytes), count(*)
    FROM {schema}.flows f
    WHERE f.flow_start >= now() - make_interval(mins => minutes)
    GROUP BY f.src_addr
    HAVING count(*) > min_flows
    ORDER BY 4 DESC
$fn$;
