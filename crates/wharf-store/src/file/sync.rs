//! Group commit: one sync thread per store turns many writes into few `fdatasync`s.
//!
//! # The ordering argument
//!
//! A writer (append or settle), for every write:
//! 1. writes its bytes to the file with `pwrite` (they are in the kernel's page cache);
//! 2. locks `SyncState`, puts the file on the dirty list (unless it is already queued), takes
//!    its LSN with `appended += 1`, unlocks.
//!
//! The sync thread, for every round:
//! 1. locks `SyncState`, reads `target = appended` FIRST, THEN takes the dirty list, unlocks;
//! 2. syncs every file it took (several at once, on helper threads of the round; the step ends
//!    when every one of them has completed);
//! 3. publishes `synced = target`.
//!
//! (When the last round was shared by several writes, the thread may first sleep a little for
//! more writes to join the next one: see [`gather_wait`]. The sleep comes before step 1 and
//! changes nothing below.)
//!
//! Claim: when `synced = T` is published, every write W with LSN ≤ T is on disk.
//! Proof: W's LSN ≤ T means W's increment happened before this round read `target`. W queued
//! its file (step 2) before its increment, and wrote its bytes (step 1) before that. So W's file
//! was put on the dirty list before this round took the list. Either it was still on the list
//! when this round took it — then this round's sync of it started after W's bytes were written
//! — or an earlier round took it after W queued it — then that round's sync started after W's
//! bytes were written and completed before this round began (one thread, rounds run in order,
//! and a failed round stops everything). Either way a sync that began after W's write has
//! completed. The same holds when W found its file already queued: it was queued at a moment
//! after W's write, so the round that takes it syncs after W's write. ∎
//!
//! (Reading `target` first matters when writers do not hold the lock across both steps; here
//! they do, which makes the order doubly safe, and the lock is held only for a push and an add.)
//!
//! If a sync fails, the thread publishes `failed` and stops. It does not retry: after a failed
//! `fdatasync` Linux may have dropped the dirty pages and cleared the error, so a retry that
//! "succeeds" proves nothing (PostgreSQL's fsyncgate). Every later write is refused.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use crate::durable::SyncProgress;
use crate::{Durable, FsyncMode, Result, StoreError, SyncWatermark};

/// At most this many `fdatasync`s of one round run at the same time (the sync thread and its
/// helper threads).
const MAX_PARALLEL_SYNCS: usize = 8;

/// The longest a round waits for more writes ([`FileStoreOptions::group_commit_wait_percent`]).
///
/// [`FileStoreOptions::group_commit_wait_percent`]: super::FileStoreOptions::group_commit_wait_percent
pub const MAX_GROUP_COMMIT_WAIT: Duration = Duration::from_millis(1);

/// A round's (or one helper's) result: the reason the store must stop, on a failed sync.
type SyncOutcome = std::result::Result<(), String>;

/// A test hook called with each path just before it is synced; an `Err` is treated exactly like
/// a failed `fdatasync`.
pub type SyncHook = Arc<dyn Fn(&Path) -> io::Result<()> + Send + Sync>;

/// A file (or directory) the sync thread may have to sync.
#[derive(Debug)]
pub(crate) struct SyncFile {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    is_dir: bool,
    /// On the dirty list now (changed only under the `SyncState` lock).
    queued: AtomicBool,
}

impl SyncFile {
    pub(crate) fn new(file: File, path: PathBuf) -> Arc<Self> {
        Arc::new(SyncFile { file, path, is_dir: false, queued: AtomicBool::new(false) })
    }

    pub(crate) fn open_dir(path: &Path) -> Result<Arc<Self>> {
        let file = File::open(path).map_err(|e| StoreError::io(path.display(), e))?;
        Ok(Arc::new(SyncFile {
            file,
            path: path.to_path_buf(),
            is_dir: true,
            queued: AtomicBool::new(false),
        }))
    }
}

struct SyncState {
    dirty: Vec<Arc<SyncFile>>,
    /// Last published watermark.
    synced: u64,
    flush_wanted: bool,
    shutdown: bool,
    /// The thread has exited (after shutdown or a failure); nothing more will be synced.
    exited: bool,
}

