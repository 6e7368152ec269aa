//! Benchmark results: latency histograms, rows, and the table and JSON output.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency summary of one run, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Latency {
    pub fn from_histogram(histogram: &Histogram<u64>) -> Latency {
        let us = |nanos: u64| nanos as f64 / 1000.0;
        Latency {
            p50_us: us(histogram.value_at_quantile(0.50)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            p999_us: us(histogram.value_at_quantile(0.999)),
            max_us: us(histogram.max()),
        }
    }
}

/// A histogram of nanoseconds from 1 ns to 100 s at 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("static histogram bounds are valid")
}

/// One line of the results table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub concurrency: usize,
    pub operations: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub latency: Latency,
    /// Throughput relative to the baseline named in `baseline`, if any.
    pub ratio: Option<f64>,
    pub baseline: Option<String>,
    /// For a store with a log: writes per sync (group commit at work).
    pub writes_per_sync: Option<f64>,
}

impl Row {
    pub fn new(
        name: impl Into<String>,
        concurrency: usize,
        operations: u64,
        elapsed: Duration,
        histogram: &Histogram<u64>,
    ) -> Row {
        let seconds = elapsed.as_secs_f64();
        Row {
            name: name.into(),
            concurrency,
            operations,
            seconds,
            ops_per_sec: operations as f64 / seconds.max(1e-9),
            latency: Latency::from_histogram(histogram),
            ratio: None,
            baseline: None,
            writes_per_sync: None,
        }
    }

    pub fn compared_to(mut self, baseline: &Row) -> Row {
        self.ratio = Some(self.ops_per_sec / baseline.ops_per_sec.max(1e-9));
        self.baseline = Some(baseline.name.clone());
        self
    }
}

/// Formats a rate as 1.23M / 45.6k / 789.
pub fn human_rate(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2}M", rate / 1e6)
    } else if rate >= 1e4 {
        format!("{:.1}k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

fn human_micros(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1}ms", us / 1000.0)
    } else if us >= 10.0 {
        format!("{us:.0}µs")
    } else {
        format!("{us:.2}µs")
    }
}

/// Renders rows as a Markdown table (readable in a terminal and in BENCHMARKS.md).
pub fn table(rows: &[Row], concurrency_label: &str) -> String {
    let mut out = format!(
        "| {:<22} | {concurrency_label:>7} | {:>9} | {:>10} | {:>9} | {:>9} | {:>9} | {:>9} | {:>16} |\n",
        "run", "ops", "ops/s", "p50", "p99", "p999", "per sync", "vs baseline"
    );
    out.push_str(&format!(
        "|{:-<24}|{:->9}|{:->11}|{:->12}|{:->11}|{:->11}|{:->11}|{:->11}|{:->18}|\n",
        "", ":", ":", ":", ":", ":", ":", ":", ":"
    ));
    for row in rows {
        let ratio = match (&row.ratio, &row.baseline) {
            (Some(ratio), Some(baseline)) => format!("{ratio:.2}× {baseline}"),
            _ => String::new(),
        };
        let per_sync = row
            .writes_per_sync
            .map_or_else(String::new, |writes| format!("{writes:.1}"));
        out.push_str(&format!(
            "| {:<22} | {:>7} | {:>9} | {:>10} | {:>9} | {:>9} | {:>9} | {:>9} | {:>16} |\n",
            row.name,
            row.concurrency,
            row.operations,
            human_rate(row.ops_per_sec),
            human_micros(row.latency.p50_us),
            human_micros(row.latency.p99_us),
            human_micros(row.latency.p999_us),
            per_sync,
            ratio
        ));
    }
    out
}
