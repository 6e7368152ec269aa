//! The Redis protocol front end (RESP2, and RESP3 after `HELLO 3`):
//! `walrus serve --resp-listen ADDR`.
//!
//! Layers, each calling only the one below: [`serve_resp`] accepts connections
//! (refusing those past `maxclients`, as Redis does); `connection` reads
//! requests, pipelines them and writes replies in order; `cmd` turns one
//! request into store commands and a reply (one file per command family);
//! `frame` parses requests and encodes replies. Beside them: `clients` (the
//! open connections, for CLIENT LIST and KILL), `stats` (per-command
//! counters and latency), `slowlog`, and what is pushed to connections: `push`
//! (each one's bounded queue), `monitor` (MONITOR) and `pubsub`.
//!
//! Durability is the store's: a reply to a write leaves only after the write is
//! durable. Pipelined writes are submitted together, so they share a sync.

pub(crate) mod clients;
mod cmd;
mod connection;
pub mod frame;
mod glob;
mod keyspace_events;
mod migrate_cache;
mod monitor;
mod pubsub;
mod push;
mod slowlog;
mod stats;
mod tracking;

/// A request's words as the parser hands them over, for unit tests.
#[cfg(test)]
pub(crate) fn test_args(words: &[&str]) -> Vec<bytes::Bytes> {
    words
        .iter()
        .map(|word| bytes::Bytes::copy_from_slice(word.as_bytes()))
        .collect()
}

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::expiry::SweepState;
use crate::latency_monitor::LatencyMonitor;
use crate::node::Node;
use crate::pause::ClientPause;
use crate::store::KvStore;
pub use frame::{Limits, Parsed, Protocol, ProtocolError, Reply, parse_request, take_request};

/// Limits of the RESP server; each comes from a `walrus serve` flag.
#[derive(Debug, Clone)]
pub struct RespConfig {
    /// Request caps; `max_bulk_bytes` is the value limit (`--max-value-bytes`).
    pub limits: Limits,
    /// Longest key, in bytes (`--max-key-bytes`).
    pub max_key_bytes: usize,
    /// Password `AUTH` must give before anything else works, if set.
    pub auth_token: Option<Arc<str>>,
    /// Clients served at once at the start (`maxclients`); more are refused
    /// with Redis's error.
    pub max_connections: usize,
    /// Seconds a client may stay idle before it is disconnected, 0 for
    /// never (Redis's `timeout`; `CONFIG SET timeout` changes it live).
    pub idle_timeout_secs: u64,
    /// Seconds of quiet before TCP keepalive probes a client's connection,
    /// 0 for no probes (Redis's `tcp-keepalive`).
    pub tcp_keepalive_secs: u64,
    /// How long shutdown waits for connections to finish their requests.
    pub shutdown_grace: Duration,
    /// TLS for every connection (the node's `--tls-cert`), so `AUTH` never
    /// travels in the clear; `None` serves plain TCP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS for MIGRATE's connections to its target: the node's certificate
    /// as the client's, trusting `--peer-cacert` (by default `--tls-cert`).
    /// `None` without `--tls-cert`: MIGRATE then speaks plain TCP.
    pub migrate_tls: Option<Arc<rustls::ClientConfig>>,
    /// The store's fsync policy (CONFIG GET appendfsync, INFO persistence).
    pub fsync: crate::store::FsyncPolicy,
    /// False for `--in-memory` (appendonly no).
    pub persistent: bool,
    /// The data directory, whose newest snapshot `LASTSAVE` reports; `None`
    /// in memory.
    pub data_dir: Option<std::path::PathBuf>,
    /// Event loops serving the port, each a thread (`--resp-threads`);
    /// `None` chooses: one for a single store, none for a cluster member
    /// (whose port the runtime's workers serve, beside Raft).
    pub event_loops: Option<usize>,
}

impl Default for RespConfig {
    fn default() -> Self {
        RespConfig {
            limits: Limits::default(),
            max_key_bytes: 4096,
            auth_token: None,
            max_connections: 4096,
            idle_timeout_secs: 0,
            tcp_keepalive_secs: 300,
            shutdown_grace: Duration::from_secs(10),
            tls: None,
            migrate_tls: None,
            fsync: crate::store::FsyncPolicy::Always,
            persistent: true,
            data_dir: None,
            event_loops: None,
        }
    }
}

/// How long a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the RESP server shares with the rest of the node: INFO's counters,
/// CLIENT PAUSE, the sweeper's counts and the latency monitor.
pub type NodeServices = (
    Arc<ServerStats>,
    Arc<ClientPause>,
    Arc<SweepState>,
    Arc<LatencyMonitor>,
);

