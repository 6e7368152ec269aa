//! The open RESP connections, for `CLIENT LIST` and `CLIENT KILL`.
//!
//! Each connection registers a [`ClientHandle`] for as long as it is open
//! ([`Registration`] removes it on drop). The connection updates the handle's
//! fields after each batch of commands (relaxed atomics, and the name under a
//! small lock only when it changed), so listing never waits for a connection.
//! A kill sets a flag and wakes the connection, which closes once it is back
//! between requests. A connection waiting in a blocking command (WAIT,
//! WAITAOF) holds a [`Blocked`] guard, through which `CLIENT UNBLOCK` ends
//! the wait early.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

use super::push::Outbox;

/// What a client library says of itself with `CLIENT SETINFO`.
#[derive(Debug, Default)]
struct Library {
    name: String,
    version: String,
}

/// A connection's session as `CLIENT LIST` shows it.
#[derive(Debug, Clone, Copy)]
pub struct SessionView<'a> {
    pub name: Option<&'a Bytes>,
    pub db: u8,
    /// Protocol version (2 or 3).
    pub resp: u8,
    /// The command running or last run; empty before the first.
    pub command: &'static str,
    /// Commands queued since MULTI, or -1 outside a transaction.
    pub multi: i64,
    /// Keys WATCHed.
    pub watch: usize,
    /// In MONITOR mode (flag `O`; never disconnected as idle, as in Redis).
    pub monitor: bool,
    /// Channels SUBSCRIBEd, patterns PSUBSCRIBEd and shard channels
    /// SSUBSCRIBEd (flag `P` when any).
    pub channels: usize,
    pub patterns: usize,
    pub shard_channels: usize,
    /// `CLIENT NO-TOUCH ON` (flag `T`).
    pub no_touch: bool,
    /// Waiting in a blocking command (flag `b`).
    pub blocked: bool,
}

impl SessionView<'_> {
    /// Redis's `flags` letters: `O` for a monitor, `P` for a subscriber, `b`
    /// for a blocked client, `T` for no-touch mode; `N` for none.
    fn flags(&self) -> String {
        let mut flags = String::new();
        if self.blocked {
            flags.push('b');
        }
        if self.monitor {
            flags.push('O');
        } else if self.channels + self.patterns + self.shard_channels > 0 {
            flags.push('P');
        }
        if self.no_touch {
            flags.push('T');
        }
        if flags.is_empty() {
            flags.push('N');
        }
        flags
    }
}

/// A connection's buffers after a batch, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Buffers {
    /// Bytes read but not yet a whole request.
    pub query: usize,
    pub query_capacity: usize,
    pub reply_capacity: usize,
}

/// One open connection as `CLIENT LIST` shows it.
#[derive(Debug)]
pub struct ClientHandle {
    pub id: u64,
    /// The client's address (`ip:port`), and the server's end of it.
    pub addr: String,
    pub laddr: String,
    /// The socket's file descriptor, as CLIENT LIST shows it.
    fd: i32,
    connected: Instant,
    name: Mutex<Option<Bytes>>,
    db: AtomicU8,
    /// Protocol version the client negotiated (2 or 3).
    resp: AtomicU8,
    /// Milliseconds after `connected` of the last command.
    last_active_ms: AtomicU64,
    /// Set while the connection serves what it read: never idle then.
    busy: AtomicBool,
    /// The last command's name (`&'static` from the command table), if any.
    last_command: Mutex<&'static str>,
    multi: AtomicI64,
    watch: AtomicU64,
    monitor: AtomicBool,
    no_touch: AtomicBool,
    channels: AtomicU64,
    patterns: AtomicU64,
    shard_channels: AtomicU64,
    /// [`Buffers`] after the last batch.
    query: AtomicU64,
    query_capacity: AtomicU64,
    reply_capacity: AtomicU64,
    /// The client library's name and version (`CLIENT SETINFO`).
    library: Mutex<Library>,
    /// Where others push to the connection, once it has made its outbox
    /// (client-side caching's redirects find it here).
    outbox: Mutex<Option<Outbox>>,
    killed: AtomicBool,
    wake: Notify,
    /// While the connection waits in a blocking command: how CLIENT UNBLOCK
    /// ends the wait.
    unblock: Mutex<Option<oneshot::Sender<Unblock>>>,
}

