//! The analysis queries behind `nfpg top` and `nfpg anomalies`, returning typed rows (the
//! commands print them; a dashboard can reuse them as they are).
//!
//! **What is counted.** Flows that started in the window (`flow_start` at or after its start),
//! leaving out flows with `time_suspect` set. Every query also bounds `received_at` below by the
//! window's start, so only the day partitions of the window are read (a flow arrives after it
//! starts, so for exporters with sane clocks this changes nothing).
//!
//! **Sampling.** Counters are stored as exported; every figure comes twice: as stored
//! (`flows`, `packets`, `bytes`) and upscaled (`est_*` = counter × `greatest(sampling_interval,
//! 1)`), the same estimate the hourly aggregates keep. Rankings, shares and the anomaly
//! threshold use the estimates.
//!
//! **Where `top` reads from.** `--by port` and `--by as` are not in the hourly aggregates, and
//! always read raw flows. The other keys read, exactly (no hour rounding of the window):
//!
//! - the aggregates (`flow_aggregates_hourly`) for the whole hours of `flow_start` inside the
//!   window (from the first hour boundary at or after its start to the last one at or before
//!   now), which hold every flow that arrived before the aggregation watermark;
//! - raw flows for the rest: flows of those hours that arrived at or after the watermark (a
//!   minute or two of arrivals while the housekeeper keeps up) or in an arrival range the
//!   watermark passed and the housekeeper has not added yet (`flow_aggregates_pending`), and
//!   flows that started in the partial hours at both ends of the window.
//!
//! Each raw part is a plain range on `received_at` and `flow_start`, so partition pruning and
//! the BRIN index over both times keep the reading to what the window needs: a day's `top` reads 24 hours
//! of aggregates and about an hour of raw flows. All of it runs in one repeatable-read
//! snapshot, so a watermark moved by the housekeeper meanwhile cannot count a flow twice or
//! miss it. When the window holds no whole hour, or the aggregates do not reach into it (the
//! aggregation is off or behind), only raw flows are read. Both leave out flows with
//! `time_suspect` set; a difference from a raw-only count can come only from flows from a
//! clock ahead that arrived before the window started (the aggregates hold them by their
//! start hour; raw reads bound `received_at` too).
//!
//! **Anomalies** read raw flows of the window only: sources with more estimated flows than the
//! threshold, with how many distinct destinations and destination ports they reached (a scan
//! touches many of one or the other).

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use postgres::types::Type;
use postgres::{IsolationLevel, Row, Transaction};

use super::db::Schema;

/// Parses a duration: a whole number and a unit, `s`, `m`, `h`, `d` or `w`, or several such
/// parts (`30s`, `5m`, `1h30m`, `2d`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || format!("{s:?} is not a duration (e.g. 30s, 5m, 1h, 1h30m, 2d)");
    if t.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() {
        return Err(format!("{s:?}: the number needs a unit (s, m, h, d or w)"));
    }
    // Far beyond any retention, and keeps the interval arithmetic in PostgreSQL in range.
    if total == 0 || total > 100 * 365 * 86_400 {
        return Err(format!(
            "{s:?}: the duration must be above 0 and at most 100 years"
        ));
    }
    Ok(Duration::from_secs(total))
}

/// A duration written the way [`parse_duration`] reads it (`90m` → `1h30m`).
pub fn format_duration(d: Duration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, name) in [(86_400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
        if s >= unit {
            out.push_str(&format!("{}{name}", s / unit));
            s %= unit;
        }
    }
    out
}

/// What `nfpg top` groups by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TopBy {
    /// Source address.
    Src,
    /// Destination address.
    Dst,
    /// Source and destination address.
    Pair,
    /// Application name (by protocol and destination port, as in `app_names`).
    App,
    /// Exporter address.
    Exporter,
    /// Protocol and destination port (raw flows only).
    Port,
    /// Source AS (raw flows only).
    As,
}

