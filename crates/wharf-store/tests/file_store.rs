//! Behaviour of the file store through its public API, with the files poked directly where a
//! test needs a crash or damage.

mod common;

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use wharf_store::file::{FileStore, FileStoreOptions, SyncHook};
use wharf_store::{FsyncMode, RecordId, Store, StoreError};

const HEADER: u64 = 16;
/// `[length][crc][tag]` before each record.
const FRAME: u64 = 12;

#[test]
fn round_trip_through_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    {
        let store = open(tmp.path(), 8 << 20);
        let (log, seen, report) = recover(&store, 1);
        assert!(seen.is_empty());
        assert_eq!(report, Default::default());
        for i in 0..100 {
            let (id, durable) = log.append(&record(i, 1 + i * 3)).unwrap();
            durable.wait_blocking().unwrap();
            ids.push(id);
        }
        assert_eq!(log.read(ids[42]).unwrap(), record(42, 1 + 42 * 3));
        assert_eq!(ids[0], RecordId { segment: 0, offset: HEADER as u32 });
    }
    let store = open(tmp.path(), 8 << 20);
    let (log, seen, report) = recover(&store, 1);
    assert_eq!(report.live_records, 100);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(report.damage, None);
    let expected: Vec<_> = (0..100).map(|i| (ids[i], record(i, 1 + i * 3))).collect();
    assert_eq!(seen, expected);
    // Appends continue in the same segment after the last record.
    let (next, _) = log.append(b"after").unwrap();
    assert_eq!(next.segment, 0);
    assert!(next.offset > ids[99].offset);
    assert_eq!(log.read(ids[7]).unwrap(), record(7, 22));
}

#[test]
fn settled_never_returns_after_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let mut kept = Vec::new();
    {
        let store = open(tmp.path(), 8 << 20);
        let (log, _, _) = recover(&store, 3);
        for i in 0..50 {
            let (id, _) = log.append(&record(i, 10)).unwrap();
            if i % 3 == 0 {
                log.settle(id).unwrap().wait_blocking().unwrap();
                assert!(matches!(log.read(id), Err(StoreError::NoSuchRecord(_))));
                assert!(matches!(log.settle(id), Err(StoreError::NoSuchRecord(_))));
            } else {
                kept.push((id, record(i, 10)));
            }
        }
        store.flush().unwrap();
        assert_eq!(store.stats().records_settled, 17);
    }
    for _ in 0..2 {
        let store = open(tmp.path(), 8 << 20);
        let (log, seen, _) = recover(&store, 3);
        assert_eq!(seen, kept);
        assert_eq!(log.stats().live_records, kept.len() as u64);
    }
}

#[test]
fn errors_for_bad_calls() {
    let tmp = tempfile::tempdir().unwrap();
    let options = FileStoreOptions { max_record_size: 100, ..FileStoreOptions::default() };
    let store = FileStore::open(tmp.path(), options).unwrap();
    let (log, _, _) = recover(&store, 1);
    assert!(matches!(log.append(&[0; 101]), Err(StoreError::RecordTooLarge { size: 101, limit: 100 })));
    assert!(log.append(&[]).is_err(), "zero-length records are refused");
    let (id, _) = log.append(&[1; 100]).unwrap();
    let bogus = RecordId { segment: id.segment, offset: id.offset + 1 };
    assert!(matches!(log.read(bogus), Err(StoreError::NoSuchRecord(_))));
    assert!(matches!(log.settle(bogus), Err(StoreError::NoSuchRecord(_))));
    let other = RecordId { segment: 9, offset: id.offset };
    assert!(matches!(log.settle(other), Err(StoreError::NoSuchRecord(_))));
    // Bad options.
    let bad = FileStoreOptions { segment_size: 4, ..FileStoreOptions::default() };
    assert!(FileStore::open(&tmp.path().join("x"), bad).is_err());
}

#[test]
fn rotation_and_deletion_of_settled_segments() {
    let tmp = tempfile::tempdir().unwrap();
    // 100-byte records are 112-byte frames: 4 per 512-byte segment (16 + 4*112 = 464).
    let store = open(tmp.path(), 512);
    let (log, _, _) = recover(&store, 1);
    let ids: Vec<RecordId> = (0..20).map(|i| log.append(&record(i, 100)).unwrap().0).collect();
    assert_eq!(files(tmp.path(), 1, "seg").len(), 5);
    assert_eq!(files(tmp.path(), 1, "ack").len(), 5);
    assert_eq!(ids[4], RecordId { segment: 1, offset: HEADER as u32 });
    // A record larger than the segment size goes alone in its own segment.
    let (big, _) = log.append(&[9; 1000]).unwrap();
    assert_eq!(big, RecordId { segment: 5, offset: HEADER as u32 });
    let (after_big, _) = log.append(b"x").unwrap();
    assert_eq!(after_big.segment, 6);
    assert_eq!(log.read(big).unwrap(), vec![9; 1000]);

    // Settle everything in segments 0 and 2: their files go; segment 1 stays.
    for id in ids.iter().filter(|id| id.segment == 0 || id.segment == 2) {
        log.settle(*id).unwrap();
    }
    assert!(!seg_path(tmp.path(), 1, 0).exists());
    assert!(!ack_path(tmp.path(), 1, 0).exists());
    assert!(!seg_path(tmp.path(), 1, 2).exists());
    assert!(seg_path(tmp.path(), 1, 1).exists());
    assert_eq!(store.stats().segments_deleted, 2);
    // The newest segment is never deleted, even when fully settled.
    log.settle(after_big).unwrap();
    assert!(seg_path(tmp.path(), 1, 6).exists());
    let stats = log.stats();
    assert_eq!(stats.segments, 5);
    assert_eq!(stats.live_records, 12 + 1);
    let on_disk: u64 = ["seg", "ack"]
        .iter()
        .flat_map(|e| files(tmp.path(), 1, e))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(stats.bytes_on_disk, on_disk);
    assert_eq!(store.stats().bytes_on_disk, on_disk);
    drop(log);
    drop(store);

    let store = open(tmp.path(), 512);
    let (_, seen, report) = recover(&store, 1);
    assert_eq!(report.live_records, 13);
    let mut expected: Vec<RecordId> =
        ids.iter().copied().filter(|id| ![0, 2].contains(&id.segment)).collect();
    expected.push(big);
    assert_eq!(seen.iter().map(|(id, _)| *id).collect::<Vec<_>>(), expected);
}

