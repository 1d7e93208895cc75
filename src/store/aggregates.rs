//! The hourly aggregates (`flow_aggregates_hourly`, migrations/0013_aggregates.sql) and
//! retention: what the housekeeper runs against PostgreSQL for them.
//!
//! Moving the watermark and folding the flows it passed are two short transactions: the first
//! waits for the COPYs in flight (they hold the aggregates' lock shared) and records the range
//! as pending; the second adds the pending ranges. COPYs that store rows from before the
//! watermark add those themselves (`PgSink`), so every stored flow is counted once, whenever
//! it arrives. Before folding, each update summarizes the received_at BRIN ranges filled
//! since the last ([`summarize_arrivals`]), so the fold reads only its own minute's pages.
//! Retention drops whole day partitions of flows and of aggregates.

use std::time::Duration;

use anyhow::Result;

use super::db::Schema;

/// Watermark moves per call of [`update`] at most (each at most `max_span`): a backlog (flows
/// stored before aggregation was enabled) is folded over several updates.
const MAX_STEPS: usize = 24;

/// Brings the aggregates up to `lag` before now, at most `max_span` per step. Returns the
/// flow rows added.
///
/// Several collectors sharing a database may all call it: the watermark is one for the
/// database and moving it is serialised (migrations/0015_instances.sql says why that stays
/// exact); `instance` is recorded with the watermark and each range it passes.
pub fn update(
    c: &mut postgres::Client,
    schema: &Schema,
    lag: Duration,
    max_span: Duration,
    instance: &str,
) -> Result<i64> {
    let advance = schema.render(
        "SELECT {schema}.advance_flow_aggregates_watermark(
             now() - make_interval(secs => $1), make_interval(secs => $2), $3::text)",
    );
    let fold = schema.render("SELECT {schema}.fold_flow_aggregates()");
    if let Err(e) = summarize_arrivals(c, schema) {
        // Not the owner of the indexes, or autovacuum held the partition: the fold is only
        // slower. Said once per process at warn level.
        static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::debug!("summarizing the received_at BRIN ranges: {e:#}");
        } else {
            tracing::warn!("summarizing the received_at BRIN ranges (the aggregates' fold reads more without it): {e:#}");
        }
    }
    // Grouping a minute of flows hashes millions of keys: in memory, not in sort files (on the
    // housekeeper's own connection; measured 54 s → 46 s for 10.8 M flows at 256 MB).
    c.batch_execute("SET work_mem = '128MB'")?;
    let mut rows = 0;
    // Ranges left pending by an update that failed half-way.
    rows += c.query_one(&fold, &[])?.get::<_, i64>(0);
    for _ in 0..MAX_STEPS {
        let moved: bool = c
            .query_one(
                &advance,
                &[&lag.as_secs_f64(), &max_span.as_secs_f64(), &instance],
            )?
            .get(0);
        rows += c.query_one(&fold, &[])?.get::<_, i64>(0);
        if !moved {
            break;
        }
    }
    Ok(rows)
}

/// Summarizes the received_at BRIN ranges of every flows partition filled since the last
/// call; returns how many. An unsummarized range matches every query, so without this each
/// fold rechecked every row stored since autovacuum last summarized the partition (measured
/// on an 18 M-row partition: a 5-second slice took 1.7 s, 0.5 s once summarized; the
/// summarizing reads each new range once). Waits at most 1 s for the partition's lock, which
/// a running autovacuum holds (and summarizes as it goes).
pub fn summarize_arrivals(c: &mut postgres::Client, schema: &Schema) -> Result<i64> {
    let mut tx = c.transaction()?;
    tx.batch_execute("SET LOCAL lock_timeout = '1s'")?;
    let n = tx
        .query_one(
            &schema.render(
                "SELECT coalesce(sum(brin_summarize_new_values(i.inhrelid::regclass)), 0)::int8
                 FROM pg_inherits i
                 WHERE i.inhparent = '{schema}.flows_times_brin'::regclass",
            ),
            &[],
        )?
        .get(0);
    tx.commit()?;
    Ok(n)
}

/// Creates the aggregates' day partitions from a week back (late flows land in their own
/// hour) to `days_ahead` ahead, under the upkeep lock shared with other collectors
/// ([`super::db::with_upkeep_lock`]). Returns how many it created.
pub fn ensure_partitions(
    c: &mut postgres::Client,
    schema: &Schema,
    days_ahead: u32,
) -> Result<i32> {
    let sql = schema.render(
        "SELECT {schema}.ensure_aggregate_partitions((now() AT TIME ZONE 'UTC')::date - 8, $1)",
    );
    Ok(super::db::with_upkeep_lock(c, schema, true, |tx| {
        Ok(tx.query_one(&sql, &[&(days_ahead as i32 + 9)])?.get(0))
    })?
    .unwrap_or(0))
}

/// Drops the day partitions of flows older than `flow_days` and of aggregates older than
/// `aggregate_days` (0: keep). Returns (flow partitions, aggregate partitions) dropped;
/// (0, 0) when another collector's upkeep holds the lock (it drops them).
pub fn apply_retention(
    c: &mut postgres::Client,
    schema: &Schema,
    flow_days: u32,
    aggregate_days: u32,
) -> Result<(i32, i32)> {
    if flow_days == 0 && aggregate_days == 0 {
        return Ok((0, 0));
    }
    let flows = schema.render("SELECT {schema}.drop_flow_partitions_older_than($1)");
    let aggs = schema.render("SELECT {schema}.drop_aggregate_partitions_older_than($1)");
    Ok(super::db::with_upkeep_lock(c, schema, false, |tx| {
        let mut dropped = (0, 0);
        if flow_days > 0 {
            dropped.0 = tx.query_one(&flows, &[&(flow_days as i32)])?.get(0);
        }
        if aggregate_days > 0 {
            dropped.1 = tx.query_one(&aggs, &[&(aggregate_days as i32)])?.get(0);
        }
        Ok(dropped)
    })?
    .unwrap_or((0, 0)))
}
