//! Which command formats the members read, so that a cluster part-way
//! through a rolling upgrade never proposes a command an older member cannot
//! apply.
//!
//! A member that cannot decode a log entry cannot apply it: its state
//! machine stops, and so does the member, until it is upgraded. A command
//! newer than the oldest member's format
//! ([`crate::store::COMMAND_FORMAT`], [`crate::store::Command::format`]) is
//! therefore refused before it is proposed, on whichever node the client
//! asked, with an error that names the member to upgrade.
//!
//! Every node asks the other members for their format (the `command-format`
//! peer message) at its housekeeping ticks: each [`ASK_EVERY`] while a
//! member is unknown or older than this build (so an upgrade is noticed within
//! about that), otherwise each [`ASK_AGAIN_EVERY`] (so is a member restarted
//! on an older build, which is why a downgrade should wait that long before
//! its node rejoins).
//!
//! Invariants: a member never heard from counts as format 1, the oldest;
//! a member that does not know the message (a build older than it) is format
//! 1; a member that cannot be reached keeps the format it last gave.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::NodeId;

/// How often members are asked while one is unknown or older than this build.
pub const ASK_EVERY: Duration = Duration::from_secs(1);

/// How often they are asked once every member reads this build's format.
pub const ASK_AGAIN_EVERY: Duration = Duration::from_secs(10);

/// The format every build reads: the one a member never heard from is taken
/// to have.
pub const OLDEST_FORMAT: u32 = 1;

/// The command formats of the other members, as they last answered.
pub struct MemberFormats {
    own: u32,
    inner: Mutex<Inner>,
}

struct Inner {
    heard: BTreeMap<NodeId, u32>,
    last_asked: Option<Instant>,
}

impl MemberFormats {
    /// `own` is the format this node reads.
    pub fn new(own: u32) -> MemberFormats {
        MemberFormats {
            own,
            inner: Mutex::new(Inner {
                heard: BTreeMap::new(),
                last_asked: None,
            }),
        }
    }

    /// Whether the members (`others`, this node left out) are due to be asked
    /// again; if so, counts them as asked now.
    pub fn due(&self, others: &[NodeId]) -> bool {
        let mut inner = self.inner.lock();
        let all_current = others.iter().all(|id| {
            inner
                .heard
                .get(id)
                .is_some_and(|format| *format >= self.own)
        });
        let every = if all_current {
            ASK_AGAIN_EVERY
        } else {
            ASK_EVERY
        };
        if inner
            .last_asked
            .is_some_and(|asked| asked.elapsed() < every)
        {
            return false;
        }
        inner.last_asked = Some(Instant::now());
        true
    }

    /// Records that `member` reads `format`.
    pub fn heard(&self, member: NodeId, format: u32) {
        let mut inner = self.inner.lock();
        let previous = inner.heard.insert(member, format);
        if format < self.own && previous != Some(format) {
            tracing::warn!(
                member,
                format,
                "node {member} runs an older walrus (command format {format}): commands \
                 new since are refused until it is upgraded"
            );
        } else if format >= self.own && previous.is_some_and(|before| before < self.own) {
            tracing::info!(
                member,
                format,
                "node {member} now reads this walrus's commands"
            );
        }
    }

    /// The newest format every member reads, as this node knows it: its own,
    /// or the oldest a member said (format 1 for one not heard from).
    pub fn cluster_format(&self, others: impl IntoIterator<Item = NodeId>) -> u32 {
        let inner = self.inner.lock();
        others
            .into_iter()
            .map(|id| inner.heard.get(&id).copied().unwrap_or(OLDEST_FORMAT))
            .fold(self.own, u32::min)
    }

    /// Whether a command of `format` may be proposed while `others` are the
    /// other members: `Err` names the first that does not read it.
    pub fn admit(
        &self,
        format: u32,
        others: impl IntoIterator<Item = NodeId>,
    ) -> Result<(), String> {
        if format > self.own {
            // A command this node built is never newer than it; kept safe anyway.
            return Err(format!(
                "the command is written in log format {format}, and this node runs an older \
                 walrus that reads format {} at most",
                self.own
            ));
        }
        if format <= OLDEST_FORMAT {
            return Ok(());
        }
        let inner = self.inner.lock();
        for member in others {
            match inner.heard.get(&member) {
                Some(theirs) if *theirs >= format => {}
                Some(theirs) => {
                    return Err(format!(
                        "the command is written in log format {format}, and node {member} runs \
                         an older walrus that reads format {theirs} at most"
                    ));
                }
                None => {
                    return Err(format!(
                        "the command is written in log format {format}, and node {member} has \
                         not yet said which formats it reads (it may run an older walrus)"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_command_waits_for_every_member_to_read_it() {
        let formats = MemberFormats::new(2);
        assert_eq!(formats.admit(1, [2, 3]), Ok(()));
        let unknown = formats.admit(2, [2, 3]).unwrap_err();
        assert!(unknown.contains("node 2 has not yet said"), "{unknown}");
        formats.heard(2, 2);
        formats.heard(3, 1);
        let older = formats.admit(2, [2, 3]).unwrap_err();
        assert!(older.contains("node 3 runs an older walrus"), "{older}");
        formats.heard(3, 2);
        assert_eq!(formats.admit(2, [2, 3]), Ok(()));
        // A member added later is unknown until it answers.
        assert!(formats.admit(2, [2, 3, 4]).is_err());
        assert!(formats.admit(3, [2, 3]).is_err(), "newer than this node");
        assert_eq!(formats.cluster_format([2, 3]), 2);
        assert_eq!(formats.cluster_format([2, 3, 4]), 1, "4 is unknown");
        formats.heard(3, 1);
        assert_eq!(formats.cluster_format([2, 3]), 1);
    }

    #[test]
    fn members_are_asked_often_until_all_read_this_format() {
        let formats = MemberFormats::new(2);
        assert!(formats.due(&[2]));
        assert!(!formats.due(&[2]), "asked just now");
        formats.inner.lock().last_asked = Some(Instant::now() - ASK_EVERY);
        assert!(
            formats.due(&[2]),
            "node 2 is unknown: asked again a second on"
        );
        formats.heard(2, 2);
        formats.inner.lock().last_asked = Some(Instant::now() - ASK_EVERY);
        assert!(
            !formats.due(&[2]),
            "all current: asked only every ten seconds"
        );
        formats.inner.lock().last_asked = Some(Instant::now() - ASK_AGAIN_EVERY);
        assert!(formats.due(&[2]));
    }
}
