//! The file store: per-queue segment logs and ack files in a data directory, one group-commit
//! sync thread, crash recovery. The byte layout, recovery rules and the group-commit ordering
//! argument are written down in the crate README.
//!
//! ```text
//! <dir>/LOCK                       advisory lock held while a store has the directory open
//! <dir>/definitions.json           the definitions document (replaced atomically)
//! <dir>/queues/<queue id, 16 hex>/<segment, 8 hex>.seg   records
//! <dir>/queues/<queue id, 16 hex>/<segment, 8 hex>.ack   offsets of settled records
//! <dir>/queues/<queue id, 16 hex>/spare.seg, spare.ack     the next segment, prepared ahead
//! ```

mod format;
mod queue;
mod recovery;
mod spare;
mod sync;

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

pub use sync::{SyncHook, MAX_GROUP_COMMIT_WAIT};

use self::format::{FRAME_HEADER_LEN, HEADER_LEN};
use self::queue::{remove_file_if_exists, FileQueueLog};
use self::spare::SparePreparer;
use self::sync::{normalize_mode, SyncFile, Syncer};
use crate::{FsyncMode, QueueId, QueueLog, Result, Store, StoreError, StoreStats, SyncWatermark};

const DEFINITIONS: &str = "definitions.json";
const DEFINITIONS_TMP: &str = "definitions.json.tmp";
const LOCK: &str = "LOCK";
const QUEUES: &str = "queues";

/// Offsets are u32, so segments and records are capped well below 4 GiB.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;
pub const MAX_RECORD_SIZE: usize = 1 << 30;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStoreOptions {
    pub fsync: FsyncMode,
    /// A segment is closed when the next record would take it past this size (a record larger
    /// than this goes alone in its own segment). At most [`MAX_SEGMENT_SIZE`].
    pub segment_size: u64,
    /// Larger records are refused with [`StoreError::RecordTooLarge`]. At most
    /// [`MAX_RECORD_SIZE`].
    pub max_record_size: usize,
    /// Prepare each queue's next segment (and ack file) full of zeros and synced, in the
    /// background, so appends never grow a file and a sync never has to write its inode (see
    /// the `spare` module). Costs a second write of every segment, off the confirm path. Has no
    /// effect with `FsyncMode::Never`, which never syncs.
    pub preallocate: bool,
    /// With `FsyncMode::Always`: after a group-commit round shared by several writes, the next
    /// round first waits this percentage of that round's sync time (at most
    /// [`MAX_GROUP_COMMIT_WAIT`]) for more writes to join it. Fewer, larger rounds spend less
    /// CPU per write at the cost of that much latency; 0 (the default) never waits. At most 100.
    pub group_commit_wait_percent: u32,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        FileStoreOptions {
            fsync: FsyncMode::Always,
            segment_size: 8 << 20,
            max_record_size: 64 << 20,
            preallocate: false,
            group_commit_wait_percent: 0,
        }
    }
}

/// Counters shared by a store and its logs.
#[derive(Debug, Default)]
pub(crate) struct StoreCounters {
    pub(crate) appended: AtomicU64,
    pub(crate) settled: AtomicU64,
    pub(crate) segments_deleted: AtomicU64,
    pub(crate) segments_reused: AtomicU64,
}

pub struct FileStore {
    dir: PathBuf,
    queues_dir: PathBuf,
    queues_dir_file: Arc<SyncFile>,
    options: FileStoreOptions,
    syncer: Syncer,
    counters: Arc<StoreCounters>,
    logs: Mutex<HashMap<QueueId, Arc<FileQueueLog>>>,
    definitions: Mutex<()>,
    spares: Option<Arc<SparePreparer>>,
    /// Holds the advisory lock on `<dir>/LOCK` until the store is dropped.
    _lock: File,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore").field("dir", &self.dir).field("options", &self.options).finish()
    }
}

impl FileStore {
    /// Open (creating if needed) the store in `dir`, lock the directory and start the sync
    /// thread. Queue logs are recovered one by one through [`Store::open_queue`] and
    /// [`QueueLog::recover`].
    pub fn open(dir: &Path, options: FileStoreOptions) -> Result<Arc<FileStore>> {
        Self::open_with_sync_hook(dir, options, None)
    }

