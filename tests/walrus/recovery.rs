//! Recovery from damaged logs: every cut offset, every flipped byte, the tail
//! cases the storage contract names, and the data directory checks.

use walrus::storage::segment::SEGMENT_HEADER_BYTES;
use walrus::storage::{FileSystem, RecoveryMode};
use walrus::testing::SimFs;
use walrus::{Error, KvStore};

use crate::common::{contents, data_dir, file_name, only_segment, open, single_segment_options};

const RECORDS: usize = 12;

fn key(index: usize) -> Vec<u8> {
    format!("key-{index:02}").into_bytes()
}

fn value(index: usize) -> Vec<u8> {
    format!("value-{index}-{}", "v".repeat(index)).into_bytes()
}

/// A log of RECORDS sets, one sync each, closed cleanly. Returns the disk and
/// the end offset of each record in the segment.
fn written_log() -> (SimFs, Vec<u64>) {
    let fs = SimFs::new(1);
    let store = open(&fs, single_segment_options(RecoveryMode::TolerateTornTail)).expect("open");
    for index in 0..RECORDS {
        store.set(&key(index), &value(index)).expect("set");
    }
    store.close().expect("close");
    let data = fs.read(&only_segment(&fs)).expect("read");
    let mut ends = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    while let Ok(record) = walrus::storage::record::decode_record(&data[offset..]) {
        offset += record.encoded_len;
        ends.push(offset as u64);
    }
    assert_eq!(ends.len(), RECORDS);
    (fs, ends)
}

fn prefix(count: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..count).map(|index| (key(index), value(index))).collect()
}

#[test]
fn a_cut_at_every_offset_keeps_exactly_a_prefix() {
    let (pristine, ends) = written_log();
    let segment = only_segment(&pristine);
    let length = pristine.read(&segment).expect("read").len() as u64;
    for cut in 0..=length {
        let fs = SimFs::new(2);
        fs.create_dir_all(&data_dir()).expect("dir");
        fs.put_file(
            &segment,
            &pristine.read(&segment).expect("read")[..cut as usize],
        )
        .expect("copy");
        let opened = open(&fs, single_segment_options(RecoveryMode::TolerateTornTail));
        // A segment is named only once its header is synced: a cut inside
        // the header is damage, refused (`--repair` sets the file aside).
        if cut < SEGMENT_HEADER_BYTES as u64 {
            assert!(
                matches!(opened, Err(Error::Corrupt { .. })),
                "cut at {cut} inside the header was not refused"
            );
            continue;
        }
        let store = opened.unwrap_or_else(|err| panic!("cut at {cut}: {err}"));
        let survivors = ends.iter().filter(|&&end| end <= cut).count();
        assert_eq!(contents(&store), prefix(survivors), "cut at {cut}");
        let torn = cut > SEGMENT_HEADER_BYTES as u64 && !ends.contains(&cut) && cut != length;
        assert_eq!(
            !store.recovery_report().repairs.is_empty(),
            torn,
            "cut at {cut}: {:?}",
            store.recovery_report().repairs
        );
        // The repaired log takes new writes and recovers them again.
        store.set(b"after", b"cut").expect("write after repair");
        drop(store);
        let store = open(&fs, single_segment_options(RecoveryMode::Strict))
            .unwrap_or_else(|err| panic!("second open after cut at {cut}: {err}"));
        assert_eq!(
            store.get(b"after").as_deref(),
            Some(&b"cut"[..]),
            "cut at {cut}"
        );
    }
}

