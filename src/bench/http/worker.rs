//! One benchmark connection: a task with one keep-alive connection that sends
//! requests back to back until the run's end (or its request budget), timing each.
//!
//! A request that fails at the transport (connect, timeout, broken connection) is
//! an error and the next one opens a fresh connection; a response is an error
//! unless its status is 2xx (or a 404 for a GET of a key nobody wrote).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use http::{HeaderMap, StatusCode};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::workload::{Op, Workload};
use crate::bench::report::new_histogram;
use crate::bench::timeline::{Kind, SecondBuffer, TimelineRecorder};
use crate::client::{ClientError, Connection, Endpoint, Response};

/// How long a connection waits after failing to connect before trying again, so
/// a dead endpoint costs a bounded number of attempts.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// How to reach the servers and what to send them.
pub struct Traffic {
    pub workload: Workload,
    pub headers: HeaderMap,
    pub tls: Option<TlsConnector>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl Traffic {
    /// Opens a connection to `endpoint` within the connect timeout.
    pub async fn connect(&self, endpoint: &Arc<Endpoint>) -> Result<Connection, ClientError> {
        let opened = Connection::open(endpoint.clone(), self.tls.as_ref());
        tokio::time::timeout(self.connect_timeout, opened)
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::Connect {
                    endpoint: endpoint.url().to_string(),
                    cause: std::io::ErrorKind::TimedOut.into(),
                })
            })
    }

    /// Sends `op` on `key` over `connection` within the request timeout.
    pub async fn send(
        &self,
        connection: &mut Connection,
        op: Op,
        key: u64,
    ) -> Result<Response, ClientError> {
        let planned = self.workload.request(op, key, connection.endpoint());
        let sent = connection.send(planned.method, &planned.target, &self.headers, planned.body);
        tokio::time::timeout(self.request_timeout, sent)
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::Timeout {
                    endpoint: connection.endpoint().url().to_string(),
                    timeout_ms: self.request_timeout.as_millis(),
                })
            })
    }
}

/// What all the workers of a measured run share.
pub struct Shared {
    pub traffic: Arc<Traffic>,
    pub timeline: TimelineRecorder,
    /// Measured requests so far, for the progress bar.
    pub completed: Arc<AtomicU64>,
    /// Requests that start before this are warm-up and not recorded.
    pub measure_start: Instant,
    /// No request starts at or after this.
    pub end: Instant,
    /// Count a GET's 404 as a success: the keys were not written first.
    pub not_found_is_success: bool,
}

impl Shared {
    fn is_success(&self, op: Op, status: StatusCode) -> bool {
        status.is_success()
            || (op == Op::Get && status == StatusCode::NOT_FOUND && self.not_found_is_success)
    }
}

/// The results of one operation type.
pub struct OpTally {
    /// Latency of the successful requests, in nanoseconds.
    pub latency_ns: Histogram<u64>,
    /// Responses by status code, successes included.
    pub statuses: BTreeMap<u16, u64>,
    /// Failed requests: error statuses and transport failures.
    pub errors: u64,
    /// Requests that got no response.
    pub transport_errors: u64,
    pub first_error: Option<String>,
}

impl Default for OpTally {
    fn default() -> OpTally {
        OpTally {
            latency_ns: new_histogram(),
            statuses: BTreeMap::new(),
            errors: 0,
            transport_errors: 0,
            first_error: None,
        }
    }
}

impl OpTally {
    fn merge(&mut self, other: OpTally) -> anyhow::Result<()> {
        self.latency_ns
            .add(&other.latency_ns)
            .context("merging histograms")?;
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.errors += other.errors;
        self.transport_errors += other.transport_errors;
        self.first_error = self.first_error.take().or(other.first_error);
        Ok(())
    }

    fn fail(&mut self, reason: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(reason());
        }
    }
}

/// The results of one worker, or of all of them merged.
#[derive(Default)]
pub struct Tally {
    put: OpTally,
    get: OpTally,
}

