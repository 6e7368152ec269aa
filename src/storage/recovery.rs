//! Reading the log back after a restart or crash.
//!
//! Recovery walks the segments in order and replays every valid record. What it
//! does at the first bad byte depends on where that byte is and on the
//! [`RecoveryMode`]:
//!
//! | damage | `TolerateTornTail` (default) | `Strict` | `Repair` |
//! | --- | --- | --- | --- |
//! | in the last segment, no synced record after it (a torn write) | cut, warn | error | cut, warn |
//! | anywhere else | error | error | cut there, drop later segments, warn |
//!
//! A torn write can only hold records that were never acknowledged: a record is
//! acknowledged after the sync that covers it. The disk may persist the pages of
//! an unsynced write in any order, so valid records can follow the damage; but a
//! record flagged `synced_before` after the damage proves the damaged record had
//! been synced, and then the disk lost or changed synced data, which no automatic
//! policy may paper over. Every cut is reported with file and offset in the
//! [`RecoveryReport`].

use std::path::{Path, PathBuf};

use super::fs::FileSystem;
use super::segment::{
    HeaderError, SEGMENT_HEADER_BYTES, SEGMENT_VERSION, ScanEnd, decode_segment_header,
    parse_segment_file_name, scan_records,
};
use crate::error::{Error, Result};

/// What to do about damaged log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Cut a torn tail; refuse to open on any other damage.
    #[default]
    TolerateTornTail,
    /// Refuse to open on any damage, even a torn tail.
    Strict,
    /// Keep the longest valid prefix of the log, whatever is damaged after it.
    Repair,
}

/// What recovery found and changed.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub segments_read: usize,
    pub records_replayed: u64,
    /// Log bytes of the replayed records (what a snapshot would make redundant).
    pub bytes_replayed: u64,
    /// Every repair made: file, offset and what was dropped. Empty on a clean log.
    pub repairs: Vec<String>,
    /// Other facts worth a log line.
    pub notes: Vec<String>,
    pub snapshot_seq: Option<u64>,
    pub snapshot_keys: Option<u64>,
}

#[derive(Debug)]
pub(super) struct FoundSegment {
    pub first_seq: u64,
    pub path: PathBuf,
}

/// Where appending continues: the last segment and the end of its valid records.
#[derive(Debug)]
pub(super) struct LogTail {
    pub path: PathBuf,
    pub first_seq: u64,
    pub write_offset: u64,
    pub next_seq: u64,
}

#[derive(Debug)]
pub(super) struct RecoveredLog {
    /// Surviving segments in order; the last one is `tail`'s.
    pub segments: Vec<FoundSegment>,
    pub tail: Option<LogTail>,
    pub report: RecoveryReport,
}

