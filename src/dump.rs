//! `walrus dump DIR`: prints what is on disk — segment headers, every record with
//! its offset, snapshot headers — without locking or writing anything, so it can
//! look at the directory of a running or a broken store.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;

use crate::storage::fs::{FileSystem, StdFs};
use crate::storage::segment::{
    ScanEnd, decode_segment_header, parse_segment_file_name, scan_records,
};
use crate::storage::snapshot::{decode_snapshot, parse_snapshot_file_name};
use crate::storage::spare::SPARE_FILE_NAME;
use crate::store::describe::{describe_payload, printable};

/// Options for [`dump`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DumpOptions {
    /// Print every snapshot entry, not only the header.
    pub snapshot_entries: bool,
}

/// Writes a description of the data directory `dir` to `out`; returns how
/// many of its files are damaged (a bad header, a record that does not
/// check out, torn tails included, or a snapshot that does not decode), so
/// a script can tell a sound directory from a damaged one.
pub fn dump(dir: &Path, options: DumpOptions, out: &mut dyn Write) -> io::Result<usize> {
    let fs = StdFs;
    let mut names = fs.list(dir)?;
    names.sort();
    let mut damaged = 0;
    for name in &names {
        let path = dir.join(name);
        let sound = if let Some(first_seq) = parse_segment_file_name(name) {
            dump_segment(&fs.read(&path)?, name, first_seq, out)?
        } else if parse_snapshot_file_name(name).is_some() {
            dump_snapshot(&fs.read(&path)?, name, options, out)?
        } else {
            describe_other(name, out)?;
            true
        };
        damaged += usize::from(!sound);
    }
    if damaged > 0 {
        writeln!(out, "{damaged} damaged file(s)")?;
    }
    Ok(damaged)
}

/// A file that is neither a segment nor a snapshot.
fn describe_other(name: &str, out: &mut dyn Write) -> io::Result<()> {
    if name == SPARE_FILE_NAME {
        writeln!(
            out,
            "{name}: the next segment, made ahead of need (not part of the log yet)"
        )
    } else {
        writeln!(out, "{name}: (not a segment or snapshot)")
    }
}

/// Describes one segment; returns whether it is sound.
fn dump_segment(data: &[u8], name: &str, name_seq: u64, out: &mut dyn Write) -> io::Result<bool> {
    let first_seq = match decode_segment_header(data) {
        Ok(first_seq) => first_seq,
        Err(error) => {
            writeln!(
                out,
                "segment {name}: {} bytes, bad header: {error:?}",
                data.len()
            )?;
            return Ok(false);
        }
    };
    writeln!(
        out,
        "segment {name}: {} bytes, first sequence {first_seq}{}",
        data.len(),
        if first_seq == name_seq {
            ""
        } else {
            " (does not match the file name!)"
        }
    )?;
    let mut lines = String::new();
    let end = scan_records(data, first_seq, |record, offset| {
        let _ = writeln!(
            lines,
            "  @{offset:<10} seq {:<10} {:>6} bytes{} {}",
            record.seq,
            record.encoded_len,
            if record.synced_before { " S" } else { "  " },
            describe_payload(record.payload)
        );
    });
    out.write_all(lines.as_bytes())?;
    match end {
        ScanEnd::Clean { offset } => {
            writeln!(out, "  end of records at offset {offset}")?;
            Ok(first_seq == name_seq)
        }
        ScanEnd::Damaged {
            offset,
            error,
            synced_after,
        } => {
            writeln!(
                out,
                "  DAMAGE at offset {offset}: {}{}",
                error.describe(),
                if synced_after {
                    " (synced records follow: not a torn write)"
                } else {
                    " (no synced record after it: a torn write, if this is the last segment)"
                }
            )?;
            Ok(false)
        }
    }
}

fn dump_snapshot(
    data: &[u8],
    name: &str,
    options: DumpOptions,
    out: &mut dyn Write,
) -> io::Result<bool> {
    match decode_snapshot(data) {
        Ok((meta, records)) => {
            writeln!(
                out,
                "snapshot {name}: {} bytes, through sequence {}, revision {}, {} keys",
                data.len(),
                meta.last_seq,
                meta.revision,
                meta.entry_count
            )?;
            if options.snapshot_entries {
                for record in records {
                    // Database 0 (the HTTP API's) is named only by the key.
                    let db = match record.db {
                        0 => String::new(),
                        db => format!("db{db} "),
                    };
                    writeln!(
                        out,
                        "  {db}{} = {} bytes, revision {}",
                        printable(&record.key),
                        record.value.len(),
                        record.mod_revision
                    )?;
                }
            }
            Ok(true)
        }
        Err(error) => {
            writeln!(
                out,
                "snapshot {name}: {} bytes, DAMAGED at offset {}: {error}",
                data.len(),
                error.offset()
            )?;
            Ok(false)
        }
    }
}
