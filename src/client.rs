//! The HTTP client the CLI (`walrus get|put|delete|list`), the benchmark and the
//! end-to-end tests share.
//!
//! A [`Client`] holds a list of endpoints (the nodes of a cluster, or one server)
//! and a pool of keep-alive HTTP/1.1 connections to each. A request goes to the
//! endpoint that last worked; when it cannot connect, or the endpoint answers
//! `503` (no quorum, not ready), the request moves on to the next endpoint in turn.
//! A request that may already have reached a server is repeated elsewhere only if
//! repeating it cannot change its answer: a `GET`, `HEAD`, or a `PUT` or `DELETE`
//! without `If-Match` or `If-None-Match`. A conditional write that may have been
//! applied (its connection broke, or a `503` says its outcome is unknown) is
//! not repeated, since a second try could be refused by the first try's own
//! effect: the caller gets that error and must read before deciding.
//!
//! Submodules: [`endpoint`] parses URLs, [`connection`] is one hyper connection,
//! [`list`] the listing's query and JSON, [`tls`] the rustls set-up. Beside the
//! HTTP client, [`resp`] is a minimal RESP client, for `walrus verify`'s
//! workload and the server's MIGRATE.

pub mod connection;
pub mod download;
pub mod endpoint;
pub mod list;
pub mod resp;
#[cfg(test)]
pub(crate) mod test_server;
pub mod tls;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, IF_MATCH, IF_NONE_MATCH};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use parking_lot::Mutex;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};
use tokio_rustls::TlsConnector;

pub use connection::Connection;
pub use endpoint::Endpoint;
pub use list::{ListItem, ListPage};

/// Idle connections kept per endpoint; more are closed after use.
const MAX_IDLE_PER_ENDPOINT: usize = 32;

/// Bytes kept as they are in a key's path: RFC 3986 unreserved characters and `/`.
const KEY_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// An I/O error in a few plain words, without the OS's error number.
pub(crate) fn describe_io(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::TimedOut => "timed out".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        _ => {
            let text = error.to_string();
            match text.find(" (os error") {
                Some(end) => text[..end].to_lowercase(),
                None => text,
            }
        }
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no endpoints given")]
    NoEndpoints,
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("the token cannot be sent in a header (control characters?)")]
    InvalidToken,
    #[error("invalid request: {0}")]
    Request(String),
    #[error("TLS: {0}")]
    Tls(String),
    /// Nothing was sent: the endpoint is down, unreachable or refused TLS.
    #[error(
        "cannot reach {endpoint} ({}): is walrus serve running there? pass --endpoints",
        describe_io(cause)
    )]
    Connect {
        endpoint: String,
        cause: std::io::Error,
    },
    /// The request may have reached the server.
    #[error("{endpoint} did not answer within {timeout_ms} ms")]
    Timeout { endpoint: String, timeout_ms: u128 },
    /// The connection broke or the response was not valid HTTP; the request may
    /// have reached the server.
    #[error("HTTP exchange with {endpoint} failed: {source}")]
    Protocol {
        endpoint: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server answered with a status the operation does not expect.
    #[error("server answered {status}: {body}")]
    Http { status: StatusCode, body: String },
    /// A `200` whose body is not what the API promises.
    #[error("malformed response: {0}")]
    Decode(String),
}

impl ClientError {
    /// Whether the next endpoint may be tried: always when nothing was sent, and
    /// for a request that may be repeated when the exchange broke.
    fn can_try_elsewhere(&self, may_repeat: bool) -> bool {
        match self {
            ClientError::Connect { .. } => true,
            ClientError::Timeout { .. } | ClientError::Protocol { .. } => may_repeat,
            _ => false,
        }
    }
}

/// The header in which a server's `GET /kv/{key}` gives the milliseconds
/// left before the key expires (absent when it does not expire).
const TTL_HEADER: &str = "x-walrus-ttl-ms";

/// A whole response: status, headers and the body read to its end.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The revision in the `ETag: "<rev>"` header, if there is one.
    pub fn revision(&self) -> Option<u64> {
        let etag = self.headers.get(http::header::ETAG)?.to_str().ok()?;
        etag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
    }

    /// The milliseconds a key has left to live (`x-walrus-ttl-ms`), if it
    /// expires.
    pub fn ttl_ms(&self) -> Option<u64> {
        let ttl = self.headers.get(TTL_HEADER)?.to_str().ok()?;
        ttl.parse().ok()
    }

    /// Whether this is walrus's answer for a key that does not exist: `404`
    /// with the body `not found`. Any other `404` (a wrong path prefix in
    /// the endpoint, a server that is not walrus) is an error, not absence.
    pub fn is_key_absent(&self) -> bool {
        self.status == StatusCode::NOT_FOUND && self.body.trim_ascii() == b"not found"
    }

    /// Whether this is walrus's `503` for a request it never proposed, so
    /// that sending it again, anywhere, is safe.
    pub fn says_nothing_applied(&self) -> bool {
        self.status == StatusCode::SERVICE_UNAVAILABLE
            && self
                .body
                .trim_ascii_end()
                .ends_with(crate::error::NOTHING_APPLIED.as_bytes())
    }

    /// The error for a status the caller did not expect; the body is cut to 1 KiB.
    pub fn into_error(self) -> ClientError {
        let end = self.body.len().min(1024);
        ClientError::Http {
            status: self.status,
            body: String::from_utf8_lossy(&self.body[..end])
                .trim_end()
                .to_string(),
        }
    }
}