impl TopBy {
    pub fn name(self) -> &'static str {
        match self {
            TopBy::Src => "src",
            TopBy::Dst => "dst",
            TopBy::Pair => "pair",
            TopBy::App => "app",
            TopBy::Exporter => "exporter",
            TopBy::Port => "port",
            TopBy::As => "as",
        }
    }

    /// What a row's key is, for headings ("sources").
    pub fn plural(self) -> &'static str {
        match self {
            TopBy::Src => "sources",
            TopBy::Dst => "destinations",
            TopBy::Pair => "source/destination pairs",
            TopBy::App => "applications",
            TopBy::Exporter => "exporters",
            TopBy::Port => "destination ports",
            TopBy::As => "source ASes",
        }
    }

    /// Whether the hourly aggregates carry this key.
    pub fn in_aggregates(self) -> bool {
        !matches!(self, TopBy::Port | TopBy::As)
    }

    /// The key columns (`k1`, `k2`) over raw flows `f` and over the aggregates `a`.
    fn key_sql(self) -> (&'static str, &'static str) {
        match self {
            TopBy::Src => ("f.src_addr AS k1", "a.src_addr AS k1"),
            TopBy::Dst => ("f.dst_addr AS k1", "a.dst_addr AS k1"),
            TopBy::Pair => (
                "f.src_addr AS k1, f.dst_addr AS k2",
                "a.src_addr AS k1, a.dst_addr AS k2",
            ),
            // The rule of add_to_flow_aggregates (0013), word for word, so both sides agree.
            TopBy::App => (
                "CASE
                     WHEN f.protocol IN (6, 17) THEN coalesce(
                         an.name,
                         CASE WHEN f.dst_port < 1024 THEN 'system-' ELSE 'user-' END || f.dst_port)
                     ELSE coalesce(pn.name, 'protocol-' || f.protocol)
                 END AS k1",
                "a.application_name AS k1",
            ),
            TopBy::Exporter => ("f.exporter AS k1", "a.exporter AS k1"),
            TopBy::Port => ("f.protocol AS k1, f.dst_port AS k2", ""),
            TopBy::As => ("f.src_as AS k1", ""),
        }
    }

    fn two_keys(self) -> bool {
        matches!(self, TopBy::Pair | TopBy::Port)
    }
}

impl fmt::Display for TopBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One row's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopKey {
    Src(IpAddr),
    Dst(IpAddr),
    Pair(IpAddr, IpAddr),
    /// `None`: a TCP/UDP flow without a destination port (v9/IPFIX records may lack one).
    App(Option<String>),
    Exporter(IpAddr),
    Port {
        protocol: i16,
        port: Option<i32>,
    },
    /// `None`: the record carries no AS.
    As(Option<i64>),
}

/// Short protocol names for port keys (`443/tcp`).
pub fn protocol_label(protocol: i16) -> String {
    match protocol {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        p => format!("proto-{p}"),
    }
}

impl fmt::Display for TopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopKey::Src(a) | TopKey::Dst(a) | TopKey::Exporter(a) => write!(f, "{a}"),
            TopKey::Pair(s, d) => write!(f, "{s} -> {d}"),
            TopKey::App(Some(n)) => f.write_str(n),
            TopKey::App(None) => f.write_str("(no port)"),
            TopKey::Port { protocol, port } => match port {
                Some(p) => write!(f, "{p}/{}", protocol_label(*protocol)),
                None => write!(f, "-/{}", protocol_label(*protocol)),
            },
            TopKey::As(Some(n)) => write!(f, "AS{n}"),
            TopKey::As(None) => f.write_str("(no AS)"),
        }
    }
}