/// How `CLIENT UNBLOCK` ends a wait: as if its timeout had passed, or with
/// Redis's `-UNBLOCKED` error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unblock {
    Timeout,
    Error,
}

/// A connection marked as blocked, until this drops.
pub struct Blocked {
    handle: Arc<ClientHandle>,
    unblocked: oneshot::Receiver<Unblock>,
}

impl Blocked {
    /// Resolves when `CLIENT UNBLOCK` ends the wait; never otherwise.
    pub async fn unblocked(&mut self) -> Unblock {
        match (&mut self.unblocked).await {
            Ok(how) => how,
            Err(_) => std::future::pending().await,
        }
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        self.handle.unblock.lock().take();
    }
}

impl ClientHandle {
    /// Records what the connection's session and buffers now are, after a
    /// batch.
    pub fn update(&self, session: &SessionView<'_>, buffers: Buffers) {
        self.busy.store(false, Ordering::Relaxed);
        self.db.store(session.db, Ordering::Relaxed);
        self.resp.store(session.resp, Ordering::Relaxed);
        self.multi.store(session.multi, Ordering::Relaxed);
        self.watch.store(session.watch as u64, Ordering::Relaxed);
        self.monitor.store(session.monitor, Ordering::Relaxed);
        self.no_touch.store(session.no_touch, Ordering::Relaxed);
        self.channels
            .store(session.channels as u64, Ordering::Relaxed);
        self.patterns
            .store(session.patterns as u64, Ordering::Relaxed);
        self.shard_channels
            .store(session.shard_channels as u64, Ordering::Relaxed);
        for (field, bytes) in [
            (&self.query, buffers.query),
            (&self.query_capacity, buffers.query_capacity),
            (&self.reply_capacity, buffers.reply_capacity),
        ] {
            field.store(bytes as u64, Ordering::Relaxed);
        }
        let elapsed = u64::try_from(self.connected.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(elapsed, Ordering::Relaxed);
        let mut stored = self.name.lock();
        if stored.as_ref() != session.name {
            *stored = session.name.cloned();
        }
        drop(stored);
        *self.last_command.lock() = session.command;
    }

    /// Resolves once the connection was killed.
    ///
    /// Several may wait at once: the connection's read loop keeps one
    /// across its batches while a paused command waits on another.
    pub async fn killed(&self) {
        loop {
            // Made before the flag is read, so a kill between the two still
            // wakes it (`notify_waiters` reaches every future made before it).
            let woken = self.wake.notified();
            if self.killed.load(Ordering::Acquire) {
                return;
            }
            woken.await;
        }
    }

    /// Subscribed to a channel or pattern, as of its last batch (Redis's
    /// `pubsub` client type).
    pub fn is_pubsub(&self) -> bool {
        self.channels.load(Ordering::Relaxed)
            + self.patterns.load(Ordering::Relaxed)
            + self.shard_channels.load(Ordering::Relaxed)
            > 0
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Records `CLIENT SETINFO LIB-NAME` (`version` false) or `LIB-VER`.
    pub fn set_library(&self, version: bool, value: &str) {
        let mut library = self.library.lock();
        let field = if version {
            &mut library.version
        } else {
            &mut library.name
        };
        *field = value.to_string();
    }

    /// Marks the connection as serving what it just read, until the next
    /// [`Self::update`]: a long request (a write waiting for a quorum) is not
    /// idleness.
    pub fn set_busy(&self) {
        self.busy.store(true, Ordering::Relaxed);
    }

    /// How long since the connection's last command (or since it opened);
    /// zero while it serves one.
    fn idle(&self) -> Duration {
        if self.busy.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        let since_open = self.connected.elapsed();
        since_open.saturating_sub(Duration::from_millis(
            self.last_active_ms.load(Ordering::Relaxed),
        ))
    }

    fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        // Every waiter wakes; one that starts waiting later reads the flag.
        self.wake.notify_waiters();
    }

    /// The connection's `CLIENT LIST` line (Redis's fields walrus has; the
    /// rest as an idle normal client has them), as of its last batch.
    pub fn list_line(&self) -> String {
        let name = self.name.lock().clone();
        self.line_for(
            &SessionView {
                name: name.as_ref(),
                db: self.db.load(Ordering::Relaxed),
                resp: self.resp.load(Ordering::Relaxed),
                command: *self.last_command.lock(),
                multi: self.multi.load(Ordering::Relaxed),
                watch: self.watch.load(Ordering::Relaxed) as usize,
                monitor: self.monitor.load(Ordering::Relaxed),
                no_touch: self.no_touch.load(Ordering::Relaxed),
                blocked: self.unblock.lock().is_some(),
                channels: self.channels.load(Ordering::Relaxed) as usize,
                patterns: self.patterns.load(Ordering::Relaxed) as usize,
                shard_channels: self.shard_channels.load(Ordering::Relaxed) as usize,
            },
            None,
        )
    }

    /// The line with the session as its own connection sees it now
    /// (`CLIENT INFO`, before the batch it is in has updated the handle).
    /// `serving` is the size of the request being served, which Redis counts
    /// in `qbuf` while it runs; otherwise the buffers are as of the last
    /// batch. The reply buffer is empty once a batch's replies are sent, so
    /// `obl`, `oll` and `omem` are 0.
    pub fn line_for(&self, session: &SessionView<'_>, serving: Option<usize>) -> String {
        let age = self.connected.elapsed().as_secs();
        let idle_seconds = self.idle().as_secs();
        let name = session
            .name
            .map(|name| String::from_utf8_lossy(name))
            .unwrap_or_default();
        let query =
            serving.map_or_else(|| self.query.load(Ordering::Relaxed), |bytes| bytes as u64);
        let query_capacity = self.query_capacity.load(Ordering::Relaxed);
        let reply_capacity = self.reply_capacity.load(Ordering::Relaxed);
        let library = self.library.lock();
        format!(
            "id={} addr={} laddr={} fd={} name={name} age={age} idle={} flags={} db={} sub={} \
             psub={} ssub={} multi={} watch={} qbuf={query} qbuf-free={} argv-mem=0 multi-mem=0 \
             rbs={query_capacity} rbp={query_capacity} obl=0 oll=0 omem=0 tot-mem={} events=r \
             cmd={} user=default redir=-1 resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            self.fd,
            idle_seconds,
            session.flags(),
            session.db,
            session.channels,
            session.patterns,
            session.shard_channels,
            session.multi,
            session.watch,
            query_capacity.saturating_sub(query),
            query_capacity + reply_capacity,
            if session.command.is_empty() {
                "NULL"
            } else {
                session.command
            },
            session.resp,
            library.name,
            library.version,
        )
    }
}

/// Which connections a `CLIENT KILL` names; every given field must match.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KillFilter {
    pub id: Option<u64>,
    pub addr: Option<String>,
    pub laddr: Option<String>,
    /// The connection sending the kill, spared unless `SKIPME no`.
    pub skip: Option<u64>,
    /// Only connections open at least this many seconds.
    pub max_age: Option<u64>,
    /// TYPE: only Pub/Sub clients (`Some(true)`), or only the others.
    pub pubsub: Option<bool>,
}