#[test]
fn stragglers_moved_forward_free_their_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path(), 16 + 20 * 112);
    let (log, _, _) = recover(&store, 1);
    let ids: Vec<RecordId> = (0..60).map(|i| log.append(&record(i, 100)).unwrap().0).collect();
    assert_eq!(ids[59].segment, 2);
    assert!(log.stragglers().is_empty(), "nothing is mostly settled yet");
    // Settle all but 2 of segment 0 and all but 1 of segment 1.
    for (i, id) in ids.iter().enumerate() {
        if id.segment < 2 && ![3, 11, 27].contains(&i) {
            log.settle(*id).unwrap();
        }
    }
    let stragglers = log.stragglers();
    assert_eq!(stragglers, vec![ids[3], ids[11], ids[27]]);
    for id in stragglers {
        let body = log.read(id).unwrap();
        let (moved, _) = log.append(&body).unwrap();
        assert_eq!(moved.segment, 3, "segment 2 is full");
        log.settle(id).unwrap();
    }
    assert!(log.stragglers().is_empty());
    assert!(!seg_path(tmp.path(), 1, 0).exists());
    assert!(!seg_path(tmp.path(), 1, 1).exists());
    assert_eq!(store.stats().segments_deleted, 2);
    assert_eq!(log.stats().segments, 2);
}

#[test]
fn cut_newest_segment_at_every_byte_of_its_last_record() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let bodies: Vec<Vec<u8>> = (0..5).map(|i| record(i, 13)).collect();
    {
        let store = open(&base, 8 << 20);
        let (log, _, _) = recover(&store, 1);
        for b in &bodies {
            log.append(b).unwrap();
        }
    }
    let full = std::fs::read(seg_path(&base, 1, 0)).unwrap();
    let last_start = full.len() - (FRAME as usize + 13);
    for cut in last_start..full.len() {
        let dir = tmp.path().join(format!("cut{cut}"));
        std::fs::create_dir_all(queue_dir(&dir, 1)).unwrap();
        std::fs::write(seg_path(&dir, 1, 0), &full[..cut]).unwrap();
        let store = open(&dir, 8 << 20);
        let (log, seen, report) = recover(&store, 1);
        assert_eq!(report.damage, None, "cut at {cut}");
        // Counted once a whole frame header with the segment's tag is there.
        let torn = if cut - last_start >= FRAME as usize { cut - last_start } else { 0 };
        assert_eq!(report.truncated_bytes, torn as u64, "cut at {cut}");
        let got: Vec<Vec<u8>> = seen.into_iter().map(|(_, b)| b).collect();
        assert_eq!(got, bodies[..4], "cut at {cut}");
        // The torn bytes stay, as room: the new record lands where the torn one was.
        assert_eq!(std::fs::metadata(seg_path(&dir, 1, 0)).unwrap().len(), cut as u64);
        let (id, durable) = log.append(b"again").unwrap();
        durable.wait_blocking().unwrap();
        assert_eq!(id, RecordId { segment: 0, offset: last_start as u32 });
        drop(log);
        drop(store);
        // What is left of the torn record behind the new one is no record, and no damage.
        let store = open(&dir, 8 << 20);
        let (_, seen, report) = recover(&store, 1);
        assert_eq!(report.damage, None, "cut at {cut}");
        let got: Vec<Vec<u8>> = seen.into_iter().map(|(_, b)| b).collect();
        assert_eq!(got[..4], bodies[..4], "cut at {cut}");
        assert_eq!(got[4..], [b"again".to_vec()], "cut at {cut}");
    }
}

fn flip(path: &Path, at: u64) {
    let file = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    file.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x40;
    file.write_all_at(&b, at).unwrap();
}

/// A segment size that holds three 20-byte records (32-byte frames at 16, 48 and 80).
const THREE_RECORDS: u64 = 16 + 3 * 32;

/// `n` 20-byte records in segments of [`THREE_RECORDS`].
fn twenty_byte_records(dir: &Path, n: usize) -> Vec<RecordId> {
    let store = open(dir, THREE_RECORDS);
    let (log, _, _) = recover(&store, 1);
    (0..n).map(|i| log.append(&record(i, 20)).unwrap().0).collect()
}

/// Three 20-byte records in segment 0 (frames of 32 bytes at 16, 48, 80).
fn three_records(dir: &Path) -> Vec<RecordId> {
    let store = open(dir, 8 << 20);
    let (log, _, _) = recover(&store, 1);
    (0..3).map(|i| log.append(&record(i, 20)).unwrap().0).collect()
}

