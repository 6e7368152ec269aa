//! The HTTP front end: the original API (`PUT/GET/DELETE /kv/{key}`) and what a
//! user of etcd or Consul expects around it.
//!
//! Layers: `server` accepts connections (limits, timeouts, TLS, graceful
//! shutdown) and hands requests to `router`, which authenticates, dispatches to
//! `kv` or the operational routes, and records `metrics`. `response` is the one
//! place where store errors become status codes. Writes are submitted to the
//! store and awaited; under concurrency they wait asleep for a group commit, and
//! only a lone write on an idle store is committed on the worker thread itself
//! (one sync, cheaper than the two thread hand-offs it saves).

mod admin;
mod app;
mod cluster;
mod kv;
mod metrics;
mod path;
mod response;
mod router;
mod server;
mod tls;
mod watch;

use std::sync::Arc;
use std::time::Duration;

pub use app::App;
pub use server::serve;
pub use tls::{Identity, TlsError, load_identity, load_tls_config};

/// Limits and timeouts of the HTTP server. Each field is a `walrus serve` flag.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Longest key, in bytes (default 4 KiB): longer gets `414`.
    pub max_key_bytes: usize,
    /// Largest value, in bytes (default 1 MiB): larger gets `413`, refused from
    /// `Content-Length` before the body is read.
    pub max_value_bytes: usize,
    /// Largest request head (request line and headers) in bytes (default
    /// 16 KiB, at least 8 KiB): larger gets `431`.
    pub max_header_bytes: usize,
    /// Time a client has to send a request's headers (default 10 s).
    pub header_timeout: Duration,
    /// Time a client has to send a request's body (default 30 s).
    pub body_timeout: Duration,
    /// A connection with no traffic for this long is closed (default 10 s).
    /// Between requests hyper's header timeout runs too (it starts when the
    /// connection goes idle), so idle keep-alive connections close after the
    /// shorter of the two.
    pub idle_timeout: Duration,
    /// Connections served at once; more wait in the listen queue (default 4096).
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests (default 10 s).
    pub shutdown_grace: Duration,
    /// Bearer token required on every route but `/health`, if set.
    pub auth_token: Option<Arc<str>>,
    /// `/ready` and `/metrics` answer without the token (for load-balancer
    /// probes and Prometheus scrapes); both off by default.
    pub ready_without_auth: bool,
    pub metrics_without_auth: bool,
    /// Keys per list page when `limit` is not given (default 1000), and the most
    /// a client may ask for (default 10,000).
    pub list_default_limit: usize,
    pub list_max_limit: usize,
    /// FOR TESTS: the `/fault/…` routes exist (the clock on any node, the
    /// partition switch on a cluster node). Off by default.
    pub fault_injection: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_key_bytes: 4096,
            max_value_bytes: 16 << 20,
            max_header_bytes: 16 << 10,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(10),
            max_connections: 4096,
            shutdown_grace: Duration::from_secs(10),
            auth_token: None,
            ready_without_auth: false,
            metrics_without_auth: false,
            list_default_limit: 1000,
            list_max_limit: 10_000,
            fault_injection: false,
        }
    }
}
