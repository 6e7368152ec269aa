//! `walrus serve`: opens the store, serves HTTP (and RESP, with
//! `--resp-listen`) and sweeps expired keys until SIGINT or SIGTERM, then shuts
//! down in order — stop accepting, finish in-flight requests, sync the log,
//! release the directory lock.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::Error;
use crate::expiry::{SweepConfig, SweepState};
use crate::http::{App, HttpConfig, load_tls_config, serve};
use crate::node::Node;
use crate::pause::ClientPause;
use crate::raft::{ClusterNode, ClusterOptions};
use crate::resp::{RespConfig, ServerStats, serve_resp};
use crate::store::{DurableStore, KvStore, MemStore, StoreOptions};

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: String,
    pub data_dir: PathBuf,
    /// Serve a `MemStore`: nothing touches the disk.
    pub in_memory: bool,
    /// The single store's settings. Its latency monitor is the node's, also
    /// given to a cluster replica's log, the sweeper and the RESP front end.
    pub store: StoreOptions,
    pub http: HttpConfig,
    /// PEM certificate chain and private key, to serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Address for the Redis protocol, if it is to be served.
    pub resp_listen: Option<String>,
    pub resp: RespConfig,
    pub sweep: SweepConfig,
    /// Serve a replica of a Raft cluster instead of a single store.
    pub cluster: Option<ClusterOptions>,
    /// The cluster member a durable single store becomes when asked to add
    /// a learner (`walrus cluster add-learner` sent to it); `None` keeps it
    /// a single store.
    pub growth: Option<ClusterOptions>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] Error),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::http::TlsError),
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens what `options` asks for and returns the node the front ends serve:
/// a cluster replica (which starts Raft, so this runs on the async runtime),
/// an in-memory store, or a durable single store that may later grow into a
/// cluster. `http` is the bound HTTP address, which a single store that grows
/// advertises to its peers unless `--advertise` names another.
pub async fn open_node(options: &ServeOptions, http: SocketAddr) -> Result<Node, Error> {
    if let Some(cluster) = &options.cluster {
        let cluster = ClusterOptions {
            latency: options.store.latency.clone(),
            ..cluster.clone()
        };
        let node_id = cluster.node_id;
        let node = ClusterNode::start(&options.data_dir, cluster).await?;
        tracing::info!(
            node_id,
            data_dir = %options.data_dir.display(),
            "serving a cluster replica"
        );
        return Ok(Node::replicated(node));
    }
    if options.in_memory {
        tracing::info!("serving an in-memory store: nothing is persisted");
        return Ok(Node::local(Arc::new(MemStore::new())));
    }
    let store = open_durable(options)?;
    Ok(match &options.growth {
        Some(plan) => {
            let mut plan = plan.clone();
            plan.latency = options.store.latency.clone();
            if plan.advertise == options.listen {
                plan.advertise = http.to_string();
            }
            Node::growable(store, plan)
        }
        None => Node::local(Arc::new(store)),
    })
}

fn open_durable(options: &ServeOptions) -> Result<DurableStore, Error> {
    let started = std::time::Instant::now();
    let store = DurableStore::open(&options.data_dir, options.store.clone())?;
    let report = store.recovery_report();
    let snapshot = match (report.snapshot_seq, report.snapshot_keys) {
        (Some(seq), Some(keys)) => {
            format!("a snapshot at record {seq} with {}", counted(keys, "key"))
        }
        _ => "no snapshot".to_string(),
    };
    tracing::info!(
        "recovered {} in {} ms: {snapshot}, then {} from {}; {} at revision {}",
        options.data_dir.display(),
        started.elapsed().as_millis(),
        counted(report.records_replayed, "record"),
        counted(report.segments_read as u64, "log segment"),
        counted(store.len() as u64, "key"),
        store.revision()
    );
    for note in &report.notes {
        tracing::info!(note = %note, "recovery");
    }
    Ok(store)
}

