//! Redis 7's subcommands of the container commands walrus has (CLIENT,
//! CONFIG, LATENCY…): their arities, and the names commands are counted
//! under.
//!
//! Redis 7 checks a subcommand where it checks a command: one it does not
//! have is refused as unknown, and one given the wrong number of words gets
//! the arity error under its full name (`'client|id'`), before the command
//! runs ([`check_subcommand`]). It also counts a container's subcommands
//! apart: INFO commandstats has `cmdstat_client|id` and
//! `cmdstat_client|list`, not `cmdstat_client`, and LATENCY HISTOGRAM the
//! same. So the counters are indexed by a *stat index*: a command's position
//! in [`SPECS`], or past the end of it, one per subcommand in
//! [`SUBCOMMANDS`] order. A request refused for an unknown subcommand is
//! counted against the container.
//!
//! Invariant: every container named here is in [`SPECS`], and each list
//! is Redis 7.4's, so the names match what tools expect from Redis.

use std::sync::OnceLock;

use bytes::Bytes;

use super::SPECS;
use crate::resp::frame::Reply;

/// Each container command and Redis 7.4's subcommands of it, with each
/// subcommand's arity (the container and subcommand words included;
/// negative: at least that many).
const SUBCOMMANDS: &[(&str, &[(&str, i32)])] = &[
    (
        "acl",
        &[
            ("cat", -2),
            ("deluser", -3),
            ("dryrun", -4),
            ("genpass", -2),
            ("getuser", 3),
            ("help", 2),
            ("list", 2),
            ("load", 2),
            ("log", -2),
            ("save", 2),
            ("setuser", -3),
            ("users", 2),
            ("whoami", 2),
        ],
    ),
    (
        "client",
        &[
            ("caching", 3),
            ("getname", 2),
            ("getredir", 2),
            ("help", 2),
            ("id", 2),
            ("info", 2),
            ("kill", -3),
            ("list", -2),
            ("no-evict", 3),
            ("no-touch", 3),
            ("pause", -3),
            ("reply", 3),
            ("setinfo", 4),
            ("setname", 3),
            ("tracking", -3),
            ("trackinginfo", 2),
            ("unblock", -3),
            ("unpause", 2),
        ],
    ),
    (
        "cluster",
        &[
            ("addslots", -3),
            ("addslotsrange", -4),
            ("bumpepoch", 2),
            ("count-failure-reports", 3),
            ("countkeysinslot", 3),
            ("delslots", -3),
            ("delslotsrange", -4),
            ("failover", -2),
            ("flushslots", 2),
            ("forget", 3),
            ("getkeysinslot", 4),
            ("help", 2),
            ("info", 2),
            ("keyslot", 3),
            ("links", 2),
            ("meet", -4),
            ("myid", 2),
            ("myshardid", 2),
            ("nodes", 2),
            ("replicas", 3),
            ("replicate", 3),
            ("reset", -2),
            ("saveconfig", 2),
            ("set-config-epoch", 3),
            ("setslot", -4),
            ("shards", 2),
            ("slaves", 3),
            ("slots", 2),
        ],
    ),
    (
        "command",
        &[
            ("count", 2),
            ("docs", -2),
            ("getkeys", -3),
            ("getkeysandflags", -3),
            ("help", 2),
            ("info", -2),
            ("list", -2),
        ],
    ),
    (
        "config",
        &[
            ("get", -3),
            ("help", 2),
            ("resetstat", 2),
            ("rewrite", 2),
            ("set", -4),
        ],
    ),
    (
        "function",
        &[
            ("delete", 3),
            ("dump", 2),
            ("flush", -2),
            ("help", 2),
            ("kill", 2),
            ("list", -2),
            ("load", -3),
            ("restore", -3),
            ("stats", 2),
        ],
    ),
    (
        "latency",
        &[
            ("doctor", 2),
            ("graph", 3),
            ("help", 2),
            ("histogram", -2),
            ("history", 3),
            ("latest", 2),
            ("reset", -2),
        ],
    ),
    (
        "memory",
        &[
            ("doctor", 2),
            ("help", 2),
            ("malloc-stats", 2),
            ("purge", 2),
            ("stats", 2),
            ("usage", -3),
        ],
    ),
    (
        "module",
        &[
            ("help", 2),
            ("list", 2),
            ("load", -3),
            ("loadex", -3),
            ("unload", 3),
        ],
    ),
    (
        "object",
        &[
            ("encoding", 3),
            ("freq", 3),
            ("help", 2),
            ("idletime", 3),
            ("refcount", 3),
        ],
    ),
    (
        "pubsub",
        &[
            ("channels", -2),
            ("help", 2),
            ("numpat", 2),
            ("numsub", -2),
            ("shardchannels", -2),
            ("shardnumsub", -2),
        ],
    ),
    (
        "script",
        &[
            ("debug", 3),
            ("exists", -3),
            ("flush", -2),
            ("help", 2),
            ("kill", 2),
            ("load", 3),
        ],
    ),
    (
        "slowlog",
        &[("get", -2), ("help", 2), ("len", 2), ("reset", 2)],
    ),
];

