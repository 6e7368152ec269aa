//! A leader its voters cannot reach: noticing it, and which voter takes over.
//!
//! Every peer message is one request on a connection its sender opens, and
//! its answer comes back on that connection. A leader whose incoming
//! connections fail (a firewall rule that drops what peers open towards it;
//! `walrus verify --nemesis deaf`) still sends its appends and heartbeats
//! and hears their answers: it commits, and no follower ever times out. But
//! no follower can forward a write or ask it for a read index, so every
//! client of a follower waits out its timeout for as long as the fault
//! lasts. Raft sees nothing wrong, so the leader asks.
//!
//! Every [`ASK_EVERY`] the leader asks each other voter, `reach`, whether it
//! can reach the leader; the voter finds out by sending the leader a `ping`
//! of its own, given [`PROBE_TIMEOUT`] to be answered. When the voters that
//! reach it, the leader counted, fall short of a quorum at
//! [`LOST_ASKS_IN_A_ROW`] asks in a row, the leader hands leadership to the
//! one of those that cannot which holds the most entries
//! ([`handover_target`]), at most once per [`HANDOVER_AT_MOST_EVERY`]
//! ([`ReachWatch`]).
//!
//! A quorum, not any voter: a follower that alone cannot reach the leader
//! (one link cut one way) would, if it led, leave the old leader unable to
//! hear it instead, so nothing would be gained. Three voters at least: of
//! two, the one that cannot reach the other cannot lead it either. A voter
//! that does not answer the question is not counted either way.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::NodeId;

/// How often a leader asks its voters whether they reach it.
pub const ASK_EVERY: Duration = Duration::from_secs(1);
/// How long a voter waits for the leader to answer its `ping`: far above a
/// loopback or LAN round trip, so that only a leader that does not answer
/// at all, not one busy for a moment, counts as out of reach.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the leader waits for a voter's answer (its probe and then some).
pub const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// Asks in a row that must find too few voters reaching the leader before
/// it hands over: one lost probe each is not a fault.
pub const LOST_ASKS_IN_A_ROW: u32 = 2;
/// A leader hands over for this reason at most this often: if the voter it
/// chose cannot win or lead either (its own links are cut), the cluster
/// falls back to an ordinary election, not to a handover at every ask.
pub const HANDOVER_AT_MOST_EVERY: Duration = Duration::from_secs(10);

/// The voter this leader (`me`) hands leadership to, given the `voters`,
/// those that said they cannot reach it (`lost`), how far each voter's log
/// is known to reach (`matched`), and the voters `barred` from leading
/// (short of disk space); `None` while enough voters reach it.
pub fn handover_target(
    me: NodeId,
    voters: &BTreeSet<NodeId>,
    lost: &BTreeSet<NodeId>,
    matched: &BTreeMap<NodeId, u64>,
    barred: &BTreeSet<NodeId>,
) -> Option<NodeId> {
    if voters.len() < 3 || !voters.contains(&me) {
        return None;
    }
    let lost_voters: Vec<NodeId> = voters
        .iter()
        .copied()
        .filter(|id| *id != me && lost.contains(id))
        .collect();
    let reaching = voters.len() - lost_voters.len();
    let quorum = voters.len() / 2 + 1;
    if reaching >= quorum {
        return None;
    }
    lost_voters
        .into_iter()
        .filter(|id| !barred.contains(id))
        .max_by_key(|id| {
            (
                matched.get(id).copied().unwrap_or(0),
                std::cmp::Reverse(*id),
            )
        })
}

/// The leader's side between asks: whether one is under way, how many in a
/// row found it out of reach, and when it last handed over for that.
#[derive(Debug, Default)]
pub struct ReachWatch {
    state: Mutex<WatchState>,
}

#[derive(Debug, Default)]
struct WatchState {
    asking: bool,
    lost_in_a_row: u32,
    handed_over: Option<Instant>,
}

