//! Response builders, and the one mapping from store errors to status codes.
//!
//! Error bodies are short `text/plain` lines that say what to fix, ending in a
//! newline like the original Go server's `http.Error`; nothing internal (paths,
//! stack traces) leaks to clients beyond the store's own message.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, ETAG, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

use crate::error::{Error, NOTHING_APPLIED};

/// Every response: a whole body, or (a watch) one streamed as it happens.
pub type HttpResponse = Response<BoxBody<Bytes, Infallible>>;

/// A body of bytes known in full.
pub fn full(bytes: Bytes) -> BoxBody<Bytes, Infallible> {
    Full::new(bytes).boxed()
}

const TEXT: &str = "text/plain; charset=utf-8";

/// A `text/plain` response whose body is `message` and a newline.
pub fn text(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    let mut body = message.into();
    body.push('\n');
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(TEXT));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

pub fn empty(status: StatusCode) -> HttpResponse {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

pub fn body(status: StatusCode, content_type: &'static str, body: Bytes) -> HttpResponse {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `"<revision>"`, the entity tag of a key at a revision.
pub fn etag_value(revision: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{revision}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

pub fn with_etag(mut response: HttpResponse, revision: u64) -> HttpResponse {
    response.headers_mut().insert(ETAG, etag_value(revision));
    response
}

/// A key with its value (if any) and revision as JSON, in a listing and in a
/// watch event: text where the bytes are UTF-8, otherwise the `_base64` field.
#[derive(serde::Serialize)]
pub struct KeyValueJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<u64>,
}

impl KeyValueJson {
    pub fn new(
        key: &[u8],
        value: Option<&[u8]>,
        revision: u64,
        expires_at_ms: Option<u64>,
    ) -> KeyValueJson {
        let (key, key_base64) = text_or_base64(key);
        let (value, value_base64) = value.map_or((None, None), text_or_base64);
        KeyValueJson {
            key,
            key_base64,
            value,
            value_base64,
            revision,
            expires_at_ms,
        }
    }
}

/// A string when the bytes are UTF-8, otherwise base64 in the `_base64` field.
fn text_or_base64(bytes: &[u8]) -> (Option<String>, Option<String>) {
    use base64::Engine;
    match std::str::from_utf8(bytes) {
        Ok(text) => (Some(text.to_string()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    }
}

/// `405` naming the methods the route takes.
pub fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// `503` with `Retry-After: 1`: the cluster should have a leader again soon.
fn retry_shortly(message: String) -> HttpResponse {
    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The status and message for a store error.
pub fn store_error(error: &Error) -> HttpResponse {
    match error {
        Error::Failed { reason } => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("storage has failed and refuses writes until walrus is restarted: {reason}"),
        ),
        Error::Closed => {
            let mut response = text(
                StatusCode::SERVICE_UNAVAILABLE,
                "walrus is shutting down; retry",
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Error::InvalidArgument(message) => text(StatusCode::BAD_REQUEST, message.clone()),
        Error::NoSpace { .. } | Error::DiskLow { .. } | Error::MembersTooOld { .. } => {
            text(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
        }
        Error::Unavailable { reason } => retry_shortly(format!("{reason}; {NOTHING_APPLIED}")),
        Error::OutcomeUnknown { .. } => retry_shortly(format!(
            "{error}. It may have been applied, or may still be: read the key \
             before retrying a write that is not idempotent"
        )),
        other => {
            tracing::error!(error = %other, "storage error while serving a request");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal storage error; see the server log",
            )
        }
    }
}
