//! One queue's log: its segments, their in-memory index, append/read/settle and deletion.
//!
//! Memory per segment: a sorted `Vec<u32>` of frame offsets (4 bytes per record) and a settled
//! bitset (1 bit per record), plus a few counters. No record bodies are kept.
//!
//! Lock order: a queue's `state` mutex, then the sync state (inside `SyncShared`). The sync
//! thread never takes a queue lock.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::ThreadId;

use parking_lot::Mutex;

use super::format::{self, Framing, FRAME_HEADER_LEN, HEADER_LEN};
use super::spare::{Spare, SparePreparer, SpareSlot, SPARE_SEG};
use super::sync::{SyncFile, SyncShared};
use super::{FileStoreOptions, StoreCounters};
use crate::{Durable, QueueId, QueueLog, QueueLogStats, RecordId, RecoveryReport, Result, StoreError};

/// At most this many ids per `stragglers()` call.
pub(crate) const STRAGGLER_BATCH: usize = 1024;
/// A segment is "mostly settled" when at most 1/STRAGGLER_LIVE_RATIO of its records are live.
const STRAGGLER_LIVE_RATIO: u64 = 10;
/// Segments at least this many places behind the newest are drained when their live bytes are
/// at most 1/STRAGGLER_LIVE_RATIO of the file.
const STRAGGLER_OLD_SEGMENTS: usize = 4;

pub(crate) fn segment_path(dir: &Path, number: u32) -> PathBuf {
    dir.join(format!("{number:08x}.seg"))
}

pub(crate) fn ack_path(dir: &Path, number: u32) -> PathBuf {
    dir.join(format!("{number:08x}.ack"))
}

pub(crate) struct Segment {
    pub(crate) number: u32,
    /// How its frames are laid out: `Framing::current` for every segment this process
    /// creates; recovery may find older ones.
    pub(crate) framing: Framing,
    pub(crate) seg: Arc<SyncFile>,
    pub(crate) ack: Arc<SyncFile>,
    /// Frame offsets of the indexed records, ascending.
    pub(crate) offsets: Vec<u32>,
    /// Bit i set = record `offsets[i]` settled.
    pub(crate) settled: Vec<u64>,
    pub(crate) live: u64,
    /// Frame bytes of live records.
    pub(crate) live_bytes: u64,
    /// End of the last good frame: where the next append goes.
    pub(crate) data_end: u64,
    /// Size of the segment file on disk: beyond `data_end` in a damaged segment, or in a
    /// preallocated or reused one (room to append: zeros, or the bytes of the file's earlier
    /// life, which no frame of this segment points into).
    pub(crate) file_len: u64,
    pub(crate) ack_len: u64,
    /// Size of the ack file on disk, when it was prefilled beyond `ack_len`.
    pub(crate) ack_file_len: u64,
    /// Damage was found here at recovery: never appended to, never deleted (left for
    /// inspection).
    pub(crate) damaged: bool,
}

impl Segment {
    pub(crate) fn new(number: u32, seg: Arc<SyncFile>, ack: Arc<SyncFile>) -> Self {
        Segment {
            number,
            framing: Framing::current(number),
            seg,
            ack,
            offsets: Vec::new(),
            settled: Vec::new(),
            live: 0,
            live_bytes: 0,
            data_end: HEADER_LEN,
            file_len: HEADER_LEN,
            ack_len: 0,
            ack_file_len: 0,
            damaged: false,
        }
    }

    /// Index a new live record (frame at `offset` of `frame_len` bytes).
    pub(crate) fn push_record(&mut self, offset: u32, frame_len: u64) {
        let i = self.offsets.len();
        self.offsets.push(offset);
        if i.is_multiple_of(64) {
            self.settled.push(0);
        }
        self.live += 1;
        self.live_bytes += frame_len;
    }

    pub(crate) fn is_settled(&self, i: usize) -> bool {
        self.settled[i / 64] & (1 << (i % 64)) != 0
    }

