//! Commands: one request in, store commands and a reply out.
//!
//! [`SPECS`] lists every supported command with Redis's arity and key
//! positions (also what `COMMAND` reports). [`plan`] checks authentication,
//! arity and key lengths; a write that needs no read becomes a store command
//! the connection submits without waiting (so pipelined writes share a group
//! commit); anything else goes to [`execute`], which hands it to its family:
//! `server` (connection and server commands), `acl` (the one user),
//! `diagnostics` (SLOWLOG, LATENCY, ROLE, WAIT), `txn`, `pubsub`, `keys`,
//! `strings`.
//!
//! Key commands are parsed by `ops` into ops of the state machine: a write
//! (SET, INCR, APPEND, EXPIRE, RENAME…) is logged as that op and computed
//! when applied, so it needs no read first and pipelines with the others; a
//! read runs the same op on entries read at one instant. `txn` queues
//! MULTI/EXEC; `server`, `keys` (KEYS, SCAN, RANDOMKEY) and `strings` (LCS)
//! handle what is not an op.

mod acl;
mod caching;
mod diagnostics;
mod docs;
mod keys;
mod migrate;
mod ops;
mod pubsub;
mod server;
mod strings;
mod subcommands;
mod txn;
mod util;

pub use subcommands::{stat_index, stat_names};

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;

use super::Shared;
use super::frame::Reply;
use super::pubsub::Kind as PubSubKind;
use super::push::{Inbox, Outbox};
use crate::error::Error;
use crate::store::redis_op::{self, Keyspace, RedisCommand, RedisOp, SetExpiry};
use crate::store::{Command, Entry, Guard, Op, Outcome};

pub use util::store_error;

/// Per-connection state.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    /// The client's address, `ip:port` (for the MONITOR lines of the
    /// commands EXEC runs).
    pub addr: String,
    pub name: Option<Bytes>,
    pub authenticated: bool,
    /// Set by QUIT: close after this reply.
    pub quit: bool,
    /// Set by SHUTDOWN: close without replying (clients read the closed
    /// connection as success, as Redis gives them).
    pub hang_up: bool,
    /// Commands queued since MULTI, until EXEC or DISCARD.
    pub transaction: Option<txn::Transaction>,
    /// WATCHed keys and the revision (or absence) each had when watched.
    pub watched: Vec<(Bytes, Guard)>,
    /// The database the WATCHed keys are in (WATCH in one and EXEC in
    /// another is refused).
    pub watched_db: u8,
    /// The database SELECT chose; 0 at first.
    pub db: u8,
    /// Reads on a cluster replica: linearizable unless READONLY was sent.
    pub consistency: crate::node::Consistency,
    /// RESP2 until `HELLO 3`.
    pub protocol: crate::resp::Protocol,
    /// The last command run (for CLIENT LIST's `cmd`); empty before the first.
    pub last_command: &'static str,
    /// CLIENT REPLY: no replies at all after OFF, until ON.
    pub replies_off: bool,
    /// CLIENT NO-TOUCH ON: reads leave the keys' last access as it was
    /// (TOUCH still moves it).
    pub no_touch: bool,
    /// CLIENT REPLY SKIP was the last command: the next one gets no reply.
    skip_next_reply: bool,
    /// The command being served gets no reply (the one after SKIP).
    skip_this_reply: bool,
    /// MONITOR mode: every command run is pushed to this connection.
    pub monitoring: bool,
    /// SUBSCRIBEd channels, PSUBSCRIBEd patterns and SSUBSCRIBEd shard
    /// channels.
    pub channels: BTreeSet<Bytes>,
    pub patterns: BTreeSet<Bytes>,
    pub shard_channels: BTreeSet<Bytes>,
    /// What other connections push to this one (MONITOR lines, messages),
    /// made on the first MONITOR or SUBSCRIBE: the end they send to, and the
    /// end the connection reads between requests.
    outbox: Option<Outbox>,
    pub inbox: Option<Inbox>,
    /// CLIENT TRACKING ON: how this connection caches keys.
    pub tracking: Option<crate::resp::tracking::Mode>,
    /// CLIENT CACHING YES or NO, for the next command (or transaction).
    pub tracking_caching: Option<bool>,
}

