//! Client-side caching (`CLIENT TRACKING`) against the real binary: the
//! invalidations Redis 7 sends, for keys changed over RESP, over HTTP and by
//! a flush, in the default, OPTIN, BCAST and REDIRECT modes.

use crate::resp_client::RawResp;
use crate::server::{Server, put};

const INVALIDATE: &str = ">2\r\n$10\r\ninvalidate\r\n";

/// The wire text of an `invalidate` push naming `keys`.
fn invalidated(keys: &[&str]) -> String {
    let mut text = format!("{INVALIDATE}*{}\r\n", keys.len());
    for key in keys {
        text.push_str(&format!("${}\r\n{key}\r\n", key.len()));
    }
    text
}

fn resp3(server: &Server) -> RawResp {
    let mut raw = RawResp::connect(server.resp_address());
    assert!(raw.call(&["HELLO", "3"]).starts_with('%'));
    raw
}

/// Nothing was pushed before the answer to a PING sent now.
fn nothing_pushed(raw: &mut RawResp) {
    assert_eq!(raw.call(&["PING"]), "+PONG\r\n");
}

#[test]
fn a_tracked_read_is_invalidated_by_any_change_to_its_key() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut writer = RawResp::connect(server.resp_address());
    let mut cache = resp3(&server);
    assert_eq!(cache.call(&["CLIENT", "GETREDIR"]), ":-1\r\n");
    assert_eq!(cache.call(&["CLIENT", "TRACKING", "ON"]), "+OK\r\n");
    assert_eq!(cache.call(&["CLIENT", "GETREDIR"]), ":0\r\n");
    assert_eq!(cache.call(&["GET", "k"]), "_\r\n");
    assert_eq!(writer.call(&["SET", "k", "v1"]), "+OK\r\n");
    assert_eq!(cache.reply().as_deref(), Some(invalidated(&["k"]).as_str()));
    // Told once: until it reads the key again, changes are not its concern.
    assert_eq!(writer.call(&["SET", "k", "v2"]), "+OK\r\n");
    nothing_pushed(&mut cache);
    // A change over HTTP invalidates too.
    assert_eq!(cache.call(&["GET", "k"]), "$2\r\nv2\r\n");
    assert_eq!(put(server.address, "/kv/k", b"from-http").status, 200);
    assert_eq!(cache.reply().as_deref(), Some(invalidated(&["k"]).as_str()));
    // One command changing several read keys: one push per key, as Redis
    // sends them.
    assert!(cache.call(&["MGET", "a", "b", "c"]).starts_with("*3"));
    assert_eq!(writer.call(&["MSET", "a", "1", "b", "2"]), "+OK\r\n");
    assert_eq!(cache.reply().as_deref(), Some(invalidated(&["a"]).as_str()));
    assert_eq!(cache.reply().as_deref(), Some(invalidated(&["b"]).as_str()));
    // Writes of its own count (without NOLOOP), told after their reply.
    assert_eq!(cache.call(&["GET", "own"]), "_\r\n");
    assert_eq!(cache.call(&["SET", "own", "x"]), "+OK\r\n");
    assert_eq!(
        cache.reply().as_deref(),
        Some(invalidated(&["own"]).as_str())
    );
    let info = cache.call(&["INFO", "clients"]);
    assert!(info.contains("tracking_clients:1\r\n"), "{info}");
    // A flush invalidates everything: a null list.
    assert_eq!(writer.call(&["FLUSHALL"]), "+OK\r\n");
    assert_eq!(
        cache.reply().as_deref(),
        Some(format!("{INVALIDATE}_\r\n").as_str())
    );
    let info = cache.call(&["CLIENT", "TRACKINGINFO"]);
    assert!(
        info.starts_with("%3\r\n$5\r\nflags\r\n*1\r\n$2\r\non\r\n"),
        "{info}"
    );
    // Off: nothing more, and GETREDIR says so.
    assert_eq!(cache.call(&["GET", "k"]), "_\r\n");
    assert_eq!(cache.call(&["CLIENT", "TRACKING", "OFF"]), "+OK\r\n");
    assert_eq!(writer.call(&["SET", "k", "v3"]), "+OK\r\n");
    nothing_pushed(&mut cache);
    assert_eq!(cache.call(&["CLIENT", "GETREDIR"]), ":-1\r\n");
}

