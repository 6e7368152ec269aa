//! `/kv/…`: get, put, delete and list, with entity tags and compare-and-swap.
//!
//! The key is the percent-decoded rest of the path, as bytes. Writes are
//! submitted to the store; the response leaves after the write is durable.
//! `PUT ?ttl=30s` gives the key an expiry (`ms`, `s`, `m`, `h`); `GET` reports
//! the time left in [`TTL_HEADER`].

use std::ops::Bound;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HeaderMap, IF_MATCH, IF_NONE_MATCH};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Serialize;

use std::time::Duration;

use super::app::App;
use super::metrics::Route;
use super::path::{parse_query, percent_decode};
use super::response::method_not_allowed;
use super::response::{HttpResponse, KeyValueJson, body, empty, store_error, text, with_etag};
use super::watch::{WatchRequest, start_position};
use crate::node::Consistency;
use crate::store::changes::WatchFilter;
use crate::store::{Command, Guard};

pub const PREFIX: &str = "/kv/";
/// Milliseconds until the key expires, on GET of a key that has an expiry.
pub const TTL_HEADER: &str = "x-walrus-ttl-ms";
const ALLOW: &str = "GET, HEAD, PUT, DELETE";

pub async fn handle(
    app: &App,
    route: Route,
    raw_key: &str,
    request: Request<Incoming>,
) -> HttpResponse {
    let key = match percent_decode(raw_key, false) {
        Ok(key) => key,
        Err(error) => return text(StatusCode::BAD_REQUEST, format!("key has {error}")),
    };
    if key.len() > app.config.max_key_bytes {
        return text(
            StatusCode::URI_TOO_LONG,
            format!(
                "key is {} bytes; the limit is {} (--max-key-bytes)",
                key.len(),
                app.config.max_key_bytes
            ),
        );
    }
    if route == Route::KvWatch {
        return watch(app, key, &request);
    }
    let consistency = match consistency_from_query(request.uri().query().unwrap_or("")) {
        Ok(consistency) => consistency,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let reads = route == Route::KvList
        || (!key.is_empty() && matches!(*request.method(), Method::GET | Method::HEAD));
    if reads && let Err(error) = app.node.read_barrier(consistency).await {
        return store_error(&error);
    }
    if route == Route::KvList {
        return list(app, request.uri().query().unwrap_or(""));
    }
    let method = request.method().clone();
    if !matches!(
        method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE
    ) {
        return method_not_allowed(ALLOW);
    }
    if key.is_empty() {
        return text(StatusCode::BAD_REQUEST, "key required");
    }
    let key = Bytes::from(key);
    match method {
        Method::PUT => put(app, key, request).await,
        Method::DELETE => delete(app, key, request.headers()).await,
        _ => get(app, &key, request.headers()),
    }
}

fn get(app: &App, key: &[u8], headers: &HeaderMap) -> HttpResponse {
    let Some(entry) = app.store.get_entry(key) else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    let not_modified = headers
        .get(IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|tag| tag_matches(tag.trim(), entry.mod_revision))
        });
    let response = if not_modified {
        with_etag(empty(StatusCode::NOT_MODIFIED), entry.mod_revision)
    } else {
        with_etag(
            body(StatusCode::OK, "application/octet-stream", entry.value),
            entry.mod_revision,
        )
    };
    with_ttl(response, entry.expires_at_ms)
}

fn with_ttl(mut response: HttpResponse, expires_at_ms: u64) -> HttpResponse {
    if expires_at_ms != 0 {
        let remaining = expires_at_ms.saturating_sub(crate::store::now_ms());
        response
            .headers_mut()
            .insert(TTL_HEADER, http::HeaderValue::from(remaining));
    }
    response
}

/// A `ttl` query value: a positive whole number with a unit, `ms`, `s`, `m` or
/// `h`. Returns milliseconds.
pub fn parse_ttl(text: &[u8]) -> Result<u64, String> {
    let text = std::str::from_utf8(text).unwrap_or("");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let scale = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => 0,
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|&count| count > 0 && scale > 0)
        .and_then(|count| count.checked_mul(scale))
        .filter(|&ms| ms < 1 << 50)
        .ok_or_else(|| {
            format!(
                "ttl must be a positive number with a unit (ms, s, m, h), like 30s; got {text:?}"
            )
        })
}

