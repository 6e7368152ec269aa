//! The workload: clients issuing gets, puts, deletes and compare-and-swaps
//! over HTTP against a node or a cluster, each operation recorded with the
//! times it was sent and answered.
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

use super::checker::{Action, Operation};
use crate::client::connection::Connection;
use crate::client::endpoint::Endpoint;

/// Relative weights of the operations.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub get: u32,
    pub put: u32,
    pub delete: u32,
    pub cas: u32,
}

impl std::str::FromStr for Mix {
    type Err = String;

    /// `GET:PUT:DELETE:CAS`, e.g. `4:3:1:2`.
    fn from_str(text: &str) -> Result<Mix, String> {
        let parts: Vec<u32> = text
            .split(':')
            .map(|part| part.trim().parse::<u32>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("{text:?}: expected GET:PUT:DELETE:CAS weights, e.g. 4:3:1:2"))?;
        let [get, put, delete, cas] = parts[..] else {
            return Err(format!(
                "{text:?}: expected four weights, GET:PUT:DELETE:CAS"
            ));
        };
        if get + put + delete + cas == 0 {
            return Err("at least one weight must be above zero".into());
        }
        Ok(Mix {
            get,
            put,
            delete,
            cas,
        })
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

/// The request never left: the connection could not be opened. The
/// operation certainly did not happen and is not recorded.
struct NotSent;

/// One client: its own connection to one endpoint (reopened after failures).
pub struct Client {
    id: u64,
    endpoints: Vec<Arc<Endpoint>>,
    current: usize,
    connection: Option<Connection>,
    headers: HeaderMap,
    timeout: Duration,
    written: u64,
    value_bytes: usize,
}

impl Client {
    pub fn new(id: u64, options: &WorkloadOptions) -> Result<Client, String> {
        let endpoints = options
            .endpoints
            .iter()
            .map(|url| {
                Endpoint::parse(url)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut headers = HeaderMap::new();
        if let Some(token) = &options.token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "the token cannot be sent in a header".to_string())?;
            headers.insert(http::header::AUTHORIZATION, value);
        }
        Ok(Client {
            id,
            current: id as usize % endpoints.len().max(1),
            endpoints,
            connection: None,
            headers,
            timeout: options.request_timeout,
            written: 0,
            value_bytes: options.value_bytes,
        })
    }

    pub fn endpoint(&self) -> &str {
        self.endpoints[self.current].url()
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        if_match: Option<u64>,
    ) -> Result<Answer, NotSent> {
        let endpoint = self.endpoints[self.current].clone();
        let mut connection = match self.connection.take() {
            Some(connection) if connection.is_open() => connection,
            _ => match tokio::time::timeout(self.timeout, Connection::open(endpoint.clone(), None))
                .await
            {
                Ok(Ok(connection)) => connection,
                _ => {
                    self.current = (self.current + 1) % self.endpoints.len();
                    // Do not spin against a node that is down.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    return Err(NotSent);
                }
            },
        };
        let mut headers = self.headers.clone();
        if let Some(revision) = if_match {
            headers.insert(
                http::header::IF_MATCH,
                HeaderValue::from_str(&format!("\"{revision}\"")).map_err(|_| NotSent)?,
            );
        }
        let target = endpoint.target(path);
        let sent = connection.send(method, &target, &headers, body);
        match tokio::time::timeout(self.timeout, sent).await {
            Ok(Ok(response)) if !response.status.is_server_error() => {
                let revision = response.revision();
                self.connection = Some(connection);
                Ok(Some((response.status, response.body, revision)))
            }
            _ => {
                // Another node may be reachable; this one failed or timed out.
                self.current = (self.current + 1) % self.endpoints.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(None)
            }
        }
    }

    fn next_value(&mut self) -> String {
        self.written += 1;
        let tag = format!("c{}-{}", self.id, self.written);
        if tag.len() >= self.value_bytes {
            return tag;
        }
        format!("{tag}-{}", "x".repeat(self.value_bytes - tag.len() - 1))
    }

    /// Runs one operation on `key` and returns what was recorded (a CAS
    /// records its read too).
    pub async fn run_one(
        &mut self,
        recorder: &Recorder,
        rng: &mut StdRng,
        mix: Mix,
        key: &str,
    ) -> Vec<Operation> {
        let path = format!("/kv/{key}");
        let total = mix.get + mix.put + mix.delete + mix.cas;
        let pick = rng.random_range(0..total);
        let mut recorded = Vec::new();
        if pick < mix.get {
            recorded.extend(self.get(recorder, key, &path).await.map(|(read, _)| read));
        } else if pick < mix.get + mix.put + mix.delete {
            let (method, body, action) = if pick < mix.get + mix.put {
                let value = self.next_value();
                (
                    Method::PUT,
                    Bytes::from(value.clone()),
                    Action::Put { value },
                )
            } else {
                (Method::DELETE, Bytes::new(), Action::Delete)
            };
            let invoked = recorder.now_ns();
            if let Ok(answer) = self.exchange(method, &path, body, None).await {
                recorded.push(self.finish(
                    recorder,
                    key,
                    action,
                    invoked,
                    answer,
                    &[StatusCode::OK],
                ));
            }
        } else {
            let Some((read, revision)) = self.get(recorder, key, &path).await else {
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
            // A CAS needs a revision to match; an absent key has none over
            // HTTP, so that read stands alone.
            let Some(revision) = revision else {
                return recorded;
            };
            let value = self.next_value();
            let invoked = recorder.now_ns();
            let Ok(answer) = self
                .exchange(
                    Method::PUT,
                    &path,
                    Bytes::from(value.clone()),
                    Some(revision),
                )
                .await
            else {
                return recorded;
            };
            let succeeded = matches!(answer, Some((StatusCode::OK, _, _)));
            let action = Action::Cas {
                expected,
                value,
                succeeded,
            };
            recorded.push(self.finish(
                recorder,
                key,
                action,
                invoked,
                answer,
                &[StatusCode::OK, StatusCode::PRECONDITION_FAILED],
            ));
        }
        recorded
    }

    async fn get(
        &mut self,
        recorder: &Recorder,
        key: &str,
        path: &str,
    ) -> Option<(Operation, Option<u64>)> {
        let invoked = recorder.now_ns();
        let answer = self
            .exchange(Method::GET, path, Bytes::new(), None)
            .await
            .ok()?;
        let completed = recorder.now_ns();
        let (value, revision, known) = match &answer {
            Some((StatusCode::OK, body, revision)) => (
                Some(String::from_utf8_lossy(body).into_owned()),
                *revision,
                true,
            ),
            Some((StatusCode::NOT_FOUND, _, _)) => (None, None, true),
            _ => (None, None, false),
        };
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
            endpoint: self.endpoint().to_string(),
        };
        Some((operation, revision))
    }

    fn finish(
        &self,
        recorder: &Recorder,
        key: &str,
        action: Action,
        invoked: u64,
        answer: Answer,
        expected: &[StatusCode],
    ) -> Operation {
        let completed = recorder.now_ns();
        recorder.done.fetch_add(1, Ordering::Relaxed);
        let known = answer
            .as_ref()
            .is_some_and(|(status, _, _)| expected.contains(status));
        if !known {
            recorder.unknown.fetch_add(1, Ordering::Relaxed);
        }
        Operation {
            client: self.id,
            key: key.to_string(),
            action,
            invoked_ns: invoked,
            completed_ns: known.then_some(completed),
            revision: answer.and_then(|(_, _, revision)| revision),
            endpoint: self.endpoint().to_string(),
        }
    }
}

/// Runs the clients until the duration or the operation bound is reached.
pub async fn run(
    options: &WorkloadOptions,
    recorder: Arc<Recorder>,
) -> Result<Vec<Operation>, String> {
    let deadline = Instant::now() + options.duration;
    let mut tasks = Vec::new();
    for id in 0..options.clients {
        let mut client = Client::new(id, options)?;
        let recorder = recorder.clone();
        let options = options.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng =
                StdRng::seed_from_u64(options.seed.wrapping_mul(1_000_003).wrapping_add(id));
            let mut history = Vec::new();
            while Instant::now() < deadline
                && recorder.done.load(Ordering::Relaxed) < options.max_operations
            {
                let key = format!("verify-{}", rng.random_range(0..options.keys.max(1)));
                history.extend(client.run_one(&recorder, &mut rng, options.mix, &key).await);
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
        let single = WorkloadOptions {
            endpoints: vec![url.clone()],
            request_timeout: options.request_timeout.max(Duration::from_secs(5)),
            ..options.clone()
        };
        let mut client = Client::new(1_000_000 + index as u64, &single)?;
        for key in 0..options.keys {
            let key = format!("verify-{key}");
            let path = format!("/kv/{key}");
            let read = match client.get(recorder, &key, &path).await {
                Some((read, _)) => read,
                // The node is down: an unanswered final read.
                None => Operation {
                    client: 1_000_000 + index as u64,
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
