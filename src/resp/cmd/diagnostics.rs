//! What an operator asks a server about itself and its replicas: SLOWLOG,
//! LATENCY, ROLE, WAIT, WAITAOF and REPLICAOF.
//!
//! The slow log and the latency histograms are the ones the connection
//! already keeps (see `slowlog` and `stats`); LATENCY's events are the
//! node's latency monitor (`crate::latency_monitor`), off until
//! `latency-monitor-threshold` is set, as in Redis. ROLE and WAIT read the node's place
//! in the Raft cluster: its leader is the master, the other members its
//! replicas, and an address is a node's peer (HTTP) address.

use std::time::Duration;

use bytes::Bytes;

use super::super::Shared;
use super::super::frame::Reply;
use super::util::{help_reply, integer_arg, is, unknown_subcommand_or_arity};
use super::{CommandResult, wrong_arity};
use crate::latency_monitor::Event;
use crate::node::{Held, Replication};
use crate::resp::clients::Unblock;
use crate::store::FsyncPolicy;
use crate::store::number::parse_i64;

pub fn handles(name: &str) -> bool {
    matches!(
        name,
        "slowlog" | "latency" | "role" | "wait" | "waitaof" | "replicaof" | "slaveof"
    )
}

/// Runs one of these commands for connection `client` (WAIT and WAITAOF
/// block it, so CLIENT UNBLOCK can end their wait).
pub async fn run(client: u64, shared: &Shared, name: &str, args: &[Bytes]) -> CommandResult {
    match name {
        "slowlog" => slowlog(shared, args),
        "latency" => latency(shared, args),
        "role" => Ok(role(shared)),
        "replicaof" | "slaveof" => replica_of(shared, args),
        "waitaof" => wait_aof(client, shared, args).await,
        _ => wait(client, shared, args).await,
    }
}

/// REPLICAOF host port (and SLAVEOF). Walrus does not replicate from a
/// Redis master: its replicas are Raft members. `NO ONE` asks a node to be a
/// master; one that already is (a single node, or the cluster's leader)
/// answers OK and changes nothing, as Redis does. A follower cannot be made
/// leader by command, since the members elect one.
fn replica_of(shared: &Shared, args: &[Bytes]) -> CommandResult {
    match args {
        [_, no, one] if is(no, "no") && is(one, "one") => match shared.node.replication() {
            Replication::Single | Replication::Leader { .. } => Ok(Reply::ok()),
            Replication::Follower { .. } => Err(Reply::err(
                "this node follows the cluster's Raft leader, which the members elect; \
                 it cannot be made a master by command (walrus cluster status names the leader)",
            )),
        },
        _ => Err(Reply::err(
            "walrus does not replicate from a Redis master; its replicas are Raft members \
             (walrus cluster add-learner ID=ADDR, then walrus cluster promote ID)",
        )),
    }
}

/// SLOWLOG GET [count] | LEN | RESET | HELP.
fn slowlog(shared: &Shared, args: &[Bytes]) -> CommandResult {
    let log = &shared.slowlog;
    match args {
        [_, sub] if is(sub, "len") => Ok(Reply::Integer(log.len() as i64)),
        [_, sub] if is(sub, "reset") => {
            log.reset();
            Ok(Reply::ok())
        }
        [_, sub] if is(sub, "help") => Ok(help_reply(&[
            "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET [<count>]",
            "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
            "    Entries are made of:",
            "    id, timestamp, time in microseconds, arguments array, client IP and port,",
            "    client name",
            "LEN",
            "    Return the length of the slowlog.",
            "RESET",
            "    Reset the slowlog.",
            "HELP",
            "    Print this help.",
        ])),
        [_, sub, rest @ ..] if is(sub, "get") && rest.len() <= 1 => {
            let count = match rest.first() {
                None => Some(10),
                // Redis gives this one reason for a count that is not an
                // integer too.
                Some(count) => match integer_arg(count) {
                    Ok(-1) => None,
                    Ok(count) if count >= 0 => Some(count as usize),
                    _ => return Err(Reply::err("count should be greater than or equal to -1")),
                },
            };
            let entries = log
                .latest(count)
                .into_iter()
                .map(|entry| {
                    Reply::Array(vec![
                        Reply::Integer(entry.id as i64),
                        Reply::Integer(entry.logged_at as i64),
                        Reply::Integer(i64::try_from(entry.micros).unwrap_or(i64::MAX)),
                        Reply::Array(entry.args.into_iter().map(Reply::Bulk).collect()),
                        Reply::text(entry.client_addr),
                        Reply::Bulk(entry.client_name),
                    ])
                })
                .collect();
            Ok(Reply::Array(entries))
        }
        _ => Err(unknown_subcommand_or_arity(&args[1], "SLOWLOG")),
    }
}