impl Session {
    /// The session as CLIENT LIST shows it, running `command`.
    pub fn view(&self, command: &'static str) -> super::clients::SessionView<'_> {
        super::clients::SessionView {
            name: self.name.as_ref(),
            db: self.db,
            resp: self.protocol.version(),
            command,
            multi: self
                .transaction
                .as_ref()
                .map_or(-1, |transaction| transaction.queued.len() as i64),
            watch: self.watched.len(),
            monitor: self.monitoring,
            channels: self.channels.len(),
            patterns: self.patterns.len(),
            shard_channels: self.shard_channels.len(),
            no_touch: self.no_touch,
            blocked: false,
        }
    }

    pub fn new(id: u64, addr: String, authenticated: bool) -> Session {
        Session {
            id,
            addr,
            name: None,
            authenticated,
            quit: false,
            hang_up: false,
            transaction: None,
            watched: Vec::new(),
            watched_db: 0,
            db: 0,
            consistency: crate::node::Consistency::Linearizable,
            protocol: crate::resp::Protocol::Resp2,
            last_command: "",
            replies_off: false,
            no_touch: false,
            skip_next_reply: false,
            skip_this_reply: false,
            monitoring: false,
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
            shard_channels: BTreeSet::new(),
            outbox: None,
            inbox: None,
            tracking: None,
            tracking_caching: None,
        }
    }

    /// The end other connections push to this one through, made on first use.
    pub fn outbox(&mut self, shared: &Shared) -> Outbox {
        if let Some(outbox) = &self.outbox {
            return outbox.clone();
        }
        let (outbox, inbox) =
            crate::resp::push::queue(self.id, crate::resp::push::PUSH_QUEUE_LIMIT);
        shared.clients.set_outbox(self.id, outbox.clone());
        self.outbox = Some(outbox.clone());
        self.inbox = Some(inbox);
        outbox
    }

    /// What the connection wants pushed now (see [`crate::resp::push::Wanted`]),
    /// and its inbox.
    pub fn pushes(&mut self) -> Option<(&mut Inbox, crate::resp::push::Wanted<'_>)> {
        let inbox = self.inbox.as_mut()?;
        let wanted = crate::resp::push::Wanted {
            channels: &self.channels,
            patterns: &self.patterns,
            shard_channels: &self.shard_channels,
            monitoring: self.monitoring,
            protocol: self.protocol,
        };
        Some((inbox, wanted))
    }

    /// Subscribed to a channel, pattern or shard channel: in RESP2, only the
    /// subscription commands, PING, QUIT and RESET may run (Redis's
    /// subscribed mode).
    pub fn is_subscribed(&self) -> bool {
        self.channels.len() + self.patterns.len() + self.shard_channels.len() > 0
    }

    /// The count a confirmation of `kind` carries, as Redis counts:
    /// channels and patterns together, shard channels apart.
    pub fn subscription_count(&self, kind: PubSubKind) -> usize {
        match kind {
            PubSubKind::Channel | PubSubKind::Pattern => self.channels.len() + self.patterns.len(),
            PubSubKind::Shard => self.shard_channels.len(),
        }
    }

    /// The channels, the patterns or the shard channels subscribed to.
    pub fn subscriptions(&mut self, kind: PubSubKind) -> &mut BTreeSet<Bytes> {
        match kind {
            PubSubKind::Channel => &mut self.channels,
            PubSubKind::Pattern => &mut self.patterns,
            PubSubKind::Shard => &mut self.shard_channels,
        }
    }

    /// Ends every subscription and MONITOR (RESET, or the connection closed).
    pub fn leave_pushes(&mut self, shared: &Shared) {
        for kind in PubSubKind::ALL {
            for name in std::mem::take(self.subscriptions(kind)) {
                shared.pubsub.unsubscribe(kind, &name, self.id);
            }
        }
        if std::mem::take(&mut self.monitoring) {
            shared.monitors.unsubscribe(self.id);
        }
        self.stop_tracking(shared);
    }

    /// CLIENT TRACKING OFF (also on RESET and when the connection closes).
    pub fn stop_tracking(&mut self, shared: &Shared) {
        self.tracking_caching = None;
        if self.tracking.take().is_some() {
            shared.stop_tracking(self.id);
        }
    }

    /// Registers the keys this request reads, if the connection tracks
    /// them (default mode, as OPTIN/OPTOUT and CLIENT CACHING decide), before
    /// it runs; then spends a CLIENT CACHING given for it. Inside MULTI the
    /// keys are registered as each command is queued, and CLIENT CACHING
    /// holds until EXEC or DISCARD, as in Redis.
    fn track_reads(&mut self, shared: &Shared, args: &[Bytes], command: Option<usize>) {
        let Some(mode) = &self.tracking else {
            return;
        };
        let Some(spec) = command.map(|position| &SPECS[position]) else {
            return;
        };
        if spec.name == "client" {
            return;
        }
        let reads = !spec.write && spec.first_key > 0 && mode.broadcast.is_none();
        let given = self.tracking_caching;
        let cache = match mode.caching {
            crate::resp::tracking::Caching::Always => true,
            crate::resp::tracking::Caching::OptIn => given == Some(true),
            crate::resp::tracking::Caching::OptOut => given != Some(false),
        };
        if reads && cache {
            let keys = key_positions(spec, args.len()).map(|index| args[index].clone());
            shared.tracking.remember(self.id, keys, &shared.clients);
        }
        let in_transaction = match spec.name {
            "multi" => true,
            "exec" | "discard" => false,
            _ => self.transaction.is_some(),
        };
        if !in_transaction {
            self.tracking_caching = None;
        }
    }

    /// CLIENT REPLY ON | OFF | SKIP, as Redis has them: SKIP while OFF
    /// changes nothing; ON clears a pending SKIP too.
    pub fn set_reply_mode(&mut self, mode: &[u8]) -> Result<(), Reply> {
        match mode.to_ascii_lowercase().as_slice() {
            b"on" => {
                self.replies_off = false;
                self.skip_next_reply = false;
                self.skip_this_reply = false;
            }
            b"off" => self.replies_off = true,
            b"skip" => self.skip_next_reply = !self.replies_off,
            _ => return Err(util::syntax_error()),
        }
        Ok(())
    }

    /// Called once per command, after it ran (it may have been CLIENT REPLY
    /// itself): whether its reply is to be withheld. A SKIP takes effect on
    /// the command after the one that set it.
    pub fn withhold_reply(&mut self) -> bool {
        let withhold = self.replies_off || self.skip_this_reply || self.skip_next_reply;
        self.skip_this_reply = std::mem::take(&mut self.skip_next_reply);
        withhold
    }
}

/// How a blind write's [`Outcome`] becomes its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// `+OK`.
    Ok,
    /// `+OK`, or a null when a guard (NX/XX) refused the write.
    OkOrNull,
    /// The key's value before the command, or a null.
    Previous,
    /// Number of keys changed (DEL).
    Changed,
    /// 1 if the write applied, 0 if a guard refused it (SETNX, MSETNX).
    Applied,
    /// The answer of the Redis command's only op.
    Answer,
}

