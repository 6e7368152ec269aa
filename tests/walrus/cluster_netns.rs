//! A 3-node cluster whose nodes are separate hosts (Linux network
//! namespaces), partitioned as fault-injecting harnesses partition: a node's
//! link to its peers goes down, so what it sends them, and what they send it,
//! vanishes without an error (no reset; connections hang until a timeout
//! gives up on them). The in-process fault switch of `walrus verify
//! --nemesis partition` refuses a cut message at once instead, so it cannot
//! show what hung connections do.
//!
//! Each node has two links: `eth0` to the peers' bridge, which carries Raft,
//! and `eth1` to the clients' bridge. Only peer links are cut, so clients
//! still reach a node that is cut off, the old leader among them, and a stale
//! read it served would show in the history. `walrus verify` drives HTTP and
//! RESP clients through every node meanwhile and checks the history.
//!
//! Root only (it creates namespaces and links); elsewhere the test says it is
//! skipped and why.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const NODES: u32 = 3;
const HTTP_PORT: u16 = 8080;
const RESP_PORT: u16 = 6380;

/// The namespaces and links of one test run, deleted on drop: `{prefix}p`
/// holds the peers' bridge, `{prefix}c` the clients' bridge and the clients,
/// `{prefix}1`… the nodes.
struct Hosts {
    prefix: String,
    created: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|error| format!("cannot run ip: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Hosts {
    fn create() -> Result<Hosts, String> {
        let mut hosts = Hosts {
            prefix: format!("wn{}", std::process::id() % 1_000_000),
            created: Vec::new(),
        };
        for (hub, subnet) in [("p", 77), ("c", 88)] {
            let namespace = hosts.add_namespace(hub)?;
            ip(&["-n", &namespace, "link", "add", "br0", "type", "bridge"])?;
            ip(&["-n", &namespace, "link", "set", "br0", "up"])?;
            if hub == "c" {
                let address = format!("10.{subnet}.0.254/24");
                ip(&["-n", &namespace, "addr", "add", &address, "dev", "br0"])?;
            }
        }
        for node in 1..=NODES {
            let namespace = hosts.add_namespace(&node.to_string())?;
            for (hub, device, subnet) in [("p", "eth0", 77), ("c", "eth1", 88)] {
                let hub_namespace = hosts.namespace(hub);
                let port = hosts.hub_port(hub, node);
                ip(&[
                    "link",
                    "add",
                    &port,
                    "netns",
                    &hub_namespace,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    device,
                    "netns",
                    &namespace,
                ])?;
                ip(&["-n", &hub_namespace, "link", "set", &port, "master", "br0"])?;
                ip(&["-n", &hub_namespace, "link", "set", &port, "up"])?;
                let address = format!("10.{subnet}.0.{node}/24");
                ip(&["-n", &namespace, "addr", "add", &address, "dev", device])?;
                ip(&["-n", &namespace, "link", "set", device, "up"])?;
            }
        }
        Ok(hosts)
    }

    fn add_namespace(&mut self, suffix: &str) -> Result<String, String> {
        let name = self.namespace(suffix);
        ip(&["netns", "add", &name])?;
        self.created.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    fn namespace(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// The bridge's end of `node`'s link to hub `hub`.
    fn hub_port(&self, hub: &str, node: u32) -> String {
        format!("{hub}{node}")
    }

    /// Cuts `node` off from its peers (`true`) or joins it again.
    fn cut_from_peers(&self, node: u32, cut: bool) {
        let state = if cut { "down" } else { "up" };
        let port = self.hub_port("p", node);
        if let Err(error) = ip(&["-n", &self.namespace("p"), "link", "set", &port, state]) {
            panic!("{error}");
        }
    }

    /// `program args…` run inside namespace `suffix`.
    fn command(&self, suffix: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace(suffix)])
            .arg(program);
        command
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Deleting a namespace deletes the links in it.
        for name in self.created.iter().rev() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// The running nodes, killed on drop (before the namespaces go).
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn client_endpoints(scheme: &str, port: u16) -> String {
    (1..=NODES)
        .map(|node| format!("{scheme}10.88.0.{node}:{port}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The node that `walrus cluster status`, asked through the clients' bridge,
/// names leader first; `None` while no node says it leads.
fn leader(hosts: &Hosts) -> Option<u32> {
    let Output { stdout, .. } = hosts
        .command("c", env!("CARGO_BIN_EXE_walrus"))
        .args(["cluster", "status", "--endpoints"])
        .arg(client_endpoints("http://", HTTP_PORT))
        .output()
        .ok()?;
    String::from_utf8_lossy(&stdout).lines().find_map(|line| {
        let columns: Vec<&str> = line.split_whitespace().collect();
        match columns.as_slice() {
            [_, id, "leader", ..] => id.parse().ok(),
            _ => None,
        }
    })
}

#[test]
fn a_cluster_whose_nodes_lose_their_peers_silently_stays_linearizable() {
    let hosts = match Hosts::create() {
        Ok(hosts) => hosts,
        Err(reason) => {
            eprintln!(
                "SKIPPED: cannot make network namespaces here ({reason}); this test needs root \
                 (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2"
            );
            return;
        }
    };
    let data = tempfile::tempdir().expect("temp dir");
    let peers = (1..=NODES)
        .map(|node| format!("{node}=10.77.0.{node}:{HTTP_PORT}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Nodes(Vec::new());
    for node in 1..=NODES {
        let child = hosts
            .command(&node.to_string(), env!("CARGO_BIN_EXE_walrus"))
            .arg("serve")
            .args(["--node-id", &node.to_string()])
            .args(["--listen", &format!("0.0.0.0:{HTTP_PORT}")])
            .args(["--advertise", &format!("10.77.0.{node}:{HTTP_PORT}")])
            .args(["--resp-listen", &format!("0.0.0.0:{RESP_PORT}")])
            .args(["--peers", &peers, "--threads", "1"])
            .arg("--data-dir")
            .arg(data.path().join(node.to_string()))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start walrus");
        nodes.0.push(child);
    }
    let started = Instant::now();
    while leader(&hosts).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no leader within 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let workload_seconds = 30;
    let verify = hosts
        .command("c", env!("CARGO_BIN_EXE_walrus"))
        .args(["verify", "--endpoints"])
        .arg(client_endpoints("http://", HTTP_PORT))
        .arg("--resp")
        .arg(client_endpoints("", RESP_PORT))
        .args(["--duration", &workload_seconds.to_string()])
        .args(["--clients", "8", "--keys", "12", "--seed", "11"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start walrus verify");

    // Cut one node at a time off its peers for 2 s, every 3.5 s: the
    // leader on even rounds, a follower on odd ones. The last cut heals well
    // before the workload ends, so the final reads find a whole cluster.
    let workload_started = Instant::now();
    let (mut leader_cuts, mut follower_cuts) = (0, 0);
    let mut round = 0u32;
    let mut leaders_seen = std::collections::BTreeSet::new();
    while workload_started.elapsed() < Duration::from_secs(workload_seconds - 6) {
        std::thread::sleep(Duration::from_millis(1500));
        let leading = leader(&hosts);
        leaders_seen.extend(leading);
        let victim = match leading {
            Some(leader) if round.is_multiple_of(2) => {
                leader_cuts += 1;
                leader
            }
            Some(leader) => {
                follower_cuts += 1;
                leader % NODES + 1
            }
            None => round % NODES + 1,
        };
        hosts.cut_from_peers(victim, true);
        std::thread::sleep(Duration::from_secs(2));
        hosts.cut_from_peers(victim, false);
        round += 1;
    }
    let output = verify.wait_with_output().expect("walrus verify ran");
    let report = String::from_utf8_lossy(&output.stdout);
    eprintln!("{report}{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        leader_cuts >= 2 && follower_cuts >= 2,
        "the leader was cut {leader_cuts} times and a follower {follower_cuts}: too few to prove much"
    );
    assert!(
        leaders_seen.len() >= 2,
        "leadership never moved (leaders seen: {leaders_seen:?}): the cuts did not bite"
    );
    assert!(output.status.success(), "walrus verify failed");
    assert!(report.contains("verdict: PASS"), "{report}");
    eprintln!(
        "cuts: {leader_cuts} of the leader, {follower_cuts} of a follower; leaders seen: \
         {leaders_seen:?}"
    );
}
