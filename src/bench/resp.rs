//! `walrus bench resp`: closed-loop Redis-protocol load against a running
//! server (walrus with `--resp-listen`, or Redis itself, for comparison).
//!
//! Each of C connections sends P pipelined requests, waits for all P replies,
//! and repeats; a request's latency is its batch's round trip. The requests
//! (`--tests`): SET or GET of a 100-byte value on keys drawn uniformly from
//! the key space (like `redis-benchmark -r`); INCR of one hot key (what
//! `redis-benchmark -t incr` does); and a MULTI/EXEC transaction of five
//! SETs, counted as one operation. A run per test, in the order given, each
//! warmed up and then measured for a fixed time.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::report::{Row, new_histogram, table};

#[derive(Debug, Clone)]
pub struct RespBenchConfig {
    pub address: SocketAddr,
    /// Concurrent connections. Default 64.
    pub connections: usize,
    /// Commands in flight per connection. Default 1.
    pub pipeline: usize,
    /// Measured time per operation. Default 10 s.
    pub duration: Duration,
    /// Load before measuring. Default 1 s.
    pub warmup: Duration,
    /// Bytes per SET value. Default 100.
    pub value_size: usize,
    /// Keys `<prefix>000000000000` … (N-1, twelve digits). Default 100,000.
    pub key_space: u64,
    /// Every key the bench touches starts with this (the INCR key too).
    /// Default `walrus-bench:`.
    pub key_prefix: String,
    /// Sent with AUTH on every connection, if set.
    pub password: Option<String>,
    /// What to run, in order. Default SET then GET.
    pub tests: Vec<RespTest>,
}

/// One kind of request the bench sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RespTest {
    Set,
    Get,
    /// INCR of one key shared by every connection.
    Incr,
    /// MULTI, five SETs, EXEC.
    Multi,
}

impl RespTest {
    fn name(self) -> &'static str {
        match self {
            RespTest::Set => "SET",
            RespTest::Get => "GET",
            RespTest::Incr => "INCR",
            RespTest::Multi => "MULTI/EXEC 5 SET",
        }
    }

    /// Replies one request gets: a transaction's MULTI, its five QUEUED and
    /// EXEC's array.
    fn replies(self) -> usize {
        match self {
            RespTest::Multi => 7,
            _ => 1,
        }
    }
}

impl Default for RespBenchConfig {
    fn default() -> Self {
        RespBenchConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 6380)),
            connections: 64,
            pipeline: 1,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            value_size: 100,
            key_space: 100_000,
            key_prefix: super::http::DEFAULT_KEY_PREFIX.to_string(),
            password: None,
            tests: vec![RespTest::Set, RespTest::Get],
        }
    }
}

impl RespBenchConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (1..=4096).contains(&self.connections),
            "connections must be 1 to 4096"
        );
        ensure!(
            (1..=1024).contains(&self.pipeline),
            "pipeline must be 1 to 1024"
        );
        ensure!(self.value_size <= 1 << 20, "values are at most 1 MiB");
        ensure!(
            (1..=10_000_000).contains(&self.key_space),
            "keys must be 1 to 10,000,000"
        );
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RespBenchReport {
    pub address: String,
    pub connections: usize,
    pub pipeline: usize,
    pub rows: Vec<Row>,
}

impl RespBenchReport {
    pub fn render(&self) -> String {
        format!(
            "walrus bench resp: {} connections, pipeline {}, against {}\n\n{}",
            self.connections,
            self.pipeline,
            self.address,
            table(&self.rows, "conns")
        )
    }
}

pub async fn run(config: &RespBenchConfig) -> Result<RespBenchReport> {
    config.validate()?;
    let mut rows = Vec::new();
    for &test in &config.tests {
        rows.push(run_op(config, test).await?);
    }
    Ok(RespBenchReport {
        address: config.address.to_string(),
        connections: config.connections,
        pipeline: config.pipeline,
        rows,
    })
}

async fn run_op(config: &RespBenchConfig, test: RespTest) -> Result<Row> {
    let start = Instant::now();
    let measure_from = start + config.warmup;
    let end = measure_from + config.duration;
    let mut workers = tokio::task::JoinSet::new();
    for index in 0..config.connections {
        let stream = connect(config).await?;
        let config = config.clone();
        workers.spawn(worker(
            stream,
            config,
            test,
            index as u64,
            measure_from,
            end,
        ));
    }
    let mut histogram = new_histogram();
    let mut operations = 0;
    while let Some(joined) = workers.join_next().await {
        let (tally, count) = joined.context("a bench connection panicked")??;
        histogram.add(&tally).context("merging latencies")?;
        operations += count;
    }
    Ok(Row::new(
        test.name(),
        config.connections,
        operations,
        config.duration,
        &histogram,
    ))
}

