//! The dashboard's reads from PostgreSQL: top talkers and applications over a recent window,
//! and the exporters table. One cached connection behind a mutex, read-only, with a statement
//! timeout; a failure drops the connection (the next request reconnects, at most once per
//! [`RETRY_AFTER`]) and comes back as an error the caller turns into JSON.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use postgres::Client;
use serde_json::{json, Value};

use crate::store::db::{connect, Schema};

/// The longest a dashboard query may run.
pub const STATEMENT_TIMEOUT: &str = "5s";
/// After a failed connection attempt, requests fail at once for this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(3);
/// The longest window `/api/top` accepts.
pub const MAX_WINDOW: Duration = Duration::from_secs(31 * 86_400);
/// Most rows `/api/top` returns.
pub const MAX_TOP: i64 = 100;

/// Where the dashboard reads from.
#[derive(Clone)]
pub struct DbSource {
    pub conninfo: String,
    pub schema: Schema,
}

/// What `/api/top` ranks by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopBy {
    /// Source address.
    Src,
    /// Destination address.
    Dst,
    /// Application name (the `flows_with_app` view's rule).
    App,
}

impl TopBy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "src" => Some(TopBy::Src),
            "dst" => Some(TopBy::Dst),
            "app" => Some(TopBy::App),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            TopBy::Src => "src",
            TopBy::Dst => "dst",
            TopBy::App => "app",
        }
    }
}

/// Parses a window such as `90s`, `15m`, `6h`, `2d` (a bare number is minutes).
pub fn parse_window(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "m"),
    };
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs).min(MAX_WINDOW))
}

struct State {
    client: Option<Client>,
    failed_at: Option<Instant>,
}

/// A read-only connection to the collector's database, opened on first use.
pub struct Reader {
    source: DbSource,
    state: Mutex<State>,
}

impl Reader {
    pub fn new(source: DbSource) -> Self {
        Reader {
            source,
            state: Mutex::new(State {
                client: None,
                failed_at: None,
            }),
        }
    }

    fn open(&self) -> Result<Client> {
        let mut c = connect(&self.source.conninfo)?;
        c.batch_execute(&format!(
            "SET statement_timeout = '{STATEMENT_TIMEOUT}'; \
             SET default_transaction_read_only = on; \
             SET application_name = 'nfpg-dashboard'"
        ))
        .context("setting up the dashboard's connection")?;
        Ok(c)
    }

