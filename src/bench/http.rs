//! `walrus bench http`: closed-loop HTTP load against running servers.
//!
//! Each of C connections is a task with one keep-alive HTTP/1.1 connection that
//! sends its next request as soon as the previous answer is in, so throughput is
//! roughly C / latency. Connections are spread over the endpoints in turn. A run
//! checks every endpoint answers, writes the key space first when it will read
//! keys, warms up, then measures for a fixed time (and at most a fixed number of
//! requests). Traffic goes only to the given URLs.
//!
//! Submodules: `workload` (what each request is, per [`Style`]), `worker` (one
//! connection's loop and counts), `monitor` (progress bar and server RSS).

mod monitor;
mod worker;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use indicatif::ProgressBar;
use serde::Serialize;
use tokio::time::Instant;

pub use self::monitor::RssReport;
use self::monitor::{Monitor, Schedule};
use self::worker::{Shared, Tally, Traffic, Worker};
use self::workload::Workload;
pub use self::workload::{Mix, Op, Style};
use super::progress::count_bar;
use super::report::{Row, table};
use super::timeline::{TimelinePoint, TimelineRecorder};
use crate::client::{Endpoint, tls};

/// Upper bounds that keep a mistyped flag from running away.
const MAX_CONNECTIONS: usize = 4096;
const MAX_DURATION: Duration = Duration::from_secs(3600);
const MAX_KEY_SPACE: u64 = 10_000_000;
const MAX_VALUE_BYTES: usize = 64 << 20;
/// The prefix of every key a benchmark touches, unless told otherwise.
pub const DEFAULT_KEY_PREFIX: &str = "walrus-bench:";

/// Connections that write the key space before a run that reads it.
const MAX_PREPOPULATE_WRITERS: usize = 32;

#[derive(Debug, Clone)]
pub struct HttpBenchConfig {
    /// Server URLs; connection `i` goes to endpoint `i mod len`.
    pub endpoints: Vec<String>,
    /// Concurrent connections, each one request at a time. Default 16.
    pub connections: usize,
    /// The measured time. Default 10 s.
    pub duration: Duration,
    /// Load before measuring, to warm caches and connections. Default 1 s.
    pub warmup: Duration,
    /// Bytes per PUT value. Default 100, as in `bench store`.
    pub value_size: usize,
    /// PUT:GET weights. Default 1:1.
    pub mix: Mix,
    /// Keys `<prefix>0` … `<prefix>(N-1)`, drawn uniformly. Default 10,000.
    pub key_space: u64,
    /// Every key written or read starts with this, so a benchmark against a
    /// live server touches only its own keys. Default `walrus-bench:`.
    pub key_prefix: String,
    pub style: Style,
    /// Sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// CA certificate (PEM) for `https://` endpoints.
    pub ca_file: Option<PathBuf>,
    /// Write every key once before a run that reads, so GETs find values (a 404
    /// then counts as an error). Without it a GET's 404 counts as a success.
    /// Default true.
    pub prepopulate: bool,
    /// Stop after this many measured requests in all, if the time is not up first.
    pub max_requests: Option<u64>,
    /// A server process to sample resident memory of, once a second.
    pub pid: Option<u32>,
    /// Default 5 s.
    pub connect_timeout: Duration,
    /// A request taking longer is an error. Default 10 s.
    pub request_timeout: Duration,
    pub progress: bool,
}

impl Default for HttpBenchConfig {
    fn default() -> HttpBenchConfig {
        HttpBenchConfig {
            endpoints: vec!["http://127.0.0.1:8080".to_string()],
            connections: 16,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            value_size: 100,
            mix: Mix { put: 1, get: 1 },
            key_space: 10_000,
            key_prefix: DEFAULT_KEY_PREFIX.to_string(),
            style: Style::Walrus,
            token: None,
            ca_file: None,
            prepopulate: true,
            max_requests: None,
            pid: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            progress: false,
        }
    }
}

impl HttpBenchConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.endpoints.is_empty(), "no endpoints given");
        ensure!(
            (1..=MAX_CONNECTIONS).contains(&self.connections),
            "connections must be 1 to {MAX_CONNECTIONS}"
        );
        ensure!(
            !self.duration.is_zero() && self.duration <= MAX_DURATION,
            "duration must be above 0 and at most {} s",
            MAX_DURATION.as_secs()
        );
        ensure!(
            self.warmup <= MAX_DURATION,
            "warm-up is longer than an hour"
        );
        ensure!(
            self.value_size <= MAX_VALUE_BYTES,
            "value size above {MAX_VALUE_BYTES} bytes"
        );
        ensure!(
            (1..=MAX_KEY_SPACE).contains(&self.key_space),
            "key space must be 1 to {MAX_KEY_SPACE}"
        );
        ensure!(
            self.mix.put > 0 || self.mix.get > 0,
            "the mix has no operations"
        );
        ensure!(
            !self.connect_timeout.is_zero() && !self.request_timeout.is_zero(),
            "timeouts must be above 0"
        );
        Ok(())
    }
}

