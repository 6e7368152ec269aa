//! The workload: clients issuing gets, puts, deletes, compare-and-swaps and
//! increments over HTTP and RESP (`redis://` endpoints) against a node or a
//! cluster, each operation recorded with the times it was sent and answered.
//!
//! Over HTTP a compare-and-swap is a PUT with `If-Match` on the revision
//! read; over RESP it is WATCH, GET, MULTI, SET, EXEC.
//!
//! Increments (INCR, over RESP) go to counter keys of their own
//! (`verify-n-…`), which are read and deleted but never put or swapped: a
//! counter's values repeat (a delete starts it again), and a compare-and-swap
//! on a revision is one on a value only while values are unique.
//!
//! Every written value is unique (`c<client>-<n>`), so a revision read names
//! exactly one value and a compare-and-swap on a revision (`If-Match`) is a
//! compare-and-swap on that value. A request that times out, breaks, or gets
//! a 5xx is recorded with an unknown outcome: it may have happened.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_rustls::TlsConnector;

use super::checker::{Action, Operation};
use crate::client::connection::Connection;
use crate::client::endpoint::Endpoint;
use crate::client::resp::{RespConnection, RespValue};

/// Relative weights of the operations.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub get: u32,
    pub put: u32,
    pub delete: u32,
    pub cas: u32,
    pub incr: u32,
}

/// One kind of operation, drawn from a [`Mix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Get,
    Put,
    Delete,
    Cas,
    Incr,
}

impl Mix {
    /// Draws an operation with the mix's weights.
    pub fn pick(&self, rng: &mut StdRng) -> OpKind {
        let kinds = [
            (OpKind::Get, self.get),
            (OpKind::Put, self.put),
            (OpKind::Delete, self.delete),
            (OpKind::Cas, self.cas),
            (OpKind::Incr, self.incr),
        ];
        let total: u32 = kinds.iter().map(|(_, weight)| weight).sum();
        let mut pick = rng.random_range(0..total.max(1));
        for (kind, weight) in kinds {
            if pick < weight {
                return kind;
            }
            pick -= weight;
        }
        OpKind::Get
    }
}

impl std::str::FromStr for Mix {
    type Err = String;

    /// `GET:PUT:DELETE:CAS:INCR`, e.g. `4:3:1:2:2`; without the fifth
    /// weight, no increments.
    fn from_str(text: &str) -> Result<Mix, String> {
        let parts: Vec<u32> = text
            .split(':')
            .map(|part| part.trim().parse::<u32>())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                format!("{text:?}: expected GET:PUT:DELETE:CAS:INCR weights, e.g. 4:3:1:2:2")
            })?;
        let (get, put, delete, cas, incr) = match parts[..] {
            [get, put, delete, cas] => (get, put, delete, cas, 0),
            [get, put, delete, cas, incr] => (get, put, delete, cas, incr),
            _ => {
                return Err(format!(
                    "{text:?}: expected four or five weights, GET:PUT:DELETE:CAS[:INCR]"
                ));
            }
        };
        let total = [get, put, delete, cas, incr]
            .iter()
            .try_fold(0u32, |sum, weight| sum.checked_add(*weight))
            .ok_or_else(|| format!("{text:?}: the weights add up to too much"))?;
        if total == 0 {
            return Err("at least one weight must be above zero".into());
        }
        Ok(Mix {
            get,
            put,
            delete,
            cas,
            incr,
        })
    }
}

/// The keys a workload uses: `keys` registers (`verify-…`), and when the mix
/// increments, half as many counters (`verify-n-…`, at least one).
#[derive(Debug, Clone, Copy)]
pub struct KeySpace {
    registers: u64,
    counters: u64,
}

impl KeySpace {
    pub fn new(keys: u64, mix: Mix) -> KeySpace {
        let registers = keys.max(1);
        KeySpace {
            registers,
            counters: if mix.incr > 0 {
                registers.div_ceil(2)
            } else {
                0
            },
        }
    }

