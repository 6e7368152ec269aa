//! Connection and server commands: PING, AUTH, HELLO, CLIENT, SELECT, and
//! what tools ask at start (COMMAND, CONFIG GET, INFO), plus DBSIZE, FLUSHDB
//! and TIME.

use crate::allocator::{AllocatorStats, Fragmentation};
use crate::node::{Consistency, Replication};
use crate::resp::Protocol;
use crate::storage::snapshot::DATABASES;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::super::Shared;
use super::super::frame::Reply;
use super::super::glob::glob_match;
use super::super::keyspace_events::KeyspaceEvents;
use super::super::pubsub::Kind as PubSubKind;
use super::util::{help_reply, integer_arg, is, syntax_error, unknown_subcommand};
use super::{CommandResult, SPECS, Session, Spec, find_spec, wrong_arity};
use crate::store::number::parse_i64;

/// The Redis version walrus answers as: clients gate features on it.
pub const REDIS_VERSION: &str = "7.4.0";

pub fn handles(name: &str) -> bool {
    matches!(
        name,
        "ping"
            | "echo"
            | "select"
            | "quit"
            | "readonly"
            | "readwrite"
            | "function"
            | "module"
            | "debug"
            | "eval"
            | "evalsha"
            | "eval_ro"
            | "evalsha_ro"
            | "fcall"
            | "fcall_ro"
            | "script"
            | "auth"
            | "hello"
            | "client"
            | "command"
            | "config"
            | "info"
            | "time"
            | "lastsave"
            | "save"
            | "bgsave"
            | "bgrewriteaof"
            | "reset"
            | "shutdown"
            | "cluster"
            | "monitor"
    )
}

pub async fn run(
    session: &mut Session,
    shared: &Shared,
    name: &str,
    args: &[Bytes],
) -> CommandResult {
    match name {
        // In RESP2's subscribed mode a reply is a message-like array, as in Redis.
        "ping" if session.is_subscribed() && session.protocol == Protocol::Resp2 => match args {
            [_] => Ok(Reply::Array(vec![Reply::text("pong"), Reply::text("")])),
            [_, message] => Ok(Reply::Array(vec![
                Reply::text("pong"),
                Reply::Bulk(message.clone()),
            ])),
            _ => Err(wrong_arity("ping")),
        },
        "ping" => match args {
            [_] => Ok(Reply::Simple("PONG")),
            [_, message] => Ok(Reply::Bulk(message.clone())),
            _ => Err(wrong_arity("ping")),
        },
        "echo" => Ok(Reply::Bulk(args[1].clone())),
        "select" => {
            session.db = super::ops::database_arg(&args[1])?;
            Ok(Reply::ok())
        }
        "quit" => {
            session.quit = true;
            Ok(Reply::ok())
        }
        "reset" => {
            reset(session, shared);
            Ok(Reply::Simple("RESET"))
        }
        "shutdown" => shutdown(session, shared, &args[1..]).await,
        "monitor" => {
            if !session.monitoring {
                session.monitoring = true;
                shared.monitors.subscribe(session.outbox(shared));
            }
            Ok(Reply::ok())
        }
        // Clients probe for Redis Cluster with CLUSTER INFO, NODES or SLOTS and
        // read this answer, a standalone Redis's, as "not a cluster": walrus's
        // own cluster is Raft, where any node serves every key.
        "cluster" => Err(Reply::err("This instance has cluster support disabled")),
        // As on a Redis Cluster replica: READONLY lets this connection read the
        // node's applied state without asking the leader (stale reads). A
        // single node has no replica to read from, and answers as a
        // standalone Redis does.
        "readonly" if !shared.node.is_replicated() => {
            Err(Reply::err("This instance has cluster support disabled"))
        }
        "readonly" => {
            session.consistency = Consistency::Stale;
            Ok(Reply::ok())
        }
        "function" => function(args),
        "module" => module(args),
        "debug" => Err(Reply::err(DEBUG_REFUSED)),
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" => {
            Err(Reply::err(NO_SCRIPTING))
        }
        "script" => script(args),
        "readwrite" => {
            session.consistency = Consistency::Linearizable;
            Ok(Reply::ok())
        }
        "auth" => auth(session, shared, &args[1..]),
        "hello" => hello(session, shared, args),
        "client" => client(session, shared, args),
        "command" => command(args),
        "config" => config(shared, args),
        "info" => Ok(Reply::Verbatim(info(shared, &args[1..]))),
        "time" => Ok(time()),
        "lastsave" => Ok(Reply::Integer(last_save(shared) as i64)),
        "save" => shared
            .node
            .snapshot_now()
            .await
            .map(|_| Reply::ok())
            .map_err(|error| Reply::err(format!("snapshot failed: {error}"))),
        "bgsave" | "bgrewriteaof" => background_snapshot(shared, name, args),
        _ => Err(Reply::err(format!("command '{name}' is not implemented"))),
    }
}

/// SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE] [ABORT]: stops the server as SIGTERM
/// does (in-flight requests finish, the log is synced, the data directory
/// unlocked) and closes this connection without a reply, as Redis does.
/// Every acknowledged write is already in the log, so NOSAVE loses nothing;
/// SAVE first takes a snapshot (a failure stops the shutdown unless FORCE).
/// NOW and FORCE are accepted: walrus never waits for replicas to catch up.
/// A shutdown cannot be aborted: it starts at once.
async fn shutdown(session: &mut Session, shared: &Shared, flags: &[Bytes]) -> CommandResult {
    let (mut save, mut no_save, mut force, mut abort) = (false, false, false, false);
    for flag in flags {
        match flag.to_ascii_lowercase().as_slice() {
            b"save" => save = true,
            b"nosave" => no_save = true,
            b"now" => {}
            b"force" => force = true,
            b"abort" => abort = true,
            _ => return Err(syntax_error()),
        }
    }
    if (save && no_save) || (abort && flags.len() > 1) {
        return Err(syntax_error());
    }
    if abort {
        return Err(Reply::err("No shutdown in progress."));
    }
    if save && let Err(error) = shared.node.snapshot_now().await {
        tracing::warn!(%error, "SHUTDOWN SAVE: the snapshot failed");
        if !force {
            return Err(Reply::err("Errors trying to SHUTDOWN. Check logs."));
        }
    }
    tracing::info!(client = session.id, "SHUTDOWN requested");
    shared.stop_requested.notify_one();
    session.hang_up = true;
    Ok(Reply::ok())
}

/// RESET: the connection as it was when it opened, but for its name and
/// library (as in Redis): no transaction or watched keys, database 0, RESP2,
/// linearizable reads, and signed out when a password is set.
fn reset(session: &mut Session, shared: &Shared) {
    session.transaction = None;
    session.watched.clear();
    session.db = 0;
    session.protocol = Protocol::Resp2;
    session.consistency = Consistency::Linearizable;
    session.authenticated = shared.config.auth_token.is_none();
    session.leave_pushes(shared);
    let _ = session.set_reply_mode(b"on");
}

/// BGSAVE [SCHEDULE] and BGREWRITEAOF: both are walrus's snapshot, which
/// also compacts the log behind it, started in the background; LASTSAVE
/// moves once it is written.
fn background_snapshot(shared: &Shared, name: &str, args: &[Bytes]) -> CommandResult {
    let schedule = name == "bgsave" && args.len() == 2 && args[1].eq_ignore_ascii_case(b"schedule");
    if args.len() > 1 && !schedule {
        return Err(syntax_error());
    }
    if !shared.config.persistent {
        // Refused now, as SAVE is, rather than failing unseen later.
        return Err(Reply::err(
            "snapshot failed: this store keeps nothing on disk (--in-memory): there is \
             nothing to snapshot",
        ));
    }
    let node = shared.node.clone();
    tokio::spawn(async move {
        if let Err(error) = node.snapshot_now().await {
            tracing::warn!(%error, "background snapshot (BGSAVE) failed");
        }
    });
    Ok(Reply::Simple(if name == "bgsave" {
        "Background saving started"
    } else {
        "Background append only file rewriting started"
    }))
}

