//! `GET /kv/?prefix=P&start=K&limit=N&keys_only=true`: the query string and the
//! JSON page it returns.
//!
//! A page is `{"items":[{"key":..,"value":..,"revision":N}],"next":C}`. A key or
//! value that is not UTF-8 comes as `key_base64` / `value_base64` instead; values
//! are absent with `keys_only`. `next` is an opaque cursor (base64url of the
//! following page's first key) to pass back as `cursor`, or `null` on the last
//! page.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};
use serde::{Deserialize, Serialize};

use super::ClientError;

/// Bytes left as they are in a query value: RFC 3986 unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One key of a listing; `value` is `None` for a `keys_only` listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListItem {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub revision: u64,
}

/// One page of a listing, keys in byte order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListPage {
    pub items: Vec<ListItem>,
    /// Where the next page starts (the cursor decoded: pass it back as
    /// `start`); `None` on the last page.
    pub next: Option<Vec<u8>>,
}

#[derive(Deserialize)]
struct WirePage {
    items: Vec<WireItem>,
    next: Option<String>,
}

#[derive(Deserialize)]
struct WireItem {
    key: Option<String>,
    key_base64: Option<String>,
    value: Option<String>,
    value_base64: Option<String>,
    revision: u64,
}

impl ListPage {
    /// Parses the JSON body of a listing.
    pub fn parse(body: &[u8]) -> Result<ListPage, ClientError> {
        let wire: WirePage = serde_json::from_slice(body)
            .map_err(|error| ClientError::Decode(format!("listing: {error}")))?;
        let items = wire
            .items
            .into_iter()
            .map(WireItem::decode)
            .collect::<Result<_, _>>()?;
        let next = wire
            .next
            .map(|cursor| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(cursor)
                    .map_err(|error| ClientError::Decode(format!("listing: next: {error}")))
            })
            .transpose()?;
        Ok(ListPage { items, next })
    }
}

impl WireItem {
    fn decode(self) -> Result<ListItem, ClientError> {
        let key = bytes_field("key", self.key, self.key_base64)?
            .ok_or_else(|| ClientError::Decode("listing: an item has no key".to_string()))?;
        let value = bytes_field("value", self.value, self.value_base64)?;
        Ok(ListItem {
            key,
            value,
            revision: self.revision,
        })
    }
}

/// The bytes of a field sent either as text or, under `<name>_base64`, as base64.
fn bytes_field(
    name: &str,
    text: Option<String>,
    base64: Option<String>,
) -> Result<Option<Vec<u8>>, ClientError> {
    match (text, base64) {
        (Some(text), None) => Ok(Some(text.into_bytes())),
        (None, Some(encoded)) => BASE64
            .decode(encoded)
            .map(Some)
            .map_err(|error| ClientError::Decode(format!("listing: {name}_base64: {error}"))),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(ClientError::Decode(format!(
            "listing: an item has both {name} and {name}_base64"
        ))),
    }
}

/// The request target of a listing; `limit` `None` leaves the server's default.
pub fn list_target(
    prefix: &[u8],
    start: Option<&[u8]>,
    limit: Option<usize>,
    keys_only: bool,
) -> String {
    let encode = |bytes: &[u8]| percent_encode(bytes, QUERY_VALUE).to_string();
    let mut target = format!("/kv/?prefix={}", encode(prefix));
    if let Some(start) = start {
        target.push_str(&format!("&start={}", encode(start)));
    }
    if let Some(limit) = limit {
        target.push_str(&format!("&limit={limit}"));
    }
    if keys_only {
        target.push_str("&keys_only=true");
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_and_base64_items() {
        let body = br#"{"items":[
            {"key":"a/b","value":"hello","revision":3},
            {"key_base64":"/wA=","value_base64":"AAE=","revision":7}
        ],"next":"Yy9k_w"}"#;
        let page = ListPage::parse(body).unwrap();
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.items[0].key, b"a/b");
        assert_eq!(page.items[0].value.as_deref(), Some(&b"hello"[..]));
        assert_eq!(page.items[0].revision, 3);
        assert_eq!(page.items[1].key, [0xff, 0x00]);
        assert_eq!(page.items[1].value.as_deref(), Some(&[0x00, 0x01][..]));
        assert_eq!(page.next.as_deref(), Some(&b"c/d\xff"[..]));
    }

    #[test]
    fn parses_keys_only_last_page() {
        let page = ListPage::parse(br#"{"items":[{"key":"k","revision":1}],"next":null}"#).unwrap();
        assert_eq!(page.items[0].value, None);
        assert_eq!(page.next, None);
        let empty = ListPage::parse(br#"{"items":[],"next":null}"#).unwrap();
        assert!(empty.items.is_empty());
    }

    #[test]
    fn rejects_malformed_pages() {
        for body in [
            &b"not json"[..],
            br#"{"items":[{"revision":1}],"next":null}"#,
            br#"{"items":[{"key":"k","key_base64":"aw==","revision":1}],"next":null}"#,
            br#"{"items":[{"key_base64":"!!","revision":1}],"next":null}"#,
            br#"{"items":[{"key":"k","revision":-1}],"next":null}"#,
        ] {
            assert!(matches!(ListPage::parse(body), Err(ClientError::Decode(_))));
        }
    }

    #[test]
    fn builds_the_query() {
        assert_eq!(list_target(b"", None, None, false), "/kv/?prefix=");
        assert_eq!(
            list_target(b"a b&c/", Some(b"\xff="), Some(10), true),
            "/kv/?prefix=a%20b%26c%2F&start=%FF%3D&limit=10&keys_only=true"
        );
    }
}
