//! `/raft/…` (peer messages) and `/cluster/…` (status and membership) on a
//! replicated node.
//!
//! Peer messages are postcard bodies up to [`MAX_PEER_BODY_BYTES`], accepted
//! only from nodes in the membership (by `X-Walrus-Node-Id`; the bearer token
//! is checked before this, as for every route). Membership changes answer
//! `200` once the change is committed; on a node that is not the leader they
//! get `503` naming the leader's address.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::app::App;
use super::path::parse_query;
use super::response::method_not_allowed;
use super::response::{HttpResponse, body, store_error, text};
use crate::raft::network::{MAX_PEER_BODY_BYTES, NODE_ID_HEADER, POSTCARD};
use crate::raft::{NodeId, PeerRefusal};

pub const RAFT_PREFIX: &str = "/raft/";
pub const CLUSTER_PREFIX: &str = "/cluster/";
pub const FAULT_PREFIX: &str = "/fault/";

const NO_CLUSTER: &str = "this node is not part of a cluster (start it with --node-id and --peers, \
     or grow a single store: `walrus cluster add-learner` sent to it)";

fn no_cluster() -> HttpResponse {
    text(StatusCode::NOT_FOUND, NO_CLUSTER)
}

fn no_cluster_error() -> crate::Error {
    crate::Error::InvalidArgument(NO_CLUSTER.into())
}

/// Serves `/raft/{message}`: the body is read (up to its bound) and handed to
/// [`ClusterNode::serve_peer_message`], which also judges the sender.
pub async fn raft(app: &App, message: &str, request: Request<Incoming>) -> HttpResponse {
    let Some(cluster) = app.node.cluster() else {
        return no_cluster();
    };
    if request.method() != Method::POST {
        return method_not_allowed("POST");
    }
    let sender = request
        .headers()
        .get(NODE_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<NodeId>().ok());
    // Refused senders are turned away before their body is read.
    if !cluster.accepts_peer(sender) {
        return refusal(PeerRefusal::NotMember);
    }
    let body = match Limited::new(request.into_body(), MAX_PEER_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("peer message body: {error}"),
            );
        }
    };
    let answer = match message {
        // Pub/Sub is the front ends' business, not Raft's: the node serves it.
        "publish" => app.node.serve_published(sender, false, &body),
        "spublish" => app.node.serve_published(sender, true, &body),
        _ => cluster.serve_peer_message(sender, message, &body).await,
    };
    match answer {
        Ok(answer) => super::response::body(StatusCode::OK, POSTCARD, Bytes::from(answer)),
        Err(refused) => refusal(refused),
    }
}

fn refusal(refused: PeerRefusal) -> HttpResponse {
    let status = match refused {
        PeerRefusal::NotMember => StatusCode::FORBIDDEN,
        PeerRefusal::Partitioned | PeerRefusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        PeerRefusal::BadBody(_) => StatusCode::BAD_REQUEST,
        PeerRefusal::SnapshotRejected(_) => StatusCode::CONFLICT,
        PeerRefusal::UnknownMessage => StatusCode::NOT_FOUND,
    };
    text(status, refused.to_string())
}

/// Why `address` cannot be a new member's, if it cannot: checked before a
/// membership change is proposed, since a member no one can reach holds up
/// the next change. It must be `HOST:PORT` ([`is_host_and_port`]), and the
/// host must resolve here, on the leader that will replicate to it.
async fn peer_address_refusal(address: &str) -> Option<String> {
    if !is_host_and_port(address) {
        return Some(format!(
            "addr={address:?} is not HOST:PORT (a host name or IP address, and a port from 1 to 65535)"
        ));
    }
    let resolved = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tokio::net::lookup_host(address),
    )
    .await;
    let resolves = match resolved {
        Ok(Ok(mut addresses)) => addresses.next().is_some(),
        _ => false,
    };
    (!resolves).then(|| format!("addr={address:?}: the host name does not resolve here"))
}

