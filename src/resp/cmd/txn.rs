//! MULTI / EXEC / DISCARD / WATCH / UNWATCH, with Redis's semantics.
//!
//! After MULTI, every command is checked (name, arity, authentication) and
//! queued; an error there marks the transaction failed, and its EXEC answers
//! `EXECABORT` having run nothing. EXEC logs the queued ops as one
//! [`RedisCommand`]: one record, one sync, all at one revision, reads among
//! them seeing the writes before them. The WATCHed keys travel in the record
//! as guards on the revision each had when watched (or, for a key that was
//! absent, the revision it was seen absent at), so the state machine itself
//! refuses the whole command if any changed, expired or was deleted in
//! between, or was created and deleted again, and EXEC answers a null array.
//!
//! SELECT queues as an op of the record too: the ops after it address the
//! database it names, and the connection keeps that database after EXEC.
//!
//! Commands that are not ops of the state machine (PING, TIME, KEYS, SCAN,
//! server commands) are run by the front end after the record is applied, in
//! their place among the replies; they see the transaction's writes but are
//! not atomic with it.

use std::collections::HashSet;

use bytes::Bytes;

use super::super::Shared;
use super::super::frame::Reply;
use super::util::answer_reply;
use super::{CommandResult, Plan, Session, Spec, check, ops};
use crate::store::Guard;
use crate::store::redis_op::{RedisCommand, RedisOp};

/// A command queued after MULTI, with its request (for MONITOR).
#[derive(Debug)]
pub struct Queued {
    pub spec: &'static Spec,
    pub args: Vec<Bytes>,
    pub kind: QueuedKind,
}

/// How EXEC runs a queued command.
#[derive(Debug)]
pub enum QueuedKind {
    /// An op of the state machine: its answer comes from the record.
    Op(RedisOp),
    /// Arguments the op parser refused: this is EXEC's reply in its place.
    Refused(Reply),
    /// Run by the front end once the record is applied.
    Local,
}

/// A transaction being queued.
#[derive(Debug)]
pub struct Transaction {
    pub queued: Vec<Queued>,
    /// A command was refused while queuing: EXEC will abort.
    pub failed: bool,
    /// The database the commands queued so far leave SELECTed: the next
    /// one's ops address it.
    pub db: u8,
}

impl Transaction {
    fn new(db: u8) -> Transaction {
        Transaction {
            queued: Vec::new(),
            failed: false,
            db,
        }
    }
}

pub fn handles(name: &str) -> bool {
    matches!(name, "multi" | "exec" | "discard" | "watch" | "unwatch")
}

/// Plans a request that arrives inside MULTI: queued, or refused.
/// `command` is `spec_index(args)`.
pub fn queue(
    session: &mut Session,
    shared: &Shared,
    args: &[Bytes],
    command: Option<usize>,
) -> Plan {
    let spec = match check(session, shared, args, command) {
        Ok(spec) => spec,
        Err(reply) => return Plan::Refused(refuse(session, args, reply)),
    };
    // As in Redis, SAVE and SHUTDOWN may not be queued: refused, and the
    // transaction fails at EXEC.
    if matches!(spec.name, "save" | "shutdown") {
        if let Some(transaction) = &mut session.transaction {
            transaction.failed = true;
        }
        return Plan::Refused(Reply::err("Command not allowed inside a transaction"));
    }
    // Refused by the commands themselves, after the checks every command
    // passes: a nested MULTI or a WATCH leaves the transaction as it was,
    // but one with the wrong arity has failed it above.
    match spec.name {
        "multi" => return Plan::Reply(Reply::err("MULTI calls can not be nested")),
        "watch" => return Plan::Reply(Reply::err("WATCH inside MULTI is not allowed")),
        _ => {}
    }
    // As in Redis, these run at once rather than queue: QUIT and RESET end
    // the transaction with the connection's state.
    if matches!(spec.name, "exec" | "discard" | "quit" | "reset") {
        return Plan::Execute(spec);
    }
    let Some(transaction) = &mut session.transaction else {
        return Plan::Execute(spec);
    };
    let kind = if spec.name == "select" {
        // An op of the record, so that the ops after it address the database
        // it names; a bad index is EXEC's reply in its place, as in Redis.
        match ops::database_arg(&args[1]) {
            Ok(db) => {
                transaction.db = db;
                QueuedKind::Op(RedisOp::Select { db })
            }
            Err(reply) => QueuedKind::Refused(reply),
        }
    } else {
        match ops::parse(spec.name, args, transaction.db, super::op_limits(shared)) {
            Some(Ok(op)) => QueuedKind::Op(op),
            Some(Err(reply)) => QueuedKind::Refused(reply),
            None => QueuedKind::Local,
        }
    };
    transaction.queued.push(Queued {
        spec,
        args: args.to_vec(),
        kind,
    });
    Plan::Reply(Reply::Simple("QUEUED"))
}

