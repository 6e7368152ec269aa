//! Snapshot files: the live key-value data at one log position.
//!
//! ```text
//! header (48 bytes)
//! 0   8  magic          b"WALRUSSN"
//! 8   4  version        u32 LE, SNAPSHOT_VERSION
//! 12  4  reserved       zero (covered by header_crc)
//! 16  8  last_seq       u64 LE: every log record up to here is reflected
//! 24  8  revision       u64 LE: the store-wide revision counter at last_seq
//! 32  8  entry_count    u64 LE
//! 40  4  header_crc     u32 LE: CRC32C of bytes 0..40
//! 44  4  reserved       zero (checked)
//! extra (version 2 on): extra_len u32 | extra bytes: metadata of the layer above
//!     (a Raft replica's last log id and membership; empty for a single node)
//! entries, strictly increasing by (database, key bytes), each:
//!     db u8 (version 3 on) | key_len u32 | value_len u32 | mod_revision u64
//!     | expires_at_ms u64 | key | value
//! footer (16 bytes)
//!     entries_crc u32 (CRC32C of the extra block and all entry bytes) | reserved u32 (zero, checked) | b"WALRUSND"
//! ```
//!
//! Version 1 files (no extra block) and version 2 files (no database byte:
//! every entry in database 0) are still read.
//!
//! A snapshot is written to `<last_seq>.snap.tmp`, synced, renamed to
//! `<last_seq>.snap`, and the directory synced: a `.snap` file is always complete.
//! Leftover `.tmp` files are from interrupted snapshots and are deleted at open.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::fs::{FileSystem, WritableFile, read_in_pieces};
use crate::encoding::{DecodeError, Reader, crc32c, crc32c_append, put_u32, put_u64};
use crate::error::{Error, Result};

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"WALRUSSN";
pub const SNAPSHOT_END_MAGIC: &[u8; 8] = b"WALRUSND";
pub const SNAPSHOT_VERSION: u32 = 3;
/// How many databases (Redis's `SELECT 0` to `SELECT 15`) a store holds.
pub const DATABASES: u8 = 16;
/// Largest extra block a decoder accepts.
const MAX_EXTRA_BYTES: usize = 16 << 20;
pub const SNAPSHOT_HEADER_BYTES: usize = 48;
const FOOTER_BYTES: usize = 16;
const SNAPSHOT_SUFFIX: &str = ".snap";
pub const TEMP_SUFFIX: &str = ".tmp";
/// The name a cluster node writes its `number`th snapshot transfer from its
/// leader to, before it is checked and renamed to its index's name. Each
/// transfer has its own file, so a new one never touches one still being
/// installed; a leftover is removed at open like any interrupted snapshot.
pub fn incoming_snapshot_name(number: u64) -> String {
    format!("incoming-{number}.snap{TEMP_SUFFIX}")
}

/// Whether `name` is an [`incoming_snapshot_name`].
pub fn is_incoming_snapshot_name(name: &str) -> bool {
    name.strip_prefix("incoming-")
        .and_then(|rest| rest.strip_suffix(".snap.tmp"))
        .is_some_and(|number| !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
}
/// Decoding limit for one key or value; far above the store's own limits.
const MAX_FIELD_BYTES: usize = 1 << 30;

pub fn snapshot_file_name(last_seq: u64) -> String {
    format!("{last_seq:020}{SNAPSHOT_SUFFIX}")
}

pub fn parse_snapshot_file_name(name: &str) -> Option<u64> {
    super::segment::parse_numbered_name(name, SNAPSHOT_SUFFIX)
}

/// Where a snapshot sits in history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub last_seq: u64,
    pub revision: u64,
    pub entry_count: u64,
}

/// One key with its value and metadata, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// The database the key is in, below [`DATABASES`].
    pub db: u8,
    pub key: Bytes,
    pub value: Bytes,
    pub mod_revision: u64,
    pub expires_at_ms: u64,
}

fn encode_header(meta: &SnapshotMeta) -> Vec<u8> {
    let mut buf = Vec::with_capacity(SNAPSHOT_HEADER_BYTES);
    buf.extend_from_slice(SNAPSHOT_MAGIC);
    put_u32(&mut buf, SNAPSHOT_VERSION);
    put_u32(&mut buf, 0);
    put_u64(&mut buf, meta.last_seq);
    put_u64(&mut buf, meta.revision);
    put_u64(&mut buf, meta.entry_count);
    let crc = crc32c(&buf);
    put_u32(&mut buf, crc);
    put_u32(&mut buf, 0);
    buf
}

