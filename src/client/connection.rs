//! One keep-alive HTTP/1.1 connection to one endpoint: hyper's low-level client,
//! with the connection future driven by a task of its own.
//!
//! Requests on a connection go one at a time (HTTP/1.1 without pipelining); the
//! [`Client`](super::Client) pools idle connections and the HTTP benchmark gives
//! each of its workers one.

use std::sync::Arc;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::endpoint::Endpoint;
use super::{ClientError, Response, tls};

/// The largest response body read into memory; a longer one is an error rather
/// than an unbounded allocation driven by the server.
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    endpoint: Arc<Endpoint>,
}

impl Connection {
    /// Connects over TCP (and TLS for `https://`, which needs `tls`).
    pub async fn open(
        endpoint: Arc<Endpoint>,
        tls: Option<&TlsConnector>,
    ) -> Result<Connection, ClientError> {
        let connect_error = |cause| ClientError::Connect {
            endpoint: endpoint.url().to_string(),
            cause,
        };
        let stream = TcpStream::connect((endpoint.host(), endpoint.port()))
            .await
            .map_err(connect_error)?;
        stream.set_nodelay(true).map_err(connect_error)?;
        let sender = if endpoint.is_tls() {
            let connector = tls.ok_or_else(|| {
                ClientError::Tls(format!("{}: https needs a CA file", endpoint.url()))
            })?;
            let stream = tls::handshake(connector, &endpoint, stream).await?;
            start(stream, &endpoint).await?
        } else {
            start(stream, &endpoint).await?
        };
        Ok(Connection { sender, endpoint })
    }

    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// False once either side has closed the connection; it cannot be reused.
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Sends one request and reads the whole response. `target` is the complete
    /// origin-form target (see [`Endpoint::target`]); the `Host` header is added.
    pub async fn send(
        &mut self,
        method: Method,
        target: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response, ClientError> {
        let (parts, body) = self.send_streaming(method, target, headers, body).await?;
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|error| self.protocol_error(error))?
            .to_bytes();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// The rest of a streamed response read whole, for one whose status says
    /// its body is not the stream the caller wanted (an error message). A
    /// body that breaks off reads as empty: the status is the answer.
    pub async fn rest_of_response(
        parts: http::response::Parts,
        body: hyper::body::Incoming,
    ) -> Response {
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        Response {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// Sends one request and returns the status, headers and the body still
    /// to be read ([`Connection::send`] reads it whole; a watch reads it as
    /// it streams).
    pub async fn send_streaming(
        &mut self,
        method: Method,
        target: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<(http::response::Parts, hyper::body::Incoming), ClientError> {
        let request = self.build(method, target, headers, body)?;
        self.sender
            .ready()
            .await
            .map_err(|error| self.protocol_error(error))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|error| self.protocol_error(error))?;
        Ok(response.into_parts())
    }

    fn build(
        &self,
        method: Method,
        target: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut request = Request::builder()
            .method(method)
            .uri(target)
            .body(Full::new(body))
            .map_err(|error| ClientError::Request(error.to_string()))?;
        *request.headers_mut() = headers.clone();
        request
            .headers_mut()
            .insert(HOST, self.endpoint.authority().clone());
        Ok(request)
    }

    pub(super) fn protocol_error(
        &self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ClientError {
        ClientError::Protocol {
            endpoint: self.endpoint.url().to_string(),
            source: source.into(),
        }
    }
}

/// The HTTP/1.1 handshake on an established stream; the connection's future runs
/// on its own task until the sender is dropped or the peer closes.
async fn start<S>(stream: S, endpoint: &Endpoint) -> Result<SendRequest<Full<Bytes>>, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| ClientError::Protocol {
            endpoint: endpoint.url().to_string(),
            source: error.into(),
        })?;
    let url = endpoint.url().to_string();
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(endpoint = %url, %error, "connection closed with an error");
        }
    });
    Ok(sender)
}
