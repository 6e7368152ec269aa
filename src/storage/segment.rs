//! Segment files: a header followed by records.
//!
//! ```text
//! offset  size  field
//! 0       8     magic        b"WALRUSLG"
//! 8       4     version      u32 LE, SEGMENT_VERSION
//! 12      4     reserved     zero
//! 16      8     first_seq    u64 LE: sequence number of the segment's first record
//! 24      4     header_crc   u32 LE: CRC32C of bytes 0..24
//! 28      4     reserved     zero (checked)
//! 32      ...   records      see `record.rs`, back to back; then zeros (preallocated)
//! ```
//!
//! A segment is named `<first_seq, 20 digits>.wal`, so names sort in log order.
//! Inside a segment, sequence numbers run without gaps from `first_seq`.

use std::path::Path;

use super::record::{DecodedRecord, RecordError, decode_record};
use crate::encoding::{crc32c, put_u32, put_u64};

pub const SEGMENT_MAGIC: &[u8; 8] = b"WALRUSLG";
pub const SEGMENT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_BYTES: usize = 32;
const SEGMENT_SUFFIX: &str = ".wal";

pub fn segment_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

/// The first sequence number encoded in a segment file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    parse_numbered_name(name, SEGMENT_SUFFIX)
}

/// The number in a `<20 digits><suffix>` file name, if `name` is one.
pub fn parse_numbered_name(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub fn encode_segment_header(first_seq: u64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(SEGMENT_HEADER_BYTES);
    buf.extend_from_slice(SEGMENT_MAGIC);
    put_u32(&mut buf, SEGMENT_VERSION);
    put_u32(&mut buf, 0);
    put_u64(&mut buf, first_seq);
    let crc = crc32c(&buf);
    put_u32(&mut buf, crc);
    put_u32(&mut buf, 0);
    debug_assert_eq!(buf.len(), SEGMENT_HEADER_BYTES);
    buf
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than a header, or all zeros: creation did not complete.
    Incomplete,
    /// Written by a newer format.
    Version(u32),
    /// Wrong magic or checksum.
    Invalid(&'static str),
}

/// Decodes a segment header, returning its first sequence number.
pub fn decode_segment_header(data: &[u8]) -> Result<u64, HeaderError> {
    if data.len() < SEGMENT_HEADER_BYTES || data[..SEGMENT_HEADER_BYTES].iter().all(|&b| b == 0) {
        return Err(HeaderError::Incomplete);
    }
    if &data[..8] != SEGMENT_MAGIC {
        return Err(HeaderError::Invalid("bad magic"));
    }
    // The version comes first: a newer format may lay out the rest differently.
    let version = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    if version > SEGMENT_VERSION {
        return Err(HeaderError::Version(version));
    }
    let stored_crc = u32::from_le_bytes([data[24], data[25], data[26], data[27]]);
    if crc32c(&data[..24]) != stored_crc || version != SEGMENT_VERSION {
        return Err(HeaderError::Invalid("header checksum mismatch"));
    }
    if data[28..32] != [0; 4] {
        return Err(HeaderError::Invalid("reserved header bytes are not zero"));
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&data[16..24]);
    Ok(u64::from_le_bytes(seq))
}

/// How the scan of a segment's records ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanEnd {
    /// End of file, or only zeros (unused preallocated space) from `offset` on.
    Clean { offset: u64 },
    /// A record at `offset` is bad. `synced_after` says whether a valid record
    /// marked `synced_before`, with a plausible later sequence number, follows
    /// it: then the damaged record had been synced, and the damage is not a
    /// torn write.
    Damaged {
        offset: u64,
        error: DamageKind,
        synced_after: bool,
    },
}

impl ScanEnd {
    pub fn offset(&self) -> u64 {
        match *self {
            ScanEnd::Clean { offset } | ScanEnd::Damaged { offset, .. } => offset,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    Record(RecordError),
    /// A valid record whose sequence number breaks the run.
    SequenceGap {
        expected: u64,
        found: u64,
    },
}

impl DamageKind {
    pub fn describe(&self) -> String {
        match self {
            DamageKind::Record(error) => error.describe().to_string(),
            DamageKind::SequenceGap { expected, found } => {
                format!("sequence number {found} where {expected} was expected")
            }
        }
    }
}

/// Walks the records of a segment whose header has been checked, calling `visit`
/// for each valid record in order, and reports how the walk ended.
pub fn scan_records<'a>(
    data: &'a [u8],
    first_seq: u64,
    mut visit: impl FnMut(DecodedRecord<'a>, u64),
) -> ScanEnd {
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut expected = first_seq;
    loop {
        if offset >= data.len() {
            return ScanEnd::Clean {
                offset: offset as u64,
            };
        }
        let error = match decode_record(&data[offset..]) {
            Ok(record) if record.seq == expected => {
                visit(record, offset as u64);
                offset += record.encoded_len;
                expected += 1;
                continue;
            }
            Ok(record) => DamageKind::SequenceGap {
                expected,
                found: record.seq,
            },
            Err(RecordError::Zero) if data[offset..].iter().all(|&b| b == 0) => {
                return ScanEnd::Clean {
                    offset: offset as u64,
                };
            }
            Err(error) => DamageKind::Record(error),
        };
        return ScanEnd::Damaged {
            offset: offset as u64,
            error,
            synced_after: has_later_synced_record(&data[offset + 1..], expected),
        };
    }
}

/// Whether any offset of `data` starts a valid record marked `synced_before`
/// whose sequence number could follow `min_seq` in this much data.
///
/// Only runs after damage was found, to tell a torn write (everything after the
/// damage was unsynced) from damage to synced data.
fn has_later_synced_record(data: &[u8], min_seq: u64) -> bool {
    let used = used_len(data);
    let max_seq = plausible_max_seq(&data[..used], min_seq);
    (0..used).any(|start| {
        // The flag is bit 31 of the little-endian length: checked before the
        // checksum, which is computed only where such a record could start.
        data.get(start + 3).is_some_and(|&byte| byte & 0x80 != 0)
            && record_at(data, start, min_seq, max_seq).is_some_and(|record| record.synced_before)
    })
}

/// Every valid record that can be found in `data` by trying each offset, in
/// order, with sequence numbers rising from `min_seq`: what remains readable in
/// bytes a repair cuts (after damage, or in a segment it drops), so that it can
/// say exactly which records it lost. Returns each record with its offset in
/// `data`, and how much of `data` is not trailing zeros ([`used_len`]).
pub fn salvage_records(data: &[u8], min_seq: u64) -> (Vec<(u64, DecodedRecord<'_>)>, usize) {
    let used = used_len(data);
    let max_seq = plausible_max_seq(&data[..used], min_seq);
    let mut found = Vec::new();
    let mut next_min = min_seq;
    let mut start = 0;
    while start < used {
        match record_at(data, start, next_min, max_seq) {
            Some(record) => {
                found.push((start as u64, record));
                start += record.encoded_len;
                next_min = record.seq.saturating_add(1);
            }
            None => start += 1,
        }
    }
    (found, used)
}

/// One past the last non-zero byte. A record's length field is never zero, so
/// every record starts before it: the preallocated zeros after it (most of a
/// fresh 64 MiB segment) need no offset-by-offset search.
pub fn used_len(data: &[u8]) -> usize {
    // Whole zero blocks first, compared as slices (a vectorised compare),
    // then byte by byte within the last block that is not all zeros.
    const BLOCK: usize = 4096;
    static ZEROS: [u8; BLOCK] = [0; BLOCK];
    let mut end = data.len();
    while end >= BLOCK && data[end - BLOCK..end] == ZEROS {
        end -= BLOCK;
    }
    data[..end]
        .iter()
        .rposition(|&byte| byte != 0)
        .map_or(0, |last| last + 1)
}

/// The highest sequence number a record in `data` could have if the first had
/// `min_seq`: bounding it keeps stray byte patterns inside stored values from
/// being taken for records.
fn plausible_max_seq(data: &[u8], min_seq: u64) -> u64 {
    min_seq.saturating_add((data.len() / super::record::encoded_len(0)) as u64)
}

/// The valid record starting at `start`, if there is one numbered in
/// `min_seq..=max_seq`. Cheap field checks come first, so the checksum (over up
/// to a whole record) is computed only where such a record could start.
fn record_at(data: &[u8], start: usize, min_seq: u64, max_seq: u64) -> Option<DecodedRecord<'_>> {
    let header = data.get(start..start + 16)?;
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&header[8..16]);
    let seq_range = min_seq..=max_seq;
    let plausible = seq_range.contains(&u64::from_le_bytes(seq))
        && ((length & !(1 << 31)) as usize) <= data.len() - start;
    if !plausible {
        return None;
    }
    decode_record(&data[start..])
        .ok()
        .filter(|record| seq_range.contains(&record.seq))
}

/// The path of a segment in `dir`.
pub fn segment_path(dir: &Path, first_seq: u64) -> std::path::PathBuf {
    dir.join(segment_file_name(first_seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::record::encode_record;

    fn segment(first_seq: u64, payloads: &[&[u8]]) -> Vec<u8> {
        let mut data = encode_segment_header(first_seq);
        for (index, payload) in payloads.iter().enumerate() {
            encode_record(&mut data, first_seq + index as u64, index == 0, payload);
        }
        data
    }

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(parse_segment_file_name(&segment_file_name(17)), Some(17));
        assert!(segment_file_name(9) < segment_file_name(10));
        assert_eq!(parse_segment_file_name("17.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000001x.wal"), None);
    }

    #[test]
    fn header_round_trip_and_damage() {
        let header = encode_segment_header(5);
        assert_eq!(decode_segment_header(&header), Ok(5));
        assert_eq!(
            decode_segment_header(&header[..10]),
            Err(HeaderError::Incomplete)
        );
        let mut bad = header.clone();
        bad[17] ^= 1;
        assert!(matches!(
            decode_segment_header(&bad),
            Err(HeaderError::Invalid(_))
        ));
    }

    #[test]
    fn scan_stops_cleanly_at_zero_fill() {
        let mut data = segment(3, &[b"a", b"b"]);
        let end = data.len() as u64;
        data.resize(4096, 0);
        let mut seen = Vec::new();
        let result = scan_records(&data, 3, |record, _| seen.push(record.seq));
        assert_eq!(seen, vec![3, 4]);
        assert_eq!(result, ScanEnd::Clean { offset: end });
    }

    #[test]
    fn damage_to_synced_records_is_told_from_a_torn_write() {
        // Records 1 and 2 form one write; record 3 was written after a sync.
        let mut data = encode_segment_header(1);
        encode_record(&mut data, 1, true, b"one");
        encode_record(&mut data, 2, false, b"two");
        encode_record(&mut data, 3, true, b"three");
        let first = SEGMENT_HEADER_BYTES;
        let second = first + crate::storage::record::encoded_len(3);

        let mut synced_damage = data.clone();
        synced_damage[first + 12] ^= 0x40;
        let end = scan_records(&synced_damage, 1, |_, _| {});
        assert!(matches!(
            end,
            ScanEnd::Damaged {
                synced_after: true,
                ..
            }
        ));

        // Damage to record 2 with record 3 missing: the last write was torn,
        // even though a later page of it may have reached the disk.
        let mut torn = data[..second + crate::storage::record::encoded_len(3)].to_vec();
        torn[second + 12] ^= 0x40;
        let end = scan_records(&torn, 1, |_, _| {});
        assert!(matches!(
            end,
            ScanEnd::Damaged {
                synced_after: false,
                ..
            }
        ));

        let cut = &data[..data.len() - 2];
        let end = scan_records(cut, 1, |_, _| {});
        assert!(matches!(
            end,
            ScanEnd::Damaged {
                synced_after: false,
                ..
            }
        ));
    }

    #[test]
    fn salvage_finds_the_records_after_damage_and_skips_garbage() {
        let mut data = encode_segment_header(1);
        for seq in 1..=5u64 {
            encode_record(
                &mut data,
                seq,
                seq == 1,
                format!("payload-{seq}").as_bytes(),
            );
        }
        let record_len = crate::storage::record::encoded_len("payload-1".len());
        let second = SEGMENT_HEADER_BYTES + record_len;
        data[second + 20] ^= 0xff;
        data.extend_from_slice(&[7u8; 9]);
        let (found, _) = salvage_records(&data[second..], 2);
        let seqs: Vec<u64> = found.iter().map(|(_, record)| record.seq).collect();
        assert_eq!(
            seqs,
            vec![3, 4, 5],
            "the damaged record 2 is not among them"
        );
        assert_eq!(found[0].0, record_len as u64);
        assert_eq!(found[2].1.payload, b"payload-5");
        assert!(salvage_records(&[0u8; 4096], 1).0.is_empty());
    }

    #[test]
    fn used_len_finds_the_last_non_zero_byte() {
        let mut data = vec![0u8; 3 * 4096 + 17];
        assert_eq!(used_len(&data), 0);
        data[5] = 1;
        assert_eq!(used_len(&data), 6);
        data[4096 * 2 + 3] = 9;
        assert_eq!(used_len(&data), 4096 * 2 + 4);
        let last = data.len() - 1;
        data[last] = 1;
        assert_eq!(used_len(&data), data.len());
    }
}
