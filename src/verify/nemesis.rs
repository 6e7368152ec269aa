//! A local cluster that `walrus verify --dev-cluster N` starts, and the faults
//! it injects while the workload runs: kill -9 and restart a node, pause a
//! node (SIGSTOP) past the election timeout and resume it, restart every node
//! at once, cut one node off from the others, and cut the cluster in two
//! halves that only a bridging node reaches both of, and cut one link one way
//! (partitions, through the peer transport's fault switch: the nodes are then
//! started with `--enable-fault-injection`), and take a node out of the
//! cluster and put it back (a membership change under load, through
//! `/cluster/…`). Each fault is healed before the next, and all are healed
//! before the final reads.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

/// A fault the nemesis can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    Kill,
    Pause,
    RestartAll,
    /// One node cut off from every other node, both directions; clients
    /// still reach it (so it must refuse what it cannot do with a quorum).
    Partition,
    /// Jepsen's bridge: the other nodes split into two halves that cannot
    /// reach each other, and one node that reaches both (of three: two nodes
    /// cut apart, the third in touch with both). Neither half is a majority
    /// alone; a leader keeps its quorum only through the bridge, while the
    /// node across the cut may try to take over through it.
    Bridge,
    /// One link cut one way: a node refuses every message another sends it,
    /// while its own messages to that node go through and are answered.
    /// When the leader's messages are the lost ones, its follower hears no
    /// heartbeat though the leader hears it fine.
    OneWay,
    /// Every link into one node cut one way (the leader half the time): it
    /// refuses every message its peers send it, while its own messages go
    /// through and are answered. A deaf leader still heartbeats, so no one
    /// takes over, yet no follower can forward to it or ask it for a read
    /// index.
    Deaf,
    /// Every link out of one node cut one way (the leader half the time):
    /// its peers refuse every message it sends, while theirs reach it. A
    /// mute leader is replaced, and hears of it from its successor.
    Mute,
    /// A node removed from the cluster (the leader as often as any other),
    /// then added back under its id as a learner and promoted to voter: two
    /// membership changes, each a joint configuration, while writes go on.
    /// The node keeps running and serving clients throughout, so while it
    /// is out it must refuse what it cannot do with a quorum.
    Member,
}

impl Fault {
    const ALL: [Fault; 9] = [
        Fault::Kill,
        Fault::Pause,
        Fault::RestartAll,
        Fault::Partition,
        Fault::Bridge,
        Fault::OneWay,
        Fault::Deaf,
        Fault::Mute,
        Fault::Member,
    ];

    /// As `--nemesis` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::RestartAll => "restart-all",
            Fault::Partition => "partition",
            Fault::Bridge => "bridge",
            Fault::OneWay => "one-way",
            Fault::Deaf => "deaf",
            Fault::Mute => "mute",
            Fault::Member => "member",
        }
    }

    /// Whether the fault needs the peer transport's partition switch.
    pub fn cuts_links(self) -> bool {
        matches!(
            self,
            Fault::Partition | Fault::Bridge | Fault::OneWay | Fault::Deaf | Fault::Mute
        )
    }

    /// The fewest nodes the fault makes sense on.
    pub fn fewest_nodes(self) -> u64 {
        match self {
            Fault::Partition | Fault::OneWay | Fault::Deaf | Fault::Mute | Fault::Member => 2,
            Fault::Bridge => 3,
            Fault::Kill | Fault::Pause | Fault::RestartAll => 1,
        }
    }
}

impl std::str::FromStr for Fault {
    type Err = String;

    fn from_str(text: &str) -> Result<Fault, String> {
        Fault::ALL
            .into_iter()
            .find(|fault| fault.name() == text)
            .ok_or_else(|| {
                format!(
                    "unknown fault {text:?}: expected kill, pause, restart-all, partition, \
                     bridge, one-way, deaf, mute or member"
                )
            })
    }
}

/// One injected fault, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct FaultEvent {
    pub fault: Fault,
    /// The node it hit (0 for every node).
    pub node: u64,
    pub at_ms: u64,
    pub healed_at_ms: u64,
}

struct LocalNode {
    id: u64,
    http: String,
    resp: String,
    args: Vec<String>,
    /// Where the node's errors go (`node-N.log` beside its data), so a node
    /// that will not start can say why.
    log: PathBuf,
    child: Option<Child>,
}