/// LATENCY HISTOGRAM [command …] with the per-command histograms, and
/// LATEST | HISTORY | RESET | GRAPH | DOCTOR from the latency monitor.
/// Event names are matched exactly, as Redis matches them; an unknown one
/// has no samples.
fn latency(shared: &Shared, args: &[Bytes]) -> CommandResult {
    let monitor = &shared.latency;
    let seconds = |unix_secs: u64| Reply::Integer(i64::try_from(unix_secs).unwrap_or(i64::MAX));
    let millis = |millis: u64| Reply::Integer(i64::try_from(millis).unwrap_or(i64::MAX));
    match args {
        [_, sub] if is(sub, "latest") => Ok(Reply::Array(
            monitor
                .latest()
                .into_iter()
                .map(|latest| {
                    Reply::Array(vec![
                        Reply::text(latest.event.name()),
                        seconds(latest.newest.unix_secs),
                        millis(latest.newest.millis),
                        millis(latest.max_millis),
                    ])
                })
                .collect(),
        )),
        [_, sub, event] if is(sub, "history") => Ok(Reply::Array(
            Event::named(event)
                .map(|event| monitor.history(event))
                .unwrap_or_default()
                .into_iter()
                .map(|sample| Reply::Array(vec![seconds(sample.unix_secs), millis(sample.millis)]))
                .collect(),
        )),
        [_, sub] if is(sub, "reset") => Ok(Reply::Integer(monitor.reset(None) as i64)),
        [_, sub, names @ ..] if is(sub, "reset") => {
            let events: Vec<Event> = names.iter().filter_map(|name| Event::named(name)).collect();
            Ok(Reply::Integer(monitor.reset(Some(&events)) as i64))
        }
        [_, sub, event] if is(sub, "graph") => Event::named(event)
            .and_then(|event| monitor.graph(event))
            .map(Reply::Verbatim)
            .ok_or_else(|| {
                Reply::err(format!(
                    "No samples available for event '{}'",
                    String::from_utf8_lossy(event)
                ))
            }),
        [_, sub] if is(sub, "doctor") => Ok(Reply::Verbatim(monitor.doctor())),
        [_, sub, names @ ..] if is(sub, "histogram") => {
            let names: Vec<String> = names
                .iter()
                .map(|name| String::from_utf8_lossy(name).to_ascii_lowercase())
                .collect();
            let commands = shared
                .stats
                .commands
                .histograms(&names)
                .into_iter()
                .map(|histogram| {
                    let buckets = histogram
                        .buckets
                        .into_iter()
                        .map(|(micros, up_to)| {
                            (Reply::Integer(micros as i64), Reply::Integer(up_to as i64))
                        })
                        .collect();
                    let figures = vec![
                        (
                            Reply::Simple("calls"),
                            Reply::Integer(histogram.calls as i64),
                        ),
                        (Reply::Simple("histogram_usec"), Reply::Map(buckets)),
                    ];
                    (Reply::text(histogram.name), Reply::Map(figures))
                })
                .collect();
            Ok(Reply::Map(commands))
        }
        [_, sub] if is(sub, "help") => Ok(help_reply(&[
            "LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "DOCTOR",
            "    Return a human readable latency analysis report.",
            "GRAPH <event>",
            "    Return an ASCII latency graph for the <event> class.",
            "HISTORY <event>",
            "    Return time-latency samples for the <event> class.",
            "LATEST",
            "    Return the latest latency samples for all events.",
            "RESET [<event> ...]",
            "    Reset latency data of one or more <event> classes.",
            "    (default: reset all data for all event classes)",
            "HISTOGRAM [COMMAND ...]",
            "    Return a cumulative distribution of latencies in the format of a histogram for the specified command names.",
            "    If no commands are specified then all histograms are replied.",
            "HELP",
            "    Print this help.",
        ])),
        _ => Err(unknown_subcommand_or_arity(&args[1], "LATENCY")),
    }
}

