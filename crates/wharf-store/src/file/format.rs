//! The byte layout of segment and ack files, and the scanner that reads segments back.
//!
//! Segment file (`<number as 8 hex digits>.seg`):
//!
//! ```text
//! offset 0   8 bytes  magic  b"wharfSEG"
//! offset 8   u32 LE   format version (2; 1 is still read)
//! offset 12  u32 LE   the segment's own number (must match the file name)
//! offset 16  frames, back to back, each:
//!              u32 LE  payload length (1 ..= 1 GiB; zero is refused)
//!              u32 LE  crc32c(payload)
//!              u32 LE  the segment's tag, crc32c(number as u32 LE)   (version 2 only)
//!              payload bytes
//! ```
//!
//! Ack file (`<number>.ack`): a sequence of u32 LE frame offsets, one per settled record.
//!
//! Zero-length payloads are refused on append. That makes an all-zero frame header invalid,
//! so a zero-filled region (what some file systems leave after a power cut, when the file size
//! reached the disk before the data did) can never be mistaken for records.
//!
//! Why the tag: a fully settled segment file is reused as its queue's next segment (see
//! `spare`), so behind a segment's last record there may be the records of the file's earlier
//! lives, whole and with good CRCs. The tag tells them apart: a frame belongs to the segment
//! whose number it carries. CRC-32C of exactly four bytes is a bijection, so no two segment
//! numbers share a tag, and tags look random, so recovery can look for this segment's frames
//! behind a bad one (to tell damage from a torn end) by searching for four bytes.
//! Version 1 segments, written before reuse existed, have no tags; they are read, never
//! appended to and never reused.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

pub(crate) const MAGIC: [u8; 8] = *b"wharfSEG";
/// The version new segments are written in.
pub(crate) const VERSION: u32 = 2;
/// Length of the segment header; the first frame starts here.
pub(crate) const HEADER_LEN: u64 = 16;
/// `[u32 length][u32 crc32c][u32 tag]` before each payload of a version 2 segment.
pub(crate) const FRAME_HEADER_LEN: u64 = 12;
/// Bytes per ack entry.
pub(crate) const ACK_ENTRY_LEN: u64 = 4;

/// Recovery reads segments in chunks of this size (grown when one frame is larger).
const SCAN_CHUNK: usize = 4 << 20;

/// How one segment's frames are laid out, as its header's version says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Version 1: `[length][crc]`, no tag.
    Untagged,
    /// Version 2: `[length][crc][tag]`, with this segment's tag.
    Tagged(u32),
}

impl Framing {
    /// The framing new frames of segment `number` are written in.
    pub(crate) fn current(number: u32) -> Framing {
        Framing::Tagged(frame_tag(number))
    }

    pub(crate) fn header_len(self) -> u64 {
        match self {
            Framing::Untagged => 8,
            Framing::Tagged(_) => FRAME_HEADER_LEN,
        }
    }

    /// Whether a frame header (at least `header_len` bytes) carries this segment's tag.
    pub(crate) fn owns(self, header: &[u8]) -> bool {
        match self {
            Framing::Untagged => true,
            Framing::Tagged(tag) => header[8..12] == tag.to_le_bytes(),
        }
    }
}

/// The tag every frame of segment `number` carries (see the module docs).
pub(crate) fn frame_tag(number: u32) -> u32 {
    crc32c::crc32c(&number.to_le_bytes())
}

pub(crate) fn segment_header(number: u32) -> [u8; HEADER_LEN as usize] {
    let mut header = [0u8; HEADER_LEN as usize];
    header[..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&number.to_le_bytes());
    header
}

/// What the first bytes of a segment file say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    Good(Framing),
    /// Shorter than a header, and what is there is a prefix of the right header (or zeros): the
    /// file was created and the process died before the header write completed.
    Torn,
    /// A good header naming an older segment: a reused file whose new header never reached
    /// the disk. Nothing written to it under its new name was made durable (the round that
    /// would have would also have written the header).
    Stale,
    Bad(String),
}

