//! The `walrus` binary: server, client, benchmark and inspection tools.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use walrus::bench::store::{StoreBenchConfig, run as run_store_bench};
use walrus::http::HttpConfig;
use walrus::server::{ServeOptions, bind_all, open_node, run as run_server, termination_signal};
use walrus::storage::{RecoveryMode, WalOptions};
use walrus::store::{FsyncPolicy, SnapshotPolicy, StoreOptions};

/// `println!` for the binary's reports, without its panic when stdout is
/// gone. A reader that left (`walrus bench http --json | head -1`) chose to
/// stop reading: the command ends as it would have, with its own exit code
/// (a failed `walrus verify` still exits 1). Other output errors, such as a
/// full disk, are returned.
macro_rules! say {
    ($($arg:tt)*) => {
        report_line(format_args!($($arg)*), "\n")
    };
}

/// `print!` with the same treatment of a closed stdout as [`say!`].
macro_rules! say_raw {
    ($($arg:tt)*) => {
        report_line(format_args!($($arg)*), "")
    };
}

fn report_line(text: std::fmt::Arguments, end: &str) -> std::io::Result<()> {
    match write!(output(), "{text}{end}") {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => written,
    }
}

/// Standard output, for the CLI's results. A failed write is reported as a
/// failure to write the output, with no cause behind it, so that a full disk
/// under a redirected stdout (`walrus dump d > /full/file`) is not taken for
/// the data directory's (`main`'s hint). A closed pipe keeps its kind: `main`
/// treats it as the reader having left (`| head`).
fn output() -> Output {
    Output(std::io::stdout().lock())
}

struct Output(std::io::StdoutLock<'static>);

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(output_error)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(output_error)
    }
}

fn output_error(error: std::io::Error) -> std::io::Error {
    match error.kind() {
        std::io::ErrorKind::BrokenPipe => {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, ReaderLeft)
        }
        std::io::ErrorKind::Interrupted => error,
        _ => std::io::Error::other(OutputError(error)),
    }
}

/// Standard output's reader has closed it (`walrus list | head`). Marked so
/// that `main` ends quietly on this broken pipe alone, and not on one from a
/// server that closed the connection mid-request, which is a failure.
#[derive(Debug, thiserror::Error)]
#[error("the reader of the output closed it")]
struct ReaderLeft;

/// Whether `cause` is standard output's reader leaving: the `io::Error`
/// that [`output_error`] wraps [`ReaderLeft`] in (an `io::Error` does not
/// list the error it wraps among its sources, so it is looked for inside).
fn is_reader_left(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .is_some_and(|inner| inner.is::<ReaderLeft>())
}

/// Deliberately without a `source`: the error chain ends here.
#[derive(Debug, thiserror::Error)]
#[error("writing the output: {0}")]
struct OutputError(std::io::Error);

/// jemalloc instead of the C library's allocator: every request allocates
/// (frames, log records, reply channels, entries) on one thread and often
/// frees on another, where glibc's malloc and free took about an eighth of a
/// replicated write's CPU. Measured in BENCHMARKS.md ("The allocator").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// Beside the binary's root, not in `src/bin/`, where Cargo would take it
// for a binary of its own.
#[cfg(not(target_env = "msvc"))]
#[path = "walrus/jemalloc.rs"]
mod jemalloc;

#[derive(Parser)]
#[command(
    name = "walrus",
    version,
    about = "A durable key-value store",
    after_help = "Logs go to standard error; RUST_LOG sets their level and filter \
                  (default info, without openraft's warnings at every failed heartbeat or append; e.g. RUST_LOG=debug \
                  or RUST_LOG=walrus=debug,openraft=warn)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How a client command prints its result: `--json`, or etcdctl's
