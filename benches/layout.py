"""What the flows table's row layout costs PostgreSQL's ingest (issue 12, "The database ceiling").

Imported by benches/e2e.py; Python 3.11 standard library only.

    results = bench_layouts(pg, db, rows, repeats, log)
    write_layout_section(f, results, rows, repeats)

`pg` is e2e.py's `Postgres` (query/script/timed and `files`, a directory the server user reads
and writes), `db` a database in which nfpg has stored v5 flows in netflow.flows.

Method: PostgreSQL's own server-side `COPY table (columns) FROM 'file' (FORMAT binary)`, i.e. its
parse + insert cost alone, without client or network. The same `rows` rows (nfpg's stored
flows, repeated when it stored fewer) are put once into a source table in nfpg's types; each
variant's COPY file is exported from it with `COPY (SELECT <the variant's conversion>) TO file
(FORMAT binary)`. After one untimed warm-up COPY, round robin over the variants (forward, then
backward, so a slow patch of a shared machine touches all of them alike), `repeats` rounds
of: TRUNCATE, CHECKPOINT, timed COPY (wall time, and the backend's CPU time where the server
lets it read /proc/self), row count check, sizes, TRUNCATE again (only one variant's rows on
disk at a time). After its last round each variant's rows are converted back to nfpg's types
and compared with the source (count and a sum of per-row hashes): a variant that claims to
lose nothing is checked on these rows.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

# The columns of nfpg's v5 COPY (src/store/copy.rs, Shape::BasicFlagged): the 25 a v5 record
# fills, sampling_source and time_suspect (true or NULL). The first 26 alone are Shape::Basic:
# the variant "no_suspect_copy". Keep in step with copy.rs.
V5_COPY_COLUMNS = (
    "flow_start", "flow_end", "src_addr", "dst_addr", "next_hop", "src_port", "dst_port",
    "protocol", "tcp_flags", "tos", "input_if", "output_if", "packets", "bytes", "src_as",
    "dst_as", "src_mask", "dst_mask", "exporter", "engine_type", "engine_id",
    "sampling_interval", "sampling_mode", "netflow_version", "received_at", "sampling_source",
    "time_suspect",
)
ADDR_COLUMNS = ("src_addr", "dst_addr", "next_hop", "exporter")
PORT_COLUMNS = ("src_port", "dst_port")
U32_COLUMNS = ("input_if", "output_if", "src_as", "dst_as")
COUNTER_COLUMNS = ("packets", "bytes")
# Per-datagram (v5 header) or per-exporter values repeated on every flow row.
HEADER_COLUMNS = ("netflow_version", "engine_type", "engine_id", "sampling_mode",
                  "sampling_interval", "sampling_source")

PREFIX = "layout_"
SRC = PREFIX + "src"
HEADERS = PREFIX + "headers"


@dataclass
class LayoutResult:
    key: str                     # short name, also the table's suffix
    title: str                   # what the variant changes, one line
    loses: str                   # information lost / queries broken (markdown, one paragraph)
    rows: int
    copy_columns: int            # columns in the COPY
    table_columns: int           # columns of the table
    secs: list[float] = field(default_factory=list)      # one COPY per repeat (wall, psql \\timing)
    cpu: list[float] = field(default_factory=list)       # the COPY backend's CPU seconds, per repeat
    other: list[float | None] = field(default_factory=list)  # other load during each COPY
    heap_bytes: int = 0          # main fork of the table (its partitions), after a COPY
    total_bytes: int = 0         # pg_total_relation_size over the partitions: heap, indexes, FSM/VM
    file_bytes: int = 0          # the binary COPY file
    roundtrip: str = ""          # "identical", "identical except …", or what differed
    readers: list[str] = field(default_factory=list)   # views/functions naming changed columns
    server: str = ""             # PostgreSQL version and the settings that matter here
    error: str = ""              # why the variant was not measured

    @property
    def rates(self) -> list[float]:
        return [self.rows / s for s in self.secs if s > 0]

    @property
    def cpu_rates(self) -> list[float]:
        """Rows per CPU-second of the backend that ran the COPY (not slowed by other load)."""
        return [self.rows / s for s in self.cpu if s > 0]

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_rates) if self.cpu_rates else 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.rates else 0.0

    @property
    def min(self) -> float:
        return min(self.rates) if self.rates else 0.0

    @property
    def max(self) -> float:
        return max(self.rates) if self.rates else 0.0

    def per_row(self, n: int) -> float:
        return n / self.rows if self.rows else 0.0


# --------------------------------------------------------------------------- variants


@dataclass
class _Col:
    name: str
    type: str
    notnull: bool
    out: str | None        # expression over the source row `s` (None: not in the COPY)
    back: str | None       # expression giving nfpg's value back (None: lost)


@dataclass
class _Variant:
    key: str
    title: str
    loses: str
    cols: list[_Col]
    partitioned: bool = True
    brin: str = "pair"            # BRIN: "pair" (one over both times), "two" (one each), "none"
    back_from: str = "{t} v"        # FROM of the round-trip check ({t}: the variant table)
    changed: tuple[str, ...] = ()   # nfpg columns retyped or dropped (for the readers list)
    needs_headers: bool = False


def _base_cols(pg, db: str, schema: str) -> list[_Col]:
    out = pg.query(
        "SELECT attname || '|' || format_type(atttypid, atttypmod) || '|' || attnotnull "
        f"FROM pg_attribute WHERE attrelid = '{schema}.flows'::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum", db=db)
    cols = []
    for line in out.splitlines():
        if not line.strip():
            continue
        name, typ, nn = line.strip().split("|")
        incopy = name in V5_COPY_COLUMNS
        cols.append(_Col(name, typ, nn == "t", f"s.{name}" if incopy else None,
                         f"v.{name}" if incopy else None))
    missing = [c for c in V5_COPY_COLUMNS if c not in {x.name for x in cols}]
    if missing:
        raise RuntimeError(f"{schema}.flows has no column {', '.join(missing)}: "
                           f"layout.V5_COPY_COLUMNS is out of date")
    return cols


def _retype(cols: list[_Col], names, typ: str, out: str, back: str) -> list[_Col]:
    """`out`/`back`: templates over {c} (the source's / the variant's column)."""
    res = []
    for c in cols:
        if c.name in names:
            c = _Col(c.name, typ, c.notnull,
                     out.format(c=f"s.{c.name}") if c.out else None,
                     back.format(c=f"v.{c.name}") if c.out else None)
        res.append(c)
    return res


def _drop(cols: list[_Col], names) -> list[_Col]:
    return [c for c in cols if c.name not in names]


def _not_copied(cols: list[_Col], names) -> list[_Col]:
    """Kept in the table, left out of the COPY (NULL)."""
    return [_Col(c.name, c.type, c.notnull, None, f"v.{c.name}") if c.name in names else c
            for c in cols]


_ALIGN = {"timestamp with time zone": 0, "bigint": 0, "integer": 1, "smallint": 2,
          "boolean": 3}


def _aligned(cols: list[_Col]) -> list[_Col]:
    """Widest fixed-size types first, variable-size (inet, bytea) last: no alignment padding."""
    return sorted(cols, key=lambda c: (_ALIGN.get(c.type, 4), 0 if c.out else 1))


# Conversions. IPv4 as an unsigned 32-bit number is (addr - '0.0.0.0'); int4 stores it shifted
# by -2^31 (order kept, so ranges and prefixes stay ranges). An IPv6 address fails the
# conversion (inet - inet of different families is an error), so these variants need IPv4 data.
A_INT4 = ("integer", "(({c} - '0.0.0.0'::inet) - 2147483648)::int4",
          "('0.0.0.0'::inet + ({c}::int8 + 2147483648))")
A_INT8 = ("bigint", "({c} - '0.0.0.0'::inet)", "('0.0.0.0'::inet + {c})")
A_BYTEA = ("bytea", "substring(int8send({c} - '0.0.0.0'::inet) from 5 for 4)",
           "('0.0.0.0'::inet + ((get_byte({c}, 0)::int8 << 24) | (get_byte({c}, 1)::int8 << 16)"
           " | (get_byte({c}, 2)::int8 << 8) | get_byte({c}, 3)::int8))")
P_INT2 = ("smallint", "({c} - 32768)::int2", "({c}::int4 + 32768)")
U_INT4 = ("integer", "({c} - 2147483648)::int4", "({c}::int8 + 2147483648)")


def _header_variant(cols: list[_Col]) -> list[_Col]:
    """The per-datagram header values replaced by one int4 key into layout_headers."""
    res = _drop(cols, HEADER_COLUMNS)
    key = ("(SELECT h.header_id FROM " + HEADERS + " h WHERE (" +
           ", ".join(f"h.{c}" for c in HEADER_COLUMNS) + ") IS NOT DISTINCT FROM (" +
           ", ".join(f"s.{c}" for c in HEADER_COLUMNS) + "))")
    # before received_at, as the dropped columns were
    i = next(i for i, c in enumerate(res) if c.name == "received_at")
    res.insert(i, _Col("header_id", "integer", True, key, None))
    return res


def _variants(base: list[_Col]) -> list[_Variant]:
    b = base
    views_star = ("`flows_with_app` selects `f.*`: it must be recreated (its columns change with "
                  "the table's)")
    addr_q = ("every query comparing or returning `src_addr`/`dst_addr`/`next_hop`/`exporter` "
              "as inet (`top_talkers`, `anomalies`, the aggregates' inet keys, `netflow_flows`' "
              "`src_ip`/`dst_ip`, `host(src_addr)` in the dashboard, the address B-trees of "
              "closed partitions) needs a conversion or a view that converts back")
    v = [
        _Variant("baseline", "nfpg's layout: the v5 COPY's 27 columns into netflow.flows' "
                 "types, partitioned by day of received_at + default partition, "
                 "BRIN(received_at, flow_start)", "nothing (the reference)", b),
        _Variant("two_brin", "nfpg's layout before migration 0017: BRIN(flow_start) and "
                 "BRIN(received_at), one index per time",
                 "nothing (a multicolumn BRIN index serves a range on either column)", b,
                 brin="two"),
        _Variant("addr_int4", "src/dst/next_hop/exporter as int4 (IPv4 - 2^31) instead of inet",
                 "nothing for IPv4 (the number is the address; nfpg stores /32, the prefix "
                 "length inet carries is constant). IPv6 does not fit: an IPv6 exporter (nfpg "
                 "listening on ::) or v9/IPFIX IPv6 flows need a second column (e.g. a nullable "
                 "bytea(16), or int8 pairs) or a separate table; the post_nat_* addresses "
                 "likewise. The -2^31 shift keeps order, so ranges/prefixes stay ranges. "
                 "Breaks: " + addr_q + ".",
                 _retype(b, ADDR_COLUMNS, *A_INT4), changed=ADDR_COLUMNS),
        _Variant("addr_int8", "src/dst/next_hop/exporter as int8 (the IPv4 number) instead of inet",
                 "as addr_int4 (IPv6 needs another column), without the shift: the value is "
                 "the address as an unsigned number. Breaks: " + addr_q + ".",
                 _retype(b, ADDR_COLUMNS, *A_INT8), changed=ADDR_COLUMNS),
        _Variant("addr_bytea", "src/dst/next_hop/exporter as bytea (4 bytes for IPv4, 16 for "
                 "IPv6) instead of inet",
                 "nothing for IPv4 or IPv6 (the length tells the family; the prefix length "
                 "inet carries is constant /32 or /128 in nfpg's rows). Breaks: " + addr_q +
                 "; and no inet operators (<<, masklen, host) on the column.",
                 _retype(b, ADDR_COLUMNS, *A_BYTEA), changed=ADDR_COLUMNS),
        _Variant("narrow_if_as", "ports as int2 (port - 32768) instead of int4; input_if, "
                 "output_if, src_as, dst_as as int4 (value - 2^31) instead of int8",
                 "nothing: ports are u16 in every format, interfaces (ingressInterface) and AS "
                 "numbers (4-byte AS) u32, and the shifts keep order. int2/int4 are signed, so "
                 "without the shift ports above 32767 and values above 2^31-1 would not fit "
                 "(a plain cast loses them). Breaks: every reader of the ports (the application "
                 "name: `application_name()`, `flows_with_app`, `netflow_flows`, the aggregates, "
                 "`dst_port < 1024`) and of input/output_if/src/dst_as must add the shift back "
                 "(a view can).",
                 _retype(_retype(b, PORT_COLUMNS, *P_INT2), U32_COLUMNS, *U_INT4),
                 changed=PORT_COLUMNS + U32_COLUMNS),
        _Variant("narrow_all", "narrow_if_as, and packets, bytes as int4 (value - 2^31) "
                 "instead of int8",
                 "nothing for v5 (dPkts/dOctets are u32). v9/IPFIX counters are u64 "
                 "(octetDeltaCount, packetDeltaCount): values ≥ 2^32 would be lost, so those "
                 "rows would need an int8 column (or a second table). Breaks: as narrow_if_as, "
                 "and every sum of packets/bytes (`top_talkers`, `anomalies`, the aggregates, "
                 "the dashboard) must add 2^31 per row.",
                 _retype(_retype(_retype(b, PORT_COLUMNS, *P_INT2), U32_COLUMNS, *U_INT4),
                         COUNTER_COLUMNS, *U_INT4),
                 changed=PORT_COLUMNS + U32_COLUMNS + COUNTER_COLUMNS),
        _Variant("no_header", "without netflow_version, engine_type, engine_id, sampling_mode, "
                 "sampling_interval, sampling_source (values of the datagram header / exporter)",
                 "the per-flow values, unless kept elsewhere: per exporter (the exporters table "
                 "has version and sampling, but only the latest, so a change of sampling would "
                 "rewrite history) or per datagram (needs a key per row: see header_key). "
                 "Breaks: the sampling upscale (`est_*` = counter × greatest(sampling_interval, "
                 "1)) in the aggregates and the dashboard's top lists, `netflow_flows`."
                 "netflow_version. The measure of the most these columns can cost.",
                 _drop(b, HEADER_COLUMNS), changed=HEADER_COLUMNS),
        _Variant("header_key", "the same six columns replaced by one int4 key into a "
                 "dictionary table of distinct (version, engine type/id, sampling mode/interval/"
                 "source) tuples",
                 "nothing (a join gives every value back): the writer would assign keys as it "
                 "now does exporter rows, from a small cache. Breaks: readers of the six "
                 "columns need the join (a view can hide it).",
                 _header_variant(b), back_from="{t} v JOIN " + HEADERS + " h USING (header_id)",
                 changed=HEADER_COLUMNS, needs_headers=True),
        _Variant("no_suspect_copy", "the v5 COPY without its 27th column, time_suspect (the "
                 "column stays in the table, NULL): the 26-column shape (Shape::Basic)",
                 "nothing for rows that are not time-suspect; a batch with a flagged row still "
                 "needs the 27-column shape (or the flag stored elsewhere).",
                 _not_copied(b, ("time_suspect",))),
        _Variant("no_suspect_col", "the table without the time_suspect column (26-column COPY)",
                 "the flag: flows whose clock lies could no longer be left out of the analysis "
                 "unless flagged elsewhere (e.g. a separate table of suspect rows, or sent to "
                 "the default partition). Breaks: `top_talkers`, `anomalies`, "
                 "`add_to_flow_aggregates` and the dashboard filter on `time_suspect IS NOT "
                 "TRUE`.", _drop(b, ("time_suspect",)), changed=("time_suspect",)),
        _Variant("no_v9_cols", "the table without the ten v9/IPFIX-only columns (source_id … "
                 "post_nat_dst_port; always NULL in v5 rows)",
                 "the v9/IPFIX fields (they would need their own table). Breaks: "
                 "`netflow_flows.vlan_id`, the v9/IPFIX writer.",
                 [c for c in b if c.out or c.name == "time_suspect"],
                 changed=tuple(c.name for c in b if not c.out and c.name != "time_suspect")),
        _Variant("aligned", "nfpg's columns reordered: 8-byte types, then 4, 2, 1-byte, inet "
                 "last (no alignment padding)",
                 "nothing; no query names columns by position, but " + views_star +
                 " and `SELECT *` changes order.", _aligned(b)),
        _Variant("plain_brin", "not partitioned: a plain table with BRIN(received_at, "
                 "flow_start)",
                 "nothing stored; retention by partition drop (`drop_flow_partitions_older_than`) "
                 "and the B-trees on closed day partitions (`index_closed_flow_partitions`) "
                 "need partitions: retention would be a DELETE (+ VACUUM).", b, partitioned=False),
        _Variant("plain_noindex", "not partitioned, no index", "as plain_brin, and time "
                 "ranges are full scans.", b, partitioned=False, brin="none"),
        _Variant("part_noindex", "partitioned as nfpg's, without any index",
                 "nothing stored; time ranges within a day partition are full scans of it "
                 "(received_at still prunes partitions).", b, brin="none"),
        _Variant("combined", "aligned order + addresses int4 + narrow_if_as + header_key + "
                 "no v9 columns: the lossless-for-v5/IPv4 changes together",
                 "what addr_int4, narrow_if_as, header_key and no_v9_cols lose and break, "
                 "together.",
                 _aligned(_header_variant(_retype(_retype(_retype(
                     [c for c in b if c.out or c.name == "time_suspect"],
                     ADDR_COLUMNS, *A_INT4), PORT_COLUMNS, *P_INT2), U32_COLUMNS, *U_INT4))),
                 back_from="{t} v JOIN " + HEADERS + " h USING (header_id)",
                 changed=ADDR_COLUMNS + PORT_COLUMNS + U32_COLUMNS + HEADER_COLUMNS,
                 needs_headers=True),
    ]
    return v


# --------------------------------------------------------------------------- running


def _one(pg, sql: str, db: str) -> str:
    return pg.query(sql, db=db).strip()


def _ddl(var: _Variant, t: str, days: list[str]) -> str:
    cols = ",\n  ".join(f"{c.name} {c.type}{' NOT NULL' if c.notnull else ''}" for c in var.cols)
    sql = [f"DROP TABLE IF EXISTS {t};", f"CREATE TABLE {t} (\n  {cols}\n)"
           + (" PARTITION BY RANGE (received_at);" if var.partitioned else ";")]
    if var.partitioned:
        for d in days:
            sql.append(f"CREATE TABLE {t}_p{d.replace('-', '')} PARTITION OF {t} FOR VALUES FROM "
                       f"('{d} 00:00:00+00') TO ((('{d}'::date + 1)::timestamp) AT TIME ZONE 'UTC');")
        sql.append(f"CREATE TABLE {t}_default PARTITION OF {t} DEFAULT;")
    if var.brin == "pair":
        sql.append(f"CREATE INDEX ON {t} USING brin (received_at, flow_start);")
    elif var.brin == "two":
        sql.append(f"CREATE INDEX ON {t} USING brin (flow_start);")
        sql.append(f"CREATE INDEX ON {t} USING brin (received_at);")
    return "\n".join(sql)


def _hash_sql(exprs: list[str], frm: str) -> str:
    return (f"SELECT count(*) || ' ' || coalesce(sum(hashtextextended(ROW({', '.join(exprs)})::text, 0)), 0) "
            f"FROM {frm}")


def _cpu_source(pg, db: str) -> str | None:
    """A /proc file of the backend's own CPU time that the server lets us read
    (pg_read_file: superuser or pg_read_server_files), or None."""
    for path in ("/proc/self/schedstat", "/proc/self/stat"):
        try:
            if _cpu_parse(path, pg.query(f"SELECT pg_read_file('{path}')", db=db)) is not None:
                return path
        except (RuntimeError, OSError):
            continue
    return None


def _cpu_parse(path: str, text: str) -> float | None:
    """Seconds on CPU from /proc/self/schedstat (ns) or /proc/self/stat (utime+stime ticks)."""
    try:
        if path.endswith("schedstat"):
            return int(text.split()[0]) / 1e9
        rest = text[text.rfind(")") + 2:].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except (ValueError, IndexError):
        return None


def _timed_copy(pg, db: str, sql: str, cpu_path: str | None) -> tuple[float, float | None]:
    """One statement in one session: its wall time (psql's \\timing) and, where the server
    lets us read /proc/self of its backend, the backend's CPU time over it."""
    if cpu_path is None:
        return pg.timed(sql, db=db), None
    rd = f"SELECT '@cpu ' || replace(pg_read_file('{cpu_path}'), E'\\n', ' ');"
    out = pg.script(f"{rd}\n\\timing on\n{sql}\n\\timing off\n{rd}\n", db=db)
    times = re.findall(r"Time: ([0-9.]+) ms", out)
    cpus = [_cpu_parse(cpu_path, line[5:]) for line in out.splitlines() if line.startswith("@cpu ")]
    if not times or len(cpus) != 2 or None in cpus:
        raise RuntimeError(f"no timing in psql output: {out[-500:]}")
    return float(times[-1]) / 1000.0, cpus[1] - cpus[0]


def _readers(pg, db: str, schema: str, cols: tuple[str, ...]) -> list[str]:
    """Views (by their recorded dependencies) and functions of `schema` (by a word match in
    their source, which also names flows) that read any of `cols` of schema.flows."""
    if not cols:
        return []
    arr = "ARRAY[" + ", ".join(f"'{c}'" for c in cols) + "]"
    views = pg.query(
        "SELECT DISTINCT v.oid::regclass::text FROM pg_depend d "
        "JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class "
        "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
        f"WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = '{schema}.flows'::regclass "
        f"AND v.oid <> '{schema}.flows'::regclass AND a.attname = ANY ({arr}) ORDER BY 1", db=db)
    funcs = pg.query(
        "SELECT DISTINCT p.proname || '()' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        f"CROSS JOIN unnest({arr}) AS c(name) WHERE n.nspname = '{schema}' "
        "AND p.prosrc ~ '\\mflows\\M' AND p.prosrc ~ ('\\m' || c.name || '\\M') ORDER BY 1", db=db)
    return [x.strip() for x in (views + funcs).splitlines() if x.strip()]


def bench_layouts(pg, db: str, rows: int, repeats: int, log, *, schema: str = "netflow",
                  only: list[str] | None = None,
                  other: Callable[[float, float], float | None] | None = None,
                  check: bool = True) -> list[LayoutResult]:
    """Times PostgreSQL's binary COPY FROM a server-side file into each layout variant.

    only: variant keys to run (the baseline always runs); other: e.g. e2e's OTHER.between,
    the other load (cores) during each COPY; check: the round-trip comparison after the last
    repeat (one scan of the variant and of the source)."""
    repeats = max(1, repeats)
    n = int(_one(pg, f"SELECT count(*) FROM {schema}.flows", db))
    if n == 0:
        raise RuntimeError(f"{db}: {schema}.flows is empty")
    k = max(1, -(-rows // n))
    base = _base_cols(pg, db, schema)
    variants = _variants(base)
    if only:
        unknown = set(only) - {v.key for v in variants}
        if unknown:
            raise RuntimeError(f"unknown layout variant(s): {', '.join(sorted(unknown))}")
        variants = [v for v in variants if v.key == "baseline" or v.key in only]
    server = _one(pg, "SELECT 'PostgreSQL ' || current_setting('server_version') || ', wal_level ' "
                  "|| current_setting('wal_level') || ', synchronous_commit ' || "
                  "current_setting('synchronous_commit') || ', shared_buffers ' || "
                  "current_setting('shared_buffers') || ', max_wal_size ' || "
                  "current_setting('max_wal_size')", db)
    copy_list = ", ".join(V5_COPY_COLUMNS)
    cpu_path = _cpu_source(pg, db)
    src = f"{schema}.flows" if k == 1 else f"{schema}.flows, generate_series(1, {k}) AS rep(i)"
    log(f"layouts: source table of {rows} rows ({n} stored, x{k}), {len(variants)} variants, "
        f"{repeats} rounds")
    results: list[LayoutResult] = []
    files: dict[str, Path] = {}
    tables: list[str] = []
    try:
        pg.script(f"DROP TABLE IF EXISTS {SRC}; DROP TABLE IF EXISTS {HEADERS};\n"
                  f"CREATE TABLE {SRC} AS SELECT {copy_list} FROM {src} LIMIT {rows};\n"
                  f"CREATE TABLE {HEADERS} AS SELECT (row_number() OVER ())::int4 AS header_id, "
                  f"{', '.join(HEADER_COLUMNS)} FROM (SELECT DISTINCT {', '.join(HEADER_COLUMNS)} "
                  f"FROM {SRC}) d;\nANALYZE {SRC};", db=db)
        got = int(_one(pg, f"SELECT count(*) FROM {SRC}", db))
        if got != rows:
            raise RuntimeError(f"source table has {got} rows, expected {rows}")
        days = _one(pg, "SELECT string_agg(d::date::text, ' ') FROM generate_series("
                    f"(SELECT date_trunc('day', min(received_at) AT TIME ZONE 'UTC') FROM {SRC}),"
                    f"(SELECT date_trunc('day', max(received_at) AT TIME ZONE 'UTC') FROM {SRC}),"
                    " interval '1 day') d", db).split()
        ipv6 = int(_one(pg, f"SELECT count(*) FROM {SRC} WHERE " +
                        " OR ".join(f"family({c}) = 6" for c in ADDR_COLUMNS), db))
        headers = int(_one(pg, f"SELECT count(*) FROM {HEADERS}", db))
        per_exp = _one(pg, "SELECT coalesce(max(c), 0) FROM (SELECT count(DISTINCT ROW("
                       f"{', '.join(HEADER_COLUMNS)})) AS c FROM {SRC} GROUP BY exporter) x", db)
        log(f"layouts: {len(days)} day(s), {ipv6} rows with an IPv6 address, {headers} distinct "
            f"header tuples (at most {per_exp} per exporter)")

        # Prepare every variant: table, COPY file (exported once), readers.
        prepared = []
        for var in variants:
            t = PREFIX + var.key
            incopy = [c for c in var.cols if c.out]
            r = LayoutResult(var.key, var.title, var.loses, rows, len(incopy), len(var.cols),
                             server=server)
            if var.key in ("header_key", "combined"):
                r.loses += (f" In this run: {headers} distinct tuples, at most {per_exp} per "
                            f"exporter.")
            if var.key == "no_header":
                r.loses += (f" In this run the six values were constant per exporter: "
                            f"{'yes' if per_exp == '1' else 'no, up to ' + per_exp + ' tuples'}.")
            results.append(r)
            try:
                r.readers = _readers(pg, db, schema, var.changed)
                pg.script(_ddl(var, t, days), db=db)
                tables.append(t)
                path = pg.files / f"{t}.bin"
                exprs = ", ".join(c.out for c in incopy)
                pg.query(f"COPY (SELECT {exprs} FROM {SRC} s) TO '{path}' (FORMAT binary)", db=db)
                files[var.key] = path
                try:
                    r.file_bytes = path.stat().st_size
                except OSError:
                    r.file_bytes = int(_one(pg, f"SELECT (pg_stat_file('{path}')).size", db))
                prepared.append((var, t, r, path, ", ".join(c.name for c in incopy)))
            except (RuntimeError, OSError, ValueError) as e:
                r.error = str(e).strip().splitlines()[-1][:300] if str(e).strip() else repr(e)
                log(f"layouts: {var.key} not measured: {r.error}")

        # The exported files written back to disk now, not during the timed COPYs; one untimed
        # COPY (the baseline's) first, so the first timed one is not the server's first.
        os.sync()
        for var, t, r, path, cols in prepared[:1]:
            try:
                pg.query(f"COPY {t} ({cols}) FROM '{path}' (FORMAT binary)", db=db)
                pg.query(f"TRUNCATE {t}", db=db)
            except RuntimeError as e:
                log(f"layouts: warm-up COPY failed: {e}")
        for rnd in range(repeats):
            # forward, then backward, and so on: a drift of the machine's speed during the run
            # is shared out evenly rather than falling on the variants at one end
            for var, t, r, path, cols in (prepared if rnd % 2 == 0 else prepared[::-1]):
                if r.error:
                    continue
                try:
                    pg.query(f"TRUNCATE {t}", db=db)
                    pg.query("CHECKPOINT", db=db)
                    t0 = time.monotonic()
                    s, cpu = _timed_copy(pg, db, f"COPY {t} ({cols}) FROM '{path}' (FORMAT binary);",
                                         cpu_path)
                    t1 = time.monotonic()
                    got = int(_one(pg, f"SELECT count(*) FROM {t}", db))
                    if got != rows:
                        raise RuntimeError(f"{got} rows after COPY, expected {rows}")
                    r.secs.append(s)
                    if cpu is not None:
                        r.cpu.append(cpu)
                    r.other.append(other(t0, t1) if other else None)
                    r.heap_bytes, r.total_bytes = (int(x) for x in _one(
                        pg, "SELECT coalesce(sum(pg_relation_size(relid)), 0) || ' ' || "
                        "coalesce(sum(pg_total_relation_size(relid)), 0) "
                        f"FROM (SELECT relid FROM pg_partition_tree('{t}') WHERE isleaf "
                        f"UNION SELECT '{t}'::regclass) x", db).split())
                    log(f"  layout {var.key} round {rnd + 1}: {rows} rows in {s:.3f}s = "
                        f"{rows / s:,.0f} rows/s"
                        + (f", backend CPU {cpu:.3f}s = {rows / cpu:,.0f} rows/CPU-s" if cpu else "")
                        + f", {r.total_bytes / rows:.1f} B/row on disk")
                    if rnd == repeats - 1 and check:
                        r.roundtrip = _roundtrip(pg, db, var, t)
                except (RuntimeError, OSError, ValueError) as e:
                    r.error = str(e).strip().splitlines()[-1][:300] if str(e).strip() else repr(e)
                    log(f"layouts: {var.key} failed: {r.error}")
                finally:
                    try:  # one variant's rows on disk at a time
                        pg.query(f"TRUNCATE {t}", db=db)
                    except RuntimeError:
                        pass
    finally:
        for t in tables:
            try:
                pg.query(f"DROP TABLE IF EXISTS {t}", db=db)
            except RuntimeError:
                pass
        try:
            pg.query(f"DROP TABLE IF EXISTS {SRC}; DROP TABLE IF EXISTS {HEADERS}", db=db)
        except RuntimeError:
            pass
        for p in files.values():
            try:
                p.unlink()
            except OSError:
                pass
    return results


def _roundtrip(pg, db: str, var: _Variant, t: str) -> str:
    """Converts the variant's rows back to nfpg's values and compares them with the source
    (row count and the sum of a 64-bit hash of each row's text): 'identical', 'identical
    except …' (columns the variant does not keep) or what differed."""
    by = {c.name: c for c in var.cols}
    keep, lost = [], []
    for name in V5_COPY_COLUMNS:
        c = by.get(name)
        if c is not None and c.back is not None:
            keep.append((name, c.back))
        elif var.needs_headers and name in HEADER_COLUMNS:
            keep.append((name, f"h.{name}"))
        else:
            lost.append(name)
    mine = _one(pg, _hash_sql([e for _, e in keep], var.back_from.format(t=t)), db)
    ref = _one(pg, _hash_sql([f"s.{n}" for n, _ in keep], f"{SRC} s"), db)
    if mine != ref:
        return f"DIFFERS (count hash {mine} vs source {ref})"
    return "identical" + (f" except {', '.join(lost)} (not stored)" if lost else "")


# --------------------------------------------------------------------------- report


def _fmt(x: float) -> str:
    return f"{x:,.0f}"


def write_layout_section(f, results: list[LayoutResult], rows: int, repeats: int) -> None:
    """The markdown section on the layout variants, written to the open file `f`."""
    a = lambda s="": f.write(s + "\n")  # noqa: E731
    a("## The database ceiling: the flows table's row layout")
    a("")
    if not results:
        a("Not measured.")
        a("")
        return
    base = next((r for r in results if r.key == "baseline" and r.rates), None)
    server = next((r.server for r in results if r.server), "")
    a("What in nfpg's row layout costs PostgreSQL ingest time. Method: PostgreSQL's own "
      "server-side `COPY table (columns) FROM 'file' (FORMAT binary)` — its parse + insert cost "
      "alone, one stream, no client and no network. The same "
      f"{rows:,} rows (the v5 flows nfpg stored in this run, repeated where it stored fewer) were "
      "put into a source table in nfpg's types, and each variant's file exported from it once "
      "with `COPY (SELECT <the variant's conversion> …) TO file (FORMAT binary)`. "
      "After one untimed warm-up COPY, "
      f"{repeats} round{'s' if repeats != 1 else ''} over all variants in turn (round robin, "
      "every other round in reverse order), each COPY after TRUNCATE and CHECKPOINT, its time "
      "from psql's `\\timing`, the row count "
      "checked after each. All variants ran in one run on the same server"
      + (f" ({server})" if server else "") + ". "
      "Partitioned variants are partitioned by day of received_at with a default partition and "
      "have BRIN(received_at, flow_start), as netflow.flows, unless the variant is about "
      "that. Bytes per row: on disk, the table's partitions with their indexes "
      "(pg_total_relation_size; heap alone in brackets) after a COPY; in the COPY file, its size "
      "/ rows. Round trip: after the last round the variant's rows are converted back to nfpg's "
      "values (a join for the header key) and compared with the source rows (count and the sum "
      "of a 64-bit hash of each row's text).")
    a("")
    any_other = any(o is not None for r in results for o in r.other)
    any_cpu = any(r.cpu for r in results)
    if any_cpu:
        a("Besides the wall time, the CPU time of the server process that ran each COPY (its "
          "`/proc/self/schedstat`, read with `pg_read_file` just before and after the COPY in the "
          "same session): rows per backend CPU-second leaves out the time the backend waited for a "
          "core, but not the slowdown from sharing caches, a core's sibling thread or (in a "
          "virtual machine) the host with other work, so it too varies with the other load.")
        a("")
    head = ("| variant | COPY cols / table cols | median rows/s | min–max rows/s | × baseline "
            + ("| median rows/CPU-s | min–max rows/CPU-s | × baseline (CPU) " if any_cpu else "")
            + "| B/row on disk (heap) | B/row COPY file | round trip |"
            + (" other load (cores) |" if any_other else ""))
    a(head)
    a("|" + "---|" * (head.count("|") - 1))
    for r in results:
        if r.error or not r.rates:
            a(f"| `{r.key}` | {r.copy_columns} / {r.table_columns} | not measured: "
              f"{r.error.replace('|', '/') or 'no run'} |" + " |" * (head.count("|") - 4))
            continue
        ratio = f"{r.median / base.median:.2f}" if base else "–"
        oth = ""
        if any_other:
            xs = [o for o in r.other if o is not None]
            oth = f" {max(xs):.2f} |" if xs else " – |"
        a(f"| `{r.key}` | {r.copy_columns} / {r.table_columns} | {_fmt(r.median)} | "
          f"{_fmt(r.min)}–{_fmt(r.max)} | {ratio} | "
          + ((f"{_fmt(r.cpu_median)} | {_fmt(min(r.cpu_rates))}–{_fmt(max(r.cpu_rates))} | "
              + (f"{r.cpu_median / base.cpu_median:.2f} | " if base and base.cpu_rates else "– | ")
              if r.cpu_rates else "– | – | – | ") if any_cpu else "")
          + f"{r.per_row(r.total_bytes):.1f} "
          f"({r.per_row(r.heap_bytes):.1f}) | {r.per_row(r.file_bytes):.1f} | {r.roundtrip or '–'} |"
          + oth)
    a("")
    a("What each variant changes, and what it would lose or break (readers: the views and "
      "functions of nfpg's migrations that name a changed column, from the server's catalog):")
    a("")
    for r in results:
        rd = f" Readers of the changed columns: {', '.join(f'`{x}`' for x in r.readers)}." \
            if r.readers else ""
        a(f"- `{r.key}`: {r.title}. Loses / breaks: {r.loses}{rd}")
    a("")
    if base:
        best = max((r for r in results if r.rates and r.key != "baseline"),
                   key=lambda r: r.median, default=None)
        if best:
            a(f"Baseline: {_fmt(base.median)} rows/s (median of {len(base.rates)}). Fastest other "
              f"variant by wall time: `{best.key}`, {best.median / base.median:.2f} × the "
              "baseline. A difference smaller than the spread of a variant's runs (min–max) "
              "is not a difference.")
        bestc = max((r for r in results if r.cpu_rates and r.key != "baseline"),
                    key=lambda r: r.cpu_median, default=None)
        if bestc and base.cpu_rates:
            a("")
            a(f"By backend CPU: baseline {_fmt(base.cpu_median)} rows/CPU-s; fastest other "
              f"`{bestc.key}`, {bestc.cpu_median / base.cpu_median:.2f} × the baseline.")
            a("")
