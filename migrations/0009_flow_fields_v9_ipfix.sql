-- Fields NetFlow v9 and IPFIX records carry and v5 does not, NULL where a record has none.
-- Adding nullable columns without defaults is a catalog change only: no table rewrite.
ALTER TABLE {schema}.flows
    ADD COLUMN source_id          int8,
    ADD COLUMN direction          int2,
    ADD COLUMN end_reason         int2,
    ADD COLUMN vlan               int4,
    ADD COLUMN mpls_label         int4,
    ADD COLUMN icmp_type          int4,
    ADD COLUMN post_nat_src_addr  inet,
    ADD COLUMN post_nat_dst_addr  inet,
    ADD COLUMN post_nat_src_port  int4,
    ADD COLUMN post_nat_dst_port  int4,
    ADD COLUMN sampling_source    int2;

COMMENT ON COLUMN {schema}.flows.source_id IS
    'v9 source id or IPFIX observation domain; 0 for v5.';
COMMENT ON COLUMN {schema}.flows.direction IS 'flowDirection (61): 0 ingress, 1 egress.';
COMMENT ON COLUMN {schema}.flows.end_reason IS
    'flowEndReason (136): 1 idle timeout, 2 active timeout, 3 end of flow, 4 forced end, 5 lack of resources.';
COMMENT ON COLUMN {schema}.flows.icmp_type IS 'ICMP type * 256 + code, when exported as its own field.';
COMMENT ON COLUMN {schema}.flows.sampling_source IS
    'Where sampling_interval came from: 0 none, 1 v5 header, 2 the data record, 3 options data for its sampler id, 4 options data for the exporter, 5 IPFIX packet interval/space, 6 operator override.';
