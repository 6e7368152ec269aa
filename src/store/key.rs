//! `Key`: the state's map key, with short keys stored inline.
//!
//! Most keys are short (`user:1234`, `key-0000000042`). Stored inline in the
//! B-tree node they cost no allocation, and — what matters more — comparing
//! them during a search reads the node's own memory instead of following a
//! pointer per comparison, which on a large map is a cache miss each. Longer
//! keys live in a boxed slice. Order and equality are those of the bytes.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use bytes::Bytes;

/// Keys up to this many bytes are stored inline (the enum stays 24 bytes).
const INLINE_BYTES: usize = 22;

#[derive(Clone)]
pub enum Key {
    Inline { len: u8, bytes: [u8; INLINE_BYTES] },
    Heap(Box<[u8]>),
}

impl Key {
    /// The longest key stored inline.
    pub const INLINE_BYTES: usize = INLINE_BYTES;

    pub fn new(key: &[u8]) -> Key {
        if key.len() <= INLINE_BYTES {
            let mut bytes = [0u8; INLINE_BYTES];
            bytes[..key.len()].copy_from_slice(key);
            Key::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            Key::Heap(key.into())
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(bytes) => bytes,
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self.as_slice())
    }
}

impl Deref for Key {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Key {}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (
                Key::Inline { len, bytes },
                Key::Inline {
                    len: other_len,
                    bytes: other_bytes,
                },
            ) => compare_inline(bytes, *len, other_bytes, *other_len),
            _ => self.as_slice().cmp(other.as_slice()),
        }
    }
}

/// Byte order of two inline keys, without a call to `memcmp` per compare
/// (a B-tree search makes several per node). The arrays are zero past each
/// key's length, so comparing them whole orders the keys as their bytes do,
/// except that a key and that key followed by zero bytes compare equal;
/// the length settles that, as the shorter is a prefix of the longer.
fn compare_inline(
    bytes: &[u8; INLINE_BYTES],
    len: u8,
    other: &[u8; INLINE_BYTES],
    other_len: u8,
) -> Ordering {
    let (head, tail) = bytes.split_at(16);
    let (other_head, other_tail) = other.split_at(16);
    let word = |part: &[u8]| u128::from_be_bytes(part.try_into().unwrap_or([0; 16]));
    word(head)
        .cmp(&word(other_head))
        .then_with(|| tail.cmp(other_tail))
        .then(len.cmp(&other_len))
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:?}", Bytes::copy_from_slice(self.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_keys_keep_their_bytes_and_order() {
        let short = Key::new(b"abc");
        let exact = Key::new(&[7u8; INLINE_BYTES]);
        let long = Key::new(&[7u8; INLINE_BYTES + 1]);
        assert!(matches!(short, Key::Inline { .. }));
        assert!(matches!(exact, Key::Inline { .. }));
        assert!(matches!(long, Key::Heap(_)));
        assert_eq!(short.as_slice(), b"abc");
        assert!(exact < long, "a prefix sorts first");
        assert!(Key::new(b"") < Key::new(b"\0"));
        assert_eq!(std::mem::size_of::<Key>(), 24);
    }

    proptest::proptest! {
        #[test]
        fn keys_order_as_their_bytes_do(
            // Few distinct bytes, zeros included, so prefixes and ties are common.
            a in proptest::collection::vec(0u8..3, 0..=INLINE_BYTES + 2),
            b in proptest::collection::vec(0u8..3, 0..=INLINE_BYTES + 2),
        ) {
            let (key_a, key_b) = (Key::new(&a), Key::new(&b));
            proptest::prop_assert_eq!(key_a.cmp(&key_b), a.cmp(&b));
            proptest::prop_assert_eq!(key_a == key_b, a == b);
        }
    }
}