pub(crate) fn check_header(bytes: &[u8], number: u32) -> HeaderCheck {
    let expected = segment_header(number);
    // A preallocated file whose header was never written.
    if bytes.iter().all(|&b| b == 0) {
        return HeaderCheck::Torn;
    }
    if bytes.len() < expected.len() {
        let prefix = &expected[..bytes.len()];
        if bytes == prefix || bytes.iter().all(|&b| b == 0) {
            return HeaderCheck::Torn;
        }
        return HeaderCheck::Bad(format!("short header of {} bytes that is not ours", bytes.len()));
    }
    let bytes = &bytes[..expected.len()];
    if bytes[..8] != MAGIC {
        return HeaderCheck::Bad("bad magic: not a wharf segment".into());
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let framing = match version {
        1 => Framing::Untagged,
        VERSION => Framing::current(number),
        _ => return HeaderCheck::Bad(format!("unknown segment format version {version}")),
    };
    let own = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    if own < number {
        return HeaderCheck::Stale;
    }
    if own != number {
        return HeaderCheck::Bad(format!("header names segment {own:08x}, file name says {number:08x}"));
    }
    HeaderCheck::Good(framing)
}

/// Append one frame of the segment with tag `tag` for `payload` to `buf`.
pub(crate) fn encode_frame(buf: &mut Vec<u8>, tag: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("record size limit keeps lengths in u32");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    buf.extend_from_slice(&tag.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Parse a frame header: (payload length, crc).
pub(crate) fn decode_frame_header(bytes: &[u8]) -> (u32, u32) {
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    (len, crc)
}

/// The payload of `frame` (a whole frame as read back) if it is a good frame of this segment:
/// its length, tag and CRC all agree.
pub(crate) fn checked_payload(frame: &[u8], framing: Framing) -> Option<&[u8]> {
    let header_len = framing.header_len() as usize;
    if frame.len() < header_len || !framing.owns(frame) {
        return None;
    }
    let (len, crc) = decode_frame_header(frame);
    let payload = &frame[header_len..];
    (len as usize == payload.len() && crc32c::crc32c(payload) == crc).then_some(payload)
}

/// How a scan of a segment's frames ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// The last frame ends exactly at the end of the file.
    Clean,
    /// The frame at `at` has a header or payload that runs past the end of the file.
    Incomplete { at: u64 },
    /// The frame at `at` ends exactly at the end of the file but fails its CRC.
    BadAtEof { at: u64 },
    /// The frame at `at` is bad (impossible length, or CRC mismatch) and more bytes follow it.
    /// `claimed_end`: where its header says it ends, if the length is possible.
    Bad { at: u64, reason: String, claimed_end: Option<u64> },
    /// The frame at `at` carries another segment's tag: bytes of the file's earlier life.
    Foreign { at: u64 },
}

impl ScanEnd {
    /// Where the good frames end.
    pub(crate) fn good_end(&self, file_len: u64) -> u64 {
        match self {
            ScanEnd::Clean => file_len,
            ScanEnd::Incomplete { at }
            | ScanEnd::BadAtEof { at }
            | ScanEnd::Bad { at, .. }
            | ScanEnd::Foreign { at } => *at,
        }
    }
}

/// Read every frame of a segment from `HEADER_LEN` to `file_len` in big sequential chunks,
/// verifying each CRC (and tag), and call `visit(offset, payload)` for each good frame in
/// order. Stops at the first bad frame and says why. A length of 0 or above `length_limit` is
/// impossible. Recovery passes the format's hard limit, not the configured `max_record_size`:
/// lowering that admission limit must not make records written under the old one look like
/// damage.
pub(crate) fn scan_frames(
    file: &File,
    file_len: u64,
    length_limit: usize,
    framing: Framing,
    visit: &mut dyn FnMut(u32, &[u8]),
) -> io::Result<ScanEnd> {
    let header_len = framing.header_len();
    let mut buf: Vec<u8> = Vec::new();
    // File offset of buf[0], and parse position within buf.
    let mut buf_start = HEADER_LEN;
    let mut pos = 0usize;
    loop {
        let at = buf_start + pos as u64;
        if at >= file_len {
            return Ok(ScanEnd::Clean);
        }
        let avail = buf.len() - pos;
        if (avail as u64) < header_len {
            if at + header_len > file_len {
                return Ok(ScanEnd::Incomplete { at });
            }
            refill(file, file_len, &mut buf, &mut buf_start, &mut pos, header_len as usize)?;
            continue;
        }
        let header = &buf[pos..pos + header_len as usize];
        let (len, crc) = decode_frame_header(header);
        if len != 0 && !framing.owns(header) {
            return Ok(ScanEnd::Foreign { at });
        }
        let frame_len = header_len + u64::from(len);
        let end = at + frame_len;
        if len == 0 || len as usize > length_limit {
            // Impossible length. If the frame claims to run past EOF it is indistinguishable
            // from a torn write, and treated as one; otherwise it is damage.
            if end > file_len {
                return Ok(ScanEnd::Incomplete { at });
            }
            return Ok(ScanEnd::Bad {
                at,
                reason: format!("impossible record length {len}"),
                claimed_end: None,
            });
        }
        if end > file_len {
            return Ok(ScanEnd::Incomplete { at });
        }
        if (avail as u64) < frame_len {
            refill(file, file_len, &mut buf, &mut buf_start, &mut pos, frame_len as usize)?;
            continue;
        }
        let payload = &buf[pos + header_len as usize..pos + frame_len as usize];
        if crc32c::crc32c(payload) != crc {
            if end == file_len {
                return Ok(ScanEnd::BadAtEof { at });
            }
            return Ok(ScanEnd::Bad { at, reason: "CRC mismatch".into(), claimed_end: Some(end) });
        }
        visit(at as u32, payload);
        pos += frame_len as usize;
    }
}

/// Drop consumed bytes and read on, so that at least `need` unparsed bytes are buffered (the
/// caller has checked that the file holds them).
fn refill(
    file: &File,
    file_len: u64,
    buf: &mut Vec<u8>,
    buf_start: &mut u64,
    pos: &mut usize,
    need: usize,
) -> io::Result<()> {
    buf.drain(..*pos);
    *buf_start += *pos as u64;
    *pos = 0;
    let have = buf.len();
    let remaining_in_file = file_len - (*buf_start + have as u64);
    let want = SCAN_CHUNK.max(need).min(have + remaining_in_file as usize);
    if want > have {
        buf.resize(want, 0);
        file.read_exact_at(&mut buf[have..want], *buf_start + have as u64)?;
    }
    Ok(())
}

/// The offset of the first good frame of the segment with tag `tag` that starts at or after
/// `from`, found by searching the bytes for the tag. Recovery asks this behind a bad frame:
/// records of this segment after it mean the bad frame is damage, not the end of the records.
pub(crate) fn find_own_frame(
    file: &File,
    from: u64,
    file_len: u64,
    length_limit: usize,
    tag: u32,
) -> io::Result<Option<u64>> {
    let header_len = FRAME_HEADER_LEN as usize;
    let tag_bytes = tag.to_le_bytes();
    let mut chunk = vec![0u8; SCAN_CHUNK];
    let mut start = from;
    while start + FRAME_HEADER_LEN <= file_len {
        let n = (file_len - start).min(SCAN_CHUNK as u64) as usize;
        file.read_exact_at(&mut chunk[..n], start)?;
        // Candidates whose whole header is in this chunk; the next chunk starts at the first
        // position not tried, so headers across the boundary are tried there.
        let tried = n + 1 - header_len;
        for i in 0..tried {
            if chunk[i + 8..i + 12] != tag_bytes {
                continue;
            }
            let (len, _) = decode_frame_header(&chunk[i..i + header_len]);
            let at = start + i as u64;
            if len == 0 || len as usize > length_limit || at + FRAME_HEADER_LEN + u64::from(len) > file_len {
                continue;
            }
            let mut frame = vec![0u8; header_len + len as usize];
            file.read_exact_at(&mut frame, at)?;
            if checked_payload(&frame, Framing::Tagged(tag)).is_some() {
                return Ok(Some(at));
            }
        }
        start += tried as u64;
    }
    Ok(None)
}

/// True if every byte of `file` from `from` to `file_len` is zero.
pub(crate) fn is_zero_from(file: &File, from: u64, file_len: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; SCAN_CHUNK.min((file_len - from) as usize)];
    let mut at = from;
    while at < file_len {
        let n = buf.len().min((file_len - at) as usize);
        file.read_exact_at(&mut buf[..n], at)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// Parse an ack file's bytes (already cut to whole entries) into sorted offsets. Zero entries
/// are a prefilled file's room, not acks: no record is at offset 0.
pub(crate) fn parse_acks(bytes: &[u8]) -> Vec<u32> {
    let mut offsets: Vec<u32> = bytes
        .chunks_exact(ACK_ENTRY_LEN as usize)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
        .filter(|&offset| offset != 0)
        .collect();
    offsets.sort_unstable();
    offsets.dedup();
    offsets
}

/// Where the next ack entry goes: after the last non-zero one.
pub(crate) fn acks_end(bytes: &[u8]) -> u64 {
    let entries = bytes.len() / ACK_ENTRY_LEN as usize;
    let last = (0..entries).rev().find(|&i| {
        bytes[i * ACK_ENTRY_LEN as usize..(i + 1) * ACK_ENTRY_LEN as usize].iter().any(|&b| b != 0)
    });
    last.map_or(0, |i| (i as u64 + 1) * ACK_ENTRY_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TAG: u32 = 0x1234_5678;

    /// A segment file holding `bytes` after its header.
    fn segment_file(bytes: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut file = File::create(&path).unwrap();
        file.write_all(&segment_header(0)).unwrap();
        file.write_all(bytes).unwrap();
        (dir, File::open(&path).unwrap())
    }

    fn scan_as(framing: Framing, bytes: &[u8]) -> (Vec<(u32, Vec<u8>)>, ScanEnd) {
        let (_dir, file) = segment_file(bytes);
        let len = file.metadata().unwrap().len();
        let mut seen = Vec::new();
        let end = scan_frames(&file, len, 1 << 20, framing, &mut |o, p| seen.push((o, p.to_vec()))).unwrap();
        (seen, end)
    }

    fn scan(bytes: &[u8]) -> (Vec<(u32, Vec<u8>)>, ScanEnd) {
        scan_as(Framing::Tagged(TAG), bytes)
    }

    fn frame(tag: u32, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        encode_frame(&mut bytes, tag, payload);
        bytes
    }

    #[test]
    fn header_checks() {
        let h = segment_header(7);
        assert_eq!(check_header(&h, 7), HeaderCheck::Good(Framing::Tagged(frame_tag(7))));
        assert!(matches!(check_header(&h, 6), HeaderCheck::Bad(_)));
        // A reused file whose new header did not reach the disk still names its old number.
        assert_eq!(check_header(&h, 8), HeaderCheck::Stale);
        let mut v1 = h;
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(check_header(&v1, 7), HeaderCheck::Good(Framing::Untagged));
        v1[8..12].copy_from_slice(&3u32.to_le_bytes());
        assert!(matches!(check_header(&v1, 7), HeaderCheck::Bad(_)));
        assert_eq!(check_header(&h[..5], 7), HeaderCheck::Torn);
        assert_eq!(check_header(&[], 7), HeaderCheck::Torn);
        assert_eq!(check_header(&[0; 9], 7), HeaderCheck::Torn);
        assert!(matches!(check_header(b"garbage!garbage!", 7), HeaderCheck::Bad(_)));
        assert!(matches!(check_header(b"xy", 7), HeaderCheck::Bad(_)));
    }

    #[test]
    fn scans_frames_and_classifies_ends() {
        let mut bytes = frame(TAG, b"hello");
        bytes.extend(frame(TAG, b"world!"));
        let (seen, end) = scan(&bytes);
        assert_eq!(seen, vec![(16, b"hello".to_vec()), (33, b"world!".to_vec())]);
        assert_eq!(end, ScanEnd::Clean);

        let (seen, end) = scan(&bytes[..bytes.len() - 1]);
        assert_eq!(seen.len(), 1);
        assert_eq!(end, ScanEnd::Incomplete { at: 33 });

        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(scan(&flipped).1, ScanEnd::BadAtEof { at: 33 });

        let mut flipped = bytes.clone();
        flipped[13] ^= 1;
        assert!(matches!(scan(&flipped).1, ScanEnd::Bad { at: 16, .. }));

        let mut zeros = bytes.clone();
        zeros.extend_from_slice(&[0; 40]);
        assert!(matches!(scan(&zeros).1, ScanEnd::Bad { at: 51, .. }));
    }

    #[test]
    fn frames_larger_than_a_chunk() {
        let big = vec![7u8; SCAN_CHUNK + 123];
        let mut bytes = frame(TAG, b"a");
        bytes.extend(frame(TAG, &big));
        bytes.extend(frame(TAG, b"b"));
        let (_dir, file) = segment_file(&bytes);
        let len = file.metadata().unwrap().len();
        let mut sizes = Vec::new();
        let end =
            scan_frames(&file, len, 64 << 20, Framing::Tagged(TAG), &mut |_, p| sizes.push(p.len())).unwrap();
        assert_eq!(end, ScanEnd::Clean);
        assert_eq!(sizes, vec![1, big.len(), 1]);
    }

    /// Whole, good frames of a reused file's earlier life end the records: they carry
    /// another segment's tag.
    #[test]
    fn frames_of_another_segment_end_the_records() {
        let mut bytes = frame(TAG, b"mine");
        bytes.extend(frame(TAG ^ 1, b"old record, good CRC"));
        bytes.extend(frame(TAG, b"written after the old one?"));
        let (seen, end) = scan(&bytes);
        assert_eq!(seen, vec![(16, b"mine".to_vec())]);
        assert_eq!(end, ScanEnd::Foreign { at: 32 });
    }

    #[test]
    fn untagged_frames_of_version_1() {
        let mut bytes = Vec::new();
        for payload in [&b"hello"[..], b"world!"] {
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
            bytes.extend_from_slice(payload);
        }
        let (seen, end) = scan_as(Framing::Untagged, &bytes);
        assert_eq!(seen, vec![(16, b"hello".to_vec()), (29, b"world!".to_vec())]);
        assert_eq!(end, ScanEnd::Clean);
    }

    #[test]
    fn finds_a_frame_of_its_own_segment_behind_others() {
        let mut bytes = vec![0xAB; 10];
        bytes.extend(frame(TAG ^ 1, b"another segment's"));
        // The tag inside a payload, with no frame around it, is not a frame.
        let mut decoy = vec![1, 0, 0, 0, 0, 0, 0, 0];
        decoy.extend_from_slice(&TAG.to_le_bytes());
        bytes.extend(frame(TAG ^ 1, &decoy));
        let own_at = 16 + bytes.len() as u64;
        bytes.extend(frame(TAG, b"ours"));
        bytes.extend(vec![0; 100]);
        let (_dir, file) = segment_file(&bytes);
        let len = file.metadata().unwrap().len();
        assert_eq!(find_own_frame(&file, 16, len, 1 << 20, TAG).unwrap(), Some(own_at));
        assert_eq!(find_own_frame(&file, own_at + 1, len, 1 << 20, TAG).unwrap(), None);
        assert_eq!(find_own_frame(&file, 16, len, 1 << 20, TAG ^ 2).unwrap(), None);
    }

    /// A frame whose header straddles two of the search's read chunks is still found.
    #[test]
    fn finds_a_frame_across_a_chunk_boundary() {
        // The first chunk read is [16, 16 + SCAN_CHUNK): headers at chunk index SCAN_CHUNK - 12
        // (wholly inside) to SCAN_CHUNK (wholly in the next chunk).
        for k in 0..=FRAME_HEADER_LEN as usize {
            let mut bytes = vec![0x5A; SCAN_CHUNK - FRAME_HEADER_LEN as usize + k];
            let own_at = 16 + bytes.len() as u64;
            bytes.extend(frame(TAG, b"across"));
            let (_dir, file) = segment_file(&bytes);
            let len = file.metadata().unwrap().len();
            assert_eq!(find_own_frame(&file, 16, len, 1 << 20, TAG).unwrap(), Some(own_at), "k {k}");
        }
    }

    #[test]
    fn tags_of_different_segments_differ() {
        let tags: std::collections::HashSet<u32> = (0..100_000).map(frame_tag).collect();
        assert_eq!(tags.len(), 100_000);
    }
}
