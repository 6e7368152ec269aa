//! `/admin/…`: operating a node over HTTP (the bearer token applies, as for
//! every route but the probes).
//!
//! - `GET /admin/snapshot`: a consistent snapshot of everything the node has
//!   applied, taken now while writes continue, in the snapshot file format
//!   (checksummed; `walrus backup` saves it and `walrus restore` makes a
//!   data directory of it). Taking it also compacts the log behind it.
//! - `POST /admin/compact`: takes a snapshot now and removes the log it
//!   covers; answers where it went.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use super::response::{HttpResponse, body, store_error, text};
use super::router::{App, method_not_allowed};

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
    // The file is complete and never rewritten; a newer snapshot may remove
    // it, which the read below would then report.
    let read = tokio::task::spawn_blocking(move || std::fs::read(&path)).await;
    match read.unwrap_or_else(|_| Err(std::io::Error::other("the reader stopped"))) {
        Ok(data) => body(
            StatusCode::OK,
            "application/octet-stream",
            Bytes::from(data),
        ),
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the snapshot: {error}; try again"),
        ),
    }
}

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
