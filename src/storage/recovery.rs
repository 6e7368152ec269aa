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
//! [`RecoveryReport`], with each record it lost ([`LostRecord`]: sequence number
//! and payload, which the layer above turns into keys). A repair destroys
//! nothing: the bytes it cuts from a segment are kept in a `*.broken` file beside
//! it, and a segment it drops is renamed to one (as etcd does).

use std::path::{Path, PathBuf};

use super::fs::FileSystem;
use super::segment::{
    DamageKind, HeaderError, SEGMENT_VERSION, ScanEnd, decode_segment_header,
    parse_segment_file_name, salvage_records, scan_records,
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
    /// Each record a cut or a dropped segment lost, in log order.
    pub lost: Vec<LostRecord>,
    /// Files a repair left beside the segments with what it cut.
    pub broken_files: Vec<PathBuf>,
    /// Other facts worth a log line.
    pub notes: Vec<String>,
    pub snapshot_seq: Option<u64>,
    pub snapshot_keys: Option<u64>,
}

/// A record recovery removed from the log, or damaged bytes where the next
/// record should have been.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostRecord {
    pub file: PathBuf,
    /// Where it started in `file`.
    pub offset: u64,
    /// Its sequence number: read from the record, or, for damaged bytes, the
    /// one number missing between the records around them. `None` when unknown.
    pub seq: Option<u64>,
    /// Whether these are damaged bytes rather than a readable record.
    pub damaged: bool,
    /// A readable record's payload, until [`LOST_PAYLOAD_BUDGET`] bytes of
    /// payloads are held. For damaged bytes, the payload their length field
    /// claims, unverified (it may read as garbage), when there is one.
    pub payload: Option<Vec<u8>>,
}

/// Payload bytes a report keeps for describing lost records; past it, lost
/// records are still listed by sequence number.
pub const LOST_PAYLOAD_BUDGET: usize = 64 << 20;

