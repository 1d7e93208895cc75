#!/usr/bin/env python3
"""End-to-end benchmark of nfpg and its peers on this machine; writes BENCHMARKS.md.

    python3 benches/e2e.py [--quick] [--out BENCHMARKS.md]

Python 3.11 standard library only. Needs the release binaries (cargo build --release
--workspace), the PostgreSQL server programs (initdb, pg_ctl, postgres) and psql; nfcapd/nfdump
(nfdump) and nfacctd (pmacct) are measured where installed. All traffic goes to 127.0.0.1.

Sections (the methodology of shared/DESIGN.md, "Peers, measured on this kind of machine"):
  1. a private PostgreSQL in a temporary directory under /tmp (unix socket only);
  2. nfpg into PostgreSQL at rising rates, a fresh database per step, checked with
     nfpg-loadgen --verify; the ramp stops at the first step with loss;
  3. PostgreSQL's own COPY ... FROM a binary file of the rows nfpg stored (the database
     path's limit) into a plain table, a BRIN table and nfpg's partitioned layout;
  4. peers on the same load: nfcapd (files) and nfacctd (pmacct) into the same PostgreSQL;
  5. the receive path without a database: nfpg --sink null with io_uring and recvmmsg, and
     nfcapd, at rising rates up to flat out.
Every child process is stopped at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import glob
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release"
NFPG = BIN / "nfpg"
LOADGEN = BIN / "nfpg-loadgen"

EXPORTERS = 4
RECORDS = 30
PG_PORT = 5432

# All columns of netflow.flows, in table order (migrations/0001_flows.sql).
FLOW_COLUMNS = (
    "flow_start, flow_end, src_addr, dst_addr, next_hop, src_port, dst_port, protocol, "
    "tcp_flags, tos, input_if, output_if, packets, bytes, src_as, dst_as, src_mask, dst_mask, "
    "exporter, engine_type, engine_id, sampling_interval, sampling_mode, netflow_version, "
    "received_at"
)

CHILDREN: list[subprocess.Popen] = []


def log(msg: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


# --------------------------------------------------------------------------- processes


def spawn(cmd: list[str], stdout=None, stderr=None, **kw) -> subprocess.Popen:
    # Own process group: a child's helpers (nfacctd's plugin processes) can be killed with it.
    p = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                         start_new_session=True, **kw)
    CHILDREN.append(p)
    return p


def stop(p: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 60.0) -> int | None:
    """Signal one child we started and wait for it (bounded), then SIGKILL."""
    if p.poll() is None:
        try:
            p.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"pid {p.pid} did not stop in {timeout:.0f}s, killing it")
            p.kill()
            p.wait(timeout=10)
    # Whatever is left in the child's own process group (helpers it forked).
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if p in CHILDREN:
        CHILDREN.remove(p)
    return p.returncode


def stop_all() -> None:
    for p in list(CHILDREN):
        try:
            stop(p, timeout=15)
        except Exception as e:  # keep stopping the others
            log(f"stopping pid {p.pid}: {e}")


def run(cmd: list[str], timeout: float, check: bool = True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, **kw)
    if check and r.returncode != 0:
        raise BenchError(f"{shlex.join(cmd)} exited {r.returncode}: {r.stderr.strip()[-2000:]}")
    return r


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def udp_bound(port: int) -> bool:
    want = f":{port:04X}"
    try:
        with open("/proc/net/udp") as f:
            next(f)
            return any(line.split()[1].endswith(want) for line in f)
    except OSError:
        return False


def wait_until(pred, timeout: float, what: str, proc: subprocess.Popen | None = None,
               step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what}: process exited with {proc.returncode}")
        time.sleep(step)
    raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")


def last_json_line(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


# --------------------------------------------------------------------------- other load


class OtherLoad:
    """Samples, once a second, how much CPU processes outside this benchmark use.

    other = all busy CPU time (/proc/stat) - the CPU time of this script's process tree and of
    the benchmark's PostgreSQL server (its postmaster's tree), in cores. On a shared machine this
    tells which steps ran while something else competed for the cores.
    """

    def __init__(self) -> None:
        self.hz = os.sysconf("SC_CLK_TCK")
        self.postmaster: int | None = None
        self.samples: list[tuple[float, float]] = []  # (monotonic time, other cores since last)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _busy() -> int:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v) - v[3] - (v[4] if len(v) > 4 else 0)  # minus idle and iowait

    def _ours(self) -> dict[int, int]:
        procs: dict[int, tuple[int, int]] = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
            except OSError:
                continue
            rest = st[st.rfind(")") + 2:].split()
            procs[int(d)] = (int(rest[1]), int(rest[11]) + int(rest[12]))
        roots = {os.getpid()} | ({self.postmaster} if self.postmaster else set())
        ours: dict[int, int] = {}
        for pid, (ppid, ticks) in procs.items():
            p, hops = pid, 0
            while p and hops < 64:
                if p in roots:
                    ours[pid] = ticks
                    break
                p, hops = procs.get(p, (0, 0))[0], hops + 1
        return ours

    def _run(self) -> None:
        prev_busy, prev_ours, prev_t = self._busy(), self._ours(), time.monotonic()
        while not self._stop.wait(1.0):
            try:
                busy, ours, t = self._busy(), self._ours(), time.monotonic()
            except OSError:
                continue
            ours_d = sum(v - prev_ours[k] for k, v in ours.items() if k in prev_ours)
            other = max(0, (busy - prev_busy) - ours_d) / self.hz / max(t - prev_t, 1e-3)
            self.samples.append((t, other))
            prev_busy, prev_ours, prev_t = busy, ours, t

    def start(self) -> None:
        self._t.start()

    def stop(self) -> None:
        self._stop.set()

    def between(self, t0: float, t1: float) -> float | None:
        xs = [o for t, o in self.samples if t0 < t <= t1 + 0.5]
        return sum(xs) / len(xs) if xs else None


OTHER = OtherLoad()


def other_str(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


# --------------------------------------------------------------------------- PostgreSQL


def pg_bindir() -> Path:
    cands = []
    if shutil.which("pg_config"):
        r = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if r.returncode == 0:
            cands.append(Path(r.stdout.strip()))

    def ver(p: str) -> tuple:
        m = re.search(r"postgresql/(\d+)", p)
        return (int(m.group(1)) if m else 0,)

    cands += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=ver, reverse=True)]
    cands += [Path(p) for p in sorted(glob.glob("/usr/pgsql-*/bin"), reverse=True)]
    for c in cands:
        if (c / "initdb").exists() and (c / "pg_ctl").exists() and (c / "postgres").exists():
            return c
    raise BenchError("no PostgreSQL server programs (initdb, pg_ctl) found; apt-get install postgresql")


class Postgres:
    """A private server for the benchmark: unix socket only, ingest settings."""

    def __init__(self, base: Path):
        self.bindir = pg_bindir()
        self.base = base
        self.data = base / "data"
        self.sock = base / "sock"
        self.files = base / "files"  # server-side COPY files (written by the server user)
        self.logfile = base / "postgres.log"
        self.as_root = os.geteuid() == 0
        self.started = False

    def _as_server_user(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] + cmd if self.as_root else cmd

    def start(self) -> None:
        for d in (self.sock, self.files):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        if self.as_root:
            shutil.chown(self.base, "postgres")
            for d in (self.sock, self.files):
                shutil.chown(d, "postgres")
        run(self._as_server_user([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "nfpg",
                                  "--auth=trust", "-E", "UTF8", "--no-sync"]), timeout=120)
        opts = (f"-c listen_addresses='' -c unix_socket_directories={self.sock} -c port={PG_PORT} "
                "-c shared_buffers=256MB -c wal_level=minimal -c max_wal_senders=0 "
                "-c synchronous_commit=off -c max_wal_size=8GB -c checkpoint_timeout=15min "
                "-c wal_buffers=64MB")
        run(self._as_server_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                                  str(self.logfile), "-w", "-t", "60", "-o", opts, "start"]),
            timeout=90)
        self.started = True
        self.version = self.query("SHOW server_version").strip()
        try:
            OTHER.postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        subprocess.run(self._as_server_user([str(self.bindir / "pg_ctl"), "-D", str(self.data),
                                             "-m", "fast", "-w", "-t", "60", "stop"]),
                       capture_output=True, timeout=90)

    def url(self, db: str) -> str:
        return f"host={self.sock} port={PG_PORT} user=nfpg dbname={db}"

    def psql_cmd(self, db: str) -> list[str]:
        return ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.sock),
                "-p", str(PG_PORT), "-U", "nfpg", "-d", db]

    def query(self, sql: str, db: str = "postgres", timeout: float = 600) -> str:
        return run(self.psql_cmd(db) + ["-c", sql], timeout=timeout).stdout

    def script(self, sql: str, db: str = "postgres", timeout: float = 600) -> str:
        return subprocess_input(self.psql_cmd(db), sql, timeout)

    def timed(self, sql: str, db: str, timeout: float = 900) -> float:
        """Runs one statement with \\timing on; returns the server round trip in seconds."""
        out = subprocess_input(self.psql_cmd(db), "\\timing on\n" + sql + "\n", timeout)
        times = re.findall(r"Time: ([0-9.]+) ms", out)
        if not times:
            raise BenchError(f"no timing in psql output: {out[-500:]}")
        return float(times[-1]) / 1000.0


def subprocess_input(cmd: list[str], text: str, timeout: float) -> str:
    r = subprocess.run(cmd, input=text, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise BenchError(f"{shlex.join(cmd)} exited {r.returncode}: {r.stderr.strip()[-2000:]}")
    return r.stdout


# --------------------------------------------------------------------------- load source


def loadgen(port: int, rate: int, duration: float, seed: int, verify_url: str | None = None,
            extra_timeout: float = 0) -> dict:
    cmd = [str(LOADGEN), "--target", f"127.0.0.1:{port}", "--exporters", str(EXPORTERS),
           "--records", str(RECORDS), "--rate", str(rate), "--duration", str(duration),
           "--seed", str(seed)]
    if verify_url:
        cmd += ["--verify", "--database-url", verify_url, "--verify-timeout", "120",
                "--verify-settle", "5"]
    r = run(cmd, timeout=duration + 200 + extra_timeout, check=False)
    out = last_json_line(r.stdout)
    if out is None:
        raise BenchError(f"nfpg-loadgen exited {r.returncode} without a summary: {r.stderr[-2000:]}")
    out["_rc"] = r.returncode
    return out


def sent_rate(lg: dict) -> float:
    return float(lg.get("sent_rate_dps") or lg["sent"]["datagrams"] / max(lg["elapsed_s"], 1e-9))


def source_limited(lg: dict, offered: int) -> bool:
    return offered == 0 or sent_rate(lg) < 0.97 * offered


# --------------------------------------------------------------------------- nfpg


class Nfpg:
    def __init__(self, workdir: Path, name: str, args: list[str]):
        self.port = free_udp_port()
        self.out = workdir / f"{name}.stdout"
        self.err = workdir / f"{name}.stderr"
        self.cmd = [str(NFPG), "run", "--listen", "127.0.0.1", "--port", str(self.port),
                    "--stats-interval", "5"] + args
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self._fo = open(self.out, "w")
        self._fe = open(self.err, "w")
        self.proc = spawn(self.cmd, stdout=self._fo, stderr=self._fe)
        wait_until(lambda: "listening on udp" in self.err.read_text(errors="replace"), 60,
                   "nfpg to listen", self.proc)

    def finish(self) -> dict:
        assert self.proc is not None
        rc = stop(self.proc, timeout=180)
        self._fo.close()
        self._fe.close()
        summary = last_json_line(self.out.read_text(errors="replace"))
        if summary is None:
            tail = self.err.read_text(errors="replace")[-2000:]
            raise BenchError(f"nfpg exited {rc} without a JSON summary; stderr tail: {tail}")
        summary["_rc"] = rc
        return summary


def shard_split(summary: dict) -> str:
    return " / ".join(fmt(int(sh.get("datagrams", 0))) for sh in summary.get("shards") or [])


def latency(summary: dict, key: str = "end_to_end_us") -> dict | None:
    lat = summary.get("latency")
    if isinstance(lat, dict) and isinstance(lat.get(key), dict) and lat[key].get("count"):
        return lat[key]
    return None


@dataclass
class PgStep:
    rate: int
    duration: float
    sent_dgrams: int = 0
    sent_flows: int = 0
    achieved_dps: float = 0
    elapsed: float = 0
    waited: float = 0
    lost_flows: int = 0
    stored_flows: int = 0
    verify_ok: bool = False
    kernel_drops: int = 0
    rows_dropped: int = 0
    queue_full: int = 0
    malformed: int = 0
    sustained: float = 0
    sustained_lat: float | None = None  # flows / (send time + nfpg's max end-to-end latency)
    lat: dict | None = None
    stages: dict | None = None  # nfpg's summary "latency" object, when present
    shards: str = ""  # datagrams per shard
    other: float | None = None  # cores used by other processes during the step
    db: str = ""
    note: str = ""

    @property
    def best_sustained(self) -> float:
        """The tighter of the two lower bounds."""
        return max(self.sustained, self.sustained_lat or 0.0)


def bench_nfpg_pg(pg: Postgres, work: Path, rates: list[int], duration: float) -> list[PgStep]:
    steps: list[PgStep] = []
    for i, rate in enumerate(rates, 1):
        db = f"step{i}"
        pg.query(f"CREATE DATABASE {db}")
        st = PgStep(rate=rate, duration=duration, db=db)
        log(f"nfpg -> PostgreSQL: {rate} datagrams/s ({rate * RECORDS} flows/s) for {duration:.0f}s")
        n = Nfpg(work, f"nfpg-pg-{i}", ["--database-url", pg.url(db)])
        n.start()
        t0 = time.monotonic()
        try:
            lg = loadgen(n.port, rate, duration, seed=i, verify_url=pg.url(db))
        finally:
            summary = n.finish()
        st.other = OTHER.between(t0, time.monotonic())
        v = lg.get("verify") or {}
        st.sent_dgrams = lg["sent"]["datagrams"]
        st.sent_flows = lg["sent"]["flows"]
        st.achieved_dps = sent_rate(lg)
        st.elapsed = float(lg["elapsed_s"])
        st.waited = float(v.get("waited_s", 0))
        st.lost_flows = int((v.get("lost") or {}).get("flows", st.sent_flows))
        st.stored_flows = int((v.get("stored") or {}).get("flows", 0))
        st.verify_ok = bool(v.get("ok")) and st.lost_flows == 0 and \
            v.get("stored") == v.get("sent")
        st.kernel_drops = int(summary.get("kernel_drops", 0))
        st.rows_dropped = int(summary.get("rows_dropped", 0))
        st.queue_full = int(summary.get("queue_full", 0))
        st.malformed = int((summary.get("malformed") or {}).get("total", 0))
        st.lat = latency(summary)
        st.stages = summary.get("latency") if isinstance(summary.get("latency"), dict) else None
        st.shards = shard_split(summary)
        st.sustained = st.stored_flows / max(st.elapsed + st.waited, 1e-9)
        if st.lat and st.lat.get("max") is not None:
            # The last datagram arrived by the end of sending and every flow was committed at
            # most the max end-to-end latency after its datagram arrived.
            st.sustained_lat = st.stored_flows / (st.elapsed + float(st.lat["max"]) / 1e6)
        if not st.verify_ok and st.lost_flows == 0:
            st.note = f"stored != sent ({v.get('mismatches')})"
        if source_limited(lg, rate):
            st.note = (st.note + "; " if st.note else "") + "load source below offered rate"
        steps.append(st)
        # Keep only the database of the latest lossless step (for the COPY limit): disk.
        for old in steps[:-1]:
            if old.db and (st.verify_ok or not old.verify_ok):
                pg.query(f"DROP DATABASE IF EXISTS {old.db}")
        if not st.verify_ok:
            pg.query(f"DROP DATABASE IF EXISTS {db}")
        log(f"  sent {st.sent_flows} flows at {st.achieved_dps:.0f} dps, lost {st.lost_flows}, "
            f"kernel drops {st.kernel_drops}, sustained {st.sustained:,.0f} flows/s, "
            f"verify waited {st.waited:.1f}s")
        if not st.verify_ok:
            break
    return steps


# --------------------------------------------------------------------------- COPY limit


@dataclass
class CopyResult:
    name: str
    layout: str
    rows: int
    secs: list[float]

    @property
    def best(self) -> float:
        return self.rows / min(self.secs)

    @property
    def all_rates(self) -> list[float]:
        return [self.rows / s for s in self.secs]


def bench_copy_limit(pg: Postgres, db: str, min_rows: int, repeats: int) -> list[CopyResult]:
    n = int(pg.query("SELECT count(*) FROM netflow.flows", db=db))
    if n == 0:
        raise BenchError(f"{db} has no rows to copy")
    # Exactly min_rows rows: the first min_rows stored, or all of them repeated k times.
    k = max(1, -(-min_rows // n))
    rows = min_rows
    path = pg.files / f"rows-{db}.bin"
    log(f"COPY limit: exporting {rows} rows ({n} stored, x{k}) from {db} to {path}")
    src = "netflow.flows" if k == 1 else f"netflow.flows, generate_series(1, {k}) AS rep(i)"
    pg.query(f"COPY (SELECT {FLOW_COLUMNS} FROM {src} LIMIT {rows}) TO '{path}' (FORMAT binary)",
             db=db)
    days = pg.query("SELECT d::date FROM generate_series("
                    "(SELECT date_trunc('day', min(received_at) AT TIME ZONE 'UTC') FROM netflow.flows),"
                    "(SELECT date_trunc('day', max(received_at) AT TIME ZONE 'UTC') FROM netflow.flows),"
                    " interval '1 day') d", db=db).split()
    parts = "\n".join(
        f"CREATE TABLE limit_part_{d.replace('-', '')} PARTITION OF limit_part FOR VALUES FROM "
        f"('{d} 00:00:00+00') TO (('{d}'::date + 1)::timestamp AT TIME ZONE 'UTC');" for d in days)
    layouts = [
        ("limit_plain", "plain table, no index",
         "CREATE TABLE limit_plain (LIKE netflow.flows INCLUDING DEFAULTS);"),
        ("limit_brin", "plain table + BRIN(flow_start), BRIN(received_at)",
         "CREATE TABLE limit_brin (LIKE netflow.flows INCLUDING DEFAULTS);"
         "CREATE INDEX ON limit_brin USING brin (flow_start);"
         "CREATE INDEX ON limit_brin USING brin (received_at);"),
        ("limit_part", "nfpg's layout: partitioned by day of received_at, day partition + default, BRIN",
         "CREATE TABLE limit_part (LIKE netflow.flows INCLUDING DEFAULTS) PARTITION BY RANGE (received_at);"
         + parts +
         "CREATE TABLE limit_part_default PARTITION OF limit_part DEFAULT;"
         "CREATE INDEX ON limit_part USING brin (flow_start);"
         "CREATE INDEX ON limit_part USING brin (received_at);"),
        ("limit_btree", "nfpg's layout + B-tree(src_addr), B-tree(dst_addr), B-tree(exporter) "
         "(the original collector's lookups, on the partition being written)",
         "CREATE TABLE limit_btree (LIKE netflow.flows INCLUDING DEFAULTS) PARTITION BY RANGE (received_at);"
         + parts.replace("limit_part", "limit_btree") +
         "CREATE TABLE limit_btree_default PARTITION OF limit_btree DEFAULT;"
         "CREATE INDEX ON limit_btree USING brin (flow_start);"
         "CREATE INDEX ON limit_btree USING brin (received_at);"
         "CREATE INDEX ON limit_btree (src_addr);"
         "CREATE INDEX ON limit_btree (dst_addr);"
         "CREATE INDEX ON limit_btree (exporter);"),
    ]
    results = []
    for name, desc, ddl in layouts:
        pg.script(ddl, db=db)
        secs = []
        for r in range(repeats):
            pg.query(f"TRUNCATE {name}", db=db)
            pg.query("CHECKPOINT", db=db)
            s = pg.timed(f"COPY {name} FROM '{path}' (FORMAT binary);", db=db)
            secs.append(s)
            log(f"  COPY into {name}: {rows} rows in {s:.2f}s = {rows / s:,.0f} rows/s")
        got = int(pg.query(f"SELECT count(*) FROM {name}", db=db))
        if got != rows:
            raise BenchError(f"{name}: {got} rows after COPY, expected {rows}")
        pg.query(f"DROP TABLE {name}", db=db)
        results.append(CopyResult(name, desc, rows, secs))
    try:
        path.unlink()
    except OSError:
        pass
    return results


# --------------------------------------------------------------------------- nfcapd


@dataclass
class RecvStep:
    collector: str
    rate: int
    duration: float
    sent_dgrams: int = 0
    sent_flows: int = 0
    achieved_dps: float = 0
    got_dgrams: int = 0
    got_flows: int = 0
    kernel_drops: int | None = None
    shards: str = "–"
    other: float | None = None
    lossless: bool = False
    source_limited: bool = False
    note: str = ""


def nfdump_flows(flowdir: Path) -> int:
    r = run(["nfdump", "-R", str(flowdir), "-I"], timeout=300, check=False)
    m = re.search(r"^Flows:\s*(\d+)", r.stdout, re.M)
    if not m:
        if r.returncode != 0 and "No" in r.stderr + r.stdout:
            return 0
        raise BenchError(f"nfdump -I gave no Flows line: {r.stdout[-500:]} {r.stderr[-500:]}")
    return int(m.group(1))


def run_nfcapd_step(work: Path, rate: int, duration: float, seed: int, tag: str) -> RecvStep:
    st = RecvStep("nfcapd", rate, duration)
    flowdir = work / f"nfcapd-{tag}"
    flowdir.mkdir(parents=True, exist_ok=True)
    port = free_udp_port()
    with open(work / f"nfcapd-{tag}.log", "w") as lf:
        p = spawn(["nfcapd", "-w", str(flowdir), "-p", str(port), "-b", "127.0.0.1",
                   "-B", str(32 * 1024 * 1024), "-t", "3600"], stdout=lf, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: udp_bound(port), 30, "nfcapd to bind", p)
            time.sleep(0.3)
            t0 = time.monotonic()
            lg = loadgen(port, rate, duration, seed)
            st.other = OTHER.between(t0, time.monotonic())
            time.sleep(0.5)
        finally:
            stop(p, timeout=60)
    st.sent_dgrams = lg["sent"]["datagrams"]
    st.sent_flows = lg["sent"]["flows"]
    st.achieved_dps = sent_rate(lg)
    st.source_limited = source_limited(lg, rate)
    st.got_flows = nfdump_flows(flowdir)
    st.lossless = st.got_flows == st.sent_flows
    shutil.rmtree(flowdir, ignore_errors=True)
    log(f"  nfcapd @ {rate or 'max'} dps: sent {st.sent_flows} flows at {st.achieved_dps:,.0f} dps, "
        f"stored {st.got_flows}")
    return st


def run_nfpg_null_step(work: Path, backend: str, rate: int, duration: float, seed: int,
                       tag: str) -> RecvStep:
    st = RecvStep(f"nfpg --sink null --recv {backend}", rate, duration)
    n = Nfpg(work, f"nfpg-null-{tag}", ["--sink", "null", "--recv", backend])
    n.start()
    try:
        t0 = time.monotonic()
        lg = loadgen(n.port, rate, duration, seed)
        st.other = OTHER.between(t0, time.monotonic())
        time.sleep(0.5)
    finally:
        summary = n.finish()
    st.sent_dgrams = lg["sent"]["datagrams"]
    st.sent_flows = lg["sent"]["flows"]
    st.achieved_dps = sent_rate(lg)
    st.source_limited = source_limited(lg, rate)
    st.got_dgrams = int(summary.get("datagrams", 0))
    st.got_flows = int(summary.get("flows", 0))
    st.kernel_drops = int(summary.get("kernel_drops", 0))
    st.shards = shard_split(summary)
    st.lossless = st.got_dgrams == st.sent_dgrams and st.kernel_drops == 0
    log(f"  {st.collector} @ {rate or 'max'} dps: sent {st.sent_dgrams} datagrams at "
        f"{st.achieved_dps:,.0f} dps, received {st.got_dgrams}, kernel drops {st.kernel_drops}")
    return st


def ramp(fn, rates: list[int], **kw) -> list[RecvStep]:
    steps = []
    for i, rate in enumerate(rates, 1):
        st = fn(rate=rate, seed=100 + i, tag=f"{i}-{rate}", **kw)
        steps.append(st)
        if not st.lossless:
            break
    return steps


# --------------------------------------------------------------------------- nfacctd


@dataclass
class AcctStep:
    rate: int
    duration: float
    sent_flows: int = 0
    sent_packets: int = 0
    sent_bytes: int = 0
    achieved_dps: float = 0
    stored_rows: int = 0
    stored_packets: int = 0
    stored_bytes: int = 0
    to_store: float = 0  # seconds from the start of sending until everything was stored
    complete: bool = False
    excess: bool = False
    sustained: float = 0
    other: float | None = None
    note: str = ""


NFACCTD_REFRESH = 5
# Cache buckets; the default (32771) fills within a refresh period at these rates and forces
# extra purges. A prime number, as pmacct's documentation advises.
NFACCTD_CACHE = 1000003


def bench_nfacctd(pg: Postgres, work: Path, rates: list[int], duration: float) -> list[AcctStep]:
    schema = Path("/usr/share/doc/pmacct/sql/pmacct-create-table_v9.pgsql")
    steps = []
    for i, rate in enumerate(rates, 1):
        db = f"pmacct{i}"
        pg.query(f"CREATE DATABASE {db}")
        sql = schema.read_text() if schema.exists() else ""
        # The script's GRANTs name a role 'pmacct' that this server does not have.
        sql = "\n".join(l for l in sql.splitlines() if not l.startswith("GRANT"))
        if not sql:
            raise BenchError(f"{schema} not found (apt-get install pmacct)")
        pg.script(sql, db=db)
        # The v9 primary key includes stamp_inserted, which stays at its default without
        # sql_history: a key seen in two cache purges would fail the whole COPY. nfpg's
        # table has no B-tree either.
        pg.query("ALTER TABLE acct_v9 DROP CONSTRAINT acct_v9_pk", db=db)
        port = free_udp_port()
        conf = work / f"nfacctd-{i}.conf"
        conf.write_text(f"""daemonize: false
