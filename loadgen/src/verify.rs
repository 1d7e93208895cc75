//! `--verify`: compares what was generated (sent, plus datagrams dropped on purpose with
//! `--drop-every`, which stand for datagrams lost on the way) with what the collector stored
//! in PostgreSQL. A run with deliberate drops therefore reports exactly those flows as lost.
//!
//! Owns the connection, the polling loop (wait until the stored totals equal the sent ones,
//! stop changing, or the timeout passes) and the per-exporter comparison. It receives the
//! per-exporter sent totals from `send` and hands `main` a serializable report; it never
//! writes to the database.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::send::Totals;

/// Flows, packets and bytes (what a flows table can count; it has no datagrams).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub flows: i64,
    pub packets: i64,
    pub bytes: i64,
}

impl Counts {
    fn of(t: &Totals) -> Self {
        Counts {
            flows: t.flows as i64,
            packets: t.packets as i64,
            bytes: t.bytes as i64,
        }
    }

    fn minus(&self, o: &Counts) -> Counts {
        Counts {
            flows: self.flows - o.flows,
            packets: self.packets - o.packets,
            bytes: self.bytes - o.bytes,
        }
    }

    fn add(&mut self, o: &Counts) {
        self.flows += o.flows;
        self.packets += o.packets;
        self.bytes += o.bytes;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    pub address: String,
    pub sent: Counts,
    pub stored: Counts,
    pub lost: Counts,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub schema: String,
    pub sent: Counts,
    pub stored: Counts,
    /// generated − stored; negative means more rows than generated (duplicates or another
    /// source).
    pub lost: Counts,
    pub mismatches: Vec<Mismatch>,
    pub polls: u32,
    pub waited_s: f64,
    pub ok: bool,
}

/// Checks a schema name before it is quoted into SQL: `[A-Za-z_][A-Za-z0-9_]{0,62}`.
pub fn check_schema(s: &str) -> Result<()> {
    let mut chars = s.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !ok_first || s.len() > 63 || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("schema name {s:?} must match [A-Za-z_][A-Za-z0-9_]{{0,62}}");
    }
    Ok(())
}

/// Polls `<schema>.flows` until the stored totals of `expected` exporters equal the sent
/// ones, stay unchanged for `settle`, or `timeout` passes, then compares per exporter.
pub fn verify(
    url: &str,
    schema: &str,
    started_at_unix_ms: u64,
    expected: &[(String, Totals)],
    timeout: Duration,
    settle: Duration,
) -> Result<VerifyReport> {
    check_schema(schema)?;
    let config: postgres::Config = url.parse().context("parsing --database-url")?;
    let t0 = Instant::now();
    let deadline = t0 + timeout;
    let mut client = loop {
        match config.connect(postgres::NoTls) {
            Ok(c) => break c,
            Err(e) if Instant::now() + Duration::from_millis(500) < deadline => {
                eprintln!("verify: cannot connect yet ({e}); retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e).context("connecting to PostgreSQL"),
        }
    };
    let sql = format!(
        "SELECT host(exporter), count(*)::int8, coalesce(sum(packets), 0)::int8, \
         coalesce(sum(bytes), 0)::int8 FROM \"{schema}\".flows \
         WHERE received_at >= to_timestamp($1::float8) - interval '1 second' \
         AND exporter = ANY($2::text[]::inet[]) GROUP BY 1"
    );
    let stmt = client.prepare(&sql).context("preparing the verify query")?;
    let addrs: Vec<String> = expected.iter().map(|(a, _)| a.clone()).collect();
    let started = started_at_unix_ms as f64 / 1000.0;

    let mut sent = Counts::default();
    for (_, t) in expected {
        sent.add(&Counts::of(t));
    }
    let mut polls = 0u32;
    let mut last: Option<Counts> = None;
    let mut unchanged_since = Instant::now();
    let stored_by = loop {
        polls += 1;
        let rows = client
            .query(&stmt, &[&started, &addrs])
            .context("querying stored flows")?;
        let mut by: HashMap<String, Counts> = HashMap::new();
        let mut total = Counts::default();
        for row in rows {
            let c = Counts {
                flows: row.try_get(1)?,
                packets: row.try_get(2)?,
                bytes: row.try_get(3)?,
            };
            total.add(&c);
            by.insert(row.try_get::<_, String>(0)?, c);
        }
        let now = Instant::now();
        if last != Some(total) {
            last = Some(total);
            unchanged_since = now;
        }
        if total == sent || now >= deadline || now - unchanged_since >= settle {
            break by;
        }
        std::thread::sleep(Duration::from_millis(500).min(deadline - now));
    };

    let mut stored = Counts::default();
    let mut mismatches = Vec::new();
    for (addr, t) in expected {
        let want = Counts::of(t);
        let got = stored_by.get(addr).copied().unwrap_or_default();
        stored.add(&got);
        if got != want {
            mismatches.push(Mismatch {
                address: addr.clone(),
                sent: want,
                stored: got,
                lost: want.minus(&got),
            });
        }
    }
    let lost = sent.minus(&stored);
    Ok(VerifyReport {
        schema: schema.to_string(),
        sent,
        stored,
        lost,
        ok: mismatches.is_empty() && lost == Counts::default(),
        mismatches,
        polls,
        waited_s: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::check_schema;

    #[test]
    fn schema_names() {
        for ok in ["netflow", "_x", "a1_b", &"a".repeat(63)] {
            assert!(check_schema(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a\"b", "a b", "é", &"a".repeat(64)] {
            assert!(check_schema(bad).is_err(), "{bad}");
        }
    }
}