    /// Runs `f` on the cached connection (opening it when needed).
    fn with<T>(&self, f: impl FnOnce(&mut Client, &Schema) -> Result<T>) -> Result<T> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.client.is_none() {
            if st.failed_at.is_some_and(|t| t.elapsed() < RETRY_AFTER) {
                bail!("database unreachable (retrying every {RETRY_AFTER:?})");
            }
            match self.open() {
                Ok(c) => {
                    st.client = Some(c);
                    st.failed_at = None;
                }
                Err(e) => {
                    st.failed_at = Some(Instant::now());
                    return Err(e);
                }
            }
        }
        let Some(client) = st.client.as_mut() else {
            bail!("no database connection");
        };
        let out = f(client, &self.source.schema);
        if out.is_err() {
            // Whatever went wrong (timeout, server gone), start from a fresh connection.
            st.client = None;
        }
        out
    }

    /// The busiest sources, destinations or applications by bytes among the flows that
    /// arrived in the last `window`, with the counters upscaled by each flow's sampling
    /// interval (`× greatest(sampling_interval, 1)`), as JSON.
    pub fn top(&self, by: TopBy, window: Duration, limit: i64) -> Result<Value> {
        let app = format!(
            "{}.application_name(protocol, dst_port)",
            self.source.schema.quoted()
        );
        let (key, from) = match by {
            TopBy::Src => ("host(src_addr)", "flows"),
            TopBy::Dst => ("host(dst_addr)", "flows"),
            // The original's naming rule (migrations/0013_aggregates.sql), on the flows table
            // itself: the flows_with_app view predates the time_suspect column.
            TopBy::App => (app.as_str(), "flows"),
        };
        let limit = limit.clamp(1, MAX_TOP);
        let rows = self.with(|c, schema| {
            let sql = format!(
                "SELECT {key}, count(*)::int8, sum(packets)::int8, sum(bytes)::int8, \
                        sum(greatest(sampling_interval, 1))::int8, \
                        least(sum(packets::numeric * greatest(sampling_interval, 1)), 9223372036854775807)::int8, \
                        least(sum(bytes::numeric * greatest(sampling_interval, 1)), 9223372036854775807)::int8, \
                        max(sampling_interval)::int8 \
                 FROM {}.{from} \
                 WHERE received_at >= now() - make_interval(secs => $1) \
                   AND time_suspect IS NOT TRUE \
                 GROUP BY 1 ORDER BY 7 DESC, 1 LIMIT $2",
                schema.quoted()
            );
            c.query(&sql, &[&window.as_secs_f64(), &limit])
                .context("top query")
        })?;
        let rows: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "key": r.get::<_, String>(0),
                    "flows": r.get::<_, i64>(1),
                    "packets": r.get::<_, i64>(2),
                    "bytes": r.get::<_, i64>(3),
                    "est_flows": r.get::<_, i64>(4),
                    "est_packets": r.get::<_, i64>(5),
                    "est_bytes": r.get::<_, i64>(6),
                    "upscaled": r.get::<_, i64>(7) > 1,
                    "max_sampling_interval": r.get::<_, i64>(7),
                })
            })
            .collect();
        Ok(json!({
            "by": by.as_str(),
            "window_s": window.as_secs(),
            "sampling_upscaled": true,
            "note": "est_* are sampling-upscaled: each flow's counters x greatest(sampling_interval, 1); \
                     ranked by est_bytes over the flows that arrived in the window",
            "rows": rows,
        }))
    }

    /// The exporters table: traffic, loss from sequence numbers and suspect datagrams, as
    /// JSON, the exporters with the most lost flows first (one row per collector instance
    /// that heard the exporter, with its `instance`).
    pub fn exporters(&self) -> Result<Value> {
        let rows = self.with(|c, schema| {
            let sql = format!(
                "SELECT host(exporter), engine_type::int8, engine_id::int8, source_id, \
                        extract(epoch FROM first_seen)::float8, extract(epoch FROM last_seen)::float8, \
                        extract(epoch FROM now() - last_seen)::float8, \
                        datagrams, flows, packets, bytes, flows_lost, restarts, suspect_datagrams, \
                        netflow_version::int8, sampling_interval::int8, datagrams_per_s, instance \
                 FROM {}.exporters \
                 ORDER BY flows_lost DESC, flows DESC, exporter LIMIT 500",
                schema.quoted()
            );
            c.query(&sql, &[]).context("exporters query")
        })?;
        let rows: Vec<Value> = rows
            .iter()
            .map(|r| {
                let flows: i64 = r.get(8);
                let lost: i64 = r.get(11);
                let sent = flows.saturating_add(lost);
                let lost_pct = if sent > 0 {
                    lost as f64 * 100.0 / sent as f64
                } else {
                    0.0
                };
                json!({
                    "exporter": r.get::<_, String>(0),
                    "engine_type": r.get::<_, i64>(1),
                    "engine_id": r.get::<_, i64>(2),
                    "source_id": r.get::<_, i64>(3),
                    "first_seen": r.get::<_, f64>(4),
                    "last_seen": r.get::<_, f64>(5),
                    "last_seen_age_s": r.get::<_, f64>(6),
                    "datagrams": r.get::<_, i64>(7),
                    "flows": flows,
                    "packets": r.get::<_, i64>(9),
                    "bytes": r.get::<_, i64>(10),
                    "flows_lost": lost,
                    "lost_pct": lost_pct,
                    "restarts": r.get::<_, i64>(12),
                    "suspect_datagrams": r.get::<_, i64>(13),
                    "netflow_version": r.get::<_, Option<i64>>(14),
                    "sampling_interval": r.get::<_, Option<i64>>(15),
                    "datagrams_per_s": r.get::<_, Option<f64>>(16),
                    "instance": r.get::<_, String>(17),
                })
            })
            .collect();
        Ok(json!({
            "note": "lost_pct = flows_lost / (flows + flows_lost), from the exporters' sequence numbers",
            "rows": rows,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        assert_eq!(parse_window("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_window("15"), Some(Duration::from_secs(900)));
        assert_eq!(parse_window("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_window("6h"), Some(Duration::from_secs(21_600)));
        assert_eq!(parse_window("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_window("999d"), Some(MAX_WINDOW));
        assert_eq!(parse_window("99999999999999999999d"), None);
        for bad in ["", "0m", "m", "5x", "-5m", "5 m"] {
            assert_eq!(parse_window(bad), None, "{bad}");
        }
    }
}
