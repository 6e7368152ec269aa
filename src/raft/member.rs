//! The `MEMBER` file: which cluster node a data directory belongs to.
//!
//! A cluster node writes it when it first starts (and an adoption when it
//! commits), so a directory of Raft log and replica snapshots is never opened
//! as a single-node store by mistake, and `walrus serve` without `--node-id`
//! on such a directory serves it as the node it is (a store grown into a
//! cluster while running comes back as that member after a restart).
//! Written whole to a temporary name, synced and renamed: it exists complete
//! or not at all.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::NodeId;
use crate::error::{Error, Result};
use crate::storage::FileSystem;
use crate::storage::data_dir::MEMBER_FILE;

/// What the `MEMBER` file records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node_id: NodeId,
    /// The address peers reached this node at when it was written.
    pub advertise: String,
    /// Set while the node is joining a cluster with a log it has not yet
    /// caught up ([`super::joining`]): it votes for no one meanwhile. Kept
    /// here so that a restart before it catches up does not forget it.
    /// Absent (false) in files written before this was recorded.
    #[serde(default)]
    pub joining: bool,
}

/// The member `dir` belongs to, if it holds a cluster node's data.
pub fn read(fs: &dyn FileSystem, dir: &Path) -> Result<Option<Member>> {
    let path = dir.join(MEMBER_FILE);
    match fs.read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|error| {
            Error::InvalidArgument(format!(
                "{} is damaged ({error}); it names the cluster node this directory belongs to",
                path.display()
            ))
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(Error::io(&path, error)),
    }
}

/// Records that `dir` belongs to `member`, durably.
pub fn write(fs: &dyn FileSystem, dir: &Path, member: &Member) -> Result<()> {
    let path = dir.join(MEMBER_FILE);
    let temporary = dir.join(format!("{MEMBER_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(member)
        .map_err(|error| Error::InvalidArgument(error.to_string()))?;
    let io = |error| Error::io(&path, error);
    let mut file = fs.create(&temporary).map_err(io)?;
    file.write_all_at(0, &json).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    fs.rename(&temporary, &path).map_err(io)?;
    fs.sync_dir(dir).map_err(io)
}

/// Refuses to go on when `dir` belongs to a cluster node other than
/// `node_id` (a wiped node must rejoin under a new id, and two nodes must
/// never share one directory); records `node_id` when nothing is recorded.
/// Returns what the file records.
pub fn claim(fs: &dyn FileSystem, dir: &Path, node_id: NodeId, advertise: &str) -> Result<Member> {
    match read(fs, dir)? {
        Some(member) if member.node_id == node_id => Ok(member),
        Some(member) => Err(Error::InvalidArgument(format!(
            "{} holds the data of cluster node {}, not node {node_id}",
            dir.display(),
            member.node_id
        ))),
        None => {
            let member = Member {
                node_id,
                advertise: advertise.to_string(),
                joining: false,
            };
            write(fs, dir, &member)?;
            Ok(member)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StdFs;

    #[test]
    fn a_claimed_directory_names_its_node_and_refuses_another() {
        let temp = tempfile::tempdir().expect("dir");
        assert_eq!(read(&StdFs, temp.path()).expect("read"), None);
        claim(&StdFs, temp.path(), 2, "127.0.0.1:9").expect("claim");
        claim(&StdFs, temp.path(), 2, "127.0.0.1:10").expect("the same node again");
        let member = read(&StdFs, temp.path()).expect("read").expect("member");
        assert_eq!(member.node_id, 2);
        assert_eq!(member.advertise, "127.0.0.1:9");
        let refused = claim(&StdFs, temp.path(), 3, "127.0.0.1:9").expect_err("another node");
        assert!(refused.to_string().contains("cluster node 2"), "{refused}");
    }

    #[test]
    fn a_cluster_members_directory_is_never_opened_as_a_single_store() {
        let temp = tempfile::tempdir().expect("dir");
        claim(&StdFs, temp.path(), 4, "127.0.0.1:9").expect("claim");
        let refused = crate::store::DurableStore::open(temp.path(), Default::default())
            .err()
            .expect("refused");
        assert!(refused.to_string().contains("cluster node"), "{refused}");
    }

    #[test]
    fn a_member_file_written_before_joining_was_recorded_reads_as_not_joining() {
        let temp = tempfile::tempdir().expect("dir");
        let old = br#"{"node_id": 3, "advertise": "127.0.0.1:9"}"#;
        std::fs::write(temp.path().join(MEMBER_FILE), old).expect("write");
        let member = claim(&StdFs, temp.path(), 3, "127.0.0.1:9").expect("claim");
        assert!(!member.joining);
        let joining = Member {
            joining: true,
            ..member
        };
        write(&StdFs, temp.path(), &joining).expect("write");
        assert_eq!(read(&StdFs, temp.path()).expect("read"), Some(joining));
    }

    #[test]
    fn a_damaged_member_file_is_an_error_not_a_single_node_store() {
        let temp = tempfile::tempdir().expect("dir");
        std::fs::write(temp.path().join(MEMBER_FILE), b"{not json").expect("write");
        assert!(read(&StdFs, temp.path()).is_err());
    }
}