pub fn encode_entry(
    buf: &mut Vec<u8>,
    db: u8,
    key: &[u8],
    value: &[u8],
    mod_revision: u64,
    expires_at_ms: u64,
) {
    buf.push(db);
    put_u32(buf, key.len() as u32);
    put_u32(buf, value.len() as u32);
    put_u64(buf, mod_revision);
    put_u64(buf, expires_at_ms);
    buf.extend_from_slice(key);
    buf.extend_from_slice(value);
}

/// Why a snapshot could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a snapshot file (bad magic)")]
    BadMagic,
    #[error("snapshot format version {0} is newer than this build")]
    Version(u32),
    #[error("snapshot header checksum mismatch")]
    HeaderChecksum,
    #[error("snapshot entries checksum mismatch")]
    EntriesChecksum,
    #[error("snapshot entry keys are not in increasing order at offset {0}")]
    Unordered(usize),
    #[error("snapshot has {found} entries, header says {expected}")]
    Count { expected: u64, found: u64 },
    #[error("snapshot footer missing or damaged")]
    Footer,
    #[error("{0}")]
    Decode(#[from] DecodeError),
}

impl SnapshotError {
    /// Byte offset the error refers to, where one is known.
    pub fn offset(&self) -> u64 {
        match self {
            SnapshotError::Unordered(offset) => *offset as u64,
            SnapshotError::Decode(DecodeError::Truncated { offset, .. })
            | SnapshotError::Decode(DecodeError::Invalid { offset, .. }) => *offset as u64,
            _ => 0,
        }
    }
}

/// The format version and position a 48-byte header holds, checked.
fn decode_header(header: &[u8]) -> Result<(u32, SnapshotMeta), SnapshotError> {
    if header.get(..8) != Some(&SNAPSHOT_MAGIC[..]) {
        return Err(SnapshotError::BadMagic);
    }
    let mut fields = Reader::new(&header[8..]);
    let version = fields.u32()?;
    // The version comes first: a newer format may lay out the rest differently.
    if version > SNAPSHOT_VERSION {
        return Err(SnapshotError::Version(version));
    }
    fields.u32()?;
    let meta = SnapshotMeta {
        last_seq: fields.u64()?,
        revision: fields.u64()?,
        entry_count: fields.u64()?,
    };
    if crc32c(&header[..40]) != fields.u32()? || fields.u32()? != 0 || version == 0 {
        return Err(SnapshotError::HeaderChecksum);
    }
    Ok((version, meta))
}

/// Checks a snapshot as its bytes arrive, holding one entry at a time: the
/// same checks as [`decode_snapshot`] (header, every entry's framing and key
/// order, the count, the entries checksum, the footer) for a snapshot too
/// large to hold in memory, such as a backup being downloaded.
///
/// The last [`FOOTER_BYTES`] seen are held back, since only the end of the
/// stream says they are the footer rather than entry bytes.
#[derive(Debug, Default)]
pub struct SnapshotStreamCheck {
    /// Bytes received and not yet parsed; `start` of them are parsed.
    pending: Vec<u8>,
    start: usize,
    /// Bytes parsed before `pending`'s first byte.
    parsed: u64,
    header: Option<(u32, SnapshotMeta)>,
    /// Whether the extra block (version 2 on) is behind us, and its bytes.
    extra_done: bool,
    extra: Vec<u8>,
    entries_crc: u32,
    entries: u64,
    /// The last entry's database and key (shared with its record when
    /// collecting, so a key is copied once).
    previous: Option<(u8, Bytes)>,
    /// The entries themselves, when the caller wants them
    /// ([`SnapshotStreamCheck::collecting`]).
    records: Option<Vec<SnapshotRecord>>,
}

impl SnapshotStreamCheck {
    pub fn new() -> SnapshotStreamCheck {
        SnapshotStreamCheck::default()
    }

    /// A check that also keeps every entry, for reading a snapshot file in
    /// pieces ([`SnapshotStreamCheck::finish_with_records`]).
    pub fn collecting() -> SnapshotStreamCheck {
        SnapshotStreamCheck {
            records: Some(Vec::new()),
            ..SnapshotStreamCheck::default()
        }
    }