/// The read consistency a query asks for: `consistency=stale` reads this
/// node's applied state without asking the leader.
fn consistency_from_query(query: &str) -> Result<Consistency, String> {
    let params = parse_query(query).map_err(|error| format!("query has {error}"))?;
    match params.get("consistency").map(|value| value.as_slice()) {
        None | Some(b"linearizable") => Ok(Consistency::Linearizable),
        Some(b"stale") => Ok(Consistency::Stale),
        Some(other) => Err(format!(
            "consistency must be linearizable or stale, got {:?}",
            String::from_utf8_lossy(other)
        )),
    }
}

/// The expiry time a PUT's query asks for (0: none).
fn expiry_from_query(query: &str) -> Result<u64, String> {
    let params = parse_query(query).map_err(|error| format!("query has {error}"))?;
    match params.get("ttl") {
        None => Ok(0),
        Some(ttl) => Ok(crate::store::now_ms() + parse_ttl(ttl)?),
    }
}

/// Whether an entity tag from a request names `revision` (weak comparison,
/// as `If-None-Match` on GET uses).
fn tag_matches(tag: &str, revision: u64) -> bool {
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    tag == "*" || tag.trim_matches('"').parse::<u64>() == Ok(revision)
}

/// The guard that `If-Match` / `If-None-Match` ask for on a write, or what is
/// wrong with them (a 400).
fn write_guard(headers: &HeaderMap, allow_create_only: bool) -> Result<Guard, String> {
    let header = |name| {
        headers
            .get(name)
            .map(|value| value.to_str().map(str::trim))
            .transpose()
            .map_err(|_| "conditional header is not ASCII".to_string())
    };
    match (header(IF_MATCH)?, header(IF_NONE_MATCH)?) {
        (None, None) => Ok(Guard::None),
        (Some(_), Some(_)) => Err("send If-Match or If-None-Match, not both".into()),
        (Some("*"), None) => Ok(Guard::Present),
        (Some(tag), None) => parse_strong_tag(tag).map(Guard::ModRevision),
        (None, Some("*")) if allow_create_only => Ok(Guard::Absent),
        (None, Some(_)) => {
            Err("If-None-Match on a write supports only * (create if absent), on PUT".into())
        }
    }
}

fn parse_strong_tag(tag: &str) -> Result<u64, String> {
    if tag.contains(',') {
        return Err("If-Match takes one entity tag, like \"42\"".into());
    }
    if tag.starts_with("W/") {
        // A weak tag never matches under the strong comparison writes need.
        return Ok(u64::MAX);
    }
    tag.strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| format!("If-Match must be * or an entity tag like \"42\", got {tag}"))
}

async fn put(app: &App, key: Bytes, request: Request<Incoming>) -> HttpResponse {
    let guard = match write_guard(request.headers(), true) {
        Ok(guard) => guard,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let expires_at_ms = match expiry_from_query(request.uri().query().unwrap_or("")) {
        Ok(expires_at_ms) => expires_at_ms,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let limit = app.config.max_value_bytes;
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return too_large(limit);
    }
    let value = match tokio::time::timeout(
        app.config.body_timeout,
        read_value(request.into_body(), limit),
    )
    .await
    {
        Ok(ValueRead::Value(value)) => value,
        Ok(ValueRead::TooLarge) => return too_large(limit),
        Ok(ValueRead::Failed(error)) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("could not read the body: {error}"),
            );
        }
        Err(_) => {
            return text(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time (--body-timeout-ms)",
            );
        }
    };
    let command = Command::Put {
        key,
        value,
        expires_at_ms,
        guard,
    };
    match app.store.submit(command).await {
        Ok(outcome) if outcome.succeeded => with_etag(empty(StatusCode::OK), outcome.revision),
        Ok(outcome) => precondition_failed(outcome.previous.map(|entry| entry.mod_revision)),
        Err(error) => store_error(&error),
    }
}

/// A body past the limit is read on and thrown away, up to this many bytes
/// more, before the `413` goes out. A server that closes while the client is
/// still sending makes the kernel reset the connection, and the client loses
/// the answer with it (curl reports "connection reset" instead of the `413`).
/// Past this much, the connection is closed as it is.
const DRAIN_AT_MOST_BYTES: u64 = 64 << 20;

