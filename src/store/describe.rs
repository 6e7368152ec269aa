//! One-line descriptions of log payloads for people: what `walrus dump` prints
//! per record, and how a recovery report names the records a repair lost.

use super::command::{Command, Guard, Op, decode_payload};
use crate::storage::{LostRecord, RecoveryReport};

/// Keys named per description before the rest are only counted.
const KEYS_SHOWN: usize = 8;

/// Bytes as escaped ASCII, cut at 48 bytes with an ellipsis.
pub fn printable(bytes: &[u8]) -> String {
    let shown: String = bytes
        .iter()
        .take(48)
        .flat_map(|&byte| std::ascii::escape_default(byte))
        .map(char::from)
        .collect();
    if bytes.len() > 48 {
        format!("{shown}…")
    } else {
        shown
    }
}

fn guard_text(guard: &Guard) -> String {
    match guard {
        Guard::None => String::new(),
        Guard::Absent => " if absent".into(),
        Guard::Present => " if present".into(),
        Guard::ModRevision(revision) => format!(" if revision {revision}"),
        Guard::AbsentSince(revision) => format!(" if absent since revision {revision}"),
    }
}

/// `a, b, c and 4 more`.
fn key_list<'a>(keys: impl Iterator<Item = &'a [u8]>) -> String {
    let keys: Vec<&[u8]> = keys.collect();
    let mut text = keys
        .iter()
        .take(KEYS_SHOWN)
        .map(|key| printable(key))
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > KEYS_SHOWN {
        text.push_str(&format!(" and {} more", keys.len() - KEYS_SHOWN));
    }
    text
}

/// What a log payload does, with the keys it writes and the time it was issued:
/// `PUT a (3 value bytes) @1700000000000`.
pub fn describe_payload(payload: &[u8]) -> String {
    match decode_payload(payload) {
        Ok((issued_at_ms, command)) => describe_command(issued_at_ms, command),
        Err(error) => format!("undecodable payload: {error}"),
    }
}

/// [`describe_payload`], or `None` when the payload does not decode.
pub fn try_describe_payload(payload: &[u8]) -> Option<String> {
    let (issued_at_ms, command) = decode_payload(payload).ok()?;
    Some(describe_command(issued_at_ms, command))
}

fn describe_command(issued_at_ms: u64, command: Command) -> String {
    let body = match command {
        Command::Put {
            key,
            value,
            expires_at_ms,
            guard,
        } => format!(
            "PUT {} ({} value bytes){}{}",
            printable(&key),
            value.len(),
            if expires_at_ms > 0 {
                format!(" expires {expires_at_ms}")
            } else {
                String::new()
            },
            guard_text(&guard)
        ),
        Command::Delete { key, guard } => {
            format!("DELETE {}{}", printable(&key), guard_text(&guard))
        }
        Command::Txn { guards, ops } => {
            let written = ops.iter().map(|op| match op {
                Op::Put { key, .. } | Op::Delete { key } => &key[..],
            });
            let puts = ops.iter().filter(|op| matches!(op, Op::Put { .. })).count();
            format!(
                "TXN {} guards, {puts} puts, {} deletes: {}",
                guards.len(),
                ops.len() - puts,
                key_list(written)
            )
        }
        Command::Redis(redis) => {
            let ops: Vec<String> = redis
                .ops
                .iter()
                .map(|op| {
                    let keys = op.keys();
                    if keys.is_empty() {
                        op.name().to_string()
                    } else {
                        format!(
                            "{} {}",
                            op.name(),
                            key_list(keys.into_iter().map(|k| &k[..]))
                        )
                    }
                })
                .collect();
            format!(
                "REDIS db {}, {} watched, ops: {}",
                redis.db,
                redis.guards.len(),
                ops.join("; ")
            )
        }
    };
    format!("{body} @{issued_at_ms}")
}

/// Lost records named one per log line; past it, one line counts the rest.
const LOST_LINES: usize = 1_000;

/// One line for a record a repair lost: where it was, its sequence number, and
/// what it did (`describe` turns a payload into words, `None` when it does not
/// decode).
pub fn lost_record_line(lost: &LostRecord, describe: impl Fn(&[u8]) -> Option<String>) -> String {
    let place = format!("{} offset {}", lost.file.display(), lost.offset);
    let described = lost.payload.as_deref().map(describe);
    match (lost.damaged, lost.seq, described) {
        (true, seq, Some(Some(text))) => format!(
            "{} at {place}: damaged; as it reads (unverified): {text}",
            seq.map_or("a record".to_string(), |seq| format!("record {seq}")),
        ),
        (true, Some(seq), _) => format!("record {seq} at {place}: damaged, its content unreadable"),
        (true, None, _) => format!("damaged bytes at {place}: no readable record"),
        (false, Some(seq), Some(text)) => format!(
            "record {seq} at {place}: {}",
            text.unwrap_or_else(|| "a payload that does not decode".into())
        ),
        (false, seq, _) => format!(
            "record {} at {place} (past the report's memory budget, not described)",
            seq.map_or("?".to_string(), |seq| seq.to_string())
        ),
    }
}

/// Logs every repair in `report` and each record it lost, as warnings.
pub fn warn_about_repairs(
    report: &RecoveryReport,
    log: &str,
    describe: impl Fn(&[u8]) -> Option<String>,
) {
    for repair in &report.repairs {
        tracing::warn!(repair = %repair, "recovery repaired the {log}");
    }
    for lost in report.lost.iter().take(LOST_LINES) {
        tracing::warn!(lost = %lost_record_line(lost, &describe), "recovery dropped from the {log}");
    }
    if report.lost.len() > LOST_LINES {
        tracing::warn!(
            "recovery dropped {} more records from the {log}",
            report.lost.len() - LOST_LINES
        );
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::encode_payload;

    #[test]
    fn a_transaction_names_the_keys_it_writes() {
        let ops: Vec<Op> = (0..10)
            .map(|index| Op::Delete {
                key: Bytes::from(format!("k{index}")),
            })
            .collect();
        let mut payload = Vec::new();
        encode_payload(
            &mut payload,
            5,
            &Command::Txn {
                guards: Vec::new(),
                ops,
            },
        );
        assert_eq!(
            describe_payload(&payload),
            "TXN 0 guards, 0 puts, 10 deletes: k0, k1, k2, k3, k4, k5, k6, k7 and 2 more @5"
        );
        assert!(describe_payload(b"xx").starts_with("undecodable payload"));
    }
}
