"""Measured capacity, CPU and scaling sections of BENCHMARKS.md; imported by benches/e2e.py.

Every figure here is something stored and timed in this run, never a formula on the offered
rate:

- A *step* sends `rate` datagrams/s for `duration` s, then waits until the collector has
  stored everything it will store (nfpg: its own `rows_written + rows_replayed` counters,
  scraped every 0.1 s; nfacctd: PostgreSQL's insert counter for its table, polled every
  0.25 s), then checks the stored totals against the sent ones per exporter in the
  database. `drain` = time from the end of sending to the last row stored.
- *Capacity* = the highest offered rate at which a step stored exactly what was sent AND
  its drain stayed within `DRAIN_OK` s (plus the collector's own buffering interval): the
  collector kept up rather than buffering the excess. *Throughput* = stored flows / (send
  time + drain).
- CPU = the collector's process tree's CPU time (utime + stime of every thread, children
  included) over the step, per datagram; PostgreSQL's the same from its postmaster's tree.
- Every collector gets the same total socket receive buffer (`RCVBUF_TOTAL`); the harness
  raises net.core.rmem_max to it for the run (restored afterwards) so a peer's plain
  SO_RCVBUF request is not capped below what nfpg forces, and reads each socket's granted
  size back with `ss -uam` (the kernel doubles a plain SO_RCVBUF request for its own
  overhead, so the peers ask for half of it; nfpg's `--rcvbuf` already means the granted size).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import e2e as E

# Socket receive buffer each collector gets in all (nfpg splits it over its shards' sockets).
RCVBUF_TOTAL = 32 * 1024 * 1024
# A step "kept up" when its last row was stored at most this long after sending ended, on top
# of the collector's own flush interval (nfpg: 1 s batches; nfacctd: sql_refresh_time). It
# bounds what a collector may buffer (in memory or, nfpg, spilled to its spool) and still
# count as keeping up: 1 s after a 20 s step is 5 % of the offered flows (3 s, as before the
# spill thread, let a step pass that stored 15 % less than offered until sending ended).
DRAIN_OK = 1.0
NFPG_FLUSH = 1.0
POLL = 0.1
# How long a step waits, after its stored count last changed, before it calls the count final.
SETTLE = 10.0
STEP_WAIT_MAX = 300.0
HZ = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- CPU accounting


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime+cutime+cstime) of a process, in clock ticks."""
    rest = E.proc_stat(f"/proc/{pid}/stat")
    if rest is None:
        return None
    return int(rest[1]), sum(int(x) for x in rest[11:15])


def tree_ticks(root: int | None) -> int:
    """CPU ticks of `root` and every live descendant; children that exited and were waited
    for are in their parent's cutime/cstime (PostgreSQL's backends, nfacctd's plugins)."""
    if not root:
        return 0
    procs = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            s = _stat(int(d))
            if s:
                procs[int(d)] = s
    total = 0
    for pid, (ppid, ticks) in procs.items():
        p, hops = pid, 0
        while p and hops < 64:
            if p == root:
                total += ticks
                break
            p, hops = procs.get(p, (0, 0))[0], hops + 1
    return total


