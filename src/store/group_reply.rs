//! Where a logged command's outcome goes: a channel of its own, or a slot in
//! the table of a group of commands submitted together.
//!
//! A pipelined RESP client's writes reach the store as one `submit_all`
//! (sixteen SETs at `-P 16`). A channel each cost an allocation and several
//! atomic operations per command on both the event loop and the commit
//! thread, and one wake-up per answer (BENCHMARKS.md: 8 % of a SET `-P 16`
//! profile). A group shares one table and wakes its waiters once, when its
//! last command is answered.
//!
//! Invariants: every slot is answered exactly once: by [`ReplyTo::send`], or
//! with [`Error::Closed`] when its [`ReplyTo`] is dropped unanswered (a
//! refused batch, a panicking apply), so a waiter is never left waiting; an
//! answer is taken at most once; the waiters are woken when the last slot
//! is answered, never before.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::state::Outcome;
use crate::error::{Error, Result};

/// Where a command's outcome goes.
pub(super) enum ReplyTo {
    /// Its own channel (a single command, or a writer that blocks a thread).
    Own(oneshot::Sender<Result<Outcome>>),
    /// Its slot in a group's table.
    Group(GroupSlot),
}

impl ReplyTo {
    pub fn send(self, result: Result<Outcome>) {
        match self {
            ReplyTo::Own(sender) => {
                let _ = sender.send(result);
            }
            ReplyTo::Group(mut slot) => slot.answer(result),
        }
    }
}

/// The right to answer one slot of a group; answers `Closed` if dropped
/// unanswered.
pub(super) struct GroupSlot {
    group: Arc<Group>,
    index: usize,
    answered: bool,
}

impl GroupSlot {
    fn answer(&mut self, result: Result<Outcome>) {
        self.answered = true;
        self.group.answer(self.index, result);
    }
}

impl Drop for GroupSlot {
    fn drop(&mut self) {
        if !self.answered {
            self.answer(Err(Error::Closed));
        }
    }
}

/// The answers of a group of commands, shared by whoever answers them and
/// whoever waits for them.
pub struct Group {
    state: Mutex<GroupState>,
}

struct GroupState {
    slots: Vec<Slot>,
    unanswered: usize,
    wakers: Vec<Waker>,
}

enum Slot {
    Waiting,
    Answered(Result<Outcome>),
    Taken,
}

impl Group {
    /// A group of `size` commands: the table, and the right to answer each.
    pub(super) fn new(size: usize) -> (Arc<Group>, Vec<GroupSlot>) {
        let group = Arc::new(Group {
            state: Mutex::new(GroupState {
                slots: (0..size).map(|_| Slot::Waiting).collect(),
                unanswered: size,
                wakers: Vec::new(),
            }),
        });
        let slots = (0..size)
            .map(|index| GroupSlot {
                group: group.clone(),
                index,
                answered: false,
            })
            .collect();
        (group, slots)
    }

    fn answer(&self, index: usize, result: Result<Outcome>) {
        let wakers = {
            let mut state = self.state.lock();
            let Some(slot) = state.slots.get_mut(index) else {
                return;
            };
            if !matches!(slot, Slot::Waiting) {
                return;
            }
            *slot = Slot::Answered(result);
            state.unanswered -= 1;
            if state.unanswered > 0 {
                return;
            }
            std::mem::take(&mut state.wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// The answer of slot `index` once the whole group is answered.
    pub(super) fn poll_answer(
        &self,
        index: usize,
        context: &mut Context<'_>,
    ) -> Poll<Result<Outcome>> {
        let mut state = self.state.lock();
        if state.unanswered > 0 {
            if !state
                .wakers
                .iter()
                .any(|waker| waker.will_wake(context.waker()))
            {
                state.wakers.push(context.waker().clone());
            }
            return Poll::Pending;
        }
        match state
            .slots
            .get_mut(index)
            .map(|slot| std::mem::replace(slot, Slot::Taken))
        {
            Some(Slot::Answered(result)) => Poll::Ready(result),
            _ => Poll::Ready(Err(Error::Closed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    fn outcome(revision: u64) -> Outcome {
        Outcome {
            revision,
            succeeded: true,
            previous: None,
            changed: 1,
            answers: Vec::new(),
        }
    }

    #[tokio::test]
    async fn answers_arrive_together_once_the_last_slot_is_answered() {
        let (group, mut slots) = Group::new(3);
        let third = slots.pop().map(ReplyTo::Group);
        let second = slots.pop().map(ReplyTo::Group);
        let first = slots.pop().map(ReplyTo::Group);
        if let Some(first) = first {
            first.send(Ok(outcome(1)));
        }
        // Dropped unanswered: its waiter hears that the store closed.
        drop(second);
        let waiting = poll_fn(|context| Poll::Ready(group.poll_answer(0, context))).await;
        assert!(waiting.is_pending(), "answered before the whole group was");
        if let Some(third) = third {
            third.send(Ok(outcome(3)));
        }
        let answers: Vec<Result<Outcome>> = futures::future::join_all((0..3).map(|index| {
            poll_fn({
                let group = group.clone();
                move |context| group.poll_answer(index, context)
            })
        }))
        .await;
        assert!(matches!(&answers[0], Ok(outcome) if outcome.revision == 1));
        assert!(matches!(answers[1], Err(Error::Closed)));
        assert!(matches!(&answers[2], Ok(outcome) if outcome.revision == 3));
        // Taken once: a second take finds nothing.
        let again = poll_fn(|context| group.poll_answer(0, context)).await;
        assert!(matches!(again, Err(Error::Closed)));
    }

    #[tokio::test]
    async fn a_waiter_is_woken_by_an_answer_from_another_thread() {
        let (group, slots) = Group::new(2);
        let answering = std::thread::spawn(move || {
            for (revision, slot) in (1..).zip(slots) {
                std::thread::sleep(std::time::Duration::from_millis(5));
                ReplyTo::Group(slot).send(Ok(outcome(revision)));
            }
        });
        let second = poll_fn(|context| group.poll_answer(1, context)).await;
        assert!(matches!(second, Ok(outcome) if outcome.revision == 2));
        assert!(answering.join().is_ok());
    }
}
