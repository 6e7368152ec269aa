//! Redis's serialized value, as `DUMP` returns it and `RESTORE` takes it, for
//! the one type walrus stores: strings. With it, keys move between Redis and
//! walrus with DUMP/RESTORE and the tools built on them.
//!
//! A payload is `[type][value][RDB version][checksum]`:
//! - the type byte is RDB's, 0 for a string;
//! - the value is an RDB string: a length and the bytes, an integer in 1, 2
//!   or 4 bytes, or an LZF-compressed run (Redis compresses values over 20
//!   bytes when that saves space);
//! - the RDB version is two bytes, little-endian;
//! - the checksum is CRC-64/Redis (Jones) of everything before it, eight
//!   bytes little-endian.
//!
//! Encoding writes integers as Redis does and everything else uncompressed,
//! which every Redis loads. Decoding takes any of RDB's string encodings,
//! refuses a payload whose checksum is wrong (so a truncated or altered one
//! changes nothing), and never allocates more than the caller's value limit,
//! whatever lengths the payload claims.

use crc::{CRC_64_REDIS, Crc};

/// The RDB version written into payloads: 9, Redis 5 and 6's, whose string
/// encoding is the same as every later version's. Redis refuses a payload
/// newer than its own format, so the oldest version that holds a string
/// lets every Redis from 5.0 on restore what walrus dumps.
pub const WRITTEN_RDB_VERSION: u16 = 9;

const CHECKSUM: Crc<u64> = Crc::<u64>::new(&CRC_64_REDIS);
const STRING_TYPE: u8 = 0;
/// The version and the checksum after the value.
const FOOTER_BYTES: usize = 10;

/// Why a payload cannot be restored. The messages are Redis's own where it
/// has one, so clients that match on them keep working.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("DUMP payload version or checksum are wrong")]
    Checksum,
    #[error("Bad data format")]
    BadFormat,
    #[error("Bad data format: walrus stores strings only, and this payload holds {0}")]
    NotAString(&'static str),
    #[error("string exceeds maximum allowed size (proto-max-bulk-len)")]
    TooLarge,
}

/// The DUMP payload of a string value.
pub fn encode(value: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(value.len() + 24);
    payload.push(STRING_TYPE);
    match small_integer(value) {
        Some(number) => encode_integer(&mut payload, number),
        None => {
            encode_length(&mut payload, value.len() as u64);
            payload.extend_from_slice(value);
        }
    }
    payload.extend_from_slice(&WRITTEN_RDB_VERSION.to_le_bytes());
    let checksum = CHECKSUM.checksum(&payload);
    payload.extend_from_slice(&checksum.to_le_bytes());
    payload
}

/// The string value a payload holds, if its checksum is right, it holds a
/// string, and that string is at most `max_len` bytes.
pub fn decode(payload: &[u8], max_len: u64) -> Result<Vec<u8>, PayloadError> {
    if payload.len() < FOOTER_BYTES + 1 {
        return Err(PayloadError::Checksum);
    }
    let (body, checksum) = payload.split_at(payload.len() - 8);
    let expected = u64::from_le_bytes(checksum.try_into().map_err(|_| PayloadError::Checksum)?);
    if CHECKSUM.checksum(body) != expected {
        return Err(PayloadError::Checksum);
    }
    // Any version: a string is encoded alike in all of them.
    let value = &body[..body.len() - 2];
    let mut reader = Reader {
        bytes: value,
        at: 1,
    };
    match value[0] {
        STRING_TYPE => {}
        other => return Err(PayloadError::NotAString(type_name(other))),
    }
    let decoded = reader.string(max_len)?;
    if reader.at != value.len() {
        return Err(PayloadError::BadFormat);
    }
    Ok(decoded)
}

/// What a payload of RDB type `rdb_type` holds, for the refusal.
fn type_name(rdb_type: u8) -> &'static str {
    match rdb_type {
        1 | 10 | 14 | 18 => "a list",
        2 | 11 | 20 => "a set",
        3 | 5 | 12 | 17 => "a sorted set",
        4 | 9 | 13 | 16 | 22..=25 => "a hash",
        15 | 19 | 21 => "a stream",
        6 | 7 => "a module's value",
        _ => "a value of an unknown type",
    }
}