def thread_ticks(pid: int) -> dict[int, int]:
    """utime + stime of each live thread of `pid`, by thread id, in clock ticks."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tids:
        rest = E.proc_stat(f"/proc/{pid}/task/{t}/stat")
        if rest is not None:
            out[int(t)] = int(rest[11]) + int(rest[12])
    return out


def granted_rcvbuf(port: int) -> int | None:
    """The receive buffer the kernel gave the UDP socket(s) bound to `port`, summed (`ss -uml`
    reports rb per socket)."""
    try:
        r = subprocess.run(["ss", "-uanmH", f"sport = :{port}"], capture_output=True, text=True,
                           timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    rbs = [int(x) for x in re.findall(r"\brb(\d+)", r.stdout)]
    return sum(rbs) if rbs else None


class RmemMax:
    """Raises net.core.rmem_max to RCVBUF_TOTAL for the run (root only), restores it after."""

    PATH = Path("/proc/sys/net/core/rmem_max")

    def __init__(self) -> None:
        self.old: str | None = None

    def raise_(self) -> str:
        try:
            cur = self.PATH.read_text().strip()
            if int(cur) < RCVBUF_TOTAL and os.geteuid() == 0:
                self.PATH.write_text(str(RCVBUF_TOTAL))
                self.old = cur
                return f"raised from {cur} to {RCVBUF_TOTAL} for the run"
            return cur
        except OSError as e:
            return f"unchanged ({e})"

    def restore(self) -> None:
        if self.old is not None:
            try:
                self.PATH.write_text(self.old)
            except OSError:
                pass
            self.old = None


# --------------------------------------------------------------------------- stored counters


def scrape_all(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        body = r.read().decode()
    vals: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            name = series.split("{", 1)[0]
            vals[name] = vals.get(name, 0.0) + float(value)
    return vals


class Watch:
    """Polls a stored-count function every `every` s in a thread; remembers when the count
    last changed (monotonic time of the poll that first saw the final value)."""

    def __init__(self, fn, every: float = POLL):
        self.fn, self.every = fn, every
        self.value: int | None = None
        self.changed_at = time.monotonic()
        self.errors = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                v = int(self.fn())
                if v != self.value:
                    self.value, self.changed_at = v, time.monotonic()
            except Exception:  # a scrape that failed: the next one counts
                self.errors += 1
            self._stop.wait(self.every)

    def wait_for(self, target: int, t_end: float) -> None:
        """Until the count reaches `target`, or has not changed for SETTLE s (both after
        sending ended at t_end), bounded by STEP_WAIT_MAX."""
        deadline = t_end + STEP_WAIT_MAX
        while time.monotonic() < deadline:
            if self.value is not None and self.value >= target:
                return
            if time.monotonic() - max(self.changed_at, t_end) > SETTLE:
                return
            time.sleep(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(timeout=5)


# --------------------------------------------------------------------------- one step


@dataclass
class Step:
    collector: str
    rate: int
    duration: float
    args: str = ""
    sent_dgrams: int = 0
    sent_flows: int = 0
    sent_packets: int = 0
    sent_bytes: int = 0
    achieved_dps: float = 0
    elapsed: float = 0             # loadgen's send time
    stored_flows: int = 0          # rows found in the database after the step
    stored_packets: int = 0
    stored_bytes: int = 0
    exact: bool = False            # stored == sent, per exporter (flows, packets, bytes)
    drain: float | None = None     # end of sending -> last row stored
    allowance: float = NFPG_FLUSH  # the collector's own buffering interval
    kernel_drops: int | None = None
    spooled: int = 0
    cpu_s: float = 0               # collector process tree
    pg_cpu_s: float = 0            # PostgreSQL's postmaster tree
    lat: dict | None = None        # nfpg's end-to-end latency (kernel receive -> commit)
    rcvbuf: int | None = None      # granted, all sockets
    shards: str = ""
    other: float | None = None
    note: str = ""
    db: str = ""
    parts: list[Path] = field(default_factory=list)  # its rows, exported (see nfpg_ramp)
    attempt: int = 1               # which try of its rate (see ramp)
    verdict: str = ""              # on the try that decided its rate: "kept up 2 of 2", …

    @property
    def kept_up(self) -> bool:
        return self.exact and self.drain is not None and \
            self.drain <= DRAIN_OK + self.allowance

    @property
    def throughput(self) -> float:
        if self.drain is None:
            return 0.0
        return self.stored_flows / max(self.elapsed + self.drain, 1e-9)

    @property
    def sent_fps(self) -> float:
        return self.sent_flows / max(self.elapsed, 1e-9)

    def cpu_us_per_dgram(self, pg: bool = False) -> float:
        return (self.pg_cpu_s if pg else self.cpu_s) * 1e6 / max(self.sent_dgrams, 1)


def stored_per_exporter(pg, db: str, table: str, exporter_col: str) -> dict[str, tuple[int, int, int]]:
    out = pg.query(f"SELECT host({exporter_col}), count(*), coalesce(sum(packets), 0), "
                   f"coalesce(sum(bytes), 0) FROM {table} GROUP BY 1", db=db)
    res = {}
    for line in out.split():
        host, n, p, b = line.split("|")
        res[host] = (int(n), int(p), int(b))
    return res


def check_stored(st: Step, lg: dict, stored: dict[str, tuple[int, int, int]],
                 rows_are_flows: bool = True) -> None:
    st.stored_flows = sum(v[0] for v in stored.values())
    st.stored_packets = sum(v[1] for v in stored.values())
    st.stored_bytes = sum(v[2] for v in stored.values())
    ok = True
    diffs = []
    for e in lg["exporters"]:
        got = stored.get(e["address"], (0, 0, 0))
        want = (e["flows"], e["packets"], e["bytes"])
        if not rows_are_flows:
            got, want = got[1:], want[1:]
        if tuple(got) != tuple(want):
            ok = False
            names = ("rows", "packets", "bytes")[-len(want):]
            diffs.append(e["address"] + " " + ", ".join(
                f"{n} {g - w:+,}" for n, g, w in zip(names, got, want) if g != w))
    extra = set(stored) - {e["address"] for e in lg["exporters"]}
    if extra:
        ok = False
        diffs.append("rows from addresses that sent nothing: " + ", ".join(sorted(extra)))
    st.exact = ok
    if diffs:
        st.note = (st.note + "; " if st.note else "") + "stored − sent: " + "; ".join(diffs)


def record_send(st: Step, lg: dict) -> None:
    st.sent_dgrams = lg["sent"]["datagrams"]
    st.sent_flows = lg["sent"]["flows"]
    st.sent_packets = lg["sent"]["packets"]
    st.sent_bytes = lg["sent"]["bytes"]
    st.achieved_dps = E.sent_rate(lg)
    st.elapsed = float(lg["elapsed_s"])
    if E.source_limited(lg, st.rate):
        st.note = "load source below the offered rate"


def nfpg_pg_step(pg, work: Path, rate: int, duration: float, seed: int, tag: str,
                 version: int = 5, extra: list[str] | None = None, keep_db: bool = False) -> Step:
    extra = list(extra or [])
    db = f"s_{tag}".replace("-", "_")
    pg.query(f"CREATE DATABASE {db}")
    # As before every COPY-limit repeat: no step pays for the previous one's checkpoint.
    pg.query("CHECKPOINT")
    added = E.extra_args(["--database-url", "--metrics", "--rcvbuf"] + extra)
    shards = E.shards_in(extra + added) or os.cpu_count() or 1
    per_socket = RCVBUF_TOTAL // shards
    mport = E.free_tcp_port()
    st = Step("nfpg", rate, duration, args=" ".join(extra + added), db=db)
    n = E.Nfpg(work, f"nfpg-{tag}", ["--database-url", pg.url(db), "--metrics", str(mport),
                                      "--rcvbuf", str(per_socket)] + extra)
    n.start()
    st.rcvbuf = granted_rcvbuf(n.port)

    def stored() -> int:
        v = scrape_all(mport)
        return int(v.get("nfpg_rows_written_total", 0) + v.get("nfpg_rows_replayed_total", 0))

    w = Watch(stored)
    c0, p0 = tree_ticks(n.proc.pid), tree_ticks(pg.postmaster)
    t0 = time.monotonic()
    try:
        lg = E.loadgen(n.port, rate, duration, seed=seed, version=version)
        t_end = time.monotonic()
        record_send(st, lg)
        w.wait_for(st.sent_flows, t_end)
        c1, p1 = tree_ticks(n.proc.pid), tree_ticks(pg.postmaster)
        if w.value is not None and w.value > 0:
            st.drain = max(0.0, w.changed_at - t_end)
        if w.value is None or w.value < st.sent_flows:
            st.note = (st.note + "; " if st.note else "") + \
                f"nfpg stored {w.value} of {st.sent_flows} within {SETTLE:.0f} s of no change"
    finally:
        w.stop()
        summary = n.finish()
    st.other = E.OTHER.between(t0, time.monotonic())
    st.cpu_s, st.pg_cpu_s = (c1 - c0) / HZ, (p1 - p0) / HZ
    st.kernel_drops = int(E.sv(summary, "kernel_drops"))
    st.spooled = int(E.sv(summary, "rows_spooled"))
    st.lat = E.latency(summary)
    st.shards = E.shard_split(summary)
    check_stored(st, lg, stored_per_exporter(pg, db, "netflow.flows", "exporter"))
    E.log(f"  nfpg {st.args or 'defaults'} @ {rate} dps: sent {st.sent_flows}, stored "
          f"{st.stored_flows} ({'exact' if st.exact else 'NOT exact'}), drain "
          f"{st.drain if st.drain is None else round(st.drain, 2)} s, throughput "
          f"{st.throughput:,.0f} flows/s, cpu {st.cpu_us_per_dgram():.2f} us/dgram, "
          f"pg {st.cpu_us_per_dgram(True):.2f} us/dgram")
    if not keep_db:
        pg.query(f"DROP DATABASE {db}")
        st.db = ""
    return st


def ramp(rates: list[int], tries: int, run_try, on_rate=None) -> list[Step]:
    """Rising rates until a rate does not keep up. A rate is kept up when most of its tries
    kept up (the median try, as the COPY limit is the median of its repeats): tries of a rate
    run until `tries // 2 + 1` of them kept up or failed, so 3 tries means 2, or 3 when the
    first two disagree. run_try(rate, index, done) runs one try (done: the rate's tries so
    far); on_rate(tries, kept) sees each rate's tries once it is decided."""
    steps: list[Step] = []
    need = tries // 2 + 1
    for i, rate in enumerate(rates, 1):
        done: list[Step] = []
        while True:
            st = run_try(rate, i, done)
            st.attempt = len(done) + 1
            done.append(st)
            ok = sum(1 for t in done if t.kept_up)
            if ok >= need or len(done) - ok >= need:
                break
        kept = ok >= need
        st.verdict = f"{'kept up' if kept else 'not kept up'}: {ok} of {len(done)} tries"
        steps += done
        if on_rate:
            on_rate(done, kept)
        if not kept:
            break
    return steps


