//! Per-command and per-error counters: what `INFO commandstats` and `INFO
//! errorstats` report, as Redis counts them, and what `CONFIG RESETSTAT`
//! clears.
//!
//! A command is counted once its reply is known: `calls` and the time from
//! its arrival to its reply (for a pipelined write, until its sync), and
//! `rejected_calls` when it was refused before running (unknown command,
//! wrong arity, no authentication) or `failed_calls` when it ran and answered
//! an error. Errors are also counted by their code (`ERR`, `WRONGPASS`,
//! `EXECABORT`…).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::cmd::stat_names;
use super::frame::Reply;
use crate::metrics::{Histogram, LATENCY_BUCKETS, family, label_value, sample};

struct Counters {
    calls: AtomicU64,
    usec: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    /// Seconds from arrival to reply, for `/metrics`, where a histogram
    /// only grows.
    latency: Histogram,
    /// `latency`'s bucket counts at the last `CONFIG RESETSTAT`: LATENCY
    /// HISTOGRAM shows what came since, as Redis resets its histograms.
    latency_at_reset: Mutex<Vec<u64>>,
    /// The same times for INFO latencystats' percentiles, in nanoseconds, as
    /// Redis keeps them: made at the first call timed while latency tracking
    /// is on, emptied by `CONFIG RESETSTAT`.
    percentiles: Mutex<Option<PreciseHistogram>>,
}

/// An HDR histogram of 1 ns to 1 s with two significant figures, as Redis
/// keeps one per command; longer times count as 1 s.
type PreciseHistogram = hdrhistogram::Histogram<u64>;

fn precise_histogram() -> Option<PreciseHistogram> {
    PreciseHistogram::new_with_bounds(1, 1_000_000_000, 2).ok()
}

/// The percentiles INFO latencystats reports by default
/// (`latency-tracking-info-percentiles`), as in Redis.
pub const DEFAULT_PERCENTILES: [f64; 3] = [50.0, 99.0, 99.9];

impl Default for Counters {
    fn default() -> Self {
        Counters {
            calls: AtomicU64::new(0),
            usec: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            latency: Histogram::new(LATENCY_BUCKETS),
            latency_at_reset: Mutex::new(Vec::new()),
            percentiles: Mutex::new(None),
        }
    }
}

/// How a command ended, for its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ran {
    /// It ran; its reply says whether it failed.
    Yes,
    /// It was refused before running.
    Rejected,
}

/// One command's latency histogram as `LATENCY HISTOGRAM` shows it.
pub struct CommandHistogram {
    /// The command, or `container|subcommand`.
    pub name: &'static str,
    /// Calls timed.
    pub calls: u64,
    /// (upper bound in microseconds, calls up to it), cumulative.
    pub buckets: Vec<(u64, u64)>,
}

/// The counters; `Debug` shows only their size.
pub struct CommandStats {
    /// One per stat index (`cmd::stat_names`): each command, then each
    /// `container|subcommand`.
    commands: Vec<Counters>,
    errors: Mutex<BTreeMap<String, u64>>,
    /// `latency-tracking`: whether commands' times go into the histograms
    /// INFO latencystats reads. Off by default, unlike Redis: recording
    /// costs about 1.8 % more instructions per GET (BENCHMARKS.md).
    tracking: AtomicBool,
    /// `latency-tracking-info-percentiles`.
    reported: Mutex<Vec<f64>>,
}

impl Default for CommandStats {
    fn default() -> Self {
        CommandStats {
            commands: stat_names().iter().map(|_| Counters::default()).collect(),
            errors: Mutex::new(BTreeMap::new()),
            tracking: AtomicBool::new(false),
            reported: Mutex::new(DEFAULT_PERCENTILES.to_vec()),
        }
    }
}

impl std::fmt::Debug for CommandStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandStats")
            .field("commands", &self.commands.len())
            .finish_non_exhaustive()
    }
}

