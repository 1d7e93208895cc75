//! Zero heap allocations per datagram on the shard path, after warm-up: v5, and v9 and IPFIX
//! data with known templates (learning a template may allocate; it is done in the warm-up).
//!
//! A counting global allocator counts the allocations of the threads that opted in with
//! [`count_this_thread`]: the test wraps `shard::run` in a thread that opts in first, so
//! everything the shard does (receive, decode, sample malformed datagrams, seal batches,
//! flush counters, log) is counted, and nothing the test's own threads (senders, the consumer
//! standing in for the writers, libtest) do. Logging is set up like the collector's (fmt
//! layers behind an `EnvFilter`, one of them through `tracing_appender::non_blocking` as with
//! LOG_FILE), writing nowhere.
//!
//! On failure the first allocations are reported with their backtraces.

use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nfpg::flow::handoff::Handoff;
use nfpg::ingest::recv::{self, Backend};
use nfpg::ingest::shard::{self, ShardConfig};
use nfpg::obs::stats::{Counters, ShardCounters};

// ---------------------------------------------------------------------------------------
// The counting allocator.

/// Counter slots: one per test, so tests running in parallel don't see each other's counts.
const SLOTS: usize = 4;
const SLOT_MMSG: usize = 1;
const SLOT_URING: usize = 2;
const SLOT_LOG: usize = 3;

static ALLOCS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
static FREES: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
/// While set, counted allocations of the slot also record a backtrace.
static TRACE: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];
/// Backtraces recorded (at most `MAX_TRACES`), with the allocation size; resolved to symbols
/// only when reported.
static TRACES: Mutex<Vec<(usize, usize, Backtrace)>> = Mutex::new(Vec::new());
const MAX_TRACES: usize = 2_000;

