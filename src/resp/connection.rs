//! One client connection: read requests, run them in order, write replies.
//!
//! Everything already buffered is served as one batch. Consecutive writes that
//! need no read ("blind" writes: SET, MSET, DEL…) are collected and submitted
//! together ([`KvStore::submit_all`]), so a pipeline of them shares one sync;
//! a command that reads first waits for the writes before it (a pipeline sees
//! its own writes). Replies are encoded in request order and sent once the
//! batch is done, so a write's reply leaves only after its sync.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use std::time::Instant;

use super::Shared;
use super::clients::{Buffers, ClientHandle};
use super::cmd::{self, Finish, Plan, Session};
use super::frame::{Limits, Reply, RequestParser};
use super::monitor::Origin;
use super::stats::Ran;
use crate::latency_monitor::Event;
use crate::store::{Command, DropLater, KvStore, Submission, origin};

/// Replies not yet encoded, in request order, and writes not yet submitted.
#[derive(Default)]
struct Pipeline {
    replies: VecDeque<Pending>,
    unsubmitted: Vec<Command>,
}

enum Pending {
    Ready(Reply, Counted),
    Write(Slot, Finish, Counted),
}

/// Where a write is on its way to the store.
enum Slot {
    /// Still in `unsubmitted`.
    Unsubmitted,
    Submitted(Submission),
    /// The store took fewer writes than it was given (it is closing).
    Lost,
}

/// What a reply is counted as in the command stats, and the request it
/// answers (kept until then for the slow log: it is dropped after the reply
/// either way, so keeping it costs nothing).
struct Counted {
    command: Option<usize>,
    ran: Ran,
    arrived: Instant,
    args: Vec<Bytes>,
    /// CLIENT REPLY OFF or SKIP: counted, but not sent.
    withheld: bool,
}

impl Counted {
    /// Counts the reply in the stats, and logs the request if it was slow
    /// (under `session`'s name as it is now).
    fn record(self, shared: &Shared, reply: &Reply, client: &ClientHandle, session: &Session) {
        let elapsed = self.arrived.elapsed();
        shared.stats.commands.record(
            self.command
                .map(|position| cmd::stat_index(position, &self.args)),
            self.ran,
            elapsed,
            reply,
        );
        if shared.slowlog.is_slow(elapsed) {
            let name = session.name.clone().unwrap_or_default();
            shared.slowlog.push(&self.args, elapsed, &client.addr, name);
        }
        // WAIT and WAITAOF wait by design; Redis leaves blocked time out too.
        if let Some(position) = self.command
            && matches!(self.ran, Ran::Yes)
            && shared.latency.reaches_threshold(elapsed)
            && !cmd::blocks_by_design(position)
        {
            let event = if cmd::is_fast(position) {
                Event::FastCommand
            } else {
                Event::Command
            };
            shared.latency.observe(event, elapsed);
        }
        if matches!(self.ran, Ran::Yes) && self.command.is_some() {
            let origin = Origin {
                db: session.db,
                addr: &client.addr,
            };
            shared.monitors.feed(origin, &self.args);
        }
    }
}

/// A pipeline that replaced fewer entries than this frees them itself (an
/// unpipelined client's one entry would cost the freeing thread a wake-up
/// per request).
const FREED_LATER_MIN_BATCH: usize = 8;

impl Pipeline {
    fn push_write(&mut self, command: Command, finish: Finish, counted: Counted) {
        self.unsubmitted.push(command);
        self.replies
            .push_back(Pending::Write(Slot::Unsubmitted, finish, counted));
    }

    /// Submits the collected writes of connection `id` as one batch.
    fn submit(&mut self, store: &dyn KvStore, id: u64) {
        if self.unsubmitted.is_empty() {
            return;
        }
        let commands = std::mem::take(&mut self.unsubmitted);
        let mut submissions = origin::with(id, || store.submit_all(commands)).into_iter();
        for pending in self.replies.iter_mut() {
            if let Pending::Write(slot @ Slot::Unsubmitted, ..) = pending {
                *slot = submissions.next().map_or(Slot::Lost, Slot::Submitted);
            }
        }
    }