/// A request refused before it ran (unknown, wrong arity, not signed in,
/// not allowed while subscribed): inside MULTI the transaction has failed,
/// and a refused EXEC ends it, with or without MULTI, as Redis's
/// `rejectCommand` does: `EXECABORT` with the reason, the transaction and
/// the WATCHed keys discarded.
pub fn refuse(session: &mut Session, args: &[Bytes], reply: Reply) -> Reply {
    if !args[0].eq_ignore_ascii_case(b"exec") {
        if let Some(transaction) = &mut session.transaction {
            transaction.failed = true;
        }
        return reply;
    }
    session.transaction = None;
    session.watched.clear();
    let reason = match &reply {
        Reply::Error(text) => text.strip_prefix("ERR ").unwrap_or(text),
        _ => "",
    };
    Reply::Error(format!(
        "EXECABORT Transaction discarded because of: {reason}"
    ))
}

pub async fn run(
    session: &mut Session,
    shared: &Shared,
    name: &str,
    args: &[Bytes],
) -> CommandResult {
    match name {
        "multi" => {
            session.transaction = Some(Transaction::new(session.db));
            Ok(Reply::ok())
        }
        "discard" => match session.transaction.take() {
            Some(_) => {
                session.watched.clear();
                Ok(Reply::ok())
            }
            None => Err(Reply::err("DISCARD without MULTI")),
        },
        "watch" => watch(session, shared, &args[1..]),
        "unwatch" => {
            session.watched.clear();
            Ok(Reply::ok())
        }
        _ => exec(session, shared).await,
    }
}

/// Remembers each key's revision (or its absence, and when) the first time it
/// is watched.
fn watch(session: &mut Session, shared: &Shared, keys: &[Bytes]) -> CommandResult {
    if !session.watched.is_empty() && session.watched_db != session.db {
        return Err(Reply::err(WATCH_ACROSS_DATABASES));
    }
    session.watched_db = session.db;
    let (revision, entries) = shared.store.get_entries_at_revision(session.db, keys);
    // A set, not a search of the list per key: WATCH of n keys would
    // otherwise cost n² comparisons on the thread every RESP client shares.
    let mut already: HashSet<Bytes> = session.watched.iter().map(|(key, _)| key.clone()).collect();
    for (key, entry) in keys.iter().zip(entries) {
        if !already.insert(key.clone()) {
            continue;
        }
        // An absent key is watched with the revision it was seen absent at,
        // so creating and deleting it again before EXEC still aborts.
        let guard = entry.map_or(Guard::AbsentSince(revision), |entry| {
            Guard::ModRevision(entry.mod_revision)
        });
        session.watched.push((key.clone(), guard));
    }
    Ok(Reply::ok())
}

const WATCH_ACROSS_DATABASES: &str = "walrus watches keys of one database per \
    transaction: WATCH and EXEC in the database SELECTed for both";

/// The keys, with their databases, that the transaction's read ops access,
/// for EXEC to mark once the transaction has applied. A write sets its key's
/// access time as it applies; a read in the log does not. Like a read outside
/// a transaction, it touches only the entries of the node serving the client,
/// by the same rule ([`super::read_touches`]: NO-TOUCH, which the log does
/// not carry, and TOUCH, which runs as EXISTS).
fn accessed_by_reads(session: &Session, queued: &[Queued]) -> Vec<(u8, Bytes)> {
    let mut db = session.db;
    let mut keys = Vec::new();
    for item in queued {
        let QueuedKind::Op(op) = &item.kind else {
            continue;
        };
        match op {
            RedisOp::Select { db: selected } => db = *selected,
            op if !op.writes() && super::read_touches(session, item.spec.name, op) => {
                keys.extend(op.keys().into_iter().map(|key| (db, key.clone())));
            }
            _ => {}
        }
    }
    keys
}

/// Marks the live ones among `keys` as accessed now.
fn touch(shared: &Shared, keys: Vec<(u8, Bytes)>) {
    if keys.is_empty() {
        return;
    }
    let now = crate::store::now_ms();
    let state = shared.store.state().read();
    for (db, key) in keys {
        if let Some(entry) = state.get(db, &key, now) {
            entry.accessed.touch(now);
        }
    }
}

