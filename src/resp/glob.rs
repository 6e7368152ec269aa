//! Redis's glob patterns (KEYS, SCAN MATCH, PSUBSCRIBE, CONFIG GET…), shared
//! by the command families and the Pub/Sub registry.

/// Redis's glob match (`stringmatchlen`): `*`, `?`, `[abc]`, `[^a-z]`, `\x`.
/// Backtracks only to the last `*`, so the time is at most pattern × text
/// (a recursive matcher is exponential on patterns like `*a*a*a*b`).
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            star = Some((p + 1, t));
            p += 1;
            continue;
        }
        if let Some(next) = match_one(pattern, p, text[t]) {
            p = next;
            t += 1;
            continue;
        }
        match star {
            Some((after_star, start)) => {
                p = after_star;
                t = start + 1;
                star = Some((after_star, start + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&byte| byte == b'*')
}

/// Matches the pattern token at `p` (not a `*`) against one byte; the index of
/// the next token if it matches.
fn match_one(pattern: &[u8], p: usize, byte: u8) -> Option<usize> {
    match pattern.get(p)? {
        b'?' => Some(p + 1),
        b'[' => {
            let class = &pattern[p + 1..];
            let (matched, after) = class_match(class, byte)?;
            matched.then_some(pattern.len() - after.len())
        }
        b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == byte).then_some(p + 2),
        &literal => (literal == byte).then_some(p + 1),
    }
}

/// Matches `byte` against a `[...]` class whose body starts `class`; returns
/// whether it matched and the pattern after the closing `]`.
fn class_match(class: &[u8], byte: u8) -> Option<(bool, &[u8])> {
    let (negate, mut rest) = match class.split_first() {
        Some((b'^', rest)) => (true, rest),
        _ => (false, class),
    };
    let mut matched = false;
    loop {
        match rest {
            [] => return Some((matched != negate, rest)),
            [b']', after @ ..] => return Some((matched != negate, after)),
            [b'\\', escaped, after @ ..] => {
                matched |= *escaped == byte;
                rest = after;
            }
            // As in Redis, the byte after `-` ends the range even when it
            // is `]` (`[a-]` is the range from `]` to `a`, and the class
            // runs on), and bytes compare as C's signed `char`.
            [low, b'-', high, after @ ..] => {
                let (low, high) = (*low as i8, *high as i8);
                let (low, high) = if low <= high {
                    (low, high)
                } else {
                    (high, low)
                };
                matched |= (low..=high).contains(&(byte as i8));
                rest = after;
            }
            [single, after @ ..] => {
                matched |= *single == byte;
                rest = after;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_redis() {
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"h?llo", b"hello"));
        assert!(glob_match(b"h*llo", b"heeeello"));
        assert!(glob_match(b"h[ae]llo", b"hallo"));
        assert!(!glob_match(b"h[^e]llo", b"hello"));
        assert!(glob_match(b"h[a-b]llo", b"hbllo"));
        assert!(glob_match(b"h\\*llo", b"h*llo"));
        assert!(!glob_match(b"h\\*llo", b"hello"));
        assert!(glob_match(b"user:*:name", b"user:42:name"));
        assert!(!glob_match(b"a*b", b"ac"));
        assert!(glob_match(b"a*b*c", b"axxbyyc"));
        // Redis reads `a-]` as a range ending at `]`, so the class runs to
        // the pattern's end: `h[a-]llo` is `h` and one byte of `]`..`a`, `l`, `o`.
        assert!(!glob_match(b"h[a-]llo", b"hallo"));
        assert!(!glob_match(b"h[a-]llo", b"h-llo"));
        assert!(glob_match(b"h[a-]llo", b"h_"));
        assert!(glob_match(b"h[a-]llo", b"ho"));
        // Signed bytes: `[a-\xff]` spans -1..=97, so 0xff and 0x00 but not 0xc3.
        assert!(glob_match(b"[a-\xff]", b"\xff"));
        assert!(glob_match(b"[a-\xff]", b"\x00"));
        assert!(!glob_match(b"[a-\xff]", b"\xc3"));
        let long = vec![b'a'; 4000];
        assert!(!glob_match(b"*a*a*a*a*a*a*a*a*b", &long));
    }
}