    pub(crate) fn mark_settled(&mut self, i: usize) {
        self.settled[i / 64] |= 1 << (i % 64);
        self.live -= 1;
        self.live_bytes -= self.frame_len(i);
    }

    /// Frame length of record i: the distance to the next frame (or the end of the data).
    pub(crate) fn frame_len(&self, i: usize) -> u64 {
        let end = self.offsets.get(i + 1).map_or(self.data_end, |&next| u64::from(next));
        end - u64::from(self.offsets[i])
    }

    fn live_ids(&self) -> impl Iterator<Item = RecordId> + '_ {
        self.offsets
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.is_settled(*i))
            .map(|(_, &offset)| RecordId { segment: self.number, offset })
    }

    fn bytes_on_disk(&self) -> u64 {
        self.file_len + self.ack_len.max(self.ack_file_len)
    }
}

pub(crate) struct QueueState {
    pub(crate) segments: BTreeMap<u32, Segment>,
    /// The segment appends go to; `None` = create a new one at the next append.
    pub(crate) active: Option<u32>,
    pub(crate) next_number: u32,
    pub(crate) recovered: bool,
    pub(crate) removed: bool,
    /// This queue has filled a segment since the store opened, so it will likely fill the
    /// active one too: worth a spare. (Most queues never fill one.)
    filled_one: bool,
    /// Reused frame buffer, so an append is one allocation-free `pwrite`.
    scratch: Vec<u8>,
}

pub(crate) struct FileQueueLog {
    pub(crate) id: QueueId,
    pub(crate) dir: PathBuf,
    pub(crate) dir_file: Arc<SyncFile>,
    pub(crate) segment_size: u64,
    pub(crate) max_record_size: usize,
    pub(crate) sync: Arc<SyncShared>,
    pub(crate) counters: Arc<StoreCounters>,
    pub(crate) state: Mutex<QueueState>,
    /// Set once recovery ran (fast path to skip the lock-protected check).
    pub(crate) recovered: AtomicBool,
    /// The thread running `recover` right now, to turn a call from inside the visitor into an
    /// error instead of a deadlock.
    pub(crate) recovering_on: Mutex<Option<ThreadId>>,
    /// Prepares this queue's next segment ahead of need, when the store preallocates.
    pub(crate) spares: Option<(Arc<SparePreparer>, Arc<SpareSlot>)>,
}

impl FileQueueLog {
    pub(crate) fn new(
        id: QueueId,
        dir: PathBuf,
        dir_file: Arc<SyncFile>,
        options: &FileStoreOptions,
        sync: Arc<SyncShared>,
        counters: Arc<StoreCounters>,
        preparer: Option<Arc<SparePreparer>>,
    ) -> Self {
        FileQueueLog {
            id,
            dir,
            dir_file,
            segment_size: options.segment_size,
            max_record_size: options.max_record_size,
            sync,
            counters,
            state: Mutex::new(QueueState {
                segments: BTreeMap::new(),
                active: None,
                next_number: 0,
                recovered: false,
                removed: false,
                filled_one: false,
                scratch: Vec::new(),
            }),
            recovered: AtomicBool::new(false),
            recovering_on: Mutex::new(None),
            spares: preparer.map(|p| (p, Arc::default())),
        }
    }

    /// Run recovery (with a visitor that ignores records) if nobody called `recover` yet, so
    /// the log is usable either way.
    fn ensure_recovered(&self) -> Result<()> {
        if self.recovered.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.in_own_visitor() {
            return Err(StoreError::io(
                self.dir.display(),
                io::Error::other("queue log used from inside its own recovery visitor"),
            ));
        }
        let mut state = self.state.lock();
        if !state.recovered {
            self.recover_locked(&mut state, &mut |_, _| {})?;
        }
        Ok(())
    }

    /// True when called from inside this log's first recovery, where the state lock is held.
    fn in_own_visitor(&self) -> bool {
        !self.recovered.load(Ordering::Acquire)
            && *self.recovering_on.lock() == Some(std::thread::current().id())
    }

