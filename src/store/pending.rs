//! Writes waiting for the log, and who commits them: group commit led by the
//! writers themselves.
//!
//! A writer queues its proposals here. If nobody is committing, it becomes
//! the *leader*: it takes everything queued, commits it with one append and
//! one sync, wakes the batch's writers, and goes on while more has queued
//! meanwhile. Writers that arrive while a leader commits only queue and wait:
//! the leader takes them in its next batch. Where a writer must not block
//! (a runtime whose only worker it is), it hands the leadership to the
//! commit thread instead (`commit.rs`).
//!
//! Why leaders rather than one commit thread: on two cores shared with the
//! load, each hop between threads (writer → commit thread → notifier →
//! writer) is a futex wake and a context switch per batch, about a third
//! of the CPU a write cost. A leader that is a runtime worker wakes the
//! batch's tasks onto its own run queue, with no system call.
//!
//! Invariants: proposals leave in the order they were queued, whole
//! prefixes at a time, and only to the leader, so the log holds every
//! writer's proposals in its order; at most one leader at a time; while
//! anything is queued there is a leader (a writer that queues onto an empty
//! leaderless queue becomes it), so nothing waits for a commit nobody will
//! make.

use std::collections::VecDeque;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::log_writer::Proposal;
use crate::error::Error;

pub(super) struct PendingWrites {
    inner: Mutex<Inner>,
    /// The commit thread, leading, sleeps on this until enough writers are
    /// back; shutdown waits on it for the leader to finish.
    changed: Condvar,
}

struct Inner {
    proposals: VecDeque<Proposal>,
    /// Someone (a writer or the commit thread) is committing and will take
    /// whatever is queued before it resigns.
    led: bool,
    /// The store is closing: nothing more is taken.
    closed: bool,
    /// A waiting leader sleeps until this many are queued (0: none waits).
    wake_at: usize,
    /// Proposals ever queued, and ever committed (or refused) by a leader.
    queued_total: u64,
    done_total: u64,
    /// Callers of `wait_done` asleep now.
    done_waiters: usize,
}

/// What a writer must do after queueing.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// Nobody was committing: the caller leads now.
    Lead,
    /// A leader will take the proposals.
    Follow,
}

impl PendingWrites {
    pub fn new() -> PendingWrites {
        PendingWrites {
            inner: Mutex::new(Inner {
                proposals: VecDeque::new(),
                led: false,
                closed: false,
                wake_at: 0,
                queued_total: 0,
                done_total: 0,
                done_waiters: 0,
            }),
            changed: Condvar::new(),
        }
    }

    /// Queues `proposals` in order. Gives them back if the store is closing.
    pub fn push(
        &self,
        proposals: impl IntoIterator<Item = Proposal>,
    ) -> Result<Role, Vec<Proposal>> {
        let mut inner = self.inner.lock();
        if inner.closed {
            return Err(proposals.into_iter().collect());
        }
        let before = inner.proposals.len();
        inner.proposals.extend(proposals);
        inner.queued_total += (inner.proposals.len() - before) as u64;
        if inner.wake_at > 0 && inner.proposals.len() >= inner.wake_at {
            inner.wake_at = 0;
            self.changed.notify_all();
        }
        if inner.led {
            return Ok(Role::Follow);
        }
        inner.led = true;
        Ok(Role::Lead)
    }

    /// For the leader: moves the next batch (a prefix of at most `max`
    /// proposals, and past `max_bytes` of payload no more) into `batch`. With
    /// nothing queued it resigns the leadership and returns false.
    pub fn take_or_resign(&self, batch: &mut Vec<Proposal>, max: usize, max_bytes: usize) -> bool {
        let mut inner = self.inner.lock();
        if inner.proposals.is_empty() {
            inner.led = false;
            self.changed.notify_all();
            return false;
        }
        let mut bytes = 0;
        while batch.len() < max && bytes < max_bytes {
            let Some(proposal) = inner.proposals.pop_front() else {
                break;
            };
            bytes += proposal.payload.len();
            batch.push(proposal);
        }
        true
    }

    /// For the leader: resigns if nothing is queued (true), else keeps the
    /// leadership (false).
    pub fn resign_if_empty(&self) -> bool {
        let mut inner = self.inner.lock();
        if !inner.proposals.is_empty() {
            return false;
        }
        inner.led = false;
        self.changed.notify_all();
        true
    }

    /// For the leader: `count` proposals it took are committed (or refused),
    /// and applied.
    pub fn done(&self, count: usize) {
        let mut inner = self.inner.lock();
        inner.done_total += count as u64;
        if inner.done_waiters > 0 {
            self.changed.notify_all();
        }
    }

    /// Waits until every proposal queued before this call is done, or until
    /// `deadline`; returns whether they are.
    pub fn wait_done(&self, deadline: Instant) -> bool {
        let mut inner = self.inner.lock();
        let target = inner.queued_total;
        while inner.done_total < target {
            inner.done_waiters += 1;
            let timed_out = self.changed.wait_until(&mut inner, deadline).timed_out();
            inner.done_waiters -= 1;
            if timed_out {
                return inner.done_total >= target;
            }
        }
        true
    }

    /// For the leader: sleeps until `count` proposals are queued or
    /// `deadline` passes, whichever is first; takes nothing.
    pub fn wait_for(&self, count: usize, deadline: Instant) {
        let mut inner = self.inner.lock();
        while inner.proposals.len() < count {
            inner.wake_at = count;
            if self.changed.wait_until(&mut inner, deadline).timed_out() {
                break;
            }
        }
        inner.wake_at = 0;
    }

    /// How many proposals are queued now.
    pub fn len(&self) -> usize {
        self.inner.lock().proposals.len()
    }