impl Finish {
    /// Whether the reply shows the entry the write replaced.
    pub fn shows_previous(&self) -> bool {
        matches!(self, Finish::Previous)
    }

    pub fn reply(self, outcome: Outcome) -> Reply {
        match self {
            Finish::Ok => Reply::ok(),
            Finish::OkOrNull if outcome.succeeded => Reply::ok(),
            Finish::OkOrNull => Reply::Null,
            Finish::Previous => outcome
                .previous
                .map_or(Reply::Null, |entry| Reply::Bulk(entry.value)),
            Finish::Changed => Reply::Integer(i64::from(outcome.changed)),
            Finish::Applied => Reply::Integer(i64::from(outcome.succeeded)),
            Finish::Answer => outcome
                .answers
                .into_iter()
                .next()
                .map_or(Reply::Null, util::answer_reply),
        }
    }
}

/// A supported command: Redis's arity (negative: at least that many words,
/// the name included) and which arguments are keys (first, last, step; last
/// -1 means the final argument).
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub arity: i32,
    pub write: bool,
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
}

const fn spec(name: &'static str, arity: i32, write: bool, keys: (i32, i32, i32)) -> Spec {
    Spec {
        name,
        arity,
        write,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
    }
}

const NO_KEYS: (i32, i32, i32) = (0, 0, 0);
const ONE_KEY: (i32, i32, i32) = (1, 1, 1);
const TWO_KEYS: (i32, i32, i32) = (1, 2, 1);
const ALL_KEYS: (i32, i32, i32) = (1, -1, 1);
const PAIRS: (i32, i32, i32) = (1, -1, 2);

