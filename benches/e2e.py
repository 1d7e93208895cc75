#!/usr/bin/env python3
"""End-to-end benchmark of nfpg, PostgreSQL's own COPY and nfpg's peers; writes BENCHMARKS.md.

    python3 benches/e2e.py [--quick] [--out BENCHMARKS.md] [--only SECTIONS]

Python 3.11 standard library only. Needs the release binaries (cargo build --release
--workspace), the PostgreSQL server programs (initdb, pg_ctl, postgres) and psql; nfcapd/nfdump
(nfdump) and nfacctd (pmacct) are measured where installed (scripts/setup.sh --bench installs
them). All traffic goes to 127.0.0.1. Run as root: the harness raises net.core.rmem_max for the
run (and restores it) so every collector gets the same socket buffer.

What it knows of nfpg comes from nfpg itself: the private server is `nfpg server` (the one
`nfpg run` starts when no database is configured), the flows table's columns and the keys of
the final JSON summary come from `nfpg describe`, checked before anything runs.

Sections (the measuring code is in capacity.py and layout.py; the method is written into the
report next to each figure):
  nfpg     nfpg into PostgreSQL at rising rates, a fresh database per step: capacity (the
           highest rate stored exactly and in time), throughput, drain, CPU per datagram of
           nfpg and of PostgreSQL, latency from the kernel's receive time;
  limit    PostgreSQL's own binary COPY of the rows nfpg stored, 1 stream and as many as
           nfpg's writers, into the same table;
  nfacctd  pmacct's nfacctd into the same server, one row per flow, same index kinds;
  cpu      CPU per datagram of nfpg --sink null and nfcapd at 50,000 datagrams/s;
  scaling  shards 1..cores (null sink) and writers 1, 2, 4 (into PostgreSQL);
  layout   the database ceiling: COPY rows/s against the row layout (layout.py);
  v9       the nfpg ramp with NetFlow v9;
  replay   PostgreSQL stopped under load and restarted: how fast nfpg's spool empties.
Every child process is stopped at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release"
NFPG = BIN / "nfpg"
LOADGEN = BIN / "nfpg-loadgen"

EXPORTERS = 4
RECORDS = 30
# Records the load source draws before it starts and replays (nfpg-loadgen --pool; its
# default): drawing each record as it goes out would cost about 3.8 µs of CPU per datagram,
# taken from the collector and PostgreSQL on these shared cores.
POOL = 262_144

# Arguments added to every `nfpg run` of the harness (--nfpg-arg), after its own.
NFPG_EXTRA: list[str] = []


def _option_groups(argv: list[str]) -> list[list[str]]:
    """`argv` as options with their values: ["--balance", "cpu", "--x=1"] →
    [["--balance", "cpu"], ["--x=1"]]."""
    groups: list[list[str]] = []
    for a in argv:
        if a.startswith("--") or not groups:
            groups.append([a])
        else:
            groups[-1].append(a)
    return groups


def extra_args(args: list[str]) -> list[str]:
    """NFPG_EXTRA less the options `args` already has: where a step sets an option itself
    (the CPU section's `--balance cpu`, the scaling section's `--shards`), the step's value
    is the one used, and clap is not given the option twice (it refuses)."""
    given = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    return [a for g in _option_groups(NFPG_EXTRA) if g[0].split("=", 1)[0] not in given
            for a in g]


def proc_stat(path: str) -> list[str] | None:
    """The fields of a /proc/…/stat file after the command name (state, ppid, …: field 3 of
    proc(5) is index 0), or None when it cannot be read (the process is gone)."""
    try:
        with open(path) as f:
            st = f.read()
    except OSError:
        return None
    return st[st.rfind(")") + 2:].split()


def shards_in(args: list[str]) -> int | None:
    """The first `--shards N` (or `--shards=N`) of `args`, if any."""
    for i, a in enumerate(args):
        if a == "--shards" and i + 1 < len(args):
            return int(args[i + 1])
        if a.startswith("--shards="):
            return int(a.split("=", 1)[1])
    return None


# The columns of netflow.flows nfpg writes, in its COPY order: from `nfpg describe` at start.
FLOW_COLUMNS = ""
# The columns of nfpg's v5 COPY, in its order (`nfpg describe`: v5_copy_columns).
V5_COPY_COLUMNS = ""

# Latency stages and percentiles of nfpg's summary the report shows.
LATENCY_STAGES = ("end_to_end_us", "receive_to_seal_us", "queue_wait_us", "copy_us")
LATENCY_FIELDS = ("count", "p50", "p99", "max")

# Every value of nfpg's final JSON summary the harness reads, as a path ("a.b"; "a[]" = each
# element of list a). All are checked against `nfpg describe` before anything runs, so a
# renamed counter stops the harness at start; reading any other path is a harness bug.
SUMMARY_READS = frozenset([
    "datagrams", "flows", "kernel_drops", "queue_full", "rows_dropped", "malformed.total",
    "shards[].datagrams",
    # the replay section
    "rows_spooled", "rows_replayed", "rows_spool_full", "rows_spool_failed", "rows_dead_lettered",
    "spool_segments", "spool_bytes",
    *(f"latency.{st}.{f}" for st in LATENCY_STAGES for f in LATENCY_FIELDS),
])

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


def read_line(p: subprocess.Popen, timeout: float, what: str, logfile: Path) -> str:
    """The first line `p` writes on its stdout (a pipe), waiting at most `timeout` seconds."""
    fd = p.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}; see {logfile}")
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                p.wait(timeout=10)
                tail = logfile.read_text(errors="replace")[-2000:]
                raise BenchError(f"{what}: exited {p.returncode}: {tail}")
            buf += chunk
    return buf.split(b"\n", 1)[0].decode()


# --------------------------------------------------------------------------- what nfpg says


def _path_in(node, parts: list[str]) -> bool:
    """Whether the path exists in `node` (nfpg's default summary as `nfpg describe` shows it)."""
    if not parts:
        return True
    key = parts[0].removesuffix("[]")
    if not isinstance(node, dict) or key not in node:
        return False
    v = node[key]
    if parts[0].endswith("[]"):
        return isinstance(v, list) and bool(v) and _path_in(v[0], parts[1:])
    return _path_in(v, parts[1:])


def default_writers() -> int:
    """nfpg's default number of writers, from `nfpg run --help` (the COPY limit uses as many
    streams)."""
    out = run([str(NFPG), "run", "--help"], timeout=30).stdout
    m = re.search(r"--writers <WRITERS>.*?\[default: (\d+)\]", out, re.S)
    if not m:
        raise BenchError("nfpg run --help: no default for --writers")
    return int(m.group(1))


def load_describe() -> dict:
    """`nfpg describe`: the flows table's columns and the summary's keys, from nfpg's own
    declarations. Fails when a key the harness reads is not one nfpg reports."""
    global FLOW_COLUMNS, V5_COPY_COLUMNS
    r = run([str(NFPG), "describe"], timeout=60)
    d = json.loads(r.stdout)
    FLOW_COLUMNS = ", ".join(d["flow_columns"])
    V5_COPY_COLUMNS = ", ".join(d["v5_copy_columns"])
    counters = {name for kind in d["counters"].values() for name, _ in kind}
    missing = []
    for path in sorted(SUMMARY_READS):
        parts = path.split(".")
        head = parts[0].removesuffix("[]")
        if head not in d["summary_keys"] or not _path_in(d["summary_default"], parts):
            missing.append(path)
        # a counter read from a shard's entry must be a declared counter; one read from the
        # top level a declared counter or a number of the default summary (the spool's totals
        # and gauges, which `counters` does not list)
        elif parts[0] == "shards[]" and parts[-1] not in counters:
            missing.append(path)
        elif len(parts) == 1 and parts[0] not in counters and \
                not isinstance(d["summary_default"][parts[0]], (int, float)):
            missing.append(path)
    if missing:
        raise BenchError(f"nfpg's summary (nfpg describe) has no {', '.join(missing)}: the "
                         f"harness reads these keys; update SUMMARY_READS and their uses")
    return d


def sv(summary: dict, path: str):
    """One value of nfpg's summary by a path declared in SUMMARY_READS ("a[].b": a list)."""
    if path not in SUMMARY_READS:
        raise BenchError(f"harness bug: summary path {path!r} is not in SUMMARY_READS")

    def get(node, parts):
        if not parts:
            return node
        key = parts[0].removesuffix("[]")
        if not isinstance(node, dict) or key not in node:
            raise BenchError(f"nfpg's summary has no {path!r}: {json.dumps(summary)[:500]}")
        if parts[0].endswith("[]"):
            return [get(x, parts[1:]) for x in node[key]]
        return get(node[key], parts[1:])

    return get(summary, path.split("."))


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
            rest = proc_stat(f"/proc/{d}/stat")
            if rest is None:
                continue
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


class Postgres:
    """nfpg's own private server, `nfpg server --data-dir DIR`: the server `nfpg run` starts when
    no database is configured (its settings, unix socket only; as root nfpg runs it as the
    `postgres` user). It prints one JSON line (socket_dir, data_dir, url_template, settings)
    and serves until SIGTERM, on which it stops PostgreSQL (fast shutdown)."""

    def __init__(self, base: Path):
        self.base = base
        self.dir = base / "server"    # nfpg server --data-dir
        self.files = base / "files"   # server-side COPY files (written by the server user)
        self.logfile = base / "nfpg-server.log"
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}
        self.settings: dict = {}
        self.postmaster: int | None = None

    def start(self) -> None:
        self.files.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.files, "postgres")
        self._serve("w")

    def restart(self) -> None:
        """Starts the server again on the same data directory after halt() (the replay
        section's outage): `nfpg server --data-dir` reuses the cluster, same socket and port."""
        if self.proc is not None:
            raise BenchError("harness bug: PostgreSQL restarted while it is running")
        self._serve("a")

    def _serve(self, mode: str) -> None:
        self._log = open(self.logfile, mode)
        # Not in CHILDREN: stopped last, after everything that uses it.
        self.proc = subprocess.Popen([str(NFPG), "server", "--data-dir", str(self.dir)],
                                     stdout=subprocess.PIPE, stderr=self._log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        line = read_line(self.proc, 180, "nfpg server to describe its PostgreSQL", self.logfile)
        self.info = json.loads(line)
        self.sock = Path(self.info["socket_dir"])
        # url_template is a libpq key=value string: host (the socket dir), port, user, dbname.
        self.conn = dict(kv.split("=", 1) for kv in self.info["url_template"].split())
        self.settings = self.info.get("settings") or {}
        self.version = self.info.get("server_version") or self.query("SHOW server_version").strip()
        try:
            pid_file = Path(self.info["data_dir"]) / "postmaster.pid"
            self.postmaster = int(pid_file.read_text().split()[0])
            OTHER.postmaster = self.postmaster
        except (OSError, ValueError, IndexError):
            pass

    def stop(self) -> None:
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        rc = stop(p, timeout=120)  # SIGTERM: nfpg stops PostgreSQL and exits
        if p.stdout:
            p.stdout.close()
        self._log.close()
        if rc != 0:
            log(f"nfpg server exited {rc}; see {self.logfile}")
        if self.postmaster and Path(f"/proc/{self.postmaster}").exists() and \
                (Path(self.info["data_dir"]) / "postmaster.pid").exists():
            log(f"PostgreSQL (pid {self.postmaster}) still running: fast shutdown")
            try:
                os.kill(self.postmaster, signal.SIGINT)
            except (ProcessLookupError, PermissionError):
                pass

    @property
    def socket_file(self) -> Path:
        return self.sock / f".s.PGSQL.{self.port}"

    def halt(self, timeout: float = 90) -> None:
        """Stops the server as stop() does and waits (bounded) until its socket and its
        postmaster are gone, keeping the data directory for restart()."""
        if self.proc is None:
            return
        sock, pid_file = self.socket_file, Path(self.info["data_dir"]) / "postmaster.pid"
        self.stop()
        # PostgreSQL removes both when its shutdown is complete.
        wait_until(lambda: not sock.exists() and not pid_file.exists(), timeout,
                   f"PostgreSQL to stop ({sock} and {pid_file} gone)", step=0.05)

    @property
    def port(self) -> str:
        return self.conn["port"]

    @property
    def user(self) -> str:
        return self.conn["user"]

    def url(self, db: str) -> str:
        return self.info["url_template"].replace("{db}", db)

    def psql_cmd(self, db: str) -> list[str]:
        return ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.sock),
                "-p", self.port, "-U", self.user, "-d", db]

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