thread_local! {
    /// The slot this thread's allocations count in; 0 = not counted.
    static SLOT: Cell<usize> = const { Cell::new(0) };
    /// Set while the allocator itself is recording (its own allocations are not counted).
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Counts this thread's allocations from now on in `slot`.
fn count_this_thread(slot: usize) {
    SLOT.with(|s| s.set(slot));
}

fn note_alloc(size: usize) {
    let slot = SLOT.try_with(Cell::get).unwrap_or(0);
    if slot == 0 || BUSY.try_with(|b| b.replace(true)).unwrap_or(true) {
        return;
    }
    ALLOCS[slot].fetch_add(1, Relaxed);
    if TRACE[slot].load(Relaxed) {
        if let Ok(mut traces) = TRACES.lock() {
            if traces.len() < MAX_TRACES {
                traces.push((slot, size, Backtrace::force_capture()));
            }
        }
    }
    let _ = BUSY.try_with(|b| b.set(false));
}

fn note_free() {
    let slot = SLOT.try_with(Cell::get).unwrap_or(0);
    if slot != 0 {
        FREES[slot].fetch_add(1, Relaxed);
    }
}

struct CountingAlloc;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees hold; the bookkeeping around it touches only atomics and const
// thread-locals (no destructors), and allocations made while recording a backtrace are not
// recorded again (`BUSY`), so it cannot recurse without end.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract (non-zero size).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc(new_size);
        // SAFETY: the caller passes a block this allocator (i.e. `System`) returned, with its
        // layout, and a valid new size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_free();
        // SAFETY: the caller passes a block `System` returned, with its layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// The recorded allocations grouped by call path (the frames outside the standard library
/// and this file), most frequent first.
fn take_traces(slot: usize) -> String {
    let traces: Vec<(usize, Backtrace)> = {
        let mut all = TRACES.lock().unwrap();
        let (mine, others) = std::mem::take(&mut *all)
            .into_iter()
            .partition(|t| t.0 == slot);
        *all = others;
        mine.into_iter().map(|(_, size, bt)| (size, bt)).collect()
    };
    let mut groups: Vec<(String, usize, usize)> = Vec::new();
    for (size, bt) in &traces {
        let text = bt.to_string();
        let lines: Vec<&str> = text.lines().collect();
        let mut path = String::new();
        for (i, line) in lines.iter().enumerate() {
            let at = lines.get(i + 1).map_or("", |l| l.trim());
            let frame = line.trim();
            let frame = frame.split_once(": ").map_or(frame, |(_, f)| f);
            if frame.starts_with("at ") || at.contains("/rustc/") || at.contains("tests/alloc.rs") {
                continue;
            }
            if frame.contains("__rust") || frame.contains("std::") || frame.contains("core::") {
                continue;
            }
            path.push_str(&format!("    {frame}  {at}\n"));
        }
        match groups.iter_mut().find(|g| g.0 == path) {
            Some(g) => {
                g.1 += 1;
                g.2 += size;
            }
            None => groups.push((path, 1, *size)),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.1));
    groups
        .iter()
        .map(|(path, n, bytes)| format!("{n} allocations ({bytes} bytes) from:\n{path}"))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------
// Logging like the collector's, written nowhere but counted.

/// Log lines written, per counter slot of the thread that logged.
static LOG_LINES: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

struct CountingSink;

impl io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.ends_with(b"\n") {
            let slot = SLOT.try_with(Cell::get).unwrap_or(0);
            LOG_LINES[slot].fetch_add(1, Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn install_logging() {
    static GUARD: OnceLock<tracing_appender::non_blocking::WorkerGuard> = OnceLock::new();
    GUARD.get_or_init(|| {
        use tracing_subscriber::prelude::*;
        use tracing_subscriber::{fmt, EnvFilter};
        let (file, guard) = tracing_appender::non_blocking(io::sink());
        tracing_subscriber::registry()
            .with(
                fmt::layer()
                    .with_writer(|| CountingSink)
                    .with_filter(EnvFilter::new("info")),
            )
            .with(
                fmt::layer()
                    .with_ansi(false)
                    .with_writer(file)
                    .with_filter(EnvFilter::new("info")),
            )
            .init();
        guard
    });
}

// ---------------------------------------------------------------------------------------
// Traffic.

const RECORDS: usize = 30;

/// A valid v5 datagram of 30 records, fields varied by `seed`.
fn valid_datagram(seed: u32) -> Vec<u8> {
    use nfpg_wire::v5::encode::{datagram, Header, Record};
    let uptime = 1_000_000 + seed;
    let header = Header {
        sys_uptime: uptime,
        unix_secs: 1_700_000_000u32.wrapping_add(seed),
        unix_nsecs: seed * 1_000_000 % 1_000_000_000,
        flow_sequence: seed * RECORDS as u32,
        engine_type: 0,
        engine_id: (seed % 3) as u8,
        sampling_interval: 0,
    };
    let records: Vec<Record> = (0..RECORDS as u32)
        .map(|r| {
            let i = seed.wrapping_mul(31).wrapping_add(r);
            Record {
                src_addr: (0x0a00_0000 | (i & 0xffff)).to_be_bytes(),
                dst_addr: (0xc000_0200 | (i % 250)).to_be_bytes(),
                next_hop: 0x0a00_0001u32.to_be_bytes(),
                input: 1,
                output: 2,
                packets: 1 + i % 50,
                octets: 40 * (1 + i % 50),
                first: uptime.wrapping_sub(2000 + i % 100),
                last: uptime.wrapping_sub(1000),
                src_port: 1024 + (i % 60_000) as u16,
                dst_port: [80u16, 443, 53, 22][(i % 4) as usize],
                tcp_flags: 0x1b,
                protocol: if i % 4 == 2 { 17 } else { 6 },
                src_mask: 24,
                dst_mask: 24,
                ..Record::default()
            }
        })
        .collect();
    datagram(&header, &records)
}

const NETFLOW_TEMPLATE: u16 = 300;

fn netflow_message(version: u16, seq: u32) -> nfpg_wire::netflow::encode::Message {
    use nfpg_wire::netflow::encode::Message;
    if version == 9 {
        Message::v9(1_000_000, 1_700_000_000, seq, 1)
    } else {
        Message::ipfix(1_700_000_000, seq, 1)
    }
}

/// A datagram with only the v9 or IPFIX data template.
fn netflow_templates(version: u16) -> Vec<u8> {
    use nfpg_wire::netflow::encode::flow_template;
    let mut m = netflow_message(version, 0);
    m.templates(&[&flow_template(NETFLOW_TEMPLATE, false)]);
    m.finish()
}

/// A v9 or IPFIX datagram of 20 flows (data only), fields varied by `seed`.
fn netflow_data(version: u16, seed: u32) -> Vec<u8> {
    use nfpg_wire::netflow::encode::{flow_template, flow_values, Flow};
    let t = flow_template(NETFLOW_TEMPLATE, false);
    let records: Vec<_> = (0..20u32)
        .map(|r| {
            let i = seed * 20 + r;
            flow_values(&Flow {
                src: std::net::Ipv4Addr::from(0x0a00_0000 | (i & 0xffff)).into(),
                dst: std::net::Ipv4Addr::from(0xc000_0200 | (i % 250)).into(),
                src_port: 1024 + (i % 60_000) as u16,
                dst_port: 443,
                protocol: 6,
                tcp_flags: 0x1b,
                tos: 0,
                packets: 1 + i % 50,
                bytes: 40 * (1 + i % 50),
                input: 1,
                output: 2,
                direction: 0,
                end_reason: 2,
                first_ms: 990_000,
                last_ms: 999_000,
            })
        })
        .collect();
    let mut m = netflow_message(version, seed);
    m.data(&t, &records);
    m.finish()
}

/// One malformed datagram of each kind the decoder rejects.
fn malformed_datagrams() -> Vec<Vec<u8>> {
    let good = valid_datagram(7);
    let mut bad_version = good.clone();
    bad_version[1] = 7;
    let mut bad_count = good[..24].to_vec();
    bad_count[2..4].copy_from_slice(&0u16.to_be_bytes());
    let mut bad_length = good.clone();
    bad_length.truncate(24 + 48 * 2);
    let mut truncated = good.clone();
    truncated.resize(recv::MAX_DATAGRAM + 100, 0);
    vec![
        good[..10].to_vec(), // too short
        bad_version,
        bad_count,
        bad_length,
        truncated,
    ]
}

/// A shard on a loopback socket with a consumer thread standing in for the writers, and
/// three exporters sending to it.
struct Rig {
    addr: SocketAddr,
    exporters: Vec<UdpSocket>,
    valid: Vec<Vec<u8>>,
    malformed: Vec<Vec<u8>>,
    counters: Arc<crossbeam_utils::CachePadded<ShardCounters>>,
    sent: u64,
    stop: Arc<AtomicBool>,
    consumer_stop: Arc<AtomicBool>,
    shard: Option<JoinHandle<()>>,
    consumer: Option<JoinHandle<u64>>,
    /// The collector's side of the shard's latency recorders.
    latency: nfpg::obs::latency::Latency,
}

impl Rig {
    fn start(backend: Backend, slot: usize) -> Self {
        install_logging();
        let bound = recv::socket::bind_reuseport("127.0.0.1:0".parse().unwrap(), 1 << 20)
            .expect("bind the shard socket");
        let addr = bound.socket.local_addr().unwrap();
        let (rx, why) = recv::open(backend, bound.socket, 64).expect("open the receiver");
        eprintln!("{backend:?}: {why}; SO_RCVBUF {}", bound.rcvbuf);
        // Small batches, so batches are sealed (by size and by time) and recycled many times.
        let handoff = Arc::new(Handoff::new(8, 8 + 2, 1024));
        let counters = Counters::new(1, 0).shards[0].clone();
        let stop = Arc::new(AtomicBool::new(false));
        // Made on this thread: creating recorders allocates; recording does not, nor does the
        // collector taking an interval from them (the measured window takes several).
        let latency = nfpg::obs::latency::Latency::new();
        let recorders = latency.recorders();
        let shard = {
            let (handoff, counters, stop) = (handoff.clone(), counters.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("shard-{backend:?}"))
                .spawn(move || {
                    count_this_thread(slot);
                    let cfg = ShardConfig {
                        id: 0,
                        recorders,
                        flush_interval: Duration::from_millis(20),
                        core: None,
                        overflow: None,
                        netflow: std::sync::Arc::new(nfpg::decode::netflow::Shared::new(
                            nfpg::decode::hold::Hold::new(1 << 20, Duration::from_secs(60)),
                            Vec::new(),
                            Default::default(),
                        )),
                        // The allow-list and time checks run on the hot path too.
                        allow: nfpg::addr::AllowList::new(&["127.0.0.0/8".parse().unwrap()]),
                        time_window_us: (86_400_000_000, 7 * 86_400_000_000),
                        samples_per_s: 20,
                    };
                    shard::run(cfg, rx, handoff, counters, stop);
                    count_this_thread(0);
                })
                .unwrap()
        };
        let consumer_stop = Arc::new(AtomicBool::new(false));
        let consumer = {
            let (handoff, stop) = (handoff.clone(), consumer_stop.clone());
            std::thread::spawn(move || {
                let mut flows = 0u64;
                loop {
                    match handoff.pop_full() {
                        Some(b) => {
                            flows += b.len() as u64;
                            handoff.give_back(b);
                        }
                        None if stop.load(Relaxed) => return flows,
                        None => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            })
        };
        let exporters = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
            .iter()
            .map(|ip| UdpSocket::bind((*ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}")))
            .collect();
        Rig {
            addr,
            exporters,
            // v5, and v9 and IPFIX data whose templates every exporter sends in the warm-up.
            valid: (0..64)
                .map(valid_datagram)
                .chain((0..16).map(|i| netflow_data(9, i)))
                .chain((0..16).map(|i| netflow_data(10, i)))
                .collect(),
            malformed: malformed_datagrams(),
            counters,
            sent: 0,
            stop,
            consumer_stop,
            shard: Some(shard),
            consumer: Some(consumer),
            latency,
        }
    }

    fn received(&self) -> u64 {
        self.counters.datagrams.load(Relaxed)
    }

    /// Sends `n` datagrams, every `malformed_every`-th one malformed (0: none), round-robin
    /// over the exporters, paced so the socket buffer never overflows: a short sleep every 64
    /// datagrams, and a wait whenever more than 128 are not yet counted by the shard (the
    /// shard counts once per receive call of up to 64).
    fn send(&mut self, n: u64, malformed_every: u64) {
        for i in 0..n {
            let k = self.sent as usize;
            let d = if malformed_every > 0 && i % malformed_every == malformed_every - 1 {
                &self.malformed[k % self.malformed.len()]
            } else {
                &self.valid[k % self.valid.len()]
            };
            let from = &self.exporters[k % self.exporters.len()];
            from.send_to(d, self.addr).expect("send");
            self.sent += 1;
            if i % 64 == 63 {
                std::thread::sleep(Duration::from_millis(1));
            }
            if i % 16 == 15 {
                let t = Instant::now();
                while self.sent - self.received() > 128 && t.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }

    /// Every exporter sends the v9 and IPFIX templates (learning a template allocates; a
    /// router sends them at start and then every few minutes).
    fn send_templates(&mut self) {
        for from in &self.exporters {
            for version in [9, 10] {
                from.send_to(&netflow_templates(version), self.addr)
                    .expect("send");
                self.sent += 1;
            }
        }
    }

    /// Waits (bounded) until the shard has counted every datagram sent.
    fn wait_received(&self) {
        let t = Instant::now();
        while self.received() < self.sent && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            self.received(),
            self.sent,
            "datagrams counted by the shard (kernel drops: {})",
            self.counters.kernel_drops.load(Relaxed)
        );
    }

    fn malformed(&self) -> u64 {
        self.counters
            .malformed
            .iter()
            .map(|m| m.load(Relaxed))
            .sum()
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Relaxed);
        self.shard.take().unwrap().join().expect("shard thread");
        self.consumer_stop.store(true, Relaxed);
        self.consumer
            .take()
            .unwrap()
            .join()
            .expect("consumer thread")
    }
}

/// Warm-up, then the measured window; asserts it allocated nothing.
fn zero_allocations(backend: Backend, slot: usize) {
    let mut rig = Rig::start(backend, slot);

    // Warm-up: every exporter sends valid and every kind of malformed datagram, so the
    // sampler knows them all, every pool batch has been through the shard, and the first
    // malformed log line (due at once) is written.
    rig.send_templates();
    rig.send(2_000, 0);
    rig.send(220, 10);
    rig.wait_received();
    let t = Instant::now();
    while LOG_LINES[slot].load(Relaxed) == 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        LOG_LINES[slot].load(Relaxed) > 0,
        "the warm-up logged malformed datagrams"
    );
    let warmup_allocs = ALLOCS[slot].load(Relaxed);

    // The measured window: 20,000 datagrams, one in ten malformed.
    let logs_before = LOG_LINES[slot].load(Relaxed);
    let malformed_before = rig.malformed();
    TRACE[slot].store(true, Relaxed);
    let before = ALLOCS[slot].load(Relaxed);
    // Spread over at least 2.5 s, so the window spans the shard's once-a-second work
    // (the kernel-drop check) as well as the per-datagram path.
    // Latency intervals are collected meanwhile, as the collector does every --hist-interval.
    for i in 0..40 {
        rig.send(500, 10);
        std::thread::sleep(Duration::from_millis(60));
        if i % 8 == 7 {
            rig.latency.interval();
        }
    }
    rig.wait_received();
    let delta = ALLOCS[slot].load(Relaxed) - before;
    TRACE[slot].store(false, Relaxed);
    let logs = LOG_LINES[slot].load(Relaxed) - logs_before;
    let malformed = rig.malformed() - malformed_before;

    let batches = rig.counters.batches.load(Relaxed);
    let mut latency = std::mem::take(&mut rig.latency);
    let total_flows = rig.finish();
    // Every batch the shard sealed was recorded once, in one interval or another.
    latency.interval();
    assert_eq!(latency.summary().batch_fill_flows.count, batches);
    eprintln!(
        "{backend:?}: {warmup_allocs} allocations in start-up and warm-up, {delta} in the \
         measured window of 20000 datagrams ({malformed} malformed, {logs} log lines); \
         {total_flows} flows handed over"
    );
    assert_eq!(malformed, 2_000, "malformed datagrams in the window");
    assert_eq!(
        delta,
        0,
        "{backend:?}: the shard allocated {delta} times in the measured window ({logs} \
         malformed log lines written in it); first allocations:\n{}",
        take_traces(slot)
    );
}

#[test]
fn shard_path_allocates_nothing_mmsg() {
    zero_allocations(Backend::Mmsg, SLOT_MMSG);
}

#[test]
fn shard_path_allocates_nothing_uring() {
    if !recv::uring_for_tests("shard_path_allocates_nothing_uring") {
        return;
    }
    zero_allocations(Backend::Uring, SLOT_URING);
}

/// The shard's malformed-datagram log line (at most one per 10 s) on the measured path.
/// Takes over 10 s, hence ignored by default; run with `--ignored`.
#[test]
#[ignore]
fn malformed_log_line_allocates_nothing() {
    let slot = SLOT_LOG;
    let mut rig = Rig::start(Backend::Mmsg, slot);
    rig.send_templates();
    rig.send(2_000, 0);
    rig.send(220, 10);
    rig.wait_received();
    let t = Instant::now();
    while LOG_LINES[slot].load(Relaxed) == 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let first_log = Instant::now();
    let logs_before = LOG_LINES[slot].load(Relaxed);
    assert!(logs_before > 0, "the warm-up logged");

    // Keep traffic flowing until the next log line is due, then one more malformed datagram.
    TRACE[slot].store(true, Relaxed);
    let before = ALLOCS[slot].load(Relaxed);
    while first_log.elapsed() < Duration::from_millis(10_500) {
        rig.send(640, 0);
        std::thread::sleep(Duration::from_millis(100));
    }
    rig.send(10, 10);
    rig.wait_received();
    let t = Instant::now();
    while LOG_LINES[slot].load(Relaxed) == logs_before && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Let the shard finish the line (the sink counts it when the write starts).
    std::thread::sleep(Duration::from_millis(200));
    let delta = ALLOCS[slot].load(Relaxed) - before;
    TRACE[slot].store(false, Relaxed);
    let logs = LOG_LINES[slot].load(Relaxed) - logs_before;
    rig.finish();
    assert!(logs > 0, "a second malformed log line was written");
    assert_eq!(
        delta,
        0,
        "the shard allocated {delta} times around {logs} malformed log line(s); first \
         allocations:\n{}",
        take_traces(slot)
    );
}
