//! Random append / settle / reopen sequences against a `BTreeMap` model: after every reopen,
//! recovery must visit exactly the model's live records, in log order.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use wharf_store::file::FileStoreOptions;
use wharf_store::{RecordId, Store};

#[derive(Clone, Debug)]
enum Op {
    /// Append a record of this size (1..=300 bytes) to queue 0 or 1.
    Append { queue: u64, size: usize },
    /// Append records of these sizes with one `append_batch`.
    AppendBatch { queue: u64, sizes: Vec<usize> },
    /// Settle the n-th live record (mod the live count) of a queue.
    Settle { queue: u64, pick: usize },
    /// Settle several with one `settle_batch`; picks may repeat, and `bogus` adds an id that
    /// names no record: those get `NoSuchRecord`, the others are settled.
    SettleBatch { queue: u64, picks: Vec<usize>, bogus: bool },
    /// Settle a queue's oldest live records, as a consumer that keeps up does: whole segments
    /// retire, and their files are reused as new segments.
    SettleOldest { queue: u64, count: usize },
    /// Let the background thread finish the spares asked for (otherwise the sequence outruns it
    /// and rotations mostly find none).
    WaitForSpares,
    /// Move a queue's stragglers forward, as the engine does.
    MoveStragglers { queue: u64 },
    /// Close the store and open it again.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2u64, 1..300usize).prop_map(|(queue, size)| Op::Append { queue, size }),
        2 => (0..2u64, proptest::collection::vec(1..300usize, 1..12))
            .prop_map(|(queue, sizes)| Op::AppendBatch { queue, sizes }),
        4 => (0..2u64, any::<usize>()).prop_map(|(queue, pick)| Op::Settle { queue, pick }),
        2 => (0..2u64, proptest::collection::vec(any::<usize>(), 1..12), any::<bool>())
            .prop_map(|(queue, picks, bogus)| Op::SettleBatch { queue, picks, bogus }),
        2 => (0..2u64, 1..24usize).prop_map(|(queue, count)| Op::SettleOldest { queue, count }),
        2 => Just(Op::WaitForSpares),
        1 => (0..2u64).prop_map(|queue| Op::MoveStragglers { queue }),
        1 => Just(Op::Reopen),
    ]
}

type Model = [BTreeMap<RecordId, Vec<u8>>; 2];