/// The suffix of a file holding bytes a repair cut: `<segment>.broken`, or
/// `<segment>.broken.N` when that exists.
pub const BROKEN_SUFFIX: &str = ".broken";

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

        // A segment is named only after its header is synced (`spare::claim`),
        // so a named segment whose header is missing or wrong was damaged,
        // not caught half-made: it may have held acknowledged writes, and
        // only `--repair` sets it aside.
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
            let lost_before = report.lost.len();
            let cut_len = note_lost(
                &mut report,
                &path,
                offset,
                &data[offset as usize..],
                next_seq,
                Some(error),
            );
            let cut = &data[offset as usize..][..cut_len];
            let kept = if mode == RecoveryMode::Repair && !cut.is_empty() {
                let broken = keep_broken_bytes(fs, &path, cut)?;
                report.broken_files.push(broken.clone());
                format!("; the cut bytes are kept in {}", broken.display())
            } else {
                String::new()
            };
            zero_from(fs, &path, offset, data.len() as u64)?;
            report.repairs.push(format!(
                "{}: cut the log at offset {offset} ({}); lost {}{kept}",
                path.display(),
                error.describe(),
                describe_lost(&report.lost[lost_before..]),
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

/// Adds to the report what `cut` (bytes of `file` from `offset` on) held: the
/// records still readable in it, and damaged bytes where the first record
/// should have been. `damage` is what stopped the scan there, if anything did.
/// Returns how much of `cut` is not preallocated space: up to its last
/// non-zero byte or the end of its last readable record (whose final bytes
/// may be zeros), whichever is later.
fn note_lost(
    report: &mut RecoveryReport,
    file: &Path,
    offset: u64,
    cut: &[u8],
    expected_seq: u64,
    damage: Option<DamageKind>,
) -> usize {
    let (salvaged, used_len) = salvage_records(cut, expected_seq);
    let used = salvaged
        .last()
        .map_or(0, |(at, record)| *at as usize + record.encoded_len)
        .max(used_len);
    let first_readable = salvaged.first().map(|(at, record)| (*at, record.seq));
    let damaged_first = match damage {
        Some(DamageKind::SequenceGap { .. }) => false,
        Some(DamageKind::Record(_)) => first_readable.is_none_or(|(at, _)| at > 0),
        None => false,
    };
    if damaged_first {
        // Damaged bytes are one lost record exactly when the next readable
        // record is numbered one past the expected one.
        let seq = match first_readable {
            Some((_, seq)) if seq == expected_seq + 1 => Some(expected_seq),
            _ => None,
        };
        // What the damaged record's own length field claims, bounded by the
        // next readable record: its payload as it reads, unverified.
        let next_at = first_readable.map_or(cut.len(), |(at, _)| at as usize);
        let claimed = cut
            .get(..4)
            .map(|length| u32::from_le_bytes([length[0], length[1], length[2], length[3]]))
            .map_or(0, |length| (length & !(1 << 31)) as usize);
        let unverified = cut
            .get(16..(8 + claimed).min(next_at))
            .filter(|payload| !payload.is_empty())
            .map(<[u8]>::to_vec);
        report.lost.push(LostRecord {
            file: file.to_path_buf(),
            offset,
            seq,
            damaged: true,
            payload: unverified,
        });
    }
    let mut held: usize = report
        .lost
        .iter()
        .filter_map(|lost| lost.payload.as_ref().map(Vec::len))
        .sum();
    for (at, record) in salvaged {
        let payload = (held + record.payload.len() <= LOST_PAYLOAD_BUDGET).then(|| {
            held += record.payload.len();
            record.payload.to_vec()
        });
        report.lost.push(LostRecord {
            file: file.to_path_buf(),
            offset: offset + at,
            seq: Some(record.seq),
            damaged: false,
            payload,
        });
    }
    used
}

/// "records 3..=5 (3), and damaged bytes at offset 120": the lost records of
/// one cut, for its report line.
fn describe_lost(lost: &[LostRecord]) -> String {
    if lost.is_empty() {
        return "no readable record".to_string();
    }
    let numbered: Vec<u64> = lost.iter().filter_map(|record| record.seq).collect();
    let unnumbered = lost.len() - numbered.len();
    let mut parts = Vec::new();
    if let (Some(first), Some(last)) = (numbered.first(), numbered.last()) {
        parts.push(if first == last {
            format!("record {first}")
        } else {
            format!("{} records numbered {first} to {last}", numbered.len())
        });
    }
    if unnumbered > 0 {
        parts.push("damaged bytes that hold no readable record".to_string());
    }
    parts.join(" and ")
}

/// Writes `bytes` to a new `<segment>.broken` file beside `segment`, synced,
/// and returns its path.
fn keep_broken_bytes(fs: &dyn FileSystem, segment: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let path = free_broken_path(fs, segment)?;
    let io_error = |err| Error::io(&path, err);
    let mut file = fs.create(&path).map_err(io_error)?;
    file.write_all_at(0, bytes).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    if let Some(dir) = path.parent() {
        fs.sync_dir(dir).map_err(|err| Error::io(dir, err))?;
    }
    Ok(path)
}

/// `<segment>.broken`, or the first `<segment>.broken.N` not taken.
fn free_broken_path(fs: &dyn FileSystem, segment: &Path) -> Result<PathBuf> {
    let dir = segment.parent().unwrap_or(Path::new("."));
    let names = fs.list(dir).map_err(|err| Error::io(dir, err))?;
    let base = format!(
        "{}{BROKEN_SUFFIX}",
        segment.file_name().unwrap_or_default().to_string_lossy()
    );
    let name = std::iter::once(base.clone())
        .chain((1..).map(|n| format!("{base}.{n}")))
        .find(|candidate| !names.contains(candidate))
        .unwrap_or(base);
    Ok(dir.join(name))
}

/// Whether `name` is a file a repair left: `<segment>.broken[.N]`.
pub(crate) fn is_broken_file_name(name: &str) -> bool {
    let Some((segment, rest)) = name.split_once(BROKEN_SUFFIX) else {
        return false;
    };
    parse_segment_file_name(segment).is_some()
        && (rest.is_empty()
            || rest
                .strip_prefix('.')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
}

/// Takes whole segments out of the log. In repair mode they are renamed to
/// `*.broken` (the repair keeps what it cuts); a segment can only be dropped by
/// a repair, so that is every case.
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
        let data = fs
            .read(&segment.path)
            .map_err(|err| Error::io(&segment.path, err))?;
        let lost_before = report.lost.len();
        note_lost(report, &segment.path, 0, &data, segment.first_seq, None);
        let broken = free_broken_path(fs, &segment.path)?;
        fs.rename(&segment.path, &broken)
            .map_err(|err| Error::io(&segment.path, err))?;
        report.broken_files.push(broken.clone());
        report.repairs.push(format!(
            "{}: took the whole segment out of the log ({why}); lost {}; the segment is kept as {}",
            segment.path.display(),
            describe_lost(&report.lost[lost_before..]),
            broken.display()
        ));
    }
    fs.sync_dir(dir).map_err(|err| Error::io(dir, err))
}
