//! [`ReplicatedStore`]: the [`KvStore`] calls on a Raft replica.
//!
//! Reads come from the replica's applied state (the caller takes a read
//! barrier first for a linearizable read). A write is encoded as the log
//! carries it and proposed through the cluster on the async runtime; its
//! [`Submission`] resolves once it is committed and applied. Only the leader
//! reports expired keys, so only the leader's sweeper proposes their deletes.

use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::error::Error;
use parking_lot::RwLock;

use crate::raft::cluster::unconfirmed_within;
use crate::raft::{ClusterNode, Proposal};
use crate::storage::record::MAX_RECORD_PAYLOAD;
use crate::store::{
    Command, DbKey, KvStore, MAX_COMMAND_FIELD_BYTES, ORIGIN_FORMAT, Origin, State, Submission,
    encode_payload_from, now_ms, origin,
};

pub struct ReplicatedStore {
    cluster: Arc<ClusterNode>,
    runtime: Handle,
}

impl ReplicatedStore {
    /// Must be called on the async runtime that will run the writes.
    pub fn new(cluster: Arc<ClusterNode>) -> ReplicatedStore {
        ReplicatedStore {
            cluster,
            runtime: Handle::current(),
        }
    }

    pub(super) fn cluster(&self) -> &Arc<ClusterNode> {
        &self.cluster
    }

    /// The proposal for `command`, or why it cannot be proposed: too large
    /// for a log record, or in a log format some member may not read.
    fn encode(&self, command: &Command) -> Result<Proposal, Error> {
        self.cluster.check_command_format(command.format())?;
        let size = command.data_bytes();
        if size > MAX_COMMAND_FIELD_BYTES {
            return Err(Error::InvalidArgument(format!(
                "command carries {size} bytes; the limit is {MAX_COMMAND_FIELD_BYTES}"
            )));
        }
        // The client a RESP write came from rides in the log, so that a
        // connection tracking keys with NOLOOP is not told of its own write
        // when this node applies it; left out until every member reads it.
        let client = origin::current();
        let from =
            (client != origin::UNKNOWN && self.cluster.members_read(ORIGIN_FORMAT)).then(|| {
                Origin {
                    node_run: self.cluster.run(),
                    client,
                }
            });
        let mut payload = Vec::with_capacity(size + 48);
        encode_payload_from(&mut payload, now_ms(), from, command);
        if payload.len() > MAX_RECORD_PAYLOAD {
            return Err(Error::InvalidArgument(format!(
                "command encodes to {} bytes; a log record holds at most {MAX_RECORD_PAYLOAD}",
                payload.len()
            )));
        }
        Ok(Proposal { payload })
    }
}

impl KvStore for ReplicatedStore {
    fn state(&self) -> &RwLock<State> {
        self.cluster.state()
    }
    fn submit(&self, command: Command) -> Submission {
        let proposal = match self.encode(&command) {
            Ok(proposal) => proposal,
            Err(error) => return Submission::ready(Err(error)),
        };
        let (reply, receiver) = oneshot::channel();
        match self.cluster.propose_leading(proposal, reply, &self.runtime) {
            Ok(()) => Submission::pending_until(
                receiver,
                self.cluster.request_timeout(),
                unconfirmed_within,
            ),
            Err((proposal, reply)) => {
                let cluster = self.cluster.clone();
                self.runtime.spawn(async move {
                    let _ = reply.send(cluster.write(proposal).await);
                });
                Submission::pending(receiver)
            }
        }
    }

    /// A pipeline's writes go to the leader together (one forwarded request
    /// from a follower; one append on the leader).
    fn submit_all(&self, commands: Vec<Command>) -> Vec<Submission> {
        if commands.len() <= 1 {
            return commands
                .into_iter()
                .map(|command| self.submit(command))
                .collect();
        }
        let mut submissions = Vec::with_capacity(commands.len());
        let mut proposals = Vec::new();
        let mut replies = Vec::new();
        for command in &commands {
            match self.encode(command) {
                Ok(proposal) => {
                    let (reply, receiver) = oneshot::channel();
                    proposals.push(proposal);
                    replies.push(reply);
                    submissions.push(Submission::pending(receiver));
                }
                Err(error) => submissions.push(Submission::ready(Err(error))),
            }
        }
        let cluster = self.cluster.clone();
        self.runtime.spawn(async move {
            let results = cluster.write_batch(proposals).await;
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        });
        submissions
    }

    /// Raft stopped on a storage failure: this member refuses everything
    /// until it is restarted.
    fn failure(&self) -> Option<String> {
        self.cluster.fatal_error()
    }

    fn expired_keys(
        &self,
        after: Option<(u8, &[u8])>,
        max_keys: usize,
    ) -> (Vec<DbKey>, Option<DbKey>) {
        if !self.cluster.is_leader() {
            return (Vec::new(), None);
        }
        self.state().read().expired_keys(after, max_keys, now_ms())
    }
}