/// A peer address as ROLE shows it: host, port.
fn host_and_port(address: &str) -> (String, u16) {
    let address = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address)
        .trim_end_matches('/');
    match address.rsplit_once(':') {
        Some((host, port)) => (
            host.trim_matches(['[', ']']).to_string(),
            port.parse().unwrap_or(0),
        ),
        None => (address.to_string(), 0),
    }
}

/// ROLE: a single node and a cluster's leader are masters (with the leader's
/// commit index as the offset and each member's matched index); any other
/// member is a replica of the leader, connected while one is known.
fn role(shared: &Shared) -> Reply {
    match shared.node.replication() {
        Replication::Single => Reply::Array(vec![
            Reply::text("master"),
            Reply::Integer(0),
            Reply::Array(Vec::new()),
        ]),
        Replication::Leader {
            committed,
            followers,
            ..
        } => Reply::Array(vec![
            Reply::text("master"),
            Reply::Integer(committed as i64),
            Reply::Array(
                followers
                    .into_iter()
                    .map(|follower| {
                        let (host, port) = host_and_port(&follower.address);
                        Reply::Array(vec![
                            Reply::text(host),
                            Reply::text(port.to_string()),
                            Reply::text(follower.matched.to_string()),
                        ])
                    })
                    .collect(),
            ),
        ]),
        Replication::Follower {
            leader_address,
            applied,
        } => {
            let state = if leader_address.is_some() {
                "connected"
            } else {
                "connect"
            };
            let (host, port) = host_and_port(leader_address.as_deref().unwrap_or(""));
            Reply::Array(vec![
                Reply::text("slave"),
                Reply::text(host),
                Reply::Integer(i64::from(port)),
                Reply::text(state),
                Reply::Integer(applied as i64),
            ])
        }
    }
}

/// WAIT numreplicas timeout: how many other members hold every write this
/// leader has committed (so every write this client was answered for),
/// waiting up to `timeout` ms (0: no limit) for `numreplicas` of them. A
/// cluster acknowledges a write only once a majority holds it, so WAIT adds
/// nothing to durability here; it answers tools that ask.
async fn wait(client: u64, shared: &Shared, args: &[Bytes]) -> CommandResult {
    let [_, wanted, timeout] = args else {
        return Err(wrong_arity("wait"));
    };
    let wanted = usize::try_from(integer_arg(wanted)?).unwrap_or(0);
    let timeout = timeout_arg(timeout)?;
    match wait_blocked(client, "wait", shared, false, wanted, timeout).await? {
        Some(held) => Ok(Reply::Integer(held.replicas as i64)),
        None => Err(Reply::err(
            "WAIT cannot be used with replica instances: send it to the cluster's leader",
        )),
    }
}