async fn exec(session: &mut Session, shared: &Shared) -> CommandResult {
    let Some(transaction) = session.transaction.take() else {
        return Err(Reply::err("EXEC without MULTI"));
    };
    let guards = std::mem::take(&mut session.watched);
    if transaction.failed {
        return Err(Reply::Error(
            "EXECABORT Transaction discarded because of previous errors.".into(),
        ));
    }
    if !guards.is_empty() && session.watched_db != session.db {
        return Err(Reply::err(WATCH_ACROSS_DATABASES));
    }
    // Cloning an op copies only reference-counted handles to its bytes.
    let ops: Vec<_> = transaction
        .queued
        .iter()
        .filter_map(|item| match &item.kind {
            QueuedKind::Op(op) => Some(op.clone()),
            _ => None,
        })
        .collect();
    let read_keys = accessed_by_reads(session, &transaction.queued);
    let mut answers = Vec::new().into_iter();
    // SELECTs alone change nothing stored: no record (so no sync, and no
    // quorum needed), and each answers OK below.
    let logged = !guards.is_empty() || ops.iter().any(|op| !matches!(op, RedisOp::Select { .. }));
    if logged {
        let command = RedisCommand {
            db: session.db,
            guards,
            ops,
        };
        let submission = crate::store::origin::with(session.id, || {
            shared.store.submit(crate::store::Command::Redis(command))
        });
        let outcome = submission.await?;
        if !outcome.succeeded {
            return Ok(Reply::NullArray);
        }
        answers = outcome.answers.into_iter();
        touch(shared, read_keys);
    }
    // Commands run locally that read keys see this node's state: on a
    // replica, only after a read barrier, as outside a transaction.
    let local_reads = transaction.queued.iter().any(|item| {
        matches!(item.kind, QueuedKind::Local) && super::reads_keys(item.spec, &item.args)
    });
    let barrier = match local_reads {
        true => shared.node.read_barrier(session.consistency).await,
        false => Ok(()),
    };
    let mut replies = Vec::with_capacity(transaction.queued.len());
    for Queued { spec, args, kind } in transaction.queued {
        let started = std::time::Instant::now();
        let reply = match kind {
            // The connection's database follows the transaction's SELECTs,
            // for the local commands after one and after EXEC, as in Redis.
            QueuedKind::Op(RedisOp::Select { db }) => {
                session.db = db;
                match logged {
                    true => answers.next().map_or(Reply::Null, answer_reply),
                    false => Reply::ok(),
                }
            }
            QueuedKind::Op(_) => answers.next().map_or(Reply::Null, answer_reply),
            QueuedKind::Refused(reply) => reply,
            QueuedKind::Local if super::reads_keys(spec, &args) && barrier.is_err() => barrier
                .as_ref()
                .err()
                .map_or(Reply::Null, super::store_error),
            // A monitor expects no replies in order, so EXEC may not start
            // one (Redis refuses it the same way).
            QueuedKind::Local if spec.name == "monitor" => {
                Reply::err("MONITOR isn't allowed for DENY BLOCKING client")
            }
            // SUBSCRIBE and PSUBSCRIBE run inside EXEC for old clients'
            // sake; Redis never let the newer SSUBSCRIBE do so.
            QueuedKind::Local if spec.name == "ssubscribe" => {
                Reply::err("SSUBSCRIBE isn't allowed for a DENY BLOCKING client")
            }
            QueuedKind::Local => {
                match Box::pin(super::execute(session, shared, spec, &args)).await {
                    // SUBSCRIBE's confirmations, one per channel, are one
                    // item of EXEC's array: the confirmation itself when
                    // there is one, as in Redis, or an array of them.
                    Reply::Sequence(mut replies) if replies.len() == 1 => replies.remove(0),
                    Reply::Sequence(replies) => Reply::Array(replies),
                    reply => reply,
                }
            }
        };
        // Counted and shown to monitors as it runs, as Redis does with a
        // transaction's commands; the ops' shared record and its sync are
        // EXEC's time, not theirs.
        shared.stats.commands.record_run(
            super::spec_position(spec.name),
            started.elapsed(),
            &reply,
        );
        let origin = crate::resp::monitor::Origin {
            db: session.db,
            addr: &session.addr,
        };
        shared.monitors.feed(origin, &args);
        replies.push(reply);
    }
    Ok(Reply::Array(replies))
}
