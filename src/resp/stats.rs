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
use std::sync::atomic::{AtomicU64, Ordering};
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
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            calls: AtomicU64::new(0),
            usec: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            latency: Histogram::new(LATENCY_BUCKETS),
            latency_at_reset: Mutex::new(Vec::new()),
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
}

impl Default for CommandStats {
    fn default() -> Self {
        CommandStats {
            commands: stat_names().iter().map(|_| Counters::default()).collect(),
            errors: Mutex::new(BTreeMap::new()),
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

    /// The `# Errorstats` section: one line per error code answered.
    pub fn write_errorstats(&self, out: &mut String) {
        out.push_str("# Errorstats\r\n");
        for (code, count) in self.errors.lock().iter() {
            let _ = write!(out, "errorstat_{code}:count={count}\r\n");
        }
        out.push_str("\r\n");
    }
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
        assert!(
            metrics.contains("walrus_resp_command_duration_seconds_count{command=\"get\"} 3"),
            "{metrics}"
        );
    }
}
