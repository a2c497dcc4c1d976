//! wharf's store: where accepted messages live so that a crash cannot lose them.
//!
//! The store knows nothing about messages, queues' semantics or protocols. It keeps, per queue,
//! an append-only log of opaque records (each framed with length + CRC) and remembers which
//! records have been settled. The engine above it (`wharf-core`) encodes messages into records.
//!
//! Two implementations sit behind the [`Store`] trait:
//! - [`file::FileStore`]: segment files + ack files per queue, one group-commit sync thread.
//! - [`memory::MemoryStore`]: `--in-memory` mode and tests; nothing touches the disk.
//!
//! Durability is reported through [`Durable`]: a write returns at once with a `Durable` that
//! resolves when the write has reached the disk under the configured [`FsyncMode`]. Every write
//! gets a number from one store-wide sequence (the LSN) and one sync watermark covers all
//! queues, so waiting for several writes is waiting for the largest of their LSNs.

pub mod bench;
mod durable;
pub mod file;
pub mod memory;

pub use durable::{Durable, SyncWatermark};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The engine's stable number for a queue; the store names the queue's directory after it.
pub type QueueId = u64;

/// Where a record lives in its queue's log. Stable until the record is settled.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    pub segment: u32,
    pub offset: u32,
}

/// When appended records are forced to disk.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FsyncMode {
    /// A write is durable only after `fdatasync`; concurrent writes share one sync (group commit).
    Always,
    /// Writes are durable once handed to the kernel (they survive `kill -9`); the disk is synced
    /// every interval, so a power cut can lose up to one interval.
    Interval(Duration),
    /// Writes are handed to the kernel and never explicitly synced.
    Never,
}

impl fmt::Display for FsyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncMode::Always => write!(f, "always (fdatasync before every confirm, group commit)"),
            FsyncMode::Interval(d) => write!(f, "interval (fdatasync every {} ms)", d.as_millis()),
            FsyncMode::Never => write!(f, "never (the OS decides when data reaches the disk)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("data directory {0} is locked by another wharf process")]
    Locked(String),
    #[error("record {0:?} does not exist or was settled")]
    NoSuchRecord(RecordId),
    #[error("record of {size} bytes exceeds the store's limit of {limit} bytes")]
    RecordTooLarge { size: usize, limit: usize },
    #[error("queue log {0} is damaged: {1}")]
    Damaged(QueueId, String),
    /// An fsync failed. The kernel may have dropped the dirty pages, so nothing written since
    /// the last good sync can be promised durable; the store refuses further writes.
    #[error("the store failed to sync to disk and stopped accepting writes: {0}")]
    SyncFailed(String),
    /// A write whose failure was reported through its [`Durable`] (the caller had already moved
    /// on, e.g. a settle after the engine forgot the message).
    #[error("the write did not reach the store: {0}")]
    WriteFailed(String),
}

impl StoreError {
    pub fn io(path: impl fmt::Display, source: std::io::Error) -> Self {
        StoreError::Io { path: path.to_string(), source }
    }

    /// The same error again, for each of several writes one failure stopped (`io::Error` is not
    /// `Clone`; its kind and text are kept).
    pub fn for_each_write(&self) -> Self {
        match self {
            StoreError::Io { path, source } => StoreError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            StoreError::Locked(d) => StoreError::Locked(d.clone()),
            StoreError::NoSuchRecord(id) => StoreError::NoSuchRecord(*id),
            StoreError::RecordTooLarge { size, limit } => {
                StoreError::RecordTooLarge { size: *size, limit: *limit }
            }
            StoreError::Damaged(q, why) => StoreError::Damaged(*q, why.clone()),
            StoreError::SyncFailed(why) => StoreError::SyncFailed(why.clone()),
            StoreError::WriteFailed(why) => StoreError::WriteFailed(why.clone()),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What recovery found in one queue's log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Live records handed to the visitor.
    pub live_records: u64,
    /// Bytes cut from the end of the newest segment (a write torn by a crash; normal).
    pub truncated_bytes: u64,
    /// Set when the log is damaged somewhere other than a torn tail (bad CRC or length in the
    /// middle of the log). Records before the damage were still visited; the engine opens the
    /// queue closed and reports it, and leaves the files untouched for inspection.
    pub damage: Option<String>,
}

/// Counters of one queue's log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueLogStats {
    pub live_records: u64,
    pub segments: u64,
    pub bytes_on_disk: u64,
}

/// Counters of the whole store, for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreStats {
    pub bytes_on_disk: u64,
    pub fsyncs: u64,
    /// Group-commit rounds: (appended + settled) / rounds is how many writes one round made
    /// durable.
    pub sync_rounds: u64,
    /// Sum of fsync durations, for the average latency.
    pub fsync_seconds_total: f64,
    /// Longest single fsync so far.
    pub fsync_seconds_max: f64,
    pub records_appended: u64,
    pub records_settled: u64,
    pub segments_deleted: u64,
    /// Deleted segments whose file became the queue's next segment instead (counted in
    /// `segments_deleted` too).
    pub segments_reused: u64,
}