/// `count` and `noun`, plural unless the count is one: "1 key", "3 keys".
fn counted(count: u64, noun: &str) -> String {
    match count {
        1 => format!("1 {noun}"),
        count => format!("{count} {noun}s"),
    }
}

/// Binds the listener; separate from [`run`] so callers can learn the port.
pub async fn bind(address: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind {
            address: address.to_string(),
            source,
        })
}

/// Serves `store` on `listener` (and on `--resp-listen`, if set) and sweeps
/// expired keys, until `shutdown` turns true.
/// The bound sockets of a server: HTTP, and RESP when `--resp-listen` is set.
pub struct Listeners {
    pub http: TcpListener,
    pub resp: Option<TcpListener>,
}

/// Binds every port `options` names; done before the data directory is
/// opened, so a port in use fails fast and touches nothing on disk.
pub async fn bind_all(options: &ServeOptions) -> Result<Listeners, ServeError> {
    let http = bind(&options.listen).await?;
    let resp = match &options.resp_listen {
        Some(address) => Some(bind(address).await?),
        None => None,
    };
    Ok(Listeners { http, resp })
}

pub async fn run(
    listeners: Listeners,
    node: Node,
    options: &ServeOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let Listeners {
        http: listener,
        resp,
    } = listeners;
    // Stops on the caller's signal, or when a client asks (RESP SHUTDOWN).
    let stop_requested = Arc::new(tokio::sync::Notify::new());
    let shutdown = stop_on_request(shutdown, stop_requested.clone());
    let tls = match &options.tls {
        Some((cert, key)) => Some(load_tls_config(cert, key)?),
        None => None,
    };
    let pause = Arc::new(ClientPause::default());
    let sweep_state = Arc::new(SweepState::new(options.sweep));
    let latency = options.store.latency.clone();
    let sweeper = tokio::spawn(crate::expiry::run(
        node.store().clone(),
        (pause.clone(), sweep_state.clone(), latency.clone()),
        shutdown.clone(),
    ));
    let mut resp_config = options.resp.clone();
    if let Some(tls) = &tls {
        // The RESP port speaks TLS too, with the same certificate, and
        // without HTTP's ALPN.
        let mut config = (**tls).clone();
        config.alpn_protocols.clear();
        resp_config.tls = Some(Arc::new(config));
    }
    let mut app = App::new(node.clone(), options.http.clone()).with_shutdown(shutdown.clone());
    let resp = match resp {
        Some(listener) => {
            let stats = Arc::new(ServerStats::new(listener.local_addr()?.port()));
            app = app.with_metrics_source(stats.clone());
            Some(start_resp(
                listener,
                node.clone(),
                resp_config,
                (stats, pause, sweep_state, latency),
                (shutdown.clone(), stop_requested.clone()),
            )?)
        }
        None => None,
    };
    let address: SocketAddr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%address, "listening on {scheme}://{address}");
    let app = Arc::new(app);
    let served = serve(listener, app, tls, shutdown).await;
    if let Some(resp) = resp {
        match resp.await {
            Ok(result) => result?,
            Err(_) => tracing::warn!("the RESP server's event loop ended without a result"),
        }
    }
    let _ = sweeper.await;
    served?;
    Ok(())
}

/// A shutdown signal that also turns true once `requested` is notified.
fn stop_on_request(
    mut outer: watch::Receiver<bool>,
    requested: Arc<tokio::sync::Notify>,
) -> watch::Receiver<bool> {
    let (stop, stopped) = watch::channel(*outer.borrow());
    tokio::spawn(async move {
        tokio::select! {
            _ = outer.wait_for(|&stop| stop) => {}
            () = requested.notified() => {
                tracing::info!("shutting down at a client's request (SHUTDOWN)");
            }
        }
        let _ = stop.send(true);
    });
    stopped
}

