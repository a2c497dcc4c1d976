//! The MD5 digests SQS returns and SDKs verify: of the body, of the message attributes and of
//! the message system attributes. The attribute digest is AWS's own encoding (sorted names,
//! big-endian u32 lengths, a transport-type byte); a single wrong byte makes Java, .NET, Ruby
//! and JS clients throw.

use md5::{Digest, Md5};

/// The value of one message attribute as the digest sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DigestValue<'a> {
    /// String and Number attributes (and their custom subtypes).
    Text(&'a str),
    Binary(&'a [u8]),
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

pub fn md5(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

/// The MD5 of each of `bodies`, in order: several at a time where the CPU allows (see
/// [`crate::md5x8`]), one by one otherwise.
pub fn md5_each(bodies: &[&[u8]]) -> Vec<[u8; 16]> {
    #[cfg(target_arch = "x86_64")]
    if bodies.len() > 1 && std::arch::is_x86_feature_detected!("avx2") {
        return md5_in_lanes(bodies);
    }
    bodies.iter().map(|b| md5(b)).collect()
}

/// [`md5_each`] with AVX2. Messages are grouped shortest first, and a group takes a message
/// only while it needs at most twice the blocks of the group's first: every lane pays for the
/// group's longest, and past that ratio hashing alone is cheaper.
#[cfg(target_arch = "x86_64")]
fn md5_in_lanes(bodies: &[&[u8]]) -> Vec<[u8; 16]> {
    use crate::md5x8::{md5x8, Padded, LANES};

    let mut order: Vec<usize> = (0..bodies.len()).collect();
    order.sort_by_key(|&i| bodies[i].len());
    let padded: Vec<Padded<'_>> = order.iter().map(|&i| Padded::new(bodies[i])).collect();
    let mut out = vec![[0u8; 16]; bodies.len()];
    let mut start = 0;
    while start < order.len() {
        let limit = 2 * padded[start].blocks();
        let len = padded[start..].iter().take(LANES).take_while(|p| p.blocks() <= limit).count();
        let (lanes, indices) = (&padded[start..start + len], &order[start..start + len]);
        if let [only] = indices {
            out[*only] = md5(bodies[*only]);
        } else {
            let mut digests = [[0u8; 16]; LANES];
            // SAFETY: md5_each checked that the CPU has AVX2.
            unsafe { md5x8(lanes, &mut digests[..len]) };
            for (&i, digest) in indices.iter().zip(digests) {
                out[i] = digest;
            }
        }
        start += len;
    }
    out
}

pub fn md5_hex(data: &[u8]) -> String {
    hex(&md5(data))
}

fn put_len_prefixed(h: &mut Md5, bytes: &[u8]) {
    // Names, types and values are bounded far below 4 GiB by the request limits; saturating
    // keeps this total anyway.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    h.update(len.to_be_bytes());
    h.update(bytes);
}

/// MD5OfMessageAttributes / MD5OfMessageSystemAttributes over `(name, data type, value)`.
/// Sorts by name itself, so callers may pass any order. None for no attributes: AWS omits the
/// field then rather than returning the digest of nothing.
pub fn md5_of_attributes<'a>(
    attrs: impl IntoIterator<Item = (&'a str, &'a str, DigestValue<'a>)>,
) -> Option<String> {
    let mut attrs: Vec<_> = attrs.into_iter().collect();
    if attrs.is_empty() {
        return None;
    }
    attrs.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = Md5::new();
    for (name, data_type, value) in attrs {
        put_len_prefixed(&mut h, name.as_bytes());
        put_len_prefixed(&mut h, data_type.as_bytes());
        match value {
            DigestValue::Text(s) => {
                h.update([1u8]);
                put_len_prefixed(&mut h, s.as_bytes());
            }
            DigestValue::Binary(b) => {
                h.update([2u8]);
                put_len_prefixed(&mut h, b);
            }
        }
    }
    Some(hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length around the block and padding boundaries, and groups of every size, mixed
    /// so that lanes finish at different blocks: the same digests as hashing one at a time.
    #[test]
    fn several_at_once_match_one_at_a_time() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let lengths = [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 1024, 1500, 4096];
        for count in 1..=12 {
            for start in 0..lengths.len() {
                let bodies: Vec<&[u8]> =
                    (0..count).map(|j| &data[..lengths[(start + j * 5) % lengths.len()]]).collect();
                let one_by_one: Vec<[u8; 16]> = bodies.iter().map(|b| md5(b)).collect();
                assert_eq!(
                    md5_each(&bodies),
                    one_by_one,
                    "lengths {:?}",
                    bodies.iter().map(|b| b.len()).collect::<Vec<_>>()
                );
            }
        }
    }

    // Vectors from the facts file (checked there against an independent implementation).
    #[test]
    fn string_attribute_vector() {
        let d = md5_of_attributes([("attribName1", "String", DigestValue::Text("attribValue 1"))]);
        assert_eq!(d.as_deref(), Some("19e27d4e946b072f3f58da80d94fd778"));
    }

    #[test]
    fn custom_number_vector() {
        let d = md5_of_attributes([(
            "customNumberTypeAttrib",
            "Number.float",
            DigestValue::Text("4563442423554324324264524243.32543234"),
        )]);
        assert_eq!(d.as_deref(), Some("9fe1b90bbd9965bdf77bac517c7d2495"));
    }

    #[test]
    fn binary_vector() {
        let d =
            md5_of_attributes([("binaryAttribute", "Binary", DigestValue::Binary(b"Hello binary world!"))]);
        assert_eq!(d.as_deref(), Some("31a92b15d92f8db860eda32aceb656c3"));
    }

    #[test]
    fn all_three_in_any_order() {
        let d = md5_of_attributes([
            ("binaryAttribute", "Binary", DigestValue::Binary(b"Hello binary world!")),
            ("attribName1", "String", DigestValue::Text("attribValue 1")),
            (
                "customNumberTypeAttrib",
                "Number.float",
                DigestValue::Text("4563442423554324324264524243.32543234"),
            ),
        ]);
        assert_eq!(d.as_deref(), Some("c932db14a896c663f83c260297d594ff"));
    }

    #[test]
    fn none_for_no_attributes() {
        assert_eq!(md5_of_attributes(std::iter::empty()), None);
    }

    #[test]
    fn body_digest() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"hello"), "5d41402abc4b2a76b9719d911017c592");
    }
}