pub(crate) struct SyncShared {
    mode: FsyncMode,
    state: Mutex<SyncState>,
    /// Wakes the sync thread.
    wake: Condvar,
    /// Wakes `flush` callers after a round.
    round_done: Condvar,
    /// The store-wide LSN: number of writes handed to the kernel. Changed under `state`.
    appended: AtomicU64,
    failed: Mutex<Option<Arc<str>>>,
    /// The store was closed: writes are refused.
    closed: AtomicBool,
    /// Published after every round; wakes the writes it made durable.
    progress: Arc<SyncProgress>,
    /// See [`gather_wait`].
    wait_percent: u32,
    hook: Option<SyncHook>,
    /// The store's directory.
    root: Arc<SyncFile>,
    fsyncs: AtomicU64,
    rounds: AtomicU64,
    fsync_nanos_total: AtomicU64,
    fsync_nanos_max: AtomicU64,
}

impl SyncShared {
    /// Refuse writes once a sync failed or the store closed.
    pub(crate) fn check_writable(&self) -> Result<()> {
        if let Some(reason) = &*self.failed.lock() {
            return Err(StoreError::SyncFailed(reason.to_string()));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::SyncFailed("store closed".into()));
        }
        Ok(())
    }

    /// Put a file on the dirty list without taking an LSN (a directory after creating a file in
    /// it: the write that follows takes the LSN, and its round covers this too).
    pub(crate) fn mark_dirty(&self, file: &Arc<SyncFile>) {
        let mut state = self.state.lock();
        self.queue(&mut state, file);
    }

    /// Record a write to `file` whose bytes are already in the kernel; returns its LSN.
    pub(crate) fn wrote(&self, file: &Arc<SyncFile>) -> u64 {
        let mut state = self.state.lock();
        self.queue(&mut state, file);
        let lsn = self.appended.fetch_add(1, Ordering::SeqCst) + 1;
        drop(state);
        if self.mode == FsyncMode::Always {
            self.wake.notify_one();
        }
        lsn
    }

    fn queue(&self, state: &mut SyncState, file: &Arc<SyncFile>) {
        // `Never` keeps no dirty list: nothing would drain it, and it would hold deleted
        // segments open (and their disk space allocated). Its `flush` uses `syncfs` instead.
        if self.mode == FsyncMode::Never {
            return;
        }
        if !file.queued.swap(true, Ordering::Relaxed) {
            state.dirty.push(file.clone());
        }
    }

    /// The promise for a write with this LSN under the store's mode.
    pub(crate) fn durable(&self, lsn: u64) -> Durable {
        match self.mode {
            FsyncMode::Always => Durable::pending(lsn, self.progress.clone()),
            // In these modes a write is "durable" once the kernel has it, which it does.
            FsyncMode::Interval(_) | FsyncMode::Never => Durable::done(),
        }
    }

    /// Sync one file now, outside the group-commit loop (directory after an unlink). A failure
    /// poisons the store like any failed sync.
    pub(crate) fn sync_now(&self, file: &SyncFile) -> Result<()> {
        if self.mode == FsyncMode::Never {
            return Ok(());
        }
        self.check_writable()?;
        self.sync_file(file).map_err(|e| {
            let reason = format!("sync of {} failed: {e}", file.path.display());
            self.fail(&reason);
            StoreError::SyncFailed(reason)
        })
    }

    fn sync_file(&self, file: &SyncFile) -> io::Result<()> {
        if let Some(hook) = &self.hook {
            hook(&file.path)?;
        }
        let start = Instant::now();
        if file.is_dir {
            file.file.sync_all()?;
        } else {
            file.file.sync_data()?;
        }
        let nanos = start.elapsed().as_nanos() as u64;
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_nanos_total.fetch_add(nanos, Ordering::Relaxed);
        self.fsync_nanos_max.fetch_max(nanos, Ordering::Relaxed);
        Ok(())
    }

    /// `syncfs` on the file system holding the store: `Never` mode's `flush`, which has no
    /// dirty list to work from.
    fn sync_filesystem(&self) -> io::Result<()> {
        if let Some(hook) = &self.hook {
            hook(&self.root.path)?;
        }
        let start = Instant::now();
        syncfs(&self.root.file)?;
        let nanos = start.elapsed().as_nanos() as u64;
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_nanos_total.fetch_add(nanos, Ordering::Relaxed);
        self.fsync_nanos_max.fetch_max(nanos, Ordering::Relaxed);
        Ok(())
    }

    fn fail(&self, reason: &str) {
        let mut failed = self.failed.lock();
        if failed.is_some() {
            return;
        }
        tracing::error!(
            "{reason}; the store stops accepting writes (dirty pages may have been dropped, \
             so nothing since the last good sync can be promised)"
        );
        let reason: Arc<str> = Arc::from(reason);
        *failed = Some(reason.clone());
        drop(failed);
        self.progress.fail(reason);
        let _state = self.state.lock();
        self.round_done.notify_all();
    }

    /// The sync thread: rounds until shutdown or a failure, then nothing more becomes durable.
    fn run(self: &Arc<Self>) {
        run_in_background();
        self.run_rounds();
        self.progress.close();
    }

    /// One sync thread's loop. It owns the round's helper threads: they stop when it returns.
    fn run_rounds(self: &Arc<Self>) {
        let mut helpers = SyncHelpers::new(self.clone());
        if self.wait_percent > 0 {
            precise_sleeps();
        }
        // How long the next round waits for more writes (zero after a round of one write).
        let mut gather = Duration::ZERO;
        let mut next_interval_sync = match self.mode {
            FsyncMode::Interval(d) => Some(Instant::now() + d),
            _ => None,
        };
        loop {
            let mut state = self.state.lock();
            let final_round = loop {
                if state.shutdown {
                    break true;
                }
                if self.failed.lock().is_some() {
                    state.exited = true;
                    self.round_done.notify_all();
                    return;
                }
                let pending = self.appended.load(Ordering::SeqCst) > state.synced;
                if state.flush_wanted {
                    break false;
                }
                match self.mode {
                    FsyncMode::Always => {
                        if pending {
                            if !gather.is_zero() {
                                drop(state);
                                std::thread::sleep(gather);
                                state = self.state.lock();
                            }
                            break false;
                        }
                        self.wake.wait(&mut state);
                    }
                    FsyncMode::Interval(d) => {
                        let due = next_interval_sync.expect("interval mode has a deadline");
                        if Instant::now() >= due {
                            next_interval_sync = Some(Instant::now() + d);
                            if pending {
                                break false;
                            }
                        }
                        self.wake.wait_until(&mut state, next_interval_sync.expect("set"));
                    }
                    FsyncMode::Never => self.wake.wait(&mut state),
                }
            };
            // Snapshot the target FIRST, then take the dirty list (see the module docs).
            let target = self.appended.load(Ordering::SeqCst);
            let writes = target.saturating_sub(state.synced);
            let dirty = std::mem::take(&mut state.dirty);
            for file in &dirty {
                file.queued.store(false, Ordering::Relaxed);
            }
            state.flush_wanted = false;
            drop(state);

            let skip = final_round && self.mode == FsyncMode::Never;
            if !skip && target > self.published() && self.mode == FsyncMode::Never {
                if let Err(e) = self.sync_filesystem() {
                    self.fail(&format!("syncfs of {} failed: {e}", self.root.path.display()));
                }
            } else if !skip {
                // Every file taken is synced, even when `target` did not move: a directory
                // queued for a new segment whose first write then failed carries no LSN of its
                // own, and dropping it unsynced would leave the segment's name volatile.
                let started = Instant::now();
                if let Err(reason) = helpers.sync_round(&dirty) {
                    self.fail(&reason);
                }
                gather = gather_wait(self.wait_percent, writes, started.elapsed());
            }
            drop(dirty);
            if self.failed.lock().is_some() {
                let mut state = self.state.lock();
                state.exited = true;
                self.round_done.notify_all();
                return;
            }
            if !skip {
                self.rounds.fetch_add(1, Ordering::Relaxed);
                self.publish(target);
            }
            if final_round {
                let mut state = self.state.lock();
                state.exited = true;
                self.round_done.notify_all();
                return;
            }
        }
    }

    fn published(&self) -> u64 {
        self.state.lock().synced
    }

    fn publish(&self, target: u64) {
        let mut state = self.state.lock();
        if target > state.synced {
            state.synced = target;
            self.progress.publish(target);
        }
        self.round_done.notify_all();
    }

    /// Sync everything written so far and wait for it, whatever the mode.
    pub(crate) fn flush(&self) -> Result<()> {
        let target = self.appended.load(Ordering::SeqCst);
        let mut state = self.state.lock();
        loop {
            if let Some(reason) = &*self.failed.lock() {
                return Err(StoreError::SyncFailed(reason.to_string()));
            }
            if state.synced >= target {
                return Ok(());
            }
            if state.exited {
                return Err(StoreError::SyncFailed("store closed".into()));
            }
            state.flush_wanted = true;
            self.wake.notify_one();
            self.round_done.wait(&mut state);
        }
    }

    pub(crate) fn counters(&self) -> SyncCounters {
        SyncCounters {
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            rounds: self.rounds.load(Ordering::Relaxed),
            fsync_seconds_total: self.fsync_nanos_total.load(Ordering::Relaxed) as f64 / 1e9,
            fsync_seconds_max: self.fsync_nanos_max.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }

    pub(crate) fn watermark(&self) -> watch::Receiver<SyncWatermark> {
        self.progress.watermark()
    }
}