#[test]
fn a_flipped_byte_is_detected_and_never_applied() {
    let (pristine, ends) = written_log();
    let segment = only_segment(&pristine);
    let original = pristine.read(&segment).expect("read");
    let last_start = ends[RECORDS - 2] as usize;
    for offset in 0..original.len() {
        let mut damaged = original.clone();
        damaged[offset] ^= 0x10;
        let damaged_disk = || {
            let fs = SimFs::new(3);
            fs.create_dir_all(&data_dir()).expect("dir");
            fs.put_file(&segment, &damaged).expect("copy");
            fs
        };
        let fs = damaged_disk();
        let damaged_record = ends.iter().position(|&end| offset < end as usize);
        let in_version_field = (8..12).contains(&offset);
        match open(&fs, single_segment_options(RecoveryMode::TolerateTornTail)) {
            Err(Error::UnsupportedVersion { .. }) if in_version_field => continue,
            Ok(store) => {
                // Only damage to the last record is a tolerable (torn) tail.
                assert!(offset >= last_start, "flip at {offset} was accepted");
                assert_eq!(contents(&store), prefix(RECORDS - 1), "flip at {offset}");
            }
            Err(Error::Corrupt {
                path, offset: at, ..
            }) => {
                assert!(offset < last_start, "flip at {offset} refused: tail damage");
                assert_eq!(file_name(&path), file_name(&segment));
                if let Some(record) = damaged_record.filter(|_| offset >= SEGMENT_HEADER_BYTES) {
                    let start = if record == 0 {
                        SEGMENT_HEADER_BYTES as u64
                    } else {
                        ends[record - 1]
                    };
                    assert_eq!(at, start, "error names the damaged record's offset");
                }
            }
            Err(other) => panic!("flip at {offset}: unexpected error {other}"),
        }
        // Repair keeps exactly the records before the damaged one.
        let store = open(
            &damaged_disk(),
            single_segment_options(RecoveryMode::Repair),
        )
        .unwrap_or_else(|err| panic!("repair after flip at {offset}: {err}"));
        let kept = if offset < SEGMENT_HEADER_BYTES {
            0
        } else {
            damaged_record.unwrap_or(RECORDS)
        };
        assert_eq!(
            contents(&store),
            prefix(kept),
            "repair after flip at {offset}"
        );
        if offset >= SEGMENT_HEADER_BYTES {
            assert!(
                !store.recovery_report().repairs.is_empty(),
                "flip at {offset}"
            );
        }
    }
}

#[test]
fn tail_damage_is_cut_with_a_warning_naming_file_and_offset() {
    let (pristine, ends) = written_log();
    let segment = only_segment(&pristine);
    let original = pristine.read(&segment).expect("read");
    let end = *ends.last().expect("records") as usize;
    let tails: Vec<(&str, Vec<u8>)> = vec![
        (
            "zero-filled tail",
            [&original[..], &[0u8; 500][..]].concat(),
        ),
        (
            "garbage after the last record",
            [&original[..], &b"\x07garbage"[..]].concat(),
        ),
        ("partial record", {
            let mut data = original.clone();
            data.extend_from_slice(&original[ends[0] as usize..ends[1] as usize - 3]);
            data
        }),
        ("checksum mismatch in the last record", {
            let mut data = original.clone();
            data[end - 1] ^= 0xff;
            data
        }),
    ];
    for (name, data) in tails {
        let fs = SimFs::new(4);
        fs.create_dir_all(&data_dir()).expect("dir");
        fs.put_file(&segment, &data).expect("copy");
        let store = open(&fs, single_segment_options(RecoveryMode::TolerateTornTail))
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        let survivors = if name.starts_with("checksum") {
            RECORDS - 1
        } else {
            RECORDS
        };
        assert_eq!(contents(&store), prefix(survivors), "{name}");
        let repairs = &store.recovery_report().repairs;
        if name == "zero-filled tail" {
            assert!(repairs.is_empty(), "zeros are unused space, not damage");
        } else {
            assert_eq!(repairs.len(), 1, "{name}: {repairs:?}");
            assert!(
                repairs[0].contains(&file_name(&segment)),
                "{name}: {repairs:?}"
            );
            assert!(repairs[0].contains("offset"), "{name}: {repairs:?}");
        }
        drop(store);
        if name != "zero-filled tail" {
            // Strict recovery refuses the same tail (on a fresh copy).
            let fs = SimFs::new(5);
            fs.create_dir_all(&data_dir()).expect("dir");
            fs.put_file(&segment, &data).expect("copy");
            assert!(matches!(
                open(&fs, single_segment_options(RecoveryMode::Strict)),
                Err(Error::Corrupt { .. })
            ));
        }
    }
}

