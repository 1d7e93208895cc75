//! Whether the database takes writes now. Writers mark it down when a COPY fails for a
//! reason that is not about the rows; the replayer probes it and marks it up again. While it
//! is down, writers spool without trying, so no thread waits on an unreachable server. With
//! several database endpoints each has its own `Health`; the `database_up` gauge counts the
//! endpoints up (1 or 0 with one database).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::writer::WriteError;
use crate::obs::stats::SpoolGauges;

/// One endpoint's up/down state; the `database_up` gauge of the metrics counts the endpoints
/// that are up.
pub struct Health {
    up: AtomicBool,
    gauges: Arc<SpoolGauges>,
    /// Names the endpoint in messages when there are several ("" with one).
    label: String,
    last: Mutex<Option<(Instant, String)>>,
}

/// Log a repeated failure at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Health {
    /// Starts down: the first successful probe marks it up.
    pub fn new(gauges: Arc<SpoolGauges>) -> Self {
        Self::labelled(gauges, "")
    }

    /// The health of one of several endpoints, named `label` in messages.
    pub fn labelled(gauges: Arc<SpoolGauges>, label: &str) -> Self {
        Self {
            up: AtomicBool::new(false),
            gauges,
            label: label.to_string(),
            last: Mutex::new(None),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Marks the database down after `e`; logs it (at most every 10 s for the same state).
    pub fn mark_down(&self, e: &WriteError) {
        let was_up = self.up.swap(false, Relaxed);
        if was_up {
            self.gauges.database_up.fetch_sub(1, Relaxed);
        }
        self.note(e, was_up);
    }

    /// Records a failed probe while down (logged at most every 10 s).
    pub fn note(&self, e: &WriteError, force: bool) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let msg = if self.label.is_empty() {
            e.to_string()
        } else {
            format!("{}: {e}", self.label)
        };
        let due = last
            .as_ref()
            .is_none_or(|(t, m)| t.elapsed() >= LOG_EVERY || *m != msg);
        if force || due {
            match e {
                WriteError::Config(_) => tracing::error!(
                    "{msg}: fix the configuration (DATABASE_URL / DB_* settings) and restart; \
                     flows are kept in the spool meanwhile"
                ),
                _ => tracing::warn!("{msg}; spooling flows until it is back"),
            }
            *last = Some((Instant::now(), msg));
        }
    }

    pub fn mark_up(&self) {
        if !self.up.swap(true, Relaxed) {
            self.gauges.database_up.fetch_add(1, Relaxed);
            if self.label.is_empty() {
                tracing::info!("database reachable: writing to PostgreSQL");
            } else {
                tracing::info!("{}: reachable, writing to it", self.label);
            }
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }
}
