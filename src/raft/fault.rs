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

use std::collections::BTreeSet;

use parking_lot::RwLock;

use super::NodeId;

#[derive(Debug, Default)]
pub struct FaultSwitch {
    cut: RwLock<BTreeSet<NodeId>>,
}

impl FaultSwitch {
    /// Cuts this node off from `peers` (added to any already cut).
    pub fn isolate(&self, peers: impl IntoIterator<Item = NodeId>) {
        self.cut.write().extend(peers);
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.cut.write().clear();
    }

    /// Whether messages to and from `peer` are dropped.
    pub fn blocks(&self, peer: NodeId) -> bool {
        self.cut.read().contains(&peer)
    }

    /// The peers cut now.
    pub fn cut(&self) -> Vec<NodeId> {
        self.cut.read().iter().copied().collect()
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
        assert!(switch.blocks(2) && switch.blocks(3) && !switch.blocks(1));
        assert_eq!(switch.cut(), vec![2, 3]);
        switch.heal();
        assert!(!switch.blocks(2));
    }
}