/// Counters `INFO` reports.
#[derive(Debug)]
pub struct ServerStats {
    pub started: Instant,
    pub connected_clients: AtomicU64,
    pub total_connections: AtomicU64,
    pub total_commands: AtomicU64,
    pub port: u16,
    /// Per-command and per-error counts (INFO commandstats, errorstats).
    pub commands: stats::CommandStats,
    /// Connections closed for a request that is not valid RESP.
    pub protocol_errors: AtomicU64,
    /// Connections refused for being past `maxclients`.
    pub rejected_connections: AtomicU64,
    /// The counts `INFO stats` reports from: the counters above (and the
    /// sweeper's expired keys) as of the last `CONFIG RESETSTAT`. The
    /// counters themselves only grow, since `/metrics` serves them as
    /// Prometheus counters.
    pub info_since: InfoBaseline,
}

/// What `CONFIG RESETSTAT` zeroes in `INFO stats`, as Redis does: each count
/// is reported as its counter less the value here.
#[derive(Debug, Default)]
pub struct InfoBaseline {
    pub connections: AtomicU64,
    pub commands: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub expired_keys: AtomicU64,
}

impl ServerStats {
    /// `CONFIG RESETSTAT`: INFO's counts start again from zero, and the
    /// command and error statistics are cleared.
    pub fn reset_info(&self, expired_keys: u64) {
        let now = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let since = &self.info_since;
        since
            .connections
            .store(now(&self.total_connections), Ordering::Relaxed);
        since
            .commands
            .store(now(&self.total_commands), Ordering::Relaxed);
        since
            .rejected_connections
            .store(now(&self.rejected_connections), Ordering::Relaxed);
        since.expired_keys.store(expired_keys, Ordering::Relaxed);
        self.commands.reset();
    }

    /// Counters for a server on `port`, starting now.
    pub fn new(port: u16) -> ServerStats {
        ServerStats {
            started: Instant::now(),
            connected_clients: AtomicU64::new(0),
            total_connections: AtomicU64::new(0),
            total_commands: AtomicU64::new(0),
            port,
            commands: stats::CommandStats::default(),
            protocol_errors: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            info_since: InfoBaseline::default(),
        }
    }
}

impl crate::metrics::MetricsSource for ServerStats {
    fn render_metrics(&self, out: &mut String) {
        use crate::metrics::{family, sample};
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let series = [
            (
                "walrus_resp_connections",
                "gauge",
                "RESP connections open now.",
                load(&self.connected_clients),
            ),
            (
                "walrus_resp_connections_total",
                "counter",
                "RESP connections accepted since the start.",
                load(&self.total_connections),
            ),
            (
                "walrus_resp_protocol_errors_total",
                "counter",
                "RESP connections closed for a request that is not valid RESP.",
                load(&self.protocol_errors),
            ),
        ];
        for (name, kind, help, value) in series {
            family(out, name, kind, help);
            sample(out, name, "", value);
        }
        self.commands.render_metrics(out);
    }
}

/// What every connection shares.
pub struct Shared {
    pub node: Node,
    /// The node's store (`node.store()`).
    pub store: Arc<dyn KvStore>,
    pub config: RespConfig,
    pub stats: Arc<ServerStats>,
    /// The open connections (CLIENT LIST, CLIENT KILL).
    pub clients: Arc<clients::Clients>,
    /// The idle timeout now, in seconds (starts as the config's; CONFIG SET
    /// changes it).
    pub idle_timeout_secs: AtomicU64,
    /// `tcp-keepalive` now, in seconds (starts as the config's; CONFIG SET
    /// changes it for connections accepted from then on, as in Redis).
    pub tcp_keepalive_secs: AtomicU64,
    /// Commands slower than its threshold (SLOWLOG).
    pub slowlog: slowlog::SlowLog,
    /// Notified by SHUTDOWN: the server stops as on SIGTERM.
    pub stop_requested: Arc<tokio::sync::Notify>,
    /// Clients served at once now (starts as the config's; CONFIG SET
    /// maxclients changes it); more are refused with Redis's error.
    pub max_clients: std::sync::atomic::AtomicUsize,
    /// The `maxmemory-policy` CONFIG SET last chose, as an index into
    /// `cmd::server::EVICTION_POLICIES` (0, `noeviction`, at start). Nothing
    /// is ever evicted: `maxmemory` is 0, no limit, under which Redis evicts
    /// nothing either whatever the policy.
    pub maxmemory_policy: std::sync::atomic::AtomicU8,
    /// Whether MIGRATE speaks TLS to its target (Redis's `tls-cluster`): on
    /// at start when the node has a certificate, so the `AUTH` a MIGRATE
    /// carries is never sent in the clear; `CONFIG SET tls-cluster no`
    /// turns it off to move keys into a Redis without TLS.
    pub migrate_over_tls: std::sync::atomic::AtomicBool,
    /// MIGRATE's connections, kept for the next one to the same target.
    pub migrate_cache: migrate_cache::MigrateCache,
    /// CLIENT PAUSE: commands it holds wait before they run.
    pub pause: Arc<ClientPause>,
    /// The expiry sweeper's counts (INFO `expired_keys`) and rate (`hz`).
    pub sweep: Arc<SweepState>,
    /// The node's latency monitor (LATENCY), which commands are recorded in.
    pub latency: Arc<LatencyMonitor>,
    /// The connections in MONITOR mode, fed every command run.
    pub monitors: monitor::Monitors,
    /// The Pub/Sub channels and patterns, with their subscribers.
    pub pubsub: pubsub::PubSub,
    /// `notify-keyspace-events`: which key events are published.
    pub keyspace_events: keyspace_events::KeyspaceEvents,
    /// CLIENT TRACKING: the connections caching keys, and what they cache.
    pub tracking: tracking::Tracking,
}

