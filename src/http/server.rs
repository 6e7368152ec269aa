//! Accepting connections: limits, timeouts, TLS and graceful shutdown.
//!
//! Each connection is a task. Slow or idle clients cost a task, not a thread,
//! and are cut off by three clocks: the header timeout (hyper's), the body
//! timeout (in the handler), and the idle timeout here, which closes a
//! keep-alive connection with no traffic in either direction, and drops at
//! once one whose client has stopped reading a response (a write blocked
//! that long), which would otherwise hold the response in memory for ever.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::app::App;

/// Serves HTTP on `listener` until `shutdown` becomes true, then stops
/// accepting, lets in-flight requests finish (up to the grace period) and
/// returns.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let acceptor = tls.map(TlsAcceptor::from);
    let (max_connections, grace) = (app.config.max_connections, app.config.shutdown_grace);
    let connection_shutdown = shutdown.clone();
    crate::net::accept_until_shutdown(listener, max_connections, grace, shutdown, move |stream| {
        connection(
            stream,
            acceptor.clone(),
            app.clone(),
            connection_shutdown.clone(),
        )
    })
    .await;
    Ok(())
}

async fn connection(
    stream: TcpStream,
    acceptor: Option<TlsAcceptor>,
    app: Arc<App>,
    shutdown: watch::Receiver<bool>,
) {
    match acceptor {
        None => serve_connection(stream, app, shutdown).await,
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(app.config.header_timeout, acceptor.accept(stream));
            match handshake.await {
                Ok(Ok(stream)) => serve_connection(stream, app, shutdown).await,
                Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
    }
}

async fn serve_connection<I>(io: I, app: Arc<App>, mut shutdown: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Tracked {
        inner: io,
        activity: activity.clone(),
    });
    let handler = app.clone();
    let service = service_fn(move |request| handler.clone().handle(request));
    let config = &app.config;
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        // A head that does not fit the read buffer is refused with 431.
        .max_buf_size(config.max_header_bytes.max(8192))
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let check_every = (config.idle_timeout / 4).max(Duration::from_millis(10));
    let mut idle_check = tokio::time::interval(check_every);
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.wait_for(|&stop| stop), if !closing => {
                connection.as_mut().graceful_shutdown();
                break;
            }
            _ = idle_check.tick() => {
                // A graceful close would wait for the response this client
                // is not reading: drop the connection instead.
                if activity.write_blocked_for() >= config.idle_timeout {
                    tracing::debug!("client stopped reading its response; connection dropped");
                    return;
                }
                if !closing && activity.idle_for() >= config.idle_timeout {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
    // Shutting down: the request in flight, if any, gets the grace period.
    if tokio::time::timeout(config.shutdown_grace, connection.as_mut())
        .await
        .is_err()
    {
        tracing::debug!("request still in flight at the end of the grace period");
    }
}

/// When a connection last moved a byte, and since when a write has been
/// waiting for the client to read, in milliseconds since it opened.
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
    /// One more than the millisecond a write first found the socket full;
    /// 0 while writes go through.
    write_blocked_since_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
            write_blocked_since_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Notes how a write went: blocked (the client's window is full) or
    /// through.
    fn write_outcome<T>(&self, result: &Poll<io::Result<T>>) {
        match result {
            Poll::Pending => {
                let since = self.now_ms() + 1;
                let _ = self.write_blocked_since_ms.compare_exchange(
                    0,
                    since,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            Poll::Ready(_) => self.write_blocked_since_ms.store(0, Ordering::Relaxed),
        }
    }

    /// How long the write in progress has waited for the client to read;
    /// zero when no write is waiting.
    fn write_blocked_for(&self) -> Duration {
        match self.write_blocked_since_ms.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            since => Duration::from_millis(self.now_ms().saturating_sub(since - 1)),
        }
    }

    fn idle_for(&self) -> Duration {
        let now = self.opened.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// An I/O stream that records activity on every read or write that moves bytes.
struct Tracked<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.activity.write_outcome(&result);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.activity.write_outcome(&result);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.activity.write_outcome(&result);
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