    fn io_err(path: &Path, e: io::Error) -> StoreError {
        StoreError::io(path.display(), e)
    }

    fn check_open(&self, state: &QueueState) -> Result<()> {
        if state.removed {
            return Err(StoreError::io(
                self.dir.display(),
                io::Error::new(io::ErrorKind::NotFound, "queue log was removed"),
            ));
        }
        Ok(())
    }

    /// Start a new segment (and its ack file) and make it the active one.
    fn rotate(&self, state: &mut QueueState) -> Result<Option<Segment>> {
        let number = state.next_number;
        let next = number.checked_add(1).ok_or_else(|| {
            StoreError::io(self.dir.display(), io::Error::other("segment numbers exhausted"))
        })?;
        let seg_path = segment_path(&self.dir, number);
        let ack_path = ack_path(&self.dir, number);
        let (seg_file, ack_file, seg_len, ack_file_len) = match self.take_spare(&seg_path, &ack_path) {
            Some(spare) => (spare.seg, spare.ack, spare.seg_len, spare.ack_len),
            None => {
                let (seg, ack) = self.create_segment_files(&seg_path, &ack_path)?;
                (seg, ack, 0, 0)
            }
        };
        if let Err(e) = seg_file.write_all_at(&format::segment_header(number), 0) {
            let _ = std::fs::remove_file(&seg_path);
            let _ = std::fs::remove_file(&ack_path);
            return Err(Self::io_err(&seg_path, e));
        }
        state.filled_one |= state.active.is_some();
        // The new names must reach the disk too: the directory is synced in the round that
        // covers the first record written to this segment.
        self.sync.mark_dirty(&self.dir_file);
        let mut segment =
            Segment::new(number, SyncFile::new(seg_file, seg_path), SyncFile::new(ack_file, ack_path));
        segment.file_len = seg_len.max(HEADER_LEN);
        segment.ack_file_len = ack_file_len;
        state.segments.insert(number, segment);
        let previous = state.active.replace(number);
        state.next_number = next;
        // The previous segment may already be fully settled; now that it is no longer the
        // newest it can go.
        Ok(previous.and_then(|p| take_if_deletable(state, p)))
    }

    fn create_segment_files(&self, seg_path: &Path, ack_path: &Path) -> Result<(File, File)> {
        let seg_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(seg_path)
            .map_err(|e| Self::io_err(seg_path, e))?;
        match OpenOptions::new().read(true).write(true).create(true).truncate(true).open(ack_path) {
            Ok(ack_file) => Ok((seg_file, ack_file)),
            Err(e) => {
                let _ = std::fs::remove_file(seg_path);
                Err(Self::io_err(ack_path, e))
            }
        }
    }

    /// The prepared spare, renamed to this segment's names; `None` if none is ready (or the
    /// renames failed: then the segment is made the ordinary way).
    fn take_spare(&self, seg_path: &Path, ack_path: &Path) -> Option<Spare> {
        let spare = self.spares.as_ref()?.1.take()?;
        // Never replace a file: a segment number is new, but a name in use must not be lost.
        if seg_path.exists() || ack_path.exists() {
            return None;
        }
        let renamed = std::fs::rename(&spare.seg_path, seg_path).and_then(|()| {
            std::fs::rename(&spare.ack_path, ack_path).inspect_err(|_| {
                let _ = std::fs::remove_file(seg_path);
            })
        });
        match renamed {
            Ok(()) => Some(spare),
            Err(e) => {
                tracing::warn!(queue = self.id, error = %e, "could not use a spare segment");
                let _ = std::fs::remove_file(&spare.seg_path);
                let _ = std::fs::remove_file(&spare.ack_path);
                None
            }
        }
    }