impl Tally {
    pub fn op(&self, op: Op) -> &OpTally {
        match op {
            Op::Put => &self.put,
            Op::Get => &self.get,
        }
    }

    fn op_mut(&mut self, op: Op) -> &mut OpTally {
        match op {
            Op::Put => &mut self.put,
            Op::Get => &mut self.get,
        }
    }

    pub fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.put.merge(other.put)?;
        self.get.merge(other.get)
    }

    /// Records one measured request; returns whether it succeeded.
    fn record(
        &mut self,
        shared: &Shared,
        op: Op,
        outcome: &Result<Response, ClientError>,
        latency: Duration,
    ) -> bool {
        let tally = self.op_mut(op);
        let response = match outcome {
            Ok(response) => response,
            Err(error) => {
                tally.transport_errors += 1;
                tally.fail(|| error.to_string());
                return false;
            }
        };
        *tally.statuses.entry(response.status.as_u16()).or_default() += 1;
        if !shared.is_success(op, response.status) {
            tally.fail(|| response.clone().into_error().to_string());
            return false;
        }
        tally
            .latency_ns
            .saturating_record(latency.as_nanos().min(u64::MAX as u128) as u64);
        true
    }
}

pub struct Worker {
    shared: Arc<Shared>,
    endpoint: Arc<Endpoint>,
    connection: Option<Connection>,
    rng: SmallRng,
    /// Measured requests this worker may send; `None` for as many as time allows.
    budget: Option<u64>,
}

impl Worker {
    /// Worker `index`'s random choices are seeded by its index, so a run's request
    /// sequence is reproducible.
    pub fn new(
        shared: Arc<Shared>,
        endpoint: Arc<Endpoint>,
        index: usize,
        budget: Option<u64>,
    ) -> Worker {
        Worker {
            shared,
            endpoint,
            connection: None,
            rng: SmallRng::seed_from_u64(index as u64),
            budget,
        }
    }

    pub async fn run(mut self) -> Tally {
        let mut tally = Tally::default();
        let mut second = SecondBuffer::default();
        let mut measured = 0;
        while let Some(started) = self.next_start(measured) {
            let (op, key) = self.shared.traffic.workload.next(&mut self.rng);
            let outcome = self.exchange(op, key).await;
            let latency = started.elapsed();
            let Some(offset) = started.checked_duration_since(self.shared.measure_start) else {
                continue;
            };
            measured += 1;
            let success = tally.record(&self.shared, op, &outcome, latency);
            let kind = match op {
                Op::Put => Kind::Write,
                Op::Get => Kind::Read,
            };
            second.record(
                &self.shared.timeline,
                offset.as_secs() as usize,
                kind,
                latency,
                success,
            );
            self.shared.completed.fetch_add(1, Ordering::Relaxed);
        }
        second.flush(&self.shared.timeline);
        tally
    }

    /// The start time of the next request, or `None` when the run is over.
    fn next_start(&self, measured: u64) -> Option<Instant> {
        let now = Instant::now();
        let spent = self.budget.is_some_and(|budget| measured >= budget);
        (now < self.shared.end && !spent).then_some(now)
    }

    /// One request on the worker's connection, opening one first if needed; a
    /// connection that broke or was closed is dropped.
    async fn exchange(&mut self, op: Op, key: u64) -> Result<Response, ClientError> {
        let mut connection = match self.connection.take() {
            Some(connection) => connection,
            None => match self.shared.traffic.connect(&self.endpoint).await {
                Ok(connection) => connection,
                Err(error) => {
                    let resume = (Instant::now() + RECONNECT_PAUSE).min(self.shared.end);
                    tokio::time::sleep_until(resume).await;
                    return Err(error);
                }
            },
        };
        let outcome = self.shared.traffic.send(&mut connection, op, key).await;
        if outcome.is_ok() && connection.is_open() {
            self.connection = Some(connection);
        }
        outcome
    }
}