impl TopKey {
    /// The key as JSON fields (`{"src": "10.0.0.1"}`, `{"protocol": 6, "port": 443}`).
    pub fn json_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::json;
        let mut m = serde_json::Map::new();
        match self {
            TopKey::Src(a) => {
                m.insert("src".into(), json!(a.to_string()));
            }
            TopKey::Dst(a) => {
                m.insert("dst".into(), json!(a.to_string()));
            }
            TopKey::Pair(s, d) => {
                m.insert("src".into(), json!(s.to_string()));
                m.insert("dst".into(), json!(d.to_string()));
            }
            TopKey::App(n) => {
                m.insert("app".into(), json!(n));
            }
            TopKey::Exporter(a) => {
                m.insert("exporter".into(), json!(a.to_string()));
            }
            TopKey::Port { protocol, port } => {
                m.insert("protocol".into(), json!(protocol));
                m.insert("port".into(), json!(port));
            }
            TopKey::As(n) => {
                m.insert("src_as".into(), json!(n));
            }
        }
        m
    }
}

/// Totals as stored and upscaled (`est_*` = counter × greatest(sampling_interval, 1)). Sums
/// are exact (PostgreSQL `numeric`, read as `i128`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub flows: i128,
    pub packets: i128,
    pub bytes: i128,
    pub est_flows: i128,
    pub est_packets: i128,
    pub est_bytes: i128,
}

impl Counts {
    /// Reads the six columns starting at `at`, each `numeric::text`.
    fn from_row(row: &Row, at: usize) -> Result<Self> {
        let n = |i: usize| -> Result<i128> {
            let s: Option<String> = row.try_get(at + i)?;
            let s = s.unwrap_or_else(|| "0".into());
            s.parse::<i128>()
                .with_context(|| format!("a sum PostgreSQL returned: {s:?}"))
        };
        Ok(Counts {
            flows: n(0)?,
            packets: n(1)?,
            bytes: n(2)?,
            est_flows: n(3)?,
            est_packets: n(4)?,
            est_bytes: n(5)?,
        })
    }

    /// The six sums as a JSON object (numbers; beyond 64 bits, as floating point).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "flows": json_number(self.flows),
            "packets": json_number(self.packets),
            "bytes": json_number(self.bytes),
            "est_flows": json_number(self.est_flows),
            "est_packets": json_number(self.est_packets),
            "est_bytes": json_number(self.est_bytes),
        })
    }
}

/// An exact JSON integer where it fits 64 bits, else the nearest floating-point number.
pub fn json_number(n: i128) -> serde_json::Value {
    if let Ok(v) = i64::try_from(n) {
        v.into()
    } else if let Ok(v) = u64::try_from(n) {
        v.into()
    } else {
        (n as f64).into()
    }
}

/// The six sums over rows `f` of raw flows, as `numeric`.
const RAW_SUMS: &str = "count(*)::numeric AS flows, sum(f.packets) AS packets, \
     sum(f.bytes) AS bytes, sum(greatest(f.sampling_interval, 1))::numeric AS est_flows, \
     sum(f.packets * greatest(f.sampling_interval, 1)) AS est_packets, \
     sum(f.bytes * greatest(f.sampling_interval, 1)) AS est_bytes";

/// The same sums over rows `a` of the hourly aggregates.
const AGG_SUMS: &str = "sum(a.flows) AS flows, sum(a.packets) AS packets, \
     sum(a.bytes) AS bytes, sum(a.est_flows) AS est_flows, \
     sum(a.est_packets) AS est_packets, sum(a.est_bytes) AS est_bytes";

/// Where rows came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Flows,
    Aggregates,
    Both,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Flows => "flows",
            Source::Aggregates => "aggregates",
            Source::Both => "both",
        }
    }
}

/// A point in time, and the same as text (`2024-05-01T10:00:00Z`, UTC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moment {
    pub at: SystemTime,
    pub utc: String,
}

/// The window of a query: `[from, to]`, `to` being the database's `now()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub last: Duration,
    pub from: Moment,
    pub to: Moment,
}

/// The whole hours read from the hourly aggregates: `[from, to)`, and the watermark below
/// which arrivals are in them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregateSpan {
    pub from: Moment,
    pub to: Moment,
    pub watermark: Moment,
}

/// One row of `nfpg top`.
#[derive(Clone, Debug, PartialEq)]
pub struct TopRow {
    pub key: TopKey,
    pub counts: Counts,
    /// This row's share of the window's estimated bytes, in percent.
    pub share_percent: f64,
}