    /// Have the next segment prepared in the background, if this store preallocates and no
    /// spare is ready or on its way.
    ///
    /// Asked for when the active segment is a quarter full, not when it starts: by then a
    /// queue whose consumers keep up has retired the segment before, and that file became the
    /// spare for nothing (see [`FileQueueLog::delete_segment_files`]). Three quarters of a
    /// segment's filling is left for writing zeros when it did not.
    fn request_spare(&self) {
        if let Some((preparer, slot)) = &self.spares {
            preparer.request(&self.dir, self.segment_size, self.spare_ack_len(), slot);
        }
    }

    /// A spare's ack file: room for an entry per 64 bytes of segment; past that it just grows.
    fn spare_ack_len(&self) -> u64 {
        self.segment_size / 16
    }

    /// Delete a fully settled segment's files: `.seg` first, then `.ack`.
    ///
    /// The directory is synced between the two unlinks so that the `.ack` can never be gone
    /// from the disk while the `.seg` is still there: that state would bring settled records
    /// back. The reverse leftover, an `.ack` without its `.seg` (a crash between the unlinks),
    /// is harmless and recovery removes it: the segment was fully settled, so the ack entries
    /// describe nothing, and they must not outlive their segment lest they ever be read against
    /// another file of the same number.
    ///
    /// When the queue has no spare yet, a full-size `.seg` is not unlinked but renamed to the
    /// spare's name, to become the queue's next segment. Its blocks are allocated and written
    /// already, so the preparer only makes a zeroed ack file, and the zeros a fresh spare needs
    /// (a second write of every byte a busy queue appends, and flushes that group commits wait
    /// behind) are not written at all. For the ordering above the rename is the unlink: the
    /// name is gone, and recovery removes a leftover spare. The old records stay in the file
    /// behind the new ones; frame tags keep them from being read as the new segment's.
    pub(crate) fn delete_segment_files(&self, segment: Segment) -> Result<()> {
        let seg_path = segment.seg.path.clone();
        let ack_path = segment.ack.path.clone();
        let reuse = self.claim_spare_slot(&segment).and_then(|(preparer, slot)| {
            let moved = segment.seg.file.try_clone().and_then(|file| {
                std::fs::rename(&seg_path, self.dir.join(SPARE_SEG))?;
                Ok(file)
            });
            match moved {
                Ok(file) => Some((preparer, slot, file)),
                Err(e) => {
                    tracing::debug!(queue = self.id, error = %e, "a settled segment is deleted, not reused");
                    slot.release();
                    None
                }
            }
        });
        drop(segment);
        if reuse.is_none() {
            remove_file_if_exists(&seg_path)?;
        }
        let deleted = self.sync.sync_now(&self.dir_file).and_then(|()| remove_file_if_exists(&ack_path));
        // Only now may the file become a segment again: were the rename still volatile, a
        // crash could leave the old name on disk holding the new segment's header.
        match (reuse, &deleted) {
            (Some((preparer, slot, file)), Ok(())) => {
                preparer.reuse(&self.dir, file, self.segment_size, self.spare_ack_len(), slot);
                self.counters.segments_reused.fetch_add(1, Ordering::Relaxed);
            }
            (Some((_, slot, _)), Err(_)) => slot.release(),
            (None, _) => {}
        }
        deleted?;
        self.counters.segments_deleted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The preparer and this queue's spare slot, claimed, if `segment`'s file can become the
    /// spare: the store preallocates, no spare is ready or on its way, and the file is a whole
    /// tagged segment (smaller ones grew record by record; older formats carry no tags).
    fn claim_spare_slot(&self, segment: &Segment) -> Option<(&Arc<SparePreparer>, &Arc<SpareSlot>)> {
        let (preparer, slot) = self.spares.as_ref()?;
        let whole = segment.file_len == self.segment_size && matches!(segment.framing, Framing::Tagged(_));
        (whole && slot.claim()).then_some((preparer, slot))
    }

    /// Delete a segment retired by a successful append or settle. A failure is logged, not
    /// returned: the caller's write did happen, and reporting it as failed would invite a
    /// duplicate. The files left behind are fully settled and go at the next recovery; a failed
    /// directory sync has already stopped the store.
    fn delete_retired(&self, segment: Segment) {
        let number = segment.number;
        if let Err(e) = self.delete_segment_files(segment) {
            tracing::error!(queue = self.id, segment = number, error = %e, "deleting a settled segment failed");
        }
    }

    pub(crate) fn mark_removed(&self) {
        if let Some((_, slot)) = &self.spares {
            slot.close();
        }
        let mut state = self.state.lock();
        state.removed = true;
        state.segments.clear();
        state.active = None;
    }

    pub(crate) fn bytes_on_disk(&self) -> u64 {
        self.state.lock().segments.values().map(Segment::bytes_on_disk).sum()
    }

    /// Wait for any write in progress to finish (the store is closing).
    pub(crate) fn barrier(&self) {
        drop(self.state.lock());
    }
}

/// Records are read this far ahead, so that receiving records written together (an SQS batch)
/// is one `pread`, not one per record.
const READ_AHEAD: usize = 16 << 10;

/// Bytes of one segment read ahead by this thread. One window per thread, not per queue, so
/// the memory is bounded however many queues there are; a receive reads its records on one
/// thread, one after another.
struct ReadAhead {
    /// Whose bytes these are. Weak: a window must not keep a deleted segment's file open, and
    /// while it exists the `SyncFile`'s address cannot be reused by another file.
    file: std::sync::Weak<SyncFile>,
    start: u64,
    len: usize,
    bytes: Box<[u8]>,
}

thread_local! {
    static READ_AHEAD_WINDOW: std::cell::RefCell<Option<ReadAhead>> = const { std::cell::RefCell::new(None) };
}

/// The frame of `len` bytes at `offset`, from this thread's read-ahead window when it holds
/// it. Only bytes before `readable_end` (the end of the segment's last complete frame when the
/// record was looked up) are read ahead: they never change while the segment exists, and
/// bytes past them may not be written yet.
fn read_frame(file: &Arc<SyncFile>, offset: u64, len: u64, readable_end: u64) -> io::Result<Vec<u8>> {
    let end = offset + len;
    if len as usize >= READ_AHEAD || end > readable_end {
        let mut frame = vec![0u8; len as usize];
        file.file.read_exact_at(&mut frame, offset)?;
        return Ok(frame);
    }
    READ_AHEAD_WINDOW.with(|cell| {
        let mut slot = cell.borrow_mut();
        let hit = slot.as_ref().is_some_and(|w| {
            std::ptr::eq(w.file.as_ptr(), Arc::as_ptr(file))
                && w.start <= offset
                && end <= w.start + w.len as u64
        });
        if !hit {
            let window = slot.get_or_insert_with(|| ReadAhead {
                file: std::sync::Weak::new(),
                start: 0,
                len: 0,
                bytes: vec![0u8; READ_AHEAD].into_boxed_slice(),
            });
            // Forget the old window first: a failed read must not leave it half overwritten.
            window.len = 0;
            let n = (readable_end - offset).min(READ_AHEAD as u64) as usize;
            file.file.read_exact_at(&mut window.bytes[..n], offset)?;
            (window.file, window.start, window.len) = (Arc::downgrade(file), offset, n);
        }
        let window = slot.as_ref().expect("filled above");
        let at = (offset - window.start) as usize;
        Ok(window.bytes[at..at + len as usize].to_vec())
    })
}

/// Remove segment `number` from the index if it is deletable: not the active one, not damaged,
/// no live records.
pub(crate) fn take_if_deletable(state: &mut QueueState, number: u32) -> Option<Segment> {
    let segment = state.segments.get(&number)?;
    if state.active == Some(number) || segment.damaged || segment.live > 0 {
        return None;
    }
    state.segments.remove(&number)
}

pub(crate) fn remove_file_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(path.display(), e)),
    }
}