nfacctd_ip: 127.0.0.1
nfacctd_port: {port}
nfacctd_pipe_size: {32 * 1024 * 1024}
plugins: pgsql
plugin_pipe_size: {256 * 1024 * 1024}
plugin_buffer_size: {64 * 1024}
sql_host: {pg.sock}
sql_port: {PG_PORT}
sql_user: nfpg
sql_passwd: unused
sql_db: {db}
sql_table: acct_v9
sql_table_version: 9
aggregate: src_host,dst_host,src_port,dst_port,proto,tos
sql_refresh_time: {NFACCTD_REFRESH}
sql_cache_entries: {NFACCTD_CACHE}
sql_dont_try_update: true
sql_use_copy: true
""")
        st = AcctStep(rate, duration)
        log(f"nfacctd -> PostgreSQL: {rate} datagrams/s for {duration:.0f}s")
        with open(work / f"nfacctd-{i}.log", "w") as lf:
            p = spawn(["nfacctd", "-f", str(conf)], stdout=lf, stderr=subprocess.STDOUT)
            try:
                wait_until(lambda: udp_bound(port), 30, "nfacctd to bind", p)
                time.sleep(1.0)
                t0 = time.monotonic()
                lg = loadgen(port, rate, duration, seed=200 + i)
                st.sent_flows = lg["sent"]["flows"]
                st.sent_packets = lg["sent"]["packets"]
                st.sent_bytes = lg["sent"]["bytes"]
                st.achieved_dps = sent_rate(lg)
                # Poll until the stored totals reach the sent ones, or stop changing for
                # three refresh periods + 5 s (bounded by 150 s). nfacctd's core hands records
                # to the plugin in buffers of plugin_buffer_size: the last, partly filled one
                # stays in the core until more traffic comes or nfacctd stops. So if the totals
                # stall short of the sent ones, SIGINT it (it purges on the way out) and poll on.
                last, last_change = None, time.monotonic()
                deadline = time.monotonic() + 150
                interrupted = False
                idle = 0.0  # the stall wait before the SIGINT, not counted as storing time
                while time.monotonic() < deadline:
                    row = pg.query("SELECT count(*), coalesce(sum(packets),0), coalesce(sum(bytes),0) "
                                   "FROM acct_v9", db=db).strip().split("|")
                    now = time.monotonic()
                    cur = tuple(int(x) for x in row)
                    if cur != last:
                        last, last_change = cur, now
                        st.stored_rows, st.stored_packets, st.stored_bytes = cur
                        st.to_store = now - t0 - idle
                    if st.stored_packets >= st.sent_packets and st.stored_bytes >= st.sent_bytes:
                        break  # all there (more than sent would be duplicates: reported)
                    exited = p.poll() is not None
                    if now - last_change > 3 * NFACCTD_REFRESH + 5 or (exited and now - last_change > 3):
                        if interrupted or exited:
                            break
                        log(f"  stored totals stalled at {cur[1]}/{st.sent_packets} packets: SIGINT")
                        p.send_signal(signal.SIGINT)
                        idle = now - last_change
                        interrupted, last_change = True, now
                    time.sleep(0.5)
                st.other = OTHER.between(t0, time.monotonic())
                if interrupted:
                    st.note = "last part stored only when nfacctd was stopped (SIGINT)"
            finally:
                stop(p, sig=signal.SIGINT, timeout=30)  # nfacctd ignores SIGTERM
        st.complete = st.stored_packets == st.sent_packets and st.stored_bytes == st.sent_bytes
        st.excess = st.stored_packets > st.sent_packets or st.stored_bytes > st.sent_bytes
        if st.excess:
            st.note = (st.note + "; " if st.note else "") + \
                f"stored MORE than sent: +{st.stored_packets - st.sent_packets:,} packets, " \
                f"+{st.stored_bytes - st.sent_bytes:,} bytes: duplicates"
        frac = min(1.0, st.stored_packets / max(st.sent_packets, 1))
        # flows stored: the fraction of sent packets stored, in flows (rows are aggregates)
        st.sustained = st.sent_flows * frac / max(st.to_store, 1e-9)
        if source_limited(lg, rate):
            st.note = (st.note + "; " if st.note else "") + "load source below offered rate"
        steps.append(st)
        log(f"  sent {st.sent_flows} flows, stored {st.stored_rows} rows, packets "
            f"{st.stored_packets}/{st.sent_packets}, all stored after {st.to_store:.1f}s, "
            f"sustained {st.sustained:,.0f} flows/s")
        pg.query(f"DROP DATABASE {db}")
        if not st.complete and not st.excess:
            break  # loss: the ramp ends (an excess is reported, the ramp goes on)
    return steps


# --------------------------------------------------------------------------- report


def machine_info(pg_version: str) -> list[tuple[str, str]]:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    rmem = Path("/proc/sys/net/core/rmem_max").read_text().strip() \
        if Path("/proc/sys/net/core/rmem_max").exists() else "?"

    def ver(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except Exception:
            return "not installed"

    return [
        ("date", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("cores (nproc)", str(os.cpu_count())),
        ("CPU", cpu),
        ("RAM", mem),
        ("kernel", platform.release()),
        ("net.core.rmem_max", rmem),
        ("PostgreSQL", pg_version),
        ("nfpg commit", ver(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"])),
        ("nfcapd", ver(["nfcapd", "-V"])),
        ("nfacctd", ver(["nfacctd", "-V"])),
    ]


def fmt(n: float) -> str:
    return f"{n:,.0f}"


def us(v) -> str:
    if v is None:
        return "–"
    v = float(v)
    return f"{v / 1000:.1f} ms" if v >= 1000 else f"{v:.0f} µs"


def highest(steps, ok) -> object | None:
    good = [s for s in steps if ok(s)]
    return good[-1] if good else None


def write_report(out: Path, cmdline: str, info, cfg, pg_steps, copy_res, acct, acct_err,
                 recv, recv_err, elapsed_total: float) -> None:
    L: list[str] = []
    a = L.append
    a("# Benchmarks")
    a("")
    a("End-to-end measurements of nfpg and its peers on one machine, produced by")
    a("`benches/e2e.py` (see `benches/README.md`). Same load source for everything:")
    a(f"`nfpg-loadgen`, {EXPORTERS} loopback exporters, {RECORDS} records per datagram, paced.")
    a("\"Lossless\" means the stored totals equal the sent totals exactly.")
    a("")
    a("Produced by:")
    a("")
    a("```sh")
    a(cmdline)
    a("```")
    a("")
    a(f"Run time {elapsed_total / 60:.1f} min; steps of {cfg['pg_duration']:.0f} s into databases, "
      f"{cfg['recv_duration']:.0f} s for the receive path." + (" **Quick run** (short steps; "
      "buffers can hide a slow database): not the reference figures." if cfg["quick"] else ""))
    a("")
    a("## Machine")
    a("")
    a("| | |")
    a("|---|---|")
    for k, v in info:
        a(f"| {k} | {v} |")
    a("")
    a("The load source, the collector and PostgreSQL share these cores, and the machine may be")
    a("shared with other work: every figure below is for this set-up, not a collector on its own.")
    a("\"Other load (cores)\" in the tables = CPU used during the step by processes outside the")
    a("benchmark (all busy CPU time minus the harness's process tree and its PostgreSQL server), in")
    a("cores out of " + str(os.cpu_count()) + ": anything well above 0 means the step competed with other work.")
    if OTHER.samples:
        xs = [o for _, o in OTHER.samples]
        a(f"Over the whole run: mean {sum(xs) / len(xs):.2f}, max {max(xs):.2f} cores of other load.")
    a("PostgreSQL: private server, unix socket, `shared_buffers=256MB wal_level=minimal")
    a("synchronous_commit=off max_wal_size=8GB checkpoint_timeout=15min wal_buffers=64MB`.")
    a("")

    # ---- section 2
    a("## nfpg into PostgreSQL, rising rates")
    a("")
    a("`nfpg run --listen 127.0.0.1 --database-url … --stats-interval 5` (defaults otherwise),")
    a(f"fresh database per step; `nfpg-loadgen --exporters {EXPORTERS} --records {RECORDS} --rate R "
      f"--duration {cfg['pg_duration']:.0f} --verify --verify-timeout 120 --verify-settle 5`.")
    a("Sustained (verify) = flows stored / (send time + time until `--verify` saw every flow); "
      "verify polls with a full-table `sum()` over the step's flows, so at 10 M+ rows one poll takes "
      "seconds and competes with nfpg's writers for the cores: this figure is a lower bound. "
      "Sustained (latency) = flows stored / (send time + the largest receive → commit latency nfpg "
      "measured): every flow was committed within that time, so it is a tighter lower bound.")
    a("The ramp stops at the first step with loss.")
    a("")
    a("| offered datagrams/s | offered flows/s | achieved datagrams/s | flows sent | lost flows | kernel drops | datagrams per shard | sustained flows/s (verify) | sustained flows/s (latency) | e2e latency p50 / p99 / max | other load (cores) | note |")
    a("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in pg_steps:
        lat = f"{us(s.lat.get('p50'))} / {us(s.lat.get('p99'))} / {us(s.lat.get('max'))}" \
            if s.lat else "not reported"
        a(f"| {fmt(s.rate)} | {fmt(s.rate * RECORDS)} | {fmt(s.achieved_dps)} | {fmt(s.sent_flows)} | "
          f"{fmt(s.lost_flows)}{'' if s.verify_ok else ' **loss**'} | {fmt(s.kernel_drops)} | "
          f"{s.shards} | {fmt(s.sustained)} | {fmt(s.sustained_lat) if s.sustained_lat else '–'} | "
          f"{lat} | {other_str(s.other)} | {s.note} |")
    a("")
    best = highest(pg_steps, lambda s: s.verify_ok)
    if best:
        top = " (the highest step tried: the limit is above it)" if best is pg_steps[-1] else ""
        a(f"**nfpg's sustained lossless rate into PostgreSQL: {fmt(best.rate)} datagrams/s offered "
          f"= {fmt(best.rate * RECORDS)} flows/s{top}; {fmt(best.best_sustained)} flows/s stored "
          f"sustained at that step.**")
    else:
        a("**nfpg lost flows at every step tried.**")
    if pg_steps and not pg_steps[-1].verify_ok:
        s = pg_steps[-1]
        a(f"First step with loss: {fmt(s.rate)} datagrams/s ({fmt(s.rate * RECORDS)} flows/s): "
          f"{fmt(s.lost_flows)} of {fmt(s.sent_flows)} flows lost, {fmt(s.kernel_drops)} kernel "
          f"drops, queue_full={fmt(s.queue_full)}, rows_dropped={fmt(s.rows_dropped)}.")
    if pg_steps and pg_steps[0].lat is None:
        a("")
        a("nfpg's summary had no `latency` object in this build, so no latency columns.")
    stage_keys = ["end_to_end_us", "receive_to_seal_us", "queue_wait_us", "copy_us"]
    if any(s.stages for s in pg_steps):
        a("")
        a("nfpg's own latency histograms per stage (from its final summary; p50 / p99 / max). "
          "End to end = first datagram of a batch received → its COPY committed; a batch is sealed "
          "when full (8192 flows) or 1 s old, so at low rates the flush interval dominates.")
        a("")
        a("| offered datagrams/s | " + " | ".join(k.removesuffix("_us").replace("_", " ") for k in stage_keys) + " |")
        a("|---|" + "---|" * len(stage_keys))
        for s in pg_steps:
            cells = []
            for k in stage_keys:
                h = (s.stages or {}).get(k)
                cells.append(f"{us(h.get('p50'))} / {us(h.get('p99'))} / {us(h.get('max'))}"
                             if isinstance(h, dict) and h.get("count") else "–")
            a(f"| {fmt(s.rate)} | " + " | ".join(cells) + " |")
    a("")

    # ---- section 3
    a("## The database path's own limit")
    a("")
    if copy_res:
        a(f"PostgreSQL's own `COPY … FROM` a binary file (server side, one stream) of the rows nfpg "
          f"stored at its highest lossless step ({fmt(copy_res[0].rows)} rows: the first ones stored, "
          f"or the step's rows repeated when it stored fewer), exported with "
          f"`COPY (SELECT …) TO file (FORMAT binary)`; {len(copy_res[0].secs)} runs per table, "
          f"TRUNCATE and CHECKPOINT before each, time of the COPY statement from psql's `\\timing`.")
        a("")
        a("| table | rows | best rows/s | all runs rows/s |")
        a("|---|---|---|---|")
        for c in copy_res:
            a(f"| {c.layout} | {fmt(c.rows)} | {fmt(c.best)} | {', '.join(fmt(x) for x in c.all_rates)} |")
        a("")
        part = next(c for c in copy_res if c.name == "limit_part")
        if best:
            frac = best.best_sustained / part.best
            frac_off = best.rate * RECORDS / part.best
            a(f"nfpg's sustained stored rate at its highest lossless step, {fmt(best.best_sustained)} flows/s, "
              f"is **{frac:.0%}** of PostgreSQL's COPY rate into the same layout ({fmt(part.best)} rows/s); "
              f"the offered rate of that step is {frac_off:.0%}. Target: ≥ 80 % — "
              + ("met." if frac >= 0.8 else "**not met**.")
              + (" nfpg was lossless at every step tried, so its own limit was not reached: this ratio "
                 "is a lower bound." if best is pg_steps[-1] else ""))
            a("")
            a("nfpg writes with 2 writers by default, i.e. two COPY streams in parallel, while the "
              "figures above are one stream: nfpg can exceed 100 % of them where the cores allow. The ramp's "
              "steps are coarse: nfpg's own limit lies between its highest lossless step and the first "
              "step with loss.")
    else:
        a(f"Not measured: {cfg.get('copy_err') or 'no lossless step'}.")
    a("")

    # ---- section 4
    a("## Peers on the same load")
    a("")
    a("### nfacctd (pmacct) → the same PostgreSQL")
    a("")
    if acct:
        a("Config: `plugins: pgsql`, unix socket, `sql_table_version: 9` (the table from "
          "`/usr/share/doc/pmacct/sql/pmacct-create-table_v9.pgsql`, primary key dropped — with "
          "`sql_dont_try_update` and no `sql_history` a key seen in two purges would fail a whole COPY; "
          "nfpg's table has no B-tree either), `aggregate: src_host,dst_host,src_port,dst_port,proto,tos`, "
          f"`sql_refresh_time: {NFACCTD_REFRESH}`, `sql_dont_try_update: true`, `sql_use_copy: true` (text COPY), "
          "`nfacctd_pipe_size: 32 MiB` (capped at rmem_max), `plugin_pipe_size: 256 MiB`, "
          f"`plugin_buffer_size: 64 KiB`, `sql_cache_entries: {NFACCTD_CACHE}` (the default 32771 fills "
          "within a refresh period at these rates and forces extra purges).")
        a("nfacctd aggregates records with equal keys and its `flows` column stays 0 for NetFlow v5, so "
          "completeness is checked with the sums of packets and bytes. Sustained = flows sent "
          "(scaled by the fraction of packets stored when incomplete) / time from the start of sending "
          "until the stored sums reached the sent ones, over steps with nothing missing. nfacctd's core passes records to its plugin in "
          "buffers of `plugin_buffer_size`; the last, partly filled buffer of a finite test stays in the core "
          "until nfacctd stops, so when the sums stall for 20 s short of the sent ones the harness sends "
          "SIGINT (nfacctd purges on the way out) and does not count the 20 s of waiting.")
        a("")
        a("| offered datagrams/s | offered flows/s | achieved datagrams/s | flows sent | rows stored | packets stored / sent | all stored after | sustained flows/s | other load (cores) | note |")
        a("|---|---|---|---|---|---|---|---|---|---|")
        for s in acct:
            mark = "" if s.complete else (" **excess**" if s.excess else " **loss**")
            a(f"| {fmt(s.rate)} | {fmt(s.rate * RECORDS)} | {fmt(s.achieved_dps)} | {fmt(s.sent_flows)} | "
              f"{fmt(s.stored_rows)} | {s.stored_packets / max(s.sent_packets, 1):.4%}{mark} | "
              f"{s.to_store:.1f} s | {fmt(s.sustained)} | {other_str(s.other)} | {s.note} |")
        a("")
        exact = [s for s in acct if s.complete]
        nolos = [s for s in acct if s.complete or s.excess]
        if exact:
            a(f"nfacctd's highest step with stored totals exactly equal to the sent ones: "
              f"{fmt(exact[-1].rate)} datagrams/s.")
        else:
            a("nfacctd's stored totals equalled the sent ones at no step.")
        if nolos and nolos != exact:
            a(f"Highest step with nothing missing (possibly with duplicates): {fmt(nolos[-1].rate)} datagrams/s.")
        if acct[-1] not in nolos:
            s = acct[-1]
            a(f"First step with loss: {fmt(s.rate)} datagrams/s, "
              f"{1 - s.stored_packets / max(s.sent_packets, 1):.2%} of the packets missing.")
        arate = max((s.sustained for s in nolos), default=0)
        ref = arate or max((s.sustained for s in acct), default=0)
        a(f"nfacctd's best sustained rate into PostgreSQL: **{fmt(ref)} flows/s**"
          + ("" if arate else " (at a step with loss)") + ".")
        if best and ref:
            ratio = best.best_sustained / ref
            a(f"nfpg / nfacctd sustained rate: **{ratio:.1f}×** (target ≥ 5× — "
              + ("met" if ratio >= 5 else "**not met**") + ").")
        part = next((c for c in copy_res if c.name == "limit_part"), None)
        if part and ref and 5 * ref > part.best:
            a(f"5 × nfacctd's rate ({fmt(5 * ref)} flows/s) is above PostgreSQL's own COPY rate into "
              f"nfpg's layout on this machine ({fmt(part.best)} rows/s): no collector that stores every "
              "flow through PostgreSQL can meet the 5× target here; nfpg's ratio is bounded by "
              "PostgreSQL, not by its own code. nfacctd's rate also profits from aggregation "
              f"({fmt(acct[0].stored_rows)} rows for {fmt(acct[0].sent_flows)} flows at the first step) "
              f"and from its {NFACCTD_CACHE:,}-entry cache, which absorbs a 30 s burst.")
    else:
        a(f"Not measured: {acct_err}")
    a("")

    # ---- section 5 (+ nfcapd)
    a("### Receive path without a database (and nfcapd to files)")
    a("")
    if recv:
        a("`nfpg run --sink null --recv uring|mmsg` (decode + encode, then discard) and "
          "`nfcapd -w DIR -p P -b 127.0.0.1 -B 32MiB -t 3600` (nfdump 1.7.1, binary files), same load "
          f"(no `--verify`), {cfg['recv_duration']:.0f} s per step, rate 0 = flat out. Lossless: nfpg's "
          "summary `datagrams` = datagrams sent and `kernel_drops` = 0; nfcapd: `nfdump -R DIR -I` "
          "Flows = flows sent, after SIGTERM. A ramp stops at its first step with loss.")
        a("")
        a("| collector | offered datagrams/s | achieved datagrams/s | sent datagrams | received datagrams (flows for nfcapd) | kernel drops | datagrams per shard | lossless | load source limited | other load (cores) |")
        a("|---|---|---|---|---|---|---|---|---|---|")
        for name, steps in recv.items():
            for s in steps:
                got = fmt(s.got_dgrams) if s.collector != "nfcapd" else f"{fmt(s.got_flows)} flows of {fmt(s.sent_flows)}"
                a(f"| {s.collector} | {fmt(s.rate) if s.rate else 'flat out'} | {fmt(s.achieved_dps)} | "
                  f"{fmt(s.sent_dgrams)} | {got} | {'–' if s.kernel_drops is None else fmt(s.kernel_drops)} | {s.shards} | "
                  f"{'yes' if s.lossless else '**no**'} | {'yes' if s.source_limited else 'no'} | "
                  f"{other_str(s.other)} |")
        a("")
        a("| collector | highest lossless achieved datagrams/s | flows/s |")
        a("|---|---|---|")
        best_recv = {}
        for name, steps in recv.items():
            b = highest(steps, lambda s: s.lossless)
            r = b.achieved_dps if b else 0
            best_recv[name] = r
            a(f"| {name} | {fmt(r)}{' (flat out: the load source was the limit)' if b and b.rate == 0 else ''} | {fmt(r * RECORDS)} |")
        a("")
        cap = best_recv.get("nfcapd")
        for name, r in best_recv.items():
            if name != "nfcapd" and cap:
                # paced steps achieve the offered rate within pacing noise: 2 % tolerance
                a(f"- {name} / nfcapd: **{r / cap:.2f}×** (target ≥ 1 — "
                  + ("met" if r >= 0.98 * cap else "**not met**") + ")")
        a("")
        a("The load source runs on the same 2 cores: in a flat-out step the sender and the receiver "
          "compete for CPU, and a lower achieved rate than offered means the source itself was the limit.")
        a("Where nfpg's highest lossless step is a source-limited one, the receive path's own limit "
          "was not reached: the figure is a lower bound. With the default `--balance hash`, the 4 "
          "exporters' flows are spread over the shards by the kernel's SO_REUSEPORT hash of their "
          "addresses and ports, which can put all of them on one shard (the per-shard column).")
    else:
        a(f"Not measured: {recv_err}")
    a("")
    a("## Notes")
    a("")
    for n in cfg.get("notes", []):
        a(f"- {n}")
    a("")
    out.write_text("\n".join(L))


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 s steps, fewer rates (development)")
    ap.add_argument("--out", default="BENCHMARKS.md", help="report file (relative to the repo root)")
    ap.add_argument("--only", default="nfpg,limit,nfacctd,recv",
                    help="comma list of sections: nfpg, limit, nfacctd, recv")
    ap.add_argument("--rates", help="datagrams/s steps into PostgreSQL, comma separated")
    ap.add_argument("--recv-rates", help="datagrams/s steps of the receive path (0 = flat out)")
    ap.add_argument("--duration", type=float, help="seconds per step into PostgreSQL")
    ap.add_argument("--recv-duration", type=float, help="seconds per receive-path step")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    ap.add_argument("--exporters", type=int, default=4,
                    help="exporters the load source simulates (each its own loopback address)")
    args = ap.parse_args()
    global EXPORTERS
    EXPORTERS = args.exporters

    if args.quick:
        rates, dur = [5000, 15000], 5.0
        recv_rates, recv_dur = [20000, 60000, 0], 5.0
        copy_rows, repeats = 1_000_000, 1
    else:
        rates, dur = [5000, 10000, 15000, 20000, 25000, 30000], 30.0
        recv_rates, recv_dur = [25000, 50000, 100000, 150000, 0], 15.0
        copy_rows, repeats = 3_000_000, 3
    if args.rates:
        rates = [int(x) for x in args.rates.split(",")]
    if args.recv_rates:
        recv_rates = [int(x) for x in args.recv_rates.split(",")]
    dur = args.duration or dur
    recv_dur = args.recv_duration or recv_dur
    only = set(args.only.split(","))
    out = Path(args.out)
    if not out.is_absolute():
        out = ROOT / out
    cmdline = " ".join(["python3 benches/e2e.py"] + [shlex.quote(a) for a in sys.argv[1:]])
    cfg = {"quick": args.quick, "pg_duration": dur, "recv_duration": recv_dur,
           "copy_rows": copy_rows, "notes": []}

    for b in (NFPG, LOADGEN):
        if not b.exists():
            raise SystemExit(f"{b} missing: run cargo build --release --workspace")
    if shutil.which("psql") is None:
        raise SystemExit("psql missing: apt-get install postgresql-client")

    t_start = time.monotonic()
    OTHER.start()
    base = Path(tempfile.mkdtemp(prefix="nfpg-e2e-", dir="/tmp"))
    os.chmod(base, 0o755)  # the server user must reach pg/ below it
    work = base / "work"
    work.mkdir()
    pg = Postgres(base / "pg")
    pg.base.mkdir()
    pg_steps, copy_res, acct, recv = [], [], [], {}
    acct_err = recv_err = "not selected (--only)"

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    keep = args.keep
    try:
        log(f"PostgreSQL from {pg.bindir} in {pg.base}")
        pg.start()
        log(f"PostgreSQL {pg.version} up")
        info = machine_info(pg.version)

        if "nfpg" in only:
            pg_steps = bench_nfpg_pg(pg, work, rates, dur)
            best = highest(pg_steps, lambda s: s.verify_ok)
            if "limit" in only:
                if best:
                    try:
                        copy_res = bench_copy_limit(pg, best.db, copy_rows, repeats)
                    except BenchError as e:
                        cfg["copy_err"] = str(e)
                        log(f"COPY limit failed: {e}")
                else:
                    cfg["copy_err"] = "nfpg had no lossless step"
            for s in pg_steps:
                pg.query(f"DROP DATABASE IF EXISTS {s.db}")

        if "nfacctd" in only:
            if shutil.which("nfacctd") is None:
                acct_err = "nfacctd is not installed (apt-get install pmacct)."
            elif not Path("/usr/share/doc/pmacct/sql/pmacct-create-table_v9.pgsql").exists():
                acct_err = "pmacct's SQL scripts (/usr/share/doc/pmacct/sql) are missing."
            else:
                try:
                    acct = bench_nfacctd(pg, work, rates, dur)
                except BenchError as e:
                    acct_err = f"nfacctd run failed: {e}"
                    log(acct_err)

        if "recv" in only:
            backends = ["uring", "mmsg"]
            for be in backends:
                log(f"receive path: nfpg --sink null --recv {be}")
                recv[f"nfpg --sink null --recv {be}"] = ramp(
                    lambda rate, seed, tag, be=be: run_nfpg_null_step(work, be, rate, recv_dur, seed,
                                                                      f"{be}-{tag}"),
                    recv_rates)
            if shutil.which("nfcapd") and shutil.which("nfdump"):
                log("receive path: nfcapd")
                recv["nfcapd"] = ramp(
                    lambda rate, seed, tag: run_nfcapd_step(work, rate, recv_dur, seed, tag),
                    recv_rates)
            else:
                cfg["notes"].append("nfcapd/nfdump not installed: no nfcapd figures "
                                    "(apt-get install nfdump).")
            recv_err = ""
    except KeyboardInterrupt:
        log("interrupted: stopping children and PostgreSQL")
        keep = True
        return 130
    except Exception:
        keep = True
        raise
    finally:
        stop_all()
        pg.stop()
        if keep:
            log(f"logs kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)

    cfg["notes"] += [
        "nfpg runs with its defaults (shards = cores, 2 writers, io_uring when available, 32 MiB "
        "socket buffer forced as root); peers get a 32 MiB socket buffer request (capped at "
        "net.core.rmem_max unless they force it).",
        "Each database step is a fresh database, so PostgreSQL starts every step with empty tables.",
    ]
    write_report(out, cmdline, info, cfg, pg_steps, copy_res, acct, acct_err, recv, recv_err,
                 time.monotonic() - t_start)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
