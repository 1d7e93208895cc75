//! The `--hist-log` file: an HdrHistogram interval log that HdrHistogram's own tools
//! (`HistogramLogProcessor`, the plotter) and `nfpg hist` read. Written by the collector's
//! statistics loop once per histogram interval, from [`super::latency::Latency::interval`].

use std::time::Duration;

use anyhow::{Context, Result};

use super::latency::Stage;

/// The `--hist-log` writer: an HdrHistogram interval log, one histogram per stage per
/// interval, tagged with the stage name.
pub struct HistLog {
    file: std::io::BufWriter<std::fs::File>,
    serializer: hdrhistogram::serialization::V2DeflateSerializer,
    started: std::time::SystemTime,
    header_written: bool,
}

impl HistLog {
    pub fn create(path: &std::path::Path) -> Result<Self> {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self {
            file: std::io::BufWriter::new(file),
            serializer: hdrhistogram::serialization::V2DeflateSerializer::new(),
            started: std::time::SystemTime::now(),
            header_written: false,
        })
    }

    /// Appends one interval (`start` and `length` relative to the log's start time).
    pub fn write(
        &mut self,
        hists: &[hdrhistogram::Histogram<u64>],
        start: Duration,
        length: Duration,
    ) -> Result<()> {
        use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
        use std::io::Write;
        let mut builder = IntervalLogWriterBuilder::new();
        if !self.header_written {
            builder
                .add_comment(
                    "nfpg latency histograms: values in microseconds (batch_fill: flows per batch)",
                )
                .with_start_time(self.started)
                .with_base_time(self.started)
                .with_max_value_divisor(1000.0);
            self.header_written = true;
        }
        let mut w = builder.begin_log_with(&mut self.file, &mut self.serializer)?;
        for stage in Stage::ALL {
            let h = &hists[stage as usize];
            w.write_histogram(h, start, length, Tag::new(stage.tag()))
                .map_err(|e| anyhow::anyhow!("writing the histogram log: {e:?}"))?;
        }
        self.file.flush()?;
        Ok(())
    }
}
