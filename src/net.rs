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
    mut shutdown: watch::Receiver<bool>,
    mut serve: Serve,
) where
    Serve: FnMut(TcpStream) -> Served,
    Served: Future<Output = ()> + Send + 'static,
{
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
        connections.spawn(async move {
            served.await;
            drop(permit);
        });
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