def loadgen_cmd(port: int, rate: int, duration: float, seed: int, verify_url: str | None = None,
                verify_timeout: float = 120, verify_settle: float = 5,
                version: int = 5) -> list[str]:
    cmd = [str(LOADGEN), "--target", f"127.0.0.1:{port}", "--exporters", str(EXPORTERS),
           "--records", str(RECORDS), "--rate", str(rate), "--duration", f"{duration:g}",
           "--seed", str(seed), "--pool", str(POOL)]
    if version != 5:
        cmd += ["--version", str(version)]
    if verify_url:
        cmd += ["--verify", "--database-url", verify_url, "--verify-timeout", f"{verify_timeout:g}",
                "--verify-settle", f"{verify_settle:g}"]
    return cmd


def loadgen(port: int, rate: int, duration: float, seed: int, verify_url: str | None = None,
            extra_timeout: float = 0, version: int = 5) -> dict:
    cmd = loadgen_cmd(port, rate, duration, seed, verify_url, version=version)
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
        # Its own data directory (and so spool) under the temporary directory: nothing of the
        # machine's nfpg (/var/lib/nfpg) is touched or shared.
        self.cmd = [str(NFPG), "run", "--listen", "127.0.0.1", "--port", str(self.port),
                    "--stats-interval", "5", "--data-dir", str(workdir / f"{name}-data")] + args
        self.cmd += extra_args(self.cmd)
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
    return " / ".join(fmt(int(n)) for n in sv(summary, "shards[].datagrams"))