/// Whether `address` has the shape of a peer address: `HOST:PORT`, where
/// the host is a name, an IPv4 address or a bracketed IPv6 address.
fn is_host_and_port(address: &str) -> bool {
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|port| port > 0);
    let host_ok = match host.strip_prefix('[') {
        Some(bracketed) => bracketed
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            !host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_'))
        }
    };
    port_ok && host_ok
}

/// Serves `/cluster/{status,add-learner,promote,remove,transfer-leader}`. On a single
/// store, `add-learner` first makes it a cluster's only voter (see
/// `node::Node::add_learner`); the rest need a cluster member.
pub async fn cluster(app: &App, action: &str, request: Request<Incoming>) -> HttpResponse {
    let cluster = app.node.cluster();
    if cluster.is_none() && action != "add-learner" {
        return no_cluster();
    }
    let method = request.method().clone();
    let query = request.uri().query().unwrap_or("").to_string();
    let params = match parse_query(&query) {
        Ok(params) => params,
        Err(error) => return text(StatusCode::BAD_REQUEST, format!("query has {error}")),
    };
    let param = |name: &str| {
        params
            .get(name)
            .map(|value| String::from_utf8_lossy(value).into_owned())
    };
    let id = || param("id").and_then(|id| id.parse::<NodeId>().ok());
    let missing_id = || text(StatusCode::BAD_REQUEST, "id=NODE_ID (a number) is required");
    let member = || cluster.clone().ok_or_else(no_cluster_error);
    let result = match (action, method) {
        ("status", Method::GET | Method::HEAD) => {
            let Some(cluster) = &cluster else {
                return no_cluster();
            };
            return match serde_json::to_vec_pretty(&cluster.status()) {
                Ok(json) => body(StatusCode::OK, "application/json", Bytes::from(json)),
                Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
            };
        }
        ("status", _) => return method_not_allowed("GET, HEAD"),
        ("add-learner", Method::POST) => {
            let Some(id) = id() else {
                return missing_id();
            };
            let Some(address) = param("addr") else {
                return text(StatusCode::BAD_REQUEST, "addr=HOST:PORT is required");
            };
            if let Some(refusal) = peer_address_refusal(&address).await {
                return text(StatusCode::BAD_REQUEST, refusal);
            }
            app.node.add_learner(id, address).await
        }
        ("promote", Method::POST) => match id() {
            Some(id) => match member() {
                Ok(cluster) => cluster.promote(id).await,
                Err(error) => Err(error),
            },
            None => return missing_id(),
        },
        ("remove", Method::POST) => match id() {
            Some(id) => match member() {
                Ok(cluster) => cluster.remove(id).await,
                Err(error) => Err(error),
            },
            None => return missing_id(),
        },
        ("transfer-leader", Method::POST) => match id() {
            Some(id) => match member() {
                Ok(cluster) => cluster.transfer_leader(id).await,
                Err(error) => Err(error),
            },
            None => return missing_id(),
        },
        ("add-learner" | "promote" | "remove" | "transfer-leader", _) => {
            return method_not_allowed("POST");
        }
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                "cluster routes: /cluster/status, /cluster/add-learner?id=&addr=, \
                 /cluster/promote?id=, /cluster/remove?id=, /cluster/transfer-leader?id=",
            );
        }
    };
    match result {
        Ok(()) => text(StatusCode::OK, "ok"),
        Err(error) => store_error(&error),
    }
}