/// AUTH [username] password: the username, if given, must be `default`.
/// AUTH [user] password, checked in Redis's order: the form, then (with no
/// password set) the one-argument form's complaint, where the `default`
/// user takes any password, as Redis's `nopass` default user does.
fn auth(session: &mut Session, shared: &Shared, args: &[Bytes]) -> CommandResult {
    let (user, password) = match args {
        [password] => (&b"default"[..], password),
        [user, password] => (&user[..], password),
        _ => return Err(syntax_error()),
    };
    let accepted = match &shared.config.auth_token {
        None if args.len() == 1 => {
            return Err(Reply::err(
                "AUTH <password> called without any password configured for the default \
                 user. Are you sure your configuration is correct?",
            ));
        }
        None => user == b"default",
        Some(token) => user == b"default" && password[..] == *token.as_bytes(),
    };
    if accepted {
        session.authenticated = true;
        Ok(Reply::ok())
    } else {
        Err(Reply::Error(
            "WRONGPASS invalid username-password pair or user is disabled.".into(),
        ))
    }
}

/// HELLO [protover [AUTH user pass] [SETNAME name]]: RESP2 only.
fn hello(session: &mut Session, shared: &Shared, args: &[Bytes]) -> CommandResult {
    if let Some(version) = args.get(1) {
        let version = crate::store::number::parse_i64(version)
            .ok_or_else(|| Reply::err("Protocol version is not an integer or out of range"))?;
        if version != 2 && version != 3 {
            return Err(Reply::Error("NOPROTO unsupported protocol version".into()));
        }
    }
    let mut index = 2;
    let mut name = None;
    while index < args.len() {
        let remaining = args.len() - index - 1;
        if is(&args[index], "auth") && remaining >= 2 {
            auth(session, shared, &args[index + 1..index + 3])?;
            index += 3;
        } else if is(&args[index], "setname") && remaining >= 1 {
            name = Some(args[index + 1].clone());
            index += 2;
        } else {
            return Err(Reply::err(format!(
                "Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(&args[index])
            )));
        }
    }
    if !session.authenticated {
        return Err(Reply::Error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
             select the RESP protocol version at the same time"
                .into(),
        ));
    }
    if let Some(name) = name {
        set_name(session, name)?;
    }
    // The switch applies from this reply on, as in Redis.
    match args
        .get(1)
        .and_then(|version| crate::store::number::parse_i64(version))
    {
        Some(3) => {
            session.protocol = Protocol::Resp3;
            // A RESP3 connection can be sent invalidations another
            // connection's tracking redirects to it, subscribed or not.
            session.outbox(shared);
        }
        Some(2) => session.protocol = Protocol::Resp2,
        _ => {}
    }
    Ok(Reply::Map(vec![
        (Reply::text("server"), Reply::text("redis")),
        (Reply::text("version"), Reply::text(REDIS_VERSION)),
        (
            Reply::text("proto"),
            Reply::Integer(i64::from(session.protocol.version())),
        ),
        (Reply::text("id"), Reply::Integer(session.id as i64)),
        (Reply::text("mode"), Reply::text("standalone")),
        (Reply::text("role"), Reply::text("master")),
        (Reply::text("modules"), Reply::Array(Vec::new())),
    ]))
}

/// What scripting commands answer: walrus runs no scripts.
const NO_SCRIPTING: &str = "scripting is not supported by walrus (no EVAL, EVALSHA, \
     FCALL or FUNCTION LOAD); use MSET/MSETNX or optimistic updates instead";

/// What DEBUG answers: Redis 7's own refusal under its default
/// `enable-debug-command no`, so a tool or test suite that probes for DEBUG
/// reads the answer it already knows. walrus has no debug switch to turn on.
const DEBUG_REFUSED: &str = "DEBUG command not allowed. If the enable-debug-command option is \
     set to \"local\", you can run it from a local connection, otherwise you need to set this \
     option in the configuration file, and then restart the server.";

/// MODULE: walrus loads no modules, so LIST is empty (clients probing for
/// RediSearch or RedisJSON learn they are absent) and loading is refused.
fn module(args: &[Bytes]) -> CommandResult {
    match args[1].to_ascii_lowercase().as_slice() {
        b"list" if args.len() == 2 => Ok(Reply::Array(Vec::new())),
        b"load" | b"loadex" | b"unload" => Err(Reply::err("walrus does not load modules")),
        b"help" if args.len() == 2 => Ok(help_reply(&[
            "MODULE <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "LIST",
            "    Return a list of loaded modules: none, as walrus loads no modules.",
            "LOAD, LOADEX, UNLOAD",
            "    Refused: walrus does not load modules.",
            "HELP",
            "    Print this help.",
        ])),
        _ => Err(unknown_subcommand(&args[1], "MODULE")),
    }
}

/// FUNCTION as on a server with no functions loaded.
fn function(args: &[Bytes]) -> CommandResult {
    match args[1].to_ascii_lowercase().as_slice() {
        b"list" => Ok(Reply::Array(Vec::new())),
        b"flush" => match args.get(2).map(|mode| mode.to_ascii_lowercase()) {
            None => Ok(Reply::ok()),
            Some(mode) if mode == b"sync" || mode == b"async" => Ok(Reply::ok()),
            Some(_) => Err(Reply::err("FUNCTION FLUSH only supports SYNC|ASYNC option")),
        },
        b"stats" => Ok(Reply::Map(vec![
            (Reply::text("running_script"), Reply::Null),
            (
                Reply::text("engines"),
                Reply::Map(vec![(
                    Reply::text("LUA"),
                    Reply::Map(vec![
                        (Reply::text("libraries_count"), Reply::Integer(0)),
                        (Reply::text("functions_count"), Reply::Integer(0)),
                    ]),
                )]),
            ),
        ])),
        b"load" | b"delete" | b"dump" | b"restore" | b"kill" => Err(Reply::err(NO_SCRIPTING)),
        b"help" if args.len() == 2 => Ok(help_reply(&[
            "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "LIST [LIBRARYNAME <pattern>] [WITHCODE]",
            "    Return the function libraries: none, as walrus runs no scripts.",
            "STATS",
            "    Return the running script (none) and the engines' counts (zero).",
            "FLUSH [ASYNC|SYNC]",
            "    Delete all function libraries: there are none.",
            "LOAD, DELETE, DUMP, RESTORE, KILL",
            "    Refused: walrus does not run scripts.",
            "HELP",
            "    Print this help.",
        ])),
        _ => Err(unknown_subcommand(&args[1], "FUNCTION")),
    }
}

/// SCRIPT, answered as a Redis whose script cache is empty, as FUNCTION
/// answers as one with no libraries: a client or test harness that
/// flushes scripts, or asks which are cached, in its setup goes on.
/// Loading or running one is refused.
fn script(args: &[Bytes]) -> CommandResult {
    match args[1].to_ascii_lowercase().as_slice() {
        b"flush" => match args.get(2).map(|mode| mode.to_ascii_lowercase()) {
            None => Ok(Reply::ok()),
            Some(mode) if args.len() == 3 && (mode == b"sync" || mode == b"async") => {
                Ok(Reply::ok())
            }
            Some(_) => Err(Reply::err("SCRIPT FLUSH only support SYNC|ASYNC option")),
        },
        b"exists" => Ok(Reply::Array(
            args[2..].iter().map(|_| Reply::Integer(0)).collect(),
        )),
        b"load" | b"kill" | b"debug" => Err(Reply::err(NO_SCRIPTING)),
        b"help" => Ok(help_reply(&[
            "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "EXISTS <sha1> [<sha1> ...]",
            "    Return 0 for each: walrus caches no scripts.",
            "FLUSH [ASYNC|SYNC]",
            "    Flush the scripts cache: it is always empty.",
            "LOAD, KILL, DEBUG",
            "    Refused: walrus does not run scripts.",
            "HELP",
            "    Print this help.",
        ])),
        _ => Err(unknown_subcommand(&args[1], "SCRIPT")),
    }
}