/// What reading a PUT's body gave.
enum ValueRead {
    Value(Bytes),
    /// Longer than the limit: nothing of it is kept.
    TooLarge,
    Failed(String),
}

/// Reads a value of at most `limit` bytes. A longer one is drained (see
/// [`DRAIN_AT_MOST_BYTES`]) and refused.
async fn read_value(mut body: Incoming, limit: usize) -> ValueRead {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut length = 0;
    let mut drained: Option<u64> = None;
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers
            },
            Err(error) if drained.is_none() => return ValueRead::Failed(error.to_string()),
            Err(_) => return ValueRead::TooLarge,
        };
        if let Some(drained) = &mut drained {
            *drained += data.len() as u64;
            if *drained > DRAIN_AT_MOST_BYTES {
                return ValueRead::TooLarge;
            }
            continue;
        }
        length += data.len();
        if length > limit {
            chunks = Vec::new();
            drained = Some(data.len() as u64);
            continue;
        }
        chunks.push(data);
    }
    if drained.is_some() {
        return ValueRead::TooLarge;
    }
    // Copied once into a value of its own: a body chunk may be a slice of the
    // connection's read buffer, which a stored value would otherwise keep
    // alive whole.
    let mut value = BytesMut::with_capacity(length);
    for chunk in chunks {
        value.put(chunk);
    }
    ValueRead::Value(value.freeze())
}

fn too_large(limit: usize) -> HttpResponse {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("value is larger than {limit} bytes (--max-value-bytes)"),
    )
}

fn precondition_failed(current: Option<u64>) -> HttpResponse {
    let response = text(
        StatusCode::PRECONDITION_FAILED,
        match current {
            Some(revision) => format!("precondition failed: the key is at revision {revision}"),
            None => "precondition failed: the key does not exist".to_string(),
        },
    );
    match current {
        Some(revision) => with_etag(response, revision),
        None => response,
    }
}