/// How long the round after one that made `writes` writes durable in `sync_time` waits for more
/// writes to join it: `percent` of that sync, at most [`MAX_GROUP_COMMIT_WAIT`], and nothing
/// after a round of one write (a lone writer's next write is synced at once).
///
/// Why wait at all: every round has a fixed cost besides the disk's (the device's doorbell, the
/// flush's kernel worker, the helper and writer wake-ups; on a virtual disk the doorbell exits
/// to the hypervisor), and starting each round the moment the last ends makes many small ones.
/// A writer already waits ~1.5 syncs on average; waiting half a sync more cuts the rounds by
/// about a third. Whether that pays depends on whether the CPU or the latency is the limit:
/// measured in BENCHMARKS.md, it is off by default.
fn gather_wait(percent: u32, writes: u64, sync_time: Duration) -> Duration {
    if writes < 2 || percent == 0 {
        return Duration::ZERO;
    }
    (sync_time * percent / 100).min(MAX_GROUP_COMMIT_WAIT)
}

/// Let this thread's sleeps end when asked: Linux otherwise lets a sleep run up to 50 us late
/// (the timer slack), as much as the whole wait for a round on a fast disk.
fn precise_sleeps() {
    // SAFETY: PR_SET_TIMERSLACK only sets a number on the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong, 0, 0, 0);
    }
}