pub(crate) fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new().read(true).write(true).open(path).map_err(|e| StoreError::io(path.display(), e))
}

impl FileQueueLog {
    fn check_record(&self, record: &[u8]) -> Result<()> {
        if record.is_empty() {
            return Err(StoreError::io(
                self.dir.display(),
                io::Error::new(io::ErrorKind::InvalidInput, "zero-length records are refused"),
            ));
        }
        if record.len() > self.max_record_size {
            return Err(StoreError::RecordTooLarge { size: record.len(), limit: self.max_record_size });
        }
        Ok(())
    }

    /// Append `records` to the active segment with one write, starting a new segment first if
    /// they do not fit in this one (an empty segment takes them whatever their size). Returns
    /// their ids, the store LSN of the write, and a segment the rotation retired.
    fn append_locked(
        &self,
        state: &mut QueueState,
        records: &[&[u8]],
    ) -> Result<(Vec<RecordId>, u64, Option<Segment>)> {
        self.check_open(state)?;
        self.sync.check_writable()?;
        let total: u64 = records.iter().map(|r| FRAME_HEADER_LEN + r.len() as u64).sum();
        let needs_new_segment = match state.active.and_then(|a| state.segments.get(&a)) {
            None => true,
            Some(seg) => !seg.offsets.is_empty() && seg.data_end + total > self.segment_size,
        };
        let retired = if needs_new_segment { self.rotate(state)? } else { None };

        let QueueState { segments, active, scratch, filled_one, .. } = state;
        let number = active.expect("an active segment after rotation");
        let segment = segments.get_mut(&number).expect("the active segment is indexed");
        let start = segment.data_end;
        let Framing::Tagged(tag) = segment.framing else {
            // Recovery never makes an older segment active; this is a bug, not a disk problem.
            return Err(Self::io_err(
                &segment.seg.path,
                io::Error::other("appending to an untagged segment"),
            ));
        };
        scratch.clear();
        for record in records {
            format::encode_frame(scratch, tag, record);
        }
        if let Err(e) = segment.seg.file.write_all_at(scratch, start) {
            // Cut off whatever part of the frames made it, so the next frame follows good data.
            // If even that fails, leave this segment behind and start another next time.
            if segment.seg.file.set_len(start).is_err() {
                *active = None;
            }
            return Err(Self::io_err(&segment.seg.path, e));
        }
        if scratch.capacity() > (1 << 20) {
            *scratch = Vec::new();
        }
        let mut ids = Vec::with_capacity(records.len());
        for record in records {
            let frame_len = FRAME_HEADER_LEN + record.len() as u64;
            let offset = u32::try_from(segment.data_end).expect("segment size limit keeps offsets in u32");
            segment.data_end += frame_len;
            segment.push_record(offset, frame_len);
            ids.push(RecordId { segment: number, offset });
        }
        segment.file_len = segment.file_len.max(segment.data_end);
        let quarter = HEADER_LEN + self.segment_size / 4;
        let lsn = self.sync.wrote(&segment.seg);
        if *filled_one && start < quarter && quarter <= segment.data_end {
            self.request_spare();
        }
        Ok((ids, lsn, retired))
    }
}