pub const SPECS: &[Spec] = &[
    // Connection and server.
    spec("ping", -1, false, NO_KEYS),
    spec("echo", 2, false, NO_KEYS),
    spec("select", 2, false, NO_KEYS),
    spec("quit", -1, false, NO_KEYS),
    spec("readonly", 1, false, NO_KEYS),
    spec("function", -2, false, NO_KEYS),
    spec("module", -2, false, NO_KEYS),
    spec("debug", -2, false, NO_KEYS),
    spec("eval", -3, false, NO_KEYS),
    spec("evalsha", -3, false, NO_KEYS),
    spec("eval_ro", -3, false, NO_KEYS),
    spec("evalsha_ro", -3, false, NO_KEYS),
    spec("fcall", -3, false, NO_KEYS),
    spec("fcall_ro", -3, false, NO_KEYS),
    spec("script", -2, false, NO_KEYS),
    spec("readwrite", 1, false, NO_KEYS),
    spec("auth", -2, false, NO_KEYS),
    spec("acl", -2, false, NO_KEYS),
    spec("hello", -1, false, NO_KEYS),
    spec("client", -2, false, NO_KEYS),
    spec("command", -1, false, NO_KEYS),
    spec("config", -2, false, NO_KEYS),
    spec("info", -1, false, NO_KEYS),
    spec("dbsize", 1, false, NO_KEYS),
    spec("flushdb", -1, true, NO_KEYS),
    spec("flushall", -1, true, NO_KEYS),
    spec("swapdb", 3, true, NO_KEYS),
    spec("time", 1, false, NO_KEYS),
    spec("lastsave", 1, false, NO_KEYS),
    spec("save", 1, false, NO_KEYS),
    spec("bgsave", -1, false, NO_KEYS),
    spec("bgrewriteaof", 1, false, NO_KEYS),
    spec("reset", 1, false, NO_KEYS),
    spec("shutdown", -1, false, NO_KEYS),
    spec("cluster", -2, false, NO_KEYS),
    spec("slowlog", -2, false, NO_KEYS),
    spec("latency", -2, false, NO_KEYS),
    spec("role", 1, false, NO_KEYS),
    spec("wait", 3, false, NO_KEYS),
    spec("waitaof", 4, false, NO_KEYS),
    spec("replicaof", 3, false, NO_KEYS),
    spec("slaveof", 3, false, NO_KEYS),
    spec("monitor", 1, false, NO_KEYS),
    // Pub/Sub.
    spec("subscribe", -2, false, NO_KEYS),
    spec("unsubscribe", -1, false, NO_KEYS),
    spec("psubscribe", -2, false, NO_KEYS),
    spec("punsubscribe", -1, false, NO_KEYS),
    spec("publish", 3, false, NO_KEYS),
    spec("ssubscribe", -2, false, NO_KEYS),
    spec("sunsubscribe", -1, false, NO_KEYS),
    spec("spublish", 3, false, NO_KEYS),
    spec("pubsub", -2, false, NO_KEYS),
    // Transactions.
    spec("multi", 1, false, NO_KEYS),
    spec("exec", 1, false, NO_KEYS),
    spec("discard", 1, false, NO_KEYS),
    spec("watch", -2, false, ALL_KEYS),
    spec("unwatch", 1, false, NO_KEYS),
    // Strings.
    spec("get", 2, false, ONE_KEY),
    spec("set", -3, true, ONE_KEY),
    spec("setnx", 3, true, ONE_KEY),
    spec("setex", 4, true, ONE_KEY),
    spec("psetex", 4, true, ONE_KEY),
    spec("getset", 3, true, ONE_KEY),
    spec("getdel", 2, true, ONE_KEY),
    spec("getex", -2, true, ONE_KEY),
    spec("mget", -2, false, ALL_KEYS),
    spec("mset", -3, true, PAIRS),
    spec("msetnx", -3, true, PAIRS),
    spec("append", 3, true, ONE_KEY),
    spec("strlen", 2, false, ONE_KEY),
    spec("getrange", 4, false, ONE_KEY),
    spec("substr", 4, false, ONE_KEY),
    spec("setrange", 4, true, ONE_KEY),
    spec("incr", 2, true, ONE_KEY),
    spec("incrby", 3, true, ONE_KEY),
    spec("decr", 2, true, ONE_KEY),
    spec("decrby", 3, true, ONE_KEY),
    spec("incrbyfloat", 3, true, ONE_KEY),
    spec("lcs", -3, false, TWO_KEYS),
    spec("setbit", 4, true, ONE_KEY),
    spec("getbit", 3, false, ONE_KEY),
    spec("bitcount", -2, false, ONE_KEY),
    spec("bitpos", -3, false, ONE_KEY),
    spec("bitop", -4, true, (2, -1, 1)),
    spec("bitfield", -2, true, ONE_KEY),
    spec("bitfield_ro", -2, false, ONE_KEY),
    // Keys.
    spec("del", -2, true, ALL_KEYS),
    spec("unlink", -2, true, ALL_KEYS),
    spec("exists", -2, false, ALL_KEYS),
    spec("touch", -2, false, ALL_KEYS),
    spec("type", 2, false, ONE_KEY),
    spec("rename", 3, true, TWO_KEYS),
    spec("renamenx", 3, true, TWO_KEYS),
    spec("copy", -3, true, TWO_KEYS),
    spec("dump", 2, false, ONE_KEY),
    spec("restore", -4, true, ONE_KEY),
    spec("migrate", -6, true, (3, 3, 1)),
    spec("move", 3, true, ONE_KEY),
    spec("randomkey", 1, false, NO_KEYS),
    spec("memory", -2, false, (2, 2, 1)),
    spec("object", -2, false, (2, 2, 1)),
    spec("keys", 2, false, NO_KEYS),
    spec("scan", -2, false, NO_KEYS),
    spec("expire", -3, true, ONE_KEY),
    spec("pexpire", -3, true, ONE_KEY),
    spec("expireat", -3, true, ONE_KEY),
    spec("pexpireat", -3, true, ONE_KEY),
    spec("ttl", 2, false, ONE_KEY),
    spec("pttl", 2, false, ONE_KEY),
    spec("expiretime", 2, false, ONE_KEY),
    spec("pexpiretime", 2, false, ONE_KEY),
    spec("persist", 2, true, ONE_KEY),
];

/// The command named `name` (lowercase), if supported.
pub fn find_spec(name: &str) -> Option<&'static Spec> {
    spec_position(name).map(|position| &SPECS[position])
}

/// The position in [`SPECS`] of the command `args` names, if supported.
/// Found once per command and passed along ([`plan`], [`check`]): this runs
/// for every request.
pub fn spec_index(args: &[Bytes]) -> Option<usize> {
    let name = args.first()?;
    let mut lower = [0u8; 32];
    let lower = lower.get_mut(..name.len())?;
    for (to, from) in lower.iter_mut().zip(name.iter()) {
        *to = from.to_ascii_lowercase();
    }
    spec_positions().get(&*lower).copied()
}

/// The position in [`SPECS`] of the command named `name` (lowercase).
pub fn spec_position(name: &str) -> Option<usize> {
    spec_positions().get(name.as_bytes()).copied()
}

/// Command names to their place in [`SPECS`]. FNV, not the default SipHash:
/// the names are short, and the table is fixed at start, so nobody can fill
/// it with colliding keys.
fn spec_positions() -> &'static HashMap<&'static [u8], usize, fnv::FnvBuildHasher> {
    static INDEX: std::sync::OnceLock<HashMap<&'static [u8], usize, fnv::FnvBuildHasher>> =
        std::sync::OnceLock::new();
    INDEX.get_or_init(|| {
        SPECS
            .iter()
            .enumerate()
            .map(|(position, spec)| (spec.name.as_bytes(), position))
            .collect()
    })
}

