//! The memory store: `--in-memory` mode and engine tests. Nothing touches the disk and every
//! write is "durable" at once, because there is no disk to wait for.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::{
    Durable, FsyncMode, QueueId, QueueLog, QueueLogStats, RecordId, RecoveryReport, Result, Store,
    StoreError, StoreStats,
};

#[derive(Default)]
pub struct MemoryStore {
    queues: Mutex<HashMap<QueueId, Arc<MemoryQueueLog>>>,
    definitions: Mutex<Option<Vec<u8>>>,
    appended: Arc<AtomicU64>,
    settled: Arc<AtomicU64>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn open_queue(&self, queue: QueueId) -> Result<Arc<dyn QueueLog>> {
        let log = self
            .queues
            .lock()
            .entry(queue)
            .or_insert_with(|| {
                Arc::new(MemoryQueueLog {
                    records: Mutex::new(BTreeMap::new()),
                    next_offset: AtomicU64::new(0),
                    appended: self.appended.clone(),
                    settled: self.settled.clone(),
                })
            })
            .clone();
        Ok(log)
    }

    fn remove_queue(&self, queue: QueueId) -> Result<()> {
        self.queues.lock().remove(&queue);
        Ok(())
    }

    fn queue_ids(&self) -> Result<Vec<QueueId>> {
        Ok(self.queues.lock().keys().copied().collect())
    }

    fn save_definitions(&self, bytes: &[u8]) -> Result<()> {
        *self.definitions.lock() = Some(bytes.to_vec());
        Ok(())
    }

    fn load_definitions(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.definitions.lock().clone())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            records_appended: self.appended.load(Ordering::Relaxed),
            records_settled: self.settled.load(Ordering::Relaxed),
            ..StoreStats::default()
        }
    }

    fn is_persistent(&self) -> bool {
        false
    }

    fn fsync_mode(&self) -> FsyncMode {
        FsyncMode::Never
    }
}

struct MemoryQueueLog {
    records: Mutex<BTreeMap<RecordId, Arc<[u8]>>>,
    next_offset: AtomicU64,
    appended: Arc<AtomicU64>,
    settled: Arc<AtomicU64>,
}

impl QueueLog for MemoryQueueLog {
    fn append(&self, record: &[u8]) -> Result<(RecordId, Durable)> {
        let n = self.next_offset.fetch_add(1, Ordering::Relaxed);
        // A memory log is one endless "segment"; offsets are record numbers split over 64 bits.
        let id = RecordId { segment: (n >> 32) as u32, offset: n as u32 };
        self.records.lock().insert(id, Arc::from(record));
        self.appended.fetch_add(1, Ordering::Relaxed);
        Ok((id, Durable::done()))
    }

    fn read(&self, id: RecordId) -> Result<Vec<u8>> {
        self.records.lock().get(&id).map(|r| r.to_vec()).ok_or(StoreError::NoSuchRecord(id))
    }

    fn settle(&self, id: RecordId) -> Result<Durable> {
        self.records.lock().remove(&id).ok_or(StoreError::NoSuchRecord(id))?;
        self.settled.fetch_add(1, Ordering::Relaxed);
        Ok(Durable::done())
    }

    fn recover(&self, visit: &mut dyn FnMut(RecordId, &[u8])) -> Result<RecoveryReport> {
        let records = self.records.lock().clone();
        for (id, record) in &records {
            visit(*id, record);
        }
        Ok(RecoveryReport { live_records: records.len() as u64, ..RecoveryReport::default() })
    }

    fn stragglers(&self) -> Vec<RecordId> {
        Vec::new()
    }

    fn stats(&self) -> QueueLogStats {
        QueueLogStats { live_records: self.records.lock().len() as u64, ..QueueLogStats::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_settle_recover() {
        let store = MemoryStore::new();
        let log = store.open_queue(7).unwrap();
        let (a, d) = log.append(b"one").unwrap();
        assert!(d.is_done());
        let (b, _) = log.append(b"two").unwrap();
        assert_eq!(log.read(a).unwrap(), b"one");
        log.settle(a).unwrap();
        assert!(matches!(log.read(a), Err(StoreError::NoSuchRecord(_))));
        assert!(log.settle(a).is_err());
        let mut seen = Vec::new();
        let report = log.recover(&mut |id, r| seen.push((id, r.to_vec()))).unwrap();
        assert_eq!(seen, vec![(b, b"two".to_vec())]);
        assert_eq!(report.live_records, 1);
    }
}