/// Starts the RESP server on an event loop of its own and logs its address.
///
/// The loop is one thread running a single-threaded runtime, as Redis serves
/// every client from one event loop: a turn reads every connection that is
/// ready, queues their writes, and commits them with one sync on this thread
/// ([`crate::store::enter_event_loop`]). Served from the runtime's pool of
/// workers instead, each small write cost several thread wake-ups: a worker
/// parked while another synced and was woken for the next request. On two
/// cores shared with the load, `SET` at 64 connections went from about 0.7×
/// Redis's rate on the pool to 1.1× here (BENCHMARKS.md). HTTP stays on the
/// pool.
///
/// Resolves with the server's result once the loop has stopped.
fn start_resp(
    listener: TcpListener,
    node: Node,
    config: RespConfig,
    shared_state: crate::resp::NodeServices,
    (shutdown, stop_requested): (watch::Receiver<bool>, Arc<tokio::sync::Notify>),
) -> Result<tokio::sync::oneshot::Receiver<std::io::Result<()>>, ServeError> {
    let address = listener.local_addr()?;
    let scheme = if config.tls.is_some() {
        "rediss"
    } else {
        "redis"
    };
    // A cluster member's writes are committed by Raft on the runtime's
    // workers, not by the loop: a loop there only adds a thread hop to each
    // reply (SET through a 3-node dev cluster: about 12 % fewer per second).
    let loops = config
        .event_loops
        .unwrap_or(if node.is_replicated() { 0 } else { 1 });
    tracing::info!(%address, "listening for RESP on {scheme}://{address}");
    if loops == 0 {
        let (done, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let served = serve_resp(
                listener,
                node,
                config,
                shared_state,
                (shutdown, stop_requested),
                Vec::new(),
            )
            .await;
            let _ = done.send(served);
        });
        return Ok(stopped);
    }
    // Registered again with the loop's own reactor there.
    let listener = listener.into_std()?;
    // The other loops only serve the connections the first hands them, and
    // stop once it has stopped (and so every connection has ended).
    let mut others = Vec::new();
    for number in 1..loops {
        others.push(EventLoop::start(number)?);
    }
    let (done, stopped) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("walrus-resp".into())
        .spawn(move || {
            let served = event_loop_runtime().and_then(|runtime| {
                let mut loops: Vec<_> = others.iter().map(|other| other.handle.clone()).collect();
                if !loops.is_empty() {
                    loops.insert(0, runtime.handle().clone());
                }
                let served = runtime.block_on(async {
                    let listener = TcpListener::from_std(listener)?;
                    serve_resp(
                        listener,
                        node,
                        config,
                        shared_state,
                        (shutdown, stop_requested),
                        loops,
                    )
                    .await
                });
                for other in others {
                    other.stop();
                }
                // A SAVE still writing its snapshot finishes on its own.
                runtime.shutdown_timeout(RESP_LOOP_STOP_TIMEOUT);
                served
            });
            let _ = done.send(served);
        })?;
    Ok(stopped)
}

/// How long the stopped RESP loop waits for its blocking work (a SAVE).
const RESP_LOOP_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A RESP event loop's runtime, on the calling thread, which it marks as
/// an event loop's.
fn event_loop_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    crate::store::enter_event_loop();
    Ok(runtime)
}

/// A RESP event loop after the first: a thread running its runtime until
/// told to stop.
struct EventLoop {
    handle: tokio::runtime::Handle,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl EventLoop {
    fn start(number: usize) -> std::io::Result<EventLoop> {
        let (started, handle) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("walrus-resp-{number}"))
            .spawn(move || {
                let runtime = match event_loop_runtime() {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = started.send(Err(error));
                        return;
                    }
                };
                let _ = started.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_timeout(RESP_LOOP_STOP_TIMEOUT);
            })?;
        let handle = handle
            .recv()
            .map_err(|_| std::io::Error::other("a RESP event loop did not start"))??;
        Ok(EventLoop {
            handle,
            stop,
            thread,
        })
    }

    /// Stops the loop (its connections have ended) and waits for its thread.
    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Resolves when the process gets SIGINT or SIGTERM.
pub async fn termination_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
