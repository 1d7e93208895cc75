//! Hot-path benchmarks: v5, v9 and IPFIX decode (ours next to the `netflow_parser` crate),
//! binary COPY encoding, and the shard → writer hand-off.
//!
//! Run briefly with
//! `cargo bench --bench pipeline -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netflow_parser::variable_versions::{ipfix, v9};
use netflow_parser::{NetflowPacket, NetflowParser};
use nfpg::flow::batch::{v4_to_u128, Columns, DatagramMeta, MAX_FLOWS_PER_DATAGRAM};
use nfpg::flow::handoff::Handoff;
use nfpg_wire::netflow as nf;
use nfpg_wire::v5::encode as v5enc;

/// Flows per batch, as `BATCH_SIZE` defaults to in the collector.
const BATCH_FLOWS: usize = 8192;

/// xorshift32: varied but reproducible field values.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}

/// A v5 datagram of `count` records with varied addresses, ports, counters and times.
fn synthetic_datagram(rng: &mut Rng, sequence: u32, count: u16) -> Vec<u8> {
    let uptime: u32 = 3_600_000 + rng.next() % 1_000_000;
    let header = v5enc::Header {
        sys_uptime: uptime,
        unix_secs: 1_700_000_000 + rng.next() % 86_400,
        unix_nsecs: rng.next() % 1_000_000_000,
        flow_sequence: sequence,
        engine_type: 0,
        engine_id: (sequence % 4) as u8,
        sampling_interval: 0,
    };
    let records: Vec<v5enc::Record> = (0..count)
        .map(|_| {
            let r = rng.next();
            let dst = 0xc000_0200 | (rng.next() & 0xff);
            let packets = 1 + rng.next() % 1000;
            let octets = packets * (40 + rng.next() % 1400);
            // Some flows started before the exporter's uptime wrapped (first > sys_uptime).
            let first = uptime.wrapping_sub(rng.next() % 120_000);
            let last = first.wrapping_add(rng.next() % 60_000);
            let src_port = (1024 + rng.next() % 60_000) as u16;
            let tcp_flags = (rng.next() & 0x3f) as u8;
            let src_as = (rng.next() % 65_000) as u16;
            let dst_as = (rng.next() % 65_000) as u16;
            v5enc::Record {
                src_addr: (0x0a00_0000 | (r & 0x00ff_ffff)).to_be_bytes(),
                dst_addr: dst.to_be_bytes(),
                next_hop: 0x0a00_0001u32.to_be_bytes(),
                input: (r % 16) as u16 + 1,
                output: (r % 8) as u16 + 1,
                packets,
                octets,
                first,
                last,
                src_port,
                dst_port: [80u16, 443, 53, 22, 123][(r % 5) as usize],
                tcp_flags,
                protocol: [6u8, 17, 6, 1][(r >> 8) as usize % 4],
                tos: (r >> 16) as u8 & 0xfc,
                src_as,
                dst_as,
                src_mask: 8 + (r % 25) as u8,
                dst_mask: 8 + (r >> 5) as u8 % 25,
            }
        })
        .collect();
    v5enc::datagram(&header, &records)
}

/// 256 synthetic datagrams of 30 records plus the 23 of the softflowd capture.
fn datagrams() -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9e37_79b9);
    let mut out: Vec<Vec<u8>> = (0..256)
        .map(|i| synthetic_datagram(&mut rng, i * 30, MAX_FLOWS_PER_DATAGRAM as u16))
        .collect();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/softflowd-v5.pcap");
    let file = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let real = nfpg_wire::pcap::udp_packets(&file).expect("parse the softflowd capture");
    assert_eq!(real.len(), 23, "datagrams in {path}");
    out.extend(real.into_iter().map(|p| p.payload));
    out
}

fn meta_for(i: usize) -> DatagramMeta {
    DatagramMeta {
        exporter: v4_to_u128(0x7f00_0002 + (i % 4) as u32),
        received_us: 1_700_000_000_000_000 + i as i64,
    }
}