impl Shared {
    /// Turns connection `id`'s tracking off, if it was on.
    pub fn stop_tracking(&self, id: u64) {
        if self.tracking.stop(id) {
            self.update_tracking_hook();
        }
    }

    /// Has the state collect key events while any connection tracks keys
    /// (and only then), after tracking was turned on or off.
    pub fn update_tracking_hook(&self) {
        // The state's lock is let go first: applying a command holds it
        // while it takes the tracking registry's.
        let feed = self.store.state().read().feed().cloned();
        if let Some(feed) = feed {
            self.tracking.set_hook(&feed.key_events);
        }
    }
}

/// How often idle clients are looked for (Redis checks about as often).
const IDLE_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Disconnects clients idle longer than the timeout, once a second, until
/// `shutdown`.
async fn disconnect_idle_clients(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(IDLE_SWEEP_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.wait_for(|&stop| stop) => return,
        }
        let seconds = shared.idle_timeout_secs.load(Ordering::Relaxed);
        if seconds > 0 {
            let closed = shared.clients.kill_idle(Duration::from_secs(seconds));
            if closed > 0 {
                tracing::debug!(closed, seconds, "disconnecting idle RESP clients");
            }
        }
    }
}

/// The most clients `CONFIG SET maxclients` may allow (the operating
/// system's descriptor limit may stop them earlier).
pub const MAX_CLIENTS_CEILING: usize = 65_536;

/// Probes `stream` after `seconds` of quiet, then every third of that (at
/// least a second), and gives up after three unanswered probes, as Redis's
/// `tcp-keepalive` does: a client whose host is gone is closed after about
/// twice `seconds`. 0 leaves the socket without probes.
fn set_tcp_keepalive(stream: &TcpStream, seconds: u64) -> io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    if seconds == 0 {
        return socket.set_keepalive(false);
    }
    let probes = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(seconds))
        .with_interval(Duration::from_secs((seconds / 3).max(1)))
        .with_retries(3);
    socket.set_tcp_keepalive(&probes)
}

/// Tells a client past `maxclients` so, in Redis's words, and closes. Over
/// TLS the words cannot be sent before a handshake, so the connection is
/// only closed. It stops counting as connected before it is closed, so a
/// client that sees the close can count on the room it left.
async fn refuse_past_max_clients(mut stream: tokio::net::TcpStream, shared: &Shared) {
    use tokio::io::AsyncWriteExt;
    shared
        .stats
        .rejected_connections
        .fetch_add(1, Ordering::Relaxed);
    if shared.config.tls.is_none() {
        let refusal = stream.write_all(b"-ERR max number of clients reached\r\n");
        let _ = tokio::time::timeout(Duration::from_secs(1), refusal).await;
    }
    shared
        .stats
        .connected_clients
        .fetch_sub(1, Ordering::Relaxed);
    let _ = stream.shutdown().await;
}

