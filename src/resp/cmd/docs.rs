//! `COMMAND DOCS`: what each supported command does, in Redis 7's layout
//! (summary, the Redis version it appeared in, its group, its complexity),
//! for tools that show help or hints (redis-cli, GUIs).
//!
//! Invariant: every command in [`super::SPECS`] has exactly one entry here
//! (a unit test checks both directions), so help never names a command
//! walrus does not run nor misses one it does.

use super::super::frame::Reply;

/// One command's documentation.
struct Doc {
    name: &'static str,
    summary: &'static str,
    since: &'static str,
    group: &'static str,
    complexity: &'static str,
}

const fn doc(
    name: &'static str,
    summary: &'static str,
    since: &'static str,
    group: &'static str,
    complexity: &'static str,
) -> Doc {
    Doc {
        name,
        summary,
        since,
        group,
        complexity,
    }
}

const O1: &str = "O(1)";
const ON_KEYS: &str = "O(N) where N is the number of keys given.";
const ON_VALUE: &str = "O(N) where N is the length of the value.";
const ON_DATA: &str = "O(N) where N is the number of keys in all databases.";

const DOCS: &[Doc] = &[
    // Connection.
    doc(
        "ping",
        "Answers PONG, or the message given.",
        "1.0.0",
        "connection",
        O1,
    ),
    doc(
        "echo",
        "Answers the message given.",
        "1.0.0",
        "connection",
        O1,
    ),
    doc(
        "select",
        "Switches the connection to database 0 to 15.",
        "1.0.0",
        "connection",
        O1,
    ),
    doc("quit", "Closes the connection.", "1.0.0", "connection", O1),
    doc(
        "auth",
        "Authenticates the connection with the server's token.",
        "1.0.0",
        "connection",
        O1,
    ),
    doc(
        "acl",
        "Describes the one user, default (WHOAMI, USERS, LIST, GETUSER); users cannot be changed.",
        "6.0.0",
        "server",
        O1,
    ),
    doc(
        "hello",
        "Chooses RESP2 or RESP3, authenticates, and describes the server.",
        "6.0.0",
        "connection",
        O1,
    ),
    doc(
        "client",
        "Names, lists, identifies, unblocks and closes client connections, and turns client-side caching (TRACKING) on and off.",
        "2.4.0",
        "connection",
        "Depends on the subcommand.",
    ),
    doc(
        "readonly",
        "Lets reads on a cluster follower be served from its own state.",
        "3.0.0",
        "cluster",
        O1,
    ),
    doc(
        "readwrite",
        "Makes reads on a cluster follower linearizable again (the default).",
        "3.0.0",
        "cluster",
        O1,
    ),
    // Scripting and functions: none are loaded; scripts are refused.
    doc(
        "function",
        "Lists, flushes and describes functions (none are ever loaded).",
        "7.0.0",
        "scripting",
        "Depends on the subcommand.",
    ),
    doc(
        "module",
        "Lists the loaded modules (none: walrus loads no modules).",
        "4.0.0",
        "server",
        "Depends on the subcommand.",
    ),
    doc(
        "debug",
        "Refused, as Redis 7 refuses it by default (enable-debug-command no).",
        "1.0.0",
        "server",
        "Depends on the subcommand.",
    ),
    doc(
        "eval",
        "Refused: walrus runs no scripts.",
        "2.6.0",
        "scripting",
        O1,
    ),
    doc(
        "evalsha",
        "Refused: walrus runs no scripts.",
        "2.6.0",
        "scripting",
        O1,
    ),
    doc(
        "eval_ro",
        "Refused: walrus runs no scripts.",
        "7.0.0",
        "scripting",
        O1,
    ),
    doc(
        "evalsha_ro",
        "Refused: walrus runs no scripts.",
        "7.0.0",
        "scripting",
        O1,
    ),
    doc(
        "fcall",
        "Refused: no functions are loaded.",
        "7.0.0",
        "scripting",
        O1,
    ),
    doc(
        "fcall_ro",
        "Refused: no functions are loaded.",
        "7.0.0",
        "scripting",
        O1,
    ),
    doc(
        "script",
        "Answers as a server with an empty script cache.",
        "2.6.0",
        "scripting",
        "Depends on the subcommand.",
    ),
    // Server.
    doc(
        "command",
        "Describes the commands walrus supports.",
        "2.8.13",
        "server",
        "O(N) where N is the number of commands.",
    ),
    doc(
        "config",
        "Reads walrus's settings under Redis's names.",
        "2.0.0",
        "server",
        "Depends on the subcommand.",
    ),
    doc(
        "info",
        "Reports the server's state by section.",
        "1.0.0",
        "server",
        O1,
    ),
    doc(
        "dbsize",
        "Counts the live keys of the database.",
        "1.0.0",
        "server",
        O1,
    ),
    doc(
        "flushdb",
        "Removes every key of the database, as one log record.",
        "1.0.0",
        "server",
        "O(N) where N is the number of keys in the database.",
    ),
    doc(
        "flushall",
        "Removes every key of every database, as one log record.",
        "1.0.0",
        "server",
        "O(N) where N is the number of keys.",
    ),
    doc(
        "swapdb",
        "Exchanges the contents of two databases.",
        "4.0.0",
        "server",
        "O(N) where N is the number of keys in both databases.",
    ),
    doc(
        "time",
        "Answers the server's clock: seconds and microseconds.",
        "2.6.0",
        "server",
        O1,
    ),
    doc(
        "lastsave",
        "Answers when the newest snapshot was written (Unix seconds).",
        "1.0.0",
        "server",
        O1,
    ),
    doc(
        "save",
        "Writes a snapshot now and compacts the log behind it; answers when done.",
        "1.0.0",
        "server",
        ON_DATA,
    ),
    doc(
        "bgsave",
        "Starts a snapshot (and log compaction) in the background.",
        "1.0.0",
        "server",
        ON_DATA,
    ),
    doc(
        "bgrewriteaof",
        "Starts a snapshot in the background, which compacts the log as an AOF rewrite would.",
        "1.0.0",
        "server",
        ON_DATA,
    ),
    doc(
        "reset",
        "Resets the connection: no transaction or watches, database 0, RESP2, signed out.",
        "6.2.0",
        "connection",
        O1,
    ),
    doc(
        "shutdown",
        "Stops the server as SIGTERM does (SAVE takes a snapshot first); the connection closes without a reply.",
        "1.0.0",
        "server",
        O1,
    ),
    doc(
        "cluster",
        "Answers as a standalone Redis: Redis Cluster is not supported (walrus's cluster is Raft; any node serves every key).",
        "3.0.0",
        "cluster",
        O1,
    ),
    doc(
        "slowlog",
        "Shows or clears the commands that took longer than slowlog-log-slower-than.",
        "2.2.12",
        "server",
        "O(N) where N is the number of entries returned.",
    ),
    doc(
        "latency",
        "Shows per-command latency histograms (LATENCY HISTOGRAM).",
        "2.8.13",
        "server",
        "O(N) where N is the number of commands with samples.",
    ),
    doc(
        "role",
        "Returns the node's replication role: master (a single node or the cluster's leader) or replica.",
        "2.8.12",
        "server",
        O1,
    ),
    doc(
        "replicaof",
        "Answers NO ONE on a node that is already a master; walrus's replicas are Raft members, added with walrus cluster add-learner.",
        "5.0.0",
        "server",
        O1,
    ),
    doc(
        "slaveof",
        "Answers NO ONE on a node that is already a master; walrus's replicas are Raft members, added with walrus cluster add-learner.",
        "1.0.0",
        "server",
        O1,
    ),
    doc(
        "wait",
        "Waits until the other cluster members hold every committed write, or the timeout passes.",
        "3.0.0",
        "generic",
        O1,
    ),
    doc(
        "waitaof",
        "Answers whether this node's log holds the client's writes on disk and how many other members hold them, waiting for the members up to the timeout.",
        "7.2.0",
        "generic",
        O1,
    ),
    doc(
        "monitor",
        "Streams every command the server runs from then on, one line each (passwords redacted, administrative commands not shown).",
        "1.0.0",
        "server",
        O1,
    ),
    // Pub/Sub.
    doc(
        "subscribe",
        "Listens for messages published to the given channels.",
        "2.0.0",
        "pubsub",
        "O(N) where N is the number of channels to subscribe to.",
    ),
    doc(
        "unsubscribe",
        "Stops listening to messages posted to channels (all of them when none is given).",
        "2.0.0",
        "pubsub",
        "O(N) where N is the number of channels to unsubscribe.",
    ),
    doc(
        "psubscribe",
        "Listens for messages published to channels that match the given patterns.",
        "2.0.0",
        "pubsub",
        "O(N) where N is the number of patterns to subscribe to.",
    ),
    doc(
        "punsubscribe",
        "Stops listening to messages published to channels that match the patterns (all when none is given).",
        "2.0.0",
        "pubsub",
        "O(N) where N is the number of patterns to unsubscribe.",
    ),
    doc(
        "publish",
        "Posts a message to a channel: every connection subscribed to it, or to a matching pattern, on any node receives it; answers how many on this node did.",
        "2.0.0",
        "pubsub",
        "O(N+M) where N is the number of clients subscribed to the receiving channel and M is the total number of subscribed patterns.",
    ),
    doc(
        "ssubscribe",
        "Listens for messages published to the given shard channels (a walrus cluster is one shard).",
        "7.0.0",
        "pubsub",
        "O(N) where N is the number of shard channels to subscribe to.",
    ),
    doc(
        "sunsubscribe",
        "Stops listening to messages posted to shard channels (all of them when none is given).",
        "7.0.0",
        "pubsub",
        "O(N) where N is the number of shard channels to unsubscribe.",
    ),
    doc(
        "spublish",
        "Posts a message to a shard channel: every connection subscribed to it on any node receives it; answers how many on this node did.",
        "7.0.0",
        "pubsub",
        "O(N) where N is the number of clients subscribed to the receiving shard channel.",
    ),
    doc(
        "pubsub",
        "Shows the active channels (CHANNELS, SHARDCHANNELS), subscribers per channel (NUMSUB, SHARDNUMSUB) and the pattern count (NUMPAT).",
        "2.8.0",
        "pubsub",
        "O(N) where N is the number of active channels.",
    ),
    // Transactions.
    doc(
        "multi",
        "Starts queuing commands for EXEC.",
        "1.2.0",
        "transactions",
        O1,
    ),
    doc(
        "exec",
        "Runs the queued commands as one log record, unless a watched key changed.",
        "1.2.0",
        "transactions",
        "The sum of the queued commands' complexities.",
    ),
    doc(
        "discard",
        "Drops the queued commands.",
        "2.0.0",
        "transactions",
        "O(N) where N is the number of queued commands.",
    ),
    doc(
        "watch",
        "Makes the next EXEC fail if any of these keys changes first.",
        "2.2.0",
        "transactions",
        ON_KEYS,
    ),
    doc(
        "unwatch",
        "Forgets every watched key.",
        "2.2.0",
        "transactions",
        O1,
    ),
    // Strings.
    doc("get", "Answers the value of a key.", "1.0.0", "string", O1),
    doc(
        "set",
        "Sets a key's value, with an optional expiry, condition and old value.",
        "1.0.0",
        "string",
        O1,
    ),
    doc(
        "setnx",
        "Sets a key's value only if the key does not exist.",
        "1.0.0",
        "string",
        O1,
    ),
    doc(
        "setex",
        "Sets a key's value and its expiry in seconds.",
        "2.0.0",
        "string",
        O1,
    ),
    doc(
        "psetex",
        "Sets a key's value and its expiry in milliseconds.",
        "2.6.0",
        "string",
        O1,
    ),
    doc(
        "getset",
        "Sets a key's value and answers the old one.",
        "1.0.0",
        "string",
        O1,
    ),
    doc(
        "getdel",
        "Answers a key's value and deletes the key.",
        "6.2.0",
        "string",
        O1,
    ),
    doc(
        "getex",
        "Answers a key's value and changes its expiry.",
        "6.2.0",
        "string",
        O1,
    ),
    doc(
        "mget",
        "Answers the values of several keys, read at one revision.",
        "1.0.0",
        "string",
        ON_KEYS,
    ),
    doc(
        "mset",
        "Sets several keys at once, as one log record.",
        "1.0.1",
        "string",
        ON_KEYS,
    ),
    doc(
        "msetnx",
        "Sets several keys at once only if none of them exists.",
        "1.0.1",
        "string",
        ON_KEYS,
    ),
    doc(
        "append",
        "Appends to a key's value and answers the new length.",
        "2.0.0",
        "string",
        O1,
    ),
    doc(
        "strlen",
        "Answers the length of a key's value.",
        "2.2.0",
        "string",
        O1,
    ),
    doc(
        "getrange",
        "Answers part of a key's value.",
        "2.4.0",
        "string",
        "O(N) where N is the length of the part answered.",
    ),
    doc(
        "substr",
        "Answers part of a key's value (the old name of GETRANGE).",
        "1.0.0",
        "string",
        "O(N) where N is the length of the part answered.",
    ),
    doc(
        "setrange",
        "Overwrites part of a key's value from an offset.",
        "2.2.0",
        "string",
        ON_VALUE,
    ),
    doc(
        "incr",
        "Adds one to a key's integer value.",
        "1.0.0",
        "string",
        O1,
    ),
    doc(
        "incrby",
        "Adds an integer to a key's integer value.",
        "1.0.0",
        "string",
        O1,
    ),
    doc(
        "decr",
        "Subtracts one from a key's integer value.",
        "1.0.0",
        "string",
        O1,
    ),
    doc(
        "decrby",
        "Subtracts an integer from a key's integer value.",
        "1.0.0",
        "string",
        O1,
    ),
    doc(
        "incrbyfloat",
        "Adds a floating-point number to a key's numeric value.",
        "2.6.0",
        "string",
        O1,
    ),
    doc(
        "lcs",
        "Finds the longest common subsequence of two keys' values.",
        "7.0.0",
        "string",
        "O(N*M) where N and M are the lengths of the two values.",
    ),
    // Bitmaps.
    doc(
        "setbit",
        "Sets or clears one bit of a key's value.",
        "2.2.0",
        "bitmap",
        O1,
    ),
    doc(
        "getbit",
        "Answers one bit of a key's value.",
        "2.2.0",
        "bitmap",
        O1,
    ),
    doc(
        "bitcount",
        "Counts the set bits of a key's value, or of a range of it.",
        "2.6.0",
        "bitmap",
        ON_VALUE,
    ),
    doc(
        "bitpos",
        "Finds the first set or clear bit of a key's value.",
        "2.8.7",
        "bitmap",
        ON_VALUE,
    ),
    doc(
        "bitop",
        "Combines keys' values bit by bit (AND, OR, XOR, NOT) into a key.",
        "2.6.0",
        "bitmap",
        "O(N) where N is the length of the longest value.",
    ),
    doc(
        "bitfield",
        "Reads, writes and increments integer fields of a key's value.",
        "3.2.0",
        "bitmap",
        "O(1) for each subcommand.",
    ),
    doc(
        "bitfield_ro",
        "Reads integer fields of a key's value.",
        "6.0.0",
        "bitmap",
        "O(1) for each subcommand.",
    ),
    // Keys.
    doc(
        "del",
        "Deletes keys and counts those that existed.",
        "1.0.0",
        "generic",
        ON_KEYS,
    ),
    doc(
        "unlink",
        "Deletes keys and counts those that existed (the same as DEL).",
        "4.0.0",
        "generic",
        ON_KEYS,
    ),
    doc(
        "exists",
        "Counts the keys given that exist.",
        "1.0.0",
        "generic",
        ON_KEYS,
    ),
    doc(
        "touch",
        "Counts the keys given that exist.",
        "3.2.1",
        "generic",
        ON_KEYS,
    ),
    doc(
        "type",
        "Answers string for a key that exists, none otherwise.",
        "1.0.0",
        "generic",
        O1,
    ),
    doc(
        "rename",
        "Renames a key, replacing any key of the new name.",
        "1.0.0",
        "generic",
        O1,
    ),
    doc(
        "renamenx",
        "Renames a key only if the new name is free.",
        "1.0.0",
        "generic",
        O1,
    ),
    doc(
        "copy",
        "Copies a key's value and expiry to another key, in any database.",
        "6.2.0",
        "generic",
        ON_VALUE,
    ),
    doc(
        "dump",
        "Serializes a key's value as Redis does, for RESTORE here or on a Redis server.",
        "2.6.0",
        "generic",
        O1,
    ),
    doc(
        "restore",
        "Creates a key from a DUMP payload of a string (from walrus or Redis).",
        "2.6.0",
        "generic",
        O1,
    ),
    doc(
        "migrate",
        "Moves keys to another Redis or walrus server with RESTORE, deleting them here unless COPY.",
        "2.6.0",
        "generic",
        ON_KEYS,
    ),
    doc(
        "move",
        "Moves a key to another database.",
        "1.0.0",
        "generic",
        O1,
    ),
    doc(
        "memory",
        "Estimates the RAM a key and its value take (USAGE), and reports the process's memory (STATS, DOCTOR).",
        "4.0.0",
        "server",
        "Depends on the subcommand.",
    ),
    doc(
        "object",
        "Tells how a key's value is encoded (ENCODING) and referenced (REFCOUNT).",
        "2.2.3",
        "generic",
        O1,
    ),
    doc(
        "randomkey",
        "Answers a random live key.",
        "1.0.0",
        "generic",
        "O(log N) where N is the number of keys.",
    ),
    doc(
        "keys",
        "Answers every key matching a pattern.",
        "1.0.0",
        "generic",
        "O(N) where N is the number of keys.",
    ),
    doc(
        "scan",
        "Iterates over the keys with a cursor valid on any connection.",
        "2.8.0",
        "generic",
        "O(1) for each call; O(N) for a whole iteration.",
    ),
    doc(
        "expire",
        "Sets a key's expiry in seconds from now.",
        "1.0.0",
        "generic",
        O1,
    ),
    doc(
        "pexpire",
        "Sets a key's expiry in milliseconds from now.",
        "2.6.0",
        "generic",
        O1,
    ),
    doc(
        "expireat",
        "Sets a key's expiry at a Unix time in seconds.",
        "1.2.0",
        "generic",
        O1,
    ),
    doc(
        "pexpireat",
        "Sets a key's expiry at a Unix time in milliseconds.",
        "2.6.0",
        "generic",
        O1,
    ),
    doc(
        "ttl",
        "Answers a key's time to live in seconds.",
        "1.0.0",
        "generic",
        O1,
    ),
    doc(
        "pttl",
        "Answers a key's time to live in milliseconds.",
        "2.6.0",
        "generic",
        O1,
    ),
    doc(
        "expiretime",
        "Answers a key's expiry as a Unix time in seconds.",
        "7.0.0",
        "generic",
        O1,
    ),
    doc(
        "pexpiretime",
        "Answers a key's expiry as a Unix time in milliseconds.",
        "7.0.0",
        "generic",
        O1,
    ),
    doc("persist", "Removes a key's expiry.", "2.2.0", "generic", O1),
];