#[test]
fn the_directory_is_locked_and_checked() {
    let fs = SimFs::new(6);
    let first = open(&fs, single_segment_options(RecoveryMode::TolerateTornTail)).expect("open");
    assert!(matches!(
        open(&fs, single_segment_options(RecoveryMode::TolerateTornTail)),
        Err(Error::Locked { .. })
    ));
    drop(first);
    open(&fs, single_segment_options(RecoveryMode::TolerateTornTail)).expect("lock released");

    let foreign = SimFs::new(7);
    foreign.create_dir_all(&data_dir()).expect("dir");
    foreign
        .put_file(&data_dir().join("notes.txt"), b"mine")
        .expect("file");
    let error = open(
        &foreign,
        single_segment_options(RecoveryMode::TolerateTornTail),
    )
    .err()
    .expect("foreign directory refused");
    assert!(matches!(error, Error::ForeignDirectory { .. }), "{error}");
    assert!(error.to_string().contains("notes.txt"));
    assert_eq!(
        foreign.list(&data_dir()).expect("list"),
        vec!["notes.txt"],
        "nothing written"
    );
}

#[test]
fn a_newer_format_is_refused_by_name() {
    let (fs, _) = written_log();
    let segment = only_segment(&fs);
    fs.corrupt(&segment, 8, &99u32.to_le_bytes()).expect("edit");
    match open(&fs, single_segment_options(RecoveryMode::Repair)) {
        Err(Error::UnsupportedVersion {
            path, found: 99, ..
        }) => assert_eq!(path, segment),
        other => panic!("expected UnsupportedVersion, got {:?}", other.err()),
    }
}

#[test]
fn snapshots_compact_the_log_and_recovery_starts_from_them() {
    let fs = SimFs::new(8);
    let options = crate::common::small_options();
    let store = open(&fs, options.clone()).expect("open");
    for round in 0..30 {
        for index in 0..20 {
            store
                .set(
                    format!("key-{index}").as_bytes(),
                    format!("{round}-{index}").as_bytes(),
                )
                .expect("set");
        }
    }
    let info = store.snapshot().expect("snapshot on demand");
    assert_eq!(info.entries, 20);
    let revision = store.revision();
    store.close().expect("close");
    let names = fs.list(&data_dir()).expect("list");
    let snapshots = names.iter().filter(|name| name.ends_with(".snap")).count();
    let segments = names.iter().filter(|name| name.ends_with(".wal")).count();
    assert_eq!(snapshots, 1, "older snapshots are deleted: {names:?}");
    assert!(segments <= 2, "covered segments are deleted: {names:?}");

    let store = open(&fs, options).expect("reopen");
    assert_eq!(store.recovery_report().snapshot_seq, Some(info.seq));
    assert!(store.recovery_report().records_replayed <= 1);
    assert_eq!(store.revision(), revision);
    for index in 0..20 {
        let expected = format!("29-{index}");
        assert_eq!(
            store.get(format!("key-{index}").as_bytes()).as_deref(),
            Some(expected.as_bytes())
        );
    }
}

