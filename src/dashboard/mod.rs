//! The read-only dashboard (`--dashboard PORT|ADDR`, off by default; a bare port listens on
//! loopback only): one HTML page with a small charting script of our own, both embedded in
//! the binary (`assets/`, no build step, nothing loaded from elsewhere), and the JSON it
//! draws from.
//!
//! What it owns: the in-memory [`history`] of the collector's totals (a ring sampled every
//! second by a thread of its own from the [`crate::obs::stats::Counters`] and the queue, so
//! the collector's loop does not feed it), the routes below, and a read-only connection to
//! PostgreSQL ([`query`]). Whom it hands data to: the browser, over HTTP, on the listener of
//! [`crate::obs::metrics`] (shared with `/metrics` when `--dashboard` names the same address
//! as `--metrics`, else a listener of its own with the same connection handling). It writes
//! nothing anywhere.
//!
//! Routes: `/` (the page), `/dashboard.js`, `/api/summary` (totals, rates, queue, database
//! state), `/api/history?since=MS` (the ring, or what came after `MS`), `/api/top?by=src|dst|app&last=15m&n=10`
//! (from PostgreSQL, sampling-upscaled), `/api/exporters` (the exporters table, with loss),
//! `/api/malformed` (malformed datagrams by reason, from the counters). On a loopback
//! listener, requests whose `Host` is not a loopback name are refused (DNS rebinding).

pub mod history;
pub mod query;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};

use crate::flow::reason::Reason;
use crate::obs::metrics::{self, Handler, Request, Response, Sources};
use history::{History, Rates};
use query::{DbSource, Reader, TopBy};

const INDEX_HTML: &str = include_str!("assets/index.html");
const DASHBOARD_JS: &str = include_str!("assets/dashboard.js");

/// The window the summary's rates are taken over.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// The dashboard's state: what every request reads.
pub struct Dashboard {
    sources: Sources,
    history: Arc<History>,
    db: Option<Reader>,
    started: Instant,
    /// Only loopback `Host` names are answered (the listener is on loopback).
    loopback_only: bool,
}

/// Starts the HTTP endpoints the command line asks for: `/metrics` on `metrics`, the
/// dashboard on `dashboard` (one listener for both when the addresses are equal), and the
/// dashboard's sampler. `db` is where the dashboard reads flows and exporters from (`None`
/// with `--sink null`: those parts of the page say so). Logs where each one listens.
pub fn serve(
    metrics: Option<SocketAddr>,
    dashboard: Option<SocketAddr>,
    sources: Sources,
    db: Option<DbSource>,
) -> Result<()> {
    let Some(dash_addr) = dashboard else {
        if let Some(addr) = metrics {
            let local = metrics::serve(addr, sources)?;
            tracing::info!("metrics on http://{local}/metrics");
        }
        return Ok(());
    };
    let history = Arc::new(History::new(history::SAMPLES_KEPT));
    history::start_sampler(
        history.clone(),
        sources.counters.clone(),
        sources.handoff.clone(),
        history::SAMPLE_EVERY,
    )?;
    let dash = Arc::new(Dashboard {
        sources: sources.clone(),
        history,
        db: db.map(Reader::new),
        started: Instant::now(),
        loopback_only: dash_addr.ip().is_loopback(),
    });
    let handler: Handler = Arc::new(move |req: &Request<'_>| dash.route(req));
    let local = match metrics {
        Some(m) if m == dash_addr => {
            let local = metrics::serve_with(m, Some(sources), Some(handler))?;
            tracing::info!("metrics on http://{local}/metrics");
            local
        }
        other => {
            if let Some(m) = other {
                let local = metrics::serve(m, sources)?;
                tracing::info!("metrics on http://{local}/metrics");
            }
            metrics::serve_with(dash_addr, None, Some(handler))?
        }
    };
    tracing::info!("dashboard on http://{local}/");
    Ok(())
}

/// Whether `host` (a `Host` header: name or address, maybe with a port) names this machine's
/// loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn respond(status: &'static str, content_type: &'static str, body: String) -> Response {
    Response {
        status,
        content_type,
        body,
    }
}

fn json_response(status: &'static str, v: &Value) -> Response {
    respond(status, "application/json", v.to_string())
}

fn error_json(status: &'static str, what: &str, e: &anyhow::Error) -> Response {
    json_response(status, &json!({ "error": format!("{what}: {e:#}") }))
}