/// Decodes every datagram with our decoder; returns flows decoded.
fn decode_all(dgs: &[Vec<u8>], metas: &[DatagramMeta], batch: &mut Columns) -> u64 {
    let mut flows = 0u64;
    for (d, meta) in dgs.iter().zip(metas) {
        if !batch.has_room_for(MAX_FLOWS_PER_DATAGRAM) {
            batch.clear();
        }
        match nfpg_wire::v5::decode(d, meta, batch) {
            Ok(n) => flows += u64::from(n),
            Err(e) => panic!("nfpg rejected a valid datagram: {e}"),
        }
    }
    flows
}

/// Flows `netflow_parser` decoded from one datagram.
fn netflow_parser_flows(parser: &mut NetflowParser, d: &[u8]) -> u64 {
    let r = parser.parse_bytes(d);
    assert!(r.error.is_none(), "netflow_parser: {:?}", r.error);
    r.packets
        .iter()
        .map(|p| match p {
            NetflowPacket::V5(v5) => v5.flowsets.len() as u64,
            other => panic!("netflow_parser: not v5: {other:?}"),
        })
        .sum()
}

/// The UDP payloads of a fixture capture.
fn fixture(name: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let file = std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    nfpg_wire::pcap::udp_packets(&file)
        .unwrap_or_else(|e| panic!("parse {path}: {e}"))
        .into_iter()
        .map(|p| p.payload)
        .collect()
}

/// One flow data set of a v9/IPFIX capture, ready to decode: its compiled template, what the
/// header and options data said, and the set's bytes.
struct DataSet {
    plan: usize,
    header: nf::Header,
    system_init_ms: Option<i64>,
    body: Vec<u8>,
}

/// A v9 or IPFIX capture with its templates learned: plans and flow data sets in order.
struct Learned {
    plans: Vec<nf::Plan>,
    sets: Vec<DataSet>,
    flows: u64,
}

/// Walks every datagram once, outside any timing: templates compiled into plans, options
/// data read for the IPFIX system init time, data sets kept with their plan.
fn learn(dgs: &[Vec<u8>]) -> Learned {
    use std::collections::HashMap;
    let mut ids: HashMap<u16, usize> = HashMap::new();
    let mut plans = Vec::new();
    let mut options: HashMap<u16, nf::Template> = HashMap::new();
    let mut init_ms = None;
    let mut sets = Vec::new();
    let mut flows = 0u64;
    for d in dgs {
        let (header, body) = nf::parse_header(d).expect("header");
        for set in nf::sets(header.version, body) {
            match set.expect("set").1 {
                nf::Set::Templates(b) => {
                    for t in nf::parse_templates(header.version, b).expect("templates") {
                        if let nf::TemplateRecord::Define(t) = t {
                            ids.insert(t.id, plans.len());
                            plans.push(nf::Plan::new(&t, header.version).expect("plan"));
                        }
                    }
                }
                nf::Set::OptionsTemplates(b) => {
                    let ts = nf::parse_options_templates(header.version, b).expect("options");
                    for t in ts {
                        if let nf::TemplateRecord::Define(t) = t {
                            options.insert(t.id, t);
                        }
                    }
                }
                nf::Set::Data { template_id, body } => {
                    if let Some(t) = options.get(&template_id) {
                        for r in nf::decode_options(t, header.version, body).expect("options") {
                            init_ms = r.system_init_ms.or(init_ms);
                        }
                        continue;
                    }
                    let plan = ids[&template_id];
                    flows += nf::validate_data(&plans[plan], body).expect("data") as u64;
                    sets.push(DataSet {
                        plan,
                        header,
                        system_init_ms: init_ms,
                        body: body.to_vec(),
                    });
                }
                nf::Set::Reserved { .. } => {}
            }
        }
    }
    Learned { plans, sets, flows }
}