#[test]
fn optin_caches_only_what_client_caching_yes_marks_even_across_a_transaction() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut writer = RawResp::connect(server.resp_address());
    let mut cache = resp3(&server);
    assert!(
        cache
            .call(&["CLIENT", "CACHING", "YES"])
            .starts_with("-ERR CLIENT CACHING can be called only")
    );
    assert_eq!(
        cache.call(&["CLIENT", "TRACKING", "ON", "OPTIN"]),
        "+OK\r\n"
    );
    assert!(
        cache
            .call(&["CLIENT", "CACHING", "NO"])
            .starts_with("-ERR CLIENT CACHING NO is only valid")
    );
    assert_eq!(cache.call(&["GET", "plain"]), "_\r\n");
    assert_eq!(cache.call(&["CLIENT", "CACHING", "YES"]), "+OK\r\n");
    assert_eq!(cache.call(&["GET", "marked"]), "_\r\n");
    // The mark was for one command only.
    assert_eq!(cache.call(&["GET", "after"]), "_\r\n");
    assert_eq!(
        writer.call(&["MSET", "plain", "1", "marked", "1", "after", "1"]),
        "+OK\r\n"
    );
    assert_eq!(
        cache.reply().as_deref(),
        Some(invalidated(&["marked"]).as_str())
    );
    // As rueidis reads a cached key: the mark, then MULTI, PTTL, GET, EXEC.
    assert_eq!(cache.call(&["CLIENT", "CACHING", "YES"]), "+OK\r\n");
    assert_eq!(cache.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(cache.call(&["PTTL", "t"]), "+QUEUED\r\n");
    assert_eq!(cache.call(&["GET", "t"]), "+QUEUED\r\n");
    assert_eq!(cache.call(&["EXEC"]), "*2\r\n:-2\r\n_\r\n");
    assert_eq!(writer.call(&["SET", "t", "1"]), "+OK\r\n");
    assert_eq!(cache.reply().as_deref(), Some(invalidated(&["t"]).as_str()));
    // Switching mode needs OFF first, as in Redis.
    assert!(
        cache
            .call(&["CLIENT", "TRACKING", "ON", "OPTOUT"])
            .starts_with("-ERR You can't switch OPTIN/OPTOUT mode")
    );
}

