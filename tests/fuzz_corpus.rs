//! The fuzz corpus, replayed deterministically in `cargo test`: every seed in
//! `fuzz/corpus/<target>/`, every crash input kept as a regression in
//! `fuzz/regressions/<target>/` (and any in `fuzz/artifacts/<target>/`), then a fixed-seed
//! pseudo-random mutation pass over the seeds (bit flips, interesting bytes, truncations,
//! splices, insertions), all through the same target bodies the cargo-fuzz targets run
//! (`nfpg_wire::fuzzing`, `nfpg::decode::fuzzing`, `nfpg::store::fuzzing`). So CI exercises
//! every decoder with more than its seeds in a few seconds, without libFuzzer.
//!
//! A failing input is written to `target/fuzz-replay-failures/` and named in the panic.
//!
//! The seeds themselves are written by `write_seed_corpus` (ignored; run it with
//! `cargo test --test fuzz_corpus -- --ignored write_seed_corpus`) from the fixtures, the
//! encoders and the spool writer; fuzz/README.md says which seed is what.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A target's body: panics on any input it finds wrong.
type Body = fn(&[u8]);

/// Every fuzz target and its body.
const TARGETS: &[(&str, Body)] = &[
    ("v5", nfpg_wire::fuzzing::v5),
    ("netflow", nfpg::decode::fuzzing::netflow),
    ("netflow_wire", nfpg_wire::fuzzing::netflow_wire),
    ("pcap", nfpg_wire::fuzzing::pcap),
    ("spool_segment", nfpg::store::fuzzing::spool_segment),
];

/// Mutated inputs per target in the mutation pass.
const MUTATIONS: usize = 20_000;

/// Longest mutated input (keeps the debug-build pass to seconds).
const MAX_MUTATED: usize = 8192;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, by name; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// Runs `body` on `input`; on a panic, keeps the input and fails naming it.
fn run(target: &str, body: Body, input: &[u8], what: &str) {
    if std::panic::catch_unwind(|| body(input)).is_err() {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap_or(Path::new("."))
            .join("fuzz-replay-failures");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!(
            "{target}-{}",
            what.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        ));
        let _ = std::fs::write(&path, input);
        panic!(
            "fuzz target {target} failed on {what}; input kept in {} (reproduce: \
             cargo fuzz run {target} {})",
            path.display(),
            path.display()
        );
    }
}

/// The seeds of a target: its corpus (which must not be empty) and its regressions.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let corpus = files(&fuzz_dir().join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target}/ is empty: a replay of nothing proves nothing"
    );
    let mut out = Vec::new();
    for sub in ["corpus", "regressions", "artifacts"] {
        for p in files(&fuzz_dir().join(sub).join(target)) {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let name = p
                .strip_prefix(fuzz_dir())
                .unwrap_or(&p)
                .display()
                .to_string();
            out.push((name, bytes));
        }
    }
    out
}

#[test]
fn every_target_has_a_corpus_and_the_fuzz_crate_lists_every_target() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for (target, _) in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "fuzz/Cargo.toml has no target {target}"
        );
        assert!(fuzz_dir()
            .join("fuzz_targets")
            .join(format!("{target}.rs"))
            .is_file());
        assert!(!files(&fuzz_dir().join("corpus").join(target)).is_empty());
    }
    let targets = files(&fuzz_dir().join("fuzz_targets"));
    assert_eq!(
        targets.len(),
        TARGETS.len(),
        "a target the replay does not run"
    );
}

#[test]
fn corpus_and_regressions_replay() {
    for &(target, body) in TARGETS {
        for (name, bytes) in seeds(target) {
            run(target, body, &bytes, &name);
        }
    }
}