/// Redis 7's checks of a request to a container, made where a command's
/// own arity is checked: a subcommand Redis does not have is refused as
/// unknown, and a known one with the wrong number of words gets Redis's
/// arity error under its full name (`'client|id'`). Inlined where commands
/// are checked: most commands are no container, and stop at one lookup.
#[inline]
pub fn check_subcommand(position: usize, args: &[Bytes]) -> Result<(), Reply> {
    match find_subcommand(position, args) {
        Some(found) => check_found(position, args, found),
        None => Ok(()),
    }
}

/// The checks once `args[1]` is known to name a subcommand of a container:
/// `found` is its entry, if the container has it.
fn check_found(
    position: usize,
    args: &[Bytes],
    found: Option<(usize, &'static (&'static str, i32))>,
) -> Result<(), Reply> {
    let container = SPECS[position].name;
    let subcommand = &args[1];
    let Some((_, (name, arity))) = found else {
        let shown = &subcommand[..subcommand.len().min(128)];
        return Err(Reply::err(format!(
            "unknown subcommand '{}'. Try {} HELP.",
            String::from_utf8_lossy(shown),
            container.to_ascii_uppercase()
        )));
    };
    let count = args.len() as i32;
    if (*arity > 0 && count != *arity) || (*arity < 0 && count < -arity) {
        return Err(super::wrong_arity(&format!("{container}|{name}")));
    }
    Ok(())
}

/// The name each stat index is counted under: every command of [`SPECS`],
/// then every `container|subcommand`.
pub fn stat_names() -> &'static [String] {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let commands = SPECS.iter().map(|spec| spec.name.to_string());
        let subcommands = SUBCOMMANDS.iter().flat_map(|(container, subcommands)| {
            subcommands
                .iter()
                .map(move |(subcommand, _)| format!("{container}|{subcommand}"))
        });
        commands.chain(subcommands).collect()
    })
}

/// The stat index of the request `args` to the command at `position` in
/// [`SPECS`]: its subcommand's when it is a container and names one.
#[inline]
pub fn stat_index(position: usize, args: &[Bytes]) -> usize {
    match find_subcommand(position, args) {
        Some(Some((stat_index, _))) => stat_index,
        _ => position,
    }
}

/// A container's first subcommand's stat index, and its subcommands.
type Container = (usize, &'static [(&'static str, i32)]);

/// The container at `position` in [`SPECS`], if it is one: one lookup in a
/// table the compiler builds, since this runs for every request.
fn container_at(position: usize) -> Option<Container> {
    *CONTAINERS.get(position)?
}

/// Per command of [`SPECS`]: for a container, its entry of [`SUBCOMMANDS`].
static CONTAINERS: [Option<Container>; SPECS.len()] = containers();

