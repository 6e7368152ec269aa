//! Per-second figures of a timed load run — throughput, p99 latency (of all
//! requests, and of writes and reads apart), errors and the server's resident
//! memory — for the JSON report and the chart.
//!
//! Workers record into a [`SecondBuffer`] of their own and merge it into the
//! shared [`TimelineRecorder`] once per second, so the lock is taken about once a
//! second per worker, not once per request.

use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

/// One second of a run: requests that started in `[second, second + 1)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelinePoint {
    pub second: u32,
    /// Successful requests per second (the last second may be partial).
    pub ops_per_sec: f64,
    /// p99 latency of the successful requests; 0 when there were none.
    pub p99_us: f64,
    /// p99 latency of the successful writes, and of the reads; `None` in a
    /// second that had none of them.
    pub write_p99_us: Option<f64>,
    pub read_p99_us: Option<f64>,
    pub errors: u64,
    /// The server's resident memory at the start of the second, when measured.
    pub rss_bytes: Option<u64>,
}

/// A histogram for one second: 2 significant digits (1 % error) keep it small
/// enough to hold one per second of a long run.
fn second_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 2).expect("static histogram bounds are valid")
}

/// Which kind of request a latency belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Write,
    Read,
}

#[derive(Clone)]
struct Second {
    writes_ns: Histogram<u64>,
    reads_ns: Histogram<u64>,
    errors: u64,
}

impl Second {
    fn new() -> Second {
        Second {
            writes_ns: second_histogram(),
            reads_ns: second_histogram(),
            errors: 0,
        }
    }

    fn clear(&mut self) {
        self.writes_ns.reset();
        self.reads_ns.reset();
        self.errors = 0;
    }
}

/// The p99 of `histogram` in microseconds, `None` when it is empty.
fn p99_us(histogram: &Histogram<u64>) -> Option<f64> {
    (!histogram.is_empty()).then(|| histogram.value_at_quantile(0.99) as f64 / 1000.0)
}

/// The run's seconds, shared by all workers.
pub struct TimelineRecorder {
    seconds: Mutex<Vec<Second>>,
}

impl TimelineRecorder {
    /// Room for a run of `duration`; later seconds are dropped.
    pub fn new(duration: Duration) -> TimelineRecorder {
        let count = duration.as_secs_f64().ceil().max(1.0) as usize;
        TimelineRecorder {
            seconds: Mutex::new(vec![Second::new(); count]),
        }
    }

    fn merge(&self, index: usize, second: &Second) {
        let mut seconds = self.seconds.lock();
        if let Some(slot) = seconds.get_mut(index) {
            // All these histograms have the same bounds, so adding cannot fail.
            slot.writes_ns.add(&second.writes_ns).ok();
            slot.reads_ns.add(&second.reads_ns).ok();
            slot.errors += second.errors;
        }
    }

    /// The points of a run that lasted `elapsed`, with the RSS sample of each
    /// second from `rss_bytes` (indexed by second).
    pub fn points(&self, elapsed: Duration, rss_bytes: &[Option<u64>]) -> Vec<TimelinePoint> {
        let elapsed = elapsed.as_secs_f64();
        let seconds = self.seconds.lock();
        let count = (elapsed.ceil() as usize).clamp(1, seconds.len());
        (0..count)
            .map(|index| {
                let second = &seconds[index];
                let width = (elapsed - index as f64).clamp(1e-3, 1.0);
                let mut all = second.writes_ns.clone();
                all.add(&second.reads_ns).ok();
                TimelinePoint {
                    second: index as u32,
                    ops_per_sec: all.len() as f64 / width,
                    p99_us: p99_us(&all).unwrap_or(0.0),
                    write_p99_us: p99_us(&second.writes_ns),
                    read_p99_us: p99_us(&second.reads_ns),
                    errors: second.errors,
                    rss_bytes: rss_bytes.get(index).copied().flatten(),
                }
            })
            .collect()
    }
}

/// One worker's current second.
pub struct SecondBuffer {
    index: usize,
    second: Second,
}

impl Default for SecondBuffer {
    fn default() -> SecondBuffer {
        SecondBuffer {
            index: 0,
            second: Second::new(),
        }
    }
}

impl SecondBuffer {
    /// Records a request of `kind` that started `index` seconds into the run:
    /// its latency if it succeeded, else one error. Moving to a later second
    /// merges the buffer.
    pub fn record(
        &mut self,
        recorder: &TimelineRecorder,
        index: usize,
        kind: Kind,
        latency: Duration,
        success: bool,
    ) {
        if index != self.index {
            self.flush(recorder);
            self.index = index;
        }
        if success {
            let nanos = latency.as_nanos().min(u64::MAX as u128) as u64;
            match kind {
                Kind::Write => self.second.writes_ns.saturating_record(nanos),
                Kind::Read => self.second.reads_ns.saturating_record(nanos),
            }
        } else {
            self.second.errors += 1;
        }
    }

    /// Merges what the buffer holds into `recorder` and empties it.
    pub fn flush(&mut self, recorder: &TimelineRecorder) {
        recorder.merge(self.index, &self.second);
        self.second.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_workers_per_second() {
        let recorder = TimelineRecorder::new(Duration::from_secs(3));
        let mut first = SecondBuffer::default();
        let mut second = SecondBuffer::default();
        for _ in 0..10 {
            first.record(&recorder, 0, Kind::Write, Duration::from_micros(100), true);
        }
        first.record(&recorder, 0, Kind::Read, Duration::from_micros(10), true);
        first.record(&recorder, 1, Kind::Read, Duration::from_micros(200), true);
        second.record(&recorder, 1, Kind::Write, Duration::ZERO, false);
        second.record(&recorder, 7, Kind::Write, Duration::from_micros(5), true);
        first.flush(&recorder);
        second.flush(&recorder);

        let points = recorder.points(Duration::from_millis(2500), &[Some(4096), None]);
        assert_eq!(points.len(), 3);
        assert_eq!(points[0].ops_per_sec, 11.0);
        assert!((points[0].p99_us - 100.0).abs() < 1.0);
        assert!((points[0].write_p99_us.unwrap() - 100.0).abs() < 1.0);
        assert!((points[0].read_p99_us.unwrap() - 10.0).abs() < 0.2);
        assert_eq!(points[0].rss_bytes, Some(4096));
        assert_eq!((points[1].ops_per_sec, points[1].errors), (1.0, 1));
        // A failed write is an error, not a latency.
        assert_eq!(points[1].write_p99_us, None);
        assert!(points[1].read_p99_us.is_some());
        assert_eq!(points[2].ops_per_sec, 0.0);
        assert_eq!(points[2].rss_bytes, None);
    }

    #[test]
    fn a_partial_last_second_counts_as_a_rate() {
        let recorder = TimelineRecorder::new(Duration::from_secs(10));
        let mut buffer = SecondBuffer::default();
        for _ in 0..5 {
            buffer.record(&recorder, 0, Kind::Read, Duration::from_micros(1), true);
        }
        buffer.flush(&recorder);
        let points = recorder.points(Duration::from_millis(500), &[]);
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].ops_per_sec, 10.0);
    }
}
