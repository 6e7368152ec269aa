//! `walrus verify` end to end: it passes on a healthy node and on a 3-node
//! cluster under faults, with the register and the bank workloads, and it
//! fails against deliberately broken servers (one that acknowledges writes
//! before it makes them; one whose transactions and reads are torn).

use std::collections::HashMap;
use std::convert::Infallible;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;

fn verify(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_walrus"))
        .arg("verify")
        .args(args)
        .output()
        .expect("run walrus verify");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn verify_passes_on_a_single_node_killed_and_paused() {
    let (passed, text) = verify(&[
        "--dev-cluster",
        "1",
        "--nemesis",
        "kill,pause",
        "--duration",
        "5",
        "--fault-interval-ms",
        "1500",
        "--fault-hold-ms",
        "700",
    ]);
    assert!(passed, "{text}");
    assert!(text.contains("verdict: PASS"), "{text}");
}

#[test]
fn verify_passes_on_a_three_node_cluster_under_kill_pause_and_restart_all() {
    let report = tempfile::tempdir().expect("temp dir");
    let report_dir = report.path().join("report");
    let (passed, text) = verify(&[
        "--dev-cluster",
        "3",
        "--nemesis",
        "kill,pause,restart-all",
        "--duration",
        "10",
        "--fault-interval-ms",
        "2500",
        "--fault-hold-ms",
        "1200",
        "--json",
        "--report",
        report_dir.to_str().expect("utf-8 path"),
    ]);
    assert!(passed, "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON report");
    assert_eq!(json["passed"], true);
    assert!(
        json["faults"].as_array().expect("faults").len() >= 2,
        "{text}"
    );
    assert!(report_dir.join("history.jsonl").exists());
}

/// The partition shapes of the peer transport's fault switch, in turn: one
/// node cut off from the other two, two nodes cut apart with the third
/// reaching both (a bridge), one link cut one way, a node deaf to every
/// peer, and a node every peer is deaf to (the leader half the time for the
/// last two), while clients keep talking to every node.
#[test]
fn verify_passes_on_a_three_node_cluster_partitioned_away_bridged_and_cut_one_way() {
    let (passed, text) = verify(&[
        "--dev-cluster",
        "3",
        "--nemesis",
        "partition,bridge,one-way,deaf,mute",
        "--duration",
        "18",
        "--fault-interval-ms",
        "1500",
        "--fault-hold-ms",
        "1800",
        "--json",
    ]);
    assert!(passed, "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON report");
    let faults: Vec<&str> = json["faults"]
        .as_array()
        .expect("faults")
        .iter()
        .map(|fault| fault["fault"].as_str().expect("fault name"))
        .collect();
    for fault in ["partition", "bridge", "one-way", "deaf", "mute"] {
        assert!(faults.contains(&fault), "no {fault} fault: {text}");
    }
}

/// Membership changes under load: a node (the leader half the time) taken
/// out of the cluster, then added back as a learner and promoted, while
/// clients keep talking to every node, the one taken out included.
#[test]
fn verify_passes_on_a_three_node_cluster_while_nodes_leave_and_rejoin() {
    let (passed, text) = verify(&[
        "--dev-cluster",
        "3",
        "--nemesis",
        "member",
        "--duration",
        "10",
        "--fault-interval-ms",
        "2000",
        "--fault-hold-ms",
        "1000",
        "--json",
    ]);
    assert!(passed, "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON report");
    let changes = json["faults"]
        .as_array()
        .expect("faults")
        .iter()
        .filter(|fault| fault["fault"] == "member")
        .count();
    assert!(changes >= 2, "{text}");
}

#[test]
fn verify_refuses_a_partition_too_small_for_its_shape() {
    let (passed, text) = verify(&["--dev-cluster", "1", "--nemesis", "partition"]);
    assert!(!passed);
    assert!(
        text.contains("a partition fault needs at least 2 nodes"),
        "{text}"
    );
    let (passed, text) = verify(&["--dev-cluster", "2", "--nemesis", "kill,bridge"]);
    assert!(!passed);
    assert!(
        text.contains("a bridge fault needs at least 3 nodes"),
        "{text}"
    );
    let (passed, text) = verify(&["--dev-cluster", "1", "--nemesis", "member"]);
    assert!(!passed);
    assert!(
        text.contains("a member fault needs at least 2 nodes"),
        "{text}"
    );
}

/// A key-value server that answers a PUT at once but applies it 150 ms later:
/// an acknowledged write that a following read does not see.
async fn broken_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let map: Arc<Mutex<HashMap<String, (Bytes, u64)>>> = Arc::default();
    let revision = Arc::new(Mutex::new(0u64));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let map = map.clone();
            let revision = revision.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let map = map.clone();
                    let revision = revision.clone();
                    async move {
                        let key = request.uri().path().to_string();
                        let method = request.method().clone();
                        let body = request
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let response = match method {
                            hyper::Method::GET => match map.lock().get(&key) {
                                Some((value, rev)) => Response::builder()
                                    .header("etag", format!("\"{rev}\""))
                                    .body(Full::new(value.clone())),
                                None => Response::builder()
                                    .status(StatusCode::NOT_FOUND)
                                    .body(Full::new(Bytes::new())),
                            },
                            _ => {
                                let rev = {
                                    let mut revision = revision.lock();
                                    *revision += 1;
                                    *revision
                                };
                                let is_put = method == hyper::Method::PUT;
                                tokio::spawn(async move {
                                    tokio::time::sleep(Duration::from_millis(150)).await;
                                    let mut map = map.lock();
                                    if is_put {
                                        map.insert(key, (body, rev));
                                    } else {
                                        map.remove(&key);
                                    }
                                });
                                Response::builder()
                                    .header("etag", format!("\"{rev}\""))
                                    .body(Full::new(Bytes::new()))
                            }
                        };
                        Ok::<_, Infallible>(response.expect("response"))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

/// A short run of puts and gets on a few keys: enough against a broken
/// server to catch a stale read.
const SHORT_PUT_GET_RUN: [&str; 8] = [
    "--duration",
    "3",
    "--keys",
    "3",
    "--clients",
    "4",
    "--mix",
    "1:1:0:0",
];

#[test]
fn verify_fails_against_a_server_that_acknowledges_before_it_writes() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let address = runtime.block_on(broken_server());
    let report = tempfile::tempdir().expect("temp dir");
    let report_dir = report.path().join("report");
    let endpoint = format!("http://{address}");
    let output = std::thread::spawn(move || {
        let mut args = vec!["--endpoints", endpoint.as_str()];
        args.extend(SHORT_PUT_GET_RUN);
        args.extend(["--report", report_dir.to_str().expect("utf-8 path")]);
        verify(&args)
    })
    .join()
    .expect("verify thread");
    let (passed, text) = output;
    assert!(!passed, "verify must fail: {text}");
    assert!(text.contains("FAIL  linearizable"), "{text}");
    assert!(
        report.path().join("report/timeline.html").exists(),
        "a timeline of the failing key"
    );
    // A reader that leaves before the verdict (`walrus verify … | head`)
    // must not turn the failure into exit 0.
    let mut child = Command::new(env!("CARGO_BIN_EXE_walrus"))
        .args(["verify", "--endpoints", &format!("http://{address}")])
        .args(SHORT_PUT_GET_RUN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run walrus verify");
    drop(child.stdout.take());
    let status = child.wait().expect("exit");
    assert_eq!(
        status.code(),
        Some(1),
        "a failed verdict with stdout closed"
    );
    drop(runtime);
}

/// A Redis-protocol server that answers SET at once but applies it 150 ms
/// later, and reads from what it has applied: a stale read over RESP. Its
/// INCR is a read-modify-write outside the store; its WATCH guards nothing,
/// and its EXEC and MGET run their parts one at a time, letting others in
/// between: torn transactions and torn reads.
async fn broken_resp_server() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let map: Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>> = Arc::default();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let map = map.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                // The commands queued since MULTI, when one is open.
                let mut queued: Option<Vec<Vec<Vec<u8>>>> = None;
                loop {
                    let Ok(read) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..read]);
                    while let Ok(walrus::resp::Parsed::Request { args, consumed }) =
                        walrus::resp::parse_request(&buffer, &walrus::resp::Limits::default())
                    {
                        let args: Vec<Vec<u8>> = args
                            .into_iter()
                            .map(|range| buffer[range].to_vec())
                            .collect();
                        buffer.drain(..consumed);
                        if args.is_empty() {
                            continue;
                        }
                        let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
                        let reply = match (name.as_str(), queued.as_mut()) {
                            ("MULTI", _) => {
                                queued = Some(Vec::new());
                                b"+OK\r\n".to_vec()
                            }
                            ("EXEC", Some(_)) => {
                                let commands = queued.take().unwrap_or_default();
                                let mut reply = format!("*{}\r\n", commands.len()).into_bytes();
                                for command in commands {
                                    reply.extend(broken_answer(&map, &command).await);
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                }
                                reply
                            }
                            (_, Some(commands)) => {
                                commands.push(args);
                                b"+QUEUED\r\n".to_vec()
                            }
                            (_, None) => broken_answer(&map, &args).await,
                        };
                        if stream.write_all(&reply).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    address
}

/// [`broken_resp_server`]'s answer to one command outside MULTI.
async fn broken_answer(map: &Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>>, args: &[Vec<u8>]) -> Vec<u8> {
    fn bulk(value: Option<&Vec<u8>>) -> Vec<u8> {
        match value {
            Some(value) => {
                let mut reply = format!("${}\r\n", value.len()).into_bytes();
                reply.extend_from_slice(value);
                reply.extend_from_slice(b"\r\n");
                reply
            }
            None => b"$-1\r\n".to_vec(),
        }
    }
    let number = |key: &[u8]| {
        map.lock()
            .get(key)
            .and_then(|value| std::str::from_utf8(value).ok()?.parse().ok())
            .unwrap_or(0i64)
    };
    let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    match name.as_str() {
        "GET" => bulk(map.lock().get(&args[1])),
        "SET" => {
            let map = map.clone();
            let (key, value) = (args[1].clone(), args[2].clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                map.lock().insert(key, value);
            });
            b"+OK\r\n".to_vec()
        }
        "DEL" => {
            map.lock().remove(&args[1]);
            b":1\r\n".to_vec()
        }
        // Read, then write back one more a little later: a read-modify-write
        // outside the store, so two clients that read the same count both
        // answer the same new one, and an increment is lost.
        "INCR" => {
            let held = number(&args[1]);
            tokio::time::sleep(Duration::from_millis(5)).await;
            let next = held + 1;
            map.lock()
                .insert(args[1].clone(), next.to_string().into_bytes());
            format!(":{next}\r\n").into_bytes()
        }
        "INCRBY" | "DECRBY" => {
            let by: i64 = String::from_utf8_lossy(&args[2]).parse().unwrap_or(0);
            let by = if name == "DECRBY" { -by } else { by };
            let mut map = map.lock();
            let next = map
                .get(&args[1])
                .and_then(|value| std::str::from_utf8(value).ok()?.parse().ok())
                .unwrap_or(0i64)
                + by;
            map.insert(args[1].clone(), next.to_string().into_bytes());
            format!(":{next}\r\n").into_bytes()
        }
        "MSET" => {
            let mut map = map.lock();
            for pair in args[1..].chunks(2) {
                if let [key, value] = pair {
                    map.insert(key.clone(), value.clone());
                }
            }
            b"+OK\r\n".to_vec()
        }
        // One key at a time, others' writes landing in between.
        "MGET" => {
            let mut reply = format!("*{}\r\n", args.len() - 1).into_bytes();
            for key in &args[1..] {
                reply.extend(bulk(map.lock().get(key)));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            reply
        }
        // Accepted, and guarding nothing.
        "WATCH" | "UNWATCH" => b"+OK\r\n".to_vec(),
        _ => b"-ERR unknown command\r\n".to_vec(),
    }
}

/// `walrus verify --resp` against a fresh [`broken_resp_server`], with
/// `args` after it.
fn verify_broken_resp_server(args: &[&str]) -> (bool, String) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let address = runtime.block_on(broken_resp_server()).to_string();
    let mut all = vec!["--resp".to_string(), address];
    all.extend(args.iter().map(|arg| arg.to_string()));
    let result = std::thread::spawn(move || {
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        verify(&all)
    })
    .join()
    .expect("verify thread");
    drop(runtime);
    result
}

