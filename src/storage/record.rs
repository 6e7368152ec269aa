//! WAL record framing.
//!
//! ```text
//! offset  size  field
//! 0       4     length     u32 LE: bit 31 = SYNCED_BEFORE flag,
//!                          bits 0..31 = body_len, 8 ..= MAX_RECORD_BODY
//! 4       4     crc        u32 LE: CRC32C of the length field's 4 bytes, then the body
//! 8       8     seq        u64 LE: the record's sequence number (first body field)
//! 16      n     payload    body_len - 8 bytes, opaque to the log
//! ```
//!
//! The checksum covers the length too, so a flipped length bit is caught rather
//! than sending the reader off to a wrong offset. A length field of zero never
//! occurs in a written record: it is how a preallocated, zero-filled tail reads.
//!
//! `SYNCED_BEFORE` marks the first record written after a sync: every record
//! before it was durable when it was written. Recovery uses it to tell a torn
//! write (the disk may persist the pages of an unsynced write in any order) from
//! damage to data that had been synced.

use crate::encoding::{crc32c, crc32c_append, put_u32, put_u64};

pub const RECORD_HEADER_BYTES: usize = 8;
const SEQ_BYTES: usize = 8;
const SYNCED_BEFORE: u32 = 1 << 31;
/// The largest body a record may carry (64 MiB): far above any key + value limit,
/// low enough that a corrupt length cannot make the reader allocate wildly.
pub const MAX_RECORD_BODY: usize = 64 << 20;
/// The largest payload a record may carry.
pub const MAX_RECORD_PAYLOAD: usize = MAX_RECORD_BODY - SEQ_BYTES;

/// Appends one framed record to `buf`. Payloads must be at most
/// [`MAX_RECORD_PAYLOAD`] bytes; callers check before they get here.
pub fn encode_record(buf: &mut Vec<u8>, seq: u64, synced_before: bool, payload: &[u8]) {
    let body_len = SEQ_BYTES + payload.len();
    assert!(body_len <= MAX_RECORD_BODY, "record payload too large");
    let flag = if synced_before { SYNCED_BEFORE } else { 0 };
    let length_field = body_len as u32 | flag;
    // The checksum covers the length, then the body (sequence number and
    // payload); both header fields are checksummed in one call.
    let mut checked_header = [0u8; 4 + SEQ_BYTES];
    checked_header[..4].copy_from_slice(&length_field.to_le_bytes());
    checked_header[4..].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c_append(crc32c(&checked_header), payload);
    put_u32(buf, length_field);
    put_u32(buf, crc);
    put_u64(buf, seq);
    buf.extend_from_slice(payload);
}

/// Bytes a record with this payload occupies on disk.
pub fn encoded_len(payload_len: usize) -> usize {
    RECORD_HEADER_BYTES + SEQ_BYTES + payload_len
}

/// One record decoded from a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedRecord<'a> {
    pub seq: u64,
    pub payload: &'a [u8],
    /// Whether every earlier record was synced before this one was written.
    pub synced_before: bool,
    /// Total bytes the record occupies, header included.
    pub encoded_len: usize,
}

/// Why no record could be decoded at some offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// The header reads as zero: preallocated space, or nothing was ever written.
    Zero,
    /// The buffer ends inside the record.
    Truncated,
    /// The length field is out of range.
    BadLength,
    /// The checksum does not match.
    BadChecksum,
}

impl RecordError {
    pub fn describe(self) -> &'static str {
        match self {
            RecordError::Zero => "zero-filled record header",
            RecordError::Truncated => "record cut short",
            RecordError::BadLength => "record length out of range",
            RecordError::BadChecksum => "record checksum mismatch",
        }
    }
}

/// Decodes the record at the start of `data`.
pub fn decode_record(data: &[u8]) -> Result<DecodedRecord<'_>, RecordError> {
    if data.len() < RECORD_HEADER_BYTES {
        return Err(if data.iter().all(|&b| b == 0) {
            RecordError::Zero
        } else {
            RecordError::Truncated
        });
    }
    let len_bytes: [u8; 4] = [data[0], data[1], data[2], data[3]];
    let length_field = u32::from_le_bytes(len_bytes);
    let body_len = (length_field & !SYNCED_BEFORE) as usize;
    let stored_crc = u32::from_le_bytes([data[4], data[5], data[6], data[7]]);
    if length_field == 0 && stored_crc == 0 {
        return Err(RecordError::Zero);
    }
    if !(SEQ_BYTES..=MAX_RECORD_BODY).contains(&body_len) {
        return Err(RecordError::BadLength);
    }
    let end = RECORD_HEADER_BYTES + body_len;
    if data.len() < end {
        return Err(RecordError::Truncated);
    }
    let body = &data[RECORD_HEADER_BYTES..end];
    if crc32c_append(crc32c(&len_bytes), body) != stored_crc {
        return Err(RecordError::BadChecksum);
    }
    let mut seq_bytes = [0u8; 8];
    seq_bytes.copy_from_slice(&body[..SEQ_BYTES]);
    Ok(DecodedRecord {
        seq: u64::from_le_bytes(seq_bytes),
        payload: &body[SEQ_BYTES..],
        synced_before: length_field & SYNCED_BEFORE != 0,
        encoded_len: end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 42, true, b"payload");
        encode_record(&mut buf, 43, false, b"");
        let first = decode_record(&buf).unwrap();
        assert_eq!((first.seq, first.payload), (42, &b"payload"[..]));
        assert!(first.synced_before);
        assert_eq!(first.encoded_len, encoded_len(7));
        let second = decode_record(&buf[first.encoded_len..]).unwrap();
        assert_eq!((second.seq, second.payload), (43, &b""[..]));
        assert!(!second.synced_before);
    }

    #[test]
    fn every_prefix_is_truncated_and_every_flip_is_caught() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 7, true, b"some value bytes");
        for cut in 1..buf.len() {
            assert!(decode_record(&buf[..cut]).is_err(), "cut at {cut}");
        }
        for index in 0..buf.len() {
            for bit in 0..8 {
                let mut damaged = buf.clone();
                damaged[index] ^= 1 << bit;
                assert!(decode_record(&damaged).is_err(), "flip {index}:{bit}");
            }
        }
    }

    #[test]
    fn zeros_read_as_zero() {
        assert_eq!(decode_record(&[0; 64]), Err(RecordError::Zero));
        assert_eq!(decode_record(&[0; 3]), Err(RecordError::Zero));
    }
}