/// The results of one operation type.
#[derive(Debug, Clone, Serialize)]
pub struct OpReport {
    #[serde(flatten)]
    pub row: Row,
    /// Failed requests (error statuses and transport failures); not in `row`.
    pub errors: u64,
    /// Requests that got no response (connect, timeout, broken connection).
    pub transport_errors: u64,
    /// Responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    pub first_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpBenchReport {
    pub style: Style,
    pub endpoints: Vec<String>,
    pub connections: usize,
    pub duration_seconds: f64,
    pub value_size: usize,
    pub mix: String,
    pub key_space: u64,
    /// Keys written before the run.
    pub prepopulated: u64,
    pub ops: Vec<OpReport>,
    pub timeline: Vec<TimelinePoint>,
    pub rss: Option<RssReport>,
}

impl HttpBenchReport {
    /// The table and notes for a terminal or BENCHMARKS.md.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} style, {} connections over {} endpoint(s), {:.1} s, mix {} (put:get), \
             {}-byte values, {} keys\n\n",
            self.style,
            self.connections,
            self.endpoints.len(),
            self.duration_seconds,
            self.mix,
            self.value_size,
            self.key_space
        );
        let rows: Vec<Row> = self.ops.iter().map(|op| op.row.clone()).collect();
        out.push_str(&table(&rows, "conns"));
        out.push_str("\n| run | errors | responses |\n|---|---:|---|\n");
        for op in &self.ops {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                op.row.name,
                op.errors,
                statuses(op)
            ));
        }
        for op in &self.ops {
            if let Some(error) = &op.first_error {
                out.push_str(&format!("\nfirst {} error: {error}\n", op.row.name));
            }
        }
        if let Some(rss) = &self.rss {
            out.push_str(&rss_line(rss));
        }
        out
    }
}

fn statuses(op: &OpReport) -> String {
    let mut parts: Vec<String> = op
        .statuses
        .iter()
        .map(|(status, count)| format!("{status} ×{count}"))
        .collect();
    if op.transport_errors > 0 {
        parts.push(format!("no response ×{}", op.transport_errors));
    }
    parts.join(", ")
}

fn rss_line(rss: &RssReport) -> String {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    format!(
        "\nserver RSS (pid {}): {:.1} MiB at start, {:.1} MiB at end ({:+.1} %), peak {:.1} MiB\n",
        rss.pid,
        mib(rss.start_bytes),
        mib(rss.end_bytes),
        rss.growth() * 100.0,
        mib(rss.peak_bytes)
    )
}

/// Runs the benchmark described by `config`. Takes at most about warm-up +
/// duration + request timeout, after the key space is written.
pub async fn run(config: &HttpBenchConfig) -> Result<HttpBenchReport> {
    config.validate()?;
    let endpoints = config
        .endpoints
        .iter()
        .map(|url| Endpoint::parse(url).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let traffic = Arc::new(traffic(config, &endpoints)?);
    if let Some(pid) = config.pid {
        ensure!(
            monitor::resident_bytes(pid).is_some(),
            "cannot read the memory of process {pid}: is the server running on this machine?"
        );
    }
    probe(&traffic, &endpoints).await?;
    let prepopulate = config.prepopulate && traffic.workload.reads_keys();
    let prepopulated = if prepopulate {
        write_key_space(&traffic, &endpoints, config).await?
    } else {
        0
    };
    let measure_start = Instant::now() + config.warmup;
    let shared = Arc::new(Shared {
        traffic,
        timeline: TimelineRecorder::new(config.duration),
        completed: Arc::new(AtomicU64::new(0)),
        measure_start,
        end: measure_start + config.duration,
        not_found_is_success: !prepopulate,
    });
    let measured = measure(&shared, &endpoints, config).await?;
    Ok(report(config, prepopulated, &shared, measured))
}

fn traffic(config: &HttpBenchConfig, endpoints: &[Arc<Endpoint>]) -> Result<Traffic> {
    let workload = Workload::new(
        config.style,
        config.mix,
        config.key_space,
        &config.key_prefix,
        config.value_size,
    );
    Ok(Traffic {
        headers: workload.headers(config.token.as_deref())?,
        workload,
        tls: tls::for_endpoints(endpoints, config.ca_file.as_deref())?,
        connect_timeout: config.connect_timeout,
        request_timeout: config.request_timeout,
    })
}

fn report(
    config: &HttpBenchConfig,
    prepopulated: u64,
    shared: &Shared,
    measured: Measured,
) -> HttpBenchReport {
    let elapsed = measured.elapsed;
    HttpBenchReport {
        style: config.style,
        endpoints: config.endpoints.clone(),
        connections: config.connections,
        duration_seconds: elapsed.as_secs_f64(),
        value_size: config.value_size,
        mix: config.mix.to_string(),
        key_space: config.key_space,
        prepopulated,
        ops: op_reports(
            &shared.traffic.workload,
            &measured.tally,
            config.connections,
            elapsed,
        ),
        timeline: shared.timeline.points(elapsed, &measured.rss_samples),
        rss: measured.rss,
    }
}

/// Opens one connection to each endpoint, so a wrong URL fails the run at once.
async fn probe(traffic: &Traffic, endpoints: &[Arc<Endpoint>]) -> Result<()> {
    for endpoint in endpoints {
        traffic.connect(endpoint).await?;
    }
    Ok(())
}

/// PUTs every key once, over up to [`MAX_PREPOPULATE_WRITERS`] connections;
/// any failure stops the run, since what follows would measure errors.
async fn write_key_space(
    traffic: &Arc<Traffic>,
    endpoints: &[Arc<Endpoint>],
    config: &HttpBenchConfig,
) -> Result<u64> {
    let writers = config.connections.min(MAX_PREPOPULATE_WRITERS);
    let bar = count_bar(config.progress, config.key_space, "writing keys");
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let (traffic, bar) = (traffic.clone(), bar.clone());
            let endpoint = endpoints[writer % endpoints.len()].clone();
            let keys = (writer as u64..config.key_space).step_by(writers);
            tokio::spawn(async move { write_keys(&traffic, &endpoint, keys, &bar).await })
        })
        .collect();
    for task in tasks {
        task.await.context("a writing connection panicked")??;
    }
    bar.finish_and_clear();
    Ok(config.key_space)
}

