//! The bodies of the fuzz targets for this crate's decoders, in one place shared by the
//! cargo-fuzz targets (`fuzz/fuzz_targets/`) and the deterministic corpus replay that runs in
//! `cargo test` (`tests/fuzz_corpus.rs` in the collector crate), so the two cannot drift.
//!
//! Each function takes arbitrary bytes and checks only what must hold for *any* input: no
//! panic, no allocation beyond what the input's size allows, no hang, and a few cheap
//! invariants of the decoder it drives (a rejected datagram appends nothing, rows appended
//! never exceed what the bytes can hold, no column grows past the capacity reserved for it).
//! An invariant that does not hold panics, which is what the fuzzer reports.
//!
//! Not part of the API: hidden from the documentation, used by no decoder.

use std::collections::HashMap;

use crate::columns::{Columns, DatagramMeta};
use crate::netflow::{self as nf, Set, Template, TemplateRecord};

/// The exporter and receive time every target decodes with.
pub const META: DatagramMeta = DatagramMeta {
    exporter: 0xffff_c000_0201, // ::ffff:192.0.2.1
    received_us: 1_700_000_000_000_000,
};

/// The summed capacity of every vector in `cols`: a decoder that keeps to the room it was
/// given leaves it unchanged (the "nothing allocates per datagram" invariant).
pub fn capacities(cols: &Columns) -> usize {
    [
        cols.flow_start_ms.capacity(),
        cols.flow_end_ms.capacity(),
        cols.src_addr.capacity(),
        cols.dst_addr.capacity(),
        cols.next_hop.capacity(),
        cols.src_port.capacity(),
        cols.dst_port.capacity(),
        cols.protocol.capacity(),
        cols.tcp_flags.capacity(),
        cols.tos.capacity(),
        cols.input_if.capacity(),
        cols.output_if.capacity(),
        cols.packets.capacity(),
        cols.bytes.capacity(),
        cols.src_as.capacity(),
        cols.dst_as.capacity(),
        cols.src_mask.capacity(),
        cols.dst_mask.capacity(),
        cols.present.capacity(),
        cols.direction.capacity(),
        cols.end_reason.capacity(),
        cols.vlan.capacity(),
        cols.mpls_label.capacity(),
        cols.icmp_type.capacity(),
        cols.post_nat_src.capacity(),
        cols.post_nat_dst.capacity(),
        cols.post_nat_src_port.capacity(),
        cols.post_nat_dst_port.capacity(),
        cols.sampling_interval.capacity(),
        cols.sampling_source.capacity(),
        cols.datagrams.capacity(),
    ]
    .iter()
    .sum()
}

/// Panics unless `cols` is exactly as before a rejected datagram: same rows, same datagram
/// records, still aligned.
pub fn assert_unchanged(cols: &Columns, rows: usize, datagrams: usize, what: &str) {
    assert_eq!(cols.len(), rows, "{what}: a rejected input appended rows");
    assert_eq!(
        cols.datagrams.len(),
        datagrams,
        "{what}: a rejected input appended datagram records"
    );
    assert!(cols.is_aligned(), "{what}: columns misaligned");
}

/// Target `v5`: one datagram through [`crate::v5::decode`] into columns with room for a
/// whole datagram (as the shard guarantees), twice: into empty columns and into columns that
/// already hold rows.
pub fn v5(data: &[u8]) {
    let mut cols = Columns::with_capacity(2 * crate::columns::MAX_FLOWS_PER_DATAGRAM);
    let cap = capacities(&cols);
    for _ in 0..2 {
        let (rows, dgrams) = (cols.len(), cols.datagrams.len());
        let valid = crate::v5::validate(data);
        match crate::v5::decode(data, &META, &mut cols) {
            Ok(n) => {
                assert_eq!(valid, Ok(n), "v5: validate and decode disagree");
                let n = usize::from(n);
                assert!((1..=30).contains(&n), "v5: {n} flows");
                assert_eq!(data.len(), 24 + 48 * n, "v5: length not 24 + 48·count");
                assert_eq!(cols.len(), rows + n, "v5: rows appended ≠ count");
                assert_eq!(cols.datagrams.len(), dgrams + 1);
                assert!(cols.is_aligned(), "v5: columns misaligned");
            }
            Err(e) => {
                assert_eq!(valid, Err(e), "v5: validate and decode disagree");
                assert_unchanged(&cols, rows, dgrams, "v5");
                let _ = e.to_string();
                return;
            }
        }
    }
    assert_eq!(capacities(&cols), cap, "v5: a column grew");
}