#[test]
fn flipped_byte_in_a_middle_record_is_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = three_records(tmp.path());
    let path = seg_path(tmp.path(), 1, 0);
    flip(&path, 48 + FRAME + 5);
    let before = std::fs::read(&path).unwrap();
    let store = open(tmp.path(), 8 << 20);
    let (log, seen, report) = recover(&store, 1);
    assert_eq!(seen, vec![(ids[0], record(0, 20))]);
    let damage = report.damage.expect("damage reported");
    assert!(damage.contains("CRC"), "{damage}");
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(std::fs::read(&path).unwrap(), before, "damaged files are left alone");
    // New appends go to a new segment, never after the damage.
    let (id, _) = log.append(b"new").unwrap();
    assert_eq!(id.segment, 1);
    drop(log);
    drop(store);
    let store = open(tmp.path(), 8 << 20);
    let (_, seen, report) = recover(&store, 1);
    assert!(report.damage.is_some());
    assert_eq!(seen, vec![(ids[0], record(0, 20)), (id, b"new".to_vec())]);
}

#[test]
fn impossible_length_in_the_middle_is_damage() {
    let tmp = tempfile::tempdir().unwrap();
    three_records(tmp.path());
    let path = seg_path(tmp.path(), 1, 0);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&0u32.to_le_bytes(), 48).unwrap();
    let store = open(tmp.path(), 8 << 20);
    let (_, seen, report) = recover(&store, 1);
    assert_eq!(seen.len(), 1);
    assert!(report.damage.unwrap().contains("impossible record length 0"));
}

/// Rule: a final frame that fails its CRC, with no record of its segment after it, is a torn
/// write (its last pages did not all reach the disk): not damage; the next append overwrites it.
#[test]
fn flipped_byte_in_the_last_record_payload_is_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = three_records(tmp.path());
    let path = seg_path(tmp.path(), 1, 0);
    flip(&path, 80 + FRAME + 19);
    let store = open(tmp.path(), 8 << 20);
    let (log, seen, report) = recover(&store, 1);
    assert_eq!(report.damage, None);
    assert_eq!(report.truncated_bytes, 32);
    assert_eq!(seen.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids[..2]);
    assert_eq!(log.append(b"next").unwrap().0, ids[2]);
}

#[test]
fn zero_filled_tail_of_a_segment_is_room_to_append() {
    let tmp = tempfile::tempdir().unwrap();
    three_records(tmp.path());
    let path = seg_path(tmp.path(), 1, 0);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(112 + 4096).unwrap();
    {
        let store = open(tmp.path(), 8 << 20);
        let (log, seen, report) = recover(&store, 1);
        assert_eq!(report.damage, None);
        assert_eq!(seen.len(), 3);
        assert_eq!(report.truncated_bytes, 0);
        // The next record goes right after the last one, into the zeros.
        let (id, durable) = log.append(b"fourth").unwrap();
        durable.wait_blocking().unwrap();
        assert_eq!(id, RecordId { segment: 0, offset: 112 });
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 112 + 4096);
    let store = open(tmp.path(), 8 << 20);
    let (_, seen, report) = recover(&store, 1);
    assert_eq!((seen.len(), report.truncated_bytes, report.damage), (4, 0, None));
    assert_eq!(seen[3].1, b"fourth");
}

#[test]
fn preallocated_segments_come_from_spares_and_recover() {
    let tmp = tempfile::tempdir().unwrap();
    // 90-byte records are 102-byte frames: 9 per 1024-byte segment.
    let mut live = Vec::new();
    {
        let store = open_preallocated(tmp.path(), 1024);
        let (log, _, _) = recover(&store, 1);
        for i in 0..40 {
            if i % 9 == 0 {
                // Each rotation takes the spare the previous one asked for.
                store.wait_for_spares();
            }
            let (id, durable) = log.append(&record(i, 90)).unwrap();
            durable.wait_blocking().unwrap();
            live.push((id, record(i, 90)));
        }
        store.wait_for_spares();
        // Segments 0 and 1 were made the ordinary way (a queue gets a spare once it has filled a
        // segment); the later ones are spares, full size from the start, with zero-filled acks.
        for n in 0..2 {
            assert_eq!(std::fs::metadata(seg_path(tmp.path(), 1, n)).unwrap().len(), 16 + 9 * 102);
        }
        for n in 2..5 {
            assert_eq!(std::fs::metadata(seg_path(tmp.path(), 1, n)).unwrap().len(), 1024, "segment {n}");
            assert_eq!(std::fs::metadata(ack_path(tmp.path(), 1, n)).unwrap().len(), 1024 / 16);
        }
        assert!(queue_dir(tmp.path(), 1).join("spare.seg").exists());
        // Settle some records in a preallocated segment.
        for (id, _) in live.iter().filter(|(id, _)| id.segment == 2).take(4) {
            log.settle(*id).unwrap().wait_blocking().unwrap();
        }
        live.retain(|(id, _)| !(id.segment == 2 && id.offset < 16 + 4 * 102));
    }
    {
        let store = open_preallocated(tmp.path(), 1024);
        let (log, seen, report) = recover(&store, 1);
        assert_eq!(seen, live);
        assert_eq!((report.truncated_bytes, report.damage), (0, None));
        assert!(!queue_dir(tmp.path(), 1).join("spare.seg").exists(), "a leftover spare is removed");
        // Appends go on after the last record of the newest (preallocated) segment.
        let (id, _) = log.append(&record(99, 10)).unwrap();
        assert_eq!(id, RecordId { segment: 4, offset: 16 + 4 * 102 });
        // And the next settle of segment 2 lands after the four earlier acks.
        log.settle(live.iter().find(|(id, _)| id.segment == 2).unwrap().0).unwrap();
        live.retain(|(id, _)| !(id.segment == 2 && id.offset == 16 + 4 * 102));
        live.push((id, record(99, 10)));
        store.flush().unwrap();
    }
    let store = open_preallocated(tmp.path(), 1024);
    let (_, seen, _) = recover(&store, 1);
    assert_eq!(seen, live);
}

