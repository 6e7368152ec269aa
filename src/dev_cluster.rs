//! `walrus dev-cluster`: a local cluster on loopback for trying walrus out.
//!
//! Starts N `walrus serve` processes of this same binary, node `i` on HTTP port
//! `base + i - 1` and RESP port `base + 100 + i - 1`, each with its data in
//! `DIR/node-i`, all with the same `--peers` (so the cluster bootstraps on the
//! first start and recovers from disk on later ones). Their logs stream to
//! standard error with a `[node i]` prefix. Ctrl-C (or SIGTERM) stops them all.
//! So does the death of this process by any means, SIGKILL included: each node
//! runs with `--stop-when-stdin-closes` and its standard input is a pipe that
//! only this process holds open, so the kernel closes it when this process
//! goes, however it goes.
//!
//! The nodes share the machine's cores: each is started with its share as
//! `--threads` (at least one), because a node with a worker per core keeps
//! waking workers that the other nodes' threads are already using, and pays
//! for it in CPU on every request (BENCHMARKS.md, "Nodes that share a machine").

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct DevClusterOptions {
    pub nodes: u64,
    pub data_dir: PathBuf,
    pub base_port: u16,
    /// `--threads` for every node; `None` for [`threads_per_node`]'s share.
    pub threads_per_node: Option<usize>,
}

/// Each of `nodes` nodes on one machine gets this many worker threads: the
/// machine's cores divided among them, at least one.
pub fn threads_per_node(nodes: u64) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (cores / usize::try_from(nodes.max(1)).unwrap_or(usize::MAX)).max(1)
}

/// Runs the cluster until interrupted.
pub fn run(options: &DevClusterOptions) -> std::io::Result<()> {
    if options.nodes == 0 || options.nodes > 9 {
        return Err(std::io::Error::other("--nodes must be between 1 and 9"));
    }
    let exe = std::env::current_exe()?;
    let http_port = |id: u64| options.base_port as u64 + id - 1;
    let peers: Vec<String> = (1..=options.nodes)
        .map(|id| format!("{id}=127.0.0.1:{}", http_port(id)))
        .collect();
    let peers = peers.join(",");
    let threads = options
        .threads_per_node
        .unwrap_or_else(|| threads_per_node(options.nodes))
        .to_string();
    std::fs::create_dir_all(&options.data_dir)?;
    let mut children: Vec<Child> = Vec::new();
    for id in 1..=options.nodes {
        let dir = options.data_dir.join(format!("node-{id}"));
        let listen = format!("127.0.0.1:{}", http_port(id));
        let resp = format!("127.0.0.1:{}", http_port(id) + 100);
        say(format_args!(
            "node {id}: http://{listen}  redis://{resp}  data {}  threads {threads}",
            dir.display()
        ));
        let mut child = Command::new(&exe)
            .args(["serve", "--node-id", &id.to_string(), "--peers", &peers])
            .args(["--listen", &listen, "--resp-listen", &resp])
            .args(["--threads", &threads])
            .arg("--stop-when-stdin-closes")
            .arg("--data-dir")
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log(format_args!("[node {id}] {line}"));
                }
            });
        }
        children.push(child);
    }
    say(format_args!(
        "try: curl -X PUT localhost:{}/kv/hello -d world; walrus cluster status --endpoints {}",
        options.base_port,
        (1..=options.nodes)
            .map(|id| format!("http://127.0.0.1:{}", http_port(id)))
            .collect::<Vec<_>>()
            .join(",")
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signalled = stop.clone();
    std::thread::spawn(move || {
        runtime.block_on(crate::server::termination_signal());
        signalled.store(true, Ordering::SeqCst);
    });
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        for (index, child) in children.iter_mut().enumerate() {
            if let Ok(Some(status)) = child.try_wait() {
                log(format_args!("[node {}] exited: {status}", index + 1));
            }
        }
        children.retain_mut(|child| matches!(child.try_wait(), Ok(None)));
        if children.is_empty() {
            break;
        }
    }
    log(format_args!("stopping {} nodes", children.len()));
    for child in &children {
        terminate(child.id());
    }
    for child in &mut children {
        let _ = child.wait();
    }
    Ok(())
}

/// Prints a line for the user. A closed or full stdout must not stop the
/// cluster (`walrus dev-cluster | head -3`), so a failed write is dropped.
fn say(line: std::fmt::Arguments) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Passes on a line of a node's log. A failed write is dropped, and the
/// node's pipe is still drained: a forwarder that stopped reading would
/// leave the node blocked on a full pipe the next time it logs.
fn log(line: std::fmt::Arguments) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Sends SIGTERM, so the node shuts down cleanly.
fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}
