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
        self.as_slice().cmp(other.as_slice())
    }
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
}