def latency(summary: dict, key: str = "end_to_end_us") -> dict | None:
    """One stage's percentiles (LATENCY_FIELDS), or None when it recorded nothing."""
    h = {f: sv(summary, f"latency.{key}.{f}") for f in LATENCY_FIELDS}
    return h if h["count"] else None


# --------------------------------------------------------------------------- replay


# Spool bytes per flow the disk check assumes (a binary COPY row of netflow.flows plus its
# share of the segment's header), and the headroom on top.
SPOOL_BYTES_PER_FLOW = 236
DISK_HEADROOM = 1.2
SPOOL_MAX_DEFAULT = 10 * 2**30  # nfpg run --spool-max default (10G)
# What the replay section reads from nfpg's /metrics; each summed over its series (shards).
# Checked on the first scrape: a renamed metric stops the section instead of reading as 0.
REPLAY_METRICS = ("nfpg_spool_bytes", "nfpg_spool_segments", "nfpg_rows_replayed_total",
                  "nfpg_rows_spooled_total", "nfpg_database_up", "nfpg_rows_spool_full_total",
                  "nfpg_kernel_drops_total")
METRICS_INTERVAL = 0.5


class ReplaySkipped(BenchError):
    pass


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    """nfpg's /metrics: the REPLAY_METRICS present, each summed over its labelled series."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        body = r.read().decode()
    vals: dict[str, float] = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name = series.split("{", 1)[0]
        if name in REPLAY_METRICS:
            vals[name] = vals.get(name, 0.0) + float(value)
    return vals


class MetricsPoller:
    """Scrapes nfpg's /metrics every METRICS_INTERVAL seconds in a thread (HTTP only, no child
    process): samples of (monotonic time of the answer, values)."""

    def __init__(self, port: int):
        self.port = port
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.errors = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                v = scrape(self.port)
                self.samples.append((time.monotonic(), v))
            except (OSError, ValueError) as e:
                self.errors += 1
                self.last_error = str(e)
            self._stop.wait(max(0.0, METRICS_INTERVAL - (time.monotonic() - t)))

    def start(self) -> None:
        self._t.start()

    def stop(self) -> None:
        self._stop.set()
        self._t.join(timeout=10)


@dataclass
class ReplayRun:
    rate: int
    outage: float
    duration: float = 0          # loadgen --duration
    free_bytes: int = 0          # free on the work directory's filesystem before the run
    need_bytes: int = 0
    workdir: str = ""
    nfpg_cmd: str = ""
    loadgen_cmd: str = ""
    sent_flows: int = 0
    sent_dgrams: int = 0
    achieved_fps: float = 0
    t_down: float = 0            # SIGTERM to nfpg server, seconds after loadgen started
    t_stopped: float = 0         # PostgreSQL's socket and pid file gone
    t_up: float = 0              # nfpg server accepting connections again
    t_db_down: float | None = None  # first metrics sample with nfpg_database_up 0
    t_db_up: float | None = None    # first sample after t_up with nfpg_database_up 1
    t_empty: float | None = None    # first sample after t_up with nfpg_spool_segments 0
    refilled: bool = False       # segments > 0 again after t_empty
    live_after_up: float = 0     # seconds loadgen kept sending after t_up
    peak_bytes: int = 0
    peak_segments: int = 0
    replayed_at_empty: int = 0   # nfpg_rows_replayed_total at t_empty (minus at t_up)
    replay_time: float | None = None
    replay_rate: float | None = None
    rows_spooled: int = 0
    rows_replayed: int = 0
    rows_spool_full: int = 0
    rows_spool_failed: int = 0
    rows_dead_lettered: int = 0
    spool_segments_end: int = 0
    kernel_drops: int = 0
    metrics_kernel_drops: int = 0
    lg_rc: int | None = None
    lost_flows: int = 0
    stored_flows: int = 0
    verify_ok: bool = False
    verify_waited: float = 0
    samples: int = 0
    scrape_errors: int = 0
    other: float | None = None
    notes: list[str] = field(default_factory=list)


def sleep_until(t: float, proc: subprocess.Popen | None, what: str) -> None:
    """Sleeps until monotonic time t; fails when `proc` (loadgen) exits before it."""
    while True:
        left = t - time.monotonic()
        if left <= 0:
            return
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what}: nfpg-loadgen exited {proc.returncode} early")
        time.sleep(min(left, 0.1))


def bench_replay(pg: Postgres, work: Path, rate: int, outage: float) -> ReplayRun:
    r = ReplayRun(rate=rate, outage=outage, duration=2 + outage + 10, workdir=str(work))
    outage_flows = rate * RECORDS * outage
    r.need_bytes = int(SPOOL_BYTES_PER_FLOW * outage_flows * DISK_HEADROOM)
    r.free_bytes = shutil.disk_usage(work).free
    if r.free_bytes < r.need_bytes:
        raise ReplaySkipped(
            f"skipped: the outage's {outage_flows:,.0f} flows need {r.need_bytes / 1e9:.1f} GB of "
            f"spool ({SPOOL_BYTES_PER_FLOW} B/flow × {DISK_HEADROOM}), only "
            f"{r.free_bytes / 1e9:.1f} GB free in {work}; lower --replay-rate or --outage")
    if SPOOL_BYTES_PER_FLOW * outage_flows > SPOOL_MAX_DEFAULT:
        r.notes.append(f"the outage's flows ({SPOOL_BYTES_PER_FLOW * outage_flows / 2**30:.1f} GiB "
                       "expected) exceed nfpg's default --spool-max (10 GiB): rows_spool_full "
                       "is expected to be above 0 and stored < sent")
    db = "replay"
    pg.query(f"DROP DATABASE IF EXISTS {db}")
    pg.query(f"CREATE DATABASE {db}")
    spool = work / "replay-spool"
    mport = free_tcp_port()
    log(f"replay: {rate} datagrams/s ({rate * RECORDS} flows/s), PostgreSQL down {outage:.0f}s "
        f"from t=2s; {r.free_bytes / 1e9:.1f} GB free, {r.need_bytes / 1e9:.2f} GB needed")
    n = Nfpg(work, "nfpg-replay", ["--database-url", pg.url(db), "--spool-dir", str(spool),
                                   "--metrics", f"127.0.0.1:{mport}"])
    r.nfpg_cmd = shlex.join(n.cmd)
    n.start()
    poller = MetricsPoller(mport)
    lg_proc: subprocess.Popen | None = None
    lg_files = []
    lg_out = work / "loadgen-replay.stdout"
    lg_err = work / "loadgen-replay.stderr"
    t0 = time.monotonic()
    try:
        first: dict = {}

        def scraped() -> bool:
            nonlocal first
            try:
                first = scrape(mport)
                return True
            except (OSError, ValueError):
                return False

        wait_until(scraped, 30, f"nfpg's metrics on 127.0.0.1:{mport}", n.proc, step=0.2)
        missing = [m for m in REPLAY_METRICS if m not in first]
        if missing:
            raise BenchError(f"nfpg's /metrics has no {', '.join(missing)}: the replay section "
                             f"reads these; update REPLAY_METRICS")
        poller.start()
        cmd = loadgen_cmd(n.port, rate, r.duration, seed=300, verify_url=pg.url(db),
                          verify_timeout=900, verify_settle=30)
        r.loadgen_cmd = shlex.join(cmd)
        lg_files = [open(lg_out, "w"), open(lg_err, "w")]
        t0 = time.monotonic()
        lg_proc = spawn(cmd, stdout=lg_files[0], stderr=lg_files[1])
        sleep_until(t0 + 2, lg_proc, "before the outage")
        r.t_down = time.monotonic() - t0
        log("  stopping PostgreSQL (SIGTERM to nfpg server)")
        pg.halt()
        r.t_stopped = time.monotonic() - t0
        log(f"  PostgreSQL stopped after {r.t_stopped - r.t_down:.1f}s; down for {outage:.0f}s")
        sleep_until(t0 + r.t_down + outage, lg_proc, "during the outage")
        pg.restart()
        t_up = time.monotonic()
        t_up_wall = time.time()
        r.t_up = t_up - t0
        log(f"  PostgreSQL accepting again at t={r.t_up:.1f}s; waiting for loadgen's --verify")
        deadline = t0 + r.duration + 900 + 120
        while lg_proc.poll() is None:
            if time.monotonic() > deadline:
                raise BenchError(f"nfpg-loadgen still running {deadline - t0:.0f}s after its "
                                 f"start; see {lg_err}")
            time.sleep(0.5)
        r.lg_rc = lg_proc.returncode

        def empty_after_up() -> bool:
            return any(t > t_up and v.get("nfpg_spool_segments", 1) == 0
                       for t, v in list(poller.samples))

        try:
            wait_until(empty_after_up, 120, "the spool to be empty after the restart", n.proc,
                       step=METRICS_INTERVAL)
        except BenchError as e:
            r.notes.append(str(e))
        time.sleep(2 * METRICS_INTERVAL)  # a few samples past t_empty (refilled or not)
    except Exception:
        if pg.proc is None:  # failed during the outage: the later sections need the server
            log("  starting PostgreSQL again after the failure")
            try:
                pg.restart()
            except Exception as e:  # keep the first error
                log(f"  starting PostgreSQL again failed: {e}")
        raise
    finally:
        poller.stop()
        if lg_proc is not None:
            stop(lg_proc, timeout=10)
        for f in lg_files:
            f.close()
        summary = n.finish()
    r.other = OTHER.between(t0, time.monotonic())
    lg = last_json_line(lg_out.read_text(errors="replace"))
    if lg is None:
        raise BenchError(f"nfpg-loadgen exited {r.lg_rc} without a summary: "
                         f"{lg_err.read_text(errors='replace')[-2000:]}")
    v = lg.get("verify") or {}
    r.sent_flows = int(lg["sent"]["flows"])
    r.sent_dgrams = int(lg["sent"]["datagrams"])
    r.achieved_fps = r.sent_flows / max(float(lg["elapsed_s"]), 1e-9)
    r.live_after_up = float(lg["ended_at_unix_ms"]) / 1000 - t_up_wall
    r.lost_flows = int((v.get("lost") or {}).get("flows", r.sent_flows))
    r.stored_flows = int((v.get("stored") or {}).get("flows", 0))
    r.verify_waited = float(v.get("waited_s", 0))
    r.verify_ok = r.lg_rc == 0 and bool(v.get("ok")) and r.lost_flows == 0 and \
        v.get("stored") == v.get("sent")
    if not r.verify_ok and r.lost_flows == 0:
        r.notes.append(f"stored != sent: {v.get('mismatches')}")
    r.rows_spooled = int(sv(summary, "rows_spooled"))
    r.rows_replayed = int(sv(summary, "rows_replayed"))
    r.rows_spool_full = int(sv(summary, "rows_spool_full"))
    r.rows_spool_failed = int(sv(summary, "rows_spool_failed"))
    r.rows_dead_lettered = int(sv(summary, "rows_dead_lettered"))
    r.spool_segments_end = int(sv(summary, "spool_segments"))
    r.kernel_drops = int(sv(summary, "kernel_drops"))
    if summary["_rc"] != 0:
        r.notes.append(f"nfpg run exited {summary['_rc']}")

    # The timeline from nfpg's metrics (times relative to loadgen's start).
    s = [(t - t0, v) for t, v in poller.samples]
    r.samples, r.scrape_errors = len(s), poller.errors
    if poller.errors:
        r.notes.append(f"{poller.errors} of {poller.errors + len(s)} metrics scrapes failed "
                       f"(last: {poller.last_error})")
    if s:
        r.peak_bytes = int(max(v["nfpg_spool_bytes"] for _, v in s))
        r.peak_segments = int(max(v["nfpg_spool_segments"] for _, v in s))
        r.metrics_kernel_drops = int(s[-1][1]["nfpg_kernel_drops_total"])
    r.t_db_down = next((t for t, v in s if t > r.t_down and v["nfpg_database_up"] == 0), None)
    r.t_db_up = next((t for t, v in s if t > r.t_up and v["nfpg_database_up"] >= 1), None)
    before_up = [v for t, v in s if t <= r.t_up]
    replayed_at_up = before_up[-1]["nfpg_rows_replayed_total"] if before_up else 0
    i_empty = next((i for i, (t, v) in enumerate(s)
                    if t > r.t_up and v["nfpg_spool_segments"] == 0), None)
    if i_empty is not None and r.peak_segments > 0:
        r.t_empty = s[i_empty][0]
        r.replayed_at_empty = int(s[i_empty][1]["nfpg_rows_replayed_total"] - replayed_at_up)
        r.replay_time = r.t_empty - r.t_up
        r.replay_rate = r.replayed_at_empty / max(r.replay_time, 1e-9)
        r.refilled = any(v["nfpg_spool_segments"] > 0 for _, v in s[i_empty + 1:])
        if r.refilled:
            r.notes.append("the spool held segments again after it was first empty (live "
                           "batches spooled while the writers were behind); the replay time is "
                           "until it was first empty")
    elif r.peak_segments == 0:
        r.notes.append("nothing was spooled: the outage was not seen by nfpg")
    pg.query(f"DROP DATABASE IF EXISTS {db}")
    shutil.rmtree(spool, ignore_errors=True)
    log(f"  sent {r.sent_flows} flows, spooled {r.rows_spooled} (peak {r.peak_bytes / 1e6:.1f} MB, "
        f"{r.peak_segments} segments), replayed {r.rows_replayed}; spool empty "
        + (f"{r.replay_time:.1f}s after the restart ({r.replay_rate:,.0f} rows/s)"
           if r.replay_time is not None else "never seen")
        + f"; verify rc {r.lg_rc}, lost {r.lost_flows}, kernel drops {r.kernel_drops}, "
          f"spool full {r.rows_spool_full}")
    return r


# --------------------------------------------------------------------------- nfdump

def nfdump_flows(flowdir: Path) -> int:
    r = run(["nfdump", "-R", str(flowdir), "-I"], timeout=300, check=False)
    m = re.search(r"^Flows:\s*(\d+)", r.stdout, re.M)
    if not m:
        if r.returncode != 0 and "No" in r.stderr + r.stdout:
            return 0
        raise BenchError(f"nfdump -I gave no Flows line: {r.stdout[-500:]} {r.stderr[-500:]}")
    return int(m.group(1))



# --------------------------------------------------------------------------- report


_CHUNK = b"\0" * (1 << 16)


def _write_pages(fds: list[int], size: int) -> float:
    """Writes `size` bytes to each of fds, interleaved in 64 KiB chunks; CPU (user + system)
    µs per 4 KiB page written."""
    c0 = time.process_time()
    for _ in range(size // len(_CHUNK)):
        for fd in fds:
            os.write(fd, _CHUNK)
    return (time.process_time() - c0) * 1e6 / (len(fds) * size / 4096)


def page_costs(where: Path, size: int = 1 << 30, most: int = 4) -> tuple[float, float, int]:
    """CPU (µs per 4 KiB page, the writer's user + system time) of writing new files:
    (into memory nothing freed just before, right after a file of `size` bytes was deleted,
    GiB written before the first figure's). On a VM that returns free memory to its host (free
    page reporting) the first touches pages the host must fault back in; on bare metal the two
    are alike. The deleted file was written interleaved with another, as PostgreSQL writes a
    table and its WAL. Memory freed before this function (a previous run's files) is used up
    first: files of `size` are written one after the other, at most `most`, until one costs 3×
    the recycled figure; the first figure is the last of them."""
    paths = [where / f"page-cost-{k}" for k in range(3 + most)]
    fds = {p: os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) for p in paths}
    prev, other, after, *fresh_files = paths
    try:
        _write_pages([fds[prev], fds[other]], size)   # a previous load: two files, interleaved
        os.close(fds.pop(prev))
        prev.unlink()
        recycled = _write_pages([fds[after]], size)
        fresh, before = recycled, 0
        for f in fresh_files:
            fresh = _write_pages([fds[f]], size)
            if fresh >= 3 * recycled:
                break
            before += size >> 30
    finally:
        for fd in fds.values():
            os.close(fd)
        for p in paths:
            p.unlink(missing_ok=True)
    return fresh, recycled, before


def machine_info(pg_version: str, pages: tuple[float, float, int] | None = None) -> list[tuple[str, str]]:
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
    ] + ([("new file pages, CPU per 4 KiB page",
           f"{pages[0]:.2f} µs into memory nothing freed just before (after {pages[2]} GiB of "
           f"such writes); {pages[1]:.2f} µs right after a 1 GiB file was deleted (`page_costs` "
           "in benches/e2e.py)")]
         if pages else [])


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


def write_replay(a, cmdline: str, cfg, r: ReplayRun | None, err: str) -> None:
    a("## Replay after an outage")
    a("")
    if r is None:
        a(f"Not measured: {err}")
        a("")
        return
    a("How fast nfpg's spool empties once PostgreSQL is back: a fresh database; "
      "`nfpg run` as in the ramp plus `--spool-dir` and `--metrics`; `nfpg-loadgen --verify` "
      f"sends for {r.duration:g} s; 2 s in, PostgreSQL is stopped (SIGTERM to `nfpg server`: "
      f"`pg_ctl stop -m fast`, until its socket is gone) and started again on the same data "
      f"directory {r.outage:g} s later, while the load goes on. nfpg's `/metrics` is read every "
      f"{METRICS_INTERVAL:g} s: the spool's peak, and the time it is empty again "
      "(`nfpg_spool_segments` = 0). Every figure below is measured: loadgen's report, nfpg's "
      f"final summary, the metrics; the rate {r.rate:,} datagrams/s is {cfg.get('replay_rate_from', '?')}.")
    a("")
    a("Produced by (this report's run; the section alone: "
      f"`python3 benches/e2e.py --only replay --replay-rate {r.rate} --outage {r.outage:g}`):")
    a("")
    a("```sh")
    a(cmdline)
    a(f"# in {r.workdir}:")
    a(r.nfpg_cmd)
    a(r.loadgen_cmd)
    a("```")
    a("")
    down = r.t_up - r.t_down
    a("| | |")
    a("|---|---|")
    a(f"| offered rate | {fmt(r.rate * RECORDS)} flows/s ({fmt(r.rate)} datagrams/s × {RECORDS} records, "
      f"{EXPORTERS} exporters); achieved {fmt(r.achieved_fps)} flows/s |")
    a(f"| outage | {down:.1f} s: SIGTERM at {r.t_down:.1f} s (stopped {r.t_stopped - r.t_down:.1f} s later), "
      f"accepting again at {r.t_up:.1f} s (times from loadgen's start) |")
    seen_down = f"0 at {r.t_db_down:.1f} s" if r.t_db_down is not None else "never seen 0"
    seen_up = (f"1 again at {r.t_db_up:.1f} s ({r.t_db_up - r.t_up:.1f} s after the restart)"
               if r.t_db_up is not None else "not seen 1 again after the restart")
    a(f"| nfpg saw it | `nfpg_database_up` {seen_down}, {seen_up} |")
    a(f"| flows sent | {fmt(r.sent_flows)} |")
    a(f"| rows spooled | {fmt(r.rows_spooled)} |")
    a(f"| peak spool | {r.peak_bytes / 1e6:,.1f} MB ({fmt(r.peak_segments)} segments) |")
    a(f"| rows replayed | {fmt(r.rows_replayed)} (final summary); {fmt(r.replayed_at_empty)} by the "
      "time the spool was empty (metrics) |")
    if r.replay_time is not None:
        a(f"| replay time | **{r.replay_time:.1f} s**: restart ({r.t_up:.1f} s) → spool empty "
          f"({r.t_empty:.1f} s), ± {METRICS_INTERVAL:g} s (the metrics' polling) |")
        live = max(r.live_after_up, 0.0)
        during = ("during all of it" if live >= r.replay_time
                  else f"for the first {live:.1f} s of it")
        a(f"| replay rate | **{fmt(r.replay_rate)} rows/s** = {fmt(r.replayed_at_empty)} rows replayed "
          f"/ {r.replay_time:.1f} s; live traffic went on {during} at the offered rate "
          f"({fmt(r.rate * RECORDS)} flows/s; sending ended {live:.1f} s after the restart), "
          "written by the same writers next to the replay |")
    else:
        a("| replay time | not measured: the spool was not seen empty after the restart |")
    lost = "0 lost" if r.lost_flows == 0 else f"**{fmt(r.lost_flows)} lost**"
    a(f"| stored = sent | {'**yes**' if r.verify_ok else '**no**'}: `nfpg-loadgen --verify` exit "
      f"{r.lg_rc}, {fmt(r.stored_flows)} flows stored, {lost}, verify waited {r.verify_waited:.1f} s "
      "after sending |")
    a(f"| kernel drops | {fmt(r.kernel_drops)} |")
    a(f"| rows_spool_full | {fmt(r.rows_spool_full)} |")
    a(f"| rows dead-lettered / spool failed | {fmt(r.rows_dead_lettered)} / {fmt(r.rows_spool_failed)} |")
    a(f"| spool segments at nfpg's stop | {fmt(r.spool_segments_end)} |")
    a(f"| disk free before the run | {r.free_bytes / 1e9:,.1f} GB (needed: {r.need_bytes / 1e9:,.2f} GB = "
      f"{SPOOL_BYTES_PER_FLOW} B/flow × flows offered during the outage × {DISK_HEADROOM:g}) |")
    a(f"| other load (cores) | {other_str(r.other)} |")
    a("")
    shares = "the live traffic after the restart"
    if r.t_empty is not None and r.t_empty > r.t_up + r.live_after_up:
        shares += (" and, once sending ended, `--verify`'s polling (a `sum()` over the database's "
                   "flows every 0.5 s)")
    a(f"The replay shares nfpg's writers and PostgreSQL with {shares}: the replay rate is a lower "
      "bound of the replay on its own. The replay time includes nfpg's reconnection after the "
      "restart (the `nfpg_database_up` row). Stored = sent is loadgen's check of every flow it "
      "sent, before, during and after the outage.")
    if r.other is not None and r.other >= 0.5:
        a("")
        a(f"**Other work used {r.other:.2f} of {os.cpu_count()} cores during this run**: the "
          "replay competed with it for the cores; expect a higher rate on an idle machine.")
    for n in r.notes:
        a(f"- {n}")
    a("")

def write_report(out: Path, cmdline: str, info, cfg, sections: dict, elapsed_total: float,
                 replay: ReplayRun | None = None, replay_err: str = "not selected (--only)") -> None:
    import capacity
    L: list[str] = []
    a = L.append
    a("# Benchmarks")
    a("")
    a("End-to-end measurements of nfpg, PostgreSQL's own COPY and nfpg's peers on one machine, "
      "all from one run of `benches/e2e.py` (see `benches/README.md`), which wrote this file. "
      "Every figure is something stored and timed in that run; how each was measured is written "
      f"next to it. One load source for everything: `nfpg-loadgen`, {EXPORTERS} loopback "
      f"exporters, {RECORDS} records per datagram, paced, replaying {POOL:,} records it drew "
      "before starting (each exporter from its own place, the times re-stamped), so it takes "
      "little CPU from what it measures.")
    a("")
    a("Produced by:")
    a("")
    a("```sh")
    a(cmdline)
    a("```")
    a("")
    a(f"Run time {elapsed_total / 60:.1f} min; steps of {cfg['pg_duration']:.0f} s into databases, "
      f"{cfg['cpu_duration']:.0f} s for the receive path." + (" **Quick run** (short steps; "
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
    settings = " ".join(f"{k}={v if v else repr(v)}" for k, v in sorted(cfg.get("pg_settings", {}).items())
                        if k != "unix_socket_directories")  # a temporary path
    a("PostgreSQL: nfpg's private server (`nfpg server`, the one `nfpg run` starts when no database "
      f"is configured), unix socket only, with the settings nfpg gives it: `{settings}`.")
    a("")
    capacity.write_sections(a, cfg, sections.get("steps", []), sections.get("copies", []),
                            sections.get("acct", []), sections.get("acct_err", ""),
                            sections.get("cpu", []), sections.get("shards", {}),
                            sections.get("writers", []), sections.get("v9", []))
    if sections.get("layouts"):
        import io
        import layout
        buf = io.StringIO()
        layout.write_layout_section(buf, sections["layouts"], cfg["layout_rows"],
                                    cfg["layout_repeats"])
        for line in buf.getvalue().rstrip("\n").split("\n"):
            a(line)
        a("")
    elif "layout_err" in cfg:
        a("## The database ceiling: row layout")
        a("")
        a(f"Not measured: {cfg['layout_err']}")
        a("")
    write_replay(a, cmdline, cfg, replay, replay_err)
    a("## Notes")
    a("")
    for n in cfg.get("notes", []):
        a(f"- {n}")
    for k in ("copy_err", "cpu_err"):
        if k in cfg:
            a(f"- {cfg[k]}")
    a("")
    out.write_text("\n".join(L))


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 s steps, fewer rates (development)")
    ap.add_argument("--out", default="BENCHMARKS.md", help="report file (relative to the repo root)")
    ap.add_argument("--only", default="nfpg,limit,nfacctd,cpu,scaling,layout,v9,replay",
                    help="comma list of sections: nfpg, limit, nfacctd, cpu, scaling, layout, v9, "
                         "replay")
    ap.add_argument("--rates", help="datagrams/s steps into PostgreSQL, comma separated")
    ap.add_argument("--acct-rates", help="datagrams/s steps of nfacctd [1000,2000,3000,4000,5000,6000]")
    ap.add_argument("--v9-rates", help="datagrams/s steps of the NetFlow v9 ramp [the nfpg ramp's]")
    ap.add_argument("--cpu-rate", type=int, default=50000,
                    help="datagrams/s of the CPU comparison [50000]")
    ap.add_argument("--replay-rate", type=int,
                    help="datagrams/s of the replay section [default: nfpg's capacity rate]")
    ap.add_argument("--outage", type=float,
                    help="seconds PostgreSQL is down in the replay section [60; 10 with --quick]")
    ap.add_argument("--duration", type=float, help="seconds per step into PostgreSQL")
    ap.add_argument("--tries", type=int,
                    help="tries per rate of a ramp; a rate is kept up when most of them kept "
                         "up [3; 1 with --quick]")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    ap.add_argument("--exporters", type=int, default=4,
                    help="exporters the load source simulates (each its own loopback address)")
    ap.add_argument("--nfpg-arg", action="append", default=[], metavar="ARG",
                    help="an argument added to every `nfpg run` (repeat for more; "
                         "e.g. --nfpg-arg=--balance --nfpg-arg=cpu)")
    args = ap.parse_args()
    global EXPORTERS
    EXPORTERS = args.exporters
    NFPG_EXTRA.extend(args.nfpg_arg)
    # capacity.py and layout.py import this module as `e2e`: the same module, not a second copy.
    sys.modules.setdefault("e2e", sys.modules[__name__])
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import capacity

    if args.quick:
        rates, dur = [4000, 8000], 5.0
        acct_rates = [2000]
        cpu_dur, cpu_rounds = 5.0, 1
        shard_rates = [20000, 60000]
        layout_rows, layout_repeats = 200_000, 1
        copy_repeats = 1
    else:
        # Small steps: the first try at a rate above any before it pays for what no try wrote
        # before (benches/README.md, section 2); a wide step makes that bill larger (a ramp of
        # 8,000 then 20,000 failed both tries at 20,000 on 2026-12-03).
        rates, dur = [8000, 12000, 16000, 20000, 22000, 24000, 26000, 28000, 30000, 31000,
                      32000, 33000, 34000, 35000, 36000, 38000, 40000], 20.0
        acct_rates = [1000, 2000, 3000, 4000, 5000, 6000]
        cpu_dur, cpu_rounds = 15.0, 3
        shard_rates = [50000, 100000, 150000]
        layout_rows, layout_repeats = 1_000_000, 3
        copy_repeats = 3
    if args.rates:
        rates = [int(x) for x in args.rates.split(",")]
    if args.acct_rates:
        acct_rates = [int(x) for x in args.acct_rates.split(",")]
    dur = args.duration or dur
    tries = args.tries or (1 if args.quick else 3)
    only = set(args.only.split(","))
    out = Path(args.out)
    if not out.is_absolute():
        out = ROOT / out
    cmdline = " ".join(["python3 benches/e2e.py"] + [shlex.quote(a) for a in sys.argv[1:]])
    shards = os.cpu_count() or 1
    cfg = {"quick": args.quick, "pg_duration": dur, "cpu_duration": cpu_dur,
           "cpu_rounds": cpu_rounds, "layout_rows": layout_rows, "layout_repeats": layout_repeats,
           "nfpg_shards": shards, "nfpg_writers": default_writers(), "notes": [],
           "tries": tries, "copy_repeats": copy_repeats}

    for b in (NFPG, LOADGEN):
        if not b.exists():
            raise SystemExit(f"{b} missing: run cargo build --release --workspace")
    if shutil.which("psql") is None:
        raise SystemExit("psql missing: apt-get install postgresql-client")
    try:
        load_describe()  # columns and summary keys from nfpg; fails here if they drifted
    except (BenchError, KeyError, ValueError) as e:
        raise SystemExit(f"e2e: nfpg describe: {e}")

    t_start = time.monotonic()
    OTHER.start()
    rmem = capacity.RmemMax()
    base = Path(tempfile.mkdtemp(prefix="nfpg-e2e-", dir="/tmp"))
    os.chmod(base, 0o755)  # the server user (postgres, when root) must reach pg/ below it
    work = base / "work"
    work.mkdir()
    pg = Postgres(base / "pg")
    pg.base.mkdir()
    sec: dict = {"acct_err": "not selected (--only)"}
    replay = None
    replay_err = "not selected (--only)"

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    keep = args.keep
    try:
        cfg["rmem"] = rmem.raise_()
        log(f"PostgreSQL: nfpg server --data-dir {pg.dir}")
        pg.start()
        cfg["pg_settings"] = pg.settings
        log(f"PostgreSQL {pg.version} up, socket in {pg.sock}")
        pages = page_costs(work)
        log(f"new file pages: {pages[0]:.2f} us (nothing freed before, after {pages[2]} GiB), "
            f"{pages[1]:.2f} us (right after a delete) of CPU per 4 KiB page")
        info = machine_info(pg.version, pages)
        cap = None
        if "nfpg" in only:
            # The COPY limit's parts: the least common multiple of its stream counts.
            copy_streams = sorted({1, 2, cfg["nfpg_writers"]})
            wants_rows = "limit" in only or "layout" in only
            sec["steps"] = capacity.nfpg_ramp(pg, work, rates, dur, tries=tries,
                                              parts=math.lcm(*copy_streams) if wants_rows else 0)
            cap = capacity.capacity(sec["steps"])
            if wants_rows:
                if cap and cap.parts:
                    rows_db = ""   # a database holding the capacity step's rows, for the layouts
                    if "limit" in only:
                        try:
                            for_layout = "layout" in only
                            sec["copies"] = capacity.copy_limit(pg, cap.parts, cap.stored_flows,
                                                                copy_streams, copy_repeats,
                                                                db="copylimit", keep=for_layout)
                            rows_db = "copylimit" if for_layout else ""
                        except BenchError as e:
                            cfg["copy_err"] = f"COPY limit failed: {e}"
                            log(cfg["copy_err"])
                    if "layout" in only:
                        try:
                            import layout
                            if ", ".join(layout.V5_COPY_COLUMNS) != V5_COPY_COLUMNS:
                                raise BenchError("layout.V5_COPY_COLUMNS differs from nfpg "
                                                 f"describe's v5_copy_columns: {V5_COPY_COLUMNS}")
                            if not rows_db:
                                rows_db = "layoutsrc"
                                capacity.migrated_db(pg, rows_db)
                                capacity.load_parts(pg, rows_db, cap.parts, 1, cap.stored_flows)
                            sec["layouts"] = layout.bench_layouts(pg, rows_db, layout_rows,
                                                                  layout_repeats, log,
                                                                  other=OTHER.between)
                        except (BenchError, ImportError) as e:
                            cfg["layout_err"] = f"layout section failed: {e}"
                            log(cfg["layout_err"])
                    if rows_db:
                        pg.query(f"DROP DATABASE IF EXISTS {rows_db}")
                else:
                    cfg["copy_err"] = "COPY limit: nfpg had no step that kept up"
            for s in sec["steps"]:
                capacity.drop_parts(s)

        if "nfacctd" in only:
            if shutil.which("nfacctd") is None:
                sec["acct_err"] = "nfacctd is not installed (apt-get install pmacct)."
            else:
                try:
                    sec["acct"] = capacity.nfacctd_ramp(pg, work, acct_rates, dur, tries=tries)
                except BenchError as e:
                    sec["acct_err"] = f"nfacctd run failed: {e}"
                    log(sec["acct_err"])

        if "cpu" in only:
            log(f"CPU per datagram at {args.cpu_rate} datagrams/s: nfpg --sink null and nfcapd")
            sec["cpu"] = capacity.cpu_section(work, args.cpu_rate, cpu_dur, cpu_rounds)
            if shutil.which("nfcapd") is None:
                cfg["notes"].append("nfcapd/nfdump not installed: no nfcapd figures.")

        if "scaling" in only:
            log("scaling: shards (null sink)")
            sec["shards"] = capacity.shard_scaling(work, shard_rates, cpu_dur)
            if "nfpg" in only and sec.get("steps"):
                top = max(s.rate for s in sec["steps"])
                w_rate = int(max(top, (cap.rate if cap else 0) * 1.25))
                sec["writers"] = capacity.writer_scaling(pg, work, w_rate, dur, [1, 2, 4, 8])

        if "v9" in only:
            v9_rates = [int(x) for x in args.v9_rates.split(",")] if args.v9_rates else rates
            sec["v9"] = capacity.nfpg_ramp(pg, work, v9_rates, dur, version=9, label="v",
                                           tries=tries)
            for s_ in sec["v9"]:
                if s_.db:
                    pg.query(f"DROP DATABASE IF EXISTS {s_.db}")

        if "replay" in only:
            if args.replay_rate:
                rrate, cfg["replay_rate_from"] = args.replay_rate, "--replay-rate"
            elif args.quick:
                rrate, cfg["replay_rate_from"] = 2000, "the --quick default"
            elif cap:
                # At most the rate whose outage fits nfpg's default spool (--spool-max) with a
                # fifth to spare, rounded down to 1,000 datagrams/s.
                fits = int(SPOOL_MAX_DEFAULT * 0.8 / (SPOOL_BYTES_PER_FLOW * RECORDS
                                                      * (args.outage or 60.0)) // 1000 * 1000)
                if cap.rate <= fits:
                    rrate, cfg["replay_rate_from"] = cap.rate, "nfpg's capacity rate above"
                else:
                    rrate, cfg["replay_rate_from"] = fits, (
                        "the highest rate, in thousands of datagrams/s, whose outage fills at "
                        "most 80 % of nfpg's default 10 GiB spool (nfpg's capacity rate above "
                        "would fill it)")
            else:
                rrate, cfg["replay_rate_from"] = 10000, "the default (no capacity measured)"
            outage = args.outage or (10.0 if args.quick else 60.0)
            try:
                replay = bench_replay(pg, work, rrate, outage)
                replay_err = ""
            except ReplaySkipped as e:
                replay_err = str(e)
                log(f"replay: {e}")
            except BenchError as e:
                replay_err = f"replay run failed: {e}"
                log(replay_err)
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
        rmem.restore()
        if keep:
            log(f"logs kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)

    cfg["notes"] += [
        "Each database step is a fresh database, so PostgreSQL starts every step with empty tables.",
    ]
    write_report(out, cmdline, info, cfg, sec, time.monotonic() - t_start, replay, replay_err)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