/// CLIENT HELP: the subcommands walrus serves, in Redis's words.
const CLIENT_HELP: &[&str] = &[
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CACHING (YES|NO)",
    "    Enable/disable tracking of the keys for next command in OPTIN/OPTOUT modes.",
    "GETREDIR",
    "    Return the client ID we are redirecting to when tracking is enabled.",
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "KILL <ip:port>",
    "    Kill connection made from <ip:port>.",
    "KILL <option> <value> [<option> <value> [...]]",
    "    Kill connections. Options are: ADDR, LADDR, ID, TYPE, USER, SKIPME, MAXAGE.",
    "LIST [options ...]",
    "    Return information about client connections. Options: TYPE, ID.",
    "UNPAUSE",
    "    Stop the current client pause, resuming traffic.",
    "UNBLOCK <clientid> [TIMEOUT|ERROR]",
    "    Unblock the specified blocked client.",
    "PAUSE <timeout> [WRITE|ALL]",
    "    Suspend all, or just write, clients for <timeout> milliseconds.",
    "REPLY (ON|OFF|SKIP)",
    "    Control the replies sent to the current connection.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "SETINFO <option> <value>",
    "    Set client meta attr. Options are: LIB-NAME, LIB-VER.",
    "NO-EVICT (ON|OFF)",
    "    Accepted; walrus evicts no keys.",
    "NO-TOUCH (ON|OFF)",
    "    Will not touch LRU/LFU stats when this mode is on.",
    "TRACKING (ON|OFF) [REDIRECT <id>] [BCAST] [PREFIX <prefix> [...]]",
    "         [OPTIN] [OPTOUT] [NOLOOP]",
    "    Control server assisted client side caching.",
    "TRACKINGINFO",
    "    Report tracking status for the current connection.",
    "HELP",
    "    Print this help.",
];

