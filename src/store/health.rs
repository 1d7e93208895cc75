//! Whether the database takes writes now. Writers mark it down when a COPY fails for a
//! reason that is not about the rows; the replayer probes it and marks it up again. While it
//! is down, writers spool without trying, so no thread waits on an unreachable server.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::writer::WriteError;
use crate::obs::stats::SpoolGauges;

/// The shared up/down state; `up` is the `database_up` gauge of the metrics.
pub struct Health {
    gauges: Arc<SpoolGauges>,
    last: Mutex<Option<(Instant, String)>>,
}

/// Log a repeated failure at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Health {
    /// Starts down: the first successful probe marks it up.
    pub fn new(gauges: Arc<SpoolGauges>) -> Self {
        gauges.database_up.store(0, Relaxed);
        Self {
            gauges,
            last: Mutex::new(None),
        }
    }

    pub fn is_up(&self) -> bool {
        self.gauges.database_up.load(Relaxed) == 1
    }

    /// Marks the database down after `e`; logs it (at most every 10 s for the same state).
    pub fn mark_down(&self, e: &WriteError) {
        let was_up = self.gauges.database_up.swap(0, Relaxed) == 1;
        self.note(e, was_up);
    }

    /// Records a failed probe while down (logged at most every 10 s).
    pub fn note(&self, e: &WriteError, force: bool) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let msg = e.to_string();
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
        if self.gauges.database_up.swap(1, Relaxed) == 0 {
            tracing::info!("database reachable: writing to PostgreSQL");
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }
}