#[test]
fn verify_over_resp_fails_against_a_server_that_acknowledges_before_it_writes() {
    let (passed, text) = verify_broken_resp_server(&SHORT_PUT_GET_RUN);
    assert!(!passed, "verify must fail: {text}");
    assert!(text.contains("FAIL  linearizable"), "{text}");
}

#[test]
fn verify_catches_increments_lost_by_a_read_modify_write_outside_the_store() {
    let report = tempfile::tempdir().expect("temp dir");
    let report_dir = report.path().join("report");
    let (passed, text) = verify_broken_resp_server(&[
        "--duration",
        "3",
        "--keys",
        "2",
        "--clients",
        "4",
        "--mix",
        "1:0:0:0:3",
        "--json",
        "--report",
        report_dir.to_str().expect("utf-8 path"),
    ]);
    assert!(!passed, "verify must fail: {text}");
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON report");
    let failing: Vec<&str> = json["failing_keys"]
        .as_array()
        .expect("failing keys")
        .iter()
        .map(|key| key.as_str().expect("a key"))
        .collect();
    // The one counter key (two registers make one counter) lost increments.
    assert_eq!(failing, ["verify-n-0"], "{text}");
    let history = std::fs::read_to_string(report_dir.join("history.jsonl")).expect("history");
    let increments = history
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("an operation"))
        .filter(|op| op["action"]["kind"] == "incr" && op["action"]["value"].is_i64())
        .count();
    assert!(increments > 10, "{increments} increments answered: {text}");
}

