//! What `walrus verify` shows: a progress bar while it runs, a one-screen
//! summary, and with `--report DIR` the history (JSON lines; the bank's
//! transfers and reads in `bank.json`), the report (JSON) and a
//! self-contained HTML timeline of the smallest failing key.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::VerifyReport;
use super::checker::{Action, Operation};
use super::workload::Recorder;

pub fn progress_bar(duration: Duration) -> ProgressBar {
    let bar = ProgressBar::new(duration.as_secs().max(1));
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} s  {msg}") {
        bar.set_style(style);
    }
    bar
}

pub fn update_progress(bar: &ProgressBar, started: Instant, recorder: &Recorder) {
    bar.set_position(
        started
            .elapsed()
            .as_secs()
            .min(bar.length().unwrap_or(u64::MAX)),
    );
    bar.set_message(format!(
        "{} ops, {} unknown",
        recorder.done.load(Ordering::Relaxed),
        recorder.unknown.load(Ordering::Relaxed)
    ));
}

impl VerifyReport {
    /// The one-screen summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "walrus verify (seed {})", self.seed);
        let _ = writeln!(out, "  endpoints        {}", self.endpoints.join(", "));
        let _ = writeln!(
            out,
            "  operations       {} on {} keys ({} with unknown outcome)",
            self.operations, self.keys, self.unknown_outcomes
        );
        let faults = if self.faults.is_empty() {
            "none".to_string()
        } else {
            self.faults
                .iter()
                .map(|fault| format!("{:?}@{}ms(node {})", fault.fault, fault.at_ms, fault.node))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(out, "  faults           {faults}");
        let _ = writeln!(out, "  checked in       {} ms", self.check_millis);
        for check in &self.checks {
            let verdict = if check.passed { "PASS" } else { "FAIL" };
            let _ = writeln!(out, "  {verdict}  {:<26} {}", check.name, check.detail);
        }
        if let Some(key) = self.failing_keys.first() {
            let _ = writeln!(
                out,
                "  first failing key: {key} (--report DIR draws its timeline)"
            );
        }
        let _ = writeln!(
            out,
            "verdict: {}",
            if self.passed { "PASS" } else { "FAIL" }
        );
        out
    }
}

/// Writes `history.jsonl`, `report.json`, and `timeline.html` for the failing
/// key with the fewest operations (if any key failed).
pub fn write_report_dir(report: &VerifyReport, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut history = String::new();
    for op in &report.history {
        history.push_str(&serde_json::to_string(op).map_err(std::io::Error::other)?);
        history.push('\n');
    }
    std::fs::write(dir.join("history.jsonl"), history)?;
    if let Some(bank) = &report.bank {
        let json = serde_json::to_string(bank).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("bank.json"), json)?;
    }
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("report.json"), json)?;
    let smallest = report
        .failing_keys
        .iter()
        .min_by_key(|key| report.history.iter().filter(|op| &op.key == *key).count());
    if let Some(key) = smallest {
        let ops: Vec<&Operation> = report.history.iter().filter(|op| &op.key == key).collect();
        std::fs::write(dir.join("timeline.html"), timeline_html(key, &ops))?;
    }
    Ok(())
}

fn describe(op: &Operation) -> String {
    let text = match &op.action {
        Action::Get { value: Some(value) } => format!("get → {}", short(value)),
        Action::Get { value: None } => "get → not found".into(),
        Action::Put { value } => format!("put {}", short(value)),
        Action::Delete => "delete".into(),
        Action::Cas {
            expected,
            value,
            succeeded,
        } => format!(
            "cas {}→{} {}",
            expected.as_deref().map_or("absent".into(), short),
            short(value),
            if *succeeded { "ok" } else { "refused" }
        ),
        Action::Incr { value: Some(value) } => format!("incr → {value}"),
        Action::Incr { value: None } if op.completed_ns.is_some() => "incr → not an integer".into(),
        Action::Incr { value: None } => "incr".into(),
    };
    if op.completed_ns.is_none() {
        format!("{text} (unknown)")
    } else {
        text
    }
}

fn short(value: &str) -> String {
    value.split('-').take(2).collect::<Vec<_>>().join("-")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One row per client, one bar per operation from invocation to completion
/// (to the right edge when unknown).
fn timeline_html(key: &str, ops: &[&Operation]) -> String {
    let start = ops.iter().map(|op| op.invoked_ns).min().unwrap_or(0);
    let end = ops
        .iter()
        .map(|op| op.completed_ns.unwrap_or(op.invoked_ns))
        .max()
        .unwrap_or(start + 1)
        .max(start + 1);
    let mut clients: Vec<u64> = ops.iter().map(|op| op.client).collect();
    clients.sort_unstable();
    clients.dedup();
    let width = 1200.0;
    let row = 34.0;
    let x = |ns: u64| {
        150.0 + (ns.saturating_sub(start)) as f64 / (end - start) as f64 * (width - 170.0)
    };
    let mut svg = String::new();
    let height = row * clients.len() as f64 + 40.0;
    let _ = write!(
        svg,
        "<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-family='monospace' font-size='11'>"
    );
    for (index, client) in clients.iter().enumerate() {
        let y = 20.0 + row * index as f64;
        let _ = write!(svg, "<text x='4' y='{}'>client {client}</text>", y + 14.0);
        for op in ops.iter().filter(|op| op.client == *client) {
            let left = x(op.invoked_ns);
            let right = op.completed_ns.map_or(width - 20.0, x).max(left + 2.0);
            let color = match (&op.action, op.completed_ns) {
                (_, None) => "#bbbbbb",
                (Action::Get { .. }, _) => "#7fb3e0",
                (Action::Cas { .. }, _) => "#e0b37f",
                (Action::Incr { .. }, _) => "#c9a0dc",
                _ => "#8fd18f",
            };
            let _ = write!(
                svg,
                "<rect x='{left:.1}' y='{y}' width='{:.1}' height='18' fill='{color}' stroke='#333'><title>{}</title></rect>\
                 <text x='{:.1}' y='{}'>{}</text>",
                right - left,
                escape(&format!(
                    "{} [{} – {:?}] via {}",
                    describe(op),
                    op.invoked_ns,
                    op.completed_ns,
                    op.endpoint
                )),
                left + 2.0,
                y + 30.0,
                escape(&describe(op))
            );
        }
    }
    svg.push_str("</svg>");
    format!(
        "<!doctype html><html><head><meta charset='utf-8'><title>walrus verify: {key}</title></head>\
         <body><h1>Key {key}: no linearizable order exists</h1>\
         <p>Each bar runs from when the request was sent to when its answer arrived (grey: unknown outcome, \
         drawn to the end). Hover a bar for exact times. Green: writes, blue: reads, orange: compare-and-swap.</p>\
         {svg}</body></html>",
        key = escape(key)
    )
}