/// Put the calling thread — one of the store's own (group commit, its helpers, spare segments)
/// — under `SCHED_BATCH`: it then runs when a core is free, or at the next scheduling point,
/// instead of preempting the thread serving a request the moment it wakes.
///
/// Why: a sync thread wakes twice per `fdatasync` (its data written, the device's cache
/// flushed), and each wake-up used to preempt a request thread in the middle of a call, for a
/// few microseconds of work. Under load that was thousands of needless context switches a
/// second. It costs at most a scheduler slice of delay on a machine whose every core is busy,
/// and the policy keeps the thread's full share of the CPU. Measured in docs/BENCHMARKS.md: SQS
/// batches of 10 +6–8%, unbatched within noise, p99 no worse. A refusal (a kernel without the
/// policy) leaves the thread as it was.
pub(crate) fn run_in_background() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` lives across the call.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        tracing::debug!("store thread stays under its policy: {}", io::Error::last_os_error());
    }
}

/// `syncfs(2)`: write back everything dirty on the file system holding `file`.
pub(crate) fn syncfs(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs only reads the descriptor, which `file` keeps open during the call.
    if unsafe { libc::syncfs(file.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SyncCounters {
    pub(crate) fsyncs: u64,
    pub(crate) rounds: u64,
    pub(crate) fsync_seconds_total: f64,
    pub(crate) fsync_seconds_max: f64,
}

/// Syncs a round's files several at once when there are several (a queue's segment and ack
/// files; every queue a fan-out wrote to). The device overlaps concurrent syncs, and a round's
/// length is what every waiting confirm pays: an SNS publish to 10 queues went from about 2,200
/// to 3,900 publishes/s with them (`wharf bench sns`, ext4). The round still ends only when all
/// of them have completed.
///
/// The helpers are threads kept for the sync thread's lifetime, started the first time a round
/// needs them: starting a thread per round was ~2% of the SQS path's CPU and part of every
/// round's length.
struct SyncHelpers {
    shared: Arc<SyncShared>,
    /// One channel per helper thread, carrying the files it is to sync.
    helpers: Vec<std::sync::mpsc::Sender<Vec<Arc<SyncFile>>>>,
    results_tx: std::sync::mpsc::Sender<SyncOutcome>,
    results: std::sync::mpsc::Receiver<SyncOutcome>,
}

impl SyncHelpers {
    fn new(shared: Arc<SyncShared>) -> Self {
        let (results_tx, results) = std::sync::mpsc::channel();
        SyncHelpers { shared, helpers: Vec::new(), results_tx, results }
    }

    fn sync_round(&mut self, files: &[Arc<SyncFile>]) -> SyncOutcome {
        let per_thread = files.len().div_ceil(MAX_PARALLEL_SYNCS).max(1);
        let mut chunks = files.chunks(per_thread);
        let mine = chunks.next().unwrap_or_default();
        let mut handed_out = 0;
        let mut result = Ok(());
        for chunk in chunks {
            match self.hand_out(handed_out, chunk.to_vec()) {
                Ok(()) => handed_out += 1,
                // No helper: sync it here, one after the other.
                Err(files) => result = result.and(sync_files(&self.shared, &files)),
            }
        }
        result = result.and(sync_files(&self.shared, mine));
        for _ in 0..handed_out {
            let outcome =
                self.results.recv().unwrap_or_else(|_| Err("a sync helper thread is gone".to_owned()));
            result = result.and(outcome);
        }
        result
    }

    /// Give `files` to helper `i`, starting it if needed; hands them back if there is none.
    fn hand_out(
        &mut self,
        i: usize,
        files: Vec<Arc<SyncFile>>,
    ) -> std::result::Result<(), Vec<Arc<SyncFile>>> {
        if i == self.helpers.len() {
            let (tx, rx) = std::sync::mpsc::channel::<Vec<Arc<SyncFile>>>();
            let shared = self.shared.clone();
            let results = self.results_tx.clone();
            let started =
                std::thread::Builder::new().name("wharf-store-sync-helper".into()).spawn(move || {
                    run_in_background();
                    // Ends when the sync thread drops its end of the channel.
                    while let Ok(files) = rx.recv() {
                        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            sync_files(&shared, &files)
                        }))
                        .unwrap_or_else(|_| Err("a sync helper thread panicked".to_owned()));
                        if results.send(outcome).is_err() {
                            return;
                        }
                    }
                });
            if started.is_err() {
                return Err(files);
            }
            self.helpers.push(tx);
        }
        self.helpers[i].send(files).map_err(|returned| returned.0)
    }
}

fn sync_files(shared: &SyncShared, files: &[Arc<SyncFile>]) -> SyncOutcome {
    files.iter().try_for_each(|file| {
        shared.sync_file(file).map_err(|e| format!("fdatasync of {} failed: {e}", file.path.display()))
    })
}

/// Owns the sync thread; stopping it is `close`, which `Drop` calls.
pub(crate) struct Syncer {
    pub(crate) shared: Arc<SyncShared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Syncer {
    pub(crate) fn start(
        mode: FsyncMode,
        wait_percent: u32,
        hook: Option<SyncHook>,
        root: Arc<SyncFile>,
    ) -> Result<Syncer> {
        let shared = Arc::new(SyncShared {
            mode,
            state: Mutex::new(SyncState {
                dirty: Vec::new(),
                synced: 0,
                flush_wanted: false,
                shutdown: false,
                exited: false,
            }),
            wake: Condvar::new(),
            round_done: Condvar::new(),
            appended: AtomicU64::new(0),
            failed: Mutex::new(None),
            closed: AtomicBool::new(false),
            progress: SyncProgress::new(),
            wait_percent,
            hook,
            root,
            fsyncs: AtomicU64::new(0),
            rounds: AtomicU64::new(0),
            fsync_nanos_total: AtomicU64::new(0),
            fsync_nanos_max: AtomicU64::new(0),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("wharf-store-sync".into())
            .spawn(move || thread_shared.run())
            .map_err(|e| StoreError::io("sync thread", e))?;
        Ok(Syncer { shared, thread: Mutex::new(Some(thread)) })
    }

    /// Refuse further writes (callers then wait for in-flight writes to finish) and stop.
    pub(crate) fn refuse_writes(&self) {
        self.shared.closed.store(true, Ordering::Release);
    }

    /// Run a last round (except in `Never` mode) and join the thread.
    pub(crate) fn stop(&self) {
        {
            let mut state = self.shared.state.lock();
            state.shutdown = true;
            self.shared.wake.notify_all();
        }
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.refuse_writes();
        self.stop();
    }
}

/// How long `Interval` mode may sleep at most is the interval itself; this keeps a
/// zero interval from spinning.
pub(crate) fn normalize_mode(mode: FsyncMode) -> FsyncMode {
    match mode {
        FsyncMode::Interval(d) if d < Duration::from_millis(1) => {
            FsyncMode::Interval(Duration::from_millis(1))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_round_shared_by_several_writes_makes_the_next_one_wait() {
        let sync = Duration::from_micros(180);
        // A lone writer (or nothing) never waits: its next write syncs as soon as it is made.
        assert_eq!(gather_wait(50, 0, sync), Duration::ZERO);
        assert_eq!(gather_wait(50, 1, sync), Duration::ZERO);
        // Others are writing: the share of a sync asked for, for more of them to join.
        assert_eq!(gather_wait(50, 2, sync), Duration::from_micros(90));
        assert_eq!(gather_wait(25, 40, sync), Duration::from_micros(45));
        // Not asked for: never.
        assert_eq!(gather_wait(0, 40, sync), Duration::ZERO);
        // A slow disk does not hold writes back for long.
        assert_eq!(gather_wait(100, 40, Duration::from_millis(30)), MAX_GROUP_COMMIT_WAIT);
    }
}