async fn write_keys(
    traffic: &Traffic,
    endpoint: &Arc<Endpoint>,
    keys: impl Iterator<Item = u64>,
    bar: &ProgressBar,
) -> Result<()> {
    let mut connection = traffic.connect(endpoint).await?;
    for key in keys {
        if !connection.is_open() {
            connection = traffic.connect(endpoint).await?;
        }
        let response = traffic.send(&mut connection, Op::Put, key).await?;
        if !response.status.is_success() {
            bail!(
                "writing key {key} before the run: {}",
                response.into_error()
            );
        }
        bar.inc(1);
    }
    Ok(())
}

/// What the warm-up and measured run produced.
struct Measured {
    tally: Tally,
    /// From the start of measurement until the last connection finished.
    elapsed: Duration,
    /// Server RSS per second, when a PID was given.
    rss_samples: Vec<Option<u64>>,
    rss: Option<RssReport>,
}

/// The warm-up and measured run: all connections, the monitor, and the merge.
async fn measure(
    shared: &Arc<Shared>,
    endpoints: &[Arc<Endpoint>],
    config: &HttpBenchConfig,
) -> Result<Measured> {
    let schedule = Schedule {
        started: Instant::now(),
        measure_start: shared.measure_start,
        end: shared.end,
    };
    let monitor = Monitor::spawn(
        schedule,
        config.pid,
        config.progress,
        shared.completed.clone(),
    );
    let tasks: Vec<_> = (0..config.connections)
        .map(|index| {
            let endpoint = endpoints[index % endpoints.len()].clone();
            let budget = config
                .max_requests
                .map(|total| share(total, config.connections, index));
            tokio::spawn(Worker::new(shared.clone(), endpoint, index, budget).run())
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.context("a benchmark connection panicked")?)?;
    }
    let elapsed = Instant::now().saturating_duration_since(shared.measure_start);
    let (rss_samples, rss) = monitor.finish().await;
    Ok(Measured {
        tally,
        elapsed,
        rss_samples,
        rss,
    })
}

/// Connection `index`'s part of `total` requests split over `connections`.
fn share(total: u64, connections: usize, index: usize) -> u64 {
    let connections = connections as u64;
    total / connections + u64::from((index as u64) < total % connections)
}

fn op_reports(
    workload: &Workload,
    tally: &Tally,
    connections: usize,
    elapsed: Duration,
) -> Vec<OpReport> {
    workload
        .ops()
        .into_iter()
        .map(|op| {
            let counts = tally.op(op);
            let name = format!("{} {}", workload.style(), op.name());
            let row = Row::new(
                name,
                connections,
                counts.latency_ns.len(),
                elapsed,
                &counts.latency_ns,
            );
            OpReport {
                row,
                errors: counts.errors,
                transport_errors: counts.transport_errors,
                statuses: counts.statuses.clone(),
                first_error: counts.first_error.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
