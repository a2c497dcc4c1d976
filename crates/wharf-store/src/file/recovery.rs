//! Recovery of one queue log: rebuild the index from the segment and ack files, visit the live
//! records, cut torn tails, and report damage without touching damaged files.
//!
//! Rules (see the crate README for the reasoning):
//! - An `.ack` without its `.seg` is left over from an interrupted segment deletion: removed.
//! - An `.ack` whose length is not a multiple of 4 ends in a torn entry: cut to whole entries.
//! - Any segment: a frame that runs past the end of the file, a final frame that fails its CRC,
//!   or a bad frame followed only by zero bytes, is a torn tail: the file is truncated to the
//!   last good frame and synced, and `truncated_bytes` reports it. A newest segment shorter
//!   than its header whose bytes are a prefix of the header is a torn creation: removed.
//! - Anything else bad (bad header; a bad frame with good data after it) is damage: the good records before it are visited, the files are left
//!   untouched, and the segment is pinned (never appended to, never deleted). Other segments
//!   are still read: each segment file is framed independently, so damage in one cannot
//!   mislead the parse of another.
//! - A record whose offset is in its segment's `.ack` is settled and not visited.
//! - Preallocated files (see `spare`): a segment's records end at its first all-zero frame
//!   header when only zeros follow; that zero tail is room to append, kept as it is. A bad frame
//!   inside the file followed only by zeros is a torn tail like any other. An all-zero header
//!   is a torn creation. Zero ack entries are no acks (offset 0 is never a record), and appends
//!   to the ack file go after its last non-zero entry. Leftover spare files are removed.
//! - Tagged segments (format version 2; the file may be a reused one, see `format`): the
//!   records end at the first frame that is not a good frame of this segment (zeros, a frame
//!   with another segment's tag, a torn write). It is damage only if a good frame of this
//!   segment follows somewhere behind it; otherwise everything from there on is room to
//!   append, and nothing is cut (a reused file keeps its length). A torn write found there (a
//!   whole frame header with this segment's tag) is counted in `truncated_bytes`. A newest segment whose header names an older segment is a
//!   reused file whose new header never reached the disk, so nothing in it was made durable:
//!   a torn creation, removed.
//! - Untagged segments (version 1) are read by the rules above them, and never appended to:
//!   the next append starts a new segment.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

use super::format::{
    self, frame_tag, Framing, HeaderCheck, ScanEnd, ACK_ENTRY_LEN, FRAME_HEADER_LEN, HEADER_LEN,
};
use super::queue::{
    ack_path, open_rw, remove_file_if_exists, segment_path, take_if_deletable, FileQueueLog, QueueState,
    Segment,
};
use super::spare::{SPARE_ACK, SPARE_SEG};
use super::sync::SyncFile;
use super::MAX_RECORD_SIZE;
use crate::{RecordId, RecoveryReport, Result, StoreError};

/// Parse `XXXXXXXX.seg` / `XXXXXXXX.ack`.
fn parse_name(name: &str) -> Option<(u32, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 8 || !(ext == "seg" || ext == "ack") {
        return None;
    }
    let number = u32::from_str_radix(stem, 16).ok()?;
    Some((number, ext))
}

impl FileQueueLog {
    pub(crate) fn recover_locked(
        &self,
        state: &mut QueueState,
        visit: &mut dyn FnMut(crate::RecordId, &[u8]),
    ) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        let mut damage: Vec<String> = Vec::new();