fn entry(doc: &Doc) -> (Reply, Reply) {
    let field = |name: &'static str, value: &'static str| (Reply::text(name), Reply::text(value));
    (
        Reply::text(doc.name),
        Reply::Map(vec![
            field("summary", doc.summary),
            field("since", doc.since),
            field("group", doc.group),
            field("complexity", doc.complexity),
        ]),
    )
}

/// The group a command's docs put it in (`string`, `generic`, `server`…).
pub fn group_of(name: &str) -> Option<&'static str> {
    DOCS.iter()
        .find(|doc| doc.name == name)
        .map(|doc| doc.group)
}

/// `COMMAND DOCS [name …]`: every command's entry, or those named (names
/// walrus does not know are left out, as Redis leaves them out).
pub fn command_docs(names: &[String]) -> Reply {
    let entries = if names.is_empty() {
        DOCS.iter().map(entry).collect()
    } else {
        names
            .iter()
            .filter_map(|name| DOCS.iter().find(|doc| doc.name == name))
            .map(entry)
            .collect()
    };
    Reply::Map(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_command_has_one_entry_and_no_other_does() {
        for spec in super::super::SPECS {
            let found = DOCS.iter().filter(|doc| doc.name == spec.name).count();
            assert_eq!(found, 1, "{}", spec.name);
        }
        for doc in DOCS {
            assert!(super::super::find_spec(doc.name).is_some(), "{}", doc.name);
        }
    }
}