def nfpg_ramp(pg, work: Path, rates: list[int], duration: float, version: int = 5,
              extra: list[str] | None = None, label: str = "r", parts: int = 0,
              tries: int = 3) -> list[Step]:
    """The ramp (see `ramp`) of nfpg into PostgreSQL. Every try's database is dropped before
    the next try starts, as the COPY limit truncates its table before each repeat: on a VM
    that returns freed memory to its host, a try that writes into memory nothing freed just
    before pays the host's page faults (see `page_costs`), and a ramp that kept the previous
    step's database ran into them where the COPY limit did not.

    parts > 0: the first try of a rate that kept up has its rows exported (`export_rows`,
    into `parts` files); once the rate is kept up they replace the previous rate's, so the
    COPY limit and the layouts can load the capacity step's rows after its database is gone."""
    held: list[Step] = []   # the capacity step so far, with its parts

    def run_try(rate: int, i: int, done: list[Step]) -> Step:
        attempt = len(done) + 1
        E.log(f"nfpg -> PostgreSQL (v{version}{' ' + ' '.join(extra) if extra else ''}): "
              f"{rate} datagrams/s for {duration:.0f}s, try {attempt}")
        st = nfpg_pg_step(pg, work, rate, duration, seed=i, tag=f"{label}{i}t{attempt}",
                          version=version, extra=extra, keep_db=parts > 0)
        if st.db:
            if parts and st.kept_up and not any(t.parts for t in done):
                st.parts = export_rows(pg, st.db, parts, pg.files / f"{label}{i}t{attempt}")
            pg.query(f"DROP DATABASE IF EXISTS {st.db}")
            st.db = ""
        return st

    def on_rate(done: list[Step], kept: bool) -> None:
        exported = [t for t in done if t.parts]
        if kept and exported:
            for old in held:
                drop_parts(old)
            held[:] = exported[:1]
        else:
            for t in exported:
                drop_parts(t)

    return ramp(rates, tries, run_try, on_rate)


def drop_parts(st: Step) -> None:
    for f in st.parts:
        f.unlink(missing_ok=True)
    if st.parts:
        shutil.rmtree(st.parts[0].parent, ignore_errors=True)
    st.parts = []


def capacity(steps: list[Step]) -> Step | None:
    """The highest rate kept up (by its tries' verdict): its first try that kept up (the one
    whose rows were exported)."""
    kept = [s for s in steps if s.verdict.startswith("kept up")]
    if not kept:
        return None
    top = kept[-1].rate
    return next(s for s in steps if s.rate == top and s.kept_up)


def no_rate_failed(steps: list[Step]) -> bool:
    """Whether every rate of a ramp kept up (its highest is then a lower bound)."""
    return bool(steps) and steps[-1].verdict.startswith("kept up")


# --------------------------------------------------------------------------- pmacct


NFACCTD_REFRESH = 5
NFACCTD_CACHE = 1000003
# pmacct's own names for the primitives nfpg stores per flow (sql_optimize_clauses lets it
# write a table of just these); every one in the aggregation key, so rows are flows.
ACCT_AGGREGATE = ("peer_src_ip,src_host,dst_host,src_port,dst_port,proto,tos,tcpflags,"
                  "in_iface,out_iface,src_as,dst_as,src_mask,dst_mask,timestamp_start,"
                  "timestamp_end")
ACCT_TABLE = """
CREATE TABLE acct_flows (
    peer_ip_src inet NOT NULL,
    ip_src inet NOT NULL,
    ip_dst inet NOT NULL,
    port_src int4 NOT NULL,
    port_dst int4 NOT NULL,
    ip_proto int2 NOT NULL,
    tos int4 NOT NULL,
    tcp_flags int2 NOT NULL,
    iface_in int8 NOT NULL,
    iface_out int8 NOT NULL,
    as_src int8 NOT NULL,
    as_dst int8 NOT NULL,
    mask_src int2 NOT NULL,
    mask_dst int2 NOT NULL,
    timestamp_start timestamp NOT NULL,
    timestamp_start_residual int4 NOT NULL,
    timestamp_end timestamp NOT NULL,
    timestamp_end_residual int4 NOT NULL,
    packets int8 NOT NULL,
    bytes int8 NOT NULL,
    stamp_inserted timestamp NOT NULL DEFAULT now(),
    stamp_updated timestamp
);
CREATE INDEX acct_flows_times_brin ON acct_flows USING brin (stamp_inserted, timestamp_start);
"""


