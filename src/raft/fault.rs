//! The partition switch: the peers this node pretends it cannot reach, for
//! fault testing only.
//!
//! It exists only on a node started with `--enable-fault-injection`; without
//! that flag there is no switch and the `/fault/…` routes answer 404, so a
//! production node can never be partitioned through its API. While a peer is
//! cut, every message to it fails at once as unreachable and every message
//! from it is refused with 503: both directions, as a real partition between
//! two hosts. Cutting is per node; a symmetric partition of A from B cuts B
//! on A and A on B.
//!
//! A one-way cut refuses only what a peer sends: with A refusing B, B's
//! messages to A are lost while A's reach B and come back answered (the
//! link B → A is down, A → B is up), the shape a half-broken NIC or a
//! one-sided firewall rule gives.

use std::collections::BTreeSet;

use parking_lot::RwLock;

use super::NodeId;

#[derive(Debug, Default)]
pub struct FaultSwitch {
    links: RwLock<Links>,
}

#[derive(Debug, Default)]
struct Links {
    /// Peers cut both ways.
    cut: BTreeSet<NodeId>,
    /// Peers whose messages this node refuses, while its own reach them.
    refused: BTreeSet<NodeId>,
}

impl FaultSwitch {
    /// Cuts this node off from `peers`, both ways (added to any already cut).
    pub fn isolate(&self, peers: impl IntoIterator<Item = NodeId>) {
        self.links.write().cut.extend(peers);
    }

    /// Refuses what `peers` send this node; what it sends them still goes.
    pub fn refuse_from(&self, peers: impl IntoIterator<Item = NodeId>) {
        self.links.write().refused.extend(peers);
    }

    /// Restores every link.
    pub fn heal(&self) {
        *self.links.write() = Links::default();
    }

    /// Whether messages to `peer` are dropped.
    pub fn blocks_to(&self, peer: NodeId) -> bool {
        self.links.read().cut.contains(&peer)
    }

    /// Whether messages from `peer` are refused.
    pub fn blocks_from(&self, peer: NodeId) -> bool {
        let links = self.links.read();
        links.cut.contains(&peer) || links.refused.contains(&peer)
    }

    /// The peers cut both ways now.
    pub fn cut(&self) -> Vec<NodeId> {
        self.links.read().cut.iter().copied().collect()
    }

    /// The peers refused one way now.
    pub fn refused(&self) -> Vec<NodeId> {
        self.links.read().refused.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolate_adds_and_heal_clears() {
        let switch = FaultSwitch::default();
        switch.isolate([2, 3]);
        switch.isolate([3]);
        assert!(switch.blocks_to(2) && switch.blocks_to(3) && !switch.blocks_to(1));
        assert!(switch.blocks_from(2) && switch.blocks_from(3) && !switch.blocks_from(1));
        assert_eq!(switch.cut(), vec![2, 3]);
        switch.heal();
        assert!(!switch.blocks_to(2) && !switch.blocks_from(2));
    }

    #[test]
    fn a_one_way_cut_refuses_only_what_the_peer_sends() {
        let switch = FaultSwitch::default();
        switch.refuse_from([2]);
        assert!(switch.blocks_from(2), "2's messages are refused");
        assert!(!switch.blocks_to(2), "messages to 2 still go");
        assert_eq!((switch.cut(), switch.refused()), (vec![], vec![2]));
        switch.heal();
        assert!(!switch.blocks_from(2));
    }
}
