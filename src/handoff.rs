//! A queue from many threads to one that sleeps at once when it is empty:
//! how the store's handles and leaders message the commit thread, and how
//! the commit thread hands finished batches to the notifier.
//!
//! Why not `crossbeam-channel`, which this replaced: its receive spins and
//! then calls `sched_yield` up to four times before it sleeps. On the
//! two-core machines walrus is measured on, the runtime workers, the commit
//! thread, the notifier and the load generator share the cores, and the
//! commit thread spends most of a batch waiting for the writers or the
//! disk; its spins and yields (about one `sched_yield` per write in
//! `strace -c`) took CPU from the threads it was waiting for.
//!
//! The Raft log's writer thread keeps `crossbeam-channel`: moved onto this
//! queue it showed no gain in the cluster's PUT rate (medians 15.3k against
//! 15.7k/s over six alternating rounds, within the noise; BENCHMARKS.md), and
//! there a job caught during the spin saves a wake-up on a replication hop.
//!
//! Invariants: items come out in the order they went in; a send fails only
//! once the receiver is gone (and hands the item back); a receive fails
//! only when the queue is empty and every sender is gone. A sender wakes
//! the receiver only when it is asleep and the queue now holds what it waits
//! for (one item, or the count given to [`Receiver::wait_for`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// The sending end; cheap to clone.
pub struct Sender<T> {
    inner: Arc<Inner<T>>,
}

/// The one receiving end.
pub struct Receiver<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

struct State<T> {
    items: VecDeque<T>,
    senders: usize,
    receiver_alive: bool,
    /// The receiver is asleep until this many items are queued (0: awake).
    receiver_waits_for: usize,
}

/// The receiver is gone; the item comes back.
#[derive(Debug, PartialEq, Eq)]
pub struct SendError<T>(pub T);

/// Why a receive returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvError {
    /// Nothing came before the deadline (or, for `try_recv`, nothing is queued).
    Empty,
    /// Nothing is queued and every sender is gone.
    Disconnected,
}

/// A new queue's two ends.
pub fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            items: VecDeque::new(),
            senders: 1,
            receiver_alive: true,
            receiver_waits_for: 0,
        }),
        ready: Condvar::new(),
    });
    (
        Sender {
            inner: inner.clone(),
        },
        Receiver { inner },
    )
}