impl QueueLog for FileQueueLog {
    fn append(&self, record: &[u8]) -> Result<(RecordId, Durable)> {
        let (ids, durable) = self.append_batch(&[record])?;
        Ok((ids[0], durable))
    }

    fn append_batch(&self, records: &[&[u8]]) -> Result<(Vec<RecordId>, Durable)> {
        if records.is_empty() {
            return Ok((Vec::new(), Durable::done()));
        }
        records.iter().try_for_each(|r| self.check_record(r))?;
        let total: u64 = records.iter().map(|r| FRAME_HEADER_LEN + r.len() as u64).sum();
        if records.len() > 1 && total > self.segment_size {
            // More than a segment holds: one record (and one write) at a time, so segments keep
            // to their size and offsets to u32.
            return crate::append_one_by_one(self, records);
        }
        self.ensure_recovered()?;
        let (ids, lsn, retired) = self.append_locked(&mut self.state.lock(), records)?;
        self.counters.appended.fetch_add(ids.len() as u64, Ordering::Relaxed);
        if let Some(old) = retired {
            self.delete_retired(old);
        }
        Ok((ids, self.sync.durable(lsn)))
    }

    fn read(&self, id: RecordId) -> Result<Vec<u8>> {
        self.ensure_recovered()?;
        let (file, frame_len, readable_end, framing) = {
            let state = self.state.lock();
            self.check_open(&state)?;
            let segment = state.segments.get(&id.segment).ok_or(StoreError::NoSuchRecord(id))?;
            let i = segment.offsets.binary_search(&id.offset).map_err(|_| StoreError::NoSuchRecord(id))?;
            if segment.is_settled(i) {
                return Err(StoreError::NoSuchRecord(id));
            }
            (segment.seg.clone(), segment.frame_len(i), segment.data_end, segment.framing)
        };
        // Read outside the lock: the file handle stays valid even if the segment is deleted
        // meanwhile. (Or reused as another segment: then the checks below fail, as the record
        // was settled, which is what retired its segment.)
        let mut frame = read_frame(&file, u64::from(id.offset), frame_len, readable_end)
            .map_err(|e| Self::io_err(&file.path, e))?;
        if frame.len() >= framing.header_len() as usize && !framing.owns(&frame) {
            return Err(StoreError::NoSuchRecord(id));
        }
        if format::checked_payload(&frame, framing).is_none() {
            return Err(StoreError::Damaged(
                self.id,
                format!("record {id:?} in {} fails its checks on read", file.path.display()),
            ));
        }
        frame.drain(..framing.header_len() as usize);
        Ok(frame)
    }