    /// [`FileStore::open`] with a hook called before every sync, for fault-injection tests: a
    /// hook returning `Err` makes that sync fail.
    pub fn open_with_sync_hook(
        dir: &Path,
        mut options: FileStoreOptions,
        hook: Option<SyncHook>,
    ) -> Result<Arc<FileStore>> {
        let invalid =
            |msg: String| StoreError::io(dir.display(), io::Error::new(io::ErrorKind::InvalidInput, msg));
        if options.segment_size > MAX_SEGMENT_SIZE || options.segment_size < HEADER_LEN + FRAME_HEADER_LEN + 1
        {
            return Err(invalid(format!("segment size {} out of range", options.segment_size)));
        }
        if options.max_record_size > MAX_RECORD_SIZE {
            return Err(invalid(format!(
                "max record size {} over {MAX_RECORD_SIZE}",
                options.max_record_size
            )));
        }
        if options.group_commit_wait_percent > 100 {
            return Err(invalid(format!(
                "group commit wait of {}% of a sync is over 100%",
                options.group_commit_wait_percent
            )));
        }
        options.fsync = normalize_mode(options.fsync);

        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir.display(), e))?;
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| StoreError::io(lock_path.display(), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StoreError::Locked(dir.display().to_string())),
            Err(TryLockError::Error(e)) => return Err(StoreError::io(lock_path.display(), e)),
        }

        let queues_dir = dir.join(QUEUES);
        let queues_created = !queues_dir.exists();
        std::fs::create_dir_all(&queues_dir).map_err(|e| StoreError::io(queues_dir.display(), e))?;
        // A leftover temporary from a save that died before its rename: the old document is
        // intact, the temporary means nothing.
        remove_file_if_exists(&dir.join(DEFINITIONS_TMP))?;
        if created || queues_created {
            sync_dir(dir)?;
            if created {
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    sync_dir(parent)?;
                }
            }
        }
        let queues_dir_file = SyncFile::open_dir(&queues_dir)?;
        raise_open_file_limit();

        let root = SyncFile::open_dir(dir)?;
        if options.fsync != FsyncMode::Never {
            // A previous process killed with writes still in the page cache left them there,
            // unsynced. Make them durable before recovery reads them, so that nothing recovery
            // hands to the engine (records, settles, cut tails) can be taken back by a later
            // power cut. One `syncfs` is far cheaper than syncing every file of every queue.
            sync::syncfs(&root.file).map_err(|e| StoreError::io(dir.display(), e))?;
        }
        let syncer = Syncer::start(options.fsync, options.group_commit_wait_percent, hook, root)?;
        let spares = if options.preallocate && options.fsync != FsyncMode::Never {
            Some(Arc::new(SparePreparer::start().map_err(|e| StoreError::io("spare segment thread", e))?))
        } else {
            None
        };
        tracing::info!(dir = %dir.display(), fsync = %options.fsync, "file store open");
        Ok(Arc::new(FileStore {
            dir: dir.to_path_buf(),
            queues_dir,
            queues_dir_file,
            options,
            syncer,
            counters: Arc::new(StoreCounters::default()),
            logs: Mutex::new(HashMap::new()),
            definitions: Mutex::new(()),
            spares,
            _lock: lock,
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Wait until every spare segment requested so far is prepared (tests use this to know
    /// which kind of file the next rotation takes).
    pub fn wait_for_spares(&self) {
        if let Some(spares) = &self.spares {
            spares.wait_idle();
        }
    }

    pub fn options(&self) -> &FileStoreOptions {
        &self.options
    }

    /// Group-commit rounds completed so far (each round may sync several files).
    pub fn sync_rounds(&self) -> u64 {
        self.syncer.shared.counters().rounds
    }

    /// The sync watermark, for callers that want to watch durability progress.
    pub fn watermark(&self) -> watch::Receiver<SyncWatermark> {
        self.syncer.shared.watermark()
    }

    fn queue_dir(&self, queue: QueueId) -> PathBuf {
        self.queues_dir.join(format!("{queue:016x}"))
    }
}

impl Drop for FileStore {
    fn drop(&mut self) {
        // Refuse new writes, let writes in progress finish, run a last sync round, stop the
        // thread; the directory lock is released after this, when `_lock` is dropped.
        self.syncer.refuse_writes();
        for log in self.logs.lock().values() {
            log.barrier();
        }
        if let Some(spares) = &self.spares {
            spares.stop();
        }
        self.syncer.stop();
    }
}

impl Store for FileStore {
    fn open_queue(&self, queue: QueueId) -> Result<Arc<dyn QueueLog>> {
        let mut logs = self.logs.lock();
        if let Some(log) = logs.get(&queue) {
            return Ok(log.clone());
        }
        let dir = self.queue_dir(queue);
        match std::fs::create_dir(&dir) {
            Ok(()) => self.syncer.shared.sync_now(&self.queues_dir_file)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::io(dir.display(), e)),
        }
        let dir_file = SyncFile::open_dir(&dir)?;
        let log = Arc::new(FileQueueLog::new(
            queue,
            dir,
            dir_file,
            &self.options,
            self.syncer.shared.clone(),
            self.counters.clone(),
            self.spares.clone(),
        ));
        logs.insert(queue, log.clone());
        Ok(log)
    }

    fn remove_queue(&self, queue: QueueId) -> Result<()> {
        let mut logs = self.logs.lock();
        if let Some(log) = logs.remove(&queue) {
            log.mark_removed();
        }
        // A spare being written into the directory would stop its removal.
        self.wait_for_spares();
        let dir = self.queue_dir(queue);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io(dir.display(), e)),
        }
        self.syncer.shared.sync_now(&self.queues_dir_file)
    }

    fn queue_ids(&self) -> Result<Vec<QueueId>> {
        let entries =
            std::fs::read_dir(&self.queues_dir).map_err(|e| StoreError::io(self.queues_dir.display(), e))?;
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(self.queues_dir.display(), e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() == 16 && entry.file_type().is_ok_and(|t| t.is_dir()) {
                if let Ok(id) = u64::from_str_radix(name, 16) {
                    ids.push(id);
                }
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn save_definitions(&self, bytes: &[u8]) -> Result<()> {
        let _one_at_a_time = self.definitions.lock();
        let tmp = self.dir.join(DEFINITIONS_TMP);
        let target = self.dir.join(DEFINITIONS);
        let io_tmp = |e| StoreError::io(tmp.display(), e);
        let mut file = File::create(&tmp).map_err(io_tmp)?;
        file.write_all(bytes).map_err(io_tmp)?;
        // Always synced, whatever the fsync mode: definitions are small and rare, and losing a
        // queue's definition would orphan its log.
        file.sync_data().map_err(io_tmp)?;
        drop(file);
        std::fs::rename(&tmp, &target).map_err(|e| StoreError::io(target.display(), e))?;
        sync_dir(&self.dir)
    }

    fn load_definitions(&self) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join(DEFINITIONS);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(path.display(), e)),
        }
    }

    fn flush(&self) -> Result<()> {
        self.syncer.shared.flush()
    }

    fn stats(&self) -> StoreStats {
        let sync = self.syncer.shared.counters();
        let bytes_on_disk = self.logs.lock().values().map(|log| log.bytes_on_disk()).sum();
        StoreStats {
            bytes_on_disk,
            fsyncs: sync.fsyncs,
            sync_rounds: sync.rounds,
            fsync_seconds_total: sync.fsync_seconds_total,
            fsync_seconds_max: sync.fsync_seconds_max,
            records_appended: self.counters.appended.load(Ordering::Relaxed),
            records_settled: self.counters.settled.load(Ordering::Relaxed),
            segments_deleted: self.counters.segments_deleted.load(Ordering::Relaxed),
            segments_reused: self.counters.segments_reused.load(Ordering::Relaxed),
        }
    }

    fn is_persistent(&self) -> bool {
        true
    }

    fn fsync_mode(&self) -> FsyncMode {
        self.options.fsync
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(dir.display(), e))
}

/// Every segment keeps its `.seg` and `.ack` open, so a store with many queues needs many file
/// descriptors: raise the soft limit to the hard one, once per process (as Go's runtime does).
fn raise_open_file_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
        }
    });
}