async fn delete(app: &App, key: Bytes, headers: &HeaderMap) -> HttpResponse {
    let guard = match write_guard(headers, false) {
        Ok(guard) => guard,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    match app.store.submit(Command::Delete { key, guard }).await {
        Ok(outcome) if outcome.succeeded => with_etag(empty(StatusCode::OK), outcome.revision),
        Ok(outcome) => precondition_failed(outcome.previous.map(|entry| entry.mod_revision)),
        Err(error) => store_error(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttls_need_a_unit() {
        assert_eq!(parse_ttl(b"250ms"), Ok(250));
        assert_eq!(parse_ttl(b"30s"), Ok(30_000));
        assert_eq!(parse_ttl(b"2m"), Ok(120_000));
        assert_eq!(parse_ttl(b"1h"), Ok(3_600_000));
        for bad in [
            &b"30"[..],
            b"0s",
            b"-1s",
            b"1d",
            b"s",
            b"",
            b"99999999999999999999h",
        ] {
            assert!(parse_ttl(bad).is_err());
        }
    }
}

#[derive(Serialize)]
struct ListPage {
    items: Vec<KeyValueJson>,
    /// An opaque, URL-safe cursor (base64url, no padding): pass it back as
    /// `cursor` for the next page, encoded or not; `null` on the last page.
    next: Option<String>,
}

/// The cursor of a page that starts at `key`: base64url without padding, so
/// it holds only `A–Z a–z 0–9 - _` and survives any query-string encoding.
fn encode_cursor(key: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn decode_cursor(token: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
}

/// Whether a request asks to watch (`watch`, `watch=true` or `watch=1`).
pub fn wants_watch(query: &str) -> bool {
    query.split('&').any(|pair| {
        matches!(
            pair.split_once('=').unwrap_or((pair, "")),
            ("watch", "" | "true" | "1")
        )
    })
}

/// `?watch=true`: a key (`/kv/{key}`) or a prefix (`/kv/?prefix=P`) as a
/// stream of changes; see `watch`.
fn watch(app: &App, key: Vec<u8>, request: &Request<Incoming>) -> HttpResponse {
    if request.method() != Method::GET {
        return method_not_allowed("GET");
    }
    let params = match parse_query(request.uri().query().unwrap_or("")) {
        Ok(params) => params,
        Err(error) => return text(StatusCode::BAD_REQUEST, format!("query has {error}")),
    };
    let filter = match key.is_empty() {
        true => WatchFilter::Prefix(Bytes::from(
            params.get("prefix").cloned().unwrap_or_default(),
        )),
        false => WatchFilter::Key(Bytes::from(key)),
    };
    let after = match start_position(request.headers(), params.get("since").map(Vec::as_slice)) {
        Ok(after) => after,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let keys_only = params
        .get("keys_only")
        .is_some_and(|value| value.is_empty() || value == b"true" || value == b"1");
    let watch_request = WatchRequest {
        filter,
        after,
        keys_only,
        keepalive: (app.config.idle_timeout / 3)
            .clamp(Duration::from_millis(100), Duration::from_secs(15)),
        shutdown: app.shutdown.clone(),
    };
    super::watch::respond(app.store.changes(), app.store.revision(), watch_request)
}

/// A page of a listing ends early, with `next` set, once the values in it
/// pass this many bytes (a page always has at least one entry). The page's
/// JSON is built whole in memory, so `limit` entries of the largest values
/// must not make one request cost gigabytes.
const PAGE_VALUE_BYTES: usize = 16 << 20;

fn list(app: &App, query: &str) -> HttpResponse {
    let params = match parse_query(query) {
        Ok(params) => params,
        Err(error) => return text(StatusCode::BAD_REQUEST, format!("query has {error}")),
    };
    let empty_bytes = Vec::new();
    let prefix = params.get("prefix").unwrap_or(&empty_bytes);
    let limit = match params.get("limit").map(|raw| {
        std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
    }) {
        None => app.config.list_default_limit,
        Some(Some(limit)) if (1..=app.config.list_max_limit).contains(&limit) => limit,
        Some(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "limit must be a number from 1 to {}",
                    app.config.list_max_limit
                ),
            );
        }
    };
    let keys_only = params
        .get("keys_only")
        .is_some_and(|value| value.is_empty() || value == b"true" || value == b"1");
    let cursor = match params.get("cursor").map(|token| decode_cursor(token)) {
        None => None,
        Some(Some(key)) => Some(key),
        Some(None) => {
            return text(
                StatusCode::BAD_REQUEST,
                "cursor is not one this server gave: pass a page's `next` back unchanged",
            );
        }
    };
    if cursor.is_some() && params.contains_key("start") {
        return text(
            StatusCode::BAD_REQUEST,
            "send start (a key) or cursor (a page's next), not both",
        );
    }
    let start = match (&cursor, params.get("start")) {
        (Some(key), _) => Bound::Included(key.as_slice()),
        (None, Some(start)) => Bound::Included(start.as_slice()),
        (None, None) => Bound::Unbounded,
    };
    // One more than asked tells whether a next page exists.
    // The HTTP API serves database 0; the others are reached with SELECT.
    let mut entries = app.store.range(0, start, prefix, limit + 1);
    let mut more = entries.len() > limit;
    entries.truncate(limit);
    if !keys_only {
        let mut page_bytes = 0usize;
        let full_at = entries.iter().position(|(_, entry)| {
            page_bytes += entry.value.len();
            page_bytes > PAGE_VALUE_BYTES
        });
        // At least one entry, however large, so every page moves on.
        if let Some(keep) = full_at.map(|index| index.max(1))
            && keep < entries.len()
        {
            entries.truncate(keep);
            more = true;
        }
    }
    let next = more.then(|| {
        let mut after = entries
            .last()
            .map(|(key, _)| key.to_vec())
            .unwrap_or_default();
        after.push(0); // The smallest key greater than the last one returned.
        encode_cursor(&after)
    });
    let items = entries
        .into_iter()
        .map(|(key, entry)| {
            let value = (!keys_only).then_some(&entry.value[..]);
            KeyValueJson::new(&key, value, entry.mod_revision, None)
        })
        .collect();
    match serde_json::to_vec(&ListPage { items, next }) {
        Ok(json) => with_etag(
            body(StatusCode::OK, "application/json", json.into()),
            app.store.revision(),
        ),
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the list: {error}"),
        ),
    }
}