/// Serves RESP on `listener` until `shutdown` turns true, then stops accepting
/// and gives open connections the grace period to finish what they read.
/// `stats` are the server's counters (shared with `/metrics`); `pause` is
/// CLIENT PAUSE's state and `sweep` the expiry sweeper's counts (both shared
/// with the sweeper);
/// `stop_requested` is notified when a client sends SHUTDOWN (the server
/// then turns `shutdown` true).
pub async fn serve_resp(
    listener: TcpListener,
    node: Node,
    config: RespConfig,
    (stats, pause, sweep, latency): NodeServices,
    (shutdown, stop_requested): (watch::Receiver<bool>, Arc<tokio::sync::Notify>),
    loops: Vec<tokio::runtime::Handle>,
) -> io::Result<()> {
    let shared = Arc::new(Shared {
        pause,
        sweep,
        latency,
        store: node.store().clone(),
        node,
        stats,
        idle_timeout_secs: AtomicU64::new(config.idle_timeout_secs),
        tcp_keepalive_secs: AtomicU64::new(config.tcp_keepalive_secs),
        max_clients: std::sync::atomic::AtomicUsize::new(config.max_connections.max(1)),
        maxmemory_policy: std::sync::atomic::AtomicU8::new(0),
        migrate_over_tls: std::sync::atomic::AtomicBool::new(config.migrate_tls.is_some()),
        migrate_cache: migrate_cache::MigrateCache::default(),
        config,
        clients: Arc::default(),
        slowlog: slowlog::SlowLog::default(),
        stop_requested,
        monitors: monitor::Monitors::default(),
        pubsub: pubsub::PubSub::default(),
        keyspace_events: keyspace_events::KeyspaceEvents::default(),
        tracking: tracking::Tracking::default(),
    });
    // Messages PUBLISHed on the other members reach this node's subscribers.
    let subscribers = Arc::downgrade(&shared);
    shared.node.on_published(move |message| {
        if let Some(shared) = subscribers.upgrade() {
            shared.pubsub.publish_message(message);
        }
    });
    // Keyspace notifications and client-side caching's invalidations: the
    // state's key events, once CONFIG SET or CLIENT TRACKING asks.
    if let Some(feed) = shared.store.state().read().feed() {
        let listener = Arc::downgrade(&shared);
        feed.key_events.listen(move |events| {
            if let Some(shared) = listener.upgrade() {
                shared.keyspace_events.publish(&shared.pubsub, events);
                let origin = crate::store::origin::current();
                shared.tracking.invalidate(events, &shared.clients, origin);
            }
        });
    }
    tokio::spawn(disconnect_idle_clients(shared.clone(), shutdown.clone()));
    // Clients past `maxclients` are accepted to be told so (as Redis does)
    // rather than left waiting in the listen queue; the accept loop's own
    // cap only bounds a flood of them.
    let ceiling = shared.config.max_connections.max(MAX_CLIENTS_CEILING);
    let grace = shared.config.shutdown_grace;
    let connection_shutdown = shutdown.clone();
    // With several event loops, connections go to each in turn; a socket
    // moved to another loop registers with that loop's reactor.
    let moving = loops.len() > 1;
    crate::net::accept_onto(listener, ceiling, grace, shutdown, &loops, move |stream| {
        let stream = match moving {
            true => stream.into_std().map(Accepted::Moved),
            false => Ok(Accepted::Here(stream)),
        };
        let connected = shared
            .stats
            .connected_clients
            .fetch_add(1, Ordering::Relaxed);
        let admitted = connected < shared.max_clients.load(Ordering::Relaxed) as u64;
        let id = match admitted {
            true => {
                shared
                    .stats
                    .total_connections
                    .fetch_add(1, Ordering::Relaxed)
                    + 1
            }
            false => 0,
        };
        let shared = shared.clone();
        let shutdown = connection_shutdown.clone();
        async move {
            let stream = match stream.and_then(Accepted::register) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%error, "a RESP connection could not move to its event loop");
                    shared
                        .stats
                        .connected_clients
                        .fetch_sub(1, Ordering::Relaxed);
                    return;
                }
            };
            if !admitted {
                refuse_past_max_clients(stream, &shared).await;
                return;
            }
            let keepalive = shared.tcp_keepalive_secs.load(Ordering::Relaxed);
            if let Err(error) = set_tcp_keepalive(&stream, keepalive) {
                tracing::debug!(%error, client = id, "TCP keepalive could not be set");
            }
            let address = |address: io::Result<std::net::SocketAddr>| {
                address
                    .map(|address| address.to_string())
                    .unwrap_or_default()
            };
            let registration = shared.clients.register(
                id,
                (
                    address(stream.peer_addr()),
                    address(stream.local_addr()),
                    std::os::fd::AsRawFd::as_raw_fd(&stream),
                ),
            );
            let client = &registration.handle;
            match &shared.config.tls {
                None => connection::run(stream, id, &shared, client, shutdown).await,
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => {
                            connection::run(stream, id, &shared, client, shutdown).await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%error, client = id, "RESP TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(client = id, "RESP TLS handshake timed out"),
                    }
                }
            }
            shared
                .stats
                .connected_clients
                .fetch_sub(1, Ordering::Relaxed);
        }
    })
    .await;
    Ok(())
}

/// An accepted connection: registered with the accepting loop, or taken off
/// it to be served by another.
enum Accepted {
    Here(TcpStream),
    Moved(std::net::TcpStream),
}

impl Accepted {
    /// The connection, registered with the reactor of the loop this runs on.
    fn register(self) -> io::Result<TcpStream> {
        match self {
            Accepted::Here(stream) => Ok(stream),
            Accepted::Moved(stream) => TcpStream::from_std(stream),
        }
    }
}
