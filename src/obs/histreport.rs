//! `nfpg hist FILE`: reads an HdrHistogram interval log written with `--hist-log`, prints a
//! percentile table per stage and can draw latency by percentile as an SVG (the usual
//! HdrHistogram plot: percentiles on a log scale, so the tail is visible).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;

use super::latency::{Percentiles, Stage};

/// Every tagged histogram of a log, merged per tag; also the number of intervals.
pub fn read_log(path: &Path) -> Result<(BTreeMap<String, Histogram<u64>>, usize)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut merged: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let mut deserializer = Deserializer::new();
    let mut intervals = 0;
    for entry in IntervalLogIterator::new(&bytes) {
        let entry = entry.map_err(|e| anyhow::anyhow!("parsing {}: {e:?}", path.display()))?;
        if let LogEntry::Interval(h) = entry {
            let tag = h
                .tag()
                .map_or("untagged".to_string(), |t| t.as_str().to_string());
            let decoded = base64_decode(h.encoded_histogram())?;
            let hist: Histogram<u64> = deserializer
                .deserialize(&mut std::io::Cursor::new(decoded))
                .map_err(|e| anyhow::anyhow!("decoding a histogram: {e:?}"))?;
            if tag == Stage::EndToEnd.tag() {
                intervals += 1;
            }
            match merged.get_mut(&tag) {
                Some(m) => m
                    .add(&hist)
                    .map_err(|e| anyhow::anyhow!("merging: {e:?}"))?,
                None => {
                    merged.insert(tag, hist);
                }
            }
        }
    }
    Ok((merged, intervals))
}

fn base64_decode(s: &str) -> Result<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c)
            .context("invalid base64 in the histogram log")? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// The percentile table `nfpg hist` prints.
pub fn table(merged: &BTreeMap<String, Histogram<u64>>, intervals: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{intervals} intervals");
    let _ = writeln!(
        out,
        "{:<16} {:>6} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "stage", "unit", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    for stage in Stage::ALL {
        if let Some(h) = merged.get(stage.tag()) {
            let p = Percentiles::of(h);
            let _ = writeln!(
                out,
                "{:<16} {:>6} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10}",
                stage.tag(),
                stage.unit(),
                p.count,
                p.p50,
                p.p90,
                p.p99,
                p.p999,
                p.max
            );
        }
    }
    out
}

/// Latency by percentile for the time stages, as an SVG document.
pub fn svg(merged: &BTreeMap<String, Histogram<u64>>, title: &str) -> String {
    const W: f64 = 900.0;
    const H: f64 = 520.0;
    const LEFT: f64 = 80.0;
    const RIGHT: f64 = 180.0;
    const TOP: f64 = 50.0;
    const BOTTOM: f64 = 60.0;
    const NINES: f64 = 5.0; // up to 99.999%
    let stages = [
        Stage::EndToEnd,
        Stage::ReceiveToSeal,
        Stage::QueueWait,
        Stage::Copy,
    ];
    let colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];
    let points = 200;
    let x_of = |q: f64| LEFT + (W - LEFT - RIGHT) * ((1.0 / (1.0 - q)).log10() / NINES).min(1.0);
    let max_ms = stages
        .iter()
        .filter_map(|s| merged.get(s.tag()))
        .map(|h| h.value_at_quantile(1.0 - 10f64.powf(-NINES)) as f64 / 1000.0)
        .fold(0.0f64, f64::max)
        .max(1.0);
    let y_top = nice_ceiling(max_ms);
    let y_of = |ms: f64| H - BOTTOM - (H - TOP - BOTTOM) * (ms / y_top).min(1.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="25" font-size="15" text-anchor="middle">{}</text>"#,
        (W - RIGHT + LEFT) / 2.0,
        escape(title)
    );
    for i in 0..=5 {
        let ms = y_top * f64::from(i) / 5.0;
        let y = y_of(ms);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/>"##,
            W - RIGHT
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y + 4.0,
            trim(ms)
        );
    }
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let q = 1.0 - 10f64.powi(-(i as i32));
        let x = x_of(if i == 0 { 0.0 } else { q });
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}" stroke="#ddd"/>"##,
            H - BOTTOM
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"#,
            H - BOTTOM + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        (W - RIGHT + LEFT) / 2.0,
        H - 15.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(20,{}) rotate(-90)" text-anchor="middle">latency (ms)</text>"#,
        (H - BOTTOM + TOP) / 2.0
    );
    for (n, (stage, color)) in stages.iter().zip(colors).enumerate() {
        let Some(h) = merged.get(stage.tag()).filter(|h| !h.is_empty()) else {
            continue;
        };
        let mut path = String::new();
        for i in 0..=points {
            let q = 1.0 - 10f64.powf(-NINES * f64::from(i) / f64::from(points));
            let ms = h.value_at_quantile(q) as f64 / 1000.0;
            let _ = write!(
                path,
                "{}{:.1},{:.1} ",
                if i == 0 { "M" } else { "L" },
                x_of(q),
                y_of(ms)
            );
        }
        let _ = writeln!(
            s,
            r#"<path d="{path}" fill="none" stroke="{color}" stroke-width="2"/>"#
        );
        let ly = TOP + 20.0 + 22.0 * n as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/>"#,
            W - RIGHT + 15.0,
            W - RIGHT + 40.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{}</text>"#,
            W - RIGHT + 46.0,
            ly + 4.0,
            stage.tag()
        );
    }
    s.push_str("</svg>\n");
    s
}

fn nice_ceiling(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * mag)
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("AAEC").unwrap(), vec![0, 1, 2]);
    }

    #[test]
    fn plot_has_a_line_per_stage() {
        let mut merged = BTreeMap::new();
        for stage in Stage::ALL {
            let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
            for v in 1..1000u64 {
                h.record(v * 100).unwrap();
            }
            merged.insert(stage.tag().to_string(), h);
        }
        let svg = svg(&merged, "test <run>");
        assert_eq!(svg.matches("<path").count(), 4);
        assert!(svg.contains("test &lt;run&gt;"));
        assert!(table(&merged, 3).contains("end_to_end"));
    }
}