/// A segment's tag, as its frames carry it (`format::frame_tag`).
fn tag(segment: u32) -> [u8; 4] {
    crc32c::crc32c(&segment.to_le_bytes()).to_le_bytes()
}

/// A fully settled segment's file becomes its queue's next segment. The records of its first
/// life stay in it behind the new ones; no reopen, torn write or append brings them back.
#[test]
fn settled_segments_are_reused_and_their_old_records_stay_settled() {
    let tmp = tempfile::tempdir().unwrap();
    let mut live = std::collections::VecDeque::new();
    let store = open_preallocated(tmp.path(), 1024);
    let (log, _, _) = recover(&store, 1);
    // 90-byte records are 102-byte frames, 9 per segment. Settle oldest first and keep two
    // live, like a queue whose consumer keeps up: each segment is retired early in the next.
    for i in 0..100 {
        let (id, durable) = log.append(&record(i, 90)).unwrap();
        durable.wait_blocking().unwrap();
        live.push_back((id, record(i, 90)));
        if live.len() > 2 {
            let (old, _) = live.pop_front().unwrap();
            log.settle(old).unwrap().wait_blocking().unwrap();
        }
        store.wait_for_spares();
    }
    let stats = store.stats();
    // Segments 0 to 9 are settled. 0 and 1 grew record by record and were deleted; 2 was
    // zero-filled; from 2 on, segment k's file became segment k + 2 (it was retired while
    // k + 1 filled).
    assert_eq!(stats.segments_deleted, 10, "{stats:?}");
    assert_eq!(stats.segments_reused, 8, "{stats:?}");
    let newest = live.back().unwrap().0;
    assert_eq!(newest.segment, 11);
    let path = seg_path(tmp.path(), 1, newest.segment);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 1024);
    let data_end = newest.offset as usize + 102;
    // Behind the new records: whole frames of the file's earlier life, with good CRCs.
    assert_eq!(&bytes[data_end + 8..data_end + 12], &tag(newest.segment - 2));
    drop(log);
    drop(store);

    let expect: Vec<(RecordId, Vec<u8>)> = live.iter().cloned().collect();
    let store = open_preallocated(tmp.path(), 1024);
    let (log, seen, report) = recover(&store, 1);
    assert_eq!(seen, expect);
    assert_eq!((report.truncated_bytes, report.damage), (0, None));
    drop(log);
    drop(store);

    // A write of the newest segment torn over the old bytes: its header and half its payload.
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    let mut torn = 90u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&0xDEAD_BEEFu32.to_le_bytes());
    torn.extend_from_slice(&tag(newest.segment));
    torn.extend_from_slice(&[7; 45]);
    file.write_all_at(&torn, data_end as u64).unwrap();
    let store = open_preallocated(tmp.path(), 1024);
    let (log, seen, report) = recover(&store, 1);
    assert_eq!(seen, expect);
    assert_eq!((report.truncated_bytes, report.damage), (102, None));
    // Appends go on over it, and everything before stays settled.
    let (id, durable) = log.append(b"after the crash").unwrap();
    durable.wait_blocking().unwrap();
    assert_eq!(id, RecordId { segment: newest.segment, offset: data_end as u32 });
    drop(log);
    drop(store);
    let store = open_preallocated(tmp.path(), 1024);
    let (_, seen, report) = recover(&store, 1);
    let mut expect = expect;
    expect.push((id, b"after the crash".to_vec()));
    assert_eq!(seen, expect);
    assert_eq!(report.damage, None);
}

/// A crash between renaming a reused file to the new segment's name and its new header
/// reaching the disk leaves a newest segment whose header names an older one and whose frames
/// are all the older one's: nothing in it was made durable, and it goes like a torn creation.
/// With a frame of its own in it the header itself is damaged, and so is such a header anywhere
/// else: damage, files kept.
#[test]
fn newest_segment_with_an_older_segments_header() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = twenty_byte_records(tmp.path(), 6);
    assert_eq!(ids[5].segment, 1);
    let seg0 = seg_path(tmp.path(), 1, 0);
    let seg1 = seg_path(tmp.path(), 1, 1);
    let set_number = |path: &Path, n: u32| {
        OpenOptions::new().write(true).open(path).unwrap().write_all_at(&n.to_le_bytes(), 12).unwrap();
    };

    // Segment 1 names segment 0 but holds three records of its own: damage.
    set_number(&seg1, 0);
    let store = open(tmp.path(), THREE_RECORDS);
    let (log, seen, report) = recover(&store, 1);
    let damage = report.damage.unwrap();
    assert!(damage.contains("older segment") && damage.contains("offset 16"), "{damage}");
    assert_eq!(seen.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids[..3]);
    assert!(seg1.exists());
    assert_eq!(log.append(b"z").unwrap().0.segment, 2);
    drop(log);
    drop(store);

    // Segment 3: a copy of segment 0 (its records, its header), as a reuse interrupted before
    // the new header landed. Segment 0 is settled and gone from under it.
    let seg3 = seg_path(tmp.path(), 1, 3);
    std::fs::copy(&seg0, &seg3).unwrap();
    std::fs::write(ack_path(tmp.path(), 1, 3), b"").unwrap();
    let store = open(tmp.path(), THREE_RECORDS);
    let (log, seen, report) = recover(&store, 1);
    assert!(!seg3.exists(), "a torn creation is removed");
    assert_eq!(report.truncated_bytes, 0);
    assert!(report.damage.unwrap().contains("segment 00000001"), "only segment 1's damage");
    assert_eq!(seen.len(), 4);
    assert_eq!(log.append(b"after").unwrap().0.segment, 4);
}

