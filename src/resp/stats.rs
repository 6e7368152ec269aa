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

use super::cmd::SPECS;
use super::frame::Reply;
use crate::metrics::{Histogram, LATENCY_BUCKETS, family, label_value, sample};

struct Counters {
    calls: AtomicU64,
    usec: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    /// Seconds from arrival to reply, for `/metrics` (not reset by
    /// `CONFIG RESETSTAT`, which is Redis's and clears only the counters).
    latency: Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            calls: AtomicU64::new(0),
            usec: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            latency: Histogram::new(LATENCY_BUCKETS),
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
    pub name: &'static str,
    /// Calls timed.
    pub calls: u64,
    /// (upper bound in microseconds, calls up to it), cumulative.
    pub buckets: Vec<(u64, u64)>,
}

/// The counters; `Debug` shows only their size.
pub struct CommandStats {
    /// One per entry of [`SPECS`], same order.
    commands: Vec<Counters>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Default for CommandStats {
    fn default() -> Self {
        CommandStats {
            commands: SPECS.iter().map(|_| Counters::default()).collect(),
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
    /// Counts one command (by its index in [`SPECS`], if it has one) and its
    /// reply.
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
            SPECS.iter().zip(&self.commands).filter(|(_, counters)| {
                counters.calls.load(Ordering::Relaxed) > 0
                    || counters.rejected.load(Ordering::Relaxed) > 0
            })
        };
        for (spec, counters) in used() {
            let calls = counters.calls.load(Ordering::Relaxed);
            let failed = counters.failed.load(Ordering::Relaxed);
            let rejected = counters.rejected.load(Ordering::Relaxed);
            for (outcome, count) in [
                ("ok", calls.saturating_sub(failed)),
                ("failed", failed),
                ("rejected", rejected),
            ] {
                let labels = format!("command=\"{}\",outcome=\"{outcome}\"", spec.name);
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
        for (spec, counters) in used() {
            if counters.latency.count() > 0 {
                let labels = format!("command=\"{}\"", spec.name);
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
    /// used when `names` is empty): the calls timed, and for each bucket
    /// from the first that holds a call to the first that holds them all,
    /// its upper bound in microseconds and the calls up to it.
    pub fn histograms(&self, names: &[String]) -> Vec<CommandHistogram> {
        SPECS
            .iter()
            .zip(&self.commands)
            .filter(|(spec, _)| names.is_empty() || names.iter().any(|name| name == spec.name))
            .filter_map(|(spec, counters)| {
                let calls = counters.latency.count();
                if calls == 0 {
                    return None;
                }
                let buckets = counters
                    .latency
                    .cumulative()
                    .into_iter()
                    .skip_while(|&(_, up_to)| up_to == 0)
                    .scan(false, |full, (bound, up_to)| {
                        // Stop after the first bucket that holds every call.
                        let seen_all = *full;
                        *full = up_to == calls;
                        (!seen_all).then_some(((bound * 1e6).round() as u64, up_to))
                    })
                    .collect();
                Some(CommandHistogram {
                    name: spec.name,
                    calls,
                    buckets,
                })
            })
            .collect()
    }

    /// The `# Commandstats` section: one line per command used.
    pub fn write_commandstats(&self, out: &mut String) {
        out.push_str("# Commandstats\r\n");
        for (spec, counters) in SPECS.iter().zip(&self.commands) {
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
                "cmdstat_{}:calls={calls},usec={usec},usec_per_call={per_call:.2},\
                 rejected_calls={rejected},failed_calls={}\r\n",
                spec.name,
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
        SPECS.iter().position(|spec| spec.name == name)
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
}