/// `-w/--write-out json|simple`.
#[derive(clap::Args, Debug, Clone, Copy)]
struct OutputArgs {
    /// Print JSON (the same as -w json).
    #[arg(long)]
    json: bool,
    /// Output format, as etcdctl spells it.
    #[arg(short = 'w', long = "write-out", value_enum, default_value_t = WriteOut::Simple)]
    write_out: WriteOut,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum WriteOut {
    Simple,
    Json,
}

impl OutputArgs {
    fn json(&self) -> bool {
        self.json || self.write_out == WriteOut::Json
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Print a key's value (exit 1 if it does not exist). The raw bytes when
    /// piped; on a terminal, a newline is added if the value lacks one. With
    /// --json (or -w json): {"key", "value" (or "value_base64"), "revision"}.
    Get {
        key: String,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set a key; the value is the argument, or standard input with `-`. With
    /// --json (or -w json): {"key", "revision"}.
    Put {
        key: String,
        value: String,
        /// Expire the key after this long: 30s, 5m, 2h, 250ms.
        #[arg(long)]
        ttl: Option<String>,
        /// Write only if the key is at this revision (compare-and-swap); exit 3 if not.
        #[arg(long)]
        if_revision: Option<u64>,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a key (exit 0 whether or not it existed, unless --require-existing).
    /// With --json (or -w json): {"key", "revision"}, the store's revision
    /// after the delete.
    Delete {
        key: String,
        /// Delete only if the key is at this revision; exit 3 if not.
        #[arg(long)]
        if_revision: Option<u64>,
        /// Exit 1 if the key did not exist.
        #[arg(long)]
        require_existing: bool,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List keys (and values) in byte order, one per line: key, a tab, value
    /// (tab, newline, CR and backslash escaped as \t \n \r \\, bytes that are
    /// not UTF-8 as \xNN). With --json (or -w json): one object per line, {"key", "value" (or
    /// "value_base64"; absent with --keys-only), "revision"}.
    List {
        /// Only keys starting with this.
        #[arg(default_value = "")]
        prefix: String,
        /// Print keys only.
        #[arg(long)]
        keys_only: bool,
        /// Stop after this many keys (0: no limit, as etcdctl reads it).
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Follow changes to keys starting with PREFIX (or to one key with --key),
    /// one line per change: revision, put/delete/expire, key, and a put's value.
    /// With --json (or -w json): one JSON object per line (the event's fields
    /// plus "type" and "id").
    Watch {
        /// Only keys starting with this.
        #[arg(default_value = "")]
        prefix: String,
        /// Follow exactly this key instead of a prefix.
        #[arg(long, conflicts_with = "prefix")]
        key: Option<String>,
        /// Start after this revision (replaying the changes since, while the
        /// server's history reaches back that far); from now without it.
        #[arg(long)]
        since: Option<u64>,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Save a consistent snapshot of a running node to FILE (checked before it is named).
    Backup {
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make a new data directory from a backup FILE (offline; refuses a non-empty directory).
    Restore {
        file: PathBuf,
        /// The data directory to create.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Snapshot a running node now and remove the log the snapshot covers.
    Compact {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the segments, records and snapshots of a data directory (read-only).
    /// Exits 1 if any file is damaged (a torn tail included), 2 if it cannot read.
    Dump {
        /// The data directory.
        dir: PathBuf,
        /// Also list every snapshot entry.
        #[arg(long)]
        entries: bool,
    },
    /// Measure walrus.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Check walrus's promises: drive a workload (optionally with faults), record
    /// every operation, check the history for linearizability and agreement.
    Verify(Box<VerifyArgs>),
    /// Look at and change a cluster's membership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Start a local cluster on loopback for trying it out; Ctrl-C stops it.
    DevCluster {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Where the nodes keep their data (one folder each).
        #[arg(long, default_value = "walrus-dev-cluster")]
        data_dir: PathBuf,
        /// First HTTP port; node N listens on BASE+N-1 and RESP on BASE+100+N-1.
        #[arg(long, default_value_t = 8081)]
        base_port: u16,
        /// Worker threads per node (`serve --threads`) [default: the
        /// machine's cores divided among the nodes, at least 1].
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        threads_per_node: Option<u16>,
    },
}

#[derive(Args)]
struct VerifyArgs {
    /// Servers to drive over HTTP, comma-separated (ignored with --dev-cluster;
    /// default http://127.0.0.1:8080 unless --resp is given).
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Redis-protocol addresses (HOST:PORT, or rediss://HOST:PORT for TLS) to
    /// drive, comma-separated; with --endpoints as well, clients alternate
    /// between the two.
    #[arg(long, value_delimiter = ',')]
    resp: Vec<String>,
    /// The CA (PEM) for https:// and rediss:// endpoints: the certificate the
    /// server was started with (--tls-cert), or the CA that signed it.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// With --dev-cluster: the protocol the clients speak (http, resp or both).
    #[arg(long, value_enum, default_value = "both")]
    protocol: walrus::verify::Protocol,
    /// Start a local cluster of N nodes (1: a single node) and drive it instead.
    #[arg(long)]
    dev_cluster: Option<u64>,
    /// Faults to inject into the --dev-cluster, comma-separated, taken in turn: kill,
    /// pause, restart-all, partition (one node cut off from the others; needs 2+ nodes),
    /// bridge (two halves cut apart, one node reaching both; needs 3+ nodes), one-way
    /// (a node refuses what one other node sends it, its own messages still go; needs
    /// 2+ nodes), deaf (a node, the leader half the time, refuses what every other
    /// node sends it), mute (every other node refuses what one node sends, the
    /// leader half the time), member (a node, the leader half the time, removed
    /// from the cluster, then added back as a learner and promoted; needs 2+ nodes).
    #[arg(long, value_delimiter = ',')]
    nemesis: Vec<walrus::verify::nemesis::Fault>,
    /// What the clients do: `registers` (single-key operations, checked for
    /// linearizability) or `bank` (MULTI/EXEC transfers under WATCH between
    /// accounts and reads of them all, checked for a conserved total; RESP
    /// endpoints only).
    #[arg(long, value_enum, default_value = "registers")]
    workload: walrus::verify::Workload,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: u64,
    /// Distinct keys (`verify-0` …); fewer keys, more contention. They are
    /// deleted before the workload starts, so a store may hold them from an
    /// earlier run. With `--workload bank`, the number of accounts
    /// (`verify-bank-0` …), opened afresh.
    #[arg(long, default_value_t = 20)]
    keys: u64,
    /// Seconds of workload.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Operation weights GET:PUT:DELETE:CAS:INCR. Increments (RESP's INCR)
    /// go to counter keys of their own, half as many as --keys; HTTP
    /// clients, which have no increment, read a counter instead.
    #[arg(long, default_value = "4:3:1:2:2")]
    mix: walrus::verify::workload::Mix,
    /// Bytes per written value.
    #[arg(long, default_value_t = 16)]
    value_size: usize,
    /// Seed for keys, operations and faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A request unanswered this long (ms) has an unknown outcome.
    #[arg(long, default_value_t = 3000)]
    request_timeout_ms: u64,
    /// Most operations in all.
    #[arg(long, default_value_t = 200_000)]
    max_operations: u64,
    /// Milliseconds between faults, and how long each lasts.
    #[arg(long, default_value_t = 3000)]
    fault_interval_ms: u64,
    #[arg(long, default_value_t = 1500)]
    fault_hold_ms: u64,
    /// Search steps per key before a key's verdict is "undecided".
    #[arg(long, default_value_t = 2_000_000)]
    budget: u64,
    /// File holding the bearer token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Print JSON instead of the summary.
    #[arg(long)]
    json: bool,
    /// Write the history, the report and a timeline of a failing key here.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Show each node's role, term, leader and log positions. Exits 1 when
    /// some endpoints failed to answer, 2 when none answered.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Add a node as a learner (it receives the log, does not vote): ID=HOST:PORT.
    /// Sent to a single node (started without --node-id), it first makes that
    /// node node 1 of a new cluster, in place and while it serves.
    AddLearner {
        node: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make a learner a voting member.
    Promote {
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a node from the cluster.
    Remove {
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Hand leadership to voter ID (etcd's move-leader), e.g. before taking
    /// the leader down for maintenance: returns once ID leads.
    TransferLeader {
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make a stopped single-node store the first member of a new cluster, in
    /// place: its keys, revisions and TTLs become the cluster's first
    /// snapshot and the log goes on from its revision. Its own files are kept
    /// in DATA_DIR/pre-cluster/. Then start it with `serve --node-id ID
    /// --listen ADVERTISE` and grow the cluster with add-learner and promote.
    Adopt {
        /// The single-node store's data directory (the server must be stopped).
        #[arg(long, default_value = "walrus-data")]
        data_dir: PathBuf,
        /// This node's id in the cluster.
        #[arg(long)]
        node_id: u64,
        /// The address the node will serve on (its --listen, or --advertise),
        /// which the other nodes will reach it at.
        #[arg(long)]
        advertise: String,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address for the HTTP API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Also serve the Redis protocol (RESP2/RESP3) on this address, e.g.
    /// 127.0.0.1:6380; with --tls-cert it speaks TLS (`redis-cli --tls`).
    #[arg(long)]
    resp_listen: Option<String>,
    /// Where the log and snapshots live.
    #[arg(long, default_value = "walrus-data")]
    data_dir: PathBuf,
    /// Keep everything in memory (nothing persisted).
    #[arg(long)]
    in_memory: bool,
    /// When writes are synced: always (acknowledge after fdatasync), interval=MS, never.
    #[arg(long, default_value = "always")]
    fsync: FsyncPolicy,
    /// On damage before the log's tail, keep the valid prefix and report what was dropped.
    #[arg(long, conflicts_with = "strict_recovery")]
    repair: bool,
    /// Refuse to start on any log damage, even a torn last write.
    #[arg(long)]
    strict_recovery: bool,
    /// Largest log segment in bytes. New segments are smaller when the
    /// snapshot threshold is, and never take more than a quarter of the free
    /// disk space.
    #[arg(long, default_value_t = 64 << 20)]
    segment_bytes: u64,
    /// Do not zero-fill new segments ahead of use.
    #[arg(long)]
    no_preallocate: bool,
    /// Append with write + fdatasync instead of O_DIRECT|O_DSYNC block writes.
    #[arg(long)]
    no_direct_io: bool,
    /// Log bytes since the last snapshot before an automatic one is considered
    /// (Redis's auto-aof-rewrite-min-size; new log segments are sized to the
    /// live data, within this threshold and --segment-bytes).
    #[arg(long, default_value_t = 64 << 20)]
    snapshot_min_log_bytes: u64,
    /// Snapshot once the log since the last one is this many times the live data.
    #[arg(long, default_value_t = 2)]
    snapshot_ratio: u64,
    /// Never snapshot automatically.
    #[arg(long)]
    no_auto_snapshot: bool,
    /// Changes kept for watchers to resume from (`since`, `Last-Event-ID`);
    /// older revisions answer 410 Gone.
    #[arg(long, default_value_t = 100_000)]
    watch_history_changes: usize,
    /// Bytes of change history kept for watchers, at most.
    #[arg(long, default_value_t = 64 << 20)]
    watch_history_bytes: usize,
    /// Longest wait, in microseconds, for the previous batch's writers to join
    /// the next group commit (only under concurrent load).
    #[arg(long, default_value_t = 100)]
    commit_delay_us: u64,
    /// Longest key in bytes (longer gets 414).
    #[arg(long, default_value_t = 4096)]
    max_key_bytes: usize,
    /// Largest value in bytes (larger gets 413 on HTTP, a protocol error on RESP).
    #[arg(long, default_value_t = 16 << 20)]
    max_value_bytes: usize,
    /// Largest request line plus headers in bytes (larger gets 431; at least 8192).
    #[arg(long, default_value_t = 16 << 10)]
    max_header_bytes: usize,
    /// Time a client has to send request headers, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// Time a client has to send a request body, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    body_timeout_ms: u64,
    /// Close connections with no traffic this long, in milliseconds. Between
    /// requests the header timeout also applies, so an idle keep-alive
    /// connection is closed after the shorter of the two.
    #[arg(long, default_value_t = 10_000)]
    idle_timeout_ms: u64,
    /// Connections served at once: more HTTP connections wait in the listen
    /// queue; more Redis-protocol clients are refused with Redis's "max number
    /// of clients reached" (its `maxclients`, which `CONFIG SET` changes live).
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Disconnect a Redis-protocol client idle this many seconds, 0 for never
    /// (Redis's `timeout`; `CONFIG SET timeout N` changes it while running).
    #[arg(long, default_value_t = 0)]
    resp_idle_timeout_secs: u64,
    /// Probe a quiet Redis-protocol client's connection with TCP keepalives
    /// after this many seconds, so one whose host vanished (a power cut, a
    /// partition) is closed instead of held open for ever; 0 for never
    /// (Redis's `tcp-keepalive`, 300 there too; `CONFIG SET tcp-keepalive N`
    /// changes it for new connections).
    #[arg(long, default_value_t = 300)]
    resp_tcp_keepalive_secs: u64,
    /// Event loops serving the Redis protocol, each a thread taking its share
    /// of the connections. One, as in Redis, answers a whole turn of
    /// connections with one sync; more spread the commands over more cores.
    /// [default: 1; a cluster member serves the port from its runtime's
    /// workers, beside Raft]
    #[arg(long)]
    resp_threads: Option<usize>,
    /// Worker threads for HTTP, Raft and peer traffic [default: one per core].
    /// Nodes that share one machine waste CPU waking each other's idle
    /// workers; give each its share of the cores instead (`walrus
    /// dev-cluster` does).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// Shut down cleanly, as on SIGTERM, once standard input reaches its end.
    /// For a supervisor that holds the other end of a pipe: the server then
    /// stops even when the supervisor dies by SIGKILL, which sends no signal
    /// on (`walrus dev-cluster` starts its nodes this way).
    #[arg(long)]
    stop_when_stdin_closes: bool,
    /// How long shutdown waits for in-flight requests, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    shutdown_grace_ms: u64,
    /// File holding a bearer token required on every route but /health, and
    /// the password RESP clients must give with AUTH.
    #[arg(long)]
    auth_token_file: Option<PathBuf>,
    /// Let /ready answer without the token (for load-balancer probes).
    #[arg(long)]
    ready_without_auth: bool,
    /// Let /metrics answer without the token (for Prometheus scrapes); off by
    /// default, since metrics name routes, sizes and the cluster's shape.
    #[arg(long)]
    metrics_without_auth: bool,
    /// PEM certificate chain for HTTPS and RESP over TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS (with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// With TLS: the CA file (PEM) that signed the other nodes' certificates
    /// (peers then talk over https) and those of MIGRATE's targets (one file
    /// may hold several CAs). Default: --tls-cert itself (every node sharing
    /// one certificate, or a self-signed one).
    #[arg(long, requires = "tls_cert")]
    peer_cacert: Option<PathBuf>,
    /// Run as node ID of a Raft cluster. Without --peers the node waits to be
    /// added to an existing cluster (`walrus cluster add-learner`). Without
    /// --node-id, a directory with a MEMBER file is served as the node it
    /// names, and any other is a single store.
    #[arg(long)]
    node_id: Option<u64>,
    /// The initial members, ID=HOST:PORT,... (their --listen addresses), the
    /// same on every node; bootstraps the cluster on first start.
    #[arg(long, requires = "node_id")]
    peers: Option<String>,
    /// The address other nodes reach this one at (default: --listen).
    #[arg(long)]
    advertise: Option<String>,
    /// How long a cluster request waits for a leader and a quorum before 503,
    /// in milliseconds.
    #[arg(long, default_value_t = 5000)]
    request_timeout_ms: u64,
    /// Raft leader heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 100)]
    heartbeat_ms: u64,
    /// Raft election timeout in milliseconds (randomized up to twice this).
    #[arg(long, default_value_t = 500)]
    election_timeout_ms: u64,
    /// A cluster node snapshots its state after this many applied entries
    /// (and then keeps at most 1,000 older entries for lagging followers).
    #[arg(long, default_value_t = 50_000)]
    snapshot_every_entries: u64,
    /// A cluster node also snapshots once its Raft log's entries take this
    /// many more bytes of memory than after the last snapshot; the entries a
    /// snapshot covers are kept for slow followers up to a quarter of it.
    #[arg(long, default_value_t = 64 << 20)]
    snapshot_log_bytes: u64,
    /// A cluster node keeps this many bytes free on its data directory's
    /// disk, plus room for one more snapshot of its data. Short of that, as
    /// leader it refuses writes that add data (deletes go through, and the
    /// log is compacted) and hands leadership to another member; as follower
    /// it stops taking such entries and falls behind until it has room.
    #[arg(long, default_value_t = walrus::raft::space::DEFAULT_MIN_FREE_BYTES)]
    min_free_space: u64,
    /// FOR TESTS ONLY: expose `/fault/clock` (moves the expiry clock forward)
    /// and, on a cluster node, `/fault/partition` and `/fault/heal`, a switch
    /// that cuts it off from chosen peers (`walrus verify --nemesis
    /// partition` uses it). Off by default; never in production.
    #[arg(long)]
    enable_fault_injection: bool,
    /// FOR TESTS ONLY: the newest command format this cluster node says it
    /// reads and proposes, lower than this build's to play an older walrus
    /// in a rolling upgrade (see `raft/formats.rs`).
    #[arg(long, hide = true, default_value_t = walrus::store::COMMAND_FORMAT,
          value_parser = clap::value_parser!(u32).range(1..=walrus::store::COMMAND_FORMAT as i64))]
    command_format: u32,
}

impl ServeArgs {
    fn watch_history(&self) -> walrus::store::changes::FeedLimits {
        walrus::store::changes::FeedLimits {
            max_changes: self.watch_history_changes.max(1),
            max_bytes: self.watch_history_bytes.max(1),
        }
    }

    fn options(&self) -> Result<ServeOptions> {
        let recovery_mode = if self.repair {
            RecoveryMode::Repair
        } else if self.strict_recovery {
            RecoveryMode::Strict
        } else {
            RecoveryMode::TolerateTornTail
        };
        let auth_token = match &self.auth_token_file {
            Some(path) => {
                let token = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the auth token from {}", path.display()))?;
                let token = token.trim();
                anyhow::ensure!(!token.is_empty(), "{} holds an empty token", path.display());
                Some(Arc::from(token))
            }
            None => None,
        };
        let resp = walrus::resp::RespConfig {
            limits: walrus::resp::Limits {
                max_bulk_bytes: self.max_value_bytes,
                ..walrus::resp::Limits::default()
            },
            max_key_bytes: self.max_key_bytes,
            auth_token: auth_token.clone(),
            max_connections: self.max_connections.max(1),
            idle_timeout_secs: self.resp_idle_timeout_secs,
            tcp_keepalive_secs: self.resp_tcp_keepalive_secs,
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            // Set from --tls-cert when the server starts.
            tls: None,
            migrate_tls: self.migrate_tls()?,
            fsync: self.fsync,
            persistent: !self.in_memory,
            data_dir: (!self.in_memory).then(|| self.data_dir.clone()),
            event_loops: self.resp_threads.map(|threads| threads.max(1)),
        };
        let (cluster, growth) = self.cluster_and_growth()?;
        Ok(ServeOptions {
            listen: self.listen.clone(),
            resp_listen: self.resp_listen.clone(),
            resp,
            sweep: walrus::expiry::SweepConfig::default(),
            data_dir: self.data_dir.clone(),
            in_memory: self.in_memory,
            store: StoreOptions {
                fsync: self.fsync,
                wal: WalOptions {
                    segment_bytes: self.segment_bytes.max(4096),
                    preallocate: !self.no_preallocate,
                    recovery_mode,
                    direct_io: !self.no_direct_io,
                    ..WalOptions::default()
                },
                snapshots: SnapshotPolicy {
                    automatic: !self.no_auto_snapshot,
                    min_log_bytes: self.snapshot_min_log_bytes,
                    live_data_ratio: self.snapshot_ratio.max(1),
                },
                max_batch: 0,
                commit_delay: Duration::from_micros(self.commit_delay_us),
                watch_history: self.watch_history(),
                latency: Default::default(),
            },
            http: HttpConfig {
                max_key_bytes: self.max_key_bytes,
                max_value_bytes: self.max_value_bytes,
                max_header_bytes: self.max_header_bytes,
                header_timeout: Duration::from_millis(self.header_timeout_ms.max(1)),
                body_timeout: Duration::from_millis(self.body_timeout_ms.max(1)),
                idle_timeout: Duration::from_millis(self.idle_timeout_ms.max(1)),
                max_connections: self.max_connections.max(1),
                shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
                auth_token,
                ready_without_auth: self.ready_without_auth,
                metrics_without_auth: self.metrics_without_auth,
                fault_injection: self.enable_fault_injection,
                ..HttpConfig::default()
            },
            tls: self.tls_cert.clone().zip(self.tls_key.clone()),
            cluster,
            growth,
        })
    }

    /// MIGRATE's TLS, with --tls-cert: the node's certificate and key
    /// presented as a client's (a Redis asks for one by default), and the
    /// target's certificate checked against --peer-cacert.
    fn migrate_tls(&self) -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let identity = walrus::http::load_identity(cert, key)?;
        let ca_file = self.peer_cacert.as_ref().unwrap_or(cert);
        let config = walrus::client::tls::client_config(ca_file, Some(identity))
            .with_context(|| format!("--peer-cacert {}", ca_file.display()))?;
        Ok(Some(config))
    }

    /// The cluster member to serve (`--node-id`, or the one the data
    /// directory's MEMBER file names), else the member a durable single
    /// store becomes if it is asked to add a learner.
    #[allow(clippy::type_complexity)]
    fn cluster_and_growth(
        &self,
    ) -> Result<(
        Option<walrus::raft::ClusterOptions>,
        Option<walrus::raft::ClusterOptions>,
    )> {
        if self.in_memory {
            anyhow::ensure!(
                self.node_id.is_none(),
                "a cluster node needs a data directory, not --in-memory"
            );
            return Ok((None, None));
        }
        // An adoption cut short after its commit writes the MEMBER file as
        // it finishes: finish it before asking what the directory is.
        walrus::raft::adopt::finish_pending(&self.data_dir)?;
        let member = walrus::raft::member::read(&walrus::storage::StdFs, &self.data_dir)?;
        if let (Some(flag), Some(member)) = (self.node_id, &member) {
            anyhow::ensure!(
                flag == member.node_id,
                "{} holds the data of cluster node {}, not --node-id {flag}",
                self.data_dir.display(),
                member.node_id
            );
        }
        match (self.node_id, member) {
            (Some(node_id), _) => Ok((Some(self.cluster_options(node_id, None)?), None)),
            (None, Some(member)) => {
                tracing::info!(
                    "{} holds the data of cluster node {} (its MEMBER file): serving it as that node",
                    self.data_dir.display(),
                    member.node_id
                );
                let options = self.cluster_options(member.node_id, Some(member.advertise))?;
                Ok((Some(options), None))
            }
            (None, None) => Ok((None, Some(self.cluster_options(1, None)?))),
        }
    }

    /// The settings of cluster node `node_id`; it advertises --advertise,
    /// else `recorded` (its MEMBER file's address), else --listen.
    fn cluster_options(
        &self,
        node_id: u64,
        recorded: Option<String>,
    ) -> Result<walrus::raft::ClusterOptions> {
        let advertise = self
            .advertise
            .clone()
            .or(recorded)
            .unwrap_or_else(|| self.listen.clone());
        let mut options = walrus::raft::ClusterOptions::new(node_id, advertise);
        if let Some(peers) = &self.peers {
            options.peers = walrus::raft::parse_peers(peers)
                .map_err(|reason| anyhow::anyhow!("--peers: {reason}"))?;
        }
        options.fsync = self.fsync;
        options.watch_history = self.watch_history();
        options.wal = WalOptions {
            segment_bytes: self.segment_bytes.max(4096),
            preallocate: !self.no_preallocate,
            recovery_mode: if self.repair {
                RecoveryMode::Repair
            } else if self.strict_recovery {
                RecoveryMode::Strict
            } else {
                RecoveryMode::TolerateTornTail
            },
            direct_io: !self.no_direct_io,
            ..WalOptions::default()
        };
        options.token = match &self.auth_token_file {
            Some(path) => Some(std::fs::read_to_string(path)?.trim().to_string()),
            None => None,
        };
        options.request_timeout = Duration::from_millis(self.request_timeout_ms.max(1));
        options.heartbeat_ms = self.heartbeat_ms.max(1);
        let election = self.election_timeout_ms.max(3 * options.heartbeat_ms);
        options.election_timeout_ms = (election, election * 2);
        options.snapshot_every = self.snapshot_every_entries.max(1);
        options.snapshot_log_bytes = self.snapshot_log_bytes.max(1 << 20);
        options.min_free_space = self.min_free_space;
        options.fault_injection = self.enable_fault_injection;
        options.command_format = self.command_format;
        if let Some(cert) = &self.tls_cert {
            let ca_file = self.peer_cacert.as_ref().unwrap_or(cert);
            let connector = walrus::client::tls::connector(ca_file)
                .with_context(|| format!("--peer-cacert {}", ca_file.display()))?;
            options.peer_tls = Some(walrus::raft::network::PeerTls(connector));
        }
        Ok(options)
    }
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The storage engine without a server, against the original design.
    Store(StoreBenchArgs),
    /// Load against a running HTTP server (walrus, etcd's JSON gateway, or a static file).
    Http(HttpBenchArgs),
    /// Redis-protocol load (SET, GET, hot-key INCR, MULTI/EXEC) against a running server (walrus --resp-listen, or Redis).
    Resp(RespBenchArgs),
    /// Serve the original design (a map and a JSON-lines log, an fsync per write)
    /// over HTTP, as a baseline for `bench http`.
    OriginalServer {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: String,
        #[arg(long, default_value = "walrus-original-data")]
        data_dir: PathBuf,
    },
}

/// Flags every network load generator takes.
#[derive(Args)]
struct LoadArgs {
    /// Measured seconds (per operation, for `bench resp`).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Bytes per written value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
}

impl LoadArgs {
    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration.max(0.1))
    }

    fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup.max(0.0))
    }
}

#[derive(Args)]
struct RespBenchArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:6380")]
    address: std::net::SocketAddr,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Commands in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    #[command(flatten)]
    load: LoadArgs,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Every key the bench writes or reads starts with this (it never touches
    /// other keys of a live server).
    #[arg(long, default_value = walrus::bench::http::DEFAULT_KEY_PREFIX)]
    key_prefix: String,
    /// File holding the password to send with AUTH.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// What to run, in order: set, get, incr (one hot key), multi (MULTI,
    /// five SETs, EXEC).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "set,get")]
    tests: Vec<walrus::bench::resp::RespTest>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ClientArgs {
    /// Servers to try in turn, comma-separated.
    #[arg(
        long,
        env = "WALRUS_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080"
    )]
    endpoints: Vec<String>,
    /// File holding the bearer token.
    #[arg(long, env = "WALRUS_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) for https:// endpoints.
    #[arg(long)]
    cacert: Option<PathBuf>,
}

impl ClientArgs {
    fn client(&self) -> Result<walrus::client::Client> {
        self.client_waiting(walrus::client::ClientOptions::default().request_timeout)
    }

    /// A client whose requests may take up to `request_timeout`.
    fn client_waiting(&self, request_timeout: Duration) -> Result<walrus::client::Client> {
        let token = read_token(self.token_file.as_deref())?;
        let options = walrus::client::ClientOptions {
            ca_file: self.cacert.clone(),
            request_timeout,
            ..walrus::client::ClientOptions::default()
        };
        Ok(walrus::client::Client::with_options(
            self.endpoints.clone(),
            token,
            options,
        )?)
    }
}

fn read_token(path: Option<&std::path::Path>) -> Result<Option<String>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token from {}", path.display()))?;
    Ok(Some(token.trim().to_string()))
}

#[derive(Args)]
struct HttpBenchArgs {
    /// Server URLs; connections are spread over them.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    endpoints: Vec<String>,
    /// Concurrent connections, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    #[command(flatten)]
    load: LoadArgs,
    /// PUT:GET weights, e.g. 1:0 (writes only), 0:1, 1:9.
    #[arg(long, default_value = "1:1")]
    mix: walrus::bench::http::Mix,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Every key the bench writes or reads starts with this (it never touches
    /// other keys of a live server).
    #[arg(long, default_value = walrus::bench::http::DEFAULT_KEY_PREFIX)]
    key_prefix: String,
    /// Request style: walrus (/kv/), etcd (v3 JSON gateway), static (GET the URL).
    #[arg(long, default_value = "walrus")]
    style: walrus::bench::http::Style,
    /// File holding a bearer token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) for https:// endpoints.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// Server process to sample resident memory of.
    #[arg(long)]
    pid: Option<u32>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Write a throughput and p99 chart to this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Args)]
struct StoreBenchArgs {
    /// Writes per run.
    #[arg(long, default_value_t = 10_000)]
    writes: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Concurrent writer counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 8, 64])]
    writers: Vec<usize>,
    /// Directory on the disk to measure: the run works in a fresh
    /// store-bench.* directory inside it and removes only that (and DIR if
    /// the run created it).
    #[arg(long, default_value = "walrus-bench-data")]
    dir: PathBuf,
    /// Records for the replay, snapshot and RAM measurements (0 skips them).
    #[arg(long, default_value_t = 1_000_000)]
    large_records: u64,
    /// fsync policy of the durable store: always, interval=MS or never.
    #[arg(long, default_value = "always")]
    fsync: FsyncPolicy,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Run only the in-memory stores (no disk), e.g. for profiling.
    #[arg(long, conflicts_with = "durable_only")]
    memory_only: bool,
    /// Run only DurableStore (no baselines, no in-memory stores), e.g. for
    /// profiling the commit path.
    #[arg(long)]
    durable_only: bool,
    /// Append with write + fdatasync instead of O_DIRECT|O_DSYNC block writes.
    #[arg(long)]
    no_direct_io: bool,
}

/// Logs at `info`, without openraft's warnings per failed heartbeat and
/// per retried append.
const DEFAULT_LOG_FILTER: &str = "info,openraft::core::heartbeat=error,\
     openraft::replication=error,openraft::engine::handler::replication_handler=error";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // openraft warns at every failed heartbeat (ten a second for
                // a node that is down) and every failed append it retries;
                // walrus logs a peer going down and coming back once each.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    #[cfg(not(target_env = "msvc"))]
    walrus::allocator::register(Box::new(jemalloc::Jemalloc));
    match run(Cli::parse()) {
        Ok(code) => code,
        // `walrus list | head`: the reader left; nothing more to say.
        Err(error) if error.chain().any(is_reader_left) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            let broke_mid_request = error.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broke_mid_request {
                eprintln!(
                    "hint: the server closed the connection before the whole request was sent; \
                     it does that to a value over its --max-value-bytes"
                );
            }
            if error.chain().any(is_no_space) {
                eprintln!(
                    "hint: the disk holding the data directory is full. Free space, or start \
                     with a smaller --segment-bytes or --no-preallocate: a new log segment \
                     needs {} KiB, and {} KiB more are kept free for deletes.",
                    walrus::storage::wal::MIN_SEGMENT_BYTES >> 10,
                    walrus::storage::wal::SPACE_RESERVE_BYTES >> 10
                );
            }
            ExitCode::from(2)
        }
    }
}

/// Whether an error (or one of its causes) is the disk being full.
/// The error and its causes on one line, each said once. A library error
/// that names its cause in its own text (`I/O error on PATH: CAUSE`) also
/// hands it on as its source, and `{:#}` would print it twice.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn is_no_space(cause: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        cause.downcast_ref::<walrus::Error>(),
        Some(walrus::Error::NoSpace { .. })
    ) || cause
        .downcast_ref::<std::io::Error>()
        .is_some_and(walrus::error::is_no_space)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Dump { dir, entries } => {
            let options = walrus::dump::DumpOptions {
                snapshot_entries: entries,
            };
            let damaged = walrus::dump::dump(&dir, options, &mut output())
                .with_context(|| format!("dumping {}", dir.display()))?;
            // As fsck and cmp do: 1 says "found a difference", 2 "could not look".
            Ok(match damaged {
                0 => ExitCode::SUCCESS,
                _ => ExitCode::from(1),
            })
        }
        Command::Bench(BenchCommand::Store(args)) => bench_store(args),
        Command::Bench(BenchCommand::Http(args)) => bench_http(args),
        Command::Bench(BenchCommand::Resp(args)) => bench_resp(args),
        Command::Bench(BenchCommand::OriginalServer { listen, data_dir }) => {
            let runtime = runtime()?;
            runtime.block_on(walrus::bench::original_server::serve(&listen, &data_dir))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cluster(command) => cluster_command(command),
        Command::Backup { file, client } => backup(&file, &client),
        Command::Restore { file, data_dir } => {
            let info = walrus::backup::restore(&file, &data_dir)?;
            say!(
                "restored {} keys at revision {} into {}",
                info.keys,
                info.revision,
                data_dir.display()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Compact { client } => admin_post(&client.client()?, "/admin/compact"),
        Command::Watch {
            prefix,
            key,
            since,
            output,
            client,
        } => watch(&client, &prefix, key.as_deref(), since, output.json()),
        Command::Verify(args) => verify(&args),
        Command::DevCluster {
            nodes,
            data_dir,
            base_port,
            threads_per_node,
        } => {
            let options = walrus::dev_cluster::DevClusterOptions {
                nodes,
                data_dir,
                base_port,
                threads_per_node: threads_per_node.map(usize::from),
            };
            walrus::dev_cluster::run(&options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Get {
            key,
            output,
            client,
        } => client_command(
            &client,
            ClientCall::Get {
                key,
                json: output.json(),
            },
        ),
        Command::Put {
            key,
            value,
            ttl,
            if_revision,
            output,
            client,
        } => client_command(
            &client,
            ClientCall::Put {
                key,
                value,
                ttl,
                if_revision,
                json: output.json(),
            },
        ),
        Command::Delete {
            key,
            if_revision,
            require_existing,
            output,
            client,
        } => client_command(
            &client,
            ClientCall::Delete {
                key,
                if_revision,
                require_existing,
                json: output.json(),
            },
        ),
        Command::List {
            prefix,
            keys_only,
            limit,
            output,
            client,
        } => client_command(
            &client,
            ClientCall::List {
                prefix,
                keys_only,
                limit,
                json: output.json(),
            },
        ),
    }
}

enum ClientCall {
    Get {
        key: String,
        json: bool,
    },
    Put {
        key: String,
        value: String,
        ttl: Option<String>,
        if_revision: Option<u64>,
        json: bool,
    },
    Delete {
        key: String,
        if_revision: Option<u64>,
        require_existing: bool,
        json: bool,
    },
    List {
        prefix: String,
        keys_only: bool,
        limit: Option<usize>,
        json: bool,
    },
}

/// A key or value as line output shows it: tab, newline, carriage return and
/// backslash escaped (`\t`, `\n`, `\r`, `\\`), other bytes as they are
/// (invalid UTF-8 as `\xNN`), so each is always one field of one line.
fn escape_for_line(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for character in chunk.valid().chars() {
            match character {
                '\t' => text.push_str("\\t"),
                '\n' => text.push_str("\\n"),
                '\r' => text.push_str("\\r"),
                '\\' => text.push_str("\\\\"),
                other => text.push(other),
            }
        }
        for byte in chunk.invalid() {
            text.push_str(&format!("\\x{byte:02x}"));
        }
    }
    text
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Sets `object[name]` to `bytes` as text, or `object[name_base64]` to their
/// base64 when they are not UTF-8 (as the HTTP API's JSON does).
fn set_text_or_base64(object: &mut serde_json::Value, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => object[name] = text.into(),
        Err(_) => object[format!("{name}_base64")] = base64_url(bytes).into(),
    }
}

/// A listed key as one JSON object: text as text, other bytes as base64
/// (`key_base64`, `value_base64`).
fn list_item_json(item: &walrus::client::list::ListItem) -> serde_json::Value {
    let mut object = serde_json::json!({ "revision": item.revision });
    set_text_or_base64(&mut object, "key", &item.key);
    if let Some(value) = &item.value {
        set_text_or_base64(&mut object, "value", value);
    }
    object
}

/// `If-Match` headers for a conditional write.
fn if_match(condition: Option<String>) -> Result<http::HeaderMap> {
    let mut headers = http::HeaderMap::new();
    if let Some(condition) = condition {
        headers.insert(
            http::header::IF_MATCH,
            http::HeaderValue::from_str(&condition)?,
        );
    }
    Ok(headers)
}

/// Says why a conditional write was refused.
fn refused(key: &str, wanted: Option<u64>, current: Option<u64>) {
    let key = escape_for_line(key.as_bytes());
    match (wanted, current) {
        (Some(wanted), Some(current)) => {
            eprintln!("{key}: not at revision {wanted} (it is at {current}); nothing written")
        }
        (Some(wanted), None) => {
            eprintln!("{key}: not at revision {wanted} (it does not exist); nothing written")
        }
        (None, _) => eprintln!("{key}: the condition did not hold; nothing written"),
    }
}

/// `walrus watch`: prints each change as it comes until interrupted (or the
/// reader of stdout goes away).
fn watch(
    args: &ClientArgs,
    prefix: &str,
    key: Option<&str>,
    since: Option<u64>,
    json: bool,
) -> Result<ExitCode> {
    use walrus::client::watch::WatchTarget;
    let client = args.client()?;
    let runtime = runtime()?;
    let target = match key {
        Some(key) => WatchTarget::Key(key.as_bytes()),
        None => WatchTarget::Prefix(prefix.as_bytes()),
    };
    let mut failure: Option<std::io::Error> = None;
    let mut stdout = output();
    let followed = runtime.block_on(client.watch(target, since, |event| {
        let line = match watch_line(event, json) {
            Ok(line) => line,
            Err(error) => {
                failure = Some(std::io::Error::other(error));
                return false;
            }
        };
        // Each change is flushed at once: a pipe reader sees it as it happens.
        let written = stdout
            .write_all(line.as_bytes())
            .and_then(|()| stdout.flush());
        match written {
            Ok(()) => true,
            Err(error) => {
                failure = Some(error);
                false
            }
        }
    }));
    if let Some(error) = failure {
        return Err(error.into());
    }
    followed?;
    Ok(ExitCode::SUCCESS)
}

fn watch_line(event: &walrus::client::watch::WatchEvent, json: bool) -> Result<String> {
    let mut data: serde_json::Value =
        serde_json::from_str(&event.data).context("a watch event that is not JSON")?;
    if json {
        data["type"] = event.kind.clone().into();
        data["id"] = event.id.clone().into();
        return Ok(format!("{data}\n"));
    }
    let field = |name: &str| -> Option<Vec<u8>> {
        use base64::Engine;
        match (&data[name], &data[&format!("{name}_base64")]) {
            (serde_json::Value::String(text), _) => Some(text.as_bytes().to_vec()),
            (_, serde_json::Value::String(encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok(),
            _ => None,
        }
    };
    let key = escape_for_line(&field("key").unwrap_or_default());
    let revision = data["revision"].as_u64().unwrap_or(0);
    Ok(match field("value") {
        Some(value) => format!(
            "{revision}\t{}\t{key}\t{}\n",
            event.kind,
            escape_for_line(&value)
        ),
        None => format!("{revision}\t{}\t{key}\n", event.kind),
    })
}

/// Runs one client command: exit 0 on success, 1 for a missing key, 2 on
/// error, 3 when a conditional write (`--if-revision`) was refused.
fn client_command(args: &ClientArgs, call: ClientCall) -> Result<ExitCode> {
    let client = args.client()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut stdout = output();
        match call {
            ClientCall::Get { key, json } => {
                let path = walrus::client::key_path(key.as_bytes());
                let response = client
                    .request(
                        http::Method::GET,
                        &path,
                        http::HeaderMap::new(),
                        Bytes::new(),
                    )
                    .await?;
                match response.status {
                    http::StatusCode::OK if json => {
                        let mut object = serde_json::json!({
                            "key": key,
                            "revision": response.revision(),
                            "ttl_ms": response.ttl_ms(),
                        });
                        set_text_or_base64(&mut object, "value", &response.body);
                        writeln!(stdout, "{object}")?;
                        Ok(ExitCode::SUCCESS)
                    }
                    http::StatusCode::OK => {
                        stdout.write_all(&response.body)?;
                        if std::io::IsTerminal::is_terminal(&std::io::stdout())
                            && !response.body.ends_with(b"\n")
                        {
                            stdout.write_all(b"\n")?;
                        }
                        Ok(ExitCode::SUCCESS)
                    }
                    _ if response.is_key_absent() => {
                        eprintln!("{}: not found", escape_for_line(key.as_bytes()));
                        Ok(ExitCode::from(1))
                    }
                    _ => Err(response.into_error().into()),
                }
            }
            ClientCall::Put {
                key,
                value,
                ttl,
                if_revision,
                json,
            } => {
                let value = if value == "-" {
                    let mut input = Vec::new();
                    std::io::stdin().read_to_end(&mut input)?;
                    input
                } else {
                    value.into_bytes()
                };
                let mut path = walrus::client::key_path(key.as_bytes());
                if let Some(ttl) = &ttl {
                    path.push_str("?ttl=");
                    path.extend(percent_encoding::utf8_percent_encode(
                        ttl,
                        percent_encoding::NON_ALPHANUMERIC,
                    ));
                }
                let headers = if_match(if_revision.map(|revision| format!("\"{revision}\"")))?;
                let response = client
                    .request(http::Method::PUT, &path, headers, Bytes::from(value))
                    .await?;
                match response.status {
                    http::StatusCode::OK => {
                        if json {
                            let object = serde_json::json!({
                                "key": key,
                                "revision": response.revision(),
                                "ttl": ttl,
                            });
                            writeln!(stdout, "{object}")?;
                        }
                        Ok(ExitCode::SUCCESS)
                    }
                    http::StatusCode::PRECONDITION_FAILED => {
                        refused(&key, if_revision, response.revision());
                        Ok(ExitCode::from(3))
                    }
                    _ => Err(response.into_error().into()),
                }
            }
            ClientCall::Delete {
                key,
                if_revision,
                require_existing,
                json,
            } => {
                let path = walrus::client::key_path(key.as_bytes());
                let condition = match (if_revision, require_existing) {
                    (Some(revision), _) => Some(format!("\"{revision}\"")),
                    (None, true) => Some("*".to_string()),
                    (None, false) => None,
                };
                let response = client
                    .request(
                        http::Method::DELETE,
                        &path,
                        if_match(condition)?,
                        Bytes::new(),
                    )
                    .await?;
                match response.status {
                    http::StatusCode::OK => {
                        if json {
                            let object = serde_json::json!({
                                "key": key,
                                "revision": response.revision(),
                            });
                            writeln!(stdout, "{object}")?;
                        }
                        Ok(ExitCode::SUCCESS)
                    }
                    http::StatusCode::PRECONDITION_FAILED if if_revision.is_none() => {
                        eprintln!("{}: not found", escape_for_line(key.as_bytes()));
                        Ok(ExitCode::from(1))
                    }
                    http::StatusCode::PRECONDITION_FAILED => {
                        refused(&key, if_revision, response.revision());
                        Ok(ExitCode::from(3))
                    }
                    _ => Err(response.into_error().into()),
                }
            }
            ClientCall::List {
                prefix,
                keys_only,
                limit,
                json,
            } => {
                let mut start: Option<Vec<u8>> = None;
                let mut remaining = limit.filter(|&n| n > 0).unwrap_or(usize::MAX);
                while remaining > 0 {
                    let page_size = remaining.min(1000);
                    let page = client
                        .list(
                            prefix.as_bytes(),
                            start.as_deref(),
                            Some(page_size),
                            keys_only,
                        )
                        .await?;
                    for item in &page.items {
                        if json {
                            writeln!(stdout, "{}", list_item_json(item))?;
                            continue;
                        }
                        stdout.write_all(escape_for_line(&item.key).as_bytes())?;
                        if let Some(value) = &item.value {
                            stdout.write_all(b"\t")?;
                            stdout.write_all(escape_for_line(value).as_bytes())?;
                        }
                        stdout.write_all(b"\n")?;
                    }
                    remaining = remaining.saturating_sub(page.items.len());
                    match page.next {
                        Some(next) => start = Some(next),
                        None => break,
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

fn bench_http(args: HttpBenchArgs) -> Result<ExitCode> {
    let config = walrus::bench::http::HttpBenchConfig {
        endpoints: args.endpoints,
        connections: args.connections,
        duration: args.load.duration(),
        warmup: args.load.warmup(),
        value_size: args.load.value_size,
        mix: args.mix,
        key_space: args.keys,
        key_prefix: args.key_prefix,
        style: args.style,
        token: read_token(args.token_file.as_deref())?,
        ca_file: args.cacert,
        pid: args.pid,
        progress: !args.json,
        ..walrus::bench::http::HttpBenchConfig::default()
    };
    config.validate()?;
    let runtime = runtime()?;
    let report = runtime.block_on(walrus::bench::http::run(&config))?;
    if let Some(path) = &args.plot {
        let title = format!(
            "walrus bench http: {} connections, mix {}",
            config.connections, config.mix
        );
        walrus::bench::plot::write_svg(path, &title, &report.timeline)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        say!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        say!("{}", report.render())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_resp(args: RespBenchArgs) -> Result<ExitCode> {
    let config = walrus::bench::resp::RespBenchConfig {
        address: args.address,
        connections: args.connections,
        pipeline: args.pipeline,
        duration: args.load.duration(),
        warmup: args.load.warmup(),
        value_size: args.load.value_size,
        key_space: args.keys,
        key_prefix: args.key_prefix,
        password: read_token(args.token_file.as_deref())?,
        tests: args.tests,
    };
    config.validate()?;
    let runtime = runtime()?;
    let report = runtime.block_on(walrus::bench::resp::run(&config))?;
    if args.json {
        say!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        say!("{}", report.render())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(args: &ServeArgs) -> Result<ExitCode> {
    let options = args.options()?;
    let runtime = runtime_with_workers(args.threads.map(usize::from))?;
    // Ports first: a port in use fails before the data directory is touched.
    let listeners = runtime.block_on(bind_all(&options))?;
    let workers = runtime.metrics().num_workers();
    tracing::info!(
        "walrus {} starting: data in {}, fsync {}, {workers} worker thread{}, auth {}, TLS {}{}",
        env!("CARGO_PKG_VERSION"),
        options.data_dir.display(),
        options.store.fsync,
        if workers == 1 { "" } else { "s" },
        if options.http.auth_token.is_some() {
            "on"
        } else {
            "off"
        },
        if options.tls.is_some() { "on" } else { "off" },
        match &options.cluster {
            Some(cluster) => format!(", cluster node {}", cluster.node_id),
            None => String::new(),
        }
    );
    let http_address = listeners.http.local_addr()?;
    let node = runtime.block_on(open_node(&options, http_address))?;
    let (served, closed) = runtime.block_on(async {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let stdin_closed = stdin_closed(args.stop_when_stdin_closes);
        tokio::spawn(async move {
            tokio::select! {
                () = termination_signal() => {}
                () = stdin_closed => tracing::info!("standard input closed"),
            }
            tracing::info!("shutting down: finishing in-flight requests");
            let _ = stop.send(true);
        });
        let served = run_server(listeners, node.clone(), &options, stopped).await;
        let closed = node.stop().await;
        (served, closed)
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    served?;
    closed?;
    tracing::info!("stopped cleanly; the data directory is unlocked");
    Ok(ExitCode::SUCCESS)
}

/// Resolves once standard input reaches its end (or cannot be read), if
/// `watch` is set; otherwise never. The read runs on its own thread: a
/// blocking read of a pipe cannot be cancelled, so it must not be a task
/// the runtime's shutdown waits for. The thread ends with the process.
fn stdin_closed(watch: bool) -> impl std::future::Future<Output = ()> {
    let on_close = watch.then(|| {
        let (closed, on_close) = tokio::sync::oneshot::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("walrus-stdin".into())
            .spawn(move || {
                let mut buffer = [0u8; 512];
                let mut stdin = std::io::stdin().lock();
                loop {
                    match stdin.read(&mut buffer) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                let _ = closed.send(());
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot watch standard input; only signals stop the server");
        }
        on_close
    });
    async move {
        let closed = match on_close {
            Some(on_close) => on_close.await.is_ok(),
            None => false,
        };
        if !closed {
            std::future::pending::<()>().await;
        }
    }
}

/// `walrus verify`: exit 0 only when every check passes, 1 when one fails.
/// The endpoints `--endpoints` and `--resp` name, or the local default.
fn verify_endpoints(args: &VerifyArgs) -> Vec<String> {
    if args.endpoints.is_empty() && args.resp.is_empty() {
        return vec!["http://127.0.0.1:8080".into()];
    }
    let resp = args.resp.iter().map(|address| {
        if address.starts_with("redis://") || address.starts_with("rediss://") {
            address.clone()
        } else {
            format!("redis://{address}")
        }
    });
    args.endpoints.iter().cloned().chain(resp).collect()
}

fn verify(args: &VerifyArgs) -> Result<ExitCode> {
    let options = walrus::verify::VerifyOptions {
        kind: args.workload,
        workload: walrus::verify::workload::WorkloadOptions {
            endpoints: verify_endpoints(args),
            token: read_token(args.token_file.as_deref())?,
            clients: args.clients.max(1),
            keys: args.keys.max(1),
            duration: Duration::from_secs(args.duration),
            mix: args.mix,
            value_bytes: args.value_size,
            seed: args.seed,
            request_timeout: Duration::from_millis(args.request_timeout_ms.max(1)),
            max_operations: args.max_operations,
            ca_file: args.cacert.clone(),
        },
        dev_cluster: args.dev_cluster,
        protocol: args.protocol,
        faults: args.nemesis.clone(),
        fault_interval: Duration::from_millis(args.fault_interval_ms),
        fault_hold: Duration::from_millis(args.fault_hold_ms),
        budget_per_key: args.budget,
        progress: !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        report_dir: args.report.clone(),
    };
    let report = runtime()?
        .block_on(walrus::verify::run(options))
        .map_err(|reason| anyhow::anyhow!(reason))?;
    if args.json {
        say!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        say_raw!("{}", report.render())?;
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `walrus cluster …`: membership changes go to whichever endpoint leads
/// (the others answer 503 and the client tries the next).
fn cluster_command(command: ClusterCommand) -> Result<ExitCode> {
    let (client, path) = match &command {
        ClusterCommand::Adopt {
            data_dir,
            node_id,
            advertise,
        } => {
            let adopted = walrus::raft::adopt::adopt(data_dir, *node_id, advertise)?;
            say!(
                "{} is now node {} of a one-node cluster at {}: {} keys, the log goes on after \
                 index {}; the single-node files are kept in {}.\n\
                 start it with: walrus serve --data-dir {} --node-id {} --listen {}",
                data_dir.display(),
                adopted.node_id,
                adopted.advertise,
                adopted.keys,
                adopted.index,
                adopted.kept_in.display(),
                data_dir.display(),
                adopted.node_id,
                adopted.advertise,
            )?;
            return Ok(ExitCode::SUCCESS);
        }
        ClusterCommand::Status { client } => (client, "/cluster/status".to_string()),
        ClusterCommand::AddLearner { node, client } => {
            let (id, address) = node
                .split_once('=')
                .context("expected ID=HOST:PORT, e.g. 4=127.0.0.1:8084")?;
            let id: u64 = id.parse().context("the node id must be a number")?;
            let address = walrus::client::key_path(address.as_bytes());
            (
                client,
                format!("/cluster/add-learner?id={id}&addr={}", &address[4..]),
            )
        }
        ClusterCommand::Promote { id, client } => (client, format!("/cluster/promote?id={id}")),
        ClusterCommand::Remove { id, client } => (client, format!("/cluster/remove?id={id}")),
        ClusterCommand::TransferLeader { id, client } => {
            (client, format!("/cluster/transfer-leader?id={id}"))
        }
    };
    if matches!(command, ClusterCommand::Status { .. }) {
        return cluster_status(client);
    }
    // The server answers add-learner once the learner has caught up, which
    // may take a large snapshot's transfer; the CLI outwaits it.
    let waiting = match command {
        ClusterCommand::AddLearner { .. } => {
            walrus::raft::cluster::LEARNER_CATCH_UP_TIMEOUT + Duration::from_secs(30)
        }
        _ => walrus::client::ClientOptions::default().request_timeout,
    };
    admin_post(&client.client_waiting(waiting)?, &path)
}

/// `walrus backup FILE`: streams `/admin/snapshot` to FILE, checked as it
/// arrives, in constant memory.
fn backup(file: &std::path::Path, args: &ClientArgs) -> Result<ExitCode> {
    let client = args.client()?;
    let mut backup = walrus::backup::BackupFile::create(file)?;
    let mut failure = None;
    let downloaded =
        runtime()?.block_on(
            client.download("/admin/snapshot", |data| match backup.write(data) {
                Ok(()) => true,
                Err(error) => {
                    failure = Some(error);
                    false
                }
            }),
        );
    if let Err(error) = downloaded {
        if let walrus::client::ClientError::Http { status, body } = &error {
            eprintln!("error: {status} {}", body.trim());
            return Ok(ExitCode::from(2));
        }
        return Err(error.into());
    }
    if let Some(error) = failure {
        return Err(error.into());
    }
    let info = backup.finish()?;
    say!(
        "saved {} keys at revision {} ({} bytes) to {}",
        info.keys,
        info.revision,
        info.bytes,
        file.display()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// POSTs to an admin or membership route and prints the answer.
fn admin_post(client: &walrus::client::Client, path: &str) -> Result<ExitCode> {
    let response = runtime()?.block_on(client.request(
        http::Method::POST,
        path,
        http::HeaderMap::new(),
        bytes::Bytes::new(),
    ))?;
    let body = String::from_utf8_lossy(&response.body).into_owned();
    if response.status.is_success() {
        say!("{}", body.trim())?;
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: {} {}", response.status, body.trim());
        Ok(ExitCode::from(2))
    }
}

/// A node's free disk space for `walrus cluster status`, saying when it is
/// short (`docs/cluster.md`).
fn disk_column(status: &walrus::raft::ClusterStatus) -> String {
    use walrus::raft::space::mebibytes;
    if status.disk_free_bytes == u64::MAX {
        return "-".into();
    }
    let mut column = mebibytes(status.disk_free_bytes);
    if status.disk_free_bytes < status.disk_kept_free_bytes {
        column.push_str(&format!(
            " (short: keeps {})",
            mebibytes(status.disk_kept_free_bytes)
        ));
    }
    if status.refusing_entries {
        column.push_str(", refusing entries");
    }
    column
}

/// Prints every endpoint's view of the cluster as a table.
fn cluster_status(args: &ClientArgs) -> Result<ExitCode> {
    let runtime = runtime()?;
    let token = read_token(args.token_file.as_deref())?;
    say!(
        "{:<28} {:>4} {:<10} {:>6} {:>7} {:>10} {:>10} {:>10} {:>6}  {}",
        "ENDPOINT",
        "ID",
        "ROLE",
        "TERM",
        "LEADER",
        "LAST LOG",
        "COMMIT",
        "APPLIED",
        "FORMAT",
        "DISK FREE"
    )?;
    let mut failures = 0;
    for endpoint in &args.endpoints {
        let client = walrus::client::Client::with_options(
            vec![endpoint.clone()],
            token.clone(),
            walrus::client::ClientOptions {
                ca_file: args.cacert.clone(),
                ..walrus::client::ClientOptions::default()
            },
        )?;
        let answer = runtime.block_on(client.request(
            http::Method::GET,
            "/cluster/status",
            http::HeaderMap::new(),
            bytes::Bytes::new(),
        ));
        // An endpoint that answered with an error is not unreachable: the
        // row gives its status, so a wrong token reads as one.
        let status = answer.map_err(anyhow::Error::from).and_then(|response| {
            anyhow::ensure!(
                response.status.is_success(),
                "answered {}: {}",
                response.status,
                String::from_utf8_lossy(&response.body).trim()
            );
            Ok(serde_json::from_slice::<walrus::raft::ClusterStatus>(
                &response.body,
            )?)
        });
        match status {
            Ok(status) => say!(
                "{:<28} {:>4} {:<10} {:>6} {:>7} {:>10} {:>10} {:>10} {:>6}  {}",
                endpoint,
                status.node_id,
                status.role,
                status.term,
                status
                    .leader_id
                    .map_or("-".to_string(), |id| id.to_string()),
                status.last_log_index,
                status.commit_index,
                status.applied_index,
                status.command_format,
                disk_column(&status)
            )?,
            Err(error) => {
                failures += 1;
                let what = match error.downcast_ref::<walrus::client::ClientError>() {
                    Some(_) => "unreachable",
                    None => "failed",
                };
                say!("{endpoint:<28} {what}: {}", one_line(&error))?;
            }
        }
    }
    // As `etcdctl endpoint status` does, any endpoint that failed fails the
    // command: 1 when some answered, 2 when none did.
    Ok(match failures {
        0 => ExitCode::SUCCESS,
        failed if failed == args.endpoints.len() => ExitCode::from(2),
        _ => ExitCode::from(1),
    })
}

fn bench_store(args: StoreBenchArgs) -> Result<ExitCode> {
    let config = StoreBenchConfig {
        writes: args.writes,
        value_size: args.value_size,
        writer_counts: args.writers,
        dir: args.dir.clone(),
        large_records: args.large_records,
        fsync: args.fsync,
        progress: !args.json,
        memory_only: args.memory_only,
        durable_only: args.durable_only,
        direct_io: !args.no_direct_io,
    };
    let report = run_store_bench(&config)?;
    if args.json {
        say!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        say!("{}", report.render())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The multi-threaded runtime the load generators and clients run on.
fn runtime() -> Result<tokio::runtime::Runtime> {
    runtime_with_workers(None)
}

/// The multi-threaded runtime with `workers` worker threads, or tokio's
/// default (`TOKIO_WORKER_THREADS`, else one per core).
fn runtime_with_workers(workers: Option<usize>) -> Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")
}