def nfacctd_step(pg, work: Path, rate: int, duration: float, seed: int, tag: str) -> Step:
    db = f"a_{tag}".replace("-", "_")
    pg.query(f"CREATE DATABASE {db}")
    pg.script(ACCT_TABLE, db=db)
    pg.query("CHECKPOINT")
    port = E.free_udp_port()
    conf = work / f"nfacctd-{tag}.conf"
    conf.write_text(f"""daemonize: false
nfacctd_ip: 127.0.0.1
nfacctd_port: {port}
nfacctd_pipe_size: {RCVBUF_TOTAL // 2}
nfacctd_time_new: false
timestamps_secs: false
plugins: pgsql
plugin_pipe_size: {256 * 1024 * 1024}
plugin_buffer_size: {64 * 1024}
sql_host: {pg.sock}
sql_port: {pg.port}
sql_user: {pg.user}
sql_passwd: unused
sql_db: {db}
sql_table: acct_flows
sql_optimize_clauses: true
aggregate: {ACCT_AGGREGATE}
sql_refresh_time: {NFACCTD_REFRESH}
sql_cache_entries: {NFACCTD_CACHE}
sql_dont_try_update: true
sql_use_copy: true
""")
    st = Step("nfacctd", rate, duration, allowance=float(NFACCTD_REFRESH), db=db)
    relid = None
    with open(work / f"nfacctd-{tag}.log", "w") as lf:
        p = E.spawn(["nfacctd", "-f", str(conf)], stdout=lf, stderr=subprocess.STDOUT)
        try:
            E.wait_until(lambda: E.udp_bound(port), 30, "nfacctd to bind", p)
            time.sleep(1.0)
            st.rcvbuf = granted_rcvbuf(port)
            relid = pg.query("SELECT 'acct_flows'::regclass::oid", db=db).strip()

            def inserted() -> int:
                # The statistics collector's insert count: cheap, unlike a count(*) that
                # would compete with the COPYs (flushed within a second of each commit).
                return int(pg.query(f"SELECT pg_stat_get_tuples_inserted({relid}) + "
                                    f"pg_stat_get_xact_tuples_inserted({relid})", db=db).strip())

            w = Watch(inserted, every=0.25)
            c0, p0 = tree_ticks(p.pid), tree_ticks(pg.postmaster)
            t0 = time.monotonic()
            try:
                lg = E.loadgen(port, rate, duration, seed=seed)
                t_end = time.monotonic()
                record_send(st, lg)
                w.wait_for(st.sent_flows, t_end)
                c1, p1 = tree_ticks(p.pid), tree_ticks(pg.postmaster)
                if w.value:
                    st.drain = max(0.0, w.changed_at - t_end)
            finally:
                w.stop()
            st.other = E.OTHER.between(t0, time.monotonic())
            st.cpu_s, st.pg_cpu_s = (c1 - c0) / HZ, (p1 - p0) / HZ
        finally:
            E.stop(p, sig=signal.SIGINT, timeout=30)  # nfacctd ignores SIGTERM
    stored = stored_per_exporter(pg, db, "acct_flows", "peer_ip_src")
    check_stored(st, lg, stored)
    if not st.exact:
        rows_ok = st.stored_packets == st.sent_packets and st.stored_bytes == st.sent_bytes
        if rows_ok:
            st.note = (st.note + "; " if st.note else "") + \
                f"packets and bytes exact but {st.stored_flows:,} rows for {st.sent_flows:,} flows"
    E.log(f"  nfacctd @ {rate} dps: sent {st.sent_flows}, stored {st.stored_flows} rows "
          f"({'exact' if st.exact else 'NOT exact'}), drain {st.drain} s, cpu "
          f"{st.cpu_us_per_dgram():.2f} us/dgram")
    pg.query(f"DROP DATABASE {db}")
    st.db = ""
    return st


def nfacctd_ramp(pg, work: Path, rates: list[int], duration: float,
                 tries: int = 3) -> list[Step]:
    def run_try(rate: int, i: int, done: list[Step]) -> Step:
        attempt = len(done) + 1
        E.log(f"nfacctd -> PostgreSQL: {rate} datagrams/s for {duration:.0f}s, try {attempt}")
        return nfacctd_step(pg, work, rate, duration, seed=200 + i, tag=f"{i}t{attempt}")

    return ramp(rates, tries, run_try)


# --------------------------------------------------------------------------- COPY limit


@dataclass
class CopyRun:
    streams: int
    rows: int
    secs: list[float] = field(default_factory=list)
    pg_cpu: list[float] = field(default_factory=list)

    @property
    def rates(self) -> list[float]:
        return [self.rows / s for s in self.secs]

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.secs else 0.0


def export_rows(pg, db: str, parts: int, dest: Path) -> list[Path]:
    """Every row of db's netflow.flows, nfpg's v5 COPY columns, in binary COPY files split by
    row number (part k holds rows k, k + parts, …), written by the server into dest."""
    cols = E.V5_COPY_COLUMNS
    dest.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(dest, "postgres")
    src = "(SELECT *, row_number() OVER () AS nfpg_rn FROM netflow.flows) AS f"
    files: list[Path] = []
    for k in range(parts):
        path = dest / f"copy-part-{k}.bin"
        where = "" if parts == 1 else f"WHERE f.nfpg_rn % {parts} = {k}"
        pg.query(f"COPY (SELECT {cols} FROM {src} {where}) TO '{path}' (FORMAT binary)", db=db)
        os.chmod(path, 0o644)
        files.append(path)
    return files


