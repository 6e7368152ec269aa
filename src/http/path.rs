//! Strict percent-decoding of keys and query parameters.
//!
//! A key is any bytes, so the path is decoded to bytes, not to a string, and a
//! malformed escape (`%zz`, a lone `%`) is an error rather than passed through:
//! guessing what a client meant could write to the wrong key.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad percent-encoding at byte {offset}: '%' must be followed by two hex digits")]
pub struct BadEncoding {
    pub offset: usize,
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes; with `plus_is_space` (query strings), `+` is a space.
pub fn percent_decode(input: &str, plus_is_space: bool) -> Result<Vec<u8>, BadEncoding> {
    let bytes = input.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let high = bytes.get(index + 1).copied().and_then(hex_value);
                let low = bytes.get(index + 2).copied().and_then(hex_value);
                match (high, low) {
                    (Some(high), Some(low)) => decoded.push(high << 4 | low),
                    _ => return Err(BadEncoding { offset: index }),
                }
                index += 3;
            }
            b'+' if plus_is_space => {
                decoded.push(b' ');
                index += 1;
            }
            byte => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    Ok(decoded)
}

/// Query parameters as decoded bytes; a repeated name keeps its last value.
pub fn parse_query(query: &str) -> Result<HashMap<String, Vec<u8>>, BadEncoding> {
    let mut params = HashMap::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = String::from_utf8_lossy(&percent_decode(name, true)?).into_owned();
        params.insert(name, percent_decode(value, true)?);
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_bytes_and_refuses_bad_escapes() {
        assert_eq!(
            percent_decode("a%2Fb%00%ff c", false).unwrap(),
            b"a/b\0\xff c"
        );
        assert_eq!(percent_decode("a+b", false).unwrap(), b"a+b");
        assert_eq!(percent_decode("a+b", true).unwrap(), b"a b");
        assert_eq!(percent_decode("%zz", false), Err(BadEncoding { offset: 0 }));
        assert_eq!(
            percent_decode("ab%4", false),
            Err(BadEncoding { offset: 2 })
        );
    }

    #[test]
    fn query_parameters() {
        let params = parse_query("prefix=a%2F&limit=10&keys_only").unwrap();
        assert_eq!(params["prefix"], b"a/");
        assert_eq!(params["limit"], b"10");
        assert_eq!(params["keys_only"], b"");
    }
}