impl<T> Sender<T> {
    pub fn send(&self, item: T) -> Result<(), SendError<T>> {
        let wake = {
            let mut state = self.inner.state.lock();
            if !state.receiver_alive {
                return Err(SendError(item));
            }
            state.items.push_back(item);
            let wake =
                state.receiver_waits_for > 0 && state.items.len() >= state.receiver_waits_for;
            if wake {
                state.receiver_waits_for = 0;
            }
            wake
        };
        if wake {
            self.inner.ready.notify_one();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        self.inner.state.lock().senders += 1;
        Sender {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let wake = {
            let mut state = self.inner.state.lock();
            state.senders -= 1;
            state.senders == 0 && std::mem::take(&mut state.receiver_waits_for) > 0
        };
        if wake {
            self.inner.ready.notify_one();
        }
    }
}

impl<T> Receiver<T> {
    /// The next item, waiting as long as it takes.
    pub fn recv(&self) -> Result<T, RecvError> {
        self.receive(None)
    }

    /// The next item, waiting up to `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvError> {
        self.receive(Some(Instant::now() + timeout))
    }

    /// The next item if one is queued now.
    pub fn try_recv(&self) -> Result<T, RecvError> {
        let mut state = self.inner.state.lock();
        match state.items.pop_front() {
            Some(item) => Ok(item),
            None if state.senders == 0 => Err(RecvError::Disconnected),
            None => Err(RecvError::Empty),
        }
    }

    /// Sleeps until `count` items are queued, every sender is gone, or
    /// `deadline` passes, whichever is first; takes nothing. One wake-up for
    /// the lot, where receiving them one by one would wake this thread for
    /// each (the commit thread gathering the writers of its last batch).
    pub fn wait_for(&self, count: usize, deadline: Instant) {
        let mut state = self.inner.state.lock();
        while state.items.len() < count && state.senders > 0 {
            state.receiver_waits_for = count;
            if self
                .inner
                .ready
                .wait_until(&mut state, deadline)
                .timed_out()
            {
                break;
            }
        }
        state.receiver_waits_for = 0;
    }

    fn receive(&self, deadline: Option<Instant>) -> Result<T, RecvError> {
        let mut state = self.inner.state.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                return Ok(item);
            }
            if state.senders == 0 {
                return Err(RecvError::Disconnected);
            }
            state.receiver_waits_for = 1;
            match deadline {
                None => self.inner.ready.wait(&mut state),
                Some(deadline) => {
                    if self
                        .inner
                        .ready
                        .wait_until(&mut state, deadline)
                        .timed_out()
                    {
                        state.receiver_waits_for = 0;
                        return state.items.pop_front().ok_or(RecvError::Empty);
                    }
                }
            }
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.inner.state.lock();
        state.receiver_alive = false;
        // What is left can never be received: drop it now (its reply
        // handles tell their writers the store is gone).
        let _left = std::mem::take(&mut state.items);
        drop(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_out_in_order_from_many_senders_and_the_end_is_seen() {
        let (sender, receiver) = unbounded::<(usize, usize)>();
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let sender = sender.clone();
                std::thread::spawn(move || {
                    for index in 0..1000 {
                        sender.send((thread, index)).expect("the receiver is alive");
                    }
                })
            })
            .collect();
        drop(sender);
        let mut next = [0; 4];
        let mut received = 0;
        while let Ok((thread, index)) = receiver.recv() {
            assert_eq!(index, next[thread], "each sender's items in order");
            next[thread] += 1;
            received += 1;
        }
        assert_eq!(received, 4000);
        for thread in threads {
            thread.join().expect("a sender thread");
        }
        assert_eq!(receiver.try_recv(), Err(RecvError::Disconnected));
    }

    #[test]
    fn a_timed_receive_returns_empty_and_then_takes_what_comes() {
        let (sender, receiver) = unbounded();
        assert_eq!(
            receiver.recv_timeout(Duration::from_millis(5)),
            Err(RecvError::Empty)
        );
        assert_eq!(receiver.try_recv(), Err(RecvError::Empty));
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            sender.send(7).expect("the receiver is alive");
        });
        assert_eq!(receiver.recv_timeout(Duration::from_secs(10)), Ok(7));
        late.join().expect("the sender thread");
        assert_eq!(receiver.recv(), Err(RecvError::Disconnected));
    }

    #[test]
    fn waiting_for_a_count_returns_once_it_is_queued_or_at_the_deadline() {
        let (sender, receiver) = unbounded();
        let started = Instant::now();
        receiver.wait_for(2, started + Duration::from_millis(20));
        assert!(started.elapsed() >= Duration::from_millis(20));
        sender.send(1).expect("the receiver is alive");
        let senders = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            sender.send(2).expect("the receiver is alive");
            sender.send(3).expect("the receiver is alive");
        });
        receiver.wait_for(3, Instant::now() + Duration::from_secs(10));
        assert_eq!(receiver.try_recv(), Ok(1));
        assert_eq!(receiver.try_recv(), Ok(2));
        assert_eq!(receiver.try_recv(), Ok(3));
        senders.join().expect("the sender thread");
        // Every sender gone: no waiting for what can never come.
        let started = Instant::now();
        receiver.wait_for(1, started + Duration::from_secs(10));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_send_after_the_receiver_is_gone_hands_the_item_back() {
        let (sender, receiver) = unbounded();
        sender.send(1).expect("the receiver is alive");
        drop(receiver);
        assert_eq!(sender.send(2), Err(SendError(2)));
    }
}