    fn settle(&self, id: RecordId) -> Result<Durable> {
        self.settle_batch(&[id]).pop().expect("one result per id")
    }

    fn settle_batch(&self, ids: &[RecordId]) -> Vec<Result<Durable>> {
        if let Err(e) = self.ensure_recovered() {
            return ids.iter().map(|_| Err(e.for_each_write())).collect();
        }
        let mut state = self.state.lock();
        let checked = self.check_open(&state).and_then(|()| self.sync.check_writable());
        if let Err(e) = checked {
            return ids.iter().map(|_| Err(e.for_each_write())).collect();
        }
        // Each id's index in its segment, or why it cannot be settled.
        let mut found: Vec<Result<usize>> = Vec::with_capacity(ids.len());
        for id in ids {
            let index = state.segments.get(&id.segment).and_then(|segment| {
                let i = segment.offsets.binary_search(&id.offset).ok()?;
                // Settled already, or named twice in this batch.
                let twice = ids.iter().zip(&found).any(|(other, f)| other == id && f.is_ok());
                (!segment.is_settled(i) && !twice).then_some(i)
            });
            found.push(index.ok_or(StoreError::NoSuchRecord(*id)));
        }
        // One write per ack file: the batch's entries for each segment, in order.
        let mut lsns: BTreeMap<u32, Result<u64>> = BTreeMap::new();
        let mut entries = Vec::new();
        let mut touched: Vec<u32> =
            ids.iter().zip(&found).filter(|(_, f)| f.is_ok()).map(|(id, _)| id.segment).collect();
        touched.dedup();
        for number in touched {
            if lsns.contains_key(&number) {
                continue;
            }
            let segment = state.segments.get_mut(&number).expect("found in this segment above");
            entries.clear();
            for (id, f) in ids.iter().zip(&found) {
                if id.segment == number && f.is_ok() {
                    entries.extend_from_slice(&id.offset.to_le_bytes());
                }
            }
            let at = segment.ack_len;
            if let Err(e) = segment.ack.file.write_all_at(&entries, at) {
                let _ = segment.ack.file.set_len(at);
                lsns.insert(number, Err(Self::io_err(&segment.ack.path, e)));
                continue;
            }
            segment.ack_len += entries.len() as u64;
            for (id, f) in ids.iter().zip(&found) {
                if let (true, Ok(i)) = (id.segment == number, f) {
                    segment.mark_settled(*i);
                }
            }
            lsns.insert(number, Ok(self.sync.wrote(&segment.ack)));
        }
        let deletable: Vec<Segment> =
            lsns.keys().filter_map(|&number| take_if_deletable(&mut state, number)).collect();
        drop(state);

        let results: Vec<Result<Durable>> = ids
            .iter()
            .zip(found)
            .map(|(id, f)| {
                f?;
                match &lsns[&id.segment] {
                    Ok(lsn) => Ok(self.sync.durable(*lsn)),
                    Err(e) => Err(e.for_each_write()),
                }
            })
            .collect();
        let settled = results.iter().filter(|r| r.is_ok()).count();
        self.counters.settled.fetch_add(settled as u64, Ordering::Relaxed);
        for segment in deletable {
            self.delete_retired(segment);
        }
        results
    }