/// The commands Redis 7.4 flags `fast` (O(1) or O(log N), never blocking):
/// COMMAND INFO shows the flag, and the latency monitor records them as
/// `fast-command` rather than `command`.
const FAST_COMMANDS: &[&str] = &[
    "ping",
    "echo",
    "select",
    "quit",
    "auth",
    "hello",
    "readonly",
    "readwrite",
    "dbsize",
    "swapdb",
    "time",
    "lastsave",
    "reset",
    "role",
    "publish",
    "spublish",
    "multi",
    "discard",
    "watch",
    "unwatch",
    "get",
    "setnx",
    "getset",
    "getdel",
    "getex",
    "mget",
    "append",
    "strlen",
    "incr",
    "incrby",
    "decr",
    "decrby",
    "incrbyfloat",
    "getbit",
    "bitfield_ro",
    "unlink",
    "exists",
    "touch",
    "type",
    "renamenx",
    "move",
    "expire",
    "pexpire",
    "expireat",
    "pexpireat",
    "ttl",
    "pttl",
    "expiretime",
    "pexpiretime",
    "persist",
];

/// Whether the command at `position` in [`SPECS`] is one Redis flags `fast`.
pub fn is_fast(position: usize) -> bool {
    static FAST: std::sync::OnceLock<Vec<bool>> = std::sync::OnceLock::new();
    FAST.get_or_init(|| {
        SPECS
            .iter()
            .map(|spec| FAST_COMMANDS.contains(&spec.name))
            .collect()
    })
    .get(position)
    .copied()
    .unwrap_or(false)
}

/// Whether the command at `position` in [`SPECS`] waits by design (WAIT,
/// WAITAOF), so its time is not latency the server caused.
pub fn blocks_by_design(position: usize) -> bool {
    SPECS
        .get(position)
        .is_some_and(|spec| matches!(spec.name, "wait" | "waitaof"))
}

/// Redis's reply to a command it does not have.
fn unknown_command(args: &[Bytes]) -> Reply {
    let mut words = String::new();
    for arg in &args[1..] {
        if words.len() >= 128 {
            break;
        }
        let text = String::from_utf8_lossy(arg);
        let room = 128 - words.len();
        let clipped: String = text.chars().take(room).collect();
        words.push_str(&format!("'{clipped}' "));
    }
    let name: String = String::from_utf8_lossy(&args[0])
        .chars()
        .take(128)
        .collect();
    Reply::err(format!(
        "unknown command '{name}', with args beginning with: {words}"
    ))
}

pub fn wrong_arity(name: &str) -> Reply {
    Reply::err(format!("wrong number of arguments for '{name}' command"))
}

/// The checks every command passes before it runs, in Redis 7's order: it
/// exists, its arity, its subcommand; then the client is authenticated (or
/// the command may run before); then key lengths. So a signed-out client
/// hears "unknown command" or "wrong number of arguments" before `NOAUTH`,
/// as from Redis. `command` is `spec_index(args)`.
pub(super) fn check(
    session: &Session,
    shared: &Shared,
    args: &[Bytes],
    command: Option<usize>,
) -> Result<&'static Spec, Reply> {
    let Some(position) = command else {
        return Err(unknown_command(args));
    };
    let spec = &SPECS[position];
    let count = args.len() as i32;
    if (spec.arity > 0 && count != spec.arity) || (spec.arity < 0 && count < -spec.arity) {
        return Err(wrong_arity(spec.name));
    }
    subcommands::check_subcommand(position, args)?;
    let may_run_signed_out = matches!(spec.name, "auth" | "hello" | "quit" | "reset");
    if !session.authenticated && !may_run_signed_out {
        return Err(Reply::Error("NOAUTH Authentication required.".into()));
    }
    check_key_lengths(spec, shared, args)?;
    Ok(spec)
}

/// Whether CLIENT PAUSE holds this request, and as a write or not: `None`
/// for a request that is refused anyway (unknown, wrong arity, not signed
/// in), which Redis answers at once even while paused. EXEC counts as a
/// write when its transaction writes.
pub fn paused_as_write(session: &Session, shared: &Shared, args: &[Bytes]) -> Option<bool> {
    let spec = check(session, shared, args, spec_index(args)).ok()?;
    if spec.name == "exec" {
        return Some(session.transaction.as_ref().is_some_and(|transaction| {
            transaction.queued.iter().any(|queued| match &queued.kind {
                txn::QueuedKind::Op(op) => op.writes(),
                txn::QueuedKind::Local => queued.spec.write,
                txn::QueuedKind::Refused(_) => false,
            })
        }));
    }
    Some(spec.write)
}

fn check_key_lengths(spec: &Spec, shared: &Shared, args: &[Bytes]) -> Result<(), Reply> {
    let limit = shared.config.max_key_bytes;
    if key_positions(spec, args.len()).any(|index| args[index].len() > limit) {
        return Err(Reply::err(format!(
            "key is longer than {limit} bytes (--max-key-bytes)"
        )));
    }
    Ok(())
}

