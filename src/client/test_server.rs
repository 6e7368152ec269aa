//! A tiny in-process HTTP server for the client and benchmark tests: `/kv/` over a
//! `BTreeMap`, the two etcd gateway calls the benchmark uses, and a static page
//! for every other `GET`. Not the walrus server; just enough of its contract.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use percent_encoding::percent_decode_str;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Default, Clone)]
pub struct Options {
    /// Requests without `Authorization: Bearer <token>` get `401`.
    pub token: Option<String>,
    /// Every request gets walrus's `503` for a request never proposed.
    pub unavailable: bool,
    /// Every request gets walrus's `503` for a write that may have been
    /// applied.
    pub outcome_unknown: bool,
}

#[derive(Default)]
pub struct State {
    options: Options,
    pub data: Mutex<BTreeMap<Vec<u8>, (Bytes, u64)>>,
    revision: AtomicU64,
    pub requests: AtomicU64,
    pub connections: AtomicU64,
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: Arc<State>,
}

impl TestServer {
    /// Binds `127.0.0.1:0` and serves plain HTTP until the test's runtime shuts down.
    pub async fn start(options: Options) -> TestServer {
        TestServer::serve(options, None).await
    }

    /// Serves HTTPS with a fresh self-signed certificate for `localhost`; returns
    /// the certificate's PEM for the client to trust.
    pub async fn start_tls(options: Options) -> (TestServer, String) {
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        (TestServer::serve(options, Some(acceptor)).await, cert.pem())
    }

    async fn serve(options: Options, tls: Option<TlsAcceptor>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            options,
            ..State::default()
        });
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.connections.fetch_add(1, Ordering::Relaxed);
                let state = shared.clone();
                match &tls {
                    None => connection(state, stream),
                    Some(acceptor) => {
                        let accepted = acceptor.accept(stream);
                        tokio::spawn(async move {
                            if let Ok(stream) = accepted.await {
                                connection(state, stream);
                            }
                        });
                    }
                }
            }
        });
        TestServer { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn connection<S>(state: Arc<State>, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| handle(state.clone(), request));
    tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

fn with_etag(mut response: Reply, revision: u64) -> Reply {
    let etag = format!("\"{revision}\"").parse().unwrap();
    response.headers_mut().insert(http::header::ETAG, etag);
    response
}

async fn handle(state: Arc<State>, request: Request<Incoming>) -> Result<Reply, Infallible> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    if state.options.unavailable {
        let body = format!("no leader; {}", crate::error::NOTHING_APPLIED);
        return Ok(reply(StatusCode::SERVICE_UNAVAILABLE, body));
    }
    if state.options.outcome_unknown {
        let body = "the write's outcome is unknown: leadership moved";
        return Ok(reply(StatusCode::SERVICE_UNAVAILABLE, body));
    }
    if let Some(token) = &state.options.token {
        let expected = format!("Bearer {token}");
        let given = request.headers().get(http::header::AUTHORIZATION);
        if given.and_then(|value| value.to_str().ok()) != Some(expected.as_str()) {
            return Ok(reply(StatusCode::UNAUTHORIZED, "unauthorized"));
        }
    }
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let path = parts.uri.path().to_string();
    let response = match (&parts.method, path.as_str()) {
        (&Method::GET, "/kv/") => list(&state, parts.uri.query().unwrap_or("")),
        (_, "/v3/kv/put") => etcd_put(&state, &body),
        (_, "/v3/kv/range") => etcd_range(&state, &body),
        (method, path) => match path.strip_prefix("/kv/") {
            Some(key) => kv(
                &state,
                method,
                &percent_decode_str(key).collect::<Vec<u8>>(),
                body,
            ),
            None if method == Method::GET => reply(StatusCode::OK, "static page"),
            None => reply(StatusCode::NOT_FOUND, "not found"),
        },
    };
    Ok(response)
}

fn kv(state: &State, method: &Method, key: &[u8], body: Bytes) -> Reply {
    let mut data = state.data.lock();
    match *method {
        Method::GET => match data.get(key) {
            Some((value, revision)) => with_etag(reply(StatusCode::OK, value.clone()), *revision),
            None => reply(StatusCode::NOT_FOUND, "not found"),
        },
        Method::PUT => {
            let revision = state.revision.fetch_add(1, Ordering::Relaxed) + 1;
            data.insert(key.to_vec(), (body, revision));
            with_etag(reply(StatusCode::OK, ""), revision)
        }
        Method::DELETE => {
            data.remove(key);
            reply(StatusCode::OK, "")
        }
        _ => reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}

fn list(state: &State, query: &str) -> Reply {
    let mut prefix = Vec::new();
    let mut start = Vec::new();
    let mut limit = usize::MAX;
    let mut keys_only = false;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value: Vec<u8> = percent_decode_str(value).collect();
        match name {
            "prefix" => prefix = value,
            "start" => start = value,
            "limit" => limit = String::from_utf8(value).unwrap().parse().unwrap(),
            "keys_only" => keys_only = value == b"true",
            _ => {}
        }
    }
    let data = state.data.lock();
    let from = start.max(prefix.clone());
    let mut matching = data
        .range(from..)
        .take_while(|(key, _)| key.starts_with(&prefix));
    let items: Vec<_> = matching
        .by_ref()
        .take(limit)
        .map(|(key, (value, revision))| item(key, (!keys_only).then_some(value), *revision))
        .collect();
    let next = matching
        .next()
        .map(|(key, _)| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key));
    let page = serde_json::json!({ "items": items, "next": next });
    reply(StatusCode::OK, page.to_string())
}

fn item(key: &[u8], value: Option<&Bytes>, revision: u64) -> serde_json::Value {
    let mut item = serde_json::json!({ "revision": revision });
    text_or_base64(&mut item, "key", key);
    if let Some(value) = value {
        text_or_base64(&mut item, "value", value);
    }
    item
}

fn text_or_base64(item: &mut serde_json::Value, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => item[name] = text.into(),
        Err(_) => item[format!("{name}_base64")] = BASE64.encode(bytes).into(),
    }
}

fn etcd_field(body: &[u8], name: &str) -> Vec<u8> {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    BASE64.decode(json[name].as_str().unwrap_or("")).unwrap()
}

fn etcd_put(state: &State, body: &[u8]) -> Reply {
    let (key, value) = (etcd_field(body, "key"), etcd_field(body, "value"));
    let revision = state.revision.fetch_add(1, Ordering::Relaxed) + 1;
    state.data.lock().insert(key, (value.into(), revision));
    reply(
        StatusCode::OK,
        format!(r#"{{"header":{{"revision":"{revision}"}}}}"#),
    )
}

fn etcd_range(state: &State, body: &[u8]) -> Reply {
    let key = etcd_field(body, "key");
    let kvs: Vec<_> = state
        .data
        .lock()
        .get(&key)
        .map(|(value, _)| serde_json::json!({"key": BASE64.encode(&key), "value": BASE64.encode(value)}))
        .into_iter()
        .collect();
    reply(
        StatusCode::OK,
        serde_json::json!({ "kvs": kvs }).to_string(),
    )
}