/// WAITAOF numlocal numreplicas timeout (Redis 7.2): whether this node's
/// log holds every write this client was answered for on disk (1 or 0), and
/// how many other members do. With `--fsync always` a single store answers
/// a write only after the sync that covers it, so the local part holds at
/// once; a cluster's leader may answer once a majority of followers synced
/// it, before its own sync ends, so it waits for that too. A Raft member
/// acknowledges entries only once they are synced, so the replicas are
/// WAIT's count. With another fsync policy walrus cannot say when a given
/// write reaches the disk, so numlocal 1 is refused, as Redis refuses it
/// with its log off.
async fn wait_aof(client: u64, shared: &Shared, args: &[Bytes]) -> CommandResult {
    let [_, local, replicas, timeout] = args else {
        return Err(wrong_arity("waitaof"));
    };
    let local = integer_arg(local)?;
    if !(0..=1).contains(&local) {
        return Err(Reply::err(
            "value is out of range, value must between 0 and 1",
        ));
    }
    let replicas = integer_arg(replicas)?;
    if replicas < 0 {
        return Err(Reply::err("value is out of range, must be positive"));
    }
    let timeout = timeout_arg(timeout)?;
    let synced_locally = matches!(shared.config.fsync, FsyncPolicy::Always);
    if local == 1 && !synced_locally {
        return Err(Reply::err(format!(
            "WAITAOF cannot be used when numlocal is set but appendfsync is {}: \
             walrus syncs its log on its own schedule then (start it with --fsync always)",
            shared.config.fsync.redis_name()
        )));
    }
    let held = wait_blocked(
        client,
        "waitaof",
        shared,
        local == 1,
        replicas as usize,
        timeout,
    )
    .await?
    .ok_or_else(|| {
        Reply::err(
            "WAITAOF cannot be used with replica instances. Please also note that \
                 writes to replicas are just local and are not propagated.",
        )
    })?;
    Ok(Reply::Array(vec![
        Reply::Integer(i64::from(synced_locally && held.locally)),
        Reply::Integer(held.replicas as i64),
    ]))
}

/// [`Node::wait_until_held`](crate::node::Node::wait_until_held) with
/// connection `client` marked as blocked in `command` meanwhile. `CLIENT UNBLOCK client
/// TIMEOUT` ends the wait as its timeout would, with who holds the writes
/// then; `ERROR` ends it with Redis's `-UNBLOCKED` error.
async fn wait_blocked(
    client: u64,
    command: &'static str,
    shared: &Shared,
    locally: bool,
    replicas: usize,
    timeout: Option<Duration>,
) -> Result<Option<Held>, Reply> {
    let waiting = shared.node.wait_until_held(locally, replicas, timeout);
    let Some(mut blocked) = shared.clients.block(client, command) else {
        return Ok(waiting.await);
    };
    tokio::select! {
        held = waiting => Ok(held),
        how = blocked.unblocked() => match how {
            Unblock::Timeout => Ok(shared
                .node
                .wait_until_held(locally, replicas, Some(Duration::ZERO))
                .await),
            Unblock::Error => Err(Reply::Error(
                "UNBLOCKED client unblocked via CLIENT UNBLOCK".into(),
            )),
        },
    }
}

/// A WAIT timeout in milliseconds: `None` (no limit) for 0.
fn timeout_arg(timeout: &[u8]) -> Result<Option<Duration>, Reply> {
    let timeout = parse_i64(timeout)
        .ok_or_else(|| Reply::err("timeout is not an integer or out of range"))?;
    if timeout < 0 {
        return Err(Reply::err("timeout is negative"));
    }
    Ok((timeout > 0).then(|| Duration::from_millis(timeout as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_split_into_host_and_port() {
        assert_eq!(
            host_and_port("127.0.0.1:8081"),
            ("127.0.0.1".to_string(), 8081)
        );
        assert_eq!(
            host_and_port("https://node-2.example:443/"),
            ("node-2.example".to_string(), 443)
        );
        assert_eq!(host_and_port("[::1]:7000"), ("::1".to_string(), 7000));
        assert_eq!(host_and_port(""), (String::new(), 0));
    }
}