    /// Submits what is collected, waits for every write, and encodes all
    /// replies into `output`.
    async fn finish(
        &mut self,
        shared: &Shared,
        client: &ClientHandle,
        session: &Session,
        output: &mut BytesMut,
    ) {
        self.submit(shared.store.as_ref(), session.id);
        // The entries the writes replaced, when their replies do not show
        // them: freed off this loop.
        let mut overwritten = DropLater::default();
        while let Some(pending) = self.replies.pop_front() {
            let (reply, counted) = match pending {
                Pending::Ready(reply, counted) => (reply, counted),
                Pending::Write(Slot::Submitted(submission), finish, counted) => {
                    match submission.await {
                        Ok(mut outcome) => {
                            if !finish.shows_previous()
                                && let Some(previous) = outcome.previous.take()
                            {
                                let bytes = previous.value.len();
                                overwritten.push(previous, bytes);
                            }
                            (finish.reply(outcome), counted)
                        }
                        Err(error) => (cmd::store_error(&error), counted),
                    }
                }
                Pending::Write(_, _, counted) => (cmd::store_error(&crate::Error::Closed), counted),
            };
            let withheld = counted.withheld;
            counted.record(shared, &reply, client, session);
            if !withheld {
                reply.encode_as(session.protocol, output);
            }
        }
        overwritten.finish(FREED_LATER_MIN_BATCH);
    }
}

pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    id: u64,
    shared: &Shared,
    client: &ClientHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let _leave_on_panic = LeaveOnPanic { shared, id };
    let mut session = Session::new(id, client.addr.clone(), shared.config.auth_token.is_none());
    let mut parser = RequestParser::new(limits_for(&session, shared));
    let mut input = BytesMut::with_capacity(16 << 10);
    let mut output = BytesMut::with_capacity(16 << 10);
    // Kept between batches so its queue's allocation is reused.
    let mut pipeline = Pipeline::default();
    // The stop and kill signals are waited for by one future each for the
    // connection's whole life: made afresh for every read, each would join
    // and leave its signal's list of waiters once per request.
    let mut stop_signal = shutdown.clone();
    let stopped = stop_signal.wait_for(|&stop| stop);
    tokio::pin!(stopped);
    let killed = client.killed();
    tokio::pin!(killed);
    loop {
        if input.capacity() - input.len() < 4096 {
            input.reserve(16 << 10);
        }
        // The read first, not a branch at random: a wake-up for a request
        // then polls nothing else. A client that always has a request ready
        // sees the server stop or its connection killed after each batch.
        let read = tokio::select! {
            biased;
            read = stream.read_buf(&mut input) => Ok(read),
            _ = &mut stopped => break,
            () = &mut killed => break,
            open = pushes(&mut session, &mut output) => Err(open),
        };
        let read = match read {
            Ok(read) => read,
            // MONITOR lines and messages go out between requests; a
            // connection cut off for falling behind them closes.
            // A reader that stops reading must not keep the connection past
            // a kill or the server's stop.
            Err(true) => {
                let sent = tokio::select! {
                    sent = stream.write_all(&output) => sent.is_ok(),
                    () = client.killed() => false,
                    _ = shutdown.changed() => false,
                };
                if !sent {
                    break;
                }
                output.clear();
                continue;
            }
            Err(false) => break,
        };
        if !matches!(read, Ok(count) if count > 0) {
            break;
        }
        client.set_busy();
        let connection = Connection {
            stream: &mut stream,
            session: &mut session,
            parser: &mut parser,
            shared,
            client,
            shutdown: &mut shutdown,
            pipeline: &mut pipeline,
        };
        let served = connection.serve_buffered(&mut input, &mut output);
        let keep_open = served.await;
        let buffers = Buffers {
            query: input.len(),
            query_capacity: input.capacity(),
            reply_capacity: output.capacity(),
        };
        client.update(&session.view(session.last_command), buffers);
        if stream.write_all(&output).await.is_err()
            || !keep_open
            || client.is_killed()
            || *shutdown.borrow()
        {
            break;
        }
        output.clear();
        if output.capacity() > 1 << 20 {
            output = BytesMut::with_capacity(16 << 10);
        }
    }
    session.leave_pushes(shared);
    let _ = stream.shutdown().await;
}