#[test]
fn verify_bank_catches_torn_transactions_and_a_watch_that_guards_nothing() {
    let (passed, text) = verify_broken_resp_server(&[
        "--workload",
        "bank",
        "--duration",
        "3",
        "--keys",
        "3",
        "--clients",
        "6",
    ]);
    assert!(!passed, "verify must fail: {text}");
    assert!(text.contains("FAIL  bank total conserved"), "{text}");
    assert!(text.contains("FAIL  WATCH guards transfers"), "{text}");
    assert!(text.contains("PASS  bank made progress"), "{text}");
}

/// The bank over a 3-node cluster while nodes are killed, cut off, paused,
/// bridged and removed and added back: every transaction seen whole.
#[test]
fn verify_bank_passes_on_a_three_node_cluster_under_faults() {
    let (passed, text) = verify(&[
        "--workload",
        "bank",
        "--dev-cluster",
        "3",
        "--protocol",
        "resp",
        "--nemesis",
        "kill,partition,pause,bridge,member",
        "--keys",
        "5",
        "--duration",
        "18",
        "--fault-interval-ms",
        "1500",
        "--fault-hold-ms",
        "1000",
    ]);
    assert!(passed, "{text}");
    for check in [
        "PASS  bank total conserved",
        "PASS  WATCH guards transfers",
        "PASS  nodes agree after healing",
        "PASS  bank made progress",
    ] {
        assert!(text.contains(check), "{check}: {text}");
    }
    // Five kinds of fault, one every 2.5 s or so over 18 s: each at least once.
    for fault in ["Kill@", "Partition@", "Pause@", "Bridge@", "Member@"] {
        assert!(text.contains(fault), "{fault}: {text}");
    }
}

