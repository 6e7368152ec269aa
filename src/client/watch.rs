//! Following a watch (`GET /kv/?watch=true`): the server's Server-Sent Events
//! read as they arrive, with the resume the protocol allows.
//!
//! Each event's id is where the reader stands after it. When the stream ends
//! (the server cut a watcher that fell behind, or the connection broke) the
//! watch reconnects, to the next endpoint if that one is gone, sending the last
//! id as `Last-Event-ID`, so no change is missed or repeated. A reconnect that
//! fails (nothing listening while a server restarts, a connection reset by a
//! server dying as it arrived, a `503` from a node with no leader yet) is
//! tried again, on the next endpoint, after a wait that
//! doubles from 100 ms to 2 s, for up to a minute. A history that no
//! longer reaches back that far (`410`, or a `compacted` event) ends it with
//! an error: the caller must read the current state again.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;

use super::connection::Connection;
use super::{Client, ClientError, key_path};

/// One event of a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// `put`, `delete` or `expire`.
    pub kind: String,
    /// Where the stream stands after it (`REV` or `REV-N`).
    pub id: String,
    /// The event's JSON: key, value (for a put), revision.
    pub data: String,
}

/// What to follow.
pub enum WatchTarget<'a> {
    Key(&'a [u8]),
    Prefix(&'a [u8]),
}

/// How long a watch keeps trying to reconnect without getting an event
/// through before it gives up: long enough for a server to restart or a
/// cluster to elect a leader.
const RECONNECT_FOR: Duration = Duration::from_secs(60);
/// The first wait before reconnecting after a failure, doubled after each
/// failure in a row up to [`LONGEST_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(100);
const LONGEST_WAIT: Duration = Duration::from_secs(2);

impl Client {
    /// Follows changes to `target` after revision `since` (from now when
    /// `None`), calling `on_event` for each until it returns false.
    pub async fn watch(
        &self,
        target: WatchTarget<'_>,
        since: Option<u64>,
        mut on_event: impl FnMut(&WatchEvent) -> bool,
    ) -> Result<(), ClientError> {
        let path = match target {
            WatchTarget::Key(key) => format!("{}?watch=true", key_path(key)),
            WatchTarget::Prefix(prefix) => {
                let encoded: String = url_encode(prefix);
                format!("/kv/?watch=true&prefix={encoded}")
            }
        };
        let mut last_id = since.map(|revision| revision.to_string());
        let mut endpoint = 0;
        // Set while reconnects fail in a row (no event got through).
        let mut failing_since: Option<tokio::time::Instant> = None;
        let mut wait = FIRST_WAIT;
        loop {
            let mut headers = HeaderMap::new();
            if let Some(authorization) = self.authorization() {
                headers.insert(AUTHORIZATION, authorization.clone());
            }
            if let Some(id) = &last_id
                && let Ok(value) = HeaderValue::from_str(id)
            {
                headers.insert("last-event-id", value);
            }
            let outcome = self
                .follow(endpoint, &path, &headers, &mut last_id, &mut on_event)
                .await;
            let error = match outcome {
                Ok(Followed::Stopped) => return Ok(()),
                Ok(
                    Followed::Ended { delivered: true }
                    | Followed::Broke {
                        delivered: true, ..
                    },
                ) => {
                    failing_since = None;
                    wait = FIRST_WAIT;
                    continue;
                }
                Ok(Followed::Ended { .. }) => {
                    ClientError::Decode("the watch stream keeps ending without an event".into())
                }
                Ok(Followed::Broke { error, .. }) => error,
                // A server restarting or a node without a leader yet: worth
                // another try, as a connection refused is.
                Err(error) if is_worth_retrying(&error) => error,
                Err(error) => return Err(error),
            };
            // The first failure in a row is said where a user sees it: a
            // watch that cannot connect must not look like one that is
            // connected and idle.
            if failing_since.is_none() {
                tracing::warn!(
                    "{error}; the watch keeps trying for up to {} s",
                    RECONNECT_FOR.as_secs()
                );
            }
            let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() >= RECONNECT_FOR {
                return Err(error);
            }
            tracing::debug!(%error, wait_ms = wait.as_millis() as u64, "watch reconnecting");
            endpoint = (endpoint + 1) % self.endpoint_count();
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(LONGEST_WAIT);
        }
    }

    /// One connection's worth of a watch.
    async fn follow(
        &self,
        endpoint: usize,
        path: &str,
        headers: &HeaderMap,
        last_id: &mut Option<String>,
        on_event: &mut impl FnMut(&WatchEvent) -> bool,
    ) -> Result<Followed, ClientError> {
        let mut connection = self.connect(endpoint).await?;
        let target = connection.endpoint().target(path);
        let (parts, mut body) = connection
            .send_streaming(Method::GET, &target, headers, Bytes::new())
            .await?;
        if parts.status != StatusCode::OK {
            return Err(Connection::rest_of_response(parts, body).await.into_error());
        }
        let mut parser = EventParser::default();
        let mut delivered = false;
        loop {
            let frame = match body.frame().await {
                None => return Ok(Followed::Ended { delivered }),
                Some(Err(error)) => {
                    let error = connection.protocol_error(error);
                    return Ok(Followed::Broke { delivered, error });
                }
                Some(Ok(frame)) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            for event in parser.push(&data) {
                match event.kind.as_str() {
                    "lagged" => return Ok(Followed::Ended { delivered: true }),
                    "compacted" => {
                        return Err(ClientError::Http {
                            status: StatusCode::GONE,
                            body: format!(
                                "the server's change history moved past this watch: {}",
                                event.data
                            ),
                        });
                    }
                    _ => {}
                }
                if !event.id.is_empty() {
                    *last_id = Some(event.id.clone());
                }
                delivered = true;
                if !on_event(&event) {
                    return Ok(Followed::Stopped);
                }
            }
        }
    }
}

/// Whether a failed watch request may succeed if tried again: the server
/// was unreachable, the connection broke before the response began (a
/// server killed while the request was on its way resets it; a watch is a
/// read, so asking again is safe), or the server answered that it cannot
/// serve yet (`503`).
fn is_worth_retrying(error: &ClientError) -> bool {
    match error {
        ClientError::Connect { .. } | ClientError::Protocol { .. } => true,
        ClientError::Http { status, .. } => *status == StatusCode::SERVICE_UNAVAILABLE,
        _ => false,
    }
}

enum Followed {
    /// The caller asked to stop.
    Stopped,
    /// The server ended the stream.
    Ended { delivered: bool },
    /// The connection broke.
    Broke { delivered: bool, error: ClientError },
}

/// Splits a byte stream into Server-Sent Events (fields `id`, `event`, `data`;
/// comments and other fields ignored).
#[derive(Default)]
struct EventParser {
    buffer: BytesMut,
    kind: String,
    id: String,
    data: String,
}

impl EventParser {
    fn push(&mut self, bytes: &Bytes) -> Vec<WatchEvent> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&byte| byte == b'\n') {
            let line = self.buffer.split_to(end + 1);
            let line = String::from_utf8_lossy(&line[..end]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                if !self.data.is_empty() || !self.kind.is_empty() {
                    events.push(WatchEvent {
                        kind: std::mem::take(&mut self.kind),
                        id: std::mem::take(&mut self.id),
                        data: std::mem::take(&mut self.data),
                    });
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.kind = value.to_string(),
                "id" => self.id = value.to_string(),
                "data" => {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                }
                _ => {}
            }
        }
        events
    }
}

fn url_encode(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_exchange_is_retried_and_a_refusal_is_not() {
        let reset = ClientError::Protocol {
            endpoint: "http://127.0.0.1:1".into(),
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        };
        assert!(is_worth_retrying(&reset));
        let unavailable = ClientError::Http {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: String::new(),
        };
        assert!(is_worth_retrying(&unavailable));
        for status in [
            StatusCode::GONE,
            StatusCode::UNAUTHORIZED,
            StatusCode::BAD_REQUEST,
        ] {
            let refused = ClientError::Http {
                status,
                body: String::new(),
            };
            assert!(!is_worth_retrying(&refused), "{status}");
        }
    }

    #[test]
    fn events_split_across_chunks_come_out_whole() {
        let mut parser = EventParser::default();
        let stream = "retry: 1000\n: comment\n\nid: 7\nevent: put\ndata: {\"key\":\"a\"}\n\nid: 8-1\nevent: delete\ndata: {}\n\n";
        let mut events = Vec::new();
        for chunk in stream.as_bytes().chunks(5) {
            events.extend(parser.push(&Bytes::copy_from_slice(chunk)));
        }
        assert_eq!(events.len(), 2);
        assert_eq!(
            (events[0].kind.as_str(), events[0].id.as_str()),
            ("put", "7")
        );
        assert_eq!(events[0].data, "{\"key\":\"a\"}");
        assert_eq!(
            (events[1].kind.as_str(), events[1].id.as_str()),
            ("delete", "8-1")
        );
    }
}
