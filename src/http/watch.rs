//! `GET /kv/?watch=true&prefix=P` and `GET /kv/{key}?watch=true`: changes as
//! Server-Sent Events, from the node's change feed (`store::changes`).
//!
//! Each put, delete or expiry is one event whose `id` is where a reader
//! stands after it: the revision, or `REV-N` for the Nth of several changes
//! at one revision (all but the last of a transaction's). A reconnecting
//! `EventSource` sends the last id back as `Last-Event-ID` and resumes right
//! after it, with no gap and no repeat, while the history still reaches back
//! that far; `since=REV` starts after revision REV the same way. Older than
//! the history answers `410 Gone` with the oldest revision a watch can start
//! after. A watcher that has caught up once and then falls more than
//! [`MAX_LAG`] changes behind (its client stopped reading) is sent a final
//! `lagged` event naming where to resume, and the stream ends, while the
//! history still holds that place: writers never wait for a watcher, and a
//! watcher holds no buffer of its own. Replaying from `since` is not lagging.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde::Serialize;
use tokio::sync::watch;

use super::response::{HttpResponse, KeyValueJson, body, text};
use crate::store::changes::{Change, ChangeFeed, Position, Read, Subscription, WatchFilter};

/// Changes a watcher may fall behind the newest before it is cut off.
pub const MAX_LAG: usize = 10_000;
/// Changes read from the feed per step.
const BATCH: usize = 256;

/// A watch request, parsed.
pub struct WatchRequest {
    pub filter: WatchFilter,
    /// Where to start; `None` for "from now".
    pub after: Option<Position>,
    pub keys_only: bool,
    /// How often an idle stream sends a comment, so it is not idle to the
    /// connection's own timeout or a proxy's.
    pub keepalive: Duration,
    /// The server stopping: the stream ends.
    pub shutdown: Option<watch::Receiver<bool>>,
}

/// Parses an event id (or `since`): `REV` or `REV-N`.
pub fn parse_position(text: &[u8]) -> Option<Position> {
    let text = std::str::from_utf8(text).ok()?.trim();
    match text.split_once('-') {
        Some((revision, index)) => Some(Position {
            revision: revision.parse().ok()?,
            index: index.parse().ok()?,
        }),
        None => Some(Position::after_revision(text.parse().ok()?)),
    }
}

/// Where a watch starts: `Last-Event-ID` (a reconnect) over `since`.
pub fn start_position(
    headers: &HeaderMap,
    since: Option<&[u8]>,
) -> Result<Option<Position>, String> {
    if let Some(last) = headers.get("last-event-id") {
        return parse_position(last.as_bytes())
            .map(Some)
            .ok_or_else(|| "Last-Event-ID is not an id this server sent".to_string());
    }
    match since {
        None => Ok(None),
        Some(since) => parse_position(since)
            .map(Some)
            .ok_or_else(|| "since must be a revision (a number)".to_string()),
    }
}