/// Takes a connection whose task panics out of the Pub/Sub registry, the
/// monitors and client-side caching's trackers, which it would otherwise
/// stay in (counted by PUBSUB NUMSUB and INFO, and sent to) until the server
/// stops. A connection that ends normally leaves through
/// [`Session::leave_pushes`].
struct LeaveOnPanic<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for LeaveOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.shared.pubsub.forget_client(self.id);
            self.shared.monitors.unsubscribe(self.id);
            self.shared.stop_tracking(self.id);
        }
    }
}

/// Waits for pushes to a connection that has any coming and encodes them
/// into `out` (false once it was cut off); never resolves for one that has
/// none.
async fn pushes(session: &mut Session, out: &mut BytesMut) -> bool {
    match session.pushes() {
        Some((inbox, wanted)) => inbox.next(wanted, out).await,
        None => std::future::pending().await,
    }
}

/// Encodes every push queued for this connection now (at most the queue's
/// bound); false if it was cut off.
fn drain_pushes(session: &mut Session, output: &mut BytesMut) -> bool {
    session
        .pushes()
        .is_none_or(|(inbox, wanted)| inbox.drain(wanted, output, usize::MAX))
}

/// Replies buffered beyond this are sent before the batch ends (only between
/// commands, after every write before them is durable), so a pipeline of
/// large reads cannot make the server hold all their replies at once.
const MAX_BUFFERED_REPLY_BYTES: usize = 1 << 20;

/// Limits while the client has not authenticated: as in Redis, tight enough
/// that a client without the password cannot make the server buffer much.
const UNAUTHENTICATED_LIMITS: Limits = Limits {
    max_bulk_bytes: 16 << 10,
    max_array_len: 10,
    max_inline_bytes: 16 << 10,
};

fn limits_for(session: &Session, shared: &Shared) -> Limits {
    if session.authenticated {
        shared.config.limits
    } else {
        UNAUTHENTICATED_LIMITS
    }
}