#[test]
fn repair_names_every_lost_record_and_keeps_the_cut_bytes() {
    let (fs, ends) = written_log();
    let segment = only_segment(&fs);
    let original = fs.read(&segment).expect("read");
    // A flipped byte inside record 2 (of RECORDS), whose value is at its end.
    let damaged_at = ends[0];
    let flipped = !original[(ends[1] - 2) as usize];
    fs.corrupt(&segment, ends[1] - 2, &[flipped]).expect("flip");

    let store = open(&fs, single_segment_options(RecoveryMode::Repair)).expect("repair");
    assert_eq!(contents(&store), prefix(1));
    let report = store.recovery_report().clone();
    drop(store);

    let lost = &report.lost;
    assert_eq!(lost.len(), RECORDS - 1, "{lost:?}");
    assert!(lost[0].damaged);
    assert_eq!(
        lost[0].seq,
        Some(2),
        "the damaged record is numbered by its neighbours"
    );
    assert_eq!(lost[0].offset, damaged_at);
    let damaged_line = walrus::store::describe::lost_record_line(
        &lost[0],
        walrus::store::describe::try_describe_payload,
    );
    assert!(
        damaged_line.contains("damaged") && damaged_line.contains("key-01"),
        "the damaged record's key as it reads: {damaged_line}"
    );
    for (index, record) in lost.iter().enumerate().skip(1) {
        assert!(!record.damaged);
        // lost[index] is record index + 2, which set key(index + 1).
        assert_eq!(record.seq, Some(index as u64 + 2));
        assert_eq!(record.offset, ends[index]);
        let line = walrus::store::describe::lost_record_line(
            record,
            walrus::store::describe::try_describe_payload,
        );
        assert!(
            line.contains(&format!("PUT key-{:02}", index + 1)),
            "{line}"
        );
        assert!(line.contains(&file_name(&segment)), "{line}");
    }
    assert_eq!(report.repairs.len(), 1, "{:?}", report.repairs);
    let repair = &report.repairs[0];
    assert!(
        repair.contains(&format!("offset {damaged_at}"))
            && repair.contains(&format!("{} records numbered 2 to {RECORDS}", RECORDS - 1)),
        "{repair}"
    );

    // The cut bytes are kept beside the segment, exactly as they were.
    assert_eq!(report.broken_files.len(), 1);
    let broken = &report.broken_files[0];
    assert_eq!(file_name(broken), format!("{}.broken", file_name(&segment)));
    assert!(repair.contains(&file_name(broken)), "{repair}");
    let mut expected = original[damaged_at as usize..].to_vec();
    expected[(ends[1] - 2 - damaged_at) as usize] = flipped;
    assert_eq!(fs.read(broken).expect("broken file"), expected);

    // The directory, .broken file and all, opens again normally; a second
    // repair of new damage does not overwrite the first file.
    let store = open(&fs, single_segment_options(RecoveryMode::TolerateTornTail)).expect("reopen");
    assert_eq!(contents(&store), prefix(1));
    store.set(b"after", b"repair").expect("write after repair");
    store.set(b"and", b"more").expect("write after repair");
    store.close().expect("close");
    let now = fs.read(&segment).expect("read");
    let second_record = decode_at(&now, damaged_at as usize);
    // Inverting the byte always damages the record; writing a fixed one would
    // not when it lands on that value (here the issue time's second byte).
    let flipped = !now[damaged_at as usize + 17];
    fs.corrupt(&segment, damaged_at + 17, &[flipped])
        .expect("flip");
    let store = open(&fs, single_segment_options(RecoveryMode::Repair)).expect("repair again");
    let report = store.recovery_report();
    assert_eq!(
        report.broken_files,
        vec![data_dir().join(format!("{}.broken.1", file_name(&segment)))]
    );
    assert_eq!(report.lost.len(), 2, "{:?}", report.lost);
    assert_eq!(report.lost[1].seq, Some(second_record + 1));
}

fn decode_at(data: &[u8], offset: usize) -> u64 {
    walrus::storage::record::decode_record(&data[offset..])
        .expect("a record")
        .seq
}