/// Segments written before frames carried tags (format version 1) are read as they are, and
/// appends go to a new segment.
#[test]
fn version_1_segments_are_read_and_not_appended_to() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(queue_dir(tmp.path(), 1)).unwrap();
    let mut bytes = b"wharfSEG".to_vec();
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    for i in 0..3 {
        let payload = record(i, 20);
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
    }
    std::fs::write(seg_path(tmp.path(), 1, 0), &bytes).unwrap();
    // Records at 16, 44 and 72; the one at 44 was settled.
    std::fs::write(ack_path(tmp.path(), 1, 0), 44u32.to_le_bytes()).unwrap();
    let at = |offset| RecordId { segment: 0, offset };
    let store = open(tmp.path(), 8 << 20);
    let (log, seen, report) = recover(&store, 1);
    assert_eq!(seen, vec![(at(16), record(0, 20)), (at(72), record(2, 20))]);
    assert_eq!((report.truncated_bytes, report.damage), (0, None));
    assert_eq!(log.read(at(72)).unwrap(), record(2, 20));
    let (new, durable) = log.append(b"new").unwrap();
    durable.wait_blocking().unwrap();
    assert_eq!(new, RecordId { segment: 1, offset: 16 });
    log.settle(at(16)).unwrap().wait_blocking().unwrap();
    drop(log);
    drop(store);
    let store = open(tmp.path(), 8 << 20);
    let (_, seen, _) = recover(&store, 1);
    assert_eq!(seen, vec![(at(72), record(2, 20)), (new, b"new".to_vec())]);
}

#[test]
fn torn_record_in_a_preallocated_segment_is_room_to_append() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = open_preallocated(tmp.path(), 1024);
        let (log, _, _) = recover(&store, 1);
        for i in 0..18 {
            log.append(&record(i, 90)).unwrap();
        }
        store.wait_for_spares();
        for i in 18..21 {
            log.append(&record(i, 90)).unwrap();
        }
        store.flush().unwrap();
    }
    // The last record of segment 2 (a spare, zeros after it) lost part of its payload.
    let path = seg_path(tmp.path(), 1, 2);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 1024);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0; 50], 16 + 2 * 102 + FRAME + 30).unwrap();
    let store = open_preallocated(tmp.path(), 1024);
    let (_, seen, report) = recover(&store, 1);
    assert_eq!(report.damage, None);
    assert_eq!(seen.len(), 20);
    assert_eq!(report.truncated_bytes, 102);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 1024, "a preallocated segment keeps its room");
    // A bad record with records after it is still damage, preallocated or not.
    drop(store);
    flip(&path, 16 + FRAME + 3);
    let store = open_preallocated(tmp.path(), 1024);
    let (_, _, report) = recover(&store, 1);
    assert!(report.damage.is_some());
}

#[test]
fn damage_in_an_older_segment_keeps_later_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = twenty_byte_records(tmp.path(), 9);
    assert_eq!(ids[8].segment, 2);
    // The middle record of segment 0 fails its CRC, with a good record after it: damage.
    flip(&seg_path(tmp.path(), 1, 0), 48 + FRAME + 3);
    let store = open(tmp.path(), THREE_RECORDS);
    let (log, seen, report) = recover(&store, 1);
    let damage = report.damage.unwrap();
    assert!(damage.contains("segment 00000000"), "{damage}");
    let visited: Vec<RecordId> = seen.iter().map(|(id, _)| *id).collect();
    let mut expected = ids[..1].to_vec();
    expected.extend_from_slice(&ids[3..]);
    assert_eq!(visited, expected);
    // The damaged segment is pinned: settling its good records does not delete it.
    log.settle(ids[0]).unwrap();
    assert!(seg_path(tmp.path(), 1, 0).exists());
    assert!(log.stragglers().iter().all(|id| id.segment != 0));
}

#[test]
fn torn_tail_of_an_older_segment_is_not_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = twenty_byte_records(tmp.path(), 9);
    // A power cut right after rotation can leave the old segment's unsynced last write torn.
    let path = seg_path(tmp.path(), 1, 0);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(16 + 2 * 32 + 10).unwrap();
    drop(file);
    let store = open(tmp.path(), THREE_RECORDS);
    let (_, seen, report) = recover(&store, 1);
    assert_eq!(report.damage, None);
    // Less than a frame header is left: not counted (in a reused file it could as well be
    // the end of the file's earlier life), and not damage.
    assert_eq!(report.truncated_bytes, 0);
    let visited: Vec<RecordId> = seen.iter().map(|(id, _)| *id).collect();
    let mut expected = ids[..2].to_vec();
    expected.extend_from_slice(&ids[3..]);
    assert_eq!(visited, expected);
}