/// Decodes every data set with nfpg-wire's v9/IPFIX decoder; returns flows decoded.
fn decode_sets(l: &Learned, batch: &mut Columns) -> u64 {
    let meta = meta_for(0);
    let mut flows = 0u64;
    for s in &l.sets {
        let plan = &l.plans[s.plan];
        if !batch.has_room_for(nf::max_records(plan, s.body.len())) {
            batch.clear();
        }
        let mut ctx = nf::DataContext::new(&s.header, &meta, &nf::no_sampling);
        ctx.system_init_ms = s.system_init_ms;
        match nf::decode_data(plan, &ctx, &s.body, batch) {
            Ok(o) => flows += u64::from(o.records),
            Err(e) => panic!("nfpg rejected a valid data set: {e}"),
        }
    }
    flows
}

/// Flow records (not options data) `netflow_parser` decoded from one v9/IPFIX datagram.
fn netflow_parser_templated_flows(parser: &mut NetflowParser, d: &[u8]) -> u64 {
    let r = parser.parse_bytes(d);
    assert!(r.error.is_none(), "netflow_parser: {:?}", r.error);
    r.packets
        .iter()
        .map(|p| match p {
            NetflowPacket::V9(p) => p
                .flowsets
                .iter()
                .map(|s| match &s.body {
                    v9::FlowSetBody::Data(d) => d.fields.len() as u64,
                    _ => 0,
                })
                .sum::<u64>(),
            NetflowPacket::IPFix(p) => p
                .flowsets
                .iter()
                .map(|s| match &s.body {
                    ipfix::FlowSetBody::Data(d) => d.fields.len() as u64,
                    _ => 0,
                })
                .sum::<u64>(),
            other => panic!("netflow_parser: not v9/IPFIX: {other:?}"),
        })
        .sum()
}

/// v9 and IPFIX: the softflowd captures (23 datagrams, 688 flows each). Ours: templates
/// learned once, the timed loop decodes only the data sets into columns with room reserved.
/// `netflow_parser`: one parser that has seen every datagram once (so it knows the
/// templates), then parses the same 23 whole datagrams (headers, and the template and
/// options sets of the 2 datagrams that carry them, included).
fn bench_decode_templated(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    for (name, file) in [
        ("v9", "softflowd-v9.pcap"),
        ("ipfix", "softflowd-ipfix.pcap"),
    ] {
        let dgs = fixture(file);
        let learned = learn(&dgs);
        assert_eq!(learned.flows, 688, "{file}");
        let mut batch = Columns::with_capacity(BATCH_FLOWS);
        assert_eq!(decode_sets(&learned, &mut batch), learned.flows, "{file}");
        let mut parser = NetflowParser::default();
        let theirs: u64 = dgs
            .iter()
            .map(|d| netflow_parser_templated_flows(&mut parser, d))
            .sum();
        assert_eq!(theirs, learned.flows, "netflow_parser flows in {file}");

        g.throughput(Throughput::Elements(learned.flows));
        g.bench_function(format!("nfpg_{name}"), |b| {
            let mut batch = Columns::with_capacity(BATCH_FLOWS);
            b.iter(|| black_box(decode_sets(black_box(&learned), &mut batch)));
        });
        g.bench_function(format!("netflow_parser_{name}"), |b| {
            let mut parser = NetflowParser::default();
            for d in &dgs {
                assert!(parser.parse_bytes(d).error.is_none());
            }
            b.iter(|| {
                for d in black_box(&dgs) {
                    let r = parser.parse_bytes(d);
                    black_box(&r);
                }
            });
        });
    }
}

