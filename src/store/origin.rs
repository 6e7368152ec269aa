//! Which client a write came from, for client-side caching's `NOLOOP` (a
//! connection is not told of its own writes).
//!
//! The origin rides beside a command from its submission to its apply: a
//! front end submits inside [`with`], the store records [`current`] with the
//! proposal (a single store keeps it in memory, never in its log; a cluster
//! writes it into the entry, [`super::Origin`]), and sets it again around
//! the command's apply, where the key-event listeners read it. A command
//! applied by recovery, by the expiry sweeper, or from another node's (or
//! an earlier run's) client has no origin here ([`UNKNOWN`]), so every
//! tracking client hears of it.
//!
//! Invariant: every apply site sets the origin (to the proposal's, or to
//! [`UNKNOWN`]), so a listener never sees the origin of a write other than
//! the one being applied, even when a writer's thread leads the commit of
//! others' writes.

use std::cell::Cell;

/// No client: the write's origin is not known here.
pub const UNKNOWN: u64 = 0;

thread_local! {
    static CURRENT: Cell<u64> = const { Cell::new(UNKNOWN) };
}

/// Runs `scope` with `origin` as this thread's current origin, then puts
/// back the one before (also if `scope` panics).
pub fn with<R>(origin: u64, scope: impl FnOnce() -> R) -> R {
    struct Restore(u64);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.set(self.0);
        }
    }
    let _restore = Restore(CURRENT.replace(origin));
    scope()
}

/// The origin of the write being submitted or applied on this thread.
pub fn current() -> u64 {
    CURRENT.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_holds_inside_its_scope_and_nests() {
        assert_eq!(current(), UNKNOWN);
        with(7, || {
            assert_eq!(current(), 7);
            with(9, || assert_eq!(current(), 9));
            assert_eq!(current(), 7);
        });
        assert_eq!(current(), UNKNOWN);
        let panicked = std::panic::catch_unwind(|| with(3, || panic!("in scope")));
        assert!(panicked.is_err());
        assert_eq!(current(), UNKNOWN);
    }
}