    /// Takes the next bytes of the stream.
    pub fn push(&mut self, data: &[u8]) -> Result<(), SnapshotError> {
        self.pending.extend_from_slice(data);
        while self.parse_one()? {}
        // Forget parsed bytes once they are the larger part of the buffer.
        if self.start > self.pending.len() / 2 {
            self.pending.drain(..self.start);
            self.start = 0;
        }
        Ok(())
    }

    /// Parses one item (header, extra block, entry) if all of it has arrived
    /// before the held-back tail; whether it did.
    fn parse_one(&mut self) -> Result<bool, SnapshotError> {
        let available = &self.pending[self.start..];
        let Some((version, _)) = self.header else {
            let Some(header) = available.get(..SNAPSHOT_HEADER_BYTES) else {
                return Ok(false);
            };
            self.header = Some(decode_header(header)?);
            self.consume(SNAPSHOT_HEADER_BYTES, false);
            return Ok(true);
        };
        let parseable = available.len().saturating_sub(FOOTER_BYTES);
        let available = &available[..parseable];
        if !self.extra_done {
            if version < 2 {
                self.extra_done = true;
                return Ok(true);
            }
            let Some(len) = available.get(..4) else {
                return Ok(false);
            };
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            if len > MAX_EXTRA_BYTES {
                return Err(self.invalid("extra block above the limit"));
            }
            if available.len() < 4 + len {
                return Ok(false);
            }
            self.extra_done = true;
            self.extra = available[4..4 + len].to_vec();
            self.consume(4 + len, true);
            return Ok(true);
        }
        let fixed = if version >= 3 { 25 } else { 24 };
        let Some(head) = available.get(..fixed) else {
            return Ok(false);
        };
        let mut fields = Reader::new(head);
        let db = if version >= 3 { fields.u8()? } else { 0 };
        if db >= DATABASES {
            return Err(self.invalid("database number out of range"));
        }
        let key_len = fields.u32()? as usize;
        let value_len = fields.u32()? as usize;
        if key_len > MAX_FIELD_BYTES || value_len > MAX_FIELD_BYTES {
            return Err(self.invalid("field length above the limit"));
        }
        let mod_revision = fields.u64()?;
        let expires_at_ms = fields.u64()?;
        let total = fixed + key_len + value_len;
        let Some(key) = available.get(fixed..fixed + key_len) else {
            return Ok(false);
        };
        if available.len() < total {
            return Ok(false);
        }
        if let Some((previous_db, previous_key)) = &self.previous
            && (*previous_db, &previous_key[..]) >= (db, key)
        {
            return Err(SnapshotError::Unordered(self.parsed as usize));
        }
        let key = Bytes::copy_from_slice(key);
        if let Some(records) = &mut self.records {
            records.push(SnapshotRecord {
                db,
                key: key.clone(),
                value: Bytes::copy_from_slice(&available[fixed + key_len..total]),
                mod_revision,
                expires_at_ms,
            });
        }
        self.previous = Some((db, key));
        self.entries += 1;
        self.consume(total, true);
        Ok(true)
    }

    fn consume(&mut self, len: usize, checksummed: bool) {
        if checksummed {
            let bytes = &self.pending[self.start..self.start + len];
            self.entries_crc = crc32c_append(self.entries_crc, bytes);
        }
        self.start += len;
        self.parsed += len as u64;
    }

    fn invalid(&self, reason: &'static str) -> SnapshotError {
        SnapshotError::Decode(DecodeError::Invalid {
            offset: self.parsed as usize,
            reason,
        })
    }

    /// [`Self::finish`] for a [`Self::collecting`] check: the snapshot's
    /// position and its entries.
    pub fn finish_with_records(self) -> Result<(SnapshotMeta, Vec<SnapshotRecord>), SnapshotError> {
        self.finish_with_extra()
            .map(|(meta, _, records)| (meta, records))
    }

    /// [`Self::finish_with_records`], with the extra block (empty before
    /// version 2).
    pub fn finish_with_extra(
        mut self,
    ) -> Result<(SnapshotMeta, Vec<u8>, Vec<SnapshotRecord>), SnapshotError> {
        let records = self.records.take().unwrap_or_default();
        let extra = std::mem::take(&mut self.extra);
        self.finish().map(|(meta, _)| (meta, extra, records))
    }

