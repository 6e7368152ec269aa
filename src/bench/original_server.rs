//! The original design's HTTP server, reproduced as a baseline for `bench http`:
//! `PUT/GET/DELETE /kv/{key}` over the `OriginalDurable` map and JSON-lines log,
//! one fsync per write. Each write blocks a thread for its fsync, as the
//! original's handler blocks its goroutine; `walrus bench original-server` runs
//! it so `bench/http.sh` can measure walrus against it with the same load.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::baseline::OriginalDurable;

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

async fn handle(
    store: Arc<OriginalDurable>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let Some(raw_key) = request.uri().path().strip_prefix("/kv/") else {
        return Ok(reply(StatusCode::NOT_FOUND, "404 page not found\n"));
    };
    let key = percent_encoding::percent_decode_str(raw_key)
        .decode_utf8_lossy()
        .into_owned();
    if key.is_empty() {
        return Ok(reply(StatusCode::BAD_REQUEST, "key required\n"));
    }
    let method = request.method().clone();
    let response = match method {
        Method::GET => match store.get(&key) {
            Some(value) => reply(StatusCode::OK, value),
            None => reply(StatusCode::NOT_FOUND, "not found\n"),
        },
        Method::PUT | Method::DELETE => {
            let body = match request.into_body().collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, "bad body\n")),
            };
            let value = String::from_utf8_lossy(&body).into_owned();
            let written = tokio::task::spawn_blocking(move || {
                if method == Method::PUT {
                    store.set(&key, &value)
                } else {
                    store.delete(&key)
                }
            })
            .await;
            match written {
                Ok(Ok(())) => reply(StatusCode::OK, Bytes::new()),
                _ => reply(StatusCode::INTERNAL_SERVER_ERROR, "write failed\n"),
            }
        }
        _ => reply(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n"),
    };
    Ok(response)
}

/// Serves the original design on `address` with its log in `dir`, until the
/// process is stopped.
pub async fn serve(address: &str, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let store = Arc::new(OriginalDurable::open(&dir.join("original.jsonl"))?);
    let listener = TcpListener::bind(address).await?;
    tracing::info!(address = %listener.local_addr()?, "original design listening");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let store = store.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(store.clone(), request));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