/// Settings beyond the endpoints and token.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// PEM file of the CA that signed the servers' certificates; required for
    /// `https://` endpoints (no system roots are bundled). Default: none.
    pub ca_file: Option<PathBuf>,
    /// How long to wait for TCP (and TLS) set-up before trying the next endpoint.
    /// Default 5 s: a loopback or LAN connect takes milliseconds.
    pub connect_timeout: Duration,
    /// How long one request may take, response body included. Default 30 s,
    /// longer than the server's quorum wait, so a `503` arrives before it.
    pub request_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A walrus HTTP client; cheap to clone (clones share the connection pool).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<Arc<Endpoint>>,
    /// Idle keep-alive connections, one list per endpoint, same order.
    idle: Vec<Mutex<Vec<Connection>>>,
    /// The endpoint that answered last; requests start there.
    preferred: AtomicUsize,
    authorization: Option<HeaderValue>,
    tls: Option<TlsConnector>,
    options: ClientOptions,
}

/// The path of `key` under `/kv/`: key bytes percent-encoded, keeping RFC 3986
/// unreserved characters and `/`.
pub fn key_path(key: &[u8]) -> String {
    format!("/kv/{}", percent_encode(key, KEY_PATH))
}

/// The `Authorization` header value for a bearer token.
pub fn bearer(token: &str) -> Result<HeaderValue, ClientError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
        .map_err(|_| ClientError::InvalidToken)?;
    value.set_sensitive(true);
    Ok(value)
}

impl Client {
    /// A client with default options. Endpoints are URLs such as
    /// `http://127.0.0.1:8080`; `token` is sent as `Authorization: Bearer`.
    pub fn new(endpoints: Vec<String>, token: Option<String>) -> Result<Client, ClientError> {
        Client::with_options(endpoints, token, ClientOptions::default())
    }

    pub fn with_options(
        endpoints: Vec<String>,
        token: Option<String>,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let endpoints = endpoints
            .iter()
            .map(|url| Endpoint::parse(url).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = tls::for_endpoints(&endpoints, options.ca_file.as_deref())?;
        let authorization = token.as_deref().map(bearer).transpose()?;
        let idle = endpoints.iter().map(|_| Mutex::new(Vec::new())).collect();
        let inner = Inner {
            endpoints,
            idle,
            preferred: AtomicUsize::new(0),
            authorization,
            tls,
            options,
        };
        Ok(Client {
            inner: Arc::new(inner),
        })
    }

    /// The value of `key`, or `None` when the server answers `404`.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>, ClientError> {
        let response = self.send(Method::GET, &key_path(key), Bytes::new()).await?;
        match response.status {
            StatusCode::OK => Ok(Some(response.body)),
            _ if response.is_key_absent() => Ok(None),
            _ => Err(response.into_error()),
        }
    }

    /// Stores `value` under `key`; returns once the server says it is durable.
    pub async fn put(&self, key: &[u8], value: impl Into<Bytes>) -> Result<(), ClientError> {
        let response = self.send(Method::PUT, &key_path(key), value.into()).await?;
        expect_success(response)
    }

    /// Removes `key`; succeeds also when it did not exist.
    pub async fn delete(&self, key: &[u8]) -> Result<(), ClientError> {
        let response = self
            .send(Method::DELETE, &key_path(key), Bytes::new())
            .await?;
        expect_success(response)
    }