async fn connect(config: &RespBenchConfig) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(config.address)
        .await
        .with_context(|| format!("connecting to {}", config.address))?;
    stream.set_nodelay(true)?;
    if let Some(password) = &config.password {
        let mut buffer = BytesMut::new();
        stream
            .write_all(&encode(&[b"AUTH", password.as_bytes()]))
            .await?;
        read_replies(&mut stream, &mut buffer, 1).await?;
    }
    Ok(stream)
}

/// One connection's loop; returns its latencies (ns) and measured commands.
async fn worker(
    mut stream: TcpStream,
    config: RespBenchConfig,
    test: RespTest,
    seed: u64,
    measure_from: Instant,
    end: Instant,
) -> Result<(Histogram<u64>, u64)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let value = vec![b'x'; config.value_size];
    let counter = format!("{}counter", config.key_prefix);
    let mut histogram = new_histogram();
    let mut operations = 0;
    let mut request = Vec::new();
    let mut buffer = BytesMut::with_capacity(64 << 10);
    while Instant::now() < end {
        request.clear();
        for _ in 0..config.pipeline {
            let mut key = || {
                let index = rng.random_range(0..config.key_space);
                format!("{}{index:012}", config.key_prefix)
            };
            match test {
                RespTest::Set => request.extend(encode(&[b"SET", key().as_bytes(), &value])),
                RespTest::Get => request.extend(encode(&[b"GET", key().as_bytes()])),
                RespTest::Incr => request.extend(encode(&[b"INCR", counter.as_bytes()])),
                RespTest::Multi => {
                    request.extend(encode(&[b"MULTI"]));
                    for _ in 0..5 {
                        request.extend(encode(&[b"SET", key().as_bytes(), &value]));
                    }
                    request.extend(encode(&[b"EXEC"]));
                }
            }
        }
        let sent = Instant::now();
        stream.write_all(&request).await?;
        let replies = config.pipeline * test.replies();
        read_replies(&mut stream, &mut buffer, replies).await?;
        if sent >= measure_from {
            let nanos = sent.elapsed().as_nanos().max(1) as u64;
            histogram.record_n(nanos, config.pipeline as u64)?;
            operations += config.pipeline as u64;
        }
    }
    Ok((histogram, operations))
}

fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut bytes = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        bytes.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        bytes.extend_from_slice(arg);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes
}

/// Reads `count` replies (simple, integer, error or bulk); an error reply
/// fails the run.
async fn read_replies(stream: &mut TcpStream, buffer: &mut BytesMut, count: usize) -> Result<()> {
    let mut remaining = count;
    while remaining > 0 {
        match take_reply(buffer)? {
            Some(()) => remaining -= 1,
            None => {
                if stream.read_buf(buffer).await? == 0 {
                    bail!("the server closed the connection");
                }
            }
        }
    }
    Ok(())
}

fn take_reply(buffer: &mut BytesMut) -> Result<Option<()>> {
    let Some(total) = reply_length(buffer)? else {
        return Ok(None);
    };
    buffer.advance(total);
    Ok(Some(()))
}

/// The length of the whole reply at the start of `data` (arrays included),
/// or `None` if it has not all arrived.
fn reply_length(data: &[u8]) -> Result<Option<usize>> {
    let Some(line_end) = data.windows(2).position(|pair| pair == b"\r\n") else {
        return Ok(None);
    };
    let line = &data[..line_end];
    let header = line_end + 2;
    let total = match line.first() {
        Some(b'+' | b':') => header,
        Some(b'-') => bail!("server error: {}", String::from_utf8_lossy(line)),
        Some(b'$') => {
            let length: i64 = std::str::from_utf8(&line[1..])?.parse()?;
            if length < 0 {
                header
            } else {
                header + length as usize + 2
            }
        }
        Some(b'*') => {
            let count: i64 = std::str::from_utf8(&line[1..])?.parse()?;
            let mut total = header;
            for _ in 0..count.max(0) {
                match reply_length(&data[total.min(data.len())..])? {
                    Some(length) => total += length,
                    None => return Ok(None),
                }
            }
            total
        }
        _ => bail!("unexpected reply: {}", String::from_utf8_lossy(line)),
    };
    Ok((data.len() >= total).then_some(total))
}
