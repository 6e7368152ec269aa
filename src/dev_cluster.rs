//! `walrus dev-cluster`: a local cluster on loopback for trying walrus out.
//!
//! Starts N `walrus serve` processes of this same binary, node `i` on HTTP port
//! `base + i - 1` and RESP port `base + 100 + i - 1`, each with its data in
//! `DIR/node-i`, all with the same `--peers` (so the cluster bootstraps on the
//! first start and recovers from disk on later ones). Their logs stream to
//! standard error with a `[node i]` prefix. Ctrl-C (or SIGTERM) stops them all.

use std::io::{BufRead, BufReader};
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
    std::fs::create_dir_all(&options.data_dir)?;
    let mut children: Vec<Child> = Vec::new();
    for id in 1..=options.nodes {
        let dir = options.data_dir.join(format!("node-{id}"));
        let listen = format!("127.0.0.1:{}", http_port(id));
        let resp = format!("127.0.0.1:{}", http_port(id) + 100);
        println!(
            "node {id}: http://{listen}  redis://{resp}  data {}",
            dir.display()
        );
        let mut child = Command::new(&exe)
            .args(["serve", "--node-id", &id.to_string(), "--peers", &peers])
            .args(["--listen", &listen, "--resp-listen", &resp])
            .arg("--data-dir")
            .arg(&dir)
            .stdin(Stdio::null())
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
                    eprintln!("[node {id}] {line}");
                }
            });
        }
        children.push(child);
    }
    println!(
        "try: curl -X PUT localhost:{}/kv/hello -d world; walrus cluster status --endpoints {}",
        options.base_port,
        (1..=options.nodes)
            .map(|id| format!("http://127.0.0.1:{}", http_port(id)))
            .collect::<Vec<_>>()
            .join(",")
    );
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
                eprintln!("[node {}] exited: {status}", index + 1);
            }
        }
        children.retain_mut(|child| matches!(child.try_wait(), Ok(None)));
        if children.is_empty() {
            break;
        }
    }
    eprintln!("stopping {} nodes", children.len());
    for child in &children {
        terminate(child.id());
    }
    for child in &mut children {
        let _ = child.wait();
    }
    Ok(())
}

/// Sends SIGTERM, so the node shuts down cleanly.
fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}