/// The store: a set of queue logs plus one small definitions document.
pub trait Store: Send + Sync + 'static {
    /// Open (creating if needed) the log of `queue`. Call [`QueueLog::recover`] once before use.
    fn open_queue(&self, queue: QueueId) -> Result<Arc<dyn QueueLog>>;

    /// Delete a queue's log and its files. Its records are gone for good.
    fn remove_queue(&self, queue: QueueId) -> Result<()>;

    /// Queues that have a log in the store (to find logs whose definition was lost).
    fn queue_ids(&self) -> Result<Vec<QueueId>>;

    /// Replace the definitions document atomically and durably (returns after it is on disk).
    fn save_definitions(&self, bytes: &[u8]) -> Result<()>;

    /// The last saved definitions document, if any.
    fn load_definitions(&self) -> Result<Option<Vec<u8>>>;

    /// Force everything written so far to disk, whatever the fsync mode (used at shutdown).
    fn flush(&self) -> Result<()>;

    fn stats(&self) -> StoreStats;

    /// False for the memory store: nothing survives a restart.
    fn is_persistent(&self) -> bool;

    fn fsync_mode(&self) -> FsyncMode;
}

/// One queue's append-only log of records.
/// [`QueueLog::append_batch`] as separate appends: undoes the ones written if one fails.
pub fn append_one_by_one(
    log: &(impl QueueLog + ?Sized),
    records: &[&[u8]],
) -> Result<(Vec<RecordId>, Durable)> {
    let mut ids = Vec::with_capacity(records.len());
    let mut durable = Durable::done();
    for record in records {
        match log.append(record) {
            Ok((id, d)) => {
                ids.push(id);
                durable = durable.join(d);
            }
            Err(e) => {
                // Settle the ones already written, so none of them comes back.
                let _ = log.settle_batch(&ids);
                return Err(e);
            }
        }
    }
    Ok((ids, durable))
}

pub trait QueueLog: Send + Sync {
    /// Append one record. Returns where it lives and a promise of its durability. The record is
    /// in the kernel's hands (it survives the process dying) when this returns.
    fn append(&self, record: &[u8]) -> Result<(RecordId, Durable)>;

    /// Append several records as one write where the log can (one `pwrite` for a whole SQS
    /// batch, not ten). All or nothing: on an error none of them was appended. The promise
    /// covers every record.
    fn append_batch(&self, records: &[&[u8]]) -> Result<(Vec<RecordId>, Durable)> {
        append_one_by_one(self, records)
    }

    /// Read a live record back.
    fn read(&self, id: RecordId) -> Result<Vec<u8>>;

    /// Mark a record settled (acked, expired, moved): it never comes back after a restart once
    /// the returned promise resolves. Settling an unknown or settled record is an error.
    fn settle(&self, id: RecordId) -> Result<Durable>;

    /// Settle several records, with one write per file where the log can. One result per id,
    /// in order.
    fn settle_batch(&self, ids: &[RecordId]) -> Vec<Result<Durable>> {
        ids.iter().map(|&id| self.settle(id)).collect()
    }

    /// Visit every live record in log order. Called once, right after opening.
    fn recover(&self, visit: &mut dyn FnMut(RecordId, &[u8])) -> Result<RecoveryReport>;

    /// Live records in old, mostly settled segments. The owner re-appends each (as a new
    /// record) and settles the old one so the segment can be deleted; one old message must not
    /// pin a whole segment on disk.
    fn stragglers(&self) -> Vec<RecordId>;

    fn stats(&self) -> QueueLogStats;
}