        let mut segs = Vec::new();
        let mut acks = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(|e| StoreError::io(self.dir.display(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(self.dir.display(), e))?;
            let name = entry.file_name();
            match name.to_str().and_then(parse_name) {
                Some((n, "seg")) => segs.push(n),
                Some((n, _)) => acks.push(n),
                None if name == SPARE_SEG || name == SPARE_ACK => {
                    // A spare being prepared when the process stopped; a new one is made.
                    remove_file_if_exists(&entry.path())?;
                }
                None => tracing::debug!(queue = self.id, file = ?name, "ignoring unknown file"),
            }
        }
        segs.sort_unstable();
        acks.sort_unstable();
        let highest = segs.iter().chain(acks.iter()).copied().max();

        let mut dir_changed = false;
        for &n in &acks {
            if segs.binary_search(&n).is_err() {
                // Orphan: see `delete_segment_files` for why it exists and why it must go.
                tracing::info!(queue = self.id, segment = n, "removing orphan ack file");
                remove_file_if_exists(&ack_path(&self.dir, n))?;
                dir_changed = true;
            }
        }

        let newest = segs.last().copied();
        for &number in &segs {
            let is_newest = Some(number) == newest;
            let seg_path = segment_path(&self.dir, number);
            let ack_path = ack_path(&self.dir, number);
            let seg_file = open_rw(&seg_path)?;
            let file_len = seg_file.metadata().map_err(|e| StoreError::io(seg_path.display(), e))?.len();

            // The header.
            let mut header = [0u8; HEADER_LEN as usize];
            let header_len = file_len.min(HEADER_LEN) as usize;
            seg_file
                .read_exact_at(&mut header[..header_len], 0)
                .map_err(|e| StoreError::io(seg_path.display(), e))?;
            let mut header_check = format::check_header(&header[..header_len], number);
            if header_check == HeaderCheck::Stale && is_newest {
                // A reused file renamed into place, and the process died before its new header
                // reached the disk. Unless a record of this segment is in it: then the header
                // itself is damaged, and the records must not go with it.
                let own = format::find_own_frame(
                    &seg_file,
                    HEADER_LEN,
                    file_len,
                    MAX_RECORD_SIZE,
                    frame_tag(number),
                )
                .map_err(|e| StoreError::io(seg_path.display(), e))?;
                if let Some(at) = own {
                    header_check = HeaderCheck::Bad(format!(
                        "header names an older segment, and a record of this segment is at offset {at}"
                    ));
                }
            }
            if matches!(header_check, HeaderCheck::Torn | HeaderCheck::Stale) && is_newest {
                // Created (or a reused file renamed), then the process died before the header
                // was written: nothing in it was made durable.
                tracing::info!(queue = self.id, segment = number, "removing torn new segment");
                if header_check == HeaderCheck::Torn {
                    report.truncated_bytes += file_len;
                }
                drop(seg_file);
                remove_file_if_exists(&seg_path)?;
                remove_file_if_exists(&ack_path)?;
                dir_changed = true;
                continue;
            }

            // The ack file (created if missing, cut to whole entries if torn).
            let ack_file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&ack_path)
                .map_err(|e| StoreError::io(ack_path.display(), e))?;
            let mut ack_bytes = Vec::new();
            {
                use std::io::Read;
                (&ack_file).read_to_end(&mut ack_bytes).map_err(|e| StoreError::io(ack_path.display(), e))?;
            }
            let whole = ack_bytes.len() as u64 / ACK_ENTRY_LEN * ACK_ENTRY_LEN;
            let ack_file = SyncFile::new(ack_file, ack_path.clone());
            if whole != ack_bytes.len() as u64 {
                tracing::info!(queue = self.id, segment = number, "cutting a torn ack entry");
                ack_file.file.set_len(whole).map_err(|e| StoreError::io(ack_path.display(), e))?;
                self.sync.sync_now(&ack_file)?;
                ack_bytes.truncate(whole as usize);
            }
            let acked = format::parse_acks(&ack_bytes);

            let seg_file = SyncFile::new(seg_file, seg_path.clone());
            let mut segment = Segment::new(number, seg_file, ack_file);
            segment.ack_len = format::acks_end(&ack_bytes);
            segment.ack_file_len = whole;
            segment.file_len = file_len;

            let HeaderCheck::Good(framing) = header_check else {
                damage.push(format!(
                    "segment {number:08x}: bad header: {}",
                    header_reason(&header_check, file_len)
                ));
                segment.damaged = true;
                segment.data_end = file_len;
                state.segments.insert(number, segment);
                continue;
            };
            segment.framing = framing;

            let seg_handle = segment.seg.clone();
            // The frames, matched against the sorted ack offsets as they come.
            let mut next_ack = 0usize;
            let mut matched = 0usize;
            let mut live = 0u64;
            let mut scan_visit = |offset: u32, payload: &[u8]| {
                let frame_len = framing.header_len() + payload.len() as u64;
                let i = segment.offsets.len();
                segment.push_record(offset, frame_len);
                while next_ack < acked.len() && acked[next_ack] < offset {
                    next_ack += 1;
                }
                if next_ack < acked.len() && acked[next_ack] == offset {
                    next_ack += 1;
                    matched += 1;
                    // `mark_settled` needs the frame length via the next offset; settle by hand.
                    segment.settled[i / 64] |= 1 << (i % 64);
                    segment.live -= 1;
                    segment.live_bytes -= frame_len;
                } else {
                    live += 1;
                    visit(RecordId { segment: number, offset }, payload);
                }
            };
            let end =
                format::scan_frames(&seg_handle.file, file_len, MAX_RECORD_SIZE, framing, &mut scan_visit)
                    .map_err(|e| StoreError::io(seg_path.display(), e))?;
            report.live_records += live;
            let good_end = end.good_end(file_len);
            segment.data_end = good_end;
            let stray_acks = acked.len() - matched;

            let tail = match framing {
                Framing::Untagged => untagged_tail(&segment.seg.file, &end, file_len),
                Framing::Tagged(tag) => tagged_tail(&segment.seg.file, &end, file_len, tag),
            }
            .map_err(|e| StoreError::io(seg_path.display(), e))?;
            match tail {
                Tail::Room => {}
                Tail::Cut => {
                    let cut = file_len - good_end;
                    tracing::info!(
                        queue = self.id,
                        segment = number,
                        bytes = cut,
                        "cutting a torn write off the end of a segment"
                    );
                    segment.seg.file.set_len(good_end).map_err(|e| StoreError::io(seg_path.display(), e))?;
                    self.sync.sync_now(&segment.seg)?;
                    segment.file_len = good_end;
                    report.truncated_bytes += cut;
                }
                Tail::TornKept(bytes) => {
                    tracing::info!(
                        queue = self.id,
                        segment = number,
                        bytes,
                        "a torn write at the end of a segment is left as room to append"
                    );
                    report.truncated_bytes += bytes;
                }
                Tail::Damage(what) => {
                    let place = if is_newest { "newest segment" } else { "segment" };
                    damage.push(format!("{place} {number:08x}: {what}"));
                    segment.damaged = true;
                }
            }
            if is_newest && !segment.damaged {
                if framing == Framing::Untagged {
                    tracing::info!(
                        queue = self.id,
                        segment = number,
                        "an older format's segment is not appended to"
                    );
                } else if stray_acks == 0 {
                    state.active = Some(number);
                } else {
                    // Ack entries that match no record (their record was cut off as torn) would
                    // settle a new record written at the same offset: start a fresh segment.
                    tracing::info!(
                        queue = self.id,
                        segment = number,
                        stray_acks,
                        "newest segment closed for appends"
                    );
                }
            }
            state.segments.insert(number, segment);
        }