#[test]
fn verify_drives_a_running_node_over_http_and_resp_at_once() {
    let (server, _dir) = crate::server::Server::start_resp(&[]);
    let http = format!("http://{}", server.address);
    let resp = server.resp_address().to_string();
    let (passed, text) = verify(&[
        "--endpoints",
        &http,
        "--resp",
        &resp,
        "--duration",
        "3",
        "--json",
    ]);
    assert!(passed, "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON report");
    let endpoints = json["endpoints"].to_string();
    assert!(
        endpoints.contains("redis://") && endpoints.contains("http://"),
        "{endpoints}"
    );
}

#[test]
fn verify_drives_a_node_over_https_and_resp_over_tls() {
    let certs = tempfile::tempdir().expect("temp dir");
    let (_, cert, key) = crate::common::self_signed_certificate(certs.path());
    let (server, _dir) =
        crate::server::Server::start_resp(&["--tls-cert", &cert, "--tls-key", &key]);
    let https = format!("https://{}", server.address);
    let rediss = format!("rediss://{}", server.resp_address());

    let (passed, text) = verify(&["--endpoints", &https, "--resp", &rediss, "--duration", "2"]);
    assert!(!passed, "no CA file: refused, not run in the clear");
    assert!(text.contains("--cacert"), "{text}");

    let (passed, text) = verify(&[
        "--endpoints",
        &https,
        "--resp",
        &rediss,
        "--cacert",
        &cert,
        "--duration",
        "3",
        "--json",
    ]);
    assert!(passed, "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON report");
    let endpoints = json["endpoints"].to_string();
    assert!(
        endpoints.contains("rediss://") && endpoints.contains("https://"),
        "{endpoints}"
    );
    let operations = json["operations"].as_u64().unwrap_or(0);
    assert!(operations > 20, "the workload ran over TLS: {text}");
}