/// Nodes started from this binary on loopback.
pub struct LocalCluster {
    nodes: Vec<LocalNode>,
    _dir: Option<tempfile::TempDir>,
}

impl LocalCluster {
    /// Starts `count` nodes with data under `dir` (a new temporary directory
    /// when `None`). One node is a plain single-node store. With
    /// `fault_injection`, nodes expose the partition switch.
    pub fn start(
        count: u64,
        dir: Option<&Path>,
        fault_injection: bool,
    ) -> std::io::Result<LocalCluster> {
        let (base, temp) = match dir {
            Some(dir) => (dir.to_path_buf(), None),
            None => {
                let temp = tempfile::tempdir()?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let mut ports = crate::net::unused_loopback_ports(2 * count as usize)?;
        let resp_ports = ports.split_off(count as usize);
        let peers = ports
            .iter()
            .enumerate()
            .map(|(index, port)| format!("{}=127.0.0.1:{port}", index + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (index, port) in ports.iter().enumerate() {
            let id = index as u64 + 1;
            let http = format!("127.0.0.1:{port}");
            let resp = format!("127.0.0.1:{}", resp_ports[index]);
            let data: PathBuf = base.join(format!("node-{id}"));
            let mut args = vec![
                "serve".to_string(),
                "--listen".into(),
                http.clone(),
                "--resp-listen".into(),
                resp.clone(),
                "--data-dir".into(),
                data.display().to_string(),
                // The nodes share this machine's cores (see `dev_cluster`),
                // and stop if `verify` dies without killing them.
                "--threads".into(),
                crate::dev_cluster::threads_per_node(count).to_string(),
                "--stop-when-stdin-closes".into(),
            ];
            if count > 1 {
                args.extend([
                    "--node-id".into(),
                    id.to_string(),
                    "--peers".into(),
                    peers.clone(),
                    "--request-timeout-ms".into(),
                    "2000".into(),
                ]);
                if fault_injection {
                    args.push("--enable-fault-injection".into());
                }
            }
            nodes.push(LocalNode {
                id,
                http,
                resp,
                args,
                log: base.join(format!("node-{id}.log")),
                child: None,
            });
        }
        let mut cluster = LocalCluster { nodes, _dir: temp };
        for index in 0..cluster.nodes.len() {
            cluster.start_node(index)?;
        }
        Ok(cluster)
    }

    /// Starts node `index` and waits until it listens. A node restarts on
    /// the port it had, which another process may have taken while it was
    /// down (ports come from below the ephemeral range, so rarely; from
    /// within it, where `net::unused_loopback_ports` falls back, any outgoing
    /// connection can): a start that exits at once (it could not bind) is
    /// tried again until the port is free.
    fn start_node(&mut self, index: usize) -> std::io::Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let node = &mut self.nodes[index];
        let mut child = spawn_node(&node.args, &node.log)?;
        loop {
            if std::net::TcpStream::connect(&node.http).is_ok() {
                node.child = Some(child);
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                node.child = Some(child);
                return Err(std::io::Error::other(format!(
                    "walrus did not start listening on {}; its last errors: {}",
                    node.http,
                    last_lines(&node.log, 5)
                )));
            }
            if child.try_wait()?.is_some() {
                std::thread::sleep(Duration::from_millis(200));
                child = spawn_node(&node.args, &node.log)?;
                continue;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("http://{}", node.http))
            .collect()
    }

    /// The nodes' RESP addresses as `redis://` endpoints.
    pub fn resp_endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("redis://{}", node.resp))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn signal(&self, index: usize, signal: &str) {
        if let Some(child) = &self.nodes[index].child {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Injects `fault`, waits `hold`, heals it; returns the node it hit.
    pub async fn inject(
        &mut self,
        fault: Fault,
        rng: &mut StdRng,
        hold: Duration,
    ) -> std::io::Result<u64> {
        let index = rng.random_range(0..self.nodes.len());
        match fault {
            Fault::Kill => {
                self.kill(index);
                tokio::time::sleep(hold).await;
                self.start_node(index)?;
                Ok(self.nodes[index].id)
            }
            Fault::Pause => {
                self.signal(index, "-STOP");
                tokio::time::sleep(hold).await;
                self.signal(index, "-CONT");
                Ok(self.nodes[index].id)
            }
            Fault::Partition => {
                let isolated = self.nodes[index].id;
                let others: Vec<u64> = self.ids().filter(|&id| id != isolated).collect();
                self.cut_apart(&[isolated], &others).await?;
                tokio::time::sleep(hold).await;
                self.heal_partitions().await?;
                Ok(isolated)
            }
            Fault::Bridge => {
                let bridge = self.nodes[index].id;
                let mut others: Vec<u64> = self.ids().filter(|&id| id != bridge).collect();
                others.shuffle(rng);
                let (left, right) = others.split_at(others.len() / 2);
                self.cut_apart(left, right).await?;
                tokio::time::sleep(hold).await;
                self.heal_partitions().await?;
                Ok(bridge)
            }
            Fault::OneWay => {
                // The node at `index` stops hearing one other node.
                let deaf = &self.nodes[index];
                let others: Vec<u64> = self.ids().filter(|&id| id != deaf.id).collect();
                let unheard = others[rng.random_range(0..others.len())];
                post(
                    &deaf.http,
                    &format!("/fault/partition?refuse_from={unheard}"),
                )
                .await?;
                tokio::time::sleep(hold).await;
                self.heal_partitions().await?;
                Ok(deaf.id)
            }
            Fault::Deaf | Fault::Mute => {
                // The leader half the time: the harder case for both.
                let target = self.leader_half_the_time(rng, index).await;
                let others: Vec<u64> = self.ids().filter(|&id| id != target).collect();
                let refuse = |from: &[u64]| {
                    format!(
                        "/fault/partition?refuse_from={}",
                        from.iter()
                            .map(u64::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                };
                for node in &self.nodes {
                    if fault == Fault::Deaf && node.id == target {
                        post(&node.http, &refuse(&others)).await?;
                    } else if fault == Fault::Mute && node.id != target {
                        post(&node.http, &refuse(&[target])).await?;
                    }
                }
                tokio::time::sleep(hold).await;
                self.heal_partitions().await?;
                Ok(target)
            }
            Fault::Member => {
                // The leader half the time: its removal makes it step down
                // and hand over, the harder change.
                let removed = self.leader_half_the_time(rng, index).await;
                self.settle_membership(Some(removed)).await?;
                tokio::time::sleep(hold).await;
                self.settle_membership(None).await?;
                Ok(removed)
            }
            Fault::RestartAll => {
                for index in 0..self.nodes.len() {
                    self.kill(index);
                }
                tokio::time::sleep(hold / 4).await;
                for index in 0..self.nodes.len() {
                    self.start_node(index)?;
                }
                Ok(0)
            }
        }
    }

    /// Resumes paused nodes, restarts stopped ones, and restores every link.
    pub async fn heal(&mut self) -> std::io::Result<()> {
        for index in 0..self.nodes.len() {
            if self.nodes[index].child.is_none() {
                self.start_node(index)?;
            } else {
                self.signal(index, "-CONT");
            }
        }
        if self.nodes.iter().any(|node| {
            node.args
                .iter()
                .any(|arg| arg == "--enable-fault-injection")
        }) {
            self.heal_partitions().await?;
        }
        Ok(())
    }

    /// Changes the membership, one step at a time through whichever node
    /// leads, until every node is a voter except `removed`, which is no
    /// member at all. Judged from the leader's own status after each step,
    /// never from a step's answer, so a step that timed out but took effect
    /// is not repeated, and one that was lost is.
    async fn settle_membership(&self, removed: Option<u64>) -> std::io::Result<()> {
        let deadline = std::time::Instant::now() + MEMBERSHIP_SETTLE_TIMEOUT;
        let mut last = String::from("no leader found");
        loop {
            if let Some((leader, status)) = self.leader_status().await {
                let Some(step) = self.membership_step(&status, removed) else {
                    return Ok(());
                };
                last = match post(&leader, &step).await {
                    Ok(()) => format!("{step} answered, not yet in the leader's status"),
                    Err(error) => error.to_string(),
                };
            }
            if std::time::Instant::now() >= deadline {
                return Err(std::io::Error::other(format!(
                    "the membership did not settle within {} s (every node a voter{}): {last}",
                    MEMBERSHIP_SETTLE_TIMEOUT.as_secs(),
                    removed.map_or(String::new(), |id| format!(" but node {id}, removed")),
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The next `/cluster/…` request towards the membership
    /// [`Self::settle_membership`] wants, from the leader's `status`;
    /// `None` once it holds.
    fn membership_step(
        &self,
        status: &crate::raft::ClusterStatus,
        removed: Option<u64>,
    ) -> Option<String> {
        if let Some(removed) = removed
            && (status.voters.contains(&removed) || status.learners.contains(&removed))
        {
            return Some(format!("/cluster/remove?id={removed}"));
        }
        let missing = self
            .nodes
            .iter()
            .find(|node| Some(node.id) != removed && !status.voters.contains(&node.id))?;
        Some(if status.learners.contains(&missing.id) {
            format!("/cluster/promote?id={}", missing.id)
        } else {
            format!(
                "/cluster/add-learner?id={}&addr={}",
                missing.id, missing.http
            )
        })
    }

    /// The HTTP address and status of the node that says it leads and
    /// whose term no other node has passed (a leader cut off meanwhile may
    /// still believe it leads).
    async fn leader_status(&self) -> Option<(String, crate::raft::ClusterStatus)> {
        let mut statuses = Vec::new();
        for node in &self.nodes {
            if let Ok(body) = get(&node.http, "/cluster/status").await
                && let Ok(status) = serde_json::from_slice::<crate::raft::ClusterStatus>(&body)
            {
                statuses.push((node.http.clone(), status));
            }
        }
        let newest_term = statuses.iter().map(|(_, status)| status.term).max()?;
        statuses.into_iter().find(|(_, status)| {
            status.role == "leader"
                && status.term == newest_term
                && status.leader_id == Some(status.node_id)
        })
    }

    /// The leader's id half the time (when one is known), otherwise the
    /// node at `index`.
    async fn leader_half_the_time(&self, rng: &mut StdRng, index: usize) -> u64 {
        let leader = self.leader_status().await.map(|(_, status)| status.node_id);
        match leader {
            Some(leader) if rng.random_bool(0.5) => leader,
            _ => self.nodes[index].id,
        }
    }

    fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.nodes.iter().map(|node| node.id)
    }

    /// Cuts every node in `left` off from every node in `right`, both ways,
    /// through each node's fault switch.
    async fn cut_apart(&self, left: &[u64], right: &[u64]) -> std::io::Result<()> {
        for (side, across) in [(left, right), (right, left)] {
            let across = across
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            for node in self.nodes.iter().filter(|node| side.contains(&node.id)) {
                post(&node.http, &format!("/fault/partition?isolate={across}")).await?;
            }
        }
        Ok(())
    }

    async fn heal_partitions(&self) -> std::io::Result<()> {
        for node in &self.nodes {
            post(&node.http, "/fault/heal").await?;
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.signal(index, "-CONT");
            self.kill(index);
        }
    }
}

/// How long a membership change may take to settle: a removed leader's
/// successor must be elected, and a learner added back must catch up.
const MEMBERSHIP_SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// `POST path` to a node's HTTP port; an answer other than 200 is an error.
async fn post(address: &str, path: &str) -> std::io::Result<()> {
    request(address, "POST", path).await.map(|_| ())
}

/// `GET path` from a node's HTTP port: the body of a 200 answer.
async fn get(address: &str, path: &str) -> std::io::Result<Vec<u8>> {
    request(address, "GET", path).await
}

/// One request on a connection of its own; the body of a 200 answer, any
/// other answer an error.
async fn request(address: &str, method: &str, path: &str) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| {
            std::io::Error::other(format!("{address} did not answer {method} {path}"))
        })??;
    if answer.starts_with(b"HTTP/1.1 200") {
        let body_at = answer
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .map_or(answer.len(), |at| at + 4);
        return Ok(answer[body_at..].to_vec());
    }
    let status = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
    Err(std::io::Error::other(format!(
        "{method} {path} to {address}: {status}"
    )))
}

/// A `walrus serve` process with `args`; its errors are appended to `log`.
fn spawn_node(args: &[String], log: &Path) -> std::io::Result<std::process::Child> {
    let errors = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Command::new(std::env::current_exe()?)
        .args(args)
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(errors)
        .spawn()
}

/// The last `count` lines of the file at `path`, on one line.
fn last_lines(path: &Path, count: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(count)..].join(" | ");
    if tail.is_empty() { "none".into() } else { tail }
}