/// Starts the event stream, or answers why it cannot.
pub fn respond(
    feed: Option<Arc<ChangeFeed>>,
    current_revision: u64,
    request: WatchRequest,
) -> HttpResponse {
    let Some(feed) = feed else {
        return text(StatusCode::NOT_IMPLEMENTED, "this store has no change feed");
    };
    let from = request
        .after
        .unwrap_or(Position::after_revision(current_revision));
    // Subscribe before the first read, so nothing published in between is
    // missed.
    let subscription = feed.subscribe(request.filter);
    if let Read::Compacted { floor } = feed.read(from, 0) {
        return compacted(from.revision, floor);
    }
    let watcher = Watcher {
        feed,
        subscription,
        position: from,
        keys_only: request.keys_only,
        keepalive: request.keepalive,
        shutdown: request.shutdown,
        caught_up: false,
        finished: false,
    };
    let opening = format!(
        "retry: 1000\n: watching after revision {}\n\n",
        from.revision
    );
    let events = futures::stream::once(async move { Ok(Frame::data(Bytes::from(opening))) })
        .chain(futures::stream::unfold(watcher, Watcher::next_chunk));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(events)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells a proxy in front (nginx) to pass events on at once.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// `410 Gone`: the history no longer reaches back to the revision asked for.
fn compacted(asked: u64, floor: u64) -> HttpResponse {
    #[derive(Serialize)]
    struct Gone {
        error: String,
        oldest_revision: u64,
    }
    let gone = Gone {
        error: format!(
            "revision {asked} is older than this node's change history: watch with \
             since={floor} or later (after reading the current state with a listing)"
        ),
        oldest_revision: floor,
    };
    let json = serde_json::to_vec(&gone).unwrap_or_default();
    let mut response = body(StatusCode::GONE, "application/json", Bytes::from(json));
    if let Ok(value) = HeaderValue::from_str(&floor.to_string()) {
        response
            .headers_mut()
            .insert("x-walrus-oldest-revision", value);
    }
    response
}

struct Watcher {
    feed: Arc<ChangeFeed>,
    subscription: Subscription,
    position: Position,
    keys_only: bool,
    keepalive: Duration,
    shutdown: Option<watch::Receiver<bool>>,
    /// Set once a read reached the newest change: from then on, falling far
    /// behind means the client stopped reading.
    caught_up: bool,
    finished: bool,
}

type Chunk = Result<Frame<Bytes>, Infallible>;

impl Watcher {
    /// The next piece of the stream: events, a keep-alive comment, or the
    /// final event of a watcher that fell behind; `None` once it has ended.
    async fn next_chunk(mut self) -> Option<(Chunk, Watcher)> {
        if self.finished {
            return None;
        }
        loop {
            let changes = match self.feed.read(self.position, BATCH) {
                Read::Compacted { floor } => return Some(self.finish("compacted", floor)),
                Read::Changes(changes) => changes,
            };
            if changes.is_empty() {
                self.caught_up = true;
                let stopping = async {
                    match &mut self.shutdown {
                        Some(shutdown) => {
                            let _ = shutdown.wait_for(|&stop| stop).await;
                        }
                        None => std::future::pending().await,
                    }
                };
                let changed = tokio::time::timeout(self.keepalive, self.subscription.changed());
                tokio::select! {
                    woken = changed => match woken {
                        Ok(()) => continue,
                        Err(_) => return Some((data(": keepalive\n\n".into()), self)),
                    },
                    () = stopping => return None,
                }
            }
            if self.caught_up && self.feed.behind(self.position, MAX_LAG + 1) > MAX_LAG {
                return Some(self.finish("lagged", 0));
            }
            if changes.len() < BATCH {
                self.caught_up = true;
            }
            let mut out = Vec::new();
            for change in &changes {
                if !self.subscription.filter().accepts(&change.key) {
                    continue;
                }
                match self.keys_only {
                    false => {
                        let event = change.rendered.get_or_init(|| render(change, false));
                        out.extend_from_slice(event);
                    }
                    true => out.extend_from_slice(&render(change, true)),
                }
            }
            if let Some(last) = changes.last() {
                self.position = last.position();
            }
            if !out.is_empty() {
                return Some((Ok(Frame::data(Bytes::from(out))), self));
            }
        }
    }

    /// The last event: why the stream ends and where to resume.
    fn finish(mut self, reason: &str, floor: u64) -> (Chunk, Watcher) {
        self.finished = true;
        #[derive(Serialize)]
        struct End<'a> {
            reason: &'a str,
            resume_after: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            oldest_revision: Option<u64>,
        }
        let end = End {
            reason,
            resume_after: position_id(self.position),
            oldest_revision: (reason == "compacted").then_some(floor),
        };
        let json = serde_json::to_string(&end).unwrap_or_default();
        (data(format!("event: {reason}\ndata: {json}\n\n")), self)
    }
}

fn data(text: String) -> Chunk {
    Ok(Frame::data(Bytes::from(text)))
}

/// The event id for a position: `REV` after a whole revision, `REV-N` inside.
fn position_id(position: Position) -> String {
    match position.index {
        u32::MAX => position.revision.to_string(),
        index => format!("{}-{index}", position.revision),
    }
}

fn change_id(change: &Change) -> String {
    match change.index == change.count {
        true => change.revision.to_string(),
        false => format!("{}-{}", change.revision, change.index),
    }
}

/// One change as an event: id, kind, and its JSON.
fn render(change: &Change, keys_only: bool) -> Bytes {
    let is_put = change.kind == crate::store::changes::ChangeKind::Put;
    let value = (is_put && !keys_only).then_some(&change.value[..]);
    let expires_at_ms = (is_put && change.expires_at_ms != 0).then_some(change.expires_at_ms);
    let event = KeyValueJson::new(&change.key, value, change.revision, expires_at_ms);
    let json = serde_json::to_string(&event).unwrap_or_default();
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {json}\n\n",
        change_id(change),
        change.kind.name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_last_event_id() {
        for position in [
            Position::after_revision(42),
            Position {
                revision: 42,
                index: 2,
            },
        ] {
            assert_eq!(
                parse_position(position_id(position).as_bytes()),
                Some(position)
            );
        }
        assert_eq!(parse_position(b"x"), None);
        assert_eq!(parse_position(b"1-x"), None);
    }
}