/// Where the keys are in a request of `count` words (the name included)
/// for a command of `spec` whose arity the request meets.
pub fn key_positions(spec: &Spec, count: usize) -> impl Iterator<Item = usize> {
    let count = count as i32;
    let last = if spec.last_key < 0 {
        count + spec.last_key
    } else {
        spec.last_key.min(count - 1)
    };
    let (first, step) = (spec.first_key, spec.step.max(1));
    (first..=last)
        .step_by(step as usize)
        .filter(move |_| first > 0)
        .map(|index| index as usize)
}

/// What the connection should do with one request.
pub enum Plan {
    /// Submit this write now, without waiting; finish its reply from the outcome.
    Write(Command, Finish),
    /// Answer this at once (a bad argument, `+QUEUED`…).
    Reply(Reply),
    /// Answer this refusal at once: the command did not run (unknown, wrong
    /// arity, not authenticated).
    Refused(Reply),
    /// Wait for earlier writes, then run this read op ([`read`]).
    Read(RedisOp),
    /// Wait for earlier writes, then [`execute`] it.
    Execute(&'static Spec),
}

/// The limits op parsing checks, from the server's configuration.
pub(super) fn op_limits(shared: &Shared) -> ops::OpLimits {
    ops::OpLimits {
        max_value_bytes: shared.config.limits.max_bulk_bytes as u64,
    }
}

/// Decides how to run a request: a write becomes a store command the
/// connection can pipeline into one group commit, a read an op to run on the
/// current entries; inside MULTI the request is queued instead.
pub fn plan(
    session: &mut Session,
    shared: &Shared,
    args: &[Bytes],
    command: Option<usize>,
) -> Plan {
    if session.tracking.is_some() {
        session.track_reads(shared, args, command);
    }
    if session.transaction.is_some() {
        return txn::queue(session, shared, args, command);
    }
    let spec = match check(session, shared, args, command) {
        Ok(spec) => spec,
        Err(reply) => return Plan::Refused(txn::refuse(session, args, reply)),
    };
    session.last_command = spec.name;
    // As a Redis monitor is flagged a replica, it may not touch keys.
    if session.monitoring && (spec.write || reads_keys(spec, args)) {
        return Plan::Refused(Reply::err("Replica can't interact with the keyspace"));
    }
    if session.protocol == crate::resp::Protocol::Resp2
        && session.is_subscribed()
        && !pubsub::allowed_while_subscribed(spec.name)
    {
        let refusal = Reply::err(format!(
            "Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET \
             are allowed in this context",
            spec.name
        ));
        return Plan::Refused(txn::refuse(session, args, refusal));
    }
    match ops::parse(spec.name, args, session.db, op_limits(shared)) {
        Some(Err(reply)) if spec.name == "restore" => {
            Plan::Reply(restore_refusal(shared, session.db, args, reply))
        }
        Some(Err(reply)) => Plan::Reply(reply),
        Some(Ok(op)) if op.writes() => {
            let (command, finish) = write_command(session.db, op);
            Plan::Write(command, finish)
        }
        Some(Ok(op)) => Plan::Read(op),
        None => Plan::Execute(spec),
    }
}

/// The store command for a write op in database `db`. The commonest writes
/// (SET, DEL, MSET, GETDEL) to database 0 keep the plain put/delete records,
/// which are smaller and need no op to run; everything else is logged as its
/// op.
fn write_command(db: u8, op: RedisOp) -> (Command, Finish) {
    if db != 0 {
        return logged_op(db, op);
    }
    match op {
        RedisOp::Set {
            key,
            value,
            expiry: expiry @ (SetExpiry::Clear | SetExpiry::At(_)),
            condition,
            get,
        } => {
            let finish = match (get, condition) {
                (true, _) => Finish::Previous,
                (false, Guard::None) => Finish::Ok,
                (false, _) => Finish::OkOrNull,
            };
            let expires_at_ms = match expiry {
                SetExpiry::At(at) => at,
                _ => 0,
            };
            let command = Command::Put {
                key,
                value,
                expires_at_ms,
                guard: condition,
            };
            (command, finish)
        }
        RedisOp::Del { mut keys } if keys.len() == 1 => {
            let key = keys.remove(0);
            (Command::delete(key), Finish::Changed)
        }
        RedisOp::Del { keys } => {
            let ops = keys.into_iter().map(|key| Op::Delete { key }).collect();
            let command = Command::Txn {
                guards: Vec::new(),
                ops,
            };
            (command, Finish::Changed)
        }
        RedisOp::GetDel { key } => (Command::delete(key), Finish::Previous),
        RedisOp::MSet {
            pairs,
            only_if_none_exist,
        } => {
            let guards = match only_if_none_exist {
                true => pairs
                    .iter()
                    .map(|(key, _)| (key.clone(), Guard::Absent))
                    .collect(),
                false => Vec::new(),
            };
            let ops = pairs
                .into_iter()
                .map(|(key, value)| Op::Put {
                    key,
                    value,
                    expires_at_ms: 0,
                })
                .collect();
            let finish = match only_if_none_exist {
                true => Finish::Applied,
                false => Finish::Ok,
            };
            (Command::Txn { guards, ops }, finish)
        }
        op => logged_op(db, op),
    }
}

/// Redis refuses a RESTORE onto a key that exists (without REPLACE) before
/// it looks at the TTL or the payload: so does this, though those are
/// checked first here, without the log. A refusal of the options stands.
fn restore_refusal(shared: &Shared, db: u8, args: &[Bytes], refusal: Reply) -> Reply {
    let Ok(options) = ops::restore_options(args) else {
        return refusal;
    };
    let now = crate::store::now_ms();
    if !options.replace && shared.store.state().read().get(db, &args[1], now).is_some() {
        return util::answer_reply(redis_op::Answer::BusyKey);
    }
    refusal
}

/// A write op logged as itself, answered by its answer.
fn logged_op(db: u8, op: RedisOp) -> (Command, Finish) {
    let command = Command::Redis(RedisCommand {
        db,
        guards: Vec::new(),
        ops: vec![op],
    });
    (command, Finish::Answer)
}

/// Runs a read op in database `db` on its keys' entries, all read at one
/// instant.
pub fn read(shared: &Shared, session: &Session, op: RedisOp) -> Reply {
    let db = session.db;
    let touch = read_touches(session, session.last_command, &op);
    // One clock reading and one read lock for the lookups and the op.
    let now = crate::store::now_ms();
    if let RedisOp::Get { key } = &op {
        return get(shared, db, key, touch, now);
    }
    let mut view = {
        let state = shared.store.state().read();
        let entries = op
            .keys()
            .into_iter()
            .map(|key| {
                let entry = state.get(db, key, now);
                if touch && let Some(entry) = entry {
                    entry.accessed.touch(now);
                }
                (key.clone(), entry.cloned())
            })
            .collect();
        let len = match op {
            RedisOp::DbSize => state.live_len(db, now),
            _ => 0,
        };
        ReadView::new(entries, len)
    };
    // Redis reports a miss for every read lookup but TYPE's.
    if !matches!(op, RedisOp::Type { .. }) {
        for (key, entry) in &view.entries {
            if entry.is_none() {
                report_miss(shared, db, key);
            }
        }
    }
    util::answer_reply(redis_op::run(&mut view, db, op, now))
}

/// GET, the commonest read, without [`read`]'s general path: one lookup
/// under the read lock and a clone of the value alone, where the general path
/// collects the op's keys and a copy of each whole entry into vectors first
/// (two allocations and a clone of the key per GET). The reply is the one
/// `redis_op::run` gives for `RedisOp::Get`.
fn get(shared: &Shared, db: u8, key: &Bytes, touch: bool, now: u64) -> Reply {
    let value = {
        let state = shared.store.state().read();
        state.get(db, key, now).map(|entry| {
            if touch {
                entry.accessed.touch(now);
            }
            entry.value.clone()
        })
    };
    match value {
        Some(value) => Reply::Bulk(value),
        None => {
            report_miss(shared, db, key);
            Reply::Null
        }
    }
}

/// A read found `key` absent: the `keymiss` event, if anyone asked for it.
fn report_miss(shared: &Shared, db: u8, key: &Bytes) {
    if shared.keyspace_events.wants_key_misses() {
        shared
            .keyspace_events
            .publish_key_miss(&shared.pubsub, db, key);
    }
}

/// Whether a read moves its keys' last access on (`OBJECT IDLETIME`), as in
/// Redis: reads of a value do, unless the client set `CLIENT NO-TOUCH`;
/// TOUCH always does; EXISTS, TYPE and the TTL family never do. `command`
/// names the command that runs `op`: TOUCH runs as EXISTS.
pub(super) fn read_touches(session: &Session, command: &str, op: &RedisOp) -> bool {
    command == "touch" || (!session.no_touch && op.counts_as_access())
}

/// The entries a read op looks at, fetched from its database before it runs
/// (a read op addresses only that one).
struct ReadView {
    entries: Vec<(Bytes, Option<Entry>)>,
    /// Where each key is in `entries`, for views too long to search in turn:
    /// an MGET or EXISTS of n keys looks each one up, so a search of the
    /// list would cost n² comparisons (50,000 keys took 1.9 s on the one
    /// thread that serves every RESP client).
    positions: Option<HashMap<Bytes, usize>>,
    len: usize,
}

/// Views of up to this many keys are searched in turn.
const SEARCHED_VIEW_KEYS: usize = 8;

impl ReadView {
    fn new(entries: Vec<(Bytes, Option<Entry>)>, len: usize) -> ReadView {
        let positions = (entries.len() > SEARCHED_VIEW_KEYS).then(|| {
            let mut positions = HashMap::with_capacity(entries.len());
            for (position, (key, _)) in entries.iter().enumerate() {
                // A key named twice was fetched twice alike; the first serves.
                positions.entry(key.clone()).or_insert(position);
            }
            positions
        });
        ReadView {
            entries,
            positions,
            len,
        }
    }
}

impl Keyspace for ReadView {
    fn live(&self, _: u8, key: &[u8]) -> Option<&Entry> {
        let found = match &self.positions {
            Some(positions) => positions
                .get(key)
                .and_then(|&position| self.entries.get(position)),
            None => self.entries.iter().find(|(fetched, _)| fetched == key),
        };
        found.and_then(|(_, entry)| entry.as_ref())
    }

