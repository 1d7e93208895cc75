//! Observability: what the pipeline counts and measures, and how it is reported.
//!
//! [`stats`] (every counter, declared once), [`latency`] (per-stage histograms),
//! [`histlog`] (the HdrHistogram interval log), [`histreport`] (`nfpg hist`), [`metrics`]
//! (the Prometheus endpoint), [`exporters`] (per-exporter statistics and sequence loss) and
//! [`host`] (host-wide counters). Shards and writers write into these; nothing here calls
//! back into them. Depends on `flow` only.

pub mod exporters;
pub mod histlog;
pub mod histreport;
pub mod host;
pub mod latency;
pub mod metrics;
pub mod stats;
pub mod top;
