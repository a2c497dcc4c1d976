//! MD5 of up to eight messages at once, one message per 32-bit lane of an AVX2 register
//! ("multi-buffer" hashing, as Intel's ISA-L does it).
//!
//! Why: MD5 is a chain of 64 dependent steps per block, so one digest cannot use a wide vector
//! unit, but eight independent digests can share every instruction. `SendMessageBatch` answers
//! with the MD5 of each of up to ten bodies, and before this hashing was the largest single cost
//! of that call (a batch of ten 1 KiB bodies: ~16 us of MD5; docs/BENCHMARKS.md has the
//! before and after).
//!
//! The lanes of a group step through their blocks together; a lane whose message has fewer
//! blocks is read out when its last block is done and is fed zeros after that. The caller
//! groups messages of similar length so that little of this is wasted.

/// The most messages hashed together.
pub(crate) const LANES: usize = 8;

/// One message as MD5 consumes it: its whole 64-byte blocks, then one or two blocks holding
/// the rest of it, the 0x80 marker, zeros and its length in bits.
pub(crate) struct Padded<'a> {
    whole: &'a [u8],
    tail: [u8; 128],
    tail_blocks: usize,
}

impl<'a> Padded<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        let whole_len = data.len() / 64 * 64;
        let (whole, rest) = data.split_at(whole_len);
        let mut tail = [0u8; 128];
        tail[..rest.len()].copy_from_slice(rest);
        tail[rest.len()] = 0x80;
        // The length takes the last 8 bytes of a block: a rest of 56 bytes or more needs a
        // second block for it.
        let tail_blocks = if rest.len() < 56 { 1 } else { 2 };
        let bits = (data.len() as u64).wrapping_mul(8);
        tail[tail_blocks * 64 - 8..tail_blocks * 64].copy_from_slice(&bits.to_le_bytes());
        Padded { whole, tail, tail_blocks }
    }

    /// Blocks MD5 processes for this message.
    pub(crate) fn blocks(&self) -> usize {
        self.whole.len() / 64 + self.tail_blocks
    }

    /// Block `i`, or zeros past the end (a finished lane's input is never read out).
    fn block(&self, i: usize) -> &[u8] {
        const ZEROS: [u8; 64] = [0; 64];
        let whole_blocks = self.whole.len() / 64;
        if i < whole_blocks {
            &self.whole[i * 64..i * 64 + 64]
        } else if i - whole_blocks < self.tail_blocks {
            let t = i - whole_blocks;
            &self.tail[t * 64..t * 64 + 64]
        } else {
            &ZEROS
        }
    }
}