fn set_name(session: &mut Session, name: Bytes) -> Result<(), Reply> {
    if name.iter().any(|&byte| !(b'!'..=b'~').contains(&byte)) {
        return Err(Reply::err(
            "Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    session.name = (!name.is_empty()).then_some(name);
    Ok(())
}

/// CLIENT SETINFO LIB-NAME|LIB-VER value, as redis-py and node-redis send on
/// connecting; shown by CLIENT LIST and CLIENT INFO.
fn set_library(
    session: &Session,
    shared: &Shared,
    attribute: &Bytes,
    value: &Bytes,
) -> Result<(), Reply> {
    let version = match attribute.to_ascii_lowercase().as_slice() {
        b"lib-name" => false,
        b"lib-ver" => true,
        _ => {
            return Err(Reply::err(format!(
                "Unrecognized option '{}'",
                String::from_utf8_lossy(attribute)
            )));
        }
    };
    // Redis refuses what would break CLIENT LIST's line.
    if value.iter().any(|&byte| byte <= b' ' || byte > b'~') {
        let what = if version { "lib-ver" } else { "lib-name" };
        return Err(Reply::err(format!(
            "{what} cannot contain spaces, newlines or special characters."
        )));
    }
    let value = String::from_utf8_lossy(value);
    for client in shared.clients.list(Some(&[session.id])) {
        client.set_library(version, &value);
    }
    Ok(())
}

fn client(session: &mut Session, shared: &Shared, args: &[Bytes]) -> CommandResult {
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    let arity = |count: usize| {
        if args.len() == count {
            Ok(())
        } else {
            Err(wrong_arity(&format!("client|{sub}")))
        }
    };
    match sub.as_str() {
        "id" => arity(2).map(|()| Reply::Integer(session.id as i64)),
        "getname" => {
            arity(2)?;
            Ok(session.name.clone().map_or(Reply::Null, Reply::Bulk))
        }
        "setname" => {
            arity(3)?;
            set_name(session, args[2].clone()).map(|()| Reply::ok())
        }
        "setinfo" => {
            arity(4)?;
            set_library(session, shared, &args[2], &args[3]).map(|()| Reply::ok())
        }
        "info" => {
            arity(2)?;
            // The registry's copy is refreshed after each batch: the line
            // shows the session as it is now instead.
            let line = shared
                .clients
                .list(Some(&[session.id]))
                .first()
                .map(|client| own_line(session, client, "client|info", args))
                .unwrap_or_default();
            Ok(Reply::Verbatim(format!("{line}\n")))
        }
        // Accepted as Redis takes it (ON or OFF), with nothing to change:
        // walrus evicts no keys.
        "no-evict" => {
            arity(3)?;
            match &args[2] {
                word if is(word, "on") || is(word, "off") => Ok(Reply::ok()),
                _ => Err(syntax_error()),
            }
        }
        "no-touch" => {
            arity(3)?;
            session.no_touch = match &args[2] {
                word if is(word, "on") => true,
                word if is(word, "off") => false,
                _ => return Err(syntax_error()),
            };
            Ok(Reply::ok())
        }
        "pause" => client_pause(shared, &args[2..]),
        "unpause" => {
            arity(2)?;
            shared.pause.unpause();
            Ok(Reply::ok())
        }
        "unblock" if args.len() == 3 || args.len() == 4 => client_unblock(shared, &args[2..]),
        "unblock" => Err(wrong_arity("client|unblock")),
        // The connection withholds the reply itself after OFF and SKIP.
        "reply" => {
            arity(3)?;
            session.set_reply_mode(&args[2]).map(|()| Reply::ok())
        }
        "list" => client_list(session, shared, args),
        "kill" => client_kill(session, shared, &args[2..]),
        "tracking" if args.len() >= 3 => super::caching::tracking(session, shared, &args[2..]),
        "tracking" => Err(wrong_arity("client|tracking")),
        "caching" => {
            arity(3)?;
            super::caching::caching(session, &args[2])
        }
        "getredir" => arity(2).map(|()| super::caching::redirect(session)),
        "trackinginfo" => arity(2).map(|()| super::caching::info(session, shared)),
        "help" => arity(2).map(|()| help_reply(CLIENT_HELP)),
        _ => Err(unknown_subcommand(&args[1], "CLIENT")),
    }
}

/// CLIENT UNBLOCK id [TIMEOUT|ERROR]: ends connection `id`'s wait in WAIT
/// or WAITAOF, as its timeout would (the default) or with an error; 1 if it
/// was waiting in one, else 0.
fn client_unblock(shared: &Shared, args: &[Bytes]) -> CommandResult {
    use crate::resp::clients::Unblock;
    // Redis judges the reason before the id.
    let how = match args.get(1) {
        None => Unblock::Timeout,
        Some(word) if is(word, "timeout") => Unblock::Timeout,
        Some(word) if is(word, "error") => Unblock::Error,
        Some(_) => {
            return Err(Reply::err(
                "CLIENT UNBLOCK reason should be TIMEOUT or ERROR",
            ));
        }
    };
    let id = integer_arg(&args[0])?;
    let unblocked = u64::try_from(id).is_ok_and(|id| shared.clients.unblock(id, how));
    Ok(Reply::Integer(i64::from(unblocked)))
}

/// CLIENT PAUSE timeout-ms [WRITE|ALL]: holds every command (ALL, the
/// default) or writes (WRITE) from every client until the timeout or CLIENT
/// UNPAUSE.
fn client_pause(shared: &Shared, args: &[Bytes]) -> CommandResult {
    use crate::pause::PauseKind;
    let (millis, kind) = match args {
        [millis] => (millis, PauseKind::Everything),
        [millis, kind] => match kind.to_ascii_lowercase().as_slice() {
            b"all" => (millis, PauseKind::Everything),
            b"write" => (millis, PauseKind::Writes),
            _ => return Err(syntax_error()),
        },
        _ => return Err(wrong_arity("client|pause")),
    };
    let millis = match parse_i64(millis) {
        Some(millis) if millis < 0 => return Err(Reply::err("timeout is negative")),
        Some(millis) => millis as u64,
        None => return Err(Reply::err("timeout is not an integer or out of range")),
    };
    shared
        .pause
        .pause(std::time::Duration::from_millis(millis), kind);
    Ok(Reply::ok())
}

/// CLIENT LIST [TYPE normal] [ID id ...]: one line per open connection.
/// The asking connection's own CLIENT LIST line: the registry's copy is
/// refreshed only after each batch, so the line shows the session as it is
/// now, running `command`.
fn own_line(
    session: &Session,
    client: &crate::resp::clients::ClientHandle,
    command: &'static str,
    request: &[Bytes],
) -> String {
    client.line_for(&session.view(command), Some(encoded_request_len(request)))
}

/// The bytes `request` took on the wire as a RESP array of bulk strings.
fn encoded_request_len(request: &[Bytes]) -> usize {
    let header = |len: usize| 1 + len.to_string().len() + 2;
    header(request.len())
        + request
            .iter()
            .map(|arg| header(arg.len()) + arg.len() + 2)
            .sum::<usize>()
}

fn client_list(session: &Session, shared: &Shared, request: &[Bytes]) -> CommandResult {
    let args = &request[2..];
    let mut ids: Option<Vec<u64>> = None;
    let mut pubsub: Option<bool> = None;
    let mut index = 0;
    while index < args.len() {
        match args[index].to_ascii_lowercase().as_slice() {
            b"type" => {
                let kind = args.get(index + 1).ok_or_else(syntax_error)?;
                match kind.to_ascii_lowercase().as_slice() {
                    // A walrus connection is a normal client or a Pub/Sub one.
                    b"normal" => pubsub = Some(false),
                    b"pubsub" => pubsub = Some(true),
                    b"master" | b"replica" | b"slave" => ids = Some(Vec::new()),
                    _ => {
                        return Err(Reply::err(format!(
                            "Unknown client type '{}'",
                            String::from_utf8_lossy(kind)
                        )));
                    }
                }
                index += 2;
            }
            b"id" => {
                let rest = &args[index + 1..];
                if rest.is_empty() {
                    return Err(syntax_error());
                }
                let mut wanted = Vec::new();
                for id in rest {
                    match parse_i64(id) {
                        Some(id) if id > 0 => wanted.push(id as u64),
                        _ => return Err(Reply::err("Invalid client ID")),
                    }
                }
                ids = Some(wanted);
                index = args.len();
            }
            _ => return Err(syntax_error()),
        }
    }
    let mut text = String::new();
    for client in shared.clients.list(ids.as_deref()) {
        if pubsub.is_some_and(|pubsub| pubsub != client.is_pubsub()) {
            continue;
        }
        let line = match client.id == session.id {
            true => own_line(session, &client, "client|list", request),
            false => client.list_line(),
        };
        text.push_str(&line);
        text.push('\n');
    }
    Ok(Reply::Verbatim(text))
}

/// CLIENT KILL ip:port (the old form: `+OK` or an error), or CLIENT KILL with
/// filters (ID, ADDR, LADDR, SKIPME, MAXAGE, USER): how many were killed.
fn client_kill(session: &Session, shared: &Shared, args: &[Bytes]) -> CommandResult {
    use crate::resp::clients::KillFilter;
    if let [addr] = args {
        let filter = KillFilter {
            addr: Some(String::from_utf8_lossy(addr).into_owned()),
            ..KillFilter::default()
        };
        return match shared.clients.kill(&filter) {
            0 => Err(Reply::err("No such client")),
            _ => Ok(Reply::ok()),
        };
    }
    if args.is_empty() {
        return Err(wrong_arity("client|kill"));
    }
    if !args.len().is_multiple_of(2) {
        return Err(syntax_error());
    }
    let mut filter = KillFilter {
        skip: Some(session.id),
        ..KillFilter::default()
    };
    for pair in args.chunks(2) {
        let value = String::from_utf8_lossy(&pair[1]).into_owned();
        match pair[0].to_ascii_lowercase().as_slice() {
            b"id" => match parse_i64(&pair[1]) {
                Some(id) if id > 0 => filter.id = Some(id as u64),
                _ => return Err(Reply::err("client-id should be greater than 0")),
            },
            b"addr" => filter.addr = Some(value),
            b"laddr" => filter.laddr = Some(value),
            b"skipme" => match value.to_ascii_lowercase().as_str() {
                "yes" => filter.skip = Some(session.id),
                "no" => filter.skip = None,
                _ => return Err(syntax_error()),
            },
            b"maxage" => match parse_i64(&pair[1]) {
                Some(age) if age > 0 => filter.max_age = Some(age as u64),
                Some(_) => return Err(Reply::err("maxage should be greater than 0")),
                None => return Err(Reply::err("maxage is not an integer or out of range")),
            },
            // One user, `default`: another name matches nobody.
            b"user" if value == "default" => {}
            b"user" => return Err(Reply::err(format!("No such user '{value}'"))),
            b"type" => match value.to_ascii_lowercase().as_str() {
                "normal" => filter.pubsub = Some(false),
                "pubsub" => filter.pubsub = Some(true),
                "master" | "replica" | "slave" => return Ok(Reply::Integer(0)),
                _ => return Err(Reply::err(format!("Unknown client type '{value}'"))),
            },
            _ => return Err(syntax_error()),
        }
    }
    Ok(Reply::Integer(shared.clients.kill(&filter) as i64))
}

/// One command's `COMMAND INFO` entry (Redis 7 layout, without ACL
/// categories, tips, key specs or subcommands).
fn command_info(spec: &Spec) -> Reply {
    let mut flags = vec![Reply::Simple(if spec.write { "write" } else { "readonly" })];
    if super::spec_position(spec.name).is_some_and(super::is_fast) {
        flags.push(Reply::Simple("fast"));
    }
    // Keys found by reading the arguments, not by position alone.
    if super::migrate::handles(spec.name) {
        flags.push(Reply::Simple("movablekeys"));
    }
    Reply::Array(vec![
        Reply::text(spec.name),
        Reply::Integer(spec.arity.into()),
        Reply::Array(flags),
        Reply::Integer(spec.first_key.into()),
        Reply::Integer(spec.last_key.into()),
        Reply::Integer(spec.step.into()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

fn command(args: &[Bytes]) -> CommandResult {
    let Some(sub) = args.get(1) else {
        return Ok(Reply::Array(SPECS.iter().map(command_info).collect()));
    };
    let names = || {
        args[2..]
            .iter()
            .map(|name| String::from_utf8_lossy(name).to_ascii_lowercase())
    };
    match sub.to_ascii_lowercase().as_slice() {
        b"count" => Ok(Reply::Integer(SPECS.len() as i64)),
        b"docs" => Ok(super::docs::command_docs(&names().collect::<Vec<_>>())),
        b"list" => command_list(&args[2..]),
        // With no names, every command, as COMMAND alone; a name walrus does
        // not have is a null.
        b"info" if args.len() == 2 => Ok(Reply::Array(SPECS.iter().map(command_info).collect())),
        b"info" => Ok(Reply::Array(
            names()
                .map(|name| find_spec(&name).map_or(Reply::Null, command_info))
                .collect(),
        )),
        b"getkeys" if args.len() > 2 => command_getkeys(&args[2..]),
        b"help" if args.len() == 2 => Ok(help_reply(&[
            "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "(no subcommand)",
            "    Return details about all commands.",
            "COUNT",
            "    Return the total number of commands in this server.",
            "LIST [FILTERBY (MODULE <module-name>|ACLCAT <category>|PATTERN <pattern>)]",
            "    Return a list of all commands in this server.",
            "INFO [<command-name> ...]",
            "    Return details about multiple commands.",
            "DOCS [<command-name> ...]",
            "    Return documentation details about multiple commands.",
            "GETKEYS <full-command>",
            "    Return the keys from a full command.",
            "HELP",
            "    Print this help.",
        ])),
        _ => Err(unknown_subcommand(sub, "COMMAND")),
    }
}

/// COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN glob].
/// Walrus has no modules; its ACL categories are Redis's where they follow
/// from what a command does (`read`, `write`) or its group (`string`,
/// `keyspace`, `bitmap`, `connection`, `transaction`, `server` as `admin`).
/// COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN glob]:
/// every command, then every subcommand under its full name
/// (`config|get`), as Redis 7 lists them. A subcommand has its container's
/// categories; a pattern is matched against the full name.
fn command_list(filter: &[Bytes]) -> CommandResult {
    // No module is ever loaded, so FILTERBY MODULE keeps nothing.
    let (pattern, category, none) = match filter {
        [] => (None, None, false),
        [by, kind, _] if is(by, "filterby") && is(kind, "module") => (None, None, true),
        [by, kind, pattern] if is(by, "filterby") && is(kind, "pattern") => {
            (Some(pattern.to_ascii_lowercase()), None, false)
        }
        [by, kind, category] if is(by, "filterby") && is(kind, "aclcat") => {
            let category = String::from_utf8_lossy(category).to_ascii_lowercase();
            (None, Some(category), false)
        }
        _ => return Err(syntax_error()),
    };
    let keep = |spec: &Spec, name: &str| {
        !none
            && pattern
                .as_ref()
                .is_none_or(|pattern| glob_match(pattern, name.as_bytes()))
            && category
                .as_ref()
                .is_none_or(|category| acl_categories(spec).contains(&category.as_str()))
    };
    let commands = SPECS.iter().map(|spec| (spec, spec.name));
    let subcommands = super::stat_names()[SPECS.len()..]
        .iter()
        .filter_map(|name| {
            let container = name.split('|').next()?;
            Some((find_spec(container)?, name.as_str()))
        });
    Ok(Reply::Array(
        commands
            .chain(subcommands)
            .filter(|(spec, name)| keep(spec, name))
            .map(|(_, name)| Reply::text(name))
            .collect(),
    ))
}

fn acl_categories(spec: &Spec) -> Vec<&'static str> {
    let mut categories = Vec::new();
    if spec.first_key > 0 {
        categories.push(if spec.write { "write" } else { "read" });
    }
    let group = match super::docs::group_of(spec.name) {
        Some("string") => "string",
        Some("bitmap") => "bitmap",
        Some("generic") => "keyspace",
        Some("connection") => "connection",
        Some("transactions") => "transaction",
        Some("pubsub") => "pubsub",
        Some("server") => "admin",
        _ => return categories,
    };
    categories.push(group);
    categories
}

/// COMMAND GETKEYS command arg…: the keys that request would touch.
fn command_getkeys(request: &[Bytes]) -> CommandResult {
    let name = String::from_utf8_lossy(&request[0]).to_ascii_lowercase();
    let spec = find_spec(&name).ok_or_else(|| Reply::err("Invalid command specified"))?;
    let count = request.len() as i32;
    if (spec.arity > 0 && count != spec.arity) || (spec.arity < 0 && count < -spec.arity) {
        return Err(Reply::err(
            "Invalid number of arguments specified for command",
        ));
    }
    let positions: Vec<usize> = if super::migrate::handles(spec.name) {
        super::migrate::key_positions(request)
    } else {
        super::key_positions(spec, request.len()).collect()
    };
    let keys: Vec<Reply> = positions
        .into_iter()
        .map(|index| Reply::Bulk(request[index].clone()))
        .collect();
    if keys.is_empty() {
        return Err(Reply::err("The command has no key arguments"));
    }
    Ok(Reply::Array(keys))
}

/// The configuration parameters tools ask about, with walrus's values.
fn config_values(shared: &Shared) -> Vec<(&'static str, String)> {
    let limits = &shared.config.limits;
    let yes_no = |on: bool| if on { "yes" } else { "no" }.to_string();
    vec![
        ("appendonly", yes_no(shared.config.persistent)),
        ("appendfsync", shared.config.fsync.redis_name().into()),
        // Never the password itself: that a password is set is enough.
        (
            "requirepass",
            shared
                .config
                .auth_token
                .as_ref()
                .map_or(String::new(), |_| "(set; not shown)".into()),
        ),
        ("save", String::new()),
        ("databases", DATABASES.to_string()),
        ("maxmemory", "0".into()),
        ("maxmemory-policy", eviction_policy(shared).into()),
        (
            "maxclients",
            shared.max_clients.load(Ordering::Relaxed).to_string(),
        ),
        ("proto-max-bulk-len", limits.max_bulk_bytes.to_string()),
        (
            "timeout",
            shared
                .idle_timeout_secs
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_string(),
        ),
        (
            "tcp-keepalive",
            shared
                .tcp_keepalive_secs
                .load(Ordering::Relaxed)
                .to_string(),
        ),
        ("port", shared.stats.port.to_string()),
        ("hz", shared.sweep.hz().to_string()),
        (
            "slowlog-log-slower-than",
            shared.slowlog.slower_than_micros().to_string(),
        ),
        ("slowlog-max-len", shared.slowlog.max_len().to_string()),
        (
            "latency-monitor-threshold",
            shared.latency.threshold_millis().to_string(),
        ),
        ("latency-tracking", yes_no(shared.stats.commands.tracking())),
        (
            "latency-tracking-info-percentiles",
            shared.stats.commands.reported_percentiles_text(),
        ),
        ("notify-keyspace-events", shared.keyspace_events.describe()),
        (
            "tracking-table-max-keys",
            shared.tracking.max_keys().to_string(),
        ),
        // Redis's switch for TLS between its nodes, which MIGRATE follows.
        // Here it is MIGRATE's alone: a cluster's peers speak TLS whenever
        // the node has a certificate.
        (
            "tls-cluster",
            yes_no(shared.migrate_over_tls.load(Ordering::Relaxed)),
        ),
    ]
}

/// The `maxmemory-policy` values walrus takes, `noeviction` first. With
/// `maxmemory` 0 (no limit, all walrus has) Redis evicts nothing under any
/// of them, and neither does walrus; a tool or test may still set one, and
/// an LRU policy is what `OBJECT IDLETIME` and `RESTORE … IDLETIME` go with.
/// The LFU policies are refused: walrus does not count accesses, so it
/// could not answer `OBJECT FREQ` under them.
pub const EVICTION_POLICIES: [&str; 6] = [
    "noeviction",
    "allkeys-lru",
    "volatile-lru",
    "allkeys-random",
    "volatile-random",
    "volatile-ttl",
];

/// The `maxmemory-policy` in force.
fn eviction_policy(shared: &Shared) -> &'static str {
    let chosen = shared.maxmemory_policy.load(Ordering::Relaxed);
    EVICTION_POLICIES
        .get(usize::from(chosen))
        .copied()
        .unwrap_or(EVICTION_POLICIES[0])
}

/// A setting `CONFIG SET` changes live.
enum LiveSetting {
    EvictionPolicy(u8),
    IdleTimeoutSecs(u64),
    TcpKeepaliveSecs(u64),
    MaxClients(usize),
    SlowerThanMicros(i64),
    SlowLogLength(usize),
    LatencyThresholdMillis(u64),
    LatencyTracking(bool),
    ReportedPercentiles(Vec<f64>),
    KeyspaceEvents(u32),
    TrackingMaxKeys(usize),
    MigrateOverTls(bool),
    Hz(u64),
}

/// CONFIG SET name value [name value …]: `timeout` (seconds a client may stay
/// idle, 0 for never), `tcp-keepalive` (for connections accepted from then
/// on), `maxclients`, the slow log's two settings,
/// `latency-monitor-threshold` (milliseconds, 0 for off), `latency-tracking`
/// and `latency-tracking-info-percentiles` (INFO latencystats),
/// `notify-keyspace-events`, `tracking-table-max-keys`, `tls-cluster`
/// (whether MIGRATE speaks TLS; `yes` needs `--tls-cert`) and
/// `maxmemory-policy` (see [`EVICTION_POLICIES`]) change live; every
/// other setting walrus reports is a flag of `walrus serve`, fixed at start,
/// and gets Redis's refusal for an immutable one; a name walrus does not
/// know gets Redis's unknown-option error. As in Redis 7, every pair is
/// checked before any is applied.
fn config_set(shared: &Shared, args: &[Bytes]) -> CommandResult {
    let lowercase = |name: &Bytes| String::from_utf8_lossy(name).to_ascii_lowercase();
    let first = args.first().map(lowercase).unwrap_or_default();
    if args.len() < 2 || !args.len().is_multiple_of(2) {
        return Err(Reply::err(format!(
            "Unknown option or number of arguments for CONFIG SET - '{first}'"
        )));
    }
    let names: Vec<String> = args
        .chunks_exact(2)
        .map(|pair| lowercase(&pair[0]))
        .collect();
    let mut seen = std::collections::HashSet::new();
    if let Some(name) = names.iter().find(|name| !seen.insert(name.as_str())) {
        return Err(config_set_failed(name, "duplicate parameter"));
    }
    let known = config_values(shared);
    let mut changes = Vec::new();
    for (name, pair) in names.into_iter().zip(args.chunks_exact(2)) {
        let change = match name.as_str() {
            "timeout" => LiveSetting::IdleTimeoutSecs(config_integer(&name, &pair[1], 0)? as u64),
            "tcp-keepalive" => LiveSetting::TcpKeepaliveSecs(config_integer_in(
                &name,
                &pair[1],
                0,
                i32::MAX as i64,
            )? as u64),
            "slowlog-log-slower-than" => {
                LiveSetting::SlowerThanMicros(config_integer(&name, &pair[1], -1)?)
            }
            "maxclients" => LiveSetting::MaxClients(config_integer_in(
                &name,
                &pair[1],
                1,
                crate::resp::MAX_CLIENTS_CEILING as i64,
            )? as usize),
            "slowlog-max-len" => {
                LiveSetting::SlowLogLength(config_integer(&name, &pair[1], 0)? as usize)
            }
            "latency-monitor-threshold" => {
                LiveSetting::LatencyThresholdMillis(
                    config_integer_in(&name, &pair[1], 0, i64::MAX)? as u64,
                )
            }
            "latency-tracking" => LiveSetting::LatencyTracking(config_yes_no(&name, &pair[1])?),
            "latency-tracking-info-percentiles" => {
                LiveSetting::ReportedPercentiles(config_percentiles(&name, &pair[1])?)
            }
            // Redis takes any non-negative int and runs at the nearest of
            // 1 to 500 (what CONFIG GET then shows).
            "hz" => LiveSetting::Hz(config_integer_in(&name, &pair[1], 0, i32::MAX as i64)? as u64),
            "tracking-table-max-keys" => {
                LiveSetting::TrackingMaxKeys(
                    config_integer_in(&name, &pair[1], 0, i64::MAX)? as usize
                )
            }
            "maxmemory-policy" => {
                let value = String::from_utf8_lossy(&pair[1]).to_ascii_lowercase();
                match EVICTION_POLICIES.iter().position(|policy| *policy == value) {
                    Some(index) => LiveSetting::EvictionPolicy(index as u8),
                    None if value.ends_with("-lfu") => {
                        return Err(config_set_failed(
                            &name,
                            "walrus does not count accesses, so it has no LFU policy",
                        ));
                    }
                    None => {
                        return Err(config_set_failed(
                            &name,
                            format!(
                                "argument(s) must be one of the following: {}",
                                EVICTION_POLICIES.join(", ")
                            ),
                        ));
                    }
                }
            }
            "tls-cluster" => {
                let on = config_yes_no(&name, &pair[1])?;
                if on && shared.config.migrate_tls.is_none() {
                    return Err(config_set_failed(
                        &name,
                        "TLS is not configured: start walrus serve with --tls-cert and --tls-key",
                    ));
                }
                LiveSetting::MigrateOverTls(on)
            }
            "notify-keyspace-events" => match KeyspaceEvents::parse(&pair[1]) {
                Ok(flags) => LiveSetting::KeyspaceEvents(flags),
                Err(why) => return Err(config_set_failed(&name, why)),
            },
            // Setting a fixed value to what it is changes nothing: allowed,
            // so a tool that saves the configuration and restores it works.
            // As Redis takes `yes`, `everysec` or `noeviction` in any case.
            _ if known.iter().any(|(setting, value)| {
                *setting == name && value.as_bytes().eq_ignore_ascii_case(&pair[1])
            }) =>
            {
                continue;
            }
            _ if known.iter().any(|(setting, _)| *setting == name) => {
                return Err(config_set_failed(
                    &name,
                    "can't set immutable config: walrus takes it as a flag of walrus serve",
                ));
            }
            _ => {
                return Err(Reply::err(format!(
                    "Unknown option or number of arguments for CONFIG SET - '{name}'"
                )));
            }
        };
        changes.push(change);
    }
    for change in changes {
        match change {
            LiveSetting::EvictionPolicy(index) => {
                shared.maxmemory_policy.store(index, Ordering::Relaxed)
            }
            LiveSetting::IdleTimeoutSecs(seconds) => shared
                .idle_timeout_secs
                .store(seconds, std::sync::atomic::Ordering::Relaxed),
            LiveSetting::TcpKeepaliveSecs(seconds) => shared
                .tcp_keepalive_secs
                .store(seconds, std::sync::atomic::Ordering::Relaxed),
            LiveSetting::SlowerThanMicros(micros) => shared.slowlog.set_slower_than_micros(micros),
            LiveSetting::SlowLogLength(length) => shared.slowlog.set_max_len(length),
            LiveSetting::LatencyThresholdMillis(millis) => {
                shared.latency.set_threshold_millis(millis)
            }
            LiveSetting::LatencyTracking(on) => shared.stats.commands.set_tracking(on),
            LiveSetting::Hz(hz) => shared.sweep.set_hz(hz),
            LiveSetting::ReportedPercentiles(percentiles) => {
                shared.stats.commands.set_reported_percentiles(percentiles)
            }
            // Clients already connected stay; new ones past it are refused.
            LiveSetting::MaxClients(count) => shared.max_clients.store(count, Ordering::Relaxed),
            LiveSetting::TrackingMaxKeys(count) => {
                shared.tracking.set_max_keys(count, &shared.clients)
            }
            LiveSetting::MigrateOverTls(on) => shared.migrate_over_tls.store(on, Ordering::Relaxed),
            LiveSetting::KeyspaceEvents(flags) => {
                let state = shared.store.state().read();
                let hook = state.feed().map(|feed| &feed.key_events);
                shared.keyspace_events.set(flags, hook);
            }
        }
    }
    Ok(Reply::ok())
}

/// A whole-number setting from `lowest` to 2^31-1, as Redis takes `timeout`,
/// `slowlog-log-slower-than` and `slowlog-max-len`.
fn config_integer(name: &str, value: &[u8], lowest: i64) -> Result<i64, Reply> {
    config_integer_in(name, value, lowest, i64::from(i32::MAX))
}

/// A whole-number setting from `lowest` to `highest`.
fn config_integer_in(name: &str, value: &[u8], lowest: i64, highest: i64) -> Result<i64, Reply> {
    let failed = |why: String| config_set_failed(name, why);
    let number = parse_i64(value)
        .ok_or_else(|| failed("argument couldn't be parsed into an integer".into()))?;
    if !(lowest..=highest).contains(&number) {
        return Err(failed(format!(
            "argument must be between {lowest} and {highest} inclusive"
        )));
    }
    Ok(number)
}

/// A `yes` or `no` setting, in any case.
fn config_yes_no(name: &str, value: &[u8]) -> Result<bool, Reply> {
    match value.to_ascii_lowercase().as_slice() {
        b"yes" => Ok(true),
        b"no" => Ok(false),
        _ => Err(config_set_failed(name, "argument must be 'yes' or 'no'")),
    }
}

/// `latency-tracking-info-percentiles`: percentiles from 0 to 100,
/// separated by spaces (none is allowed: latencystats then lists none).
fn config_percentiles(name: &str, value: &[u8]) -> Result<Vec<f64>, Reply> {
    let text = String::from_utf8_lossy(value);
    let mut percentiles = Vec::new();
    for word in text.split_whitespace() {
        let percentile: f64 = word.parse().map_err(|_| {
            config_set_failed(name, "Invalid latency-tracking-info-percentiles parameters")
        })?;
        if !(0.0..=100.0).contains(&percentile) {
            return Err(config_set_failed(
                name,
                "latency-tracking-info-percentiles parameters should sit between [0.0,100.0]",
            ));
        }
        percentiles.push(percentile);
    }
    Ok(percentiles)
}

/// Redis's refusal of one `CONFIG SET` pair.
fn config_set_failed(name: &str, why: impl std::fmt::Display) -> Reply {
    Reply::err(format!(
        "CONFIG SET failed (possibly related to argument '{name}') - {why}"
    ))
}

fn config(shared: &Shared, args: &[Bytes]) -> CommandResult {
    match args[1].to_ascii_lowercase().as_slice() {
        b"get" if args.len() > 2 => {
            let mut pairs = Vec::new();
            for (name, value) in config_values(shared) {
                if args[2..]
                    .iter()
                    .any(|pattern| glob_match(&pattern.to_ascii_lowercase(), name.as_bytes()))
                {
                    pairs.push((Reply::text(name), Reply::text(value)));
                }
            }
            Ok(Reply::Map(pairs))
        }
        b"get" => Err(wrong_arity("config|get")),
        b"resetstat" => {
            shared
                .stats
                .reset_info(shared.sweep.expired_keys.load(Ordering::Relaxed));
            Ok(Reply::ok())
        }
        b"set" => config_set(shared, &args[2..]),
        b"help" if args.len() == 2 => Ok(help_reply(&[
            "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>",
            "    Set the configuration <directive> to <value>: timeout, maxclients,",
            "    slowlog-log-slower-than, slowlog-max-len, latency-monitor-threshold,",
            "    latency-tracking, latency-tracking-info-percentiles,",
            "    notify-keyspace-events, tracking-table-max-keys, tls-cluster and",
            "    maxmemory-policy change live; the rest are walrus serve's flags.",
            "RESETSTAT",
            "    Reset statistics reported by the INFO command.",
            "HELP",
            "    Print this help.",
        ])),
        _ => Err(unknown_subcommand(&args[1], "CONFIG")),
    }
}

/// INFO [section …]: the sections asked for, in walrus's fixed order.
fn info(shared: &Shared, sections: &[Bytes]) -> String {
    // As in Redis: no argument or `default` is every section but
    // commandstats and latencystats; `all` and `everything` add them;
    // several may be named.
    let by_default = |name: &str| name != "commandstats" && name != "latencystats";
    let wanted = |name: &str| {
        if sections.is_empty() {
            return by_default(name);
        }
        sections.iter().any(|section| {
            is(section, name)
                || is(section, "all")
                || is(section, "everything")
                || (is(section, "default") && by_default(name))
        })
    };
    let stats = &shared.stats;
    let mut text = String::new();
    if wanted("server") {
        let _ = write!(
            text,
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nwalrus_version:{}\r\nredis_mode:standalone\r\n\
             os:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\
             uptime_in_days:{}\r\nhz:{hz}\r\nconfigured_hz:{hz}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            stats.port,
            stats.started.elapsed().as_secs(),
            stats.started.elapsed().as_secs() / 86_400,
            hz = shared.sweep.hz(),
        );
    }
    if wanted("clients") {
        let _ = write!(
            text,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{}\r\n\
             pubsub_clients:{}\r\ntracking_clients:{}\r\n\r\n",
            stats.connected_clients.load(Ordering::Relaxed),
            shared.max_clients.load(Ordering::Relaxed),
            shared.pause.waiting() + shared.clients.blocked_count() as u64,
            shared.pubsub.client_count(),
            shared.tracking.client_count()
        );
    }
    if wanted("memory") {
        let memory = process_memory();
        let rss = memory.resident;
        let (used, peak) = (memory.used(), memory.used_peak());
        let system = system_memory();
        let _ = write!(
            text,
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\n\
             used_memory_rss_human:{}\r\nused_memory_peak:{peak}\r\nused_memory_peak_human:{}\r\n\
             used_memory_peak_perc:{:.2}%\r\n",
            human_bytes(used),
            human_bytes(rss),
            human_bytes(peak),
            percent(used, peak),
        );
        if let Some(stats) = memory.allocator {
            let _ = write!(
                text,
                "allocator_allocated:{}\r\nallocator_active:{}\r\nallocator_resident:{}\r\n",
                stats.allocated, stats.active, stats.resident
            );
        }
        let _ = write!(
            text,
            "total_system_memory:{system}\r\ntotal_system_memory_human:{}\r\n\
             walrus_data_bytes:{}\r\nmaxmemory:0\r\nmaxmemory_human:0B\r\n\
             maxmemory_policy:{}\r\n",
            human_bytes(system),
            shared.store.data_bytes(),
            eviction_policy(shared)
        );
        if let Some(figures) = memory.fragmentation() {
            let _ = write!(
                text,
                "allocator_frag_ratio:{:.2}\r\nallocator_frag_bytes:{}\r\n\
                 allocator_rss_ratio:{:.2}\r\nallocator_rss_bytes:{}\r\n\
                 rss_overhead_ratio:{:.2}\r\nrss_overhead_bytes:{}\r\n\
                 mem_fragmentation_ratio:{:.2}\r\nmem_fragmentation_bytes:{}\r\n",
                figures.allocator_ratio,
                figures.allocator_bytes,
                figures.allocator_rss_ratio,
                figures.allocator_rss_bytes,
                figures.rss_overhead_ratio,
                figures.rss_overhead_bytes,
                figures.total_ratio,
                figures.total_bytes,
            );
        }
        let allocator = crate::allocator::registered()
            .map_or_else(|| "unknown".to_string(), |allocator| allocator.name());
        let _ = write!(text, "mem_allocator:{allocator}\r\n\r\n");
    }
    if wanted("persistence") {
        let failed = shared.store.failure().is_some();
        let _ = write!(
            text,
            "# Persistence\r\nloading:0\r\naof_enabled:{}\r\nwalrus_fsync:{}\r\n\
             rdb_changes_since_last_save:{}\r\nrdb_last_save_time:{}\r\n\
             aof_last_write_status:{}\r\nwalrus_log_failed:{}\r\n\r\n",
            u8::from(shared.config.persistent),
            shared.config.fsync,
            shared.node.changes_since_snapshot(),
            last_save(shared),
            if failed { "err" } else { "ok" },
            u8::from(failed)
        );
    }
    if wanted("stats") {
        let (tracking_keys, tracking_items, tracking_prefixes) = shared.tracking.totals();
        // Counted since the last CONFIG RESETSTAT.
        let since = |counter: &AtomicU64, baseline: &AtomicU64| {
            counter
                .load(Ordering::Relaxed)
                .saturating_sub(baseline.load(Ordering::Relaxed))
        };
        let baseline = &stats.info_since;
        // MIGRATE opens a connection per command (`migrate.rs`): none is cached.
        let _ = write!(
            text,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             total_error_replies:{}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\nevicted_keys:0\r\n\
             pubsub_channels:{}\r\npubsub_patterns:{}\r\npubsubshard_channels:{}\r\n\
             migrate_cached_sockets:0\r\ntracking_total_keys:{}\r\ntracking_total_items:{}\r\n\
             tracking_total_prefixes:{}\r\n\r\n",
            since(&stats.total_connections, &baseline.connections),
            since(&stats.total_commands, &baseline.commands),
            stats.commands.total_errors(),
            since(&stats.rejected_connections, &baseline.rejected_connections),
            since(&shared.sweep.expired_keys, &baseline.expired_keys),
            shared.pubsub.channel_count(PubSubKind::Channel),
            shared.pubsub.pattern_count(),
            shared.pubsub.channel_count(PubSubKind::Shard),
            tracking_keys,
            tracking_items,
            tracking_prefixes,
        );
    }
    if wanted("replication") {
        // A cluster's leader is its master; the other members replicate it.
        let _ = match shared.node.replication() {
            Replication::Single => write!(
                text,
                "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:0\r\n\r\n"
            ),
            Replication::Leader {
                committed,
                followers,
                ..
            } => write!(
                text,
                "# Replication\r\nrole:master\r\nconnected_slaves:{}\r\nmaster_repl_offset:{committed}\r\n\r\n",
                followers.len()
            ),
            Replication::Follower {
                leader_address,
                applied,
            } => write!(
                text,
                "# Replication\r\nrole:slave\r\nmaster_link_status:{}\r\nconnected_slaves:0\r\n\
                 master_repl_offset:{applied}\r\n\r\n",
                if leader_address.is_some() {
                    "up"
                } else {
                    "down"
                }
            ),
        };
    }
    if wanted("cpu") {
        let (user, system) = cpu_seconds();
        let _ = write!(
            text,
            "# CPU\r\nused_cpu_sys:{system:.6}\r\nused_cpu_user:{user:.6}\r\n\
             used_cpu_sys_children:0.000000\r\nused_cpu_user_children:0.000000\r\n\r\n"
        );
    }
    if wanted("commandstats") {
        stats.commands.write_commandstats(&mut text);
    }
    if wanted("errorstats") {
        stats.commands.write_errorstats(&mut text);
    }
    if wanted("latencystats") {
        stats.commands.write_latencystats(&mut text);
    }
    if wanted("cluster") {
        // Redis Cluster's protocol (slots, MOVED) is not spoken, on a Raft
        // cluster either: clients and tools that read this (redis-py's own
        // test set-up among them) must treat every node as a whole store.
        text.push_str("# Cluster\r\ncluster_enabled:0\r\n\r\n");
    }
    if wanted("keyspace") {
        text.push_str("# Keyspace\r\n");
        for counts in shared.store.key_counts() {
            let _ = write!(
                text,
                "db{}:keys={},expires={},avg_ttl={}\r\n",
                counts.db, counts.keys, counts.expiring, counts.mean_ttl_ms
            );
        }
    }
    // Redis puts a blank line between sections, none after the last.
    if text.ends_with("\r\n\r\n") {
        text.truncate(text.len() - 2);
    }
    text
}

/// The process's memory as the kernel counts it: what walrus reports as
/// used, and what the allocator counts when the program registered it
/// (`crate::allocator`).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ProcessMemory {
    /// Resident now (`VmRSS`).
    pub resident: u64,
    /// The most ever resident (`VmHWM`), never below `resident` (the
    /// kernel updates its high-water mark lazily).
    pub peak: u64,
    pub allocator: Option<AllocatorStats>,
}

impl ProcessMemory {
    /// Redis's `used_memory`: what the allocator has handed out, or, when
    /// it cannot say, what is resident.
    pub fn used(&self) -> u64 {
        self.allocator
            .map_or(self.resident, |stats| stats.allocated)
    }

    /// The peak of [`Self::used`]: of the allocated bytes as sampled at each
    /// reading (`crate::allocator::peak_allocated`), or the most ever
    /// resident when the allocator cannot say.
    pub fn used_peak(&self) -> u64 {
        match self.allocator {
            Some(_) => crate::allocator::peak_allocated().max(self.used()),
            None => self.peak.max(self.used()),
        }
    }

    pub fn fragmentation(&self) -> Option<Fragmentation> {
        self.allocator
            .map(|stats| Fragmentation::of(stats, self.resident))
    }
}

/// This process's [`ProcessMemory`] (zeros where /proc is not there).
pub(super) fn process_memory() -> ProcessMemory {
    let allocator = crate::allocator::stats();
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return ProcessMemory {
            allocator,
            ..ProcessMemory::default()
        };
    };
    let resident = kib_field(&status, "VmRSS:");
    ProcessMemory {
        resident,
        peak: kib_field(&status, "VmHWM:").max(resident),
        allocator,
    }
}

/// The machine's RAM in bytes (`MemTotal`), 0 where /proc is not there.
fn system_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo").map_or(0, |info| kib_field(&info, "MemTotal:"))
}

/// A `name: N kB` line of a /proc file, in bytes.
fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// `part` as a percentage of `whole` (0 for an empty whole).
pub(super) fn percent(part: u64, whole: u64) -> f64 {
    match whole {
        0 => 0.0,
        whole => part as f64 * 100.0 / whole as f64,
    }
}

pub(super) fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.2}G", b as f64 / f64::from(1u32 << 30)),
        b if b >= 1 << 20 => format!("{:.2}M", b as f64 / f64::from(1u32 << 20)),
        b if b >= 1 << 10 => format!("{:.2}K", b as f64 / 1024.0),
        b => format!("{b}B"),
    }
}