    /// The header and the extra block, once both have arrived: what a reader
    /// that wants only a snapshot's position needs, without its entries.
    pub fn head(&self) -> Option<(SnapshotMeta, &[u8])> {
        let (_, meta) = self.header?;
        self.extra_done.then_some((meta, &self.extra[..]))
    }

    /// The stream ended: checks what only the end can tell, and returns the
    /// snapshot's position and its size in bytes.
    pub fn finish(self) -> Result<(SnapshotMeta, u64), SnapshotError> {
        let Some((_, meta)) = self.header else {
            return Err(SnapshotError::Footer);
        };
        let footer = &self.pending[self.start..];
        if footer.len() != FOOTER_BYTES {
            // Bytes left that are neither whole entries nor the footer.
            return Err(SnapshotError::Footer);
        }
        if &footer[8..] != SNAPSHOT_END_MAGIC || footer[4..8] != [0; 4] {
            return Err(SnapshotError::Footer);
        }
        let stored_crc = u32::from_le_bytes([footer[0], footer[1], footer[2], footer[3]]);
        if self.entries_crc != stored_crc {
            return Err(SnapshotError::EntriesChecksum);
        }
        if self.entries != meta.entry_count {
            return Err(SnapshotError::Count {
                expected: meta.entry_count,
                found: self.entries,
            });
        }
        Ok((meta, self.parsed + FOOTER_BYTES as u64))
    }
}

/// Decodes a whole snapshot file, checking every checksum and the key order.
pub fn decode_snapshot(data: &[u8]) -> Result<(SnapshotMeta, Vec<SnapshotRecord>), SnapshotError> {
    decode_snapshot_with_extra(data).map(|(meta, _, records)| (meta, records))
}

/// [`decode_snapshot`], also returning the extra block (empty in version 1).
pub fn decode_snapshot_with_extra(
    data: &[u8],
) -> Result<(SnapshotMeta, Vec<u8>, Vec<SnapshotRecord>), SnapshotError> {
    let mut reader = Reader::new(data);
    let (version, meta) = decode_header(reader.take(SNAPSHOT_HEADER_BYTES)?)?;
    if data.len() < SNAPSHOT_HEADER_BYTES + FOOTER_BYTES {
        return Err(SnapshotError::Footer);
    }
    let entries_end = data.len() - FOOTER_BYTES;
    let footer = &data[entries_end..];
    if &footer[8..] != SNAPSHOT_END_MAGIC || footer[4..8] != [0; 4] {
        return Err(SnapshotError::Footer);
    }
    let stored_crc = u32::from_le_bytes([footer[0], footer[1], footer[2], footer[3]]);
    if crc32c(&data[SNAPSHOT_HEADER_BYTES..entries_end]) != stored_crc {
        return Err(SnapshotError::EntriesChecksum);
    }
    // Each entry takes at least 24 bytes, which bounds the allocation below.
    let plausible = (entries_end - SNAPSHOT_HEADER_BYTES) / 24;
    if meta.entry_count > plausible as u64 {
        return Err(SnapshotError::Count {
            expected: meta.entry_count,
            found: plausible as u64,
        });
    }
    let mut records: Vec<SnapshotRecord> = Vec::with_capacity(meta.entry_count as usize);
    let mut entries = Reader::new(&data[..entries_end]);
    entries.take(SNAPSHOT_HEADER_BYTES)?;
    let extra = if version >= 2 {
        let len = entries.u32()? as usize;
        if len > MAX_EXTRA_BYTES {
            return Err(entries.invalid("extra block above the limit").into());
        }
        entries.take(len)?.to_vec()
    } else {
        Vec::new()
    };
    while !entries.is_empty() {
        let at = entries.offset();
        let db = if version >= 3 { entries.u8()? } else { 0 };
        if db >= DATABASES {
            return Err(entries.invalid("database number out of range").into());
        }
        let key_len = entries.u32()? as usize;
        let value_len = entries.u32()? as usize;
        if key_len > MAX_FIELD_BYTES || value_len > MAX_FIELD_BYTES {
            return Err(entries.invalid("field length above the limit").into());
        }
        let mod_revision = entries.u64()?;
        let expires_at_ms = entries.u64()?;
        let key = entries.take(key_len)?;
        let value = entries.take(value_len)?;
        if let Some(previous) = records.last()
            && (previous.db, previous.key.as_ref()) >= (db, key)
        {
            return Err(SnapshotError::Unordered(at));
        }
        records.push(SnapshotRecord {
            db,
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            mod_revision,
            expires_at_ms,
        });
    }
    if records.len() as u64 != meta.entry_count {
        return Err(SnapshotError::Count {
            expected: meta.entry_count,
            found: records.len() as u64,
        });
    }
    Ok((meta, extra, records))
}

