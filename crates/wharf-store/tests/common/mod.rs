#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wharf_store::file::{FileStore, FileStoreOptions};
use wharf_store::{FsyncMode, QueueLog, RecordId, RecoveryReport, Store, StoreError};

pub fn options(segment_size: u64) -> FileStoreOptions {
    FileStoreOptions { fsync: FsyncMode::Always, segment_size, ..FileStoreOptions::default() }
}

/// Open a store, as a reopen after a drop would. Another test in the same binary spawning a
/// process forks this process's file table, and the child holds a dropped store's lock (its open
/// file description) until its exec closes it (O_CLOEXEC): wait out that moment.
pub fn open(dir: &Path, segment_size: u64) -> Arc<FileStore> {
    open_with(dir, options(segment_size))
}

/// [`open`] with preallocated segments (spares prepared in the background).
pub fn open_preallocated(dir: &Path, segment_size: u64) -> Arc<FileStore> {
    open_with(dir, FileStoreOptions { preallocate: true, ..options(segment_size) })
}

pub fn open_with(dir: &Path, options: FileStoreOptions) -> Arc<FileStore> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match FileStore::open(dir, options.clone()) {
            Ok(store) => return store,
            Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => panic!("open store: {e:?}"),
        }
    }
}

/// Open queue `q` and recover it, returning the log, the visited records and the report.
pub type Visited = Vec<(RecordId, Vec<u8>)>;

pub fn recover(store: &FileStore, q: u64) -> (Arc<dyn QueueLog>, Visited, RecoveryReport) {
    let log = store.open_queue(q).expect("open queue");
    let mut seen = Vec::new();
    let report = log.recover(&mut |id, r| seen.push((id, r.to_vec()))).expect("recover");
    (log, seen, report)
}

pub fn queue_dir(dir: &Path, q: u64) -> PathBuf {
    dir.join("queues").join(format!("{q:016x}"))
}

pub fn files(dir: &Path, q: u64, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(queue_dir(dir, q))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .filter(|p| p.file_stem().is_none_or(|s| s != "spare"))
        .collect();
    v.sort();
    v
}

pub fn seg_path(dir: &Path, q: u64, n: u32) -> PathBuf {
    queue_dir(dir, q).join(format!("{n:08x}.seg"))
}

pub fn ack_path(dir: &Path, q: u64, n: u32) -> PathBuf {
    queue_dir(dir, q).join(format!("{n:08x}.ack"))
}

pub fn record(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
}