        if dir_changed {
            self.sync.sync_now(&self.dir_file)?;
        }
        state.next_number = highest.map_or(0, |h| h.saturating_add(1));
        state.recovered = true;
        self.recovered.store(true, Ordering::Release);

        // Fully settled segments other than the newest can go now.
        let newest_kept = state.segments.keys().next_back().copied();
        let numbers: Vec<u32> = state.segments.keys().copied().filter(|&n| Some(n) != newest_kept).collect();
        for number in numbers {
            if let Some(segment) = take_if_deletable(state, number) {
                self.delete_segment_files(segment)?;
            }
        }

        if !damage.is_empty() {
            let description = damage.join("; ");
            tracing::warn!(queue = self.id, damage = %description, "queue log is damaged");
            report.damage = Some(description);
        }
        Ok(report)
    }
}

fn header_reason(check: &HeaderCheck, file_len: u64) -> String {
    match check {
        HeaderCheck::Bad(reason) => reason.clone(),
        HeaderCheck::Torn => format!("header cut short at {file_len} bytes"),
        HeaderCheck::Stale => "header names an older segment".into(),
        HeaderCheck::Good(_) => String::new(),
    }
}

/// What follows a segment's last good record.
#[derive(Debug, PartialEq, Eq)]
enum Tail {
    /// Nothing, or room to append.
    Room,
    /// A torn write, to cut off (untagged segments).
    Cut,
    /// A torn write of this many bytes, left as room to append (tagged segments).
    TornKept(u64),
    Damage(String),
}