/// Reads and decodes the snapshot at `path`, a piece at a time: the file is
/// never held whole, only the entries it decodes to.
pub fn read_snapshot(
    fs: &dyn FileSystem,
    path: &Path,
) -> Result<(SnapshotMeta, Vec<SnapshotRecord>)> {
    read_snapshot_with_extra(fs, path).map(|(meta, _, records)| (meta, records))
}

/// The error a damaged or unsupported snapshot file at `path` gets.
fn snapshot_file_error(path: &Path, error: SnapshotError) -> Error {
    match error {
        SnapshotError::Version(found) => Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found,
            supported: SNAPSHOT_VERSION,
        },
        other => Error::corrupt(path, other.offset(), other.to_string()),
    }
}

/// [`read_snapshot`], with the extra block.
pub fn read_snapshot_with_extra(
    fs: &dyn FileSystem,
    path: &Path,
) -> Result<(SnapshotMeta, Vec<u8>, Vec<SnapshotRecord>)> {
    let mut file = fs.open_read(path).map_err(|err| Error::io(path, err))?;
    let mut check = SnapshotStreamCheck::collecting();
    read_in_pieces(
        &mut *file,
        |err| Error::io(path, err),
        |piece| {
            check
                .push(piece)
                .map_err(|error| snapshot_file_error(path, error))
        },
    )?;
    check
        .finish_with_extra()
        .map_err(|error| snapshot_file_error(path, error))
}

/// Streams entries into a temporary file and publishes it atomically.
pub struct SnapshotWriter<'a> {
    fs: &'a dyn FileSystem,
    dir: PathBuf,
    temp_path: PathBuf,
    file: Box<dyn WritableFile>,
    meta: SnapshotMeta,
    offset: u64,
    crc: u32,
    written: u64,
    buffer: Vec<u8>,
}

impl<'a> SnapshotWriter<'a> {
    pub fn create(fs: &'a dyn FileSystem, dir: &Path, meta: SnapshotMeta) -> Result<Self> {
        SnapshotWriter::create_with_extra(fs, dir, meta, &[])
    }

    /// [`SnapshotWriter::create`] with an extra block of the caller's metadata.
    pub fn create_with_extra(
        fs: &'a dyn FileSystem,
        dir: &Path,
        meta: SnapshotMeta,
        extra: &[u8],
    ) -> Result<Self> {
        let temp_path = dir.join(format!(
            "{}{TEMP_SUFFIX}",
            snapshot_file_name(meta.last_seq)
        ));
        // A leftover from an interrupted attempt at the same position.
        let _ = fs.remove(&temp_path);
        let mut file = fs
            .create(&temp_path)
            .map_err(|err| Error::io(&temp_path, err))?;
        let header = encode_header(&meta);
        file.write_all_at(0, &header)
            .map_err(|err| Error::io(&temp_path, err))?;
        Ok(SnapshotWriter {
            fs,
            dir: dir.to_path_buf(),
            temp_path,
            file,
            meta,
            offset: header.len() as u64,
            crc: 0,
            written: 0,
            buffer: {
                let mut buffer = Vec::with_capacity(1 << 20);
                put_u32(&mut buffer, extra.len() as u32);
                buffer.extend_from_slice(extra);
                buffer
            },
        })
    }