/// A store closed after 60 writes of 200 bytes over small segments, with no
/// automatic snapshot: its disk, its options and its segments' names in order.
fn sixty_writes_over_small_segments(
    seed: u64,
) -> (SimFs, walrus::store::StoreOptions, Vec<String>) {
    let fs = SimFs::new(seed);
    let mut options = crate::common::small_options();
    options.snapshots.automatic = false;
    let store = open(&fs, options.clone()).expect("open");
    for index in 0..60 {
        store
            .set(format!("k{index:03}").as_bytes(), &[b'v'; 200])
            .expect("set");
    }
    store.close().expect("close");
    let mut segments: Vec<String> = fs
        .list(&data_dir())
        .expect("list")
        .into_iter()
        .filter(|name| name.ends_with(".wal"))
        .collect();
    segments.sort();
    (fs, options, segments)
}

#[test]
fn repair_keeps_dropped_segments_as_broken_files_and_names_their_records() {
    let (fs, mut options, segments) = sixty_writes_over_small_segments(9);
    assert!(segments.len() >= 3, "{segments:?}");
    // Damage the first record of the second segment.
    let second = data_dir().join(&segments[1]);
    fs.corrupt(&second, SEGMENT_HEADER_BYTES as u64 + 20, b"\xff\xff")
        .expect("flip");

    options.wal.recovery_mode = RecoveryMode::Repair;
    let store = open(&fs, options).expect("repair");
    let report = store.recovery_report().clone();
    let kept = contents(&store).len();
    drop(store);
    let later: Vec<&String> = segments[2..].iter().collect();
    for name in &later {
        let broken = data_dir().join(format!("{name}.broken"));
        assert!(
            report.broken_files.contains(&broken),
            "{:?}",
            report.broken_files
        );
        assert!(fs.read(&broken).is_ok(), "{name} kept as .broken");
        assert!(
            fs.read(&data_dir().join(name)).is_err(),
            "{name} out of the log"
        );
    }
    // Every record after the last kept one is named, damaged one first.
    let seqs: Vec<Option<u64>> = report.lost.iter().map(|lost| lost.seq).collect();
    let expected: Vec<Option<u64>> = (kept as u64 + 1..=60).map(Some).collect();
    assert_eq!(seqs, expected, "{:?}", report.repairs);
    assert!(report.lost[0].damaged);
    assert!(
        report.lost[1..]
            .iter()
            .all(|lost| !lost.damaged && lost.payload.is_some())
    );
}

/// A segment is named only once its header is synced, so a last segment cut
/// to nothing (or to less than a header) was damaged and may have held
/// acknowledged writes: recovery refuses it, and `--repair` keeps it as a
/// `.broken` file, never deleting it as a half-made segment.
#[test]
fn an_emptied_last_segment_is_refused_and_repair_keeps_it() {
    for kept_bytes in [0, SEGMENT_HEADER_BYTES - 1] {
        let (fs, mut options, segments) = sixty_writes_over_small_segments(10);
        assert!(segments.len() >= 2, "{segments:?}");
        let last = data_dir().join(segments.last().expect("a segment"));
        let data = fs.read(&last).expect("read");
        fs.remove(&last).expect("remove");
        fs.put_file(&last, &data[..kept_bytes]).expect("cut");

        options.wal.recovery_mode = RecoveryMode::TolerateTornTail;
        let refused = open(&fs, options.clone()).map(|_| ()).expect_err("refused");
        assert!(
            matches!(&refused, Error::Corrupt { path, .. } if *path == last),
            "{kept_bytes} bytes: {refused}"
        );
        assert!(fs.read(&last).is_ok(), "left in place when refused");

        options.wal.recovery_mode = RecoveryMode::Repair;
        let store = open(&fs, options).expect("repair");
        let report = store.recovery_report().clone();
        drop(store);
        let broken = data_dir().join(format!("{}.broken", file_name(&last)));
        assert!(report.broken_files.contains(&broken), "{report:?}");
        assert_eq!(fs.read(&broken).expect("kept"), data[..kept_bytes].to_vec());
    }
}