/// The digest of each message in `lanes` (at most [`LANES`]), into `out` in the same order.
///
/// # Safety
/// The CPU must support AVX2 (`is_x86_feature_detected!("avx2")`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn md5x8(lanes: &[Padded<'_>], out: &mut [[u8; 16]]) {
    use std::arch::x86_64::*;

    assert!(lanes.len() <= LANES && out.len() == lanes.len());

    macro_rules! add {
        ($x:expr, $y:expr) => {
            _mm256_add_epi32($x, $y)
        };
    }
    macro_rules! rotl {
        ($x:expr, $s:literal) => {{
            let x = $x;
            _mm256_or_si256(_mm256_slli_epi32::<$s>(x), _mm256_srli_epi32::<{ 32 - $s }>(x))
        }};
    }
    // The four round functions, written with as few operations as AVX2 allows.
    macro_rules! f {
        ($b:expr, $c:expr, $d:expr) => {
            _mm256_xor_si256($d, _mm256_and_si256($b, _mm256_xor_si256($c, $d)))
        };
    }
    macro_rules! g {
        ($b:expr, $c:expr, $d:expr) => {
            _mm256_xor_si256($c, _mm256_and_si256($d, _mm256_xor_si256($b, $c)))
        };
    }
    macro_rules! h {
        ($b:expr, $c:expr, $d:expr) => {
            _mm256_xor_si256(_mm256_xor_si256($b, $c), $d)
        };
    }
    macro_rules! i {
        ($b:expr, $c:expr, $d:expr) => {
            _mm256_xor_si256($c, _mm256_or_si256($b, _mm256_xor_si256($d, _mm256_set1_epi32(-1))))
        };
    }
    macro_rules! step {
        ($fun:ident, $a:ident, $b:ident, $c:ident, $d:ident, $m:expr, $k:literal, $s:literal) => {
            $a = add!(
                $b,
                rotl!(add!(add!($a, $fun!($b, $c, $d)), add!($m, _mm256_set1_epi32($k as u32 as i32))), $s)
            );
        };
    }

    let mut a = _mm256_set1_epi32(0x6745_2301);
    let mut b = _mm256_set1_epi32(0xefcd_ab89_u32 as i32);
    let mut c = _mm256_set1_epi32(0x98ba_dcfe_u32 as i32);
    let mut d = _mm256_set1_epi32(0x1032_5476);
    let blocks = lanes.iter().map(Padded::blocks).max().unwrap_or(0);

    for n in 0..blocks {
        let mut input: [&[u8]; LANES] = [&[0u8; 64]; LANES];
        for (slot, lane) in input.iter_mut().zip(lanes) {
            *slot = lane.block(n);
        }
        // m[k]: word k of every lane's block.
        let mut m = [_mm256_setzero_si256(); 16];
        for (k, word) in m.iter_mut().enumerate() {
            let w = |lane: usize| {
                let bytes = &input[lane][k * 4..k * 4 + 4];
                u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as i32
            };
            *word = _mm256_setr_epi32(w(0), w(1), w(2), w(3), w(4), w(5), w(6), w(7));
        }
        let (aa, bb, cc, dd) = (a, b, c, d);

        step!(f, a, b, c, d, m[0], 0xd76aa478, 7);
        step!(f, d, a, b, c, m[1], 0xe8c7b756, 12);
        step!(f, c, d, a, b, m[2], 0x242070db, 17);
        step!(f, b, c, d, a, m[3], 0xc1bdceee, 22);
        step!(f, a, b, c, d, m[4], 0xf57c0faf, 7);
        step!(f, d, a, b, c, m[5], 0x4787c62a, 12);
        step!(f, c, d, a, b, m[6], 0xa8304613, 17);
        step!(f, b, c, d, a, m[7], 0xfd469501, 22);
        step!(f, a, b, c, d, m[8], 0x698098d8, 7);
        step!(f, d, a, b, c, m[9], 0x8b44f7af, 12);
        step!(f, c, d, a, b, m[10], 0xffff5bb1, 17);
        step!(f, b, c, d, a, m[11], 0x895cd7be, 22);
        step!(f, a, b, c, d, m[12], 0x6b901122, 7);
        step!(f, d, a, b, c, m[13], 0xfd987193, 12);
        step!(f, c, d, a, b, m[14], 0xa679438e, 17);
        step!(f, b, c, d, a, m[15], 0x49b40821, 22);

        step!(g, a, b, c, d, m[1], 0xf61e2562, 5);
        step!(g, d, a, b, c, m[6], 0xc040b340, 9);
        step!(g, c, d, a, b, m[11], 0x265e5a51, 14);
        step!(g, b, c, d, a, m[0], 0xe9b6c7aa, 20);
        step!(g, a, b, c, d, m[5], 0xd62f105d, 5);
        step!(g, d, a, b, c, m[10], 0x02441453, 9);
        step!(g, c, d, a, b, m[15], 0xd8a1e681, 14);
        step!(g, b, c, d, a, m[4], 0xe7d3fbc8, 20);
        step!(g, a, b, c, d, m[9], 0x21e1cde6, 5);
        step!(g, d, a, b, c, m[14], 0xc33707d6, 9);
        step!(g, c, d, a, b, m[3], 0xf4d50d87, 14);
        step!(g, b, c, d, a, m[8], 0x455a14ed, 20);
        step!(g, a, b, c, d, m[13], 0xa9e3e905, 5);
        step!(g, d, a, b, c, m[2], 0xfcefa3f8, 9);
        step!(g, c, d, a, b, m[7], 0x676f02d9, 14);
        step!(g, b, c, d, a, m[12], 0x8d2a4c8a, 20);

        step!(h, a, b, c, d, m[5], 0xfffa3942, 4);
        step!(h, d, a, b, c, m[8], 0x8771f681, 11);
        step!(h, c, d, a, b, m[11], 0x6d9d6122, 16);
        step!(h, b, c, d, a, m[14], 0xfde5380c, 23);
        step!(h, a, b, c, d, m[1], 0xa4beea44, 4);
        step!(h, d, a, b, c, m[4], 0x4bdecfa9, 11);
        step!(h, c, d, a, b, m[7], 0xf6bb4b60, 16);
        step!(h, b, c, d, a, m[10], 0xbebfbc70, 23);
        step!(h, a, b, c, d, m[13], 0x289b7ec6, 4);
        step!(h, d, a, b, c, m[0], 0xeaa127fa, 11);
        step!(h, c, d, a, b, m[3], 0xd4ef3085, 16);
        step!(h, b, c, d, a, m[6], 0x04881d05, 23);
        step!(h, a, b, c, d, m[9], 0xd9d4d039, 4);
        step!(h, d, a, b, c, m[12], 0xe6db99e5, 11);
        step!(h, c, d, a, b, m[15], 0x1fa27cf8, 16);
        step!(h, b, c, d, a, m[2], 0xc4ac5665, 23);

        step!(i, a, b, c, d, m[0], 0xf4292244, 6);
        step!(i, d, a, b, c, m[7], 0x432aff97, 10);
        step!(i, c, d, a, b, m[14], 0xab9423a7, 15);
        step!(i, b, c, d, a, m[5], 0xfc93a039, 21);
        step!(i, a, b, c, d, m[12], 0x655b59c3, 6);
        step!(i, d, a, b, c, m[3], 0x8f0ccc92, 10);
        step!(i, c, d, a, b, m[10], 0xffeff47d, 15);
        step!(i, b, c, d, a, m[1], 0x85845dd1, 21);
        step!(i, a, b, c, d, m[8], 0x6fa87e4f, 6);
        step!(i, d, a, b, c, m[15], 0xfe2ce6e0, 10);
        step!(i, c, d, a, b, m[6], 0xa3014314, 15);
        step!(i, b, c, d, a, m[13], 0x4e0811a1, 21);
        step!(i, a, b, c, d, m[4], 0xf7537e82, 6);
        step!(i, d, a, b, c, m[11], 0xbd3af235, 10);
        step!(i, c, d, a, b, m[2], 0x2ad7d2bb, 15);
        step!(i, b, c, d, a, m[9], 0xeb86d391, 21);

        a = add!(a, aa);
        b = add!(b, bb);
        c = add!(c, cc);
        d = add!(d, dd);

        // Read out the lanes whose last block this was.
        if lanes.iter().any(|lane| lane.blocks() == n + 1) {
            let mut state = [[0u32; LANES]; 4];
            for (words, v) in state.iter_mut().zip([a, b, c, d]) {
                _mm256_storeu_si256(words.as_mut_ptr().cast(), v);
            }
            for (lane, (padded, digest)) in lanes.iter().zip(out.iter_mut()).enumerate() {
                if padded.blocks() == n + 1 {
                    for (word, bytes) in digest.chunks_exact_mut(4).enumerate() {
                        bytes.copy_from_slice(&state[word][lane].to_le_bytes());
                    }
                }
            }
        }
    }
}