#[test]
fn bad_segment_header_is_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = twenty_byte_records(tmp.path(), 6);
    let path = seg_path(tmp.path(), 1, 0);
    OpenOptions::new().write(true).open(&path).unwrap().write_all_at(b"garbage!", 0).unwrap();
    let store = open(tmp.path(), THREE_RECORDS);
    let (_, seen, report) = recover(&store, 1);
    assert!(report.damage.unwrap().contains("bad magic"));
    assert_eq!(seen.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids[3..]);
    drop(store);

    // A garbage header on the newest segment: damage too; appends move to a new segment.
    let path = seg_path(tmp.path(), 1, 1);
    OpenOptions::new().write(true).open(&path).unwrap().write_all_at(b"\xff\xff\xff\xff", 8).unwrap();
    let store = open(tmp.path(), THREE_RECORDS);
    let (log, seen, report) = recover(&store, 1);
    assert!(report.damage.unwrap().contains("version"));
    assert!(seen.is_empty());
    assert_eq!(log.append(b"x").unwrap().0.segment, 2);
}

#[test]
fn torn_header_of_a_new_segment_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let ids: Vec<RecordId> = {
        let store = open(tmp.path(), 8 << 20);
        let (log, _, _) = recover(&store, 1);
        (0..2).map(|i| log.append(&record(i, 20)).unwrap().0).collect()
    };
    // A crash right after creating segment 1, before its header was written.
    std::fs::write(seg_path(tmp.path(), 1, 1), b"wharf").unwrap();
    std::fs::write(ack_path(tmp.path(), 1, 1), b"").unwrap();
    let store = open(tmp.path(), 8 << 20);
    let (log, seen, report) = recover(&store, 1);
    assert_eq!(report.damage, None);
    assert_eq!(report.truncated_bytes, 5);
    assert_eq!(seen.len(), 2);
    assert!(!seg_path(tmp.path(), 1, 1).exists());
    // Segment numbers are never reused, not even a removed torn one's.
    assert_eq!(log.append(b"y").unwrap().0.segment, 2);
    assert_eq!(ids.len(), 2);
}

#[test]
fn torn_ack_entry_is_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = {
        let store = open(tmp.path(), 8 << 20);
        let (log, _, _) = recover(&store, 1);
        let ids: Vec<RecordId> = (0..3).map(|i| log.append(&record(i, 20)).unwrap().0).collect();
        log.settle(ids[0]).unwrap();
        ids
    };
    let ack = ack_path(tmp.path(), 1, 0);
    // Half of an entry that would have settled record 1.
    let file = OpenOptions::new().append(true).open(&ack).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &ids[1].offset.to_le_bytes()[..2], 4).unwrap();
    assert_eq!(std::fs::metadata(&ack).unwrap().len(), 6);
    let store = open(tmp.path(), 8 << 20);
    let (log, seen, report) = recover(&store, 1);
    assert_eq!(report.damage, None);
    assert_eq!(seen.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids[1..]);
    assert_eq!(std::fs::metadata(&ack).unwrap().len(), 4);
    // Settling continues after the whole entries.
    log.settle(ids[1]).unwrap();
    drop(log);
    drop(store);
    let store = open(tmp.path(), 8 << 20);
    let (_, seen, _) = recover(&store, 1);
    assert_eq!(seen.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids[2..]);
}

#[test]
fn orphan_ack_file_is_ignored_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    three_records(tmp.path());
    // Left over from a deletion interrupted between unlinking `.seg` and `.ack`; its entries
    // must not settle anything.
    let orphan = ack_path(tmp.path(), 1, 7);
    std::fs::write(&orphan, 16u32.to_le_bytes()).unwrap();
    let store = open(tmp.path(), 8 << 20);
    let (log, seen, report) = recover(&store, 1);
    assert_eq!(report.damage, None);
    assert_eq!(seen.len(), 3);
    assert!(!orphan.exists());
    // Numbering never reuses the orphan's number.
    std::fs::remove_file(seg_path(tmp.path(), 1, 0)).ok();
    assert!(log.append(b"z").unwrap().0.segment == 0);
}

#[test]
fn stray_ack_entries_move_appends_to_a_new_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = three_records(tmp.path());
    // The ack names the third record, then the third record is lost (a power cut in
    // interval mode): a new record at that offset must not be born settled.
    std::fs::write(ack_path(tmp.path(), 1, 0), ids[2].offset.to_le_bytes()).unwrap();
    OpenOptions::new().write(true).open(seg_path(tmp.path(), 1, 0)).unwrap().set_len(80).unwrap();
    let store = open(tmp.path(), 8 << 20);
    let (log, seen, _) = recover(&store, 1);
    assert_eq!(seen.len(), 2);
    let (id, _) = log.append(b"fresh").unwrap();
    assert_eq!(id.segment, 1);
    drop(log);
    drop(store);
    let store = open(tmp.path(), 8 << 20);
    let (_, seen, _) = recover(&store, 1);
    assert_eq!(seen.last().unwrap(), &(id, b"fresh".to_vec()));
}