/// What `nfpg top` shows: the rows and how they were computed.
#[derive(Clone, Debug, PartialEq)]
pub struct TopReport {
    pub window: Window,
    pub by: TopBy,
    pub limit: i64,
    /// Where the rows came from ([`Source::Flows`] when there are none and only raw flows
    /// were read).
    pub source: Source,
    /// The hours read from the aggregates, if any.
    pub aggregates: Option<AggregateSpan>,
    /// Totals over every key of the window, not only the rows shown.
    pub totals: Counts,
    /// How many keys the window has (rows before the limit).
    pub keys: i64,
    pub rows: Vec<TopRow>,
}

/// Bounds computed once by the database, in the query's snapshot.
struct Bounds {
    window: Window,
    /// The first and last whole hour boundaries inside the window.
    hour_from: Moment,
    hour_to: Moment,
    watermark: Option<Moment>,
    /// Arrival ranges below the watermark not yet added to the aggregates.
    pending: Vec<(SystemTime, SystemTime)>,
}

fn instant(row: &Row, at: usize, text: usize) -> Moment {
    Moment {
        at: row.get(at),
        utc: row.get(text),
    }
}

const UTC_TEXT: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'";

fn bounds(tx: &mut Transaction<'_>, schema: &Schema, last: Duration) -> Result<Bounds> {
    let fmt = |e: &str| format!("to_char(({e}) AT TIME ZONE 'UTC', {UTC_TEXT})");
    let sql = format!(
        "WITH w AS (SELECT now() AS t, now() - make_interval(secs => $1) AS f),
              h AS (SELECT t, f,
                           date_trunc('hour', f AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hf,
                           date_trunc('hour', t AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS ht
                    FROM w),
              c AS (SELECT t, f, CASE WHEN hf < f THEN hf + interval '1 hour' ELSE hf END AS hf,
                           ht FROM h)
         SELECT f, {}, t, {}, hf, {}, ht, {} FROM c",
        fmt("f"),
        fmt("t"),
        fmt("hf"),
        fmt("ht")
    );
    let row = tx.query_one(&sql, &[&last.as_secs_f64()])?;
    let window = Window {
        last,
        from: instant(&row, 0, 1),
        to: instant(&row, 2, 3),
    };
    let (hour_from, hour_to) = (instant(&row, 4, 5), instant(&row, 6, 7));
    // A database whose schema predates the aggregates (0013) has no watermark.
    let table = format!("{}.flow_aggregates_watermark", schema.quoted());
    let exists: bool = tx
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])?
        .get(0);
    let watermark = if exists {
        tx.query_opt(&format!("SELECT upto, {} FROM {table}", fmt("upto")), &[])?
            .map(|r| instant(&r, 0, 1))
    } else {
        None
    };
    let table = format!("{}.flow_aggregates_pending", schema.quoted());
    let exists: bool = tx
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])?
        .get(0);
    let pending = if exists && watermark.is_some() {
        tx.query(&format!("SELECT from_ts, to_ts FROM {table}"), &[])?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    } else {
        Vec::new()
    };
    Ok(Bounds {
        window,
        hour_from,
        hour_to,
        watermark,
        pending,
    })
}

fn snapshot(client: &mut postgres::Client) -> Result<Transaction<'_>> {
    Ok(client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?)
}