impl KillFilter {
    fn matches(&self, client: &ClientHandle) -> bool {
        self.id.is_none_or(|id| id == client.id)
            && self.addr.as_ref().is_none_or(|addr| *addr == client.addr)
            && self
                .laddr
                .as_ref()
                .is_none_or(|laddr| *laddr == client.laddr)
            && self.skip != Some(client.id)
            && self
                .max_age
                .is_none_or(|age| client.connected.elapsed().as_secs() >= age)
            && self
                .pubsub
                .is_none_or(|pubsub| pubsub == client.is_pubsub())
    }
}

/// The registry of open connections.
#[derive(Debug, Default)]
pub struct Clients {
    open: Mutex<BTreeMap<u64, Arc<ClientHandle>>>,
}

impl Clients {
    /// Registers connection `id` (its socket's descriptor `fd`, -1 if it has
    /// none); it stays listed until the registration drops.
    pub fn register(
        self: &Arc<Self>,
        id: u64,
        (addr, laddr, fd): (String, String, i32),
    ) -> Registration {
        let handle = Arc::new(ClientHandle {
            id,
            addr,
            laddr,
            fd,
            connected: Instant::now(),
            name: Mutex::new(None),
            db: AtomicU8::new(0),
            resp: AtomicU8::new(2),
            last_active_ms: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            last_command: Mutex::new(""),
            multi: AtomicI64::new(-1),
            watch: AtomicU64::new(0),
            monitor: AtomicBool::new(false),
            no_touch: AtomicBool::new(false),
            channels: AtomicU64::new(0),
            patterns: AtomicU64::new(0),
            shard_channels: AtomicU64::new(0),
            query: AtomicU64::new(0),
            query_capacity: AtomicU64::new(0),
            reply_capacity: AtomicU64::new(0),
            library: Mutex::default(),
            outbox: Mutex::default(),
            killed: AtomicBool::new(false),
            wake: Notify::new(),
            unblock: Mutex::new(None),
        });
        self.open.lock().insert(id, handle.clone());
        Registration {
            clients: self.clone(),
            handle,
        }
    }