    // A read op never writes; these exist only to satisfy the trait.
    fn put(&mut self, _: u8, _: &[u8], _: Bytes, _: u64) {
        debug_assert!(false, "a read op wrote");
    }

    fn remove(&mut self, _: u8, _: &[u8]) -> bool {
        debug_assert!(false, "a read op wrote");
        false
    }

    fn clear(&mut self, _: u8) {
        debug_assert!(false, "a read op wrote");
    }

    fn key_count(&self, _: u8) -> usize {
        self.len
    }

    fn swap(&mut self, _: u8, _: u8) {
        debug_assert!(false, "a read op wrote");
    }
}

/// Whether a request is really the first line of an HTTP request (`POST /
/// HTTP/1.1`, `Host: …`): a cross-protocol attack from a browser, answered by
/// closing the connection, as Redis does.
pub fn looks_like_http(args: &[Bytes]) -> bool {
    args.first().is_some_and(|name| {
        name.eq_ignore_ascii_case(b"post") || name.eq_ignore_ascii_case(b"host:")
    })
}

/// Whether a command reads the keyspace (and so needs a read barrier on a
/// cluster replica): everything but the connection and server commands and
/// the transaction commands. MULTI must never fail for want of a quorum: a
/// failed MULTI would let the commands pipelined after it run at once,
/// outside any transaction. EXEC's record is linearizable by itself, and it
/// takes the barrier for the commands it runs locally ([`txn`]). Of MEMORY
/// (`args` the whole request), only USAGE reads a key: STATS and DOCTOR
/// answer without a quorum, as Redis Cluster answers them.
pub fn reads_keys(spec: &Spec, args: &[Bytes]) -> bool {
    !server::handles(spec.name)
        && !acl::handles(spec.name)
        && !diagnostics::handles(spec.name)
        && !pubsub::handles(spec.name)
        && !matches!(spec.name, "multi" | "exec" | "discard" | "unwatch")
        && (spec.name != "memory" || args.get(1).is_some_and(|sub| util::is(sub, "usage")))
}

/// Runs a request [`plan`] sent here to its reply.
pub async fn execute(
    session: &mut Session,
    shared: &Shared,
    spec: &'static Spec,
    args: &[Bytes],
) -> Reply {
    let result = match spec.name {
        name if server::handles(name) => server::run(session, shared, name, args).await,
        name if acl::handles(name) => acl::run(shared, args),
        name if diagnostics::handles(name) => {
            diagnostics::run(session.id, shared, name, args).await
        }
        name if txn::handles(name) => txn::run(session, shared, name, args).await,
        name if pubsub::handles(name) => pubsub::run(session, shared, name, args),
        name if keys::handles(name) => keys::run(shared, session.db, name, args).await,
        name if migrate::handles(name) => migrate::run(shared, session.db, args).await,
        name => strings::run(shared, session.db, name, args).await,
    };
    result.unwrap_or_else(|reply| reply)
}

/// A command's result: its reply, or an error reply.
pub type CommandResult = Result<Reply, Reply>;

impl From<Error> for Reply {
    fn from(error: Error) -> Reply {
        store_error(&error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(value: &str) -> Option<Entry> {
        Some(Entry {
            value: Bytes::copy_from_slice(value.as_bytes()),
            mod_revision: 1,
            expires_at_ms: 0,
            accessed: Default::default(),
        })
    }

    #[test]
    fn a_read_view_finds_each_key_whether_searched_or_indexed() {
        for count in [1, SEARCHED_VIEW_KEYS, SEARCHED_VIEW_KEYS + 1, 1000] {
            let mut entries: Vec<(Bytes, Option<Entry>)> = (0..count)
                .map(|n| {
                    let key = Bytes::from(format!("k{n}"));
                    let entry = if n % 3 == 0 {
                        None
                    } else {
                        stored(&format!("v{n}"))
                    };
                    (key, entry)
                })
                .collect();
            // MGET k1 … k1: a key named twice is fetched twice alike.
            entries.push((Bytes::from_static(b"k1"), stored("v1")));
            let view = ReadView::new(entries, 0);
            assert_eq!(
                view.positions.is_some(),
                count + 1 > SEARCHED_VIEW_KEYS,
                "{count} keys"
            );
            for n in 0..count {
                let found = view.live(0, format!("k{n}").as_bytes());
                let want = (n % 3 != 0).then(|| format!("v{n}"));
                assert_eq!(
                    found.map(|entry| entry.value.clone()),
                    want.map(Bytes::from),
                    "k{n} of {count}"
                );
            }
            assert!(view.live(0, b"absent").is_none());
        }
    }

    #[test]
    fn every_command_has_one_family_and_a_unique_name() {
        for (index, spec) in SPECS.iter().enumerate() {
            let families = [
                server::handles(spec.name),
                acl::handles(spec.name),
                diagnostics::handles(spec.name),
                txn::handles(spec.name),
                keys::handles(spec.name),
                migrate::handles(spec.name),
            ];
            assert!(
                families.iter().filter(|&&family| family).count() <= 1,
                "{} in two families",
                spec.name
            );
            assert!(
                SPECS[index + 1..]
                    .iter()
                    .all(|other| other.name != spec.name),
                "{} listed twice",
                spec.name
            );
            assert_eq!(spec.name, spec.name.to_ascii_lowercase());
        }
    }
}