/// One connection's state while it serves a batch.
struct Connection<'a, S> {
    stream: &'a mut S,
    session: &'a mut Session,
    parser: &'a mut RequestParser,
    shared: &'a Shared,
    client: &'a ClientHandle,
    /// The server's stop signal: a command held by CLIENT PAUSE gives up.
    shutdown: &'a mut watch::Receiver<bool>,
    /// Empty between batches.
    pipeline: &'a mut Pipeline,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<'_, S> {
    /// Serves every whole request in `input`; false when the connection must
    /// close (QUIT, a protocol error, or a failed send).
    async fn serve_buffered(self, input: &mut BytesMut, output: &mut BytesMut) -> bool {
        let Connection {
            stream,
            session,
            parser,
            shared,
            client,
            shutdown,
            pipeline,
        } = self;
        // Every batch ends in `finish`, which empties the pipeline, or
        // closes the connection.
        debug_assert!(pipeline.replies.is_empty() && pipeline.unsubmitted.is_empty());
        // On a replica, one read barrier covers every command already
        // received (each arrived before it, so its read is linearizable after
        // it), taken before the first command that reads keys.
        let mut barrier: Option<Result<(), crate::Error>> =
            (!shared.node.is_replicated()).then_some(Ok(()));
        // Every request here came in the same read: one clock reading dates
        // them all (a latency counts from it, waits behind earlier ones too).
        let mut arrived = Instant::now();
        loop {
            let args = match parser.take(input) {
                Ok(Some(args)) => args,
                Ok(None) => break,
                Err(error) => {
                    tracing::debug!(client = session.id, %error, "closing a RESP connection");
                    shared
                        .stats
                        .protocol_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    pipeline.finish(shared, client, session, output).await;
                    if !session.replies_off {
                        Reply::err(error).encode_as(session.protocol, output);
                    }
                    return false;
                }
            };
            if args.is_empty() {
                continue;
            }
            if cmd::looks_like_http(&args) {
                tracing::warn!(
                    client = session.id,
                    "possible security attack: an HTTP request on the RESP port; closing"
                );
                pipeline.finish(shared, client, session, output).await;
                return false;
            }
            shared
                .stats
                .total_commands
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // CLIENT PAUSE: a held command waits before it runs, once the
            // replies before it are sent.
            if shared.pause.is_set()
                && let Some(write) = cmd::paused_as_write(session, shared, &args)
                && shared.pause.holds(write)
            {
                pipeline.finish(shared, client, session, output).await;
                if stream.write_all(output).await.is_err() {
                    return false;
                }
                output.clear();
                tokio::select! {
                    () = shared.pause.wait(write) => {}
                    () = client.killed() => return false,
                    _ = shutdown.wait_for(|&stop| stop) => return false,
                }
                // Time held by CLIENT PAUSE is not the server being slow: the
                // slow log and the latency monitor count from here, as
                // Redis counts from when a paused command runs.
                arrived = Instant::now();
            }
            // A command queued by MULTI is counted when EXEC runs it, as in
            // Redis, not when it is queued.
            let queuing = session.transaction.is_some();
            let position = cmd::spec_index(&args);
            let plan = cmd::plan(session, shared, &args, position);
            let command = match (&plan, queuing) {
                (Plan::Reply(_), true) => None,
                _ => position,
            };
            // Only a command run here (CLIENT REPLY) changes whether replies
            // are sent, so the others can be decided now.
            let withheld = !matches!(plan, Plan::Execute(_)) && session.withhold_reply();
            let counted = Counted {
                command,
                ran: Ran::Yes,
                arrived,
                args,
                withheld,
            };
            match plan {
                Plan::Write(command, finish) => pipeline.push_write(command, finish, counted),
                Plan::Reply(reply) => pipeline.replies.push_back(Pending::Ready(reply, counted)),
                Plan::Refused(reply) => {
                    let counted = Counted {
                        ran: Ran::Rejected,
                        ..counted
                    };
                    pipeline.replies.push_back(Pending::Ready(reply, counted));
                }
                Plan::Read(op) => {
                    pipeline.finish(shared, client, session, output).await;
                    if barrier.is_none() {
                        barrier = Some(shared.node.read_barrier(session.consistency).await);
                    }
                    let reply = match &barrier {
                        Some(Err(error)) => cmd::store_error(error),
                        _ => cmd::read(shared, session, op),
                    };
                    counted.record(shared, &reply, client, session);
                    if !withheld {
                        reply.encode_as(session.protocol, output);
                    }
                }
                Plan::Execute(spec) => {
                    pipeline.finish(shared, client, session, output).await;
                    if cmd::reads_keys(spec, &counted.args) {
                        if barrier.is_none() {
                            barrier = Some(shared.node.read_barrier(session.consistency).await);
                        }
                        if let Some(Err(error)) = &barrier {
                            let reply = cmd::store_error(error);
                            counted.record(shared, &reply, client, session);
                            if !session.withhold_reply() {
                                reply.encode_as(session.protocol, output);
                            }
                            continue;
                        }
                    }
                    // Pushes queued before the command go out before its
                    // reply; those it causes (a PUBLISH to a channel this
                    // connection is subscribed to) after it, as in Redis 7.
                    if !drain_pushes(session, output) {
                        return false;
                    }
                    let was_authenticated = session.authenticated;
                    let reply = cmd::execute(session, shared, spec, &counted.args).await;
                    if session.hang_up {
                        return false;
                    }
                    counted.record(shared, &reply, client, session);
                    // Subscription confirmations are pushes, which CLIENT
                    // REPLY OFF does not silence (as in Redis).
                    if !session.withhold_reply() || reply.is_push() {
                        reply.encode_as(session.protocol, output);
                    }
                    if session.authenticated != was_authenticated {
                        parser.set_limits(limits_for(session, shared));
                    }
                    if session.quit {
                        return false;
                    }
                    if output.len() > MAX_BUFFERED_REPLY_BYTES {
                        if stream.write_all(output).await.is_err() {
                            return false;
                        }
                        output.clear();
                    }
                }
            }
        }
        pipeline.finish(shared, client, session, output).await;
        if input.capacity() > 4 << 20 && input.is_empty() {
            *input = BytesMut::with_capacity(16 << 10);
        }
        true
    }
}
