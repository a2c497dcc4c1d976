//! The byte layout of segment and ack files, and the scanner that reads segments back.
//!
//! Segment file (`<number as 8 hex digits>.seg`):
//!
//! ```text
//! offset 0   8 bytes  magic  b"wharfSEG"
//! offset 8   u32 LE   format version (1)
//! offset 12  u32 LE   the segment's own number (must match the file name)
//! offset 16  frames, back to back, each:
//!              u32 LE  payload length (1 ..= 1 GiB; zero is refused)
//!              u32 LE  crc32c(payload)
//!              payload bytes
//! ```
//!
//! Ack file (`<number>.ack`): a sequence of u32 LE frame offsets, one per settled record.
//!
//! Zero-length payloads are refused on append. That makes an all-zero frame header invalid,
//! so a zero-filled region (what some file systems leave after a power cut, when the file size
//! reached the disk before the data did) can never be mistaken for records.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

pub(crate) const MAGIC: [u8; 8] = *b"wharfSEG";
pub(crate) const VERSION: u32 = 1;
/// Length of the segment header; the first frame starts here.
pub(crate) const HEADER_LEN: u64 = 16;
/// `[u32 length][u32 crc32c]` before each payload.
pub(crate) const FRAME_HEADER_LEN: u64 = 8;
/// Bytes per ack entry.
pub(crate) const ACK_ENTRY_LEN: u64 = 4;

/// Recovery reads segments in chunks of this size (grown when one frame is larger).
const SCAN_CHUNK: usize = 4 << 20;

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
    Good,
    /// Shorter than a header, and what is there is a prefix of the right header (or zeros): the
    /// file was created and the process died before the header write completed.
    Torn,
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
    if version != VERSION {
        return HeaderCheck::Bad(format!("unknown segment format version {version}"));
    }
    let own = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    if own != number {
        return HeaderCheck::Bad(format!("header names segment {own:08x}, file name says {number:08x}"));
    }
    HeaderCheck::Good
}

/// Append one frame for `payload` to `buf`.
pub(crate) fn encode_frame(buf: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("record size limit keeps lengths in u32");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Parse a frame header: (payload length, crc).
pub(crate) fn decode_frame_header(bytes: &[u8]) -> (u32, u32) {
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    (len, crc)
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
}

impl ScanEnd {
    /// Where the good frames end.
    pub(crate) fn good_end(&self, file_len: u64) -> u64 {
        match self {
            ScanEnd::Clean => file_len,
            ScanEnd::Incomplete { at } | ScanEnd::BadAtEof { at } | ScanEnd::Bad { at, .. } => *at,
        }
    }
}

/// Read every frame of a segment from `HEADER_LEN` to `file_len` in big sequential chunks,
/// verifying each CRC, and call `visit(offset, payload)` for each good frame in order. Stops at
/// the first bad frame and says why. A length of 0 or above `length_limit` is impossible.
/// Recovery passes the format's hard limit, not the configured `max_record_size`: lowering that
/// admission limit must not make records written under the old one look like damage.
pub(crate) fn scan_frames(
    file: &File,
    file_len: u64,
    length_limit: usize,
    visit: &mut dyn FnMut(u32, &[u8]),
) -> io::Result<ScanEnd> {
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
        if (avail as u64) < FRAME_HEADER_LEN {
            if at + FRAME_HEADER_LEN > file_len {
                return Ok(ScanEnd::Incomplete { at });
            }
            refill(file, file_len, &mut buf, &mut buf_start, &mut pos, FRAME_HEADER_LEN as usize)?;
            continue;
        }
        let (len, crc) = decode_frame_header(&buf[pos..pos + FRAME_HEADER_LEN as usize]);
        let frame_len = FRAME_HEADER_LEN + u64::from(len);
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
        let payload = &buf[pos + FRAME_HEADER_LEN as usize..pos + frame_len as usize];
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

    fn scan(bytes: &[u8]) -> (Vec<(u32, Vec<u8>)>, ScanEnd) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut file = File::create(&path).unwrap();
        file.write_all(&segment_header(0)).unwrap();
        file.write_all(bytes).unwrap();
        let file = File::open(&path).unwrap();
        let len = file.metadata().unwrap().len();
        let mut seen = Vec::new();
        let end = scan_frames(&file, len, 1 << 20, &mut |o, p| seen.push((o, p.to_vec()))).unwrap();
        (seen, end)
    }

    #[test]
    fn header_checks() {
        let h = segment_header(7);
        assert_eq!(check_header(&h, 7), HeaderCheck::Good);
        assert!(matches!(check_header(&h, 8), HeaderCheck::Bad(_)));
        assert_eq!(check_header(&h[..5], 7), HeaderCheck::Torn);
        assert_eq!(check_header(&[], 7), HeaderCheck::Torn);
        assert_eq!(check_header(&[0; 9], 7), HeaderCheck::Torn);
        assert!(matches!(check_header(b"garbage!garbage!", 7), HeaderCheck::Bad(_)));
        assert!(matches!(check_header(b"xy", 7), HeaderCheck::Bad(_)));
    }

    #[test]
    fn scans_frames_and_classifies_ends() {
        let mut bytes = Vec::new();
        encode_frame(&mut bytes, b"hello");
        encode_frame(&mut bytes, b"world!");
        let (seen, end) = scan(&bytes);
        assert_eq!(seen, vec![(16, b"hello".to_vec()), (29, b"world!".to_vec())]);
        assert_eq!(end, ScanEnd::Clean);

        let (seen, end) = scan(&bytes[..bytes.len() - 1]);
        assert_eq!(seen.len(), 1);
        assert_eq!(end, ScanEnd::Incomplete { at: 29 });

        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(scan(&flipped).1, ScanEnd::BadAtEof { at: 29 });

        let mut flipped = bytes.clone();
        flipped[9] ^= 1;
        assert!(matches!(scan(&flipped).1, ScanEnd::Bad { at: 16, .. }));

        let mut zeros = bytes.clone();
        zeros.extend_from_slice(&[0; 40]);
        assert!(matches!(scan(&zeros).1, ScanEnd::Bad { at: 43, .. }));
    }

    #[test]
    fn frames_larger_than_a_chunk() {
        let big = vec![7u8; SCAN_CHUNK + 123];
        let mut bytes = Vec::new();
        encode_frame(&mut bytes, b"a");
        encode_frame(&mut bytes, &big);
        encode_frame(&mut bytes, b"b");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut file = File::create(&path).unwrap();
        file.write_all(&segment_header(0)).unwrap();
        file.write_all(&bytes).unwrap();
        let file = File::open(&path).unwrap();
        let len = file.metadata().unwrap().len();
        let mut sizes = Vec::new();
        let end = scan_frames(&file, len, 64 << 20, &mut |_, p| sizes.push(p.len())).unwrap();
        assert_eq!(end, ScanEnd::Clean);
        assert_eq!(sizes, vec![1, big.len(), 1]);
    }
}