    /// The open connections in id order, optionally only those in `ids`. A
    /// killed connection is gone from the list at once, though its task may
    /// still be closing it.
    pub fn list(&self, ids: Option<&[u64]>) -> Vec<Arc<ClientHandle>> {
        self.open
            .lock()
            .values()
            .filter(|client| !client.is_killed())
            .filter(|client| ids.is_none_or(|ids| ids.contains(&client.id)))
            .cloned()
            .collect()
    }

    /// Records where connection `id` takes pushes.
    pub fn set_outbox(&self, id: u64, outbox: Outbox) {
        if let Some(client) = self.open.lock().get(&id) {
            *client.outbox.lock() = Some(outbox);
        }
    }

    /// Where connection `id` takes pushes: `None` if it is not open (or was
    /// killed), `Some(None)` if it is but takes none.
    pub fn outbox(&self, id: u64) -> Option<Option<Outbox>> {
        let open = self.open.lock();
        let client = open.get(&id).filter(|client| !client.is_killed())?;
        Some(client.outbox.lock().clone())
    }

    /// Marks connection `id` as blocked in `command` until the guard drops
    /// (`None` if it is not open). CLIENT LIST shows the command at once,
    /// not after the batch that holds it.
    pub fn block(&self, id: u64, command: &'static str) -> Option<Blocked> {
        let handle = self.open.lock().get(&id)?.clone();
        *handle.last_command.lock() = command;
        let (sender, unblocked) = oneshot::channel();
        *handle.unblock.lock() = Some(sender);
        Some(Blocked { handle, unblocked })
    }

    /// Ends connection `id`'s wait in a blocking command (`CLIENT
    /// UNBLOCK`); false if it is not waiting in one.
    pub fn unblock(&self, id: u64, how: Unblock) -> bool {
        let sender = self
            .open
            .lock()
            .get(&id)
            .and_then(|client| client.unblock.lock().take());
        sender.is_some_and(|sender| sender.send(how).is_ok())
    }

    /// Bytes of every connection's query and reply buffers, as of their last
    /// batch (MEMORY STATS's `clients.normal`).
    pub fn buffer_bytes(&self) -> u64 {
        self.open
            .lock()
            .values()
            .map(|client| {
                client.query_capacity.load(Ordering::Relaxed)
                    + client.reply_capacity.load(Ordering::Relaxed)
            })
            .sum()
    }

    /// Connections waiting in a blocking command (INFO's `blocked_clients`,
    /// with those CLIENT PAUSE holds).
    pub fn blocked_count(&self) -> usize {
        self.open
            .lock()
            .values()
            .filter(|client| client.unblock.lock().is_some())
            .count()
    }

    /// Kills every connection idle for at least `idle_for` (Redis's
    /// `timeout`); returns how many. One serving a request is not idle.
    pub fn kill_idle(&self, idle_for: Duration) -> usize {
        let open = self.open.lock();
        let mut killed = 0;
        // As in Redis, monitors and subscribers wait for pushes, never idle.
        let idle = |client: &&Arc<ClientHandle>| {
            !client.is_killed()
                && !client.monitor.load(Ordering::Relaxed)
                && !client.is_pubsub()
                && client.idle() >= idle_for
        };
        for client in open.values().filter(idle) {
            client.kill();
            killed += 1;
        }
        killed
    }

    /// Kills every connection `filter` matches; how many.
    pub fn kill(&self, filter: &KillFilter) -> usize {
        let open = self.open.lock();
        let mut killed = 0;
        for client in open.values().filter(|client| filter.matches(client)) {
            client.kill();
            killed += 1;
        }
        killed
    }
}