    /// Every key, registers first.
    pub fn all(&self) -> impl Iterator<Item = String> + use<> {
        let registers = (0..self.registers).map(|index| format!("verify-{index}"));
        let counters = (0..self.counters).map(|index| format!("verify-n-{index}"));
        registers.chain(counters)
    }

    /// A key for `kind`: puts and swaps take registers, increments counters,
    /// reads and deletes either.
    pub fn pick(&self, kind: OpKind, rng: &mut StdRng) -> String {
        let register = |rng: &mut StdRng| format!("verify-{}", rng.random_range(0..self.registers));
        match kind {
            OpKind::Put | OpKind::Cas => register(rng),
            OpKind::Incr if self.counters > 0 => {
                format!("verify-n-{}", rng.random_range(0..self.counters))
            }
            OpKind::Incr => register(rng),
            OpKind::Get | OpKind::Delete => {
                let index = rng.random_range(0..self.registers + self.counters);
                if index < self.registers {
                    format!("verify-{index}")
                } else {
                    format!("verify-n-{}", index - self.registers)
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    pub endpoints: Vec<String>,
    pub token: Option<String>,
    pub clients: u64,
    pub keys: u64,
    pub duration: Duration,
    pub mix: Mix,
    pub value_bytes: usize,
    pub seed: u64,
    /// A request not answered in this long has an unknown outcome.
    pub request_timeout: Duration,
    /// Stop after this many operations in all (a bound on top of the time).
    pub max_operations: u64,
    /// The CA (PEM) that `https://` and `rediss://` endpoints' certificates
    /// are checked against.
    pub ca_file: Option<std::path::PathBuf>,
}

/// Shared by the clients: the clock origin and progress counters.
pub struct Recorder {
    pub origin: Instant,
    pub done: AtomicU64,
    pub unknown: AtomicU64,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            origin: Instant::now(),
            done: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

/// One HTTP exchange's result: status, body, revision; `None` when unknown.
type Answer = Option<(StatusCode, Bytes, Option<u64>)>;

/// What a read found: the value (`None`: absent) and, over HTTP, its
/// revision; `None` when the outcome is unknown.
type ReadResult = Option<(Option<String>, Option<u64>)>;

/// How a compare-and-swap ended.
enum CasOutcome {
    Applied(Option<u64>),
    /// Refused because the register no longer held the value read; the
    /// revision the server said the key is at, if it said.
    Refused(Option<u64>),
    /// Refused, but not provably because of the value read: over RESP a
    /// WATCHed key may change between WATCH and the GET, so a failed EXEC
    /// says nothing a checker can use. It changed nothing; it is not recorded.
    RefusedUnrecorded,
    Unknown,
    /// Not sent: over HTTP an absent key has no revision to match.
    NotAttempted,
}

/// The request never left (the connection could not be opened), or the
/// server said it never proposed it. The operation certainly did not happen
/// and is not recorded.
struct NotSent;

/// How a client reaches the store.
enum Transport {
    Http {
        endpoints: Vec<Arc<Endpoint>>,
        connection: Option<Connection>,
        headers: HeaderMap,
        tls: Option<TlsConnector>,
    },
    Resp {
        addresses: Vec<String>,
        /// Set when the endpoints are `rediss://`.
        tls: Option<TlsConnector>,
        connection: Option<RespConnection>,
        password: Option<String>,
    },
}

/// The address a `redis://HOST:PORT` (or `rediss://`, TLS) endpoint
/// names, if it is one.
pub fn resp_address(url: &str) -> Option<&str> {
    url.strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
        .map(|rest| rest.trim_end_matches('/'))
}

/// The connector for TLS endpoints, from `--cacert`; an error when one is
/// TLS and there is no CA file.
fn tls_for(secure: bool, options: &WorkloadOptions) -> Result<Option<TlsConnector>, String> {
    match (secure, &options.ca_file) {
        (false, _) => Ok(None),
        (true, Some(ca_file)) => crate::client::tls::connector(ca_file)
            .map(Some)
            .map_err(|error| error.to_string()),
        (true, None) => Err(
            "https:// and rediss:// endpoints need --cacert (the CA that signed the \
             server's certificate, or the certificate itself)"
                .into(),
        ),
    }
}

/// One client: its own connection to one endpoint (reopened after failures,
/// moving to the next endpoint of the same protocol).
pub struct Client {
    id: u64,
    transport: Transport,
    current: usize,
    timeout: Duration,
    written: u64,
    value_bytes: usize,
}

impl Client {
    /// A client over HTTP or RESP: with endpoints of both kinds, even client
    /// ids take HTTP and odd ones RESP.
    pub fn new(id: u64, options: &WorkloadOptions) -> Result<Client, String> {
        let (resp, http): (Vec<&String>, Vec<&String>) = options
            .endpoints
            .iter()
            .partition(|url| resp_address(url).is_some());
        let use_resp = !resp.is_empty() && (http.is_empty() || id % 2 == 1);
        let transport = if use_resp {
            let secure: Vec<bool> = resp
                .iter()
                .map(|url| url.starts_with("rediss://"))
                .collect();
            if secure.iter().any(|&tls| tls) && !secure.iter().all(|&tls| tls) {
                return Err("RESP endpoints must be all redis:// or all rediss://".into());
            }
            Transport::Resp {
                addresses: resp
                    .iter()
                    .filter_map(|url| resp_address(url).map(str::to_string))
                    .collect(),
                tls: tls_for(secure.iter().any(|&tls| tls), options)?,
                connection: None,
                password: options.token.clone(),
            }
        } else {
            let endpoints = http
                .iter()
                .map(|url| {
                    Endpoint::parse(url)
                        .map(Arc::new)
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<_>, _>>()?;
            if endpoints.is_empty() {
                return Err("no endpoints to drive".into());
            }
            let mut headers = HeaderMap::new();
            if let Some(token) = &options.token {
                let value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| "the token cannot be sent in a header".to_string())?;
                headers.insert(http::header::AUTHORIZATION, value);
            }
            let tls = tls_for(endpoints.iter().any(|endpoint| endpoint.is_tls()), options)?;
            Transport::Http {
                endpoints,
                connection: None,
                headers,
                tls,
            }
        };
        let count = match &transport {
            Transport::Http { endpoints, .. } => endpoints.len(),
            Transport::Resp { addresses, .. } => addresses.len(),
        };
        Ok(Client {
            id,
            current: id as usize % count.max(1),
            transport,
            timeout: options.request_timeout,
            written: 0,
            value_bytes: options.value_bytes,
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn endpoint(&self) -> String {
        match &self.transport {
            Transport::Http { endpoints, .. } => endpoints[self.current].url().to_string(),
            Transport::Resp { addresses, tls, .. } => {
                let scheme = if tls.is_some() { "rediss" } else { "redis" };
                format!("{scheme}://{}", addresses[self.current])
            }
        }
    }

    /// Moves to the next endpoint after a failure, pausing so as not to
    /// spin against a node that is down.
    async fn rotate(&mut self) {
        let count = match &self.transport {
            Transport::Http { endpoints, .. } => endpoints.len(),
            Transport::Resp { addresses, .. } => addresses.len(),
        };
        self.current = (self.current + 1) % count.max(1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        if_match: Option<u64>,
    ) -> Result<Answer, NotSent> {
        let Transport::Http {
            endpoints,
            connection,
            headers,
            tls,
        } = &mut self.transport
        else {
            return Err(NotSent);
        };
        let endpoint = endpoints[self.current].clone();
        let mut open = match connection.take() {
            Some(connection) if connection.is_open() => connection,
            _ => match tokio::time::timeout(
                self.timeout,
                Connection::open(endpoint.clone(), tls.as_ref()),
            )
            .await
            {
                Ok(Ok(connection)) => connection,
                _ => {
                    self.rotate().await;
                    return Err(NotSent);
                }
            },
        };
        let mut headers = headers.clone();
        if let Some(revision) = if_match {
            headers.insert(
                http::header::IF_MATCH,
                HeaderValue::from_str(&format!("\"{revision}\"")).map_err(|_| NotSent)?,
            );
        }
        let target = endpoint.target(path);
        let sent = open.send(method, &target, &headers, body);
        match tokio::time::timeout(self.timeout, sent).await {
            Ok(Ok(response)) if response.says_nothing_applied() => {
                // The server says it never proposed the request. That is
                // taken at its word: the operation is left out of the
                // history, so were it applied after all, a read would find
                // a value no recorded write made.
                self.rotate().await;
                Err(NotSent)
            }
            Ok(Ok(response)) if !response.status.is_server_error() => {
                let revision = response.revision();
                *connection = Some(open);
                Ok(Some((response.status, response.body, revision)))
            }
            _ => {
                // Another node may be reachable; this one failed or timed out.
                self.rotate().await;
                Ok(None)
            }
        }
    }

    /// Sends RESP commands pipelined; `None` when they were not sent or
    /// their outcome is unknown (for workloads to which the two are alike).
    /// A failed call drops the connection, so the next one starts on a
    /// fresh connection: a WATCH never carries over to it.
    pub(super) async fn resp_pipeline(&mut self, commands: &[&[&[u8]]]) -> Option<Vec<RespValue>> {
        self.resp_call(commands).await.ok().flatten()
    }

    /// Sends RESP commands pipelined; `Ok(None)` when the outcome is unknown.
    async fn resp_call(
        &mut self,
        commands: &[&[&[u8]]],
    ) -> Result<Option<Vec<RespValue>>, NotSent> {
        self.resp_call_answering(commands, |_| false).await
    }

    /// As [`Client::resp_call`], but an error reply that `answers` accepts is
    /// the command's definite answer, not an unknown outcome.
    async fn resp_call_answering(
        &mut self,
        commands: &[&[&[u8]]],
        answers: fn(&str) -> bool,
    ) -> Result<Option<Vec<RespValue>>, NotSent> {
        let Transport::Resp {
            addresses,
            tls,
            connection,
            password,
        } = &mut self.transport
        else {
            return Err(NotSent);
        };
        let mut open = match connection.take() {
            Some(open) => open,
            None => {
                let address = addresses[self.current].clone();
                let connect = RespConnection::connect(&address, password.as_deref(), tls.as_ref());
                match tokio::time::timeout(self.timeout, connect).await {
                    Ok(Ok(open)) => open,
                    _ => {
                        self.rotate().await;
                        return Err(NotSent);
                    }
                }
            }
        };
        match open.call_within(self.timeout, commands).await {
            Ok(replies) if !replies.iter().any(|reply| has_error(reply, answers)) => {
                *connection = Some(open);
                Ok(Some(replies))
            }
            _ => {
                self.rotate().await;
                Ok(None)
            }
        }
    }

    async fn read(&mut self, key: &str) -> Result<ReadResult, NotSent> {
        if matches!(self.transport, Transport::Resp { .. }) {
            let replies = self.resp_call(&[&[b"GET", key.as_bytes()]]).await?;
            return Ok(match replies.as_deref() {
                Some([RespValue::Bulk(Some(value))]) => {
                    Some((Some(String::from_utf8_lossy(value).into_owned()), None))
                }
                Some([RespValue::Bulk(None)]) => Some((None, None)),
                _ => None,
            });
        }
        let answer = self
            .exchange(Method::GET, &format!("/kv/{key}"), Bytes::new(), None)
            .await?;
        Ok(match answer {
            Some((StatusCode::OK, body, revision)) => {
                Some((Some(String::from_utf8_lossy(&body).into_owned()), revision))
            }
            Some((StatusCode::NOT_FOUND, _, _)) => Some((None, None)),
            _ => None,
        })
    }

    /// Puts `value` (deletes for `None`); `Some(revision)` once acknowledged.
    async fn write(
        &mut self,
        key: &str,
        value: Option<&str>,
    ) -> Result<Option<Option<u64>>, NotSent> {
        if matches!(self.transport, Transport::Resp { .. }) {
            let replies = match value {
                Some(value) => {
                    self.resp_call(&[&[b"SET", key.as_bytes(), value.as_bytes()]])
                        .await?
                }
                None => self.resp_call(&[&[b"DEL", key.as_bytes()]]).await?,
            };
            let known = matches!(
                replies.as_deref(),
                Some([RespValue::Simple(_)] | [RespValue::Integer(_)])
            );
            return Ok(known.then_some(None));
        }
        let path = format!("/kv/{key}");
        let answer = match value {
            Some(value) => {
                let body = Bytes::copy_from_slice(value.as_bytes());
                self.exchange(Method::PUT, &path, body, None).await?
            }
            None => {
                self.exchange(Method::DELETE, &path, Bytes::new(), None)
                    .await?
            }
        };
        Ok(match answer {
            Some((StatusCode::OK, _, revision)) => Some(revision),
            _ => None,
        })
    }

    /// Over RESP, WATCHes the key before the read a compare-and-swap is
    /// based on; false when that failed.
    async fn prepare_cas(&mut self, key: &str) -> Result<bool, NotSent> {
        if matches!(self.transport, Transport::Http { .. }) {
            return Ok(true);
        }
        let replies = self.resp_call(&[&[b"WATCH", key.as_bytes()]]).await?;
        Ok(matches!(replies.as_deref(), Some([RespValue::Simple(_)])))
    }

    async fn cas(
        &mut self,
        key: &str,
        revision: Option<u64>,
        value: &str,
    ) -> Result<CasOutcome, NotSent> {
        if matches!(self.transport, Transport::Resp { .. }) {
            let replies = self
                .resp_call(&[
                    &[b"MULTI"],
                    &[b"SET", key.as_bytes(), value.as_bytes()],
                    &[b"EXEC"],
                ])
                .await?;
            return Ok(match replies.as_deref() {
                Some([_, _, RespValue::Array(Some(_))]) => CasOutcome::Applied(None),
                Some([_, _, RespValue::Array(None)]) => CasOutcome::RefusedUnrecorded,
                _ => CasOutcome::Unknown,
            });
        }
        let Some(revision) = revision else {
            return Ok(CasOutcome::NotAttempted);
        };
        let body = Bytes::copy_from_slice(value.as_bytes());
        let path = format!("/kv/{key}");
        Ok(
            match self
                .exchange(Method::PUT, &path, body, Some(revision))
                .await?
            {
                Some((StatusCode::OK, _, revision)) => CasOutcome::Applied(revision),
                Some((StatusCode::PRECONDITION_FAILED, _, current)) => CasOutcome::Refused(current),
                _ => CasOutcome::Unknown,
            },
        )
    }

    fn next_value(&mut self) -> String {
        self.written += 1;
        let tag = format!("c{}-{}", self.id, self.written);
        if tag.len() >= self.value_bytes {
            return tag;
        }
        format!("{tag}-{}", "x".repeat(self.value_bytes - tag.len() - 1))
    }

    /// Runs one operation of `kind` on `key` and returns what was recorded
    /// (a CAS records its read too). HTTP has no increment, so there an
    /// increment is a read of the counter.
    pub async fn run_one(
        &mut self,
        recorder: &Recorder,
        kind: OpKind,
        key: &str,
    ) -> Vec<Operation> {
        let resp = matches!(self.transport, Transport::Resp { .. });
        let mut recorded = Vec::new();
        if kind == OpKind::Get || (kind == OpKind::Incr && !resp) {
            recorded.extend(self.get(recorder, key).await.map(|(read, _)| read));
        } else if kind == OpKind::Incr {
            let invoked = recorder.now_ns();
            if let Ok(answer) = self.incr(key).await {
                let action = Action::Incr {
                    value: answer.flatten(),
                };
                // RESP reports no revision.
                let answer = answer.map(|_| None);
                recorded.push(self.record(recorder, key, action, invoked, answer));
            }
        } else if kind == OpKind::Put || kind == OpKind::Delete {
            let value = (kind == OpKind::Put).then(|| self.next_value());
            let invoked = recorder.now_ns();
            if let Ok(answer) = self.write(key, value.as_deref()).await {
                let action = match value {
                    Some(value) => Action::Put { value },
                    None => Action::Delete,
                };
                recorded.push(self.record(recorder, key, action, invoked, answer));
            }
        } else {
            // Over RESP the value is read before and after WATCH: walrus's
            // WATCH of an absent key guards "absent at EXEC" (a key created
            // and deleted again in between does not fail EXEC, unlike Redis),
            // so a value read after WATCH alone may not be what EXEC's guard
            // checked. Values are unique per write, so two equal reads mean
            // the key held that value throughout, WATCH included.
            let before_watch = if resp {
                let Some((read, _)) = self.get(recorder, key).await else {
                    return recorded;
                };
                let value = match &read.action {
                    Action::Get { value } if read.completed_ns.is_some() => value.clone(),
                    _ => {
                        recorded.push(read);
                        return recorded;
                    }
                };
                recorded.push(read);
                Some(value)
            } else {
                None
            };
            if !matches!(self.prepare_cas(key).await, Ok(true)) {
                return recorded;
            }
            let Some((read, revision)) = self.get(recorder, key).await else {
                return recorded;
            };
            let expected = match &read.action {
                Action::Get { value } if read.completed_ns.is_some() => value.clone(),
                _ => {
                    recorded.push(read);
                    return recorded;
                }
            };
            recorded.push(read);
            if before_watch.is_some_and(|before| before != expected) {
                let _ = self.resp_call(&[&[b"UNWATCH"]]).await;
                return recorded;
            }
            let value = self.next_value();
            let invoked = recorder.now_ns();
            let Ok(outcome) = self.cas(key, revision, &value).await else {
                return recorded;
            };
            let (succeeded, answer) = match outcome {
                CasOutcome::Applied(revision) => (true, Some(revision)),
                CasOutcome::Refused(current) => (false, Some(current)),
                CasOutcome::Unknown => (false, None),
                CasOutcome::RefusedUnrecorded | CasOutcome::NotAttempted => return recorded,
            };
            let action = Action::Cas {
                expected,
                value,
                succeeded,
            };
            recorded.push(self.record(recorder, key, action, invoked, answer));
        }
        recorded
    }

    /// INCR over RESP: `Some(Some(n))` for the new value, `Some(None)` when
    /// the server answered that the key holds no integer, `None` when the
    /// outcome is unknown.
    async fn incr(&mut self, key: &str) -> Result<Option<Option<i64>>, NotSent> {
        let replies = self
            .resp_call_answering(&[&[b"INCR", key.as_bytes()]], is_not_an_integer)
            .await?;
        Ok(match replies.as_deref() {
            Some([RespValue::Integer(value)]) => Some(Some(*value)),
            Some([RespValue::Error(error)]) if is_not_an_integer(error) => Some(None),
            _ => None,
        })
    }

    async fn get(&mut self, recorder: &Recorder, key: &str) -> Option<(Operation, Option<u64>)> {
        let invoked = recorder.now_ns();
        let answer = self.read(key).await.ok()?;
        let completed = recorder.now_ns();
        let known = answer.is_some();
        let (value, revision) = answer.unwrap_or((None, None));
        if !known {
            recorder.unknown.fetch_add(1, Ordering::Relaxed);
        }
        recorder.done.fetch_add(1, Ordering::Relaxed);
        let operation = Operation {
            client: self.id,
            key: key.to_string(),
            action: Action::Get { value },
            invoked_ns: invoked,
            completed_ns: known.then_some(completed),
            revision,
            endpoint: self.endpoint(),
        };
        Some((operation, revision))
    }

    /// Records a write whose answer was `Some(revision)` when known.
    fn record(
        &self,
        recorder: &Recorder,
        key: &str,
        action: Action,
        invoked: u64,
        answer: Option<Option<u64>>,
    ) -> Operation {
        let completed = recorder.now_ns();
        recorder.done.fetch_add(1, Ordering::Relaxed);
        if answer.is_none() {
            recorder.unknown.fetch_add(1, Ordering::Relaxed);
        }
        Operation {
            client: self.id,
            key: key.to_string(),
            action,
            invoked_ns: invoked,
            completed_ns: answer.is_some().then_some(completed),
            revision: answer.flatten(),
            endpoint: self.endpoint(),
        }
    }
}

/// Whether a reply carries an error (`-CLUSTERDOWN` without a quorum, a
/// store failure) other than one `answers` accepts: like an HTTP 5xx, the
/// command's outcome is unknown.
fn has_error(reply: &RespValue, answers: fn(&str) -> bool) -> bool {
    match reply {
        RespValue::Error(error) => !answers(error),
        RespValue::Array(Some(items)) => items.iter().any(|item| has_error(item, answers)),
        _ => false,
    }
}

/// INCR's definite refusal: the key holds something that is not an integer.
fn is_not_an_integer(error: &str) -> bool {
    error.starts_with("ERR value is not an integer")
}

/// Client `id`'s random source: the same for the same seed, another per client.
pub(super) fn client_rng(seed: u64, id: u64) -> StdRng {
    StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(id))
}

/// Whether a client goes on: before `deadline`, and under the run's bound on
/// operations.
pub(super) fn goes_on(deadline: Instant, recorder: &Recorder, options: &WorkloadOptions) -> bool {
    Instant::now() < deadline && recorder.done.load(Ordering::Relaxed) < options.max_operations
}

/// The client that reads through endpoint number `index` alone after the
/// faults have healed, with at least 5 s per request.
pub(super) fn final_reader(
    options: &WorkloadOptions,
    index: usize,
    url: &str,
) -> Result<Client, String> {
    let single = WorkloadOptions {
        endpoints: vec![url.to_string()],
        request_timeout: options.request_timeout.max(Duration::from_secs(5)),
        ..options.clone()
    };
    Client::new(FINAL_READER_IDS + index as u64, &single)
}

/// Final readers' client ids start here, clear of the workload's.
const FINAL_READER_IDS: u64 = 1_000_000;

/// Runs the clients until the duration or the operation bound is reached.
pub async fn run(
    options: &WorkloadOptions,
    recorder: Arc<Recorder>,
) -> Result<Vec<Operation>, String> {
    let deadline = Instant::now() + options.duration;
    let keys = KeySpace::new(options.keys, options.mix);
    let mut tasks = Vec::new();
    for id in 0..options.clients {
        let mut client = Client::new(id, options)?;
        let recorder = recorder.clone();
        let options = options.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = client_rng(options.seed, id);
            let mut history = Vec::new();
            while goes_on(deadline, &recorder, &options) {
                let kind = options.mix.pick(&mut rng);
                let key = keys.pick(kind, &mut rng);
                history.extend(client.run_one(&recorder, kind, &key).await);
            }
            history
        }));
    }
    let mut history = Vec::new();
    for task in tasks {
        history.extend(task.await.map_err(|error| error.to_string())?);
    }
    Ok(history)
}

/// Reads every key from every endpoint, one after another, after the faults
/// have healed: these reads join the history (each must be linearizable too)
/// and show whether the nodes agree.
pub async fn final_reads(
    options: &WorkloadOptions,
    recorder: &Recorder,
) -> Result<Vec<Operation>, String> {
    let mut reads = Vec::new();
    for (index, url) in options.endpoints.iter().enumerate() {
        let mut client = final_reader(options, index, url)?;
        for key in KeySpace::new(options.keys, options.mix).all() {
            let read = match client.get(recorder, &key).await {
                Some((read, _)) => read,
                // The node is down: an unanswered final read.
                None => Operation {
                    client: client.id(),
                    key: key.clone(),
                    action: Action::Get { value: None },
                    invoked_ns: recorder.now_ns(),
                    completed_ns: None,
                    revision: None,
                    endpoint: url.clone(),
                },
            };
            reads.push(read);
        }
    }
    Ok(reads)
}
