//! Byte-level encoding shared by every on-disk format: little-endian integers,
//! length-prefixed byte strings, and CRC32C.
//!
//! Decoding never panics: [`Reader`] checks every bound and reports
//! [`DecodeError`] with the offset it stopped at, because its input comes from disk
//! and may be torn or corrupt.

use bytes::Bytes;

/// CRC32C (Castagnoli), hardware-accelerated where the CPU has it.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Extends a running CRC32C with more bytes.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

pub fn put_u8(buf: &mut Vec<u8>, value: u8) {
    buf.push(value);
}

pub fn put_u32(buf: &mut Vec<u8>, value: u32) {
    buf.extend_from_slice(&value.to_le_bytes());
}

pub fn put_u64(buf: &mut Vec<u8>, value: u64) {
    buf.extend_from_slice(&value.to_le_bytes());
}

/// Writes a `u32` length followed by the bytes.
///
/// Callers keep byte strings far below 4 GiB (keys and values have limits), so the
/// length always fits.
pub fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    debug_assert!(bytes.len() <= u32::MAX as usize);
    put_u32(buf, bytes.len() as u32);
    buf.extend_from_slice(bytes);
}

/// Why a decode stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unexpected end of data at offset {offset} (wanted {wanted} more bytes)")]
    Truncated { offset: usize, wanted: usize },
    #[error("invalid value at offset {offset}: {reason}")]
    Invalid { offset: usize, reason: &'static str },
}

/// A bounds-checked cursor over a byte slice.
pub struct Reader<'a> {
    data: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, offset: 0 }
    }

    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.offset
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < len {
            return Err(DecodeError::Truncated {
                offset: self.offset,
                wanted: len - self.remaining(),
            });
        }
        let slice = &self.data[self.offset..self.offset + len];
        self.offset += len;
        Ok(slice)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(raw))
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(raw))
    }

    /// Reads a `u32`-length-prefixed byte string, refusing lengths above `max_len`
    /// before touching the data (a corrupt length must not allocate gigabytes).
    pub fn bytes(&mut self, max_len: usize) -> Result<&'a [u8], DecodeError> {
        let at = self.offset;
        let len = self.u32()? as usize;
        if len > max_len {
            return Err(DecodeError::Invalid {
                offset: at,
                reason: "length above the limit",
            });
        }
        self.take(len)
    }

    /// Like [`Reader::bytes`], copied into an owned [`Bytes`].
    pub fn owned_bytes(&mut self, max_len: usize) -> Result<Bytes, DecodeError> {
        self.bytes(max_len).map(Bytes::copy_from_slice)
    }

    pub fn invalid(&self, reason: &'static str) -> DecodeError {
        DecodeError::Invalid {
            offset: self.offset,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip() {
        let mut buf = Vec::new();
        put_u8(&mut buf, 7);
        put_u32(&mut buf, 0xdead_beef);
        put_u64(&mut buf, u64::MAX - 1);
        put_bytes(&mut buf, b"walrus");
        let mut reader = Reader::new(&buf);
        assert_eq!(reader.u8().unwrap(), 7);
        assert_eq!(reader.u32().unwrap(), 0xdead_beef);
        assert_eq!(reader.u64().unwrap(), u64::MAX - 1);
        assert_eq!(reader.bytes(100).unwrap(), b"walrus");
        assert!(reader.is_empty());
    }

    #[test]
    fn truncation_and_oversized_lengths_are_errors() {
        let mut reader = Reader::new(&[1, 2, 3]);
        assert!(matches!(reader.u32(), Err(DecodeError::Truncated { .. })));
        let mut buf = Vec::new();
        put_bytes(&mut buf, &[0; 10]);
        assert!(matches!(
            Reader::new(&buf).bytes(9),
            Err(DecodeError::Invalid { offset: 0, .. })
        ));
    }

    #[test]
    fn crc_append_matches_whole() {
        let whole = crc32c(b"hello world");
        let split = crc32c_append(crc32c(b"hello "), b"world");
        assert_eq!(whole, split);
    }
}