/// Target `netflow_wire`: one v9 or IPFIX message through the stateless building blocks of
/// [`crate::netflow`], in the order a collector applies them: the header, every set, template
/// and options template records (each also through its stored form,
/// [`Template::to_bytes`] → [`Template::from_bytes`], which must give it back), compiled
/// plans, data sets decoded with the templates learned earlier in the same message (into
/// columns sized by [`nf::max_records`], which must then suffice), options data. Also reads
/// the whole input as a stored template.
pub fn netflow_wire(data: &[u8]) {
    if let Ok(t) = Template::from_bytes(data) {
        let again = Template::from_bytes(&t.to_bytes());
        assert_eq!(
            again.as_ref(),
            Ok(&t),
            "stored template does not round-trip"
        );
    }
    let Ok((hdr, body)) = nf::parse_header(data) else {
        return;
    };
    assert!(
        body.len() + hdr.version.header_len() == data.len(),
        "netflow: header and body do not add up"
    );
    let _ = hdr.export_ms();
    let mut templates: HashMap<u16, (Template, Option<nf::Plan>)> = HashMap::new();
    let mut set_bytes = 0usize;
    for set in nf::sets(hdr.version, body) {
        let Ok((at, set)) = set else {
            break;
        };
        assert!(at >= hdr.version.header_len() + nf::SET_HEADER_LEN && at <= data.len());
        let (records, options) = match set {
            Set::Templates(b) => (nf::parse_templates(hdr.version, b), false),
            Set::OptionsTemplates(b) => (nf::parse_options_templates(hdr.version, b), true),
            Set::Reserved { body: b, .. } => {
                set_bytes += b.len() + nf::SET_HEADER_LEN;
                continue;
            }
            Set::Data { template_id, body } => {
                set_bytes += body.len() + nf::SET_HEADER_LEN;
                match templates.get(&template_id) {
                    Some((_, Some(plan))) => data_set(plan, &hdr, body),
                    Some((t, None)) => {
                        if let Ok(recs) = nf::decode_options(t, hdr.version, body) {
                            assert!(recs.len() <= body.len(), "options: more records than bytes");
                            for r in &recs {
                                let _ = (r.interval(), r.has_sampling());
                            }
                        }
                    }
                    None => {}
                }
                continue;
            }
        };
        let Ok(records) = records else { continue };
        for rec in records {
            match rec {
                TemplateRecord::Define(t) => {
                    assert!(
                        options || !t.is_options(),
                        "a data template with scope fields"
                    );
                    let stored = Template::from_bytes(&t.to_bytes());
                    assert_eq!(stored.as_ref(), Ok(&t), "template does not round-trip");
                    let plan = if t.is_options() {
                        None
                    } else {
                        match nf::Plan::new(&t, hdr.version) {
                            Ok(p) => {
                                assert!(p.min_record_len() >= 1, "plan: empty records");
                                assert_eq!(p.template_id(), t.id);
                                Some(p)
                            }
                            Err(e) => {
                                let _ = (e.to_string(), e.reason(), e.offset(), e.detail());
                                continue;
                            }
                        }
                    };
                    templates.insert(t.id, (t, plan));
                }
                TemplateRecord::Withdraw { id } => {
                    templates.remove(&id);
                }
                TemplateRecord::WithdrawAll => templates.clear(),
            }
        }
    }
    assert!(
        set_bytes <= body.len(),
        "netflow: sets longer than the body"
    );
}

/// One data set with a compiled plan: validate, size, decode, check.
fn data_set(plan: &nf::Plan, hdr: &nf::Header, body: &[u8]) {
    let Ok(n) = nf::validate_data(plan, body) else {
        return;
    };
    let max = nf::max_records(plan, body.len());
    assert!(n <= max, "data: {n} records, max_records says {max}");
    assert!(
        n * plan.min_record_len() <= body.len(),
        "data: {n} records of at least {} bytes in {} bytes",
        plan.min_record_len(),
        body.len()
    );
    let mut cols = Columns::with_capacity(max);
    let cap = capacities(&cols);
    let lookup = |id: Option<u64>| id.map(|_| (100, crate::columns::SamplingSource::Override));
    let mut ctx = nf::DataContext::new(hdr, &META, &lookup);
    ctx.system_init_ms = Some(1_600_000_000_000);
    let out = nf::decode_data(plan, &ctx, body, &mut cols)
        .unwrap_or_else(|e| panic!("data: validate_data accepted, decode_data refused: {e}"));
    assert_eq!(usize::from(out.records), n, "data: decoded ≠ validated");
    assert_eq!(cols.len(), n);
    assert!(out.padding <= body.len());
    assert!(cols.is_aligned(), "data: columns misaligned");
    assert_eq!(
        capacities(&cols),
        cap,
        "data: a column grew past max_records"
    );
}

/// Target `pcap`: a capture file through [`crate::pcap::udp_packets`]; every datagram it
/// returns lies inside the file.
pub fn pcap(data: &[u8]) {
    if let Ok(packets) = crate::pcap::udp_packets(data) {
        let total: usize = packets.iter().map(|p| p.payload.len()).sum();
        assert!(total <= data.len(), "pcap: more payload than file");
        assert!(
            packets.len() <= data.len() / 16,
            "pcap: more packets than record headers fit"
        );
    }
}