    /// Refuses every later push. Returns whether a leader is at work (it
    /// takes what is queued before it resigns).
    pub fn close(&self) -> bool {
        let mut inner = self.inner.lock();
        inner.closed = true;
        inner.led
    }

    /// Whether a leader is at work; if not, waits up to `deadline` for one
    /// to resign.
    pub fn is_led_after(&self, deadline: Instant) -> bool {
        let mut inner = self.inner.lock();
        if inner.led {
            let _ = self.changed.wait_until(&mut inner, deadline);
        }
        inner.led
    }

    /// Gives up on the queue: refuses every queued proposal and every later
    /// push (`Closed`) and resigns. For when the commit thread is gone, or a
    /// closing store's leader never finished.
    pub fn abandon(&self) {
        let left: Vec<Proposal> = {
            let mut inner = self.inner.lock();
            inner.closed = true;
            inner.led = false;
            let left: Vec<Proposal> = inner.proposals.drain(..).collect();
            inner.done_total += left.len() as u64;
            self.changed.notify_all();
            left
        };
        for proposal in left {
            proposal.reply.send(Err(Error::Closed));
        }
    }

    /// For the closing commit thread once no leader is left: takes the
    /// leadership for good, with everything still queued.
    pub fn take_all_for_close(&self) -> Vec<Proposal> {
        let mut inner = self.inner.lock();
        inner.led = true;
        inner.proposals.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Command;
    use bytes::Bytes;
    use tokio::sync::oneshot;

    fn proposal(key: &str) -> Proposal {
        let (reply, _receiver) = oneshot::channel();
        let reply = crate::store::group_reply::ReplyTo::Own(reply);
        Proposal {
            payload: key.as_bytes().to_vec(),
            issued_at_ms: 0,
            command: Command::delete(Bytes::copy_from_slice(key.as_bytes())),
            origin: crate::store::origin::UNKNOWN,
            wakes_thread: false,
            reply,
        }
    }

    fn keys(batch: &[Proposal]) -> Vec<&[u8]> {
        batch.iter().map(|p| p.payload.as_slice()).collect()
    }

    #[test]
    fn the_first_writer_leads_and_later_ones_follow_until_it_resigns() {
        let pending = PendingWrites::new();
        assert_eq!(pending.push([proposal("a")]).ok(), Some(Role::Lead));
        assert_eq!(
            pending.push([proposal("b"), proposal("c")]).ok(),
            Some(Role::Follow)
        );
        let mut batch = Vec::new();
        assert!(pending.take_or_resign(&mut batch, 2, usize::MAX));
        assert_eq!(keys(&batch), [b"a".as_slice(), b"b"]);
        batch.clear();
        assert!(pending.take_or_resign(&mut batch, 2, usize::MAX));
        assert_eq!(keys(&batch), [b"c".as_slice()]);
        assert!(!pending.take_or_resign(&mut batch, 2, usize::MAX));
        // Resigned: the next writer leads.
        assert_eq!(pending.push([proposal("d")]).ok(), Some(Role::Lead));
    }

    #[test]
    fn waiting_for_done_covers_what_was_queued_before_the_wait() {
        let pending = std::sync::Arc::new(PendingWrites::new());
        let _ = pending.push([proposal("a"), proposal("b")]);
        let leader = {
            let pending = pending.clone();
            std::thread::spawn(move || {
                let mut batch = Vec::new();
                while pending.take_or_resign(&mut batch, 1, usize::MAX) {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    pending.done(batch.len());
                    batch.clear();
                }
            })
        };
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        assert!(pending.wait_done(deadline));
        let _ = leader.join();
        // Nothing queued since: done at once.
        assert!(pending.wait_done(Instant::now()));
    }

    #[test]
    fn a_batch_stops_past_its_byte_limit() {
        let pending = PendingWrites::new();
        let _ = pending.push([proposal("aaaa"), proposal("bbbb"), proposal("cc")]);
        let mut batch = Vec::new();
        assert!(pending.take_or_resign(&mut batch, 100, 5));
        assert_eq!(keys(&batch), [b"aaaa".as_slice(), b"bbbb"]);
    }

    #[test]
    fn a_closed_queue_hands_proposals_back_and_close_reports_the_leader() {
        let pending = PendingWrites::new();
        let _ = pending.push([proposal("a")]);
        assert!(pending.close());
        let refused = pending.push([proposal("b")]).err().map(|back| back.len());
        assert_eq!(refused, Some(1));
        assert_eq!(pending.take_all_for_close().len(), 1);
    }

    #[test]
    fn an_abandoned_queue_refuses_what_it_held_and_counts_it_done() {
        let pending = PendingWrites::new();
        let (reply, mut answer) = oneshot::channel();
        let queued = Proposal {
            reply: crate::store::group_reply::ReplyTo::Own(reply),
            ..proposal("a")
        };
        let _ = pending.push([queued]);
        pending.abandon();
        assert!(matches!(answer.try_recv(), Ok(Err(Error::Closed))));
        assert!(pending.wait_done(Instant::now()));
        assert!(pending.push([proposal("b")]).is_err());
    }

    #[test]
    fn a_waiting_leader_wakes_once_enough_writers_are_back() {
        let pending = std::sync::Arc::new(PendingWrites::new());
        let _ = pending.push([proposal("a")]);
        let writer = {
            let pending = pending.clone();
            std::thread::spawn(move || {
                for key in ["b", "c"] {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    let _ = pending.push([proposal(key)]);
                }
            })
        };
        let started = Instant::now();
        pending.wait_for(3, started + std::time::Duration::from_secs(10));
        assert_eq!(pending.len(), 3);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        let _ = writer.join();
    }
}