    /// One page of the keys starting with `prefix`, from `start` (inclusive) on.
    pub async fn list(
        &self,
        prefix: &[u8],
        start: Option<&[u8]>,
        limit: Option<usize>,
        keys_only: bool,
    ) -> Result<ListPage, ClientError> {
        let target = list::list_target(prefix, start, limit, keys_only);
        let response = self.send(Method::GET, &target, Bytes::new()).await?;
        if response.status != StatusCode::OK {
            return Err(response.into_error());
        }
        ListPage::parse(&response.body)
    }

    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Bytes,
    ) -> Result<Response, ClientError> {
        self.request(method, path_and_query, HeaderMap::new(), body)
            .await
    }

    /// Sends any request and returns whatever the server answered, trying the
    /// endpoints in turn as described in the module doc. `path_and_query` starts
    /// with `/`; the token is added unless `headers` has an `Authorization`.
    /// When every endpoint answered `503`, the last such response is returned.
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response, ClientError> {
        if let Some(authorization) = &self.inner.authorization {
            headers
                .entry(AUTHORIZATION)
                .or_insert_with(|| authorization.clone());
        }
        let count = self.inner.endpoints.len();
        let first = self.inner.preferred.load(Ordering::Relaxed);
        let mut unavailable = None;
        let mut last_error = ClientError::NoEndpoints;
        for index in (0..count).map(|offset| (first + offset) % count) {
            let attempt = Attempt {
                method: &method,
                path_and_query,
                headers: &headers,
                body: &body,
            };
            let may_repeat = attempt.may_repeat();
            match self.try_endpoint(index, attempt).await {
                Ok(response) if response.status == StatusCode::SERVICE_UNAVAILABLE => {
                    if !may_repeat && !response.says_nothing_applied() {
                        return Ok(response);
                    }
                    unavailable = Some(response);
                }
                Ok(response) => {
                    self.inner.preferred.store(index, Ordering::Relaxed);
                    return Ok(response);
                }
                Err(error) if error.can_try_elsewhere(may_repeat) => last_error = error,
                Err(error) => return Err(error),
            }
        }
        unavailable.ok_or(last_error)
    }

    /// One exchange with one endpoint: on an idle pooled connection if there is
    /// one (and, for an idempotent method, once more on a fresh connection if the
    /// server had closed it), else on a new connection.
    async fn try_endpoint(
        &self,
        index: usize,
        attempt: Attempt<'_>,
    ) -> Result<Response, ClientError> {
        if let Some(connection) = self.take_idle(index) {
            match self.exchange(index, connection, &attempt).await {
                Ok(response) => return Ok(response),
                Err(error) if !attempt.may_repeat() => return Err(error),
                Err(_) => {}
            }
        }
        let connection = self.connect(index).await?;
        self.exchange(index, connection, &attempt).await
    }

    async fn exchange(
        &self,
        index: usize,
        mut connection: Connection,
        attempt: &Attempt<'_>,
    ) -> Result<Response, ClientError> {
        let timeout = self.inner.options.request_timeout;
        let target = connection.endpoint().target(attempt.path_and_query);
        let sent = connection.send(
            attempt.method.clone(),
            &target,
            attempt.headers,
            attempt.body.clone(),
        );
        let response =
            tokio::time::timeout(timeout, sent)
                .await
                .map_err(|_| ClientError::Timeout {
                    endpoint: connection.endpoint().url().to_string(),
                    timeout_ms: timeout.as_millis(),
                })??;
        self.return_idle(index, connection);
        Ok(response)
    }

    pub(crate) fn endpoint_count(&self) -> usize {
        self.inner.endpoints.len()
    }

    pub(crate) fn authorization(&self) -> Option<&HeaderValue> {
        self.inner.authorization.as_ref()
    }

    pub(crate) async fn connect(&self, index: usize) -> Result<Connection, ClientError> {
        let endpoint = self.inner.endpoints[index].clone();
        let timeout = self.inner.options.connect_timeout;
        let url = endpoint.url().to_string();
        let opened = Connection::open(endpoint, self.inner.tls.as_ref());
        tokio::time::timeout(timeout, opened)
            .await
            .map_err(|_| ClientError::Connect {
                endpoint: url,
                cause: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {} ms", timeout.as_millis()),
                ),
            })?
    }

    fn take_idle(&self, index: usize) -> Option<Connection> {
        let mut idle = self.inner.idle[index].lock();
        while let Some(connection) = idle.pop() {
            if connection.is_open() {
                return Some(connection);
            }
        }
        None
    }

    fn return_idle(&self, index: usize, connection: Connection) {
        let mut idle = self.inner.idle[index].lock();
        if connection.is_open() && idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(connection);
        }
    }
}

/// What one request sends, borrowed for each endpoint it is tried on.
struct Attempt<'a> {
    method: &'a Method,
    path_and_query: &'a str,
    headers: &'a HeaderMap,
    body: &'a Bytes,
}

impl Attempt<'_> {
    /// Whether sending this again after a try that may have been applied
    /// gives the answer the first try would have: an idempotent method
    /// without a condition on the key's current state.
    fn may_repeat(&self) -> bool {
        self.method.is_idempotent()
            && !self.headers.contains_key(IF_MATCH)
            && !self.headers.contains_key(IF_NONE_MATCH)
    }
}

fn expect_success(response: Response) -> Result<(), ClientError> {
    if response.status.is_success() {
        Ok(())
    } else {
        Err(response.into_error())
    }
}

#[cfg(test)]
mod tests;