/// The busiest `limit` keys by estimated bytes among flows that started in the last `last`.
pub fn top(
    client: &mut postgres::Client,
    schema: &Schema,
    last: Duration,
    by: TopBy,
    limit: i64,
) -> Result<TopReport> {
    let mut tx = snapshot(client)?;
    let b = bounds(&mut tx, schema, last)?;
    let from = b.window.from.at;
    // The aggregates help when the window holds a whole hour and they reach into it.
    let span = match &b.watermark {
        Some(w) if by.in_aggregates() && b.hour_from.at < b.hour_to.at && w.at > b.hour_from.at => {
            Some(AggregateSpan {
                from: b.hour_from.clone(),
                to: b.hour_to.clone(),
                watermark: w.clone(),
            })
        }
        _ => None,
    };
    let (raw_keys, agg_keys) = by.key_sql();
    let join = if by == TopBy::App {
        "LEFT JOIN {schema}.app_names an ON f.protocol IN (6, 17) AND an.port = f.dst_port
         LEFT JOIN {schema}.protocol_names pn ON pn.protocol = f.protocol"
    } else {
        ""
    };
    let group = if by.two_keys() { "1, 2" } else { "1" };
    let keys = if by.two_keys() { "k1, k2" } else { "k1" };
    // Qualified: the output columns of the same names are text.
    let gkeys = if by.two_keys() { "g.k1, g.k2" } else { "g.k1" };
    // Every bound is a parameter, so each part is a plain range the planner prunes by.
    let mut params: Vec<SystemTime> = Vec::new();
    let mut p = |t: SystemTime| {
        params.push(t);
        format!("${}", params.len())
    };
    let raw = |cond: String| {
        format!(
            "SELECT {raw_keys}, false AS agg, {RAW_SUMS} FROM {{schema}}.flows f {join}
             WHERE f.time_suspect IS NOT TRUE AND {cond} GROUP BY {group}"
        )
    };
    let mut parts = Vec::new();
    match &span {
        None => {
            let f = p(from);
            parts.push(raw(format!("f.received_at >= {f} AND f.flow_start >= {f}")));
        }
        Some(s) => {
            let (hf, ht, wm) = (s.from.at, s.to.at, s.watermark.at);
            // Every arrival since the watermark (not in the aggregates yet), from any hour.
            let (a_from, f) = (p(from.max(wm)), p(from));
            parts.push(raw(format!(
                "f.received_at >= {a_from} AND f.flow_start >= {f}"
            )));
            if wm > from {
                // Earlier arrivals that started in the partial hours at either end.
                let (w, h0, h1) = (p(wm), p(hf), p(ht));
                parts.push(raw(format!(
                    "f.received_at >= {f} AND f.received_at < {w} \
                     AND f.flow_start >= {f} AND f.flow_start < {h0}"
                )));
                parts.push(raw(format!(
                    "f.received_at >= {f} AND f.received_at < {w} AND f.flow_start >= {h1}"
                )));
                // Arrivals the watermark passed that are not added yet (an update between its
                // two steps), in the whole hours.
                for &(pf, pt) in &b.pending {
                    let (pf, pt) = (pf.max(from), pt.min(wm));
                    if pf < pt {
                        let (pf, pt) = (p(pf), p(pt));
                        parts.push(raw(format!(
                            "f.received_at >= {pf} AND f.received_at < {pt} \
                             AND f.flow_start >= {h0} AND f.flow_start < {h1}"
                        )));
                    }
                }
            }
            let (h0, h1) = (p(hf), p(ht));
            parts.push(format!(
                "SELECT {agg_keys}, true AS agg, {AGG_SUMS} FROM {{schema}}.flow_aggregates_hourly a
                 WHERE a.hour >= {h0} AND a.hour < {h1} GROUP BY {group}"
            ));
        }
    }
    let lim = format!("${}", params.len() + 1);
    let sql = schema.render(&format!(
        "WITH parts AS ({parts}),
         g AS (
             SELECT {keys}, bool_or(agg) AS any_agg, bool_and(agg) AS all_agg,
                    sum(flows) AS flows, sum(packets) AS packets, sum(bytes) AS bytes,
                    sum(est_flows) AS est_flows, sum(est_packets) AS est_packets,
                    sum(est_bytes) AS est_bytes
             FROM parts GROUP BY {keys}
         )
         SELECT {keys}, bool_or(any_agg) OVER (), bool_and(all_agg) OVER (), count(*) OVER (),
                flows::text, packets::text, bytes::text,
                est_flows::text, est_packets::text, est_bytes::text,
                (sum(flows) OVER ())::text, (sum(packets) OVER ())::text,
                (sum(bytes) OVER ())::text, (sum(est_flows) OVER ())::text,
                (sum(est_packets) OVER ())::text, (sum(est_bytes) OVER ())::text
         FROM g
         ORDER BY g.est_bytes DESC, g.est_packets DESC, g.est_flows DESC, {gkeys}
         LIMIT {lim}",
        parts = parts.join(" UNION ALL "),
    ));
    let mut types = vec![Type::TIMESTAMPTZ; params.len()];
    types.push(Type::INT8);
    let statement = tx.prepare_typed(&sql, &types).context("the top query")?;
    let mut values: Vec<&(dyn postgres::types::ToSql + Sync)> = params
        .iter()
        .map(|t| t as &(dyn postgres::types::ToSql + Sync))
        .collect();
    values.push(&limit);
    let rows = tx.query(&statement, &values).context("the top query")?;
    tx.commit()?;
    let at = if by.two_keys() { 2 } else { 1 };
    let mut out = Vec::with_capacity(rows.len());
    let mut totals = Counts::default();
    let mut keys = 0;
    let mut source = Source::Flows;
    for (i, r) in rows.iter().enumerate() {
        if i == 0 {
            let (any_agg, all_agg): (bool, bool) = (r.get(at), r.get(at + 1));
            source = match (any_agg, all_agg) {
                (true, true) => Source::Aggregates,
                (true, false) => Source::Both,
                _ => Source::Flows,
            };
            keys = r.get(at + 2);
            totals = Counts::from_row(r, at + 9)?;
        }
        let key = match by {
            TopBy::Src => TopKey::Src(r.get(0)),
            TopBy::Dst => TopKey::Dst(r.get(0)),
            TopBy::Pair => TopKey::Pair(r.get(0), r.get(1)),
            TopBy::App => TopKey::App(r.get(0)),
            TopBy::Exporter => TopKey::Exporter(r.get(0)),
            TopBy::Port => TopKey::Port {
                protocol: r.get(0),
                port: r.get(1),
            },
            TopBy::As => TopKey::As(r.get(0)),
        };
        let counts = Counts::from_row(r, at + 3)?;
        out.push(TopRow {
            key,
            counts,
            share_percent: percent(counts.est_bytes, totals.est_bytes),
        });
    }
    Ok(TopReport {
        window: b.window,
        by,
        limit,
        source,
        aggregates: span,
        totals,
        keys,
        rows: out,
    })
}