impl CommandStats {
    /// Counts one command (by its stat index, `cmd::stat_index`, if it has
    /// one) and its reply.
    pub fn record(&self, command: Option<usize>, ran: Ran, elapsed: Duration, reply: &Reply) {
        let error_code = match reply {
            Reply::Error(text) => Some(text.split(' ').next().unwrap_or("ERR")),
            _ => None,
        };
        if let Some(code) = error_code {
            *self.errors.lock().entry(code.to_string()).or_insert(0) += 1;
        }
        let Some(counters) = command.and_then(|index| self.commands.get(index)) else {
            return;
        };
        match (ran, error_code) {
            (Ran::Rejected, _) => {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
            }
            (Ran::Yes, failed) => {
                counters.calls.fetch_add(1, Ordering::Relaxed);
                let usec = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
                counters.usec.fetch_add(usec, Ordering::Relaxed);
                counters.latency.observe(elapsed.as_secs_f64());
                if self.tracking.load(Ordering::Relaxed) {
                    let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
                    let mut precise = counters.percentiles.lock();
                    if precise.is_none() {
                        *precise = precise_histogram();
                    }
                    if let Some(precise) = precise.as_mut() {
                        precise.saturating_record(nanos);
                    }
                }
                if failed.is_some() {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Counts one command that ran (as [`record`](Self::record) with
    /// [`Ran::Yes`]).
    pub fn record_run(&self, command: Option<usize>, elapsed: Duration, reply: &Reply) {
        self.record(command, Ran::Yes, elapsed, reply);
    }

    /// `CONFIG RESETSTAT`.
    pub fn reset(&self) {
        for counters in &self.commands {
            for counter in [
                &counters.calls,
                &counters.usec,
                &counters.rejected,
                &counters.failed,
            ] {
                counter.store(0, Ordering::Relaxed);
            }
            *counters.latency_at_reset.lock() = counters.latency.bucket_counts();
            *counters.percentiles.lock() = None;
        }
        self.errors.lock().clear();
    }

    /// Errors answered since the start or the last reset.
    pub fn total_errors(&self) -> u64 {
        self.errors.lock().values().sum()
    }

    /// The `walrus_resp_commands_total`, `walrus_resp_command_duration_seconds`
    /// and `walrus_resp_errors_total` families, for the commands used.
    pub fn render_metrics(&self, out: &mut String) {
        family(
            out,
            "walrus_resp_commands_total",
            "counter",
            "RESP commands by name and outcome: ok, failed (ran and answered an error), \
             rejected (refused before running). CONFIG RESETSTAT resets them.",
        );
        let used = || {
            stat_names()
                .iter()
                .zip(&self.commands)
                .filter(|(_, counters)| {
                    counters.calls.load(Ordering::Relaxed) > 0
                        || counters.rejected.load(Ordering::Relaxed) > 0
                })
        };
        for (name, counters) in used() {
            let calls = counters.calls.load(Ordering::Relaxed);
            let failed = counters.failed.load(Ordering::Relaxed);
            let rejected = counters.rejected.load(Ordering::Relaxed);
            for (outcome, count) in [
                ("ok", calls.saturating_sub(failed)),
                ("failed", failed),
                ("rejected", rejected),
            ] {
                let labels = format!("command=\"{name}\",outcome=\"{outcome}\"");
                sample(out, "walrus_resp_commands_total", &labels, count);
            }
        }
        family(
            out,
            "walrus_resp_command_duration_seconds",
            "histogram",
            "RESP command latency by name, from arrival to reply (a pipelined write: until \
             its sync).",
        );
        for (name, counters) in used() {
            if counters.latency.count() > 0 {
                let labels = format!("command=\"{name}\"");
                counters
                    .latency
                    .render(out, "walrus_resp_command_duration_seconds", &labels);
            }
        }
        family(
            out,
            "walrus_resp_errors_total",
            "counter",
            "RESP error replies by error code (ERR, WRONGTYPE, EXECABORT, ...).",
        );
        for (code, count) in self.errors.lock().iter() {
            let labels = format!("code=\"{}\"", label_value(code));
            sample(out, "walrus_resp_errors_total", &labels, *count);
        }
    }

    /// `LATENCY HISTOGRAM`'s figures for each command named (every command
    /// used when `names` is empty; a container, such as `client`, stands for
    /// its subcommands too): the calls timed since the last reset, and for
    /// each bucket from the first that holds a call to the first that holds
    /// them all, its upper bound in microseconds and the calls up to it.
    pub fn histograms(&self, names: &[String]) -> Vec<CommandHistogram> {
        let asked = |stat: &str| {
            names.is_empty()
                || names.iter().any(|name| {
                    stat == name
                        || stat
                            .strip_prefix(name.as_str())
                            .is_some_and(|rest| rest.starts_with('|'))
                })
        };
        stat_names()
            .iter()
            .zip(&self.commands)
            .filter(|(stat, _)| asked(stat))
            .filter_map(|(stat, counters)| {
                let since_reset: Vec<u64> = {
                    let at_reset = counters.latency_at_reset.lock();
                    let at_reset = at_reset.iter().chain(std::iter::repeat(&0));
                    (counters.latency.bucket_counts().into_iter())
                        .zip(at_reset)
                        .map(|(now, then)| now.saturating_sub(*then))
                        .collect()
                };
                let calls: u64 = since_reset.iter().sum();
                if calls == 0 {
                    return None;
                }
                let buckets = counters
                    .latency
                    .bounds()
                    .iter()
                    .zip(&since_reset)
                    .scan(0, |total, (&bound, &count)| {
                        *total += count;
                        Some((bound, *total))
                    })
                    .skip_while(|&(_, up_to)| up_to == 0)
                    .scan(false, |full, (bound, up_to)| {
                        // Stop after the first bucket that holds every call.
                        let seen_all = *full;
                        *full = up_to == calls;
                        (!seen_all).then_some(((bound * 1e6).round() as u64, up_to))
                    })
                    .collect();
                Some(CommandHistogram {
                    name: stat,
                    calls,
                    buckets,
                })
            })
            .collect()
    }

    /// The `# Commandstats` section: one line per command used.
    pub fn write_commandstats(&self, out: &mut String) {
        out.push_str("# Commandstats\r\n");
        for (name, counters) in stat_names().iter().zip(&self.commands) {
            let calls = counters.calls.load(Ordering::Relaxed);
            let rejected = counters.rejected.load(Ordering::Relaxed);
            if calls == 0 && rejected == 0 {
                continue;
            }
            let usec = counters.usec.load(Ordering::Relaxed);
            let per_call = if calls == 0 {
                0.0
            } else {
                usec as f64 / calls as f64
            };
            let _ = write!(
                out,
                "cmdstat_{name}:calls={calls},usec={usec},usec_per_call={per_call:.2},\
                 rejected_calls={rejected},failed_calls={}\r\n",
                counters.failed.load(Ordering::Relaxed)
            );
        }
        out.push_str("\r\n");
    }

    /// `latency-tracking`: whether commands are timed for INFO latencystats.
    pub fn tracking(&self) -> bool {
        self.tracking.load(Ordering::Relaxed)
    }

    pub fn set_tracking(&self, on: bool) {
        self.tracking.store(on, Ordering::Relaxed);
    }

    /// `latency-tracking-info-percentiles` as CONFIG GET shows it: `50 99 99.9`.
    pub fn reported_percentiles_text(&self) -> String {
        self.reported
            .lock()
            .iter()
            .map(|&percentile| percentile_label(percentile))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn set_reported_percentiles(&self, percentiles: Vec<f64>) {
        *self.reported.lock() = percentiles;
    }

    /// The `# Latencystats` section: for each command timed since the last
    /// reset, its time at each reported percentile, in microseconds (none
    /// while tracking is off, as in Redis).
    pub fn write_latencystats(&self, out: &mut String) {
        out.push_str("# Latencystats\r\n");
        if self.tracking() {
            let reported = self.reported.lock().clone();
            for (name, counters) in stat_names().iter().zip(&self.commands) {
                let precise = counters.percentiles.lock();
                let Some(precise) = precise.as_ref().filter(|precise| !precise.is_empty()) else {
                    continue;
                };
                let figures: Vec<String> = reported
                    .iter()
                    .map(|&percentile| {
                        let micros = precise.value_at_percentile(percentile) as f64 / 1000.0;
                        format!("p{}={micros:.3}", percentile_label(percentile))
                    })
                    .collect();
                let _ = write!(
                    out,
                    "latency_percentiles_usec_{name}:{}\r\n",
                    figures.join(",")
                );
            }
        }
        out.push_str("\r\n");
    }

    /// The `# Errorstats` section: one line per error code answered.
    pub fn write_errorstats(&self, out: &mut String) {
        out.push_str("# Errorstats\r\n");
        for (code, count) in self.errors.lock().iter() {
            let _ = write!(out, "errorstat_{code}:count={count}\r\n");
        }
        out.push_str("\r\n");
    }
}

/// A percentile as Redis names it: `50`, `99.9`, no trailing zeros.
fn percentile_label(percentile: f64) -> String {
    let text = format!("{percentile:.6}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(name: &str) -> Option<usize> {
        stat_names().iter().position(|stat| stat == name)
    }

    #[test]
    fn calls_failures_rejections_and_error_codes_are_counted_and_reset() {
        let stats = CommandStats::default();
        let micros = Duration::from_micros(30);
        stats.record(index("get"), Ran::Yes, micros, &Reply::Null);
        stats.record(index("get"), Ran::Yes, micros, &Reply::Null);
        stats.record(
            index("incr"),
            Ran::Yes,
            micros,
            &Reply::err("not an integer"),
        );
        stats.record(
            index("get"),
            Ran::Rejected,
            micros,
            &Reply::err("wrong arity"),
        );
        stats.record(None, Ran::Rejected, micros, &Reply::err("unknown command"));
        let mut text = String::new();
        stats.write_commandstats(&mut text);
        assert!(text.contains(
            "cmdstat_get:calls=2,usec=60,usec_per_call=30.00,rejected_calls=1,failed_calls=0"
        ));
        assert!(text.contains(
            "cmdstat_incr:calls=1,usec=30,usec_per_call=30.00,rejected_calls=0,failed_calls=1"
        ));
        let mut errors = String::new();
        stats.write_errorstats(&mut errors);
        assert!(errors.contains("errorstat_ERR:count=3"), "{errors}");
        assert_eq!(stats.total_errors(), 3);
        stats.reset();
        let mut text = String::new();
        stats.write_commandstats(&mut text);
        assert_eq!(text, "# Commandstats\r\n\r\n");
        assert_eq!(stats.total_errors(), 0);
    }

    #[test]
    fn latency_histograms_start_again_at_a_reset_while_metrics_keep_growing() {
        let stats = CommandStats::default();
        let get = index("get");
        stats.record(get, Ran::Yes, Duration::from_micros(30), &Reply::Null);
        stats.record(get, Ran::Yes, Duration::from_millis(3), &Reply::Null);
        let before = stats.histograms(&[]);
        assert_eq!(before.len(), 1);
        assert_eq!(before[0].calls, 2);
        // The first bucket holding a call, through the first holding both.
        assert_eq!(before[0].buckets.first(), Some(&(50, 1)));
        assert_eq!(before[0].buckets.last(), Some(&(5_000, 2)));
        stats.reset();
        assert!(stats.histograms(&["get".to_string()]).is_empty());
        stats.record(get, Ran::Yes, Duration::from_millis(3), &Reply::Null);
        let after = stats.histograms(&[]);
        assert_eq!(after[0].calls, 1);
        assert_eq!(after[0].buckets, vec![(5_000, 1)]);
        let mut metrics = String::new();
        stats.render_metrics(&mut metrics);
        let mut latencystats = String::new();
        stats.write_latencystats(&mut latencystats);
        assert_eq!(latencystats, "# Latencystats\r\n\r\n", "tracking is off");
        assert!(
            metrics.contains("walrus_resp_command_duration_seconds_count{command=\"get\"} 3"),
            "{metrics}"
        );
    }

    #[test]
    fn latencystats_give_each_command_s_percentiles_while_tracking_is_on() {
        let stats = CommandStats::default();
        let get = index("get");
        stats.set_tracking(true);
        for micros in 1..=100 {
            stats.record(get, Ran::Yes, Duration::from_micros(micros), &Reply::Null);
        }
        stats.set_reported_percentiles(vec![50.0, 99.9]);
        let mut text = String::new();
        stats.write_latencystats(&mut text);
        // Two significant figures: 50 µs and 100 µs come back within 1 %.
        let line = text.lines().nth(1).expect(&text);
        let figures = line
            .strip_prefix("latency_percentiles_usec_get:")
            .expect(&text);
        let (p50, p999) = figures.split_once(',').expect(&text);
        let value = |figure: &str, label: &str| -> f64 {
            figure
                .strip_prefix(label)
                .and_then(|value| value.parse().ok())
                .expect(figure)
        };
        assert!((49.5..=50.5).contains(&value(p50, "p50=")), "{text}");
        assert!((99.0..=101.0).contains(&value(p999, "p99.9=")), "{text}");
        stats.reset();
        let mut text = String::new();
        stats.write_latencystats(&mut text);
        assert_eq!(text, "# Latencystats\r\n\r\n", "a reset empties them");
    }

    #[test]
    fn percentiles_are_named_without_trailing_zeros() {
        assert_eq!(percentile_label(50.0), "50");
        assert_eq!(percentile_label(99.9), "99.9");
        assert_eq!(percentile_label(99.99), "99.99");
        assert_eq!(percentile_label(0.5), "0.5");
    }
}