/// The rules for an untagged (version 1) segment: room is zeros; a torn write is a final frame
/// that runs past the end or fails its CRC, or a bad frame followed only by zeros; anything
/// else bad is damage.
///
/// A torn tail is normal in any segment, not only the newest: the last write to a segment
/// before it was rotated may be unsynced when the power goes (it was never confirmed in
/// `always` mode, and `interval`/`never` promise nothing across power loss), so cutting it
/// loses nothing that was promised.
fn untagged_tail(file: &File, end: &ScanEnd, file_len: u64) -> io::Result<Tail> {
    let zeros_from = |from: u64| format::is_zero_from(file, from, file_len);
    let zero_tail = match end {
        ScanEnd::Bad { at, .. } | ScanEnd::Incomplete { at } => zeros_from(*at)?,
        _ => false,
    };
    let torn = match end {
        ScanEnd::Clean | ScanEnd::Foreign { .. } => false,
        ScanEnd::Incomplete { .. } | ScanEnd::BadAtEof { .. } => !zero_tail,
        ScanEnd::Bad { claimed_end, .. } => {
            !zero_tail && claimed_end.is_some_and(|e| e <= file_len) && zeros_from(claimed_end.unwrap_or(0))?
        }
    };
    Ok(if *end == ScanEnd::Clean || zero_tail {
        Tail::Room
    } else if torn {
        Tail::Cut
    } else {
        Tail::Damage(describe(end))
    })
}

/// The rules for a tagged segment: the records end at the first frame that is not one of
/// this segment's, and that is damage only if one of its frames follows.
fn tagged_tail(file: &File, end: &ScanEnd, file_len: u64, tag: u32) -> io::Result<Tail> {
    let at = match end {
        ScanEnd::Clean => return Ok(Tail::Room),
        other => other.good_end(file_len),
    };
    if let Some(next) = format::find_own_frame(file, at + 1, file_len, MAX_RECORD_SIZE, tag)? {
        return Ok(Tail::Damage(format!(
            "{}, and a record of this segment follows at offset {next}",
            describe(end)
        )));
    }
    // A torn write is counted only when a whole header with this segment's tag says so. Less
    // than a header at the end of the file may be a write cut short, or the last bytes of a
    // reused file's earlier life: nothing tells them apart, and it is room either way.
    if matches!(end, ScanEnd::Foreign { .. }) || at + FRAME_HEADER_LEN > file_len {
        return Ok(Tail::Room);
    }
    let mut header = [0u8; FRAME_HEADER_LEN as usize];
    file.read_exact_at(&mut header, at)?;
    let (len, _) = format::decode_frame_header(&header);
    Ok(if len != 0 && Framing::Tagged(tag).owns(&header) {
        Tail::TornKept((at + FRAME_HEADER_LEN + u64::from(len)).min(file_len) - at)
    } else {
        Tail::Room
    })
}

fn describe(end: &ScanEnd) -> String {
    match end {
        ScanEnd::Clean => "no damage".into(),
        ScanEnd::Incomplete { at } => format!("record at offset {at} runs past the end of the file"),
        ScanEnd::BadAtEof { at } => format!("last record at offset {at} fails its CRC"),
        ScanEnd::Bad { at, reason, .. } => format!("{reason} at offset {at}"),
        ScanEnd::Foreign { at } => format!("record at offset {at} belongs to another segment"),
    }
}