/// Serves `/fault/…`, only on a node started with `--enable-fault-injection`:
/// `POST /fault/clock?advance_ms=N` moves the expiry clock forward (`GET`
/// tells the offset), on any node; on a cluster node `POST
/// /fault/partition?isolate=2,3` cuts this node off from those peers (both
/// directions), `POST /fault/heal` restores every link, `GET /fault/status`
/// lists the peers cut.
pub async fn fault(app: &App, action: &str, request: Request<Incoming>) -> HttpResponse {
    if !app.config.fault_injection {
        return text(
            StatusCode::NOT_FOUND,
            "fault injection is off: it exists only on a node started with \
             --enable-fault-injection (for tests, never in production)",
        );
    }
    if action == "clock" {
        return fault_clock(&request);
    }
    let cluster = app.node.cluster();
    let Some(faults) = cluster.as_ref().and_then(|cluster| cluster.faults()) else {
        return text(
            StatusCode::NOT_FOUND,
            "the partition switch exists only on a cluster node (--node-id)",
        );
    };
    let method = request.method().clone();
    match (action, method) {
        ("partition", Method::POST) => {
            let query = request.uri().query().unwrap_or("");
            let params = parse_query(query).ok().unwrap_or_default();
            let ids = |name: &str| {
                params.get(name).map(|value| {
                    String::from_utf8_lossy(value)
                        .split(',')
                        .map(|id| id.trim().parse::<NodeId>().ok())
                        .collect::<Option<Vec<_>>>()
                })
            };
            match (ids("isolate"), ids("refuse_from")) {
                (Some(Some(peers)), None) => {
                    faults.isolate(peers);
                    text(StatusCode::OK, "ok")
                }
                (None, Some(Some(peers))) => {
                    faults.refuse_from(peers);
                    text(StatusCode::OK, "ok")
                }
                _ => text(
                    StatusCode::BAD_REQUEST,
                    "one of isolate=ID[,ID…] (cut both ways) or refuse_from=ID[,ID…] \
                     (refuse what those nodes send) is required",
                ),
            }
        }
        ("heal", Method::POST) => {
            faults.heal();
            text(StatusCode::OK, "ok")
        }
        ("status", Method::GET | Method::HEAD) => {
            let list =
                |ids: Vec<NodeId>| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            text(
                StatusCode::OK,
                format!(
                    "cut: {}\nrefused: {}",
                    list(faults.cut()),
                    list(faults.refused())
                ),
            )
        }
        ("partition" | "heal", _) => method_not_allowed("POST"),
        ("status", _) => method_not_allowed("GET, HEAD"),
        _ => text(
            StatusCode::NOT_FOUND,
            "fault routes: POST /fault/clock?advance_ms=N, POST /fault/partition?isolate=ID,… \
             or ?refuse_from=ID,…, POST /fault/heal, GET /fault/status",
        ),
    }
}

/// `/fault/clock`: moves the expiry clock forward, or tells how far it was.
fn fault_clock(request: &Request<Incoming>) -> HttpResponse {
    match request.method() {
        &Method::POST => {
            let advance = parse_query(request.uri().query().unwrap_or(""))
                .ok()
                .and_then(|params| params.get("advance_ms").cloned())
                .and_then(|value| String::from_utf8_lossy(&value).parse::<u64>().ok());
            match advance {
                Some(ms) => text(
                    StatusCode::OK,
                    format!("offset_ms: {}", crate::clock::advance(ms)),
                ),
                None => text(
                    StatusCode::BAD_REQUEST,
                    "advance_ms=N (milliseconds, the clock only moves forward) is required",
                ),
            }
        }
        &Method::GET | &Method::HEAD => text(
            StatusCode::OK,
            format!("offset_ms: {}", crate::clock::offset_ms()),
        ),
        _ => method_not_allowed("POST, GET, HEAD"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn peer_addresses_are_host_and_port() {
        for good in [
            "127.0.0.1:7001",
            "node-2.example:8080",
            "[::1]:9000",
            "n_1:1",
        ] {
            assert!(super::is_host_and_port(good), "{good}");
        }
        for bad in [
            "notanaddr",
            "nohost:",
            ":80",
            "h:0",
            "h:70000",
            "http://h:1",
            "a b:1",
            "[::1:9000",
            "[x]:1",
        ] {
            assert!(!super::is_host_and_port(bad), "{bad}");
        }
    }
}