fn bench_decode(c: &mut Criterion) {
    let dgs = datagrams();
    let metas: Vec<DatagramMeta> = (0..dgs.len()).map(meta_for).collect();
    let expected: u64 = dgs
        .iter()
        .map(|d| u64::from(u16::from_be_bytes([d[2], d[3]])))
        .sum();

    // Both decoders must decode every record before their speeds are compared.
    let mut batch = Columns::with_capacity(BATCH_FLOWS);
    assert_eq!(decode_all(&dgs, &metas, &mut batch), expected);
    let mut parser = NetflowParser::default();
    let theirs: u64 = dgs
        .iter()
        .map(|d| netflow_parser_flows(&mut parser, d))
        .sum();
    assert_eq!(theirs, expected, "netflow_parser flows");

    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(expected));
    g.bench_function("nfpg", |b| {
        let mut batch = Columns::with_capacity(BATCH_FLOWS);
        b.iter(|| black_box(decode_all(black_box(&dgs), &metas, &mut batch)));
    });
    // The same with a one-datagram batch (cleared every datagram): the decode itself, with
    // the columns always in cache; the difference to `nfpg` is the cost of filling a full
    // 8192-flow batch (about 1 MiB of columns) in memory.
    g.bench_function("nfpg_batch30", |b| {
        let mut batch = Columns::with_capacity(MAX_FLOWS_PER_DATAGRAM);
        b.iter(|| black_box(decode_all(black_box(&dgs), &metas, &mut batch)));
    });
    // netflow_parser keeps template state per parser (for v9/IPFIX): one parser, made once.
    g.bench_function("netflow_parser", |b| {
        let mut parser = NetflowParser::default();
        b.iter(|| {
            for d in black_box(&dgs) {
                let r = parser.parse_bytes(d);
                black_box(&r);
            }
        });
    });
    // Its iterator API, which skips the Vec of packets per call.
    g.bench_function("netflow_parser_iter", |b| {
        let mut parser = NetflowParser::default();
        b.iter(|| {
            for d in black_box(&dgs) {
                for p in parser.iter_packets(d) {
                    black_box(p.is_ok());
                    drop(black_box(p));
                }
            }
        });
    });
    bench_decode_templated(&mut g);
    g.finish();
}

fn bench_copy_encode(c: &mut Criterion) {
    let dgs = datagrams();
    let mut batch = Columns::with_capacity(BATCH_FLOWS);
    let mut i = 0usize;
    while batch.has_room_for(MAX_FLOWS_PER_DATAGRAM) {
        let d = &dgs[i % 256]; // the synthetic ones, all 30 records
        nfpg_wire::v5::decode(d, &meta_for(i), &mut batch).expect("decode");
        i += 1;
    }
    let rows = batch.len() as u64;
    let mut out = Vec::new();
    nfpg::store::copy::encode_rows(&batch, nfpg::store::copy::Shape::Basic, &mut out);
    let bytes = out.len() as u64;
    println!(
        "copy_encode: {rows} rows, {bytes} bytes ({} bytes/row)",
        bytes / rows
    );

    let mut g = c.benchmark_group("copy_encode");
    g.sample_size(50);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("bytes", |b| {
        b.iter(|| {
            out.clear();
            nfpg::store::copy::encode_rows(
                black_box(&batch),
                nfpg::store::copy::Shape::Basic,
                &mut out,
            );
            black_box(out.len())
        });
    });
    g.throughput(Throughput::Elements(rows));
    g.bench_function("rows", |b| {
        b.iter(|| {
            out.clear();
            nfpg::store::copy::encode_rows(
                black_box(&batch),
                nfpg::store::copy::Shape::Basic,
                &mut out,
            );
            black_box(out.len())
        });
    });
    // The v5 path: the shard keeps a batch's worth of datagrams as records (`v5_rows`), a
    // writer encodes them into tuples as it streams the COPY (`copy::stream`); against
    // decoding into columns and encoding those (what the records replaced).
    let n_dgs = rows as usize / MAX_FLOWS_PER_DATAGRAM;
    let mut v5 = nfpg::flow::batch::V5Rows::default();
    let window = (86_400_000_000i64 * 365, 86_400_000_000i64 * 365);
    let fill = |v5: &mut nfpg::flow::batch::V5Rows| {
        v5.clear();
        for (i, d) in dgs.iter().cycle().take(n_dgs).enumerate() {
            nfpg::store::copy::v5_rows(
                black_box(d),
                0x7f00_0002 + (i % 4) as u32,
                &meta_for(i),
                window,
                v5,
            )
            .expect("v5");
        }
    };
    g.bench_function("v5_rows_from_datagrams", |b| {
        b.iter(|| {
            fill(&mut v5);
            black_box(v5.records.len())
        });
    });
    fill(&mut v5);
    g.bench_function("v5_rows_streamed_as_tuples", |b| {
        b.iter(|| {
            let mut n = 0;
            let _ = nfpg::store::copy::stream(&[nfpg::store::copy::Piece::V5(&v5)], |c| {
                n += black_box(c).len();
                Ok::<(), std::convert::Infallible>(())
            });
            black_box(n)
        });
    });
    // The writer's encoding alone, every way in one run: value by value (other CPUs) and by
    // each byte shuffle this CPU has (x86-64 has SSSE3; AVX-512 VBMI from Ice Lake, Zen 4).
    use nfpg::store::copy::Shuffle;
    for (name, how) in [
        ("v5_tuples_value_by_value", None),
        ("v5_tuples_ssse3", Some(Shuffle::Ssse3)),
        ("v5_tuples_vbmi", Some(Shuffle::Vbmi)),
    ] {
        if how.is_some_and(|h: Shuffle| !h.available()) {
            eprintln!("{name}: skipped, this CPU lacks it");
            continue;
        }
        g.bench_function(name, |b| {
            b.iter(|| nfpg::store::copy::v5_tuples_with(black_box(&v5), how, &mut out));
        });
    }
    let mut cols = Columns::with_capacity(BATCH_FLOWS);
    g.bench_function("v5_decode_then_encode", |b| {
        b.iter(|| {
            cols.clear();
            out.clear();
            for (i, d) in dgs.iter().cycle().take(n_dgs).enumerate() {
                nfpg_wire::v5::decode(black_box(d), &meta_for(i), &mut cols).expect("v5");
            }
            nfpg::store::copy::encode_rows(&cols, nfpg::store::copy::V5_SHAPE, &mut out);
            black_box(out.len())
        });
    });
    g.finish();
}

