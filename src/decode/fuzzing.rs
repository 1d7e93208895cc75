//! The body of the `netflow` fuzz target: the collector's own stateful [`Decoder`], template
//! state, hold and sampling table included, driven the way a shard drives it. Shared by the
//! cargo-fuzz target (`fuzz/fuzz_targets/netflow.rs`) and the corpus replay in `cargo test`
//! (`tests/fuzz_corpus.rs`), so the two cannot drift.
//!
//! Not part of the API: hidden from the documentation, used by no stage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nfpg_wire::columns::{Columns, DatagramMeta};
use nfpg_wire::fuzzing::{assert_unchanged, capacities};

use super::hold::Hold;
use super::netflow::Shared;
use super::{Decoder, Failure, MAX_FLOWS};

/// The exporters a frame's control byte picks from (two low bits): two IPv4, one IPv6, and
/// one inside [`OVERRIDE`]'s block.
const EXPORTERS: [u128; 4] = [
    0xffff_c000_0201,                          // 192.0.2.1
    0xffff_c000_0202,                          // 192.0.2.2
    0x2001_0db8_0000_0000_0000_0000_0000_0001, // 2001:db8::1
    0xffff_c633_6407,                          // 198.51.100.7
];

/// A `--sampling-override` for 198.51.100.0/24.
const OVERRIDE: (&str, u32) = ("198.51.100.0/24", 10);

/// Rows a batch holds: small, so that data sets meet a full batch (`NoRoom`) and datagrams
/// with more records than a batch holds (`TooManyRecords`).
const BATCH_ROWS: usize = 64;

/// Most bytes held per exporter for sets that came before their template.
const HOLD_BYTES: usize = 4096;

/// Target `netflow`: a sequence of datagrams through two shards' [`Decoder`]s sharing one
/// template state.
///
/// Input: frames of `[control: u8][length: u16, big-endian][datagram: length bytes]` (the last
/// datagram may be shorter than its length says). Control bits 0–1 pick the exporter, bit 2
/// the shard; bit 3 expires the hold afterwards as if two hours had passed. Any version is
/// accepted (v5 and garbage go to the v5 decoder, as on a shard).
///
/// Checks, for every datagram: a rejected datagram appends nothing; an accepted one appends
/// exactly the rows it reports, at most one per byte; `NoRoom` is asked only for a number of
/// rows a fresh batch holds, and a fresh batch then takes the datagram; no column grows past
/// its reserved capacity; releasing held sets ends. At the end, every template learned
/// loads back from its stored form, as at a restart.
pub fn netflow(data: &[u8]) {
    let shared = Arc::new(Shared::new(
        Hold::new(HOLD_BYTES, Duration::from_secs(60)),
        vec![(
            OVERRIDE.0.parse().unwrap_or_else(|e| panic!("{e}")),
            OVERRIDE.1,
        )],
        Arc::default(),
    ));
    let mut shards = [Decoder::new(shared.clone()), Decoder::new(shared.clone())];
    let mut cols = Columns::with_capacity(BATCH_ROWS);
    let cap = capacities(&cols);
    let mut rest = data;
    while rest.len() >= 3 {
        let control = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        let end = rest.len().min(3 + len);
        let datagram = &rest[3..end];
        rest = &rest[end..];
        let meta = DatagramMeta {
            exporter: EXPORTERS[usize::from(control & 3)],
            received_us: 1_700_000_000_000_000,
        };
        let shard = &mut shards[usize::from(control >> 2 & 1)];
        one_datagram(shard, datagram, &meta, &mut cols);
        drain_released(shard, &mut cols);
        if control & 8 != 0 {
            shard.expire_held(Instant::now() + Duration::from_secs(7200));
        }
        assert_eq!(capacities(&cols), cap, "netflow: a column grew");
    }
    // A restart: the stored form of every template learned loads and compiles again.
    let stored: Vec<_> = shared
        .take_changes()
        .into_iter()
        .filter_map(|c| Some((c.key, c.version, c.definition?)))
        .collect();
    let fresh = Shared::new(Hold::new(0, Duration::ZERO), Vec::new(), Arc::default());
    assert_eq!(
        fresh.load(stored.clone()),
        stored.len(),
        "netflow: a learned template did not load back"
    );
}

/// One datagram as a shard decodes it: seal (clear) when a v5 datagram might not fit, and
/// once more when the decoder asks for room.
fn one_datagram(shard: &mut Decoder, datagram: &[u8], meta: &DatagramMeta, cols: &mut Columns) {
    if !cols.has_room_for(MAX_FLOWS) {
        cols.clear();
    }
    for attempt in 0..2 {
        let (rows, dgrams) = (cols.len(), cols.datagrams.len());
        match shard.datagram(datagram, meta, cols) {
            Ok(n) => {
                let n = usize::from(n);
                assert_eq!(
                    cols.len(),
                    rows + n,
                    "netflow: rows appended ≠ rows reported"
                );
                assert!(
                    n <= datagram.len(),
                    "netflow: {n} rows from {} bytes",
                    datagram.len()
                );
                assert!(cols.is_aligned(), "netflow: columns misaligned");
                return;
            }
            Err(Failure::NoRoom(n)) => {
                assert_unchanged(cols, rows, dgrams, "netflow (no room)");
                assert!(
                    attempt == 0,
                    "netflow: no room for {n} rows in a fresh batch"
                );
                assert!(
                    n <= cols.capacity(),
                    "netflow: no room for {n}, more than a batch"
                );
                assert!(
                    !cols.has_room_for(n),
                    "netflow: no room for {n}, but there is"
                );
                cols.clear();
            }
            Err(Failure::Fault(f)) => {
                assert_unchanged(cols, rows, dgrams, "netflow (rejected)");
                let _ = (f.to_string(), f.reason(), f.detail());
                return;
            }
        }
    }
}

/// Decodes the held sets a template released, as a shard does after each datagram; sealing
/// (clearing) when asked for room. Each call either makes progress or asks for room once.
fn drain_released(shard: &mut Decoder, cols: &mut Columns) {
    let mut no_room_in_a_row = 0;
    for _ in 0..100_000 {
        let (rows, dgrams) = (cols.len(), cols.datagrams.len());
        match shard.released(cols) {
            Ok(None) => {
                assert!(!shard.has_released());
                return;
            }
            Ok(Some(n)) => {
                assert_eq!(
                    cols.len(),
                    rows + usize::from(n),
                    "released: rows ≠ reported"
                );
                assert!(cols.is_aligned(), "released: columns misaligned");
                no_room_in_a_row = 0;
            }
            Err(Failure::NoRoom(n)) => {
                assert_unchanged(cols, rows, dgrams, "released (no room)");
                no_room_in_a_row += 1;
                assert!(
                    no_room_in_a_row < 2,
                    "released: no room for {n} in a fresh batch"
                );
                cols.clear();
            }
            Err(Failure::Fault(f)) => {
                assert_unchanged(cols, rows, dgrams, "released (rejected)");
                let _ = f.to_string();
                no_room_in_a_row = 0;
            }
        }
    }
    panic!("released: 100,000 calls without running out of held sets");
}