    fn recover(&self, visit: &mut dyn FnMut(RecordId, &[u8])) -> Result<RecoveryReport> {
        let me = std::thread::current().id();
        {
            let mut on = self.recovering_on.lock();
            if *on == Some(me) {
                return Err(StoreError::io(
                    self.dir.display(),
                    io::Error::other("recover called from inside its own visitor"),
                ));
            }
            *on = Some(me);
        }
        struct ClearOnDrop<'a>(&'a Mutex<Option<ThreadId>>);
        impl Drop for ClearOnDrop<'_> {
            fn drop(&mut self) {
                *self.0.lock() = None;
            }
        }
        let _clear = ClearOnDrop(&self.recovering_on);

        let mut state = self.state.lock();
        self.check_open(&state)?;
        if !state.recovered {
            return self.recover_locked(&mut state, visit);
        }
        // Already recovered (perhaps implicitly by an early append): visit from the index.
        let ids: Vec<RecordId> = state.segments.values().flat_map(Segment::live_ids).collect();
        drop(state);
        let mut report = RecoveryReport::default();
        for id in ids {
            // `read` does not deadlock here: the log is recovered, and no lock is held.
            let payload = match self.read(id) {
                Ok(p) => p,
                Err(StoreError::NoSuchRecord(_)) => continue,
                Err(e) => return Err(e),
            };
            visit(id, &payload);
            report.live_records += 1;
        }
        Ok(report)
    }

    fn stragglers(&self) -> Vec<RecordId> {
        if self.in_own_visitor() {
            return Vec::new();
        }
        let state = self.state.lock();
        let count = state.segments.len();
        let mut ids = Vec::new();
        for (rank, segment) in state.segments.values().enumerate() {
            if state.active == Some(segment.number) || segment.damaged || segment.live == 0 {
                continue;
            }
            // Never the newest segment, even when appends have not started one yet.
            if rank + 1 == count {
                continue;
            }
            let mostly_settled = segment.live * STRAGGLER_LIVE_RATIO <= segment.offsets.len() as u64;
            let old_and_thin = count - rank > STRAGGLER_OLD_SEGMENTS
                && segment.live_bytes * STRAGGLER_LIVE_RATIO <= segment.file_len;
            if !(mostly_settled || old_and_thin) {
                continue;
            }
            for id in segment.live_ids() {
                if ids.len() >= STRAGGLER_BATCH {
                    return ids;
                }
                ids.push(id);
            }
        }
        ids
    }

    fn stats(&self) -> QueueLogStats {
        if self.in_own_visitor() {
            return QueueLogStats::default();
        }
        let state = self.state.lock();
        QueueLogStats {
            live_records: state.segments.values().map(|s| s.live).sum(),
            segments: state.segments.len() as u64,
            bytes_on_disk: state.segments.values().map(Segment::bytes_on_disk).sum(),
        }
    }
}