const fn containers() -> [Option<Container>; SPECS.len()] {
    let mut table = [None; SPECS.len()];
    let (mut index, mut first) = (0, SPECS.len());
    while index < SUBCOMMANDS.len() {
        let (name, subcommands) = SUBCOMMANDS[index];
        let mut position = 0;
        while position < SPECS.len() {
            if same_name(SPECS[position].name, name) {
                table[position] = Some((first, subcommands));
            }
            position += 1;
        }
        first += subcommands.len();
        index += 1;
    }
    table
}

/// `a == b`, in a constant.
const fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut index = 0;
    while index < a.len() {
        if a[index] != b[index] {
            return false;
        }
        index += 1;
    }
    true
}

/// `None` when the command at `position` is not a container or `args`
/// name no subcommand; otherwise the stat index and entry of the
/// subcommand `args[1]` names (in any case), if the container has it.
#[inline]
fn find_subcommand(
    position: usize,
    args: &[Bytes],
) -> Option<Option<(usize, &'static (&'static str, i32))>> {
    let (first, subcommands) = container_at(position)?;
    let word = args.get(1)?;
    Some(
        subcommands
            .iter()
            .enumerate()
            .find(|(_, (name, _))| name.as_bytes().eq_ignore_ascii_case(word))
            .map(|(offset, entry)| (first + offset, entry)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::cmd::spec_position;
    use crate::resp::test_args;

    #[test]
    fn every_container_is_a_command_walrus_has() {
        for (container, _) in SUBCOMMANDS {
            assert!(spec_position(container).is_some(), "{container}");
        }
    }

    #[test]
    fn a_subcommand_is_counted_apart_and_anything_else_as_its_command() {
        let client = spec_position("client").expect("client");
        let get = spec_position("get").expect("get");
        let id = stat_index(client, &test_args(&["CLIENT", "ID"]));
        let list = stat_index(client, &test_args(&["client", "list"]));
        assert_eq!(stat_names()[id], "client|id");
        assert_eq!(stat_names()[list], "client|list");
        assert_eq!(
            stat_index(client, &test_args(&["CLIENT", "NOSUCH"])),
            client
        );
        assert_eq!(stat_index(client, &test_args(&["CLIENT"])), client);
        assert_eq!(stat_index(get, &test_args(&["GET", "id"])), get);
        let config = spec_position("config").expect("config");
        let resetstat = stat_index(config, &test_args(&["CONFIG", "RESETSTAT"]));
        assert_eq!(stat_names()[resetstat], "config|resetstat");
        assert_eq!(stat_names()[config], "config");
    }

    #[test]
    fn a_container_refuses_an_unknown_subcommand_and_a_wrong_count_as_redis_7() {
        let check = |words: &[&str]| {
            let position = spec_position(&words[0].to_ascii_lowercase()).expect("a command");
            check_subcommand(position, &test_args(words))
        };
        assert_eq!(check(&["CLIENT", "ID"]), Ok(()));
        assert_eq!(check(&["client", "list", "TYPE", "normal"]), Ok(()));
        assert_eq!(check(&["GET", "anything"]), Ok(()), "not a container");
        assert_eq!(
            check(&["CLIENT"]),
            Ok(()),
            "the container's own arity decides"
        );
        assert_eq!(
            check(&["client", "nosuch"]),
            Err(Reply::err("unknown subcommand 'nosuch'. Try CLIENT HELP."))
        );
        assert_eq!(
            check(&["CLIENT", "ID", "extra"]),
            Err(Reply::err(
                "wrong number of arguments for 'client|id' command"
            ))
        );
        assert_eq!(
            check(&["CONFIG", "SET", "timeout"]),
            Err(Reply::err(
                "wrong number of arguments for 'config|set' command"
            ))
        );
        assert_eq!(
            check(&["SLOWLOG", "GET", "1", "2"]),
            Ok(()),
            "at least two words: the command itself says what is wrong"
        );
    }
}