#[test]
fn broadcast_follows_prefixes_and_redirect_reaches_a_resp2_subscriber() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut writer = RawResp::connect(server.resp_address());
    let mut broadcast = resp3(&server);
    assert!(
        broadcast
            .call(&["CLIENT", "TRACKING", "ON", "PREFIX", "user:"])
            .starts_with("-ERR PREFIX option requires BCAST")
    );
    assert_eq!(
        broadcast.call(&["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "user:"]),
        "+OK\r\n"
    );
    // No read needed: every change under the prefix is told.
    assert_eq!(writer.call(&["SET", "post:1", "x"]), "+OK\r\n");
    assert_eq!(writer.call(&["SET", "user:1", "x"]), "+OK\r\n");
    assert_eq!(
        broadcast.reply().as_deref(),
        Some(invalidated(&["user:1"]).as_str())
    );
    // Prefixes add up; one that starts another is refused, as in Redis.
    assert!(
        broadcast
            .call(&["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "user:x"])
            .starts_with("-ERR Prefix 'user:x' overlaps with an existing prefix 'user:'")
    );
    assert_eq!(
        broadcast.call(&["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "post:"]),
        "+OK\r\n"
    );
    // One transaction touching both prefixes: one push per prefix, its keys
    // in key order.
    assert_eq!(writer.call(&["MULTI"]), "+OK\r\n");
    for key in ["user:9", "post:2", "user:3", "other"] {
        assert_eq!(writer.call(&["SET", key, "x"]), "+QUEUED\r\n");
    }
    assert!(writer.call(&["EXEC"]).starts_with("*4\r\n"));
    assert_eq!(
        broadcast.reply().as_deref(),
        Some(invalidated(&["post:2"]).as_str())
    );
    assert_eq!(
        broadcast.reply().as_deref(),
        Some(invalidated(&["user:3", "user:9"]).as_str())
    );
    let info = writer.call(&["INFO", "stats"]);
    assert!(info.contains("tracking_total_prefixes:2\r\n"), "{info}");

    // RESP2 has no pushes: invalidations go to another connection,
    // subscribed to __redis__:invalidate, as Pub/Sub messages.
    let mut listener = RawResp::connect(server.resp_address());
    let id = listener.client_id();
    assert!(
        listener
            .call(&["SUBSCRIBE", "__redis__:invalidate"])
            .starts_with("*3\r\n$9\r\nsubscribe")
    );
    let mut cache = RawResp::connect(server.resp_address());
    assert!(
        cache
            .call(&["CLIENT", "TRACKING", "ON", "REDIRECT", "999999"])
            .starts_with("-ERR The client ID you want redirect to does not exist")
    );
    assert_eq!(
        cache.call(&["CLIENT", "TRACKING", "ON", "REDIRECT", &id]),
        "+OK\r\n"
    );
    assert_eq!(cache.call(&["CLIENT", "GETREDIR"]), format!(":{id}\r\n"));
    assert_eq!(cache.call(&["GET", "r"]), "$-1\r\n");
    assert_eq!(writer.call(&["SET", "r", "1"]), "+OK\r\n");
    assert_eq!(
        listener.reply().as_deref(),
        Some("*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$1\r\nr\r\n")
    );
    // The tracking connection itself, in RESP2, receives nothing.
    nothing_pushed(&mut cache);

    // As in Redis, any subscription puts a RESP2 connection in Pub/Sub mode,
    // where redirected invalidations reach it on __redis__:invalidate.
    let mut other = RawResp::connect(server.resp_address());
    let other_id = other.client_id();
    assert!(
        other
            .call(&["SUBSCRIBE", "news"])
            .starts_with("*3\r\n$9\r\nsubscribe")
    );
    assert_eq!(
        cache.call(&["CLIENT", "TRACKING", "ON", "REDIRECT", &other_id]),
        "+OK\r\n"
    );
    assert_eq!(cache.call(&["GET", "r"]), "$1\r\n1\r\n");
    assert_eq!(writer.call(&["SET", "r", "2"]), "+OK\r\n");
    assert_eq!(
        other.reply().as_deref(),
        Some("*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$1\r\nr\r\n")
    );
}

#[test]
fn noloop_leaves_out_own_writes_and_every_flush_and_swap_reaches_everyone() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut writer = RawResp::connect(server.resp_address());
    let mut cache = resp3(&server);
    assert_eq!(
        cache.call(&["CLIENT", "TRACKING", "ON", "NOLOOP"]),
        "+OK\r\n"
    );
    assert!(cache.call(&["MGET", "own", "theirs"]).starts_with("*2"));
    // Its own write, alone and in a pipeline's batch: not told.
    assert_eq!(cache.call(&["SET", "own", "1"]), "+OK\r\n");
    nothing_pushed(&mut cache);
    assert_eq!(writer.call(&["SET", "theirs", "1"]), "+OK\r\n");
    assert_eq!(
        cache.reply().as_deref(),
        Some(invalidated(&["theirs"]).as_str())
    );
    let info = cache.call(&["CLIENT", "TRACKINGINFO"]);
    assert!(info.contains("$6\r\nnoloop\r\n"), "{info}");
    // FLUSHDB and SWAPDB invalidate everything (keys are tracked across
    // databases, as in Redis), even for the connection that sent them.
    for flush in [
        &["FLUSHDB"][..],
        &["SWAPDB", "0", "1"],
        &["FLUSHALL", "ASYNC"],
    ] {
        assert_eq!(cache.call(&["GET", "k"]), "_\r\n");
        assert_eq!(cache.call(flush), "+OK\r\n", "{flush:?}");
        assert_eq!(
            cache.reply().as_deref(),
            Some(format!("{INVALIDATE}_\r\n").as_str()),
            "{flush:?}"
        );
    }
    // In a transaction, the push follows EXEC's reply.
    assert_eq!(cache.call(&["MULTI"]), "+OK\r\n");
    assert_eq!(cache.call(&["FLUSHDB"]), "+QUEUED\r\n");
    assert_eq!(cache.call(&["EXEC"]), "*1\r\n+OK\r\n");
    assert_eq!(
        cache.reply().as_deref(),
        Some(format!("{INVALIDATE}_\r\n").as_str())
    );
    nothing_pushed(&mut cache);
}

#[test]
fn a_redirect_reaches_a_resp3_connection_and_a_closed_target_is_reported() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut writer = RawResp::connect(server.resp_address());
    // A RESP3 target needs no subscription.
    let mut target = resp3(&server);
    let id = target.client_id();
    let mut cache = resp3(&server);
    assert_eq!(
        cache.call(&["CLIENT", "TRACKING", "ON", "REDIRECT", &id]),
        "+OK\r\n"
    );
    assert_eq!(cache.call(&["GET", "k"]), "_\r\n");
    assert_eq!(writer.call(&["SET", "k", "1"]), "+OK\r\n");
    assert_eq!(
        target.reply().as_deref(),
        Some(invalidated(&["k"]).as_str())
    );
    nothing_pushed(&mut cache);
    // The target closes: the next invalidation tells the tracking
    // connection its redirect is broken, and TRACKINGINFO says so.
    assert_eq!(cache.call(&["GET", "k"]), "$1\r\n1\r\n");
    assert_eq!(target.call(&["QUIT"]), "+OK\r\n");
    drop(target);
    let mut broken = String::new();
    for _ in 0..100 {
        assert_eq!(writer.call(&["SET", "k", "2"]), "+OK\r\n");
        let answer = cache.call(&["PING"]);
        if answer.contains("tracking-redir-broken") {
            broken = answer;
            break;
        }
        assert_eq!(cache.call(&["GET", "k"]), "$1\r\n2\r\n");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        broken,
        format!(">2\r\n$21\r\ntracking-redir-broken\r\n:{id}\r\n")
    );
    assert_eq!(cache.reply().as_deref(), Some("+PONG\r\n"));
    let info = cache.call(&["CLIENT", "TRACKINGINFO"]);
    assert!(
        info.starts_with("%3\r\n$5\r\nflags\r\n*2\r\n$2\r\non\r\n$15\r\nbroken_redirect\r\n"),
        "{info}"
    );
}
