//! `/admin/…`: operating a node over HTTP (the bearer token applies, as for
//! every route but the probes).
//!
//! - `GET /admin/snapshot`: a consistent snapshot of everything the node has
//!   applied, taken now while writes continue, in the snapshot file format
//!   (checksummed; `walrus backup` saves it and `walrus restore` makes a
//!   data directory of it), streamed from the file. Taking it also compacts
//!   the log behind it.
//! - `POST /admin/compact`: takes a snapshot now and removes the log it
//!   covers; answers where it went.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};

use super::app::App;
use super::response::method_not_allowed;
use super::response::{HttpResponse, body, store_error, text};

pub const PREFIX: &str = "/admin/";

pub async fn handle(app: &App, action: &str, request: Request<Incoming>) -> HttpResponse {
    let method = request.method().clone();
    match (action, method) {
        ("snapshot", Method::GET) => snapshot(app).await,
        ("snapshot", _) => method_not_allowed("GET"),
        ("compact", Method::POST) => compact(app).await,
        ("compact", _) => method_not_allowed("POST"),
        _ => text(
            StatusCode::NOT_FOUND,
            "admin routes: GET /admin/snapshot, POST /admin/compact",
        ),
    }
}

async fn snapshot(app: &App) -> HttpResponse {
    let path = match app.node.snapshot_now().await {
        Ok(path) => path,
        Err(error) => return store_error(&error),
    };
    // Opened before answering: the file is complete and never rewritten, and
    // once open it stays readable even if a newer snapshot removes it.
    let opened = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        let length = file.metadata()?.len();
        Ok::<_, std::io::Error>((file, length))
    })
    .await;
    let (file, length) =
        match opened.unwrap_or_else(|_| Err(std::io::Error::other("the reader stopped"))) {
            Ok(opened) => opened,
            Err(error) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("reading the snapshot: {error}; try again"),
                );
            }
        };
    // Streamed from the file a chunk at a time: a large store is never held
    // in memory. A read error ends the body short of its Content-Length, so
    // the client sees a broken transfer, never a shorter snapshot.
    let chunks = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let read = tokio::task::spawn_blocking(move || {
            let mut chunk = vec![0; SNAPSHOT_CHUNK_BYTES];
            let count = std::io::Read::read(&mut file, &mut chunk)?;
            chunk.truncate(count);
            Ok::<_, std::io::Error>((file, chunk))
        })
        .await;
        match read {
            Ok(Ok((file, chunk))) if !chunk.is_empty() => {
                Some((Ok(Frame::data(Bytes::from(chunk))), Some(file)))
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "reading a snapshot for /admin/snapshot failed");
                None
            }
            _ => None,
        }
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// How much of a snapshot file is read per chunk of the response.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

async fn compact(app: &App) -> HttpResponse {
    match app.node.snapshot_now().await {
        Ok(path) => {
            let bytes = std::fs::metadata(&path).map_or(0, |meta| meta.len());
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            let json = serde_json::json!({ "snapshot": name, "bytes": bytes });
            body(
                StatusCode::OK,
                "application/json",
                Bytes::from(json.to_string()),
            )
        }
        Err(error) => store_error(&error),
    }
}
