//! The accept loop both front ends (HTTP and RESP) share: a cap on open
//! connections, a task per connection, and an orderly stop.

use std::future::Future;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// Accepts connections on `listener` until `shutdown` turns true, serving each
/// with `serve` on its own task, at most `max_connections` at once (more wait in
/// the listen queue). Then it stops accepting and gives the open connections
/// `grace` (plus a second) to finish before ending them.
pub async fn accept_until_shutdown<Serve, Served>(
    listener: TcpListener,
    max_connections: usize,
    grace: Duration,
    shutdown: watch::Receiver<bool>,
    serve: Serve,
) where
    Serve: FnMut(TcpStream) -> Served,
    Served: Future<Output = ()> + Send + 'static,
{
    accept_onto(listener, max_connections, grace, shutdown, &[], serve).await;
}

/// As [`accept_until_shutdown`], with each connection's task spawned onto
/// the next of `runtimes` in turn (the caller's own runtime if it is empty).
/// A connection moved to another runtime must register its socket there
/// (`serve` gets it registered with the caller's).
pub async fn accept_onto<Serve, Served>(
    listener: TcpListener,
    max_connections: usize,
    grace: Duration,
    mut shutdown: watch::Receiver<bool>,
    runtimes: &[tokio::runtime::Handle],
    mut serve: Serve,
) where
    Serve: FnMut(TcpStream) -> Served,
    Served: Future<Output = ()> + Send + 'static,
{
    let mut next_runtime = 0;
    let limit = std::sync::Arc::new(Semaphore::new(max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.wait_for(|&stop| stop) => break,
        };
        // Decided outside the `select!`, whose shutdown arm holds a watch
        // guard that must not live across the back-off's await.
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|&stop| stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let served = serve(stream);
        let task = async move {
            served.await;
            drop(permit);
        };
        if runtimes.is_empty() {
            connections.spawn(task);
        } else {
            connections.spawn_on(task, &runtimes[next_runtime % runtimes.len()]);
            next_runtime = next_runtime.wrapping_add(1);
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let drained = tokio::time::timeout(grace + Duration::from_secs(1), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
        connections.shutdown().await;
    }
}

/// `count` distinct loopback ports that are free now, for processes to bind
/// later (a cluster's peers must know each other's addresses before any of
/// them starts).
///
/// They are drawn below the kernel's ephemeral range, because a port the
/// kernel handed out for `127.0.0.1:0` can be handed out again at once, as the
/// local end of any outgoing connection on the machine; the process that binds
/// it a moment later then fails with "address in use". Ports outside that range
/// are never given to outgoing connections. Each stays bound until all are
/// chosen, so no two are the same. Falls back to the kernel's choice.
pub fn unused_loopback_ports(count: usize) -> std::io::Result<Vec<u16>> {
    use rand::Rng;
    let below = picked_ports_below();
    let mut rng = rand::rng();
    let mut held = Vec::with_capacity(count);
    let mut attempts = 0;
    while held.len() < count {
        attempts += 1;
        let listener = if let Some(below) = below
            && attempts <= 100 * count
        {
            let port = rng.random_range(LOWEST_PICKED_PORT..below);
            match std::net::TcpListener::bind(("127.0.0.1", port)) {
                Ok(listener) => listener,
                Err(_) => continue,
            }
        } else {
            std::net::TcpListener::bind("127.0.0.1:0")?
        };
        held.push(listener);
    }
    held.iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
}

/// The lowest port [`unused_loopback_ports`] draws.
const LOWEST_PICKED_PORT: u16 = 10_000;

/// Where the kernel's ephemeral range starts (Linux's default when it cannot
/// be read), if it leaves room to draw ports below it.
fn picked_ports_below() -> Option<u16> {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    (ephemeral_start > LOWEST_PICKED_PORT + 1_000).then_some(ephemeral_start)
}

/// One port as [`unused_loopback_ports`] picks them.
pub fn unused_loopback_port() -> std::io::Result<u16> {
    Ok(unused_loopback_ports(1)?[0])
}

#[cfg(test)]
mod port_tests {
    use super::{LOWEST_PICKED_PORT, picked_ports_below, unused_loopback_ports};

    #[test]
    fn picked_ports_are_distinct_bindable_and_outside_the_ephemeral_range() {
        let ports = unused_loopback_ports(20).expect("ports");
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), 20, "{ports:?}");
        let below = picked_ports_below();
        if below.is_none() {
            eprintln!("range check skipped: no room below the ephemeral ports");
        }
        for port in ports {
            assert!(
                below.is_none_or(|below| (LOWEST_PICKED_PORT..below).contains(&port)),
                "port {port}, ephemeral ports from {below:?}"
            );
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("still free");
        }
    }
}