/// The value of `name` in a query string (no percent-decoding: every value we take is plain).
fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl Dashboard {
    /// Answers the dashboard's routes; `None` for any other path.
    pub fn route(&self, req: &Request<'_>) -> Option<Response> {
        let (path, query) = req.target.split_once('?').unwrap_or((req.target, ""));
        let known =
            matches!(path, "/" | "/dashboard" | "/dashboard.js") || path.starts_with("/api/");
        if !known {
            return None;
        }
        if self.loopback_only && !req.host.is_none_or(is_loopback_host) {
            return Some(respond(
                "403 Forbidden",
                "text/plain; charset=utf-8",
                "the dashboard listens on loopback: open it as http://127.0.0.1:PORT/ or http://localhost:PORT/\n".into(),
            ));
        }
        Some(match path {
            "/" | "/dashboard" => respond("200 OK", "text/html; charset=utf-8", INDEX_HTML.into()),
            "/dashboard.js" => respond(
                "200 OK",
                "text/javascript; charset=utf-8",
                DASHBOARD_JS.into(),
            ),
            "/api/summary" => json_response("200 OK", &self.summary()),
            "/api/history" => {
                let since = param(query, "since")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                json_response(
                    "200 OK",
                    &json!({
                        "interval_ms": history::SAMPLE_EVERY.as_millis() as u64,
                        "capacity": self.history.capacity(),
                        "samples": self.history.since(since),
                    }),
                )
            }
            "/api/malformed" => json_response("200 OK", &self.malformed()),
            "/api/top" => self.top(query),
            "/api/exporters" => match &self.db {
                None => json_response(
                    "503 Service Unavailable",
                    &json!({ "error": "no database (--sink null)" }),
                ),
                Some(db) => match db.exporters() {
                    Ok(v) => json_response("200 OK", &v),
                    Err(e) => error_json("503 Service Unavailable", "reading the exporters", &e),
                },
            },
            _ => json_response("404 Not Found", &json!({ "error": "no such API" })),
        })
    }

    fn summary(&self) -> Value {
        let snap = self.sources.counters.snapshot(self.sources.handoff.depth());
        let now = history::Sample::of(&snap, history::unix_ms());
        let rates: Rates = self.history.rates(RATE_WINDOW);
        let tracked = self
            .sources
            .exporters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        json!({
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "database_up": snap.database_up,
            "queue_depth": snap.queue_depth,
            "queue_capacity": self.sources.handoff.depth_capacity(),
            "exporters_tracked": tracked,
            "spool_bytes": snap.spool_bytes,
            "totals": now,
            "rates": rates,
        })
    }

    fn malformed(&self) -> Value {
        let snap = self.sources.counters.snapshot(0);
        let reasons: Vec<Value> = Reason::ALL
            .iter()
            .map(|&r| json!({ "reason": r.as_str(), "count": snap.malformed.get(r) }))
            .collect();
        json!({ "total": snap.malformed.total(), "reasons": reasons })
    }

    fn top(&self, query: &str) -> Response {
        let Some(by) = TopBy::parse(param(query, "by").unwrap_or("src")) else {
            return json_response(
                "400 Bad Request",
                &json!({ "error": "by must be src, dst or app" }),
            );
        };
        let Some(window) = query::parse_window(param(query, "last").unwrap_or("15m")) else {
            return json_response(
                "400 Bad Request",
                &json!({ "error": "last must be a window such as 90s, 15m, 6h or 2d" }),
            );
        };
        let n = param(query, "n").and_then(|v| v.parse().ok()).unwrap_or(10);
        match &self.db {
            None => json_response(
                "503 Service Unavailable",
                &json!({ "error": "no database (--sink null)" }),
            ),
            Some(db) => match db.top(by, window, n) {
                Ok(v) => json_response("200 OK", &v),
                Err(e) => error_json("503 Service Unavailable", "reading the top list", &e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "127.0.0.1:9109",
            "127.0.0.1",
            "localhost:80",
            "LOCALHOST",
            "[::1]:9109",
            "a.localhost:1",
            "127.1.2.3:5",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:9109",
            "10.0.0.1",
            "[2001:db8::1]:1",
            "localhost.evil.example",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn query_params() {
        assert_eq!(param("by=app&last=1h", "last"), Some("1h"));
        assert_eq!(param("by=app", "n"), None);
        assert_eq!(param("", "by"), None);
    }
}