/// CPU time the process has used: (user, system) seconds, from /proc (in
/// the kernel's USER_HZ ticks, 100 a second on Linux); zeros elsewhere.
fn cpu_seconds() -> (f64, f64) {
    const TICKS_PER_SECOND: f64 = 100.0;
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let user = fields.get(11)?.parse::<u64>().ok()?;
            let system = fields.get(12)?.parse::<u64>().ok()?;
            Some((user, system))
        });
    ticks.map_or((0.0, 0.0), |(user, system)| {
        (
            user as f64 / TICKS_PER_SECOND,
            system as f64 / TICKS_PER_SECOND,
        )
    })
}

/// LASTSAVE: when the newest snapshot in the data directory was written
/// (Unix seconds), or, with none (or in memory), when the server started, as
/// Redis answers before its first save. With `--fsync always` every
/// acknowledged write is already durable; this dates the newest compaction.
fn last_save(shared: &Shared) -> u64 {
    let unix = |time: std::time::SystemTime| {
        time.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
    };
    let newest_snapshot = shared.config.data_dir.as_ref().and_then(|dir| {
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(|entry| entry.ok())
            .filter(|entry| {
                crate::storage::snapshot::parse_snapshot_file_name(
                    &entry.file_name().to_string_lossy(),
                )
                .is_some()
            })
            .filter_map(|entry| entry.metadata().ok()?.modified().ok())
            .max()
    });
    newest_snapshot.map_or_else(
        || {
            unix(std::time::SystemTime::now())
                .saturating_sub(shared.stats.started.elapsed().as_secs())
        },
        unix,
    )
}

/// TIME: the clock expiry is judged by (moved forward only under fault
/// injection), so TTL and EXPIRETIME answers agree with it.
fn time() -> Reply {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        + std::time::Duration::from_millis(crate::clock::offset_ms());
    Reply::Array(vec![
        Reply::text(now.as_secs().to_string()),
        Reply::text(now.subsec_micros().to_string()),
    ])
}