/// xorshift64*: a fixed sequence, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `input`, libFuzzer's basic moves.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[(String, Vec<u8>)]) {
    const INTERESTING: [u8; 8] = [0, 1, 2, 4, 0x7f, 0x80, 0xfe, 0xff];
    match rng.below(8) {
        0 => {
            // Flip a bit.
            if !input.is_empty() {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
        }
        1 => {
            // An interesting byte.
            if !input.is_empty() {
                let i = rng.below(input.len());
                input[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
        }
        2 => {
            // An interesting 16-bit value (lengths, counts, ids are 16-bit big-endian).
            if input.len() >= 2 {
                let i = rng.below(input.len() - 1);
                let v: u16 = [0, 1, 3, 4, 255, 256, 0x7fff, 0x8000, 0xfffe, 0xffff][rng.below(10)];
                input[i..i + 2].copy_from_slice(&v.to_be_bytes());
            }
        }
        3 => {
            // Truncate.
            let n = rng.below(input.len() + 1);
            input.truncate(n);
        }
        4 => {
            // Splice: our head, another seed's tail.
            let (_, other) = &seeds[rng.below(seeds.len())];
            let at = rng.below(input.len() + 1);
            let from = rng.below(other.len() + 1);
            input.truncate(at);
            input.extend_from_slice(&other[from..]);
        }
        5 => {
            // Insert random bytes.
            let at = rng.below(input.len() + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            input.splice(at..at, bytes);
        }
        6 => {
            // Duplicate a chunk in place.
            if !input.is_empty() {
                let a = rng.below(input.len());
                let b = (a + 1 + rng.below(64)).min(input.len());
                let chunk = input[a..b].to_vec();
                let at = rng.below(input.len() + 1);
                input.splice(at..at, chunk);
            }
        }
        _ => {
            // Erase a chunk.
            if !input.is_empty() {
                let a = rng.below(input.len());
                let b = (a + 1 + rng.below(64)).min(input.len());
                input.drain(a..b);
            }
        }
    }
    input.truncate(MAX_MUTATED);
}

#[test]
fn seeded_mutations_replay() {
    for (k, &(target, body)) in TARGETS.iter().enumerate() {
        let seeds = seeds(target);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (k as u64 + 1));
        for i in 0..MUTATIONS {
            let (_, seed) = &seeds[rng.below(seeds.len())];
            let mut input = seed.clone();
            for _ in 0..1 + rng.below(4) {
                mutate(&mut rng, &mut input, &seeds);
            }
            run(target, body, &input, &format!("mutation {i}"));
        }
    }
}

/// Writes the seed corpus (replacing files of the same name; fuzz/README.md lists them).
#[test]
#[ignore = "writes fuzz/corpus/; run by hand when the seeds should change"]
fn write_seed_corpus() {
    seed_writer::write_all(&fuzz_dir().join("corpus"));
}

mod seed_writer {
    use super::*;
    use nfpg_wire::columns::{Columns, DatagramMeta};
    use nfpg_wire::netflow::encode::{flow_template, flow_values, Field, Flow, Message};
    use nfpg_wire::netflow::encode::{TemplateDef, Value, VARIABLE};
    use std::net::IpAddr;

    fn put(dir: &Path, name: &str, bytes: &[u8]) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    fn capture(name: &str) -> (Vec<u8>, Vec<Vec<u8>>) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name);
        let file = std::fs::read(&path).unwrap();
        let packets = nfpg_wire::pcap::udp_packets(&file).unwrap();
        (file, packets.into_iter().map(|p| p.payload).collect())
    }

    /// A `netflow` target frame: control byte, 16-bit length, datagram.
    fn frame(control: u8, datagram: &[u8]) -> Vec<u8> {
        let mut out = vec![control];
        out.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
        out.extend_from_slice(datagram);
        out
    }

    fn flow(i: u32, v6: bool) -> Flow {
        let (src, dst): (IpAddr, IpAddr) = if v6 {
            (
                format!("2001:db8::{}", i + 1).parse().unwrap(),
                "2001:db8::ffff".parse().unwrap(),
            )
        } else {
            (
                format!("10.0.0.{}", i + 1).parse().unwrap(),
                "10.1.0.1".parse().unwrap(),
            )
        };
        Flow {
            src,
            dst,
            src_port: 1000 + i as u16,
            dst_port: 443,
            protocol: 6,
            tcp_flags: 0x1b,
            tos: 0,
            packets: 10 + i,
            bytes: 1500 * (10 + i),
            input: 1,
            output: 2,
            direction: (i % 2) as u8,
            end_reason: 3,
            first_ms: 1_000 + i,
            last_ms: 9_000 + i,
        }
    }

    /// Options template: scope observationDomainId; samplerId, samplingInterval,
    /// systemInitTimeMilliseconds.
    fn sampling_options(id: u16) -> TemplateDef {
        TemplateDef::options(
            id,
            &[Field::new(149, 4)],
            &[Field::new(48, 2), Field::new(34, 4), Field::new(160, 8)],
        )
    }

    /// A data template with a variable-length field (interfaceName, 82) and a sampler id.
    fn variable_template(id: u16) -> TemplateDef {
        TemplateDef::data(
            id,
            &[
                Field::new(8, 4),
                Field::new(12, 4),
                Field::new(1, 8),
                Field::new(2, 8),
                Field::new(82, VARIABLE),
                Field::new(48, 2),
                Field::new(152, 8),
                Field::new(153, 8),
                Field::private(1, 4, 9),
            ],
        )
    }

    fn variable_values(i: u64) -> Vec<Value> {
        vec![
            Value::U(0x0a00_0001 + i),
            Value::U(0x0a01_0001),
            Value::U(1500 * i),
            Value::U(i + 1),
            Value::Bytes(format!("eth{i}").into_bytes()),
            Value::U(7),
            Value::U(1_700_000_000_000 + i),
            Value::U(1_700_000_001_000 + i),
            Value::U(42),
        ]
    }

    /// Hand-made v9/IPFIX messages: templates with data, options, variable length,
    /// withdrawals, padding, IPv6.
    fn messages() -> Vec<(&'static str, Vec<u8>)> {
        let t4 = flow_template(256, false);
        let t6 = flow_template(257, true);
        let tv = variable_template(258);
        let opt = sampling_options(300);
        let flows4: Vec<_> = (0..3).map(|i| flow_values(&flow(i, false))).collect();
        let flows6: Vec<_> = (0..2).map(|i| flow_values(&flow(i, true))).collect();
        let opt_data = vec![vec![
            Value::U(1),
            Value::U(7),
            Value::U(100),
            Value::U(1_699_999_000_000),
        ]];
        let var: Vec<_> = (0..3).map(variable_values).collect();
        vec![
            (
                "ipfix-options-templates-data",
                Message::ipfix(1_700_000_000, 1, 1)
                    .options_templates(&[&opt])
                    .data(&opt, &opt_data)
                    .templates(&[&t4, &t6])
                    .data(&t4, &flows4)
                    .data(&t6, &flows6)
                    .finish(),
            ),
            (
                "ipfix-variable-length-padded",
                Message::ipfix(1_700_000_000, 2, 1)
                    .padded(true)
                    .templates(&[&tv])
                    .data(&tv, &var)
                    .finish(),
            ),
            (
                "ipfix-withdrawals-then-data",
                Message::ipfix(1_700_000_000, 3, 1)
                    .withdrawals(&[256], false)
                    .withdrawals(&[2], false)
                    .withdrawals(&[3], true)
                    .data(&t4, &flows4)
                    .finish(),
            ),
            (
                "v9-options-templates-data",
                Message::v9(60_000, 1_700_000_000, 1, 5)
                    .options_templates(&[&opt])
                    .data(&opt, &opt_data)
                    .templates(&[&t4, &t6])
                    .data(&t4, &flows4)
                    .data(&t6, &flows6)
                    .finish(),
            ),
            (
                "v9-data-only",
                Message::v9(61_000, 1_700_000_001, 2, 5)
                    .data(&t4, &flows4)
                    .finish(),
            ),
            (
                "ipfix-data-only",
                Message::ipfix(1_700_000_001, 4, 1)
                    .data(&t4, &flows4)
                    .data(&tv, &var)
                    .finish(),
            ),
        ]
    }

    fn v5_datagram(n: usize) -> Vec<u8> {
        use nfpg_wire::v5::encode::{datagram, sampling_field, Header, Record};
        let h = Header {
            sys_uptime: 100_000,
            unix_secs: 1_700_000_000,
            unix_nsecs: 5,
            flow_sequence: 77,
            engine_type: 1,
            engine_id: 2,
            sampling_interval: sampling_field(64),
        };
        let recs: Vec<Record> = (0..n)
            .map(|i| Record {
                src_addr: [10, 0, 0, i as u8],
                dst_addr: [10, 1, 0, 1],
                packets: 3,
                octets: 4500,
                first: 99_000,
                last: 200_000, // after sys_uptime: the modulo-2³² case
                src_port: 1000,
                dst_port: 53,
                protocol: 17,
                ..Record::default()
            })
            .collect();
        datagram(&h, &recs)
    }

    pub fn write_all(corpus: &Path) {
        let (v5_file, v5_caps) = capture("softflowd-v5.pcap");
        let (v9_file, v9_caps) = capture("softflowd-v9.pcap");
        let (ipfix_file, ipfix_caps) = capture("softflowd-ipfix.pcap");
        let msgs = messages();

        // v5: real datagrams of different counts, encoder output, edge cases.
        let dir = corpus.join("v5");
        let mut counts = std::collections::BTreeSet::new();
        for (i, d) in v5_caps.iter().enumerate() {
            if counts.insert(d.len()) && counts.len() <= 6 {
                put(&dir, &format!("softflowd-v5-{i:02}"), d);
            }
        }
        put(&dir, "encoded-1", &v5_datagram(1));
        put(&dir, "encoded-30", &v5_datagram(30));
        let mut count0 = v5_datagram(1);
        count0[3] = 0;
        put(&dir, "edge-count-0", &count0[..24]);
        let mut count31 = v5_datagram(30);
        count31[3] = 31;
        put(&dir, "edge-count-31", &count31);
        put(&dir, "edge-length-short", &v5_datagram(2)[..24 + 48 + 47]);
        put(&dir, "edge-header-only", &v5_datagram(1)[..24]);

        // netflow: framed sequences through the collector's decoder.
        let dir = corpus.join("netflow");
        let seq = |ds: &[&[u8]], control: &dyn Fn(usize) -> u8| -> Vec<u8> {
            ds.iter()
                .enumerate()
                .flat_map(|(i, d)| frame(control(i), d))
                .collect()
        };
        let first = |caps: &[Vec<u8>], n: usize| -> Vec<Vec<u8>> { caps[..n].to_vec() };
        for (name, caps) in [("softflowd-v9", &v9_caps), ("softflowd-ipfix", &ipfix_caps)] {
            let head = first(caps, 3);
            let refs: Vec<&[u8]> = head.iter().map(|d| d.as_slice()).collect();
            put(&dir, &format!("{name}-first-3"), &seq(&refs, &|_| 0));
            // Data before its template: the second datagram first (held), then the first.
            let swapped = [refs[1], refs[0], refs[2]];
            put(
                &dir,
                &format!("{name}-held"),
                &seq(&swapped, &|i| (i as u8) << 2),
            );
            // Two exporters and two shards interleaved, the hold expired at the end.
            let both: Vec<&[u8]> = refs.iter().flat_map(|d| [*d, *d]).collect();
            put(
                &dir,
                &format!("{name}-two-exporters"),
                &seq(&both, &|i| (i % 4) as u8 | if i == 5 { 8 } else { 0 }),
            );
        }
        let m = |name: &str| -> Vec<u8> {
            msgs.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, b)| b.clone())
                .unwrap()
        };
        let all_ipfix: Vec<Vec<u8>> = [
            "ipfix-data-only",
            "ipfix-options-templates-data",
            "ipfix-variable-length-padded",
            "ipfix-data-only",
            "ipfix-withdrawals-then-data",
            "ipfix-options-templates-data",
        ]
        .iter()
        .map(|n| m(n))
        .collect();
        let refs: Vec<&[u8]> = all_ipfix.iter().map(|d| d.as_slice()).collect();
        put(&dir, "encoded-ipfix-lifecycle", &seq(&refs, &|_| 1));
        let v9: Vec<Vec<u8>> = ["v9-data-only", "v9-options-templates-data", "v9-data-only"]
            .iter()
            .map(|n| m(n))
            .collect();
        let refs: Vec<&[u8]> = v9.iter().map(|d| d.as_slice()).collect();
        put(&dir, "encoded-v9-held-sampling", &seq(&refs, &|_| 3));
        put(
            &dir,
            "mixed-v5-and-garbage",
            &[
                frame(0, &v5_datagram(2)),
                frame(2, b"\x00\x09\x00"),
                frame(0, &[]),
            ]
            .concat(),
        );

        // netflow_wire: single messages.
        let dir = corpus.join("netflow_wire");
        for (name, caps) in [("softflowd-v9", &v9_caps), ("softflowd-ipfix", &ipfix_caps)] {
            put(&dir, &format!("{name}-00"), &caps[0]);
            put(&dir, &format!("{name}-01"), &caps[1]);
        }
        for (name, bytes) in &msgs {
            put(&dir, &format!("encoded-{name}"), bytes);
        }
        let stored = nfpg_wire::netflow::Template {
            id: 258,
            scope_count: 0,
            fields: variable_template(258)
                .fields
                .iter()
                .map(|f| nfpg_wire::netflow::FieldSpec {
                    id: f.id,
                    len: f.len,
                    enterprise: f.enterprise,
                })
                .collect(),
        };
        put(&dir, "stored-template", &stored.to_bytes());

        // pcap: the fixtures cut after a few packets, and hand-made pcapng.
        let dir = corpus.join("pcap");
        for (name, file) in [
            ("softflowd-v5", &v5_file),
            ("softflowd-v9", &v9_file),
            ("softflowd-ipfix", &ipfix_file),
        ] {
            put(&dir, &format!("{name}-head"), &first_blocks(file, 3));
        }
        put(&dir, "pcapng-ipv6-cooked", &pcapng_v6(&msgs[0].1));
        put(
            &dir,
            "classic-be-raw-ipv4",
            &classic_be_raw_v4(&v5_datagram(1)),
        );

        // spool_segment: segments the spool writer wrote, basic and full shape, a dead letter.
        let dir = corpus.join("spool_segment");
        let tmp = tempfile::tempdir().unwrap();
        let identity = nfpg::store::spool::Identity::of(
            "host=/run/postgresql port=5432 dbname=flows",
            "netflow",
        )
        .unwrap();
        let spool =
            nfpg::store::spool::Spool::open(tmp.path(), 1 << 30, identity, Arc::default()).unwrap();
        let meta = DatagramMeta {
            exporter: nfpg_wire::fuzzing::META.exporter,
            received_us: 1_700_000_000_000_000,
        };
        let mut v5cols = Columns::with_capacity(64);
        nfpg_wire::v5::decode(&v5_caps[0][..24 + 48 * 2], &meta, &mut v5cols)
            .map(|_| ())
            .unwrap_or_else(|_| {
                nfpg_wire::v5::decode(&v5_datagram(2), &meta, &mut v5cols).unwrap();
            });
        let mut full = Columns::with_capacity(64);
        let shared = Arc::new(nfpg::decode::netflow::Shared::new(
            nfpg::decode::hold::Hold::new(1 << 16, std::time::Duration::from_secs(60)),
            Vec::new(),
            Arc::default(),
        ));
        let mut dec = nfpg::decode::Decoder::new(shared);
        dec.datagram(&m("ipfix-options-templates-data"), &meta, &mut full)
            .unwrap();
        use nfpg::store::copy::{encode_rows, Piece, Shape};
        use nfpg::store::spool::Marker;
        for (name, cols, shape, marker) in [
            (
                "basic-v5",
                &v5cols,
                Shape::Basic,
                Marker { writer: 1, seq: 1 },
            ),
            (
                "full-ipfix",
                &full,
                Shape::Full,
                Marker { writer: -3, seq: 9 },
            ),
        ] {
            let mut tuples = Vec::new();
            encode_rows(cols, shape, &mut tuples);
            let before: std::collections::HashSet<_> = spool.list().unwrap().into_iter().collect();
            spool
                .write(marker, shape, &[Piece::Bytes(&tuples)], cols.len() as u64)
                .unwrap();
            let path = spool
                .list()
                .unwrap()
                .into_iter()
                .find(|p| !before.contains(p))
                .unwrap();
            put(
                &dir,
                &format!("segment-{name}"),
                &std::fs::read(path).unwrap(),
            );
            if name == "full-ipfix" {
                let dead = spool
                    .dead_letter(marker, shape, 1, &tuples, cols.len() as u64, "bad row")
                    .unwrap();
                put(&dir, "dead-letter-full", &std::fs::read(dead).unwrap());
            }
        }
    }

    /// A classic pcap (either byte order) cut after its first `n` packet records.
    fn first_blocks(file: &[u8], n: usize) -> Vec<u8> {
        if file[..4] == [0x0a, 0x0d, 0x0d, 0x0a] {
            // pcapng: block total length at +4, little-endian in these fixtures.
            let mut at = 0;
            let mut packets = 0;
            while at + 8 <= file.len() && packets < n {
                let kind = u32::from_le_bytes(file[at..at + 4].try_into().unwrap());
                let len = u32::from_le_bytes(file[at + 4..at + 8].try_into().unwrap());
                at += len as usize;
                if kind == 6 || kind == 3 {
                    packets += 1;
                }
            }
            return file[..at.min(file.len())].to_vec();
        }
        let le = file[0] == 0xd4 || file[0] == 0x4d;
        let mut at = 24;
        for _ in 0..n {
            let b: [u8; 4] = file[at + 8..at + 12].try_into().unwrap();
            let caplen = if le {
                u32::from_le_bytes(b)
            } else {
                u32::from_be_bytes(b)
            };
            at += 16 + caplen as usize;
        }
        file[..at].to_vec()
    }

    /// UDP with `payload` in IPv4, no checksum.
    fn ipv4_udp(payload: &[u8]) -> Vec<u8> {
        let total = (20 + 8 + payload.len()) as u16;
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 9,
        ];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&2055u16.to_be_bytes());
        ip.extend_from_slice(&9995u16.to_be_bytes());
        ip.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(payload);
        ip
    }

    /// A big-endian classic pcap, link type raw IP (101), one IPv4 UDP packet.
    fn classic_be_raw_v4(payload: &[u8]) -> Vec<u8> {
        let pkt = ipv4_udp(payload);
        let mut f = vec![0xa1, 0xb2, 0xc3, 0xd4, 0, 2, 0, 4];
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&65535u32.to_be_bytes());
        f.extend_from_slice(&101u32.to_be_bytes());
        f.extend_from_slice(&1_700_000_000u32.to_be_bytes());
        f.extend_from_slice(&5u32.to_be_bytes());
        f.extend_from_slice(&(pkt.len() as u32).to_be_bytes());
        f.extend_from_slice(&(pkt.len() as u32).to_be_bytes());
        f.extend_from_slice(&pkt);
        f
    }

    fn block(kind: u32, body: &[u8]) -> Vec<u8> {
        let padded = body.len().div_ceil(4) * 4;
        let len = (12 + padded) as u32;
        let mut b = kind.to_le_bytes().to_vec();
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(body);
        b.resize(8 + padded, 0);
        b.extend_from_slice(&len.to_le_bytes());
        b
    }

    /// A little-endian pcapng: section header, a Linux cooked (113) interface with
    /// nanosecond time stamps (if_tsresol 9), an enhanced packet block with an IPv6 UDP
    /// packet and a simple packet block with an IPv4 one.
    fn pcapng_v6(payload: &[u8]) -> Vec<u8> {
        let mut shb = vec![0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0];
        shb.extend_from_slice(&[0xff; 8]);
        let mut idb = 113u16.to_le_bytes().to_vec();
        idb.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        idb.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        let mut ip6 = vec![0x60, 0, 0, 0];
        ip6.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        ip6.extend_from_slice(&[17, 64]);
        ip6.extend_from_slice(
            &"2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        ip6.extend_from_slice(
            &"2001:db8::9"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        ip6.extend_from_slice(&4739u16.to_be_bytes());
        ip6.extend_from_slice(&4739u16.to_be_bytes());
        ip6.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        ip6.extend_from_slice(&[0, 0]);
        ip6.extend_from_slice(payload);
        let mut cooked = vec![0u8; 14];
        cooked.extend_from_slice(&0x86ddu16.to_be_bytes());
        cooked.extend_from_slice(&ip6);
        let mut epb = 0u32.to_le_bytes().to_vec();
        let ts: u64 = 1_700_000_000_123_456_789;
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts as u32).to_le_bytes());
        epb.extend_from_slice(&(cooked.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(cooked.len() as u32).to_le_bytes());
        epb.extend_from_slice(&cooked);
        let mut v4 = vec![0u8; 14];
        v4.extend_from_slice(&0x0800u16.to_be_bytes());
        v4.extend_from_slice(&ipv4_udp(b"\x00\x05"));
        let mut spb = (v4.len() as u32).to_le_bytes().to_vec();
        spb.extend_from_slice(&v4);
        [
            block(0x0a0d_0d0a, &shb),
            block(1, &idb),
            block(6, &epb),
            block(3, &spb),
        ]
        .concat()
    }
}