impl ReachWatch {
    /// Whether to ask now: no ask is under way (a voter slow to answer
    /// holds up the next one, not piles them up) and no handover for this
    /// reason is recent. Marks an ask under way when it says yes.
    pub fn start_ask(&self) -> bool {
        let mut state = self.state.lock();
        let recent = state
            .handed_over
            .is_some_and(|when| when.elapsed() < HANDOVER_AT_MOST_EVERY);
        if state.asking || recent {
            return false;
        }
        state.asking = true;
        true
    }

    /// Ends an ask that found `target` to hand over to (or none): returns
    /// the voter to hand over to now, once [`LOST_ASKS_IN_A_ROW`] asks in a
    /// row found one, and notes the handover.
    pub fn finish_ask(&self, target: Option<NodeId>) -> Option<NodeId> {
        let mut state = self.state.lock();
        state.asking = false;
        let Some(target) = target else {
            state.lost_in_a_row = 0;
            return None;
        };
        state.lost_in_a_row += 1;
        if state.lost_in_a_row < LOST_ASKS_IN_A_ROW {
            return None;
        }
        state.lost_in_a_row = 0;
        state.handed_over = Some(Instant::now());
        Some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn matched(pairs: &[(NodeId, u64)]) -> BTreeMap<NodeId, u64> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn a_leader_no_voter_reaches_hands_over_to_the_one_furthest_along() {
        let voters = set(&[1, 2, 3]);
        let target = handover_target(
            1,
            &voters,
            &set(&[2, 3]),
            &matched(&[(2, 40), (3, 41)]),
            &set(&[]),
        );
        assert_eq!(target, Some(3));
        // Level: the lower id, so every ask picks the same one.
        let target = handover_target(
            1,
            &voters,
            &set(&[2, 3]),
            &matched(&[(2, 41), (3, 41)]),
            &set(&[]),
        );
        assert_eq!(target, Some(2));
    }

    #[test]
    fn a_leader_a_quorum_reaches_stays() {
        let three = set(&[1, 2, 3]);
        assert_eq!(
            handover_target(1, &three, &set(&[2]), &matched(&[]), &set(&[])),
            None,
            "one follower of two cut one way: the leader and the other are a quorum"
        );
        let five = set(&[1, 2, 3, 4, 5]);
        assert_eq!(
            handover_target(1, &five, &set(&[2, 3]), &matched(&[]), &set(&[])),
            None
        );
        assert_eq!(
            handover_target(1, &five, &set(&[2, 3, 4]), &matched(&[(4, 9)]), &set(&[])),
            Some(4)
        );
    }

    #[test]
    fn learners_the_leader_itself_and_barred_voters_do_not_count_or_lead() {
        let voters = set(&[1, 2, 3]);
        assert_eq!(
            handover_target(1, &voters, &set(&[1, 2, 7]), &matched(&[]), &set(&[])),
            None,
            "a learner's loss and the leader's own do not make a quorum lost"
        );
        assert_eq!(
            handover_target(1, &voters, &set(&[2, 3]), &matched(&[(3, 9)]), &set(&[3])),
            Some(2),
            "a voter short of disk space does not lead"
        );
        assert_eq!(
            handover_target(1, &voters, &set(&[2, 3]), &matched(&[]), &set(&[2, 3])),
            None
        );
    }

    #[test]
    fn two_voters_never_hand_over_for_reach() {
        assert_eq!(
            handover_target(1, &set(&[1, 2]), &set(&[2]), &matched(&[]), &set(&[])),
            None
        );
    }

    #[test]
    fn the_watch_hands_over_after_asks_in_a_row_then_rests() {
        let watch = ReachWatch::default();
        assert!(watch.start_ask());
        assert!(!watch.start_ask(), "one ask at a time");
        assert_eq!(watch.finish_ask(Some(2)), None, "one ask is not enough");
        assert!(watch.start_ask());
        assert_eq!(watch.finish_ask(None), None, "a good ask breaks the run");
        assert!(watch.start_ask());
        assert_eq!(watch.finish_ask(Some(2)), None);
        assert!(watch.start_ask());
        assert_eq!(watch.finish_ask(Some(3)), Some(3), "two in a row");
        assert!(!watch.start_ask(), "no asks right after a handover");
    }
}