/// A connection's place in the registry, removed when dropped.
pub struct Registration {
    clients: Arc<Clients>,
    pub handle: Arc<ClientHandle>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.clients.open.lock().remove(&self.handle.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(command: &'static str) -> SessionView<'static> {
        SessionView {
            name: None,
            db: 0,
            resp: 2,
            command,
            multi: -1,
            watch: 0,
            monitor: false,
            channels: 0,
            patterns: 0,
            shard_channels: 0,
            no_touch: false,
            blocked: false,
        }
    }

    #[tokio::test]
    async fn unblock_ends_only_a_wait_in_progress_and_counts_and_flags_it() {
        let clients = Arc::new(Clients::default());
        let waiting = clients.register(1, ("127.0.0.1:5000".into(), "127.0.0.1:6379".into(), -1));
        let _idle = clients.register(2, ("127.0.0.1:5001".into(), "127.0.0.1:6379".into(), -1));
        assert!(!clients.unblock(1, Unblock::Timeout), "not blocked yet");
        let Some(mut blocked) = clients.block(1, "wait") else {
            panic!("connection 1 is open");
        };
        assert_eq!(clients.blocked_count(), 1);
        let line = waiting.handle.list_line();
        assert!(
            line.contains(" flags=b ") && line.contains(" cmd=wait "),
            "{line}"
        );
        assert!(!clients.unblock(2, Unblock::Error), "2 is not blocked");
        assert!(!clients.unblock(3, Unblock::Error), "3 is not open");
        assert!(clients.unblock(1, Unblock::Error));
        assert_eq!(blocked.unblocked().await, Unblock::Error);
        assert!(
            !clients.unblock(1, Unblock::Timeout),
            "one unblock per wait"
        );
        drop(blocked);
        assert_eq!(clients.blocked_count(), 0);
        assert!(waiting.handle.list_line().contains(" flags=N "));
        assert!(clients.block(9, "wait").is_none(), "no such connection");
    }

    #[test]
    fn only_a_connection_idle_past_the_timeout_is_killed_and_a_busy_one_never() {
        let clients = Arc::new(Clients::default());
        let idle = clients.register(1, ("127.0.0.1:5000".into(), "127.0.0.1:6379".into(), -1));
        let busy = clients.register(2, ("127.0.0.1:5001".into(), "127.0.0.1:6379".into(), -1));
        let fresh = clients.register(3, ("127.0.0.1:5002".into(), "127.0.0.1:6379".into(), -1));
        busy.handle.set_busy();
        std::thread::sleep(Duration::from_millis(60));
        fresh.handle.update(&view("ping"), Buffers::default());
        assert_eq!(clients.kill_idle(Duration::from_millis(50)), 1);
        assert!(idle.handle.is_killed(), "idle since it opened");
        assert!(!busy.handle.is_killed(), "serving a long request");
        assert!(!fresh.handle.is_killed(), "just ran a command");
        busy.handle.update(&view("set"), Buffers::default());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            clients.kill_idle(Duration::from_millis(50)),
            2,
            "the other two now; the killed one is not counted again"
        );
    }

    #[test]
    fn kill_filters_match_every_field_and_spare_the_sender() {
        let clients = Arc::new(Clients::default());
        let one = clients.register(1, ("127.0.0.1:5000".into(), "127.0.0.1:6379".into(), -1));
        let two = clients.register(2, ("127.0.0.1:5001".into(), "127.0.0.1:6379".into(), -1));
        assert_eq!(clients.list(None).len(), 2);
        assert_eq!(clients.list(Some(&[2])).len(), 1);
        let by_addr = KillFilter {
            addr: Some("127.0.0.1:5001".into()),
            ..KillFilter::default()
        };
        assert_eq!(clients.kill(&by_addr), 1);
        assert!(two.handle.is_killed() && !one.handle.is_killed());
        let everyone_but_me = KillFilter {
            laddr: Some("127.0.0.1:6379".into()),
            skip: Some(1),
            ..KillFilter::default()
        };
        assert_eq!(clients.kill(&everyone_but_me), 1, "only client 2 again");
        assert!(!one.handle.is_killed());
        assert_eq!(clients.list(None).len(), 1, "a killed client is not listed");
        drop(two);
        assert_eq!(clients.list(None).len(), 1);
        assert!(
            one.handle
                .list_line()
                .starts_with("id=1 addr=127.0.0.1:5000 ")
        );
    }
}
