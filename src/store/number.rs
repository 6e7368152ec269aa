//! Numbers in values as Redis reads and writes them: the integer grammar of
//! `string2ll`, and the `f64` floats of INCRBYFLOAT ops logged before Redis's
//! own 80-bit arithmetic ([`super::long_double`]) replaced them.
//! Both the state machine (INCR applied from the log) and the RESP front end
//! (arguments) use these, so a value means the same number on every replica.

/// An integer as Redis's `string2ll` reads it: optional `-`, no `+`, no
/// spaces, no leading zeros, within `i64`.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let plain = !digits.is_empty()
        && digits.len() <= 20
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || bytes == b"0");
    if !plain {
        return None;
    }
    parse_decimal(bytes)
}

/// Optional `-`, then one or more ASCII digits (leading zeros allowed),
/// within `i64`: what `str::parse::<i64>` accepts without a `+`, read in
/// one pass; [`parse_i64`] narrows it to Redis's grammar.
fn parse_decimal(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() {
        return None;
    }
    // Summed towards the sign, so i64::MIN parses as `str::parse` does.
    digits.iter().try_fold(0i64, |value, &byte| {
        let digit = i64::from(byte.checked_sub(b'0').filter(|digit| *digit <= 9)?);
        let shifted = value.checked_mul(10)?;
        if negative {
            shifted.checked_sub(digit)
        } else {
            shifted.checked_add(digit)
        }
    })
}

/// A float as INCRBYFLOAT read it before [`super::long_double`]: refusing
/// NaN, infinities and spaces. Kept so an old log's INCRBYFLOAT replays to
/// the value its client was answered with.
pub fn parse_f64(bytes: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.is_empty() || text.trim() != text {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("nan") || lower.contains("inf") {
        return None;
    }
    text.parse::<f64>().ok().filter(|value| value.is_finite())
}

/// Formats a float as INCRBYFLOAT replied before [`super::long_double`]:
/// shortest round-trip decimal, no exponent, no trailing `.0`.
pub fn format_f64(value: f64) -> String {
    let text = format!("{value}");
    match text.strip_suffix(".0") {
        Some(integer) => integer.to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_like_redis() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b"+1"[..],
            b" 1",
            b"01",
            b"1.0",
            b"",
            b"-",
            b"9223372036854775808",
            b"-0",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn floats_format_without_trailing_zero() {
        assert_eq!(format_f64(3.0), "3");
        assert_eq!(format_f64(10.5), "10.5");
        assert_eq!(parse_f64(b"nan"), None);
        assert_eq!(parse_f64(b" 1"), None);
        assert_eq!(parse_f64(b"5.0e3"), Some(5000.0));
    }
}