fn check_recovery(dir: &std::path::Path, options: &FileStoreOptions, model: &Model) {
    let store = open_with(dir, options.clone());
    for q in 0..2u64 {
        let (log, seen, report) = recover(&store, q);
        assert_eq!(report.damage, None);
        assert_eq!(report.truncated_bytes, 0);
        let expected: Vec<(RecordId, Vec<u8>)> =
            model[q as usize].iter().map(|(k, v)| (*k, v.clone())).collect();
        assert_eq!(seen, expected, "queue {q}");
        assert_eq!(log.stats().live_records, expected.len() as u64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn recovery_matches_the_model(
        ops in proptest::collection::vec(op(), 1..120),
        segment_size in prop_oneof![Just(200u64), Just(700), Just(4096)],
        preallocate in any::<bool>(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let options = FileStoreOptions { preallocate, ..options(segment_size) };
        let mut model: Model = Default::default();
        let mut counter = 0usize;
        let mut store = open_with(tmp.path(), options.clone());
        for q in 0..2 {
            recover(&store, q);
        }
        for op in ops {
            match op {
                Op::Append { queue, size } => {
                    counter += 1;
                    let body = record(counter, size);
                    let log = store.open_queue(queue).unwrap();
                    let (id, durable) = log.append(&body).unwrap();
                    durable.wait_blocking().unwrap();
                    prop_assert!(model[queue as usize].insert(id, body).is_none(), "id reused");
                }
                Op::AppendBatch { queue, sizes } => {
                    let bodies: Vec<Vec<u8>> = sizes
                        .iter()
                        .map(|&size| {
                            counter += 1;
                            record(counter, size)
                        })
                        .collect();
                    let log = store.open_queue(queue).unwrap();
                    let slices: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
                    let (ids, durable) = log.append_batch(&slices).unwrap();
                    durable.wait_blocking().unwrap();
                    prop_assert_eq!(ids.len(), bodies.len());
                    for (id, body) in ids.into_iter().zip(bodies) {
                        prop_assert_eq!(log.read(id).unwrap(), body.clone());
                        prop_assert!(model[queue as usize].insert(id, body).is_none(), "id reused");
                    }
                }
                Op::SettleBatch { queue, picks, bogus } => {
                    let live = &mut model[queue as usize];
                    let mut ids: Vec<RecordId> = if live.is_empty() {
                        Vec::new()
                    } else {
                        picks.iter().map(|p| *live.keys().nth(p % live.len()).unwrap()).collect()
                    };
                    if bogus {
                        ids.insert(ids.len() / 2, RecordId { segment: 9999, offset: 16 });
                    }
                    if ids.is_empty() {
                        continue;
                    }
                    let log = store.open_queue(queue).unwrap();
                    let results = log.settle_batch(&ids);
                    prop_assert_eq!(results.len(), ids.len());
                    for (i, (id, result)) in ids.iter().zip(results).enumerate() {
                        let first_naming = !ids[..i].contains(id);
                        match result {
                            Ok(durable) => {
                                prop_assert!(first_naming && live.remove(id).is_some(), "{id:?} settled");
                                durable.wait_blocking().unwrap();
                            }
                            Err(e) => prop_assert!(
                                matches!(e, wharf_store::StoreError::NoSuchRecord(_))
                                    && (!first_naming || !live.contains_key(id)),
                                "{id:?}: {e}"
                            ),
                        }
                    }
                }
                Op::Settle { queue, pick } => {
                    let live = &mut model[queue as usize];
                    if live.is_empty() {
                        continue;
                    }
                    let id = *live.keys().nth(pick % live.len()).unwrap();
                    let log = store.open_queue(queue).unwrap();
                    prop_assert_eq!(log.read(id).unwrap(), live[&id].clone());
                    log.settle(id).unwrap().wait_blocking().unwrap();
                    live.remove(&id);
                }
                Op::SettleOldest { queue, count } => {
                    let live = &mut model[queue as usize];
                    let oldest: Vec<RecordId> = live.keys().take(count).copied().collect();
                    let log = store.open_queue(queue).unwrap();
                    for id in oldest {
                        log.settle(id).unwrap().wait_blocking().unwrap();
                        live.remove(&id);
                    }
                }
                Op::WaitForSpares => store.wait_for_spares(),
                Op::MoveStragglers { queue } => {
                    let log = store.open_queue(queue).unwrap();
                    for id in log.stragglers() {
                        let body = log.read(id).unwrap();
                        let (new_id, _) = log.append(&body).unwrap();
                        log.settle(id).unwrap();
                        let live = &mut model[queue as usize];
                        live.remove(&id);
                        live.insert(new_id, body);
                    }
                    store.flush().unwrap();
                }
                Op::Reopen => {
                    drop(store);
                    check_recovery(tmp.path(), &options, &model);
                    store = open_with(tmp.path(), options.clone());
                    for q in 0..2 {
                        recover(&store, q);
                    }
                }
            }
        }
        // Settled segments other than the newest are gone from the disk.
        for q in 0..2u64 {
            let log = store.open_queue(q).unwrap();
            let segments_with_live: std::collections::BTreeSet<u32> =
                model[q as usize].keys().map(|id| id.segment).collect();
            let on_disk = files(tmp.path(), q, "seg").len() as u64;
            prop_assert_eq!(log.stats().segments, on_disk);
            prop_assert!(on_disk <= segments_with_live.len() as u64 + 1);
        }
        drop(store);
        check_recovery(tmp.path(), &options, &model);
    }
}