pub(super) fn recover_log(
    fs: &dyn FileSystem,
    dir: &Path,
    mode: RecoveryMode,
    replay_from: u64,
    mut visit: impl FnMut(u64, &[u8]) -> std::result::Result<(), String>,
) -> Result<RecoveredLog> {
    let mut found = list_segments(fs, dir)?;
    let mut report = RecoveryReport::default();
    let mut survivors: Vec<FoundSegment> = Vec::new();
    let mut tail: Option<LogTail> = None;
    let mut expected_first: Option<u64> = None;
    let mut index = 0;
    while index < found.len() {
        let (name_seq, path) = (found[index].first_seq, found[index].path.clone());
        let is_last = index + 1 == found.len();
        let data = fs.read(&path).map_err(|err| Error::io(&path, err))?;
        report.segments_read += 1;

        // Creation writes and syncs the header before any record is appended,
        // so a last segment with a bad header and no bytes after it was being
        // created when the process stopped, and never held a write.
        let nothing_after_header = data
            .get(SEGMENT_HEADER_BYTES..)
            .is_none_or(|rest| rest.iter().all(|&b| b == 0));
        let header_problem = match decode_segment_header(&data) {
            Ok(first_seq) if first_seq == name_seq => None,
            Ok(first_seq) => Some(format!(
                "header says first sequence {first_seq}, file name says {name_seq}"
            )),
            Err(HeaderError::Version(found_version)) => {
                return Err(Error::UnsupportedVersion {
                    path,
                    found: found_version,
                    supported: SEGMENT_VERSION,
                });
            }
            Err(_) if is_last && nothing_after_header && mode != RecoveryMode::Strict => {
                fs.remove(&path).map_err(|err| Error::io(&path, err))?;
                fs.sync_dir(dir).map_err(|err| Error::io(dir, err))?;
                report.repairs.push(format!(
                    "{}: removed a segment whose creation was interrupted",
                    path.display()
                ));
                break;
            }
            Err(HeaderError::Incomplete) => Some("incomplete segment header".to_string()),
            Err(HeaderError::Invalid(reason)) => Some(reason.to_string()),
        };
        let gap = match expected_first {
            Some(expected) if expected != name_seq => Some(format!(
                "segment starts at sequence {name_seq}, but the previous one ended before {expected}"
            )),
            _ => None,
        };
        if let Some(reason) = header_problem.or(gap) {
            if mode != RecoveryMode::Repair {
                return Err(Error::corrupt(&path, 0, reason));
            }
            drop_segments(fs, dir, &found[index..], &mut report, &reason)?;
            break;
        }
        if expected_first.is_none() && name_seq > replay_from {
            return Err(Error::corrupt(
                &path,
                0,
                format!(
                    "the log starts at sequence {name_seq}, but records from {replay_from} on are needed"
                ),
            ));
        }

        let mut next_seq = name_seq;
        let mut visit_error = None;
        let end = scan_records(&data, name_seq, |record, offset| {
            next_seq = record.seq + 1;
            if visit_error.is_none() && record.seq >= replay_from {
                match visit(record.seq, record.payload) {
                    Ok(()) => {
                        report.records_replayed += 1;
                        report.bytes_replayed += record.encoded_len as u64;
                    }
                    Err(reason) => {
                        visit_error = Some(Error::corrupt(
                            &path,
                            offset,
                            format!("record {} does not decode: {reason}", record.seq),
                        ))
                    }
                }
            }
        });
        if let Some(error) = visit_error {
            return Err(error);
        }
        survivors.push(FoundSegment {
            first_seq: name_seq,
            path: path.clone(),
        });
        expected_first = Some(next_seq);
        let write_offset = end.offset();
        tail = Some(LogTail {
            path: path.clone(),
            first_seq: name_seq,
            write_offset,
            next_seq,
        });

        if let ScanEnd::Damaged {
            offset,
            error,
            synced_after,
        } = end
        {
            let torn_tail = is_last && !synced_after;
            let allowed = match mode {
                RecoveryMode::TolerateTornTail => torn_tail,
                RecoveryMode::Strict => false,
                RecoveryMode::Repair => true,
            };
            if !allowed {
                let reason = if torn_tail {
                    format!(
                        "{} at the end of the log (strict recovery)",
                        error.describe()
                    )
                } else {
                    format!(
                        "{} before the end of the log; start with --repair to keep only the records before it",
                        error.describe()
                    )
                };
                return Err(Error::corrupt(&path, offset, reason));
            }
            zero_from(fs, &path, offset, data.len() as u64)?;
            report.repairs.push(format!(
                "{}: cut the log at offset {offset} ({}); {} bytes after it dropped",
                path.display(),
                error.describe(),
                data.len() as u64 - offset
            ));
            drop_segments(fs, dir, &found[index + 1..], &mut report, "after a cut")?;
            break;
        }
        index += 1;
    }
    found.clear();
    Ok(RecoveredLog {
        segments: survivors,
        tail,
        report,
    })
}

/// The segment files in `dir`, sorted by first sequence number.
pub(super) fn list_segments(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<FoundSegment>> {
    let names = fs.list(dir).map_err(|err| Error::io(dir, err))?;
    let mut segments: Vec<FoundSegment> = names
        .iter()
        .filter_map(|name| {
            parse_segment_file_name(name).map(|first_seq| FoundSegment {
                first_seq,
                path: dir.join(name),
            })
        })
        .collect();
    segments.sort_by_key(|segment| segment.first_seq);
    Ok(segments)
}

/// Overwrites `[offset, len)` with zeros and syncs, so the cut bytes can never be
/// read as records again, while the file keeps its preallocated size.
fn zero_from(fs: &dyn FileSystem, path: &Path, offset: u64, len: u64) -> Result<()> {
    let io_error = |err| Error::io(path, err);
    let mut file = fs.open_write(path).map_err(io_error)?;
    let zeros = vec![0u8; 1 << 16];
    let mut at = offset;
    while at < len {
        let chunk = zeros.len().min((len - at) as usize);
        file.write_all_at(at, &zeros[..chunk]).map_err(io_error)?;
        at += chunk as u64;
    }
    file.sync_all().map_err(io_error)
}

fn drop_segments(
    fs: &dyn FileSystem,
    dir: &Path,
    segments: &[FoundSegment],
    report: &mut RecoveryReport,
    why: &str,
) -> Result<()> {
    if segments.is_empty() {
        return Ok(());
    }
    for segment in segments {
        fs.remove(&segment.path)
            .map_err(|err| Error::io(&segment.path, err))?;
        report.repairs.push(format!(
            "{}: removed the whole segment ({why})",
            segment.path.display()
        ));
    }
    fs.sync_dir(dir).map_err(|err| Error::io(dir, err))
}