    /// Adds one entry; entries must come in increasing (database, key) order.
    pub fn push(
        &mut self,
        db: u8,
        key: &[u8],
        value: &[u8],
        mod_revision: u64,
        expires_at_ms: u64,
    ) -> Result<()> {
        encode_entry(
            &mut self.buffer,
            db,
            key,
            value,
            mod_revision,
            expires_at_ms,
        );
        self.written += 1;
        if self.buffer.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.crc = crc32c_append(self.crc, &self.buffer);
        self.file
            .write_all_at(self.offset, &self.buffer)
            .map_err(|err| Error::io(&self.temp_path, err))?;
        self.offset += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    /// Writes the footer, syncs, renames into place and syncs the directory.
    /// Returns the final path.
    pub fn finish(mut self) -> Result<PathBuf> {
        assert_eq!(
            self.written, self.meta.entry_count,
            "snapshot entry count must match its header"
        );
        self.flush()?;
        let mut footer = Vec::with_capacity(FOOTER_BYTES);
        put_u32(&mut footer, self.crc);
        put_u32(&mut footer, 0);
        footer.extend_from_slice(SNAPSHOT_END_MAGIC);
        let io_error = |err| Error::io(&self.temp_path, err);
        self.file
            .write_all_at(self.offset, &footer)
            .map_err(io_error)?;
        self.file.sync_all().map_err(io_error)?;
        let final_path = self.dir.join(snapshot_file_name(self.meta.last_seq));
        self.fs
            .rename(&self.temp_path, &final_path)
            .map_err(|err| Error::io(&final_path, err))?;
        self.fs
            .sync_dir(&self.dir)
            .map_err(|err| Error::io(&self.dir, err))?;
        Ok(final_path)
    }

    /// Removes the temporary file of an abandoned snapshot.
    pub fn abandon(self) {
        let _ = self.fs.remove(&self.temp_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SimFs;

    fn write(fs: &SimFs, dir: &Path, keys: &[&str]) -> PathBuf {
        let meta = SnapshotMeta {
            last_seq: 9,
            revision: 12,
            entry_count: keys.len() as u64,
        };
        let mut writer = SnapshotWriter::create(fs, dir, meta).unwrap();
        for (index, key) in keys.iter().enumerate() {
            writer
                .push(0, key.as_bytes(), b"value", index as u64 + 1, 0)
                .unwrap();
        }
        writer.finish().unwrap()
    }

    #[test]
    fn round_trip() {
        let fs = SimFs::new(1);
        let dir = Path::new("/data");
        fs.create_dir_all(dir).unwrap();
        let path = write(&fs, dir, &["a", "b", "c"]);
        assert_eq!(path, dir.join(snapshot_file_name(9)));
        let (meta, records) = read_snapshot(&fs, &path).unwrap();
        assert_eq!((meta.last_seq, meta.revision, meta.entry_count), (9, 12, 3));
        assert_eq!(records[2].key, Bytes::from_static(b"c"));
        assert_eq!(records[2].mod_revision, 3);
    }

    /// A snapshot of several MiB read from a real file in 1 MiB pieces gives
    /// exactly what decoding the whole file gives, and a damaged one is refused.
    #[test]
    fn a_snapshot_read_in_pieces_decodes_as_the_whole_file_does() {
        let temp = tempfile::tempdir().unwrap();
        let fs = crate::storage::StdFs;
        let count = 3000;
        let meta = SnapshotMeta {
            last_seq: 5,
            revision: 7,
            entry_count: count,
        };
        let mut writer = SnapshotWriter::create(&fs, temp.path(), meta).unwrap();
        for index in 0..count {
            let key = format!("key-{index:05}");
            let value = vec![(index % 251) as u8; 1000 + index as usize % 7];
            writer
                .push(
                    (index / 1000) as u8,
                    key.as_bytes(),
                    &value,
                    index,
                    index * 3,
                )
                .unwrap();
        }
        let path = writer.finish().unwrap();
        let data = fs.read(&path).unwrap();
        assert!(data.len() > 2 << 20);
        assert_eq!(
            read_snapshot(&fs, &path).unwrap(),
            decode_snapshot(&data).unwrap()
        );
        let mut damaged = data.clone();
        damaged[2 << 20] ^= 0x04;
        std::fs::write(&path, &damaged).unwrap();
        assert!(matches!(
            read_snapshot(&fs, &path),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let fs = SimFs::new(1);
        let dir = Path::new("/data");
        fs.create_dir_all(dir).unwrap();
        let path = write(&fs, dir, &["alpha", "beta"]);
        let data = fs.read(&path).unwrap();
        for index in 0..data.len() {
            let mut damaged = data.clone();
            damaged[index] ^= 0x01;
            assert!(decode_snapshot(&damaged).is_err(), "flip at {index}");
        }
        for cut in 0..data.len() {
            assert!(decode_snapshot(&data[..cut]).is_err(), "cut at {cut}");
        }
    }

    /// Checks `data` with the stream checker, fed in pieces of `piece` bytes.
    fn stream_check(data: &[u8], piece: usize) -> Result<(SnapshotMeta, u64), SnapshotError> {
        let mut check = SnapshotStreamCheck::new();
        for chunk in data.chunks(piece.max(1)) {
            check.push(chunk)?;
        }
        check.finish()
    }

    #[test]
    fn the_stream_check_agrees_with_the_decoder_on_every_flip_and_cut() {
        let fs = SimFs::new(1);
        let dir = Path::new("/data");
        fs.create_dir_all(dir).unwrap();
        let path = write(&fs, dir, &["alpha", "beta", "gamma"]);
        let data = fs.read(&path).unwrap();
        for piece in [1, 7, 16, 4096] {
            let (meta, bytes) = stream_check(&data, piece).unwrap();
            assert_eq!(
                (meta.last_seq, meta.entry_count, bytes),
                (9, 3, data.len() as u64)
            );
        }
        for index in 0..data.len() {
            let mut damaged = data.clone();
            damaged[index] ^= 0x01;
            assert!(stream_check(&damaged, 5).is_err(), "flip at {index}");
        }
        for cut in 0..data.len() {
            assert!(stream_check(&data[..cut], 5).is_err(), "cut at {cut}");
        }
        let version_2 = version_2_file(&["a", "b"]);
        assert_eq!(stream_check(&version_2, 3).unwrap().0.entry_count, 2);
    }

    /// A snapshot file as version 2 wrote it: no database byte per entry.
    fn version_2_file(keys: &[&str]) -> Vec<u8> {
        let meta = SnapshotMeta {
            last_seq: 4,
            revision: 4,
            entry_count: keys.len() as u64,
        };
        let mut data = encode_header(&meta);
        data[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32c(&data[..40]);
        data[40..44].copy_from_slice(&crc.to_le_bytes());
        let mut body = Vec::new();
        put_u32(&mut body, 0);
        for key in keys {
            put_u32(&mut body, key.len() as u32);
            put_u32(&mut body, 1);
            put_u64(&mut body, 1);
            put_u64(&mut body, 0);
            body.extend_from_slice(key.as_bytes());
            body.push(b'v');
        }
        data.extend_from_slice(&body);
        put_u32(&mut data, crc32c(&body));
        put_u32(&mut data, 0);
        data.extend_from_slice(SNAPSHOT_END_MAGIC);
        data
    }

    #[test]
    fn a_version_2_file_reads_as_database_0() {
        let (meta, records) = decode_snapshot(&version_2_file(&["a", "b"])).unwrap();
        assert_eq!(meta.entry_count, 2);
        assert!(records.iter().all(|record| record.db == 0));
        assert_eq!(records[1].key, Bytes::from_static(b"b"));
    }

    #[test]
    fn entries_are_ordered_by_database_then_key() {
        let fs = SimFs::new(1);
        let dir = Path::new("/data");
        fs.create_dir_all(dir).unwrap();
        let meta = SnapshotMeta {
            last_seq: 9,
            revision: 9,
            entry_count: 3,
        };
        let mut writer = SnapshotWriter::create(&fs, dir, meta).unwrap();
        writer.push(0, b"z", b"1", 1, 0).unwrap();
        writer.push(3, b"a", b"2", 2, 0).unwrap();
        writer.push(15, b"a", b"3", 3, 0).unwrap();
        let path = writer.finish().unwrap();
        let (_, records) = read_snapshot(&fs, &path).unwrap();
        let dbs: Vec<u8> = records.iter().map(|record| record.db).collect();
        assert_eq!(dbs, [0, 3, 15]);
        // A database past the last one, with the checksum made to match.
        let mut data = fs.read(&path).unwrap();
        let last_entry = data.len() - FOOTER_BYTES - (1 + 4 + 4 + 8 + 8 + 1 + 1);
        data[last_entry] = DATABASES;
        let end = data.len() - FOOTER_BYTES;
        let crc = crc32c(&data[SNAPSHOT_HEADER_BYTES..end]);
        data[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        let refused = decode_snapshot(&data).unwrap_err();
        assert!(refused.to_string().contains("database"), "{refused}");
    }
}