/// The value as an integer, if Redis would store it as one: its canonical
/// decimal form (no sign on zero, no leading zeros or plus) of at most 11
/// bytes, within 32 bits.
fn small_integer(value: &[u8]) -> Option<i32> {
    if value.is_empty() || value.len() > 11 {
        return None;
    }
    let number: i32 = std::str::from_utf8(value).ok()?.parse().ok()?;
    (number.to_string().as_bytes() == value).then_some(number)
}

fn encode_integer(out: &mut Vec<u8>, number: i32) {
    if let Ok(byte) = i8::try_from(number) {
        out.push(0xC0);
        out.extend_from_slice(&byte.to_le_bytes());
    } else if let Ok(short) = i16::try_from(number) {
        out.push(0xC1);
        out.extend_from_slice(&short.to_le_bytes());
    } else {
        out.push(0xC2);
        out.extend_from_slice(&number.to_le_bytes());
    }
}

fn encode_length(out: &mut Vec<u8>, len: u64) {
    if len < 1 << 6 {
        out.push(len as u8);
    } else if len < 1 << 14 {
        out.push(0x40 | (len >> 8) as u8);
        out.push(len as u8);
    } else if let Ok(len) = u32::try_from(len) {
        out.push(0x80);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

/// A length, or one of the special string encodings it may announce.
enum Length {
    Plain(u64),
    Int8,
    Int16,
    Int32,
    Lzf,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, count: usize) -> Result<&[u8], PayloadError> {
        let end = self.at.checked_add(count).ok_or(PayloadError::BadFormat)?;
        let taken = self
            .bytes
            .get(self.at..end)
            .ok_or(PayloadError::BadFormat)?;
        self.at = end;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, PayloadError> {
        Ok(self.take(1)?[0])
    }

    fn length(&mut self) -> Result<Length, PayloadError> {
        let first = self.byte()?;
        Ok(match first >> 6 {
            0 => Length::Plain(u64::from(first & 0x3F)),
            1 => Length::Plain(u64::from(first & 0x3F) << 8 | u64::from(self.byte()?)),
            2 if first == 0x80 => {
                let bytes = self.take(4)?;
                Length::Plain(u64::from(u32::from_be_bytes([
                    bytes[0], bytes[1], bytes[2], bytes[3],
                ])))
            }
            2 if first == 0x81 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(self.take(8)?);
                Length::Plain(u64::from_be_bytes(bytes))
            }
            2 => return Err(PayloadError::BadFormat),
            _ => match first & 0x3F {
                0 => Length::Int8,
                1 => Length::Int16,
                2 => Length::Int32,
                3 => Length::Lzf,
                _ => return Err(PayloadError::BadFormat),
            },
        })
    }

    fn plain_length(&mut self) -> Result<u64, PayloadError> {
        match self.length()? {
            Length::Plain(len) => Ok(len),
            _ => Err(PayloadError::BadFormat),
        }
    }

    fn string(&mut self, max_len: u64) -> Result<Vec<u8>, PayloadError> {
        let decoded = match self.length()? {
            Length::Plain(len) => {
                if len > max_len {
                    return Err(PayloadError::TooLarge);
                }
                let len = usize::try_from(len).map_err(|_| PayloadError::TooLarge)?;
                self.take(len)?.to_vec()
            }
            Length::Int8 => i8::from_le_bytes([self.byte()?]).to_string().into_bytes(),
            Length::Int16 => {
                let bytes = self.take(2)?;
                i16::from_le_bytes([bytes[0], bytes[1]])
                    .to_string()
                    .into_bytes()
            }
            Length::Int32 => {
                let bytes = self.take(4)?;
                i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
                    .to_string()
                    .into_bytes()
            }
            Length::Lzf => {
                let compressed_len = self.plain_length()?;
                let len = self.plain_length()?;
                if len > max_len {
                    return Err(PayloadError::TooLarge);
                }
                let compressed_len =
                    usize::try_from(compressed_len).map_err(|_| PayloadError::BadFormat)?;
                let len = usize::try_from(len).map_err(|_| PayloadError::TooLarge)?;
                lzf_decompress(self.take(compressed_len)?, len)?
            }
        };
        if decoded.len() as u64 > max_len {
            return Err(PayloadError::TooLarge);
        }
        Ok(decoded)
    }
}

/// LZF, as Redis compresses with it: a control byte below 32 starts a run of
/// that many plus one literal bytes; any other is a back reference, its
/// length in the top three bits (7: plus the next byte) plus two, its
/// distance in the low five and the next byte, plus one. The output must come
/// to exactly `len` bytes.
fn lzf_decompress(input: &[u8], len: usize) -> Result<Vec<u8>, PayloadError> {
    let mut out = Vec::with_capacity(len);
    let mut at = 0;
    while at < input.len() {
        let control = usize::from(input[at]);
        at += 1;
        if control < 32 {
            let run = control + 1;
            let literal = input.get(at..at + run).ok_or(PayloadError::BadFormat)?;
            if out.len() + run > len {
                return Err(PayloadError::BadFormat);
            }
            out.extend_from_slice(literal);
            at += run;
            continue;
        }
        let mut run = control >> 5;
        if run == 7 {
            run += usize::from(*input.get(at).ok_or(PayloadError::BadFormat)?);
            at += 1;
        }
        run += 2;
        let low = usize::from(*input.get(at).ok_or(PayloadError::BadFormat)?);
        at += 1;
        let distance = ((control & 0x1F) << 8) + low + 1;
        if distance > out.len() || out.len() + run > len {
            return Err(PayloadError::BadFormat);
        }
        // Byte by byte: the reference may overlap what it produces.
        let start = out.len() - distance;
        for index in start..start + run {
            let byte = out[index];
            out.push(byte);
        }
    }
    if out.len() != len {
        return Err(PayloadError::BadFormat);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
            .collect()
    }

    const UNLIMITED: u64 = u64::MAX;

    /// Payloads Redis 7.0.15 returned for DUMP (version 10), and the values
    /// they hold.
    fn from_redis() -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut bin = (0..=255u8).collect::<Vec<u8>>();
        bin.extend(0..=255u8);
        vec![
            (hex("000568656c6c6f0a006372df766534200a"), b"hello".to_vec()),
            (hex("00c139300a009d94ea2793fc08b9"), b"12345".to_vec()),
            (hex("00c0f90a005e26d130d7a242ab"), b"-7".to_vec()),
            (hex("00c12c010a00954261f265825c10"), b"300".to_vec()),
            (hex("00c2701101000a0001a408fe953095a5"), b"70000".to_vec()),
            (hex("00033031320a008f5463e9547eeb0c"), b"012".to_vec()),
            (hex("00000a005d9b5c400f7fa2da"), Vec::new()),
            // 100 × "x", LZF-compressed.
            (
                hex("00c3094064017878e057000178780a005db7f663bb08625f"),
                vec![b'x'; 100],
            ),
            // 0..=255 twice: literal runs, then one long back reference.
            (
                hex(concat!(
                    "00c3411042001f000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                    "1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f",
                    "1f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f",
                    "1f606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f",
                    "1f808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
                    "1fa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
                    "1fc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf",
                    "1fe0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
                    "0000e0f4ff01feff0a00084dd41d67e5d330"
                )),
                bin,
            ),
        ]
    }

    #[test]
    fn payloads_from_redis_decode_to_their_values() {
        for (payload, value) in from_redis() {
            assert_eq!(decode(&payload, UNLIMITED), Ok(value));
        }
    }

    #[test]
    fn a_long_compressed_value_with_a_32_bit_length_decodes() {
        // Redis 7.0's DUMP of "walrus" × 3000 (18,000 bytes).
        let payload = hex(concat!(
            "00c340da80000046500677616c72757377e0ff05e1ff07e1ff07e1ff07e1ff07e1ff07e1",
            "ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1",
            "ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1",
            "ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1",
            "ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1",
            "ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1ff07e1",
            "ff07e1ff07e11e070175730a00c2ca66e303cfdc75",
        ));
        let value = decode(&payload, UNLIMITED).expect("decodes");
        assert_eq!(value, b"walrus".repeat(3000));
    }

    #[test]
    fn what_walrus_encodes_matches_redis_byte_for_byte_but_the_version() {
        // Redis 7.0 writes version 10; walrus writes 9, so the checksum differs.
        for (payload, value) in from_redis().into_iter().take(7) {
            let ours = encode(&value);
            assert_eq!(
                ours[..ours.len() - FOOTER_BYTES],
                payload[..payload.len() - FOOTER_BYTES]
            );
            assert_eq!(ours[ours.len() - FOOTER_BYTES..][..2], [9, 0]);
        }
    }

    #[test]
    fn the_checksum_is_crc_64_redis() {
        assert_eq!(CHECKSUM.checksum(b"123456789"), 0xe9c6d914c4b8d9ca);
    }

    #[test]
    fn a_damaged_or_short_payload_is_refused_as_redis_refuses_it() {
        let mut payload = encode(b"hello");
        payload[2] ^= 1;
        assert_eq!(decode(&payload, UNLIMITED), Err(PayloadError::Checksum));
        let payload = encode(b"hello");
        assert_eq!(
            decode(&payload[..payload.len() - 1], UNLIMITED),
            Err(PayloadError::Checksum)
        );
        assert_eq!(decode(b"", UNLIMITED), Err(PayloadError::Checksum));
        assert_eq!(decode(b"\0\0", UNLIMITED), Err(PayloadError::Checksum));
    }

    #[test]
    fn a_payload_of_another_type_is_refused_naming_it() {
        // Redis 7.0's DUMP of a two-item list (a quicklist).
        let list = hex("1201020d0d0000000200816102816202ff0a0068eb0a891341bbb1");
        assert_eq!(
            decode(&list, UNLIMITED),
            Err(PayloadError::NotAString("a list"))
        );
    }

    /// A string payload with `body` as its value and a correct footer.
    fn sealed(body: &[u8]) -> Vec<u8> {
        let mut payload = vec![STRING_TYPE];
        payload.extend_from_slice(body);
        payload.extend_from_slice(&10u16.to_le_bytes());
        let checksum = CHECKSUM.checksum(&payload);
        payload.extend_from_slice(&checksum.to_le_bytes());
        payload
    }

    #[test]
    fn claimed_lengths_past_the_limit_are_refused_before_anything_is_allocated() {
        // 2^64-1 bytes claimed, plain and compressed.
        let mut plain = vec![0x81];
        plain.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            decode(&sealed(&plain), 1 << 20),
            Err(PayloadError::TooLarge)
        );
        let mut lzf = vec![0xC3, 0x01];
        lzf.push(0x81);
        lzf.extend_from_slice(&u64::MAX.to_be_bytes());
        lzf.push(0x00);
        assert_eq!(decode(&sealed(&lzf), 1 << 20), Err(PayloadError::TooLarge));
        assert_eq!(decode(&encode(&[7; 100]), 99), Err(PayloadError::TooLarge));
        assert_eq!(decode(&encode(&[7; 100]), 100), Ok(vec![7; 100]));
    }

    #[test]
    fn malformed_strings_are_a_bad_format() {
        for body in [
            &b"\x05abc"[..],          // shorter than its length
            b"\x03abcd",              // bytes after the value
            b"\xC4",                  // no such encoding
            b"\xC3\x02\x05\x01ab",    // compressed output shorter than claimed
            b"\xC3\x02\x05\x20\x00",  // a back reference before any output
            b"\xC3\x03\x01\x00a\x00", // more output than claimed
            b"\xC1\x01",              // a 16-bit integer cut short
        ] {
            assert_eq!(
                decode(&sealed(body), UNLIMITED),
                Err(PayloadError::BadFormat),
                "{body:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn any_value_survives_encode_then_decode(value in proptest::collection::vec(any::<u8>(), 0..20_000)) {
            prop_assert_eq!(decode(&encode(&value), UNLIMITED), Ok(value));
        }

        #[test]
        fn numbers_survive_in_every_integer_width(number in any::<i64>()) {
            let value = number.to_string().into_bytes();
            prop_assert_eq!(decode(&encode(&value), UNLIMITED), Ok(value));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&sealed(&body), 1 << 16);
        }
    }
}