#[test]
fn second_open_of_a_locked_directory_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path(), 8 << 20);
    match FileStore::open(tmp.path(), FileStoreOptions::default()) {
        Err(StoreError::Locked(dir)) => assert_eq!(dir, tmp.path().display().to_string()),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(store);
    // `open` waits out a concurrently forked child still holding the lock (see common).
    let _reopened = open(tmp.path(), 8 << 20);
}

#[test]
fn second_open_from_another_process_fails() {
    // flock is held by the open file description, so a child process's `flock -n` fails too.
    let tmp = tempfile::tempdir().unwrap();
    let _store = open(tmp.path(), 8 << 20);
    let status = std::process::Command::new("flock")
        .args(["-n", "-x"])
        .arg(tmp.path().join("LOCK"))
        .arg("true")
        .status();
    if let Ok(status) = status {
        assert!(!status.success(), "another process could take the lock");
    }
}

#[test]
fn definitions_save_and_load() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = open(tmp.path(), 8 << 20);
        assert_eq!(store.load_definitions().unwrap(), None);
        store.save_definitions(b"{\"v\":1}").unwrap();
        store.save_definitions(b"{\"v\":2}").unwrap();
        assert_eq!(store.load_definitions().unwrap().unwrap(), b"{\"v\":2}");
    }
    // A save that died before its rename leaves a temporary: ignored (and cleaned up).
    std::fs::write(tmp.path().join("definitions.json.tmp"), b"{\"v\":3, torn").unwrap();
    let store = open(tmp.path(), 8 << 20);
    assert_eq!(store.load_definitions().unwrap().unwrap(), b"{\"v\":2}");
    assert!(!tmp.path().join("definitions.json.tmp").exists());
}

#[test]
fn queue_ids_and_remove_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path(), 8 << 20);
    for q in [5u64, 1, u64::MAX] {
        let (log, _, _) = recover(&store, q);
        log.append(b"m").unwrap();
    }
    assert_eq!(store.queue_ids().unwrap(), vec![1, 5, u64::MAX]);
    let log = store.open_queue(5).unwrap();
    store.remove_queue(5).unwrap();
    assert!(!queue_dir(tmp.path(), 5).exists());
    assert!(log.append(b"late").is_err());
    assert_eq!(store.queue_ids().unwrap(), vec![1, u64::MAX]);
    let (_, seen, _) = recover(&store, 5);
    assert!(seen.is_empty());
}

#[test]
fn group_commit_shares_fsyncs_between_concurrent_writers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path(), 8 << 20);
    let (log, _, _) = recover(&store, 1);
    let per_thread = 50;
    let threads: Vec<_> = (0..64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in 0..per_thread {
                    let (id, durable) = log.append(&record(t * 1000 + i, 64)).unwrap();
                    durable.wait_blocking().unwrap();
                    ids.push(id);
                }
                ids
            })
        })
        .collect();
    let ids: Vec<RecordId> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let stats = store.stats();
    let records = 64 * per_thread as u64;
    assert_eq!(ids.len() as u64, records);
    assert_eq!(stats.records_appended, records);
    assert!(stats.fsyncs * 4 < records, "fsyncs {} for {} records", stats.fsyncs, records);
    assert!(stats.fsync_seconds_total > 0.0 && stats.fsync_seconds_max > 0.0);
    drop(log);
    drop(store);
    let store = open(tmp.path(), 8 << 20);
    let (_, seen, _) = recover(&store, 1);
    assert_eq!(seen.len() as u64, records);
}

#[test]
fn durable_resolves_only_after_a_sync() {
    let tmp = tempfile::tempdir().unwrap();
    // Hold the sync thread inside its sync until released.
    let gate = Arc::new(AtomicBool::new(true));
    let hook_gate = gate.clone();
    let hook: SyncHook = Arc::new(move |_: &Path| {
        while !hook_gate.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    });
    let store = FileStore::open_with_sync_hook(tmp.path(), options(8 << 20), Some(hook)).unwrap();
    let (log, _, _) = recover(&store, 1);
    gate.store(false, Ordering::Release);
    let (_, durable) = log.append(b"a").unwrap();
    std::thread::sleep(Duration::from_millis(30));
    assert!(!durable.is_done());
    gate.store(true, Ordering::Release);
    durable.wait_blocking().unwrap();
    let settle = log.settle(RecordId { segment: 0, offset: 16 }).unwrap();
    settle.wait_blocking().unwrap();
}

#[test]
fn a_failed_sync_stops_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicBool::new(false));
    let hook_fail = fail.clone();
    let hook: SyncHook = Arc::new(move |_: &Path| {
        if hook_fail.load(Ordering::Acquire) {
            Err(io::Error::other("injected EIO"))
        } else {
            Ok(())
        }
    });
    let store = FileStore::open_with_sync_hook(tmp.path(), options(8 << 20), Some(hook)).unwrap();
    let (log, _, _) = recover(&store, 1);
    let (good, durable) = log.append(b"good").unwrap();
    durable.wait_blocking().unwrap();
    fail.store(true, Ordering::Release);
    let (_, durable) = log.append(b"lost?").unwrap();
    match durable.clone().wait_blocking() {
        Err(StoreError::SyncFailed(reason)) => assert!(reason.contains("injected EIO"), "{reason}"),
        other => panic!("expected SyncFailed, got {other:?}"),
    }
    assert!(matches!(log.append(b"more"), Err(StoreError::SyncFailed(_))));
    assert!(matches!(log.settle(good), Err(StoreError::SyncFailed(_))));
    assert!(matches!(store.flush(), Err(StoreError::SyncFailed(_))));
    // No retry: the hook is healthy again, but the store stays stopped.
    fail.store(false, Ordering::Release);
    assert!(matches!(log.append(b"more"), Err(StoreError::SyncFailed(_))));
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert!(rt.block_on(durable.wait()).is_err());
    // Reads still work.
    assert_eq!(log.read(good).unwrap(), b"good");
}