fn percent(part: i128, whole: i128) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// One source of `nfpg anomalies`.
#[derive(Clone, Debug, PartialEq)]
pub struct AnomalyRow {
    pub src: IpAddr,
    /// Distinct destination addresses (as seen: not upscaled).
    pub destinations: i64,
    /// Distinct destination ports (as seen): many means a port scan.
    pub dst_ports: i64,
    pub counts: Counts,
}

/// What `nfpg anomalies` shows.
#[derive(Clone, Debug, PartialEq)]
pub struct AnomalyReport {
    pub window: Window,
    /// Sources are listed with more estimated flows than this.
    pub min_flows: i64,
    pub rows: Vec<AnomalyRow>,
}

/// Sources with more than `min_flows` estimated flows that started in the last `window`, most
/// flows first (raw flows only).
pub fn anomalies(
    client: &mut postgres::Client,
    schema: &Schema,
    window: Duration,
    min_flows: i64,
) -> Result<AnomalyReport> {
    let mut tx = snapshot(client)?;
    let b = bounds(&mut tx, schema, window)?;
    let sql = schema.render(&format!(
        "SELECT src_addr, destinations, dst_ports, flows::text, packets::text, bytes::text,
                est_flows::text, est_packets::text, est_bytes::text
         FROM (
             SELECT f.src_addr, count(DISTINCT f.dst_addr) AS destinations,
                    count(DISTINCT f.dst_port) AS dst_ports, {RAW_SUMS}
             FROM {{schema}}.flows f
             WHERE f.received_at >= $1 AND f.flow_start >= $1 AND f.time_suspect IS NOT TRUE
             GROUP BY f.src_addr
         ) s
         WHERE est_flows > $2::int8
         ORDER BY s.est_flows DESC, s.flows DESC, s.src_addr"
    ));
    let rows = tx
        .query(&sql, &[&b.window.from.at, &min_flows])
        .context("the anomalies query")?;
    tx.commit()?;
    let rows = rows
        .iter()
        .map(|r| {
            Ok(AnomalyRow {
                src: r.get(0),
                destinations: r.get(1),
                dst_ports: r.get(2),
                counts: Counts::from_row(r, 3)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(AnomalyReport {
        window: b.window,
        min_flows,
        rows,
    })
}

/// `n` in SI units with three significant digits: `950`, `12.3 k`, `3.41 M`.
pub fn human_count(n: i128) -> String {
    si(n, "")
}

/// Bytes in SI units with three significant digits: `512 B`, `1.23 GB`.
pub fn human_bytes(n: i128) -> String {
    let s = si(n, "B");
    if s.ends_with('B') {
        s
    } else {
        format!("{s} B")
    }
}

fn si(n: i128, unit: &str) -> String {
    const PREFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    if n.unsigned_abs() < 1000 {
        return n.to_string();
    }
    let v = n as f64;
    let mut e = 0;
    let mut scaled = v;
    while scaled.abs() >= 1000.0 && e + 1 < PREFIXES.len() {
        scaled /= 1000.0;
        e += 1;
    }
    let decimals = |x: f64| {
        if x.abs() < 10.0 {
            2
        } else if x.abs() < 100.0 {
            1
        } else {
            0
        }
    };
    let mut text = format!("{scaled:.*}", decimals(scaled));
    let rounded = text.parse::<f64>().unwrap_or(scaled);
    if rounded.abs() >= 1000.0 && e + 1 < PREFIXES.len() {
        // 999.6 k rounds to 1000 k: one prefix up instead.
        scaled /= 1000.0;
        e += 1;
        text = format!("{scaled:.*}", decimals(scaled));
    } else if decimals(rounded) < decimals(scaled) {
        // 99.95 rounds to 100.0: three digits, so no decimal.
        text = format!("{scaled:.*}", decimals(rounded));
    }
    format!("{text} {}{unit}", PREFIXES[e])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration(" 1h30m "), Ok(Duration::from_secs(5400)));
        for bad in [
            "",
            "5",
            "m",
            "1x",
            "-5m",
            "0s",
            "1.5h",
            "5 m",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration("5").unwrap_err().contains("unit"));
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(172_800)), "2d");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
    }

    #[test]
    fn human_units() {
        assert_eq!(human_count(0), "0");
        assert_eq!(human_count(950), "950");
        assert_eq!(human_count(1000), "1.00 k");
        assert_eq!(human_count(12_345), "12.3 k");
        assert_eq!(human_count(123_456), "123 k");
        assert_eq!(human_count(3_414_000), "3.41 M");
        assert_eq!(human_count(999_600), "1.00 M");
        assert_eq!(human_count(999_400), "999 k");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1_234_567_890), "1.23 GB");
        assert_eq!(human_bytes(99_950), "100 kB");
        assert_eq!(human_bytes(i128::from(i64::MAX) * 1000), "9223 EB");
    }

    #[test]
    fn keys_display() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(TopKey::Pair(a, b).to_string(), "10.0.0.1 -> 2001:db8::1");
        assert_eq!(
            TopKey::Port {
                protocol: 6,
                port: Some(443)
            }
            .to_string(),
            "443/tcp"
        );
        assert_eq!(TopKey::As(Some(64_500)).to_string(), "AS64500");
        assert_eq!(TopKey::App(None).to_string(), "(no port)");
        assert_eq!(
            serde_json::Value::Object(
                TopKey::Port {
                    protocol: 17,
                    port: None
                }
                .json_fields()
            ),
            serde_json::json!({"protocol": 17, "port": null})
        );
    }
}
