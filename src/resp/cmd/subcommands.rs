//! Redis 7's subcommands of the container commands walrus has (CLIENT,
//! CONFIG, LATENCY…), and the names commands are counted under.
//!
//! Redis 7 counts a container's subcommands apart: INFO commandstats has
//! `cmdstat_client|id` and `cmdstat_client|list`, not `cmdstat_client`, and
//! LATENCY HISTOGRAM the same. So the counters are indexed by a *stat
//! index*: a command's position in [`SPECS`], or past the end of it, one
//! per subcommand in [`SUBCOMMANDS`] order. A container asked for a
//! subcommand Redis does not have is counted as the container.
//!
//! Invariant: every container named here is in [`SPECS`], and each list
//! is Redis 7.4's, so the names match what tools expect from Redis.

use std::sync::OnceLock;

use bytes::Bytes;

use super::SPECS;

/// Each container command and Redis 7.4's subcommands of it.
const SUBCOMMANDS: &[(&str, &[&str])] = &[
    (
        "acl",
        &[
            "cat", "deluser", "dryrun", "genpass", "getuser", "help", "list", "load", "log",
            "save", "setuser", "users", "whoami",
        ],
    ),
    (
        "client",
        &[
            "caching",
            "getname",
            "getredir",
            "help",
            "id",
            "info",
            "kill",
            "list",
            "no-evict",
            "no-touch",
            "pause",
            "reply",
            "setinfo",
            "setname",
            "tracking",
            "trackinginfo",
            "unblock",
            "unpause",
        ],
    ),
    (
        "cluster",
        &[
            "addslots",
            "addslotsrange",
            "bumpepoch",
            "count-failure-reports",
            "countkeysinslot",
            "delslots",
            "delslotsrange",
            "failover",
            "flushslots",
            "forget",
            "getkeysinslot",
            "help",
            "info",
            "keyslot",
            "links",
            "meet",
            "myid",
            "myshardid",
            "nodes",
            "replicas",
            "replicate",
            "reset",
            "saveconfig",
            "set-config-epoch",
            "setslot",
            "shards",
            "slaves",
            "slots",
        ],
    ),
    (
        "command",
        &[
            "count",
            "docs",
            "getkeys",
            "getkeysandflags",
            "help",
            "info",
            "list",
        ],
    ),
    ("config", &["get", "help", "resetstat", "rewrite", "set"]),
    (
        "function",
        &[
            "delete", "dump", "flush", "help", "kill", "list", "load", "restore", "stats",
        ],
    ),
    (
        "latency",
        &[
            "doctor",
            "graph",
            "help",
            "histogram",
            "history",
            "latest",
            "reset",
        ],
    ),
    (
        "memory",
        &["doctor", "help", "malloc-stats", "purge", "stats", "usage"],
    ),
    ("module", &["help", "list", "load", "loadex", "unload"]),
    (
        "object",
        &["encoding", "freq", "help", "idletime", "refcount"],
    ),
    (
        "pubsub",
        &[
            "channels",
            "help",
            "numpat",
            "numsub",
            "shardchannels",
            "shardnumsub",
        ],
    ),
    (
        "script",
        &["debug", "exists", "flush", "help", "kill", "load"],
    ),
    ("slowlog", &["get", "help", "len", "reset"]),
];

/// Redis 7.4's subcommands of `container` (lowercase), if it has any.
pub fn subcommands_of(container: &str) -> &'static [&'static str] {
    SUBCOMMANDS
        .iter()
        .find(|(name, _)| *name == container)
        .map_or(&[], |(_, subcommands)| *subcommands)
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
                .map(move |subcommand| format!("{container}|{subcommand}"))
        });
        commands.chain(subcommands).collect()
    })
}

/// The stat index of the request `args` to the command at `position` in
/// [`SPECS`]: its subcommand's when it is a container and names one.
pub fn stat_index(position: usize, args: &[Bytes]) -> usize {
    subcommand_stat_index(position, args).unwrap_or(position)
}

/// A container's first subcommand's stat index, and its subcommands.
type Container = (usize, &'static [&'static str]);

fn subcommand_stat_index(position: usize, args: &[Bytes]) -> Option<usize> {
    // Per command of SPECS: for a container, the stat index of its first
    // subcommand and the list. Found once, since this runs for every request.
    static CONTAINERS: OnceLock<Vec<Option<Container>>> = OnceLock::new();
    let containers = CONTAINERS.get_or_init(|| {
        let mut first = SPECS.len();
        let mut containers = vec![None; SPECS.len()];
        for (name, subcommands) in SUBCOMMANDS {
            if let Some(position) = SPECS.iter().position(|spec| spec.name == *name) {
                containers[position] = Some((first, *subcommands));
            }
            first += subcommands.len();
        }
        containers
    });
    let (first, subcommands) = (*containers.get(position)?)?;
    let subcommand = args.get(1)?;
    let found = subcommands
        .iter()
        .position(|known| known.as_bytes().eq_ignore_ascii_case(subcommand))?;
    Some(first + found)
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
        assert_eq!(subcommands_of("slowlog"), ["get", "help", "len", "reset"]);
        assert!(subcommands_of("get").is_empty());
    }
}