#[test]
fn interval_and_never_modes() {
    for mode in [FsyncMode::Interval(Duration::from_millis(5)), FsyncMode::Never] {
        let tmp = tempfile::tempdir().unwrap();
        let options = FileStoreOptions { fsync: mode, ..FileStoreOptions::default() };
        let store = FileStore::open(tmp.path(), options.clone()).unwrap();
        assert_eq!(store.fsync_mode(), mode);
        let (log, _, _) = recover(&store, 1);
        let (id, durable) = log.append(b"kernel has it").unwrap();
        assert!(durable.is_done());
        assert!(log.settle(id).unwrap().is_done());
        log.append(b"second").unwrap();
        if let FsyncMode::Interval(_) = mode {
            let start = std::time::Instant::now();
            while store.stats().fsyncs == 0 {
                assert!(start.elapsed() < Duration::from_secs(5), "interval sync never ran");
                std::thread::sleep(Duration::from_millis(2));
            }
        } else {
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(store.stats().fsyncs, 0);
        }
        store.flush().unwrap();
        assert!(store.stats().fsyncs > 0, "flush syncs whatever the mode");
        drop(log);
        drop(store);
        let store = FileStore::open(tmp.path(), options).unwrap();
        let (_, seen, _) = recover(&store, 1);
        assert_eq!(seen.len(), 1);
    }
}

#[test]
fn flush_and_async_wait() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path(), 8 << 20);
    let (log, _, _) = recover(&store, 1);
    store.flush().unwrap();
    let (_, a) = log.append(b"a").unwrap();
    let (_, b) = log.append(b"b").unwrap();
    let both = a.join(b);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(both.wait()).unwrap();
    log.append(b"c").unwrap();
    store.flush().unwrap();
    assert!(store.watermark().borrow().synced >= 3);
}

#[test]
fn calls_from_inside_the_visitor_do_not_deadlock() {
    let tmp = tempfile::tempdir().unwrap();
    three_records(tmp.path());
    let store = open(tmp.path(), 8 << 20);
    let log = store.open_queue(1).unwrap();
    let inner = log.clone();
    let mut errors = 0;
    log.recover(&mut |id, _| {
        if inner.settle(id).is_err() {
            errors += 1;
        }
        let _ = inner.stats();
    })
    .unwrap();
    assert_eq!(errors, 3);
    // A second recover visits from the index; the log is usable inside it then.
    let mut n = 0;
    log.recover(&mut |id, _| {
        inner.read(id).unwrap();
        n += 1;
    })
    .unwrap();
    assert_eq!(n, 3);
}

#[test]
fn append_before_recover_recovers_implicitly() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = three_records(tmp.path());
    let store = open(tmp.path(), 8 << 20);
    let log = store.open_queue(1).unwrap();
    let (id, _) = log.append(b"four").unwrap();
    assert!(id.offset > ids[2].offset);
    let mut seen = Vec::new();
    log.recover(&mut |id, _| seen.push(id)).unwrap();
    assert_eq!(seen.len(), 4);
}

/// Reads go through a per-thread read-ahead window: records written together come back from
/// one `pread`. Whatever the window holds, every read returns that record's own bytes.
#[test]
fn reads_ahead_never_return_stale_or_foreign_bytes() {
    let (tmp_a, tmp_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store_a, store_b) = (open(tmp_a.path(), 8 << 20), open(tmp_b.path(), 8 << 20));
    let (log_a, _, _) = recover(&store_a, 1);
    let (log_b, _, _) = recover(&store_b, 1);
    let batch: Vec<Vec<u8>> = (0..12).map(|i| record(i, 1000 + i)).collect();
    let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
    let (ids, durable) = log_a.append_batch(&refs).unwrap();
    durable.wait_blocking().unwrap();
    for (id, want) in ids.iter().zip(&batch).chain(ids.iter().zip(&batch).rev()) {
        assert_eq!(&log_a.read(*id).unwrap(), want);
    }

    // The same record ids in another store, with other bytes, read in turn on this thread.
    let other: Vec<Vec<u8>> = (0..12).map(|i| record(100 + i, 1000 + i)).collect();
    let refs: Vec<&[u8]> = other.iter().map(Vec::as_slice).collect();
    let (other_ids, _) = log_b.append_batch(&refs).unwrap();
    assert_eq!(other_ids, ids);
    for i in 0..ids.len() {
        assert_eq!(log_a.read(ids[i]).unwrap(), batch[i]);
        assert_eq!(log_b.read(ids[i]).unwrap(), other[i]);
    }

    // A record appended after the window was read is read from the file, not from the window.
    assert_eq!(log_a.read(ids[11]).unwrap(), batch[11]);
    let (late, _) = log_a.append(&record(7, 3000)).unwrap();
    assert_eq!(log_a.read(late).unwrap(), record(7, 3000));
    assert_eq!(log_a.read(ids[11]).unwrap(), batch[11]);
}