/// Spins (yielding: the machine may have few cores) until `f` succeeds.
fn spin<T>(mut f: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(v) = f() {
            return v;
        }
        std::thread::yield_now();
    }
}

fn bench_handoff(c: &mut Criterion) {
    let mut g = c.benchmark_group("handoff");
    g.throughput(Throughput::Elements(1));

    g.bench_function("single_thread", |b| {
        let h = Handoff::new(64, 64 + 3, BATCH_FLOWS);
        b.iter(|| {
            let batch = h.take_empty().expect("pool has a batch");
            h.push_full(batch).expect("queue has room");
            let batch = h.pop_full().expect("queued batch");
            h.give_back(batch);
        });
    });

    // The shard (this thread) produces, a writer thread (started once, spinning) consumes;
    // the time is from the first take to the last give-back of `iters` batches.
    g.bench_function("two_threads", |b| {
        let h = Arc::new(Handoff::new(64, 64 + 3, BATCH_FLOWS));
        let consumed = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let consumer = {
            let (h, consumed, done) = (h.clone(), consumed.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Relaxed) {
                    match h.pop_full() {
                        Some(batch) => {
                            h.give_back(batch);
                            consumed.fetch_add(1, Release);
                        }
                        None => std::thread::yield_now(),
                    }
                }
            })
        };
        b.iter_custom(|iters| {
            let target = consumed.load(Acquire) + iters;
            let start = Instant::now();
            for _ in 0..iters {
                let mut batch = spin(|| h.take_empty());
                batch.opened_at = Some(start);
                let mut slot = Some(batch);
                spin(|| match h.push_full(slot.take().expect("batch")) {
                    Ok(()) => Some(()),
                    Err(back) => {
                        slot = Some(back);
                        None
                    }
                });
            }
            spin(|| (consumed.load(Acquire) >= target).then_some(()));
            start.elapsed()
        });
        done.store(true, Relaxed);
        consumer.join().expect("consumer thread");
    });
    g.finish();
}

criterion_group!(benches, bench_decode, bench_copy_encode, bench_handoff);
criterion_main!(benches);