def copy_parts(pg, db: str, files: list[Path], streams: int) -> list[subprocess.Popen]:
    """psql clients loading the files into db's netflow.flows: stream k of n loads files
    k, k + n, … one after the other in one session."""
    cols = E.V5_COPY_COLUMNS
    procs = []
    for k in range(streams):
        cmd = pg.psql_cmd(db)
        for f in files[k::streams]:
            cmd += ["-c", f"\\copy netflow.flows ({cols}) FROM '{f}' (FORMAT binary)"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    return procs


def migrated_db(pg, db: str) -> None:
    """A fresh database db with nfpg's tables, made by `nfpg migrate`."""
    pg.query(f"CREATE DATABASE {db}")
    E.run([str(E.NFPG), "migrate", "--database-url", pg.url(db)], timeout=120)


def load_parts(pg, db: str, files: list[Path], streams: int, rows: int) -> tuple[float, int]:
    """Loads the files into db's netflow.flows with `streams` psql clients (copy_parts) and
    checks that it then holds `rows` rows. Returns the wall time from the first client's
    start to the last one's exit and PostgreSQL's CPU ticks (`tree_ticks`) then: the check
    after it is not part of the load."""
    t0 = time.monotonic()
    procs = copy_parts(pg, db, files, streams)
    errs = [p.communicate(timeout=1800)[1] for p in procs]
    secs = time.monotonic() - t0
    ticks = tree_ticks(pg.postmaster)
    if any(p.returncode for p in procs):
        raise E.BenchError(f"COPY into {db} with {streams} streams failed: {errs}")
    got = int(pg.query("SELECT count(*) FROM netflow.flows", db=db))
    if got != rows:
        raise E.BenchError(f"COPY into {db} with {streams} streams: {got} rows, expected {rows}")
    return secs, ticks


def copy_limit(pg, files: list[Path], rows: int, streams_list: list[int], repeats: int,
               db: str = "copylimit", keep: bool = False) -> list[CopyRun]:
    """PostgreSQL's own binary COPY of every row nfpg stored at its capacity step (the files
    nfpg_ramp exported, as many as the least common multiple of the stream counts), into the
    same table (a fresh database migrated by `nfpg migrate`) with the column list of nfpg's v5
    COPY, from psql clients over the same unix socket: 1 stream, and as many as nfpg's writers.
    Wall time from the first client's start to the last one's exit.

    All the step's rows, not a sample: PostgreSQL's cost per row grows with what the load has
    already written (the table outgrows shared buffers, COPY's ring writes its own pages), so a
    shorter load measures a higher limit than the one nfpg's step ran into.

    keep: leave db with the last repeat's rows (the layouts read them); the caller drops it."""
    results = []
    migrated_db(pg, db)
    ok = False
    try:
        for n in streams_list:
            cr = CopyRun(n, rows)
            for r in range(repeats):
                pg.query("TRUNCATE netflow.flows", db=db)
                pg.query("CHECKPOINT", db=db)
                p0 = tree_ticks(pg.postmaster)
                secs, p1 = load_parts(pg, db, files, n, rows)
                cr.pg_cpu.append((p1 - p0) / HZ)
                cr.secs.append(secs)
                E.log(f"  COPY {n} stream(s): {rows} rows in {secs:.2f}s = "
                      f"{rows / secs:,.0f} rows/s")
            results.append(cr)
        ok = True
    finally:
        if not (ok and keep):
            pg.query(f"DROP DATABASE {db}")
    return results


# --------------------------------------------------------------------------- receive CPU


@dataclass
class CpuRun:
    collector: str
    rate: int
    sent_dgrams: int = 0
    got_flows: int = 0
    sent_flows: int = 0
    kernel_drops: int | None = None
    cpu_s: float = 0
    achieved_dps: float = 0
    # nfcapd: CPU of its main thread (the one that receives and decodes); the rest is its
    # other threads' (the one that writes the nfdump files).
    main_cpu_s: float | None = None
    file_bytes: int = 0            # nfcapd: what it wrote

    @property
    def us_per_dgram(self) -> float:
        return self.us_per_dgram_of(self.cpu_s)

    def us_per_dgram_of(self, cpu_s: float) -> float:
        return cpu_s * 1e6 / max(self.sent_dgrams, 1)

    @property
    def lossless(self) -> bool:
        return self.got_flows == self.sent_flows


def cpu_nfpg_null(work: Path, rate: int, duration: float, seed: int, tag: str,
                  shards: int | None = None, extra: list[str] | None = None) -> CpuRun:
    args = ["--sink", "null"]
    if shards:
        args += ["--shards", str(shards)]
    args += list(extra or [])
    added = E.extra_args(args + ["--rcvbuf"])
    n_shards = E.shards_in(args + added) or os.cpu_count() or 1
    args += ["--rcvbuf", str(RCVBUF_TOTAL // n_shards)]
    label = " ".join(["nfpg --sink null"] + (["--shards", str(shards)] if shards else [])
                     + list(extra or []) + added)
    r = CpuRun(label, rate)
    n = E.Nfpg(work, f"nfpg-cpu-{tag}", args)
    n.start()
    try:
        time.sleep(0.5)
        c0 = tree_ticks(n.proc.pid)
        lg = E.loadgen(n.port, rate, duration, seed)
        time.sleep(0.5)
        r.cpu_s = (tree_ticks(n.proc.pid) - c0) / HZ
    finally:
        summary = n.finish()
    r.sent_dgrams, r.sent_flows = lg["sent"]["datagrams"], lg["sent"]["flows"]
    r.achieved_dps = E.sent_rate(lg)
    r.got_flows = int(E.sv(summary, "flows"))
    r.kernel_drops = int(E.sv(summary, "kernel_drops"))
    E.log(f"  {r.collector} @ {rate}: {r.us_per_dgram:.2f} us/dgram, {r.got_flows}/{r.sent_flows}")
    return r


def cpu_nfcapd(work: Path, rate: int, duration: float, seed: int, tag: str) -> CpuRun:
    r = CpuRun("nfcapd", rate)
    flowdir = work / f"nfcapd-{tag}"
    flowdir.mkdir(parents=True, exist_ok=True)
    port = E.free_udp_port()
    with open(work / f"nfcapd-{tag}.log", "w") as lf:
        p = E.spawn(["nfcapd", "-w", str(flowdir), "-p", str(port), "-b", "127.0.0.1",
                     "-B", str(RCVBUF_TOTAL // 2), "-t", "3600"], stdout=lf, stderr=subprocess.STDOUT)
        try:
            E.wait_until(lambda: E.udp_bound(port), 30, "nfcapd to bind", p)
            time.sleep(0.5)
            c0, m0 = tree_ticks(p.pid), thread_ticks(p.pid).get(p.pid)
            lg = E.loadgen(port, rate, duration, seed)
            time.sleep(0.5)
            r.cpu_s = (tree_ticks(p.pid) - c0) / HZ
            m1 = thread_ticks(p.pid).get(p.pid)
            if m0 is not None and m1 is not None:
                r.main_cpu_s = (m1 - m0) / HZ
        finally:
            E.stop(p, timeout=60)
    r.sent_dgrams, r.sent_flows = lg["sent"]["datagrams"], lg["sent"]["flows"]
    r.achieved_dps = E.sent_rate(lg)
    r.got_flows = E.nfdump_flows(flowdir)
    r.file_bytes = sum(f.stat().st_size for f in flowdir.rglob("*") if f.is_file())
    E.log(f"  nfcapd @ {rate}: {r.us_per_dgram:.2f} us/dgram, {r.got_flows}/{r.sent_flows}, "
          f"{r.file_bytes} bytes of files")
    E.shutil.rmtree(flowdir, ignore_errors=True)
    return r


# The nfpg variants of the CPU section: the defaults (`--balance hash`), and `--balance cpu`
# (each datagram to the shard on the CPU that processed it; on loopback the sender's).
CPU_VARIANTS = [[], ["--balance", "cpu"]]


def cpu_section(work: Path, rate: int, duration: float, rounds: int) -> list[CpuRun]:
    """nfpg --sink null (each of CPU_VARIANTS) and nfcapd on the same load, in turn, `rounds`
    times each."""
    runs = []
    have_nfcapd = E.shutil.which("nfcapd") is not None
    for i in range(rounds):
        for k, extra in enumerate(CPU_VARIANTS):
            runs.append(cpu_nfpg_null(work, rate, duration, 300 + i, f"cpu{i}-{k}", extra=extra))
        if have_nfcapd:
            runs.append(cpu_nfcapd(work, rate, duration, 300 + i, f"cpu{i}"))
    return runs


def shard_scaling(work: Path, rates: list[int], duration: float) -> dict[int, list[CpuRun]]:
    """nfpg --sink null with 1..cores shards at rising rates until a step loses datagrams."""
    out = {}
    for k in range(1, (os.cpu_count() or 1) + 1):
        steps = []
        for i, rate in enumerate(rates, 1):
            r = cpu_nfpg_null(work, rate, duration, 400 + i, f"sh{k}-{i}", shards=k)
            steps.append(r)
            if not r.lossless or (r.kernel_drops or 0) > 0:
                break
        out[k] = steps
    return out


# --------------------------------------------------------------------------- report


def fmt(n) -> str:
    return "–" if n is None else f"{n:,.0f}"


def lat_str(st: Step) -> str:
    if not st.lat:
        return "–"
    return f"{E.us(st.lat.get('p50'))} / {E.us(st.lat.get('p99'))} / {E.us(st.lat.get('max'))}"


def step_table(a, steps: list[Step], with_lat: bool = True) -> None:
    """One row per try; `try` and the rate's verdict only where the steps are a ramp's."""
    tried = any(s.verdict for s in steps)
    a("| offered datagrams/s |" + (" try |" if tried else "") + " flows sent | sent flows/s "
      "(measured) | stored flows | exact | drain s | kept up | throughput flows/s | kernel drops "
      "| spooled | socket buffer | collector CPU µs/datagram | PostgreSQL CPU µs/datagram |"
      + (" e2e latency p50 / p99 / max |" if with_lat else "") + " other load (cores) | note |")
    a("|---" * (14 + (1 if with_lat else 0) + (1 if tried else 0)) + "|---|")
    for s in steps:
        note = "; ".join(x for x in (f"**rate {s.verdict}**" if s.verdict else "", s.note) if x)
        a(f"| {fmt(s.rate)} |" + (f" {s.attempt} |" if tried else "")
          + f" {fmt(s.sent_flows)} | {fmt(s.sent_fps)} | {fmt(s.stored_flows)} | "
          f"{'yes' if s.exact else '**no**'} | {'–' if s.drain is None else f'{s.drain:.1f}'} | "
          f"{'yes' if s.kept_up else '**no**'} | {fmt(s.throughput)} | {fmt(s.kernel_drops)} | "
          f"{fmt(s.spooled) if s.collector == 'nfpg' else '–'} | "
          f"{'–' if s.rcvbuf is None else f'{s.rcvbuf / 2**20:.0f} MiB'} | "
          f"{s.cpu_us_per_dgram():.2f} | {s.cpu_us_per_dgram(True):.2f} |"
          + (f" {lat_str(s)} |" if with_lat else "") + f" {E.other_str(s.other)} | {note} |")
    a("")


def writer_scaling(pg, work: Path, rate: int, duration: float, writers: list[int]) -> list[Step]:
    """nfpg into PostgreSQL with 1..N writers at one offered rate (above the capacity)."""
    out = []
    for w in writers:
        E.log(f"nfpg -> PostgreSQL with --writers {w}: {rate} datagrams/s for {duration:.0f}s")
        out.append(nfpg_pg_step(pg, work, rate, duration, seed=500 + w, tag=f"w{w}",
                                extra=["--writers", str(w)]))
    return out


def write_sections(a, cfg: dict, steps: list[Step], copies: list[CopyRun], acct: list[Step],
                   acct_err: str, cpu: list[CpuRun], shards: dict[int, list[CpuRun]],
                   writers: list[Step], v9: list[Step]) -> None:
    cap = capacity(steps)
    acap = capacity(acct)
    n_writers = cfg.get("nfpg_writers", 2)
    copy_n = next((c for c in copies if c.streams == n_writers), None)
    copy_1 = next((c for c in copies if c.streams == 1), None)
    a("## Capacity into PostgreSQL")
    a("")
    a("Method (all figures from this one run, on this machine, with the same PostgreSQL server "
      "and settings):")
    a("")
    a(f"- A step offers R datagrams/s of {E.RECORDS} flows each from {E.EXPORTERS} exporters for "
      f"{cfg['pg_duration']:.0f} s (`nfpg-loadgen`, paced), then waits until the collector has "
      f"stored all it will store, then compares the database's per-exporter flows, packets and "
      f"bytes with what was sent. **Exact** = equal for every exporter. Each step starts "
      f"with a fresh database and a CHECKPOINT, as each COPY-limit repeat does (a step writes "
      f"gigabytes of WAL: without it, the checkpoint a previous step started lands in the "
      f"next), and right after the previous step's database was dropped, as each COPY-limit "
      f"repeat starts right after its table was truncated (the ramp exports a step's rows "
      f"first if it kept up, for the COPY limit): on this VM a page of a new file costs far "
      f"more CPU when nothing was freed just before (see *new file pages* under Machine); in an "
      f"A/B on this machine, steps that kept the previous step's database (as runs before this "
      f"one did) cost PostgreSQL 2.24–2.28 µs per row, steps after it was dropped 1.78–1.84.")
    a(f"- **Drain** = time from the end of sending to the last row stored: nfpg's own "
      f"`rows_written + rows_replayed` counters scraped every {POLL} s; nfacctd's table's insert "
      f"counter in PostgreSQL's statistics, polled every 0.25 s. **Kept up** = exact and drain "
      f"≤ {DRAIN_OK:g} s plus the collector's own buffering interval (nfpg: batches of "
      f"{NFPG_FLUSH:.0f} s; nfacctd: `sql_refresh_time` {NFACCTD_REFRESH} s).")
    tries = cfg.get("tries", 1)
    a(f"- **Tries**: each rate is tried until most of {tries} tries agree ({tries // 2 + 1} kept "
      f"up, or {tries // 2 + 1} did not: two tries, a third when they disagree), as the COPY "
      f"limit is the median of {cfg.get('copy_repeats', 3)} repeats; every try is a row below. "
      "The ramp stops at the first rate that was not kept up. Why: on this VM the first try at "
      "a rate higher than any before it writes more memory than any try before it, and in "
      "development runs it alone failed (spooling in its last seconds) while a second try at "
      "the same rate kept up with a drain of 1.1 s, at 28,000, 30,000 and 32,000 datagrams/s "
      "alike; the COPY limit, loaded after the ramp, never writes more than the ramp already "
      "did." + first_tries(steps))
    a("- **Capacity** = the highest offered rate kept up (by its tries); the flows/s figure is "
      "what its first try that kept up sent (measured by the load source) and stored; the COPY "
      "limit loads that try's rows. **Throughput** = stored flows / (send time + drain).")
    a(f"- Every collector gets a {RCVBUF_TOTAL // 2**20} MiB socket receive buffer in all (nfpg "
      "splits it over its shards' sockets; the granted size is read back from the kernel and "
      "shown per step); net.core.rmem_max was " + cfg.get("rmem", "?") + ".")
    a("- CPU = utime + stime of the collector's process tree over the step (send + drain), per "
      "datagram sent; PostgreSQL's likewise from its postmaster's tree (backends included).")
    a("- Latency: nfpg stamps each datagram with the kernel's receive time (SO_TIMESTAMPNS); "
      "end to end = that time → the COPY holding its flows committed.")
    a("")
    a("| | flows/s | method |")
    a("|---|---|---|")
    # No rate failed: the ramp's highest rate is a lower bound, not the capacity itself.
    at_least = bool(cap) and no_rate_failed(steps)
    if cap:
        a(f"| nfpg capacity (v5) | {'≥ ' if at_least else ''}{fmt(cap.sent_fps)} | "
          f"{'the ramp’s highest rate, and no rate failed' if at_least else 'highest rate kept up'}: "
          f"{fmt(cap.rate)} datagrams/s offered, {fmt(cap.stored_flows)} flows stored exactly, "
          f"drain {cap.drain:.1f} s; throughput {fmt(cap.throughput)} |")
    else:
        a("| nfpg capacity (v5) | – | no step kept up |")
    for c in copies:
        a(f"| PostgreSQL binary COPY, {c.streams} stream{'s' if c.streams > 1 else ''} | "
          f"{fmt(c.median)} | median of {len(c.secs)} ({', '.join(fmt(r) for r in c.rates)}); "
          f"{fmt(c.rows)} rows nfpg stored (all of its capacity step), psql `\\copy` into the "
          "same table |")
    if acap:
        a(f"| nfacctd (pmacct) capacity | {fmt(acap.sent_fps)} | highest rate kept up: "
          f"{fmt(acap.rate)} datagrams/s offered, drain {acap.drain:.1f} s |")
    elif acct:
        a("| nfacctd (pmacct) capacity | – | no step kept up |")
    else:
        a(f"| nfacctd (pmacct) | – | {acct_err} |")
    a("")
    if cap and copy_n:
        ratio = cap.sent_fps / copy_n.median
        a(f"**nfpg's capacity is {'at least ' if at_least else ''}{ratio:.0%} of PostgreSQL's "
          f"own binary COPY with the same number of streams ({n_writers}) into the same "
          f"table** (issue 12 asks for at least 95 %"
          + ("; no rate of the ramp failed, so the ramp's highest rate is a lower bound" if at_least else "")
          + "). "
          "The COPY runs had the machine to themselves; nfpg's steps share the cores with the "
          "load source and nfpg itself"
          + (f"; with 1 stream COPY reached {fmt(copy_1.median)} rows/s" if copy_1 else "") + ".")
        if acap:
            a(f"nfpg's capacity is {cap.sent_fps / acap.sent_fps:.1f}× nfacctd's on the same "
              "server, settings, buffers and table shape.")
        a("")
    a("### nfpg into PostgreSQL, rising rates (NetFlow v5)")
    a("")
    a("`nfpg run --listen 127.0.0.1 --database-url … --metrics PORT --rcvbuf "
      f"{RCVBUF_TOTAL // (cfg.get('nfpg_shards') or 1)}` (defaults otherwise: "
      f"{cfg.get('nfpg_shards')} shards, {n_writers} writers), a fresh database per try. The "
      "ramp stops at the first rate that was not kept up.")
    a("")
    step_table(a, steps)
    a("### PostgreSQL's own binary COPY (the database path's limit)")
    a("")
    a("Every row nfpg stored at its capacity step, exported (right after the step, before its "
      "database was dropped) with `COPY (SELECT <nfpg's v5 COPY "
      "columns> …) TO … (FORMAT binary)` into parts split by row number, then loaded by "
      "`psql -c '\\copy netflow.flows (…) FROM part (FORMAT binary)'` clients in parallel (a "
      "stream loads its share of the parts one after the other in one session) into a fresh "
      "database made by `nfpg migrate`: the same rows, partitioned table, BRIN indexes and "
      "column list (the 27 columns of nfpg's v5 COPY) as nfpg's step, over the same unix socket. "
      "TRUNCATE and CHECKPOINT before each repeat; rows/s = rows / wall time from the first "
      "client's start to the last one's exit. All of the step's rows, not a sample: "
      "PostgreSQL's cost per row rises as a load goes on (the table outgrows shared buffers; "
      "COPY's buffer ring writes its own pages), so a shorter load would measure a limit higher "
      "than the one nfpg's step ran into (runs before this one loaded at most 5,000,000 rows, "
      "and all 36 of the v5 and v9 columns).")
    a("")
    a("| streams | rows | seconds per repeat | rows/s per repeat | median rows/s | PostgreSQL CPU µs/row |")
    a("|---|---|---|---|---|---|")
    for c in copies:
        cpu_row = statistics.median(c.pg_cpu) * 1e6 / max(c.rows, 1) if c.pg_cpu else 0
        a(f"| {c.streams} | {fmt(c.rows)} | {', '.join(f'{s:.2f}' for s in c.secs)} | "
          f"{', '.join(fmt(r) for r in c.rates)} | {fmt(c.median)} | {cpu_row:.2f} |")
    a("")
    a("### pmacct's nfacctd into PostgreSQL")
    a("")
    if acct:
        a("nfacctd with its `pgsql` plugin, `sql_use_copy: true` (text COPY), "
          f"`sql_refresh_time: {NFACCTD_REFRESH}`, `sql_dont_try_update: true`, "
          f"`sql_cache_entries: {NFACCTD_CACHE}`, `sql_optimize_clauses: true` and every per-flow "
          f"field in the aggregation key (`aggregate: {ACCT_AGGREGATE}`, `timestamps_secs: "
          "false`), so it writes one row per flow, like nfpg, into a table with the same index "
          "kinds (one BRIN over its insert and flow start times, as nfpg's over received_at and "
          "flow_start). Differences that remain: its table "
          "is not partitioned, has no next hop, engine or sampling columns (pmacct has no "
          "primitives for them from v5) and splits each time into a timestamp and a residual "
          "column. Same server, same socket buffer, same load.")
        a("")
        step_table(a, acct, with_lat=False)
    else:
        a(f"Not measured: {acct_err}")
        a("")
    a("### CPU per datagram at the receive path's limit")
    a("")
    if cpu:
        rate = cpu[0].rate
        a(f"`nfpg run --sink null` (receives, decodes and encodes every flow into binary COPY "
          f"tuples, then discards them: no database), with its defaults and with `--balance cpu`, "
          f"and `nfcapd -B {RCVBUF_TOTAL // 2}` (writes nfdump files) on the same load: "
          f"{fmt(rate)} datagrams/s × {E.RECORDS} flows for {cfg['cpu_duration']:.0f} s, in turn, "
          f"{cfg['cpu_rounds']} rounds each. CPU = the process tree's utime + stime from just "
          "before sending to 0.5 s after; nfcapd's is also split into its main thread (receives "
          "and decodes) and the rest (its file writer), from /proc/PID/task. No warm-up, and no "
          "longer window: on the development VM, after about 17 s at this rate (about 3 GB of "
          "files), nfcapd takes a whole core and loses flows, on disk and tmpfs alike (most "
          "likely the host handing the VM fresh pages slowly; README, Performance).")
        a("")
        a("| round | collector | datagrams sent | flows stored / sent | CPU s | CPU µs per datagram "
          "| nfcapd: receive thread / file writer µs |")
        a("|---|---|---|---|---|---|---|")
        per_round = len(CPU_VARIANTS) + (1 if any(c.collector == "nfcapd" for c in cpu) else 0)
        for i, r in enumerate(cpu):
            split = "–"
            if r.main_cpu_s is not None:
                split = (f"{r.us_per_dgram_of(r.main_cpu_s):.2f} / "
                         f"{r.us_per_dgram_of(r.cpu_s - r.main_cpu_s):.2f}")
            a(f"| {i // per_round + 1} | {r.collector} | {fmt(r.sent_dgrams)} | "
              f"{fmt(r.got_flows)} / {fmt(r.sent_flows)} | {r.cpu_s:.2f} | {r.us_per_dgram:.2f} "
              f"| {split} |")
        a("")
        nc = [r.us_per_dgram for r in cpu if r.collector == "nfcapd"]
        labels = list(dict.fromkeys(r.collector for r in cpu if r.collector != "nfcapd"))
        for label in labels:
            nf = [r.us_per_dgram for r in cpu if r.collector == label]
            line = f"`{label}`: mean {statistics.mean(nf):.2f} µs per datagram"
            if nc:
                line += (f"; nfcapd: mean {statistics.mean(nc):.2f}; ratio "
                         f"{statistics.mean(nf) / statistics.mean(nc):.2f}")
            a(line + ".")
            a("")
        if nc:
            recv = [r.us_per_dgram_of(r.main_cpu_s) for r in cpu
                    if r.collector == "nfcapd" and r.main_cpu_s is not None]
            if recv:
                a(f"nfcapd's receive thread alone: mean {statistics.mean(recv):.2f} µs per "
                  "datagram; the rest of its cost is writing the files (it varies most between "
                  "runs). Issue 12 asks for ≤ 3 µs and ≤ 0.4 × nfcapd.")
                a("")
                fb = [r.file_bytes / max(r.sent_flows, 1) for r in cpu
                      if r.collector == "nfcapd" and r.file_bytes]
                if fb:
                    a(f"nfcapd wrote {statistics.mean(fb):.1f} bytes of files per flow.")
                a("")
    a("### Scaling: shards and writers")
    a("")
    if shards:
        a("Shards (`nfpg run --sink null --shards K`, rising rates until datagrams are lost; "
          f"{cfg['cpu_duration']:.0f} s per step):")
        a("")
        a("| shards | highest lossless datagrams/s | flows/s | CPU µs per datagram there | first loss at |")
        a("|---|---|---|---|---|")
        for k, runs in shards.items():
            ok = [r for r in runs if r.lossless and not r.kernel_drops]
            bad = [r for r in runs if not (r.lossless and not r.kernel_drops)]
            top = ok[-1] if ok else None
            a(f"| {k} | {fmt(top.achieved_dps) if top else '–'} | "
              f"{fmt(top.achieved_dps * E.RECORDS) if top else '–'} | "
              f"{f'{top.us_per_dgram:.2f}' if top else '–'} | "
              f"{fmt(bad[0].rate) + ' offered' if bad else 'none up to the highest rate tried'} |")
        a("")
    if writers:
        a(f"Writers (`nfpg run --writers W` into PostgreSQL, {fmt(writers[0].rate)} datagrams/s "
          "offered: the ramp's highest step or 1.25 × the capacity rate, whichever is higher; "
          "where that is above what PostgreSQL takes, nfpg spills the excess to its spool and the drain "
          "includes its replay). Rows in order: "
          + ", ".join(f"`{w.args}`" for w in writers) + ".")
        a("")
        step_table(a, writers)
    a("**Projection (not measured):** on this 2-core machine the load source, nfpg and "
      "PostgreSQL share the cores, so neither curve can rise far here. From the figures above: "
      + projection(cap, copies) + " No larger machine was available to this run.")
    a("")
    if v9:
        a("### nfpg into PostgreSQL, NetFlow v9")
        a("")
        a("The same method with `nfpg-loadgen --version 9` (softflowd's IPv4 template, 42-byte "
          "records, the template resent every 20 datagrams per exporter).")
        a("")
        step_table(a, v9)


def first_tries(steps: list[Step]) -> str:
    """What this run's tries say about the first try at each rate against the later ones."""
    rates = sorted({s.rate for s in steps if s.attempt > 1})
    if not rates:
        return ""
    first = [s for s in steps if s.rate in rates and s.attempt == 1]
    later = [s for s in steps if s.rate in rates and s.attempt > 1]

    def share(xs: list[Step]) -> str:
        return f"{sum(1 for x in xs if x.kept_up)} of {len(xs)}"

    def pg_us(xs: list[Step]) -> str:
        v = [x.cpu_us_per_dgram(True) / E.RECORDS for x in xs if x.sent_dgrams]
        return f"{statistics.mean(v):.2f}" if v else "–"

    return (f" In this run (v5), at the rates tried more than once, first tries kept up "
            f"{share(first)} times, later tries {share(later)}; PostgreSQL spent {pg_us(first)} "
            f"µs per row on first tries, {pg_us(later)} on later ones.")


def projection(cap: Step | None, copies: list[CopyRun]) -> str:
    """16- and 64-core figures from the CPU the capacity step cost, stated as a projection."""
    if not cap or not cap.stored_flows:
        return "not enough figures for a projection in this run."
    col = cap.cpu_s / cap.stored_flows       # nfpg CPU s per flow stored, COPY sending included
    pgc = cap.pg_cpu_s / cap.stored_flows    # PostgreSQL CPU s per flow stored
    parts = [f"at its capacity step nfpg spent {col * 1e6:.2f} µs of CPU per flow (receive, "
             f"decode, COPY) and PostgreSQL {pgc * 1e6:.2f} µs per flow stored, "
             f"{(col + pgc) * 1e6:.2f} µs in all."]
    c1 = next((c for c in copies if c.streams == 1), None)
    if c1 and c1.pg_cpu:
        parts.append(f"(PostgreSQL alone, 1-stream COPY: "
                     f"{statistics.median(c1.pg_cpu) * 1e6 / max(c1.rows, 1):.2f} µs per row.)")
    for cores in (16, 64):
        parts.append(f"On {cores} cores with nothing else running, shards, writers and COPY "
                     f"streams scaled out in that proportion ({col / (col + pgc):.0%} of the cores "
                     f"for nfpg) would store about {fmt(cores / (col + pgc))} flows/s if the cost "
                     "per flow stayed the same.")
    parts.append("It will not stay the same: WAL insertion, partition locks and memory "
                 "bandwidth are shared, and this run cannot measure where they bind.")
    return " ".join(parts)
