//! RESP2 requests in, replies out.
//!
//! A request is either a multibulk (`*<n>\r\n` then n bulk strings
//! `$<len>\r\n<bytes>\r\n`) or an inline command (one line of words, as telnet
//! sends). Like Redis, a request may not nest: an array element that is not a
//! bulk string is a protocol error, which bounds nesting depth at one.
//!
//! [`parse_request`] first checks that a whole request is buffered and only then
//! slices it out; a partial request is [`Parsed::Incomplete`], a normal state.
//! Every length is checked against [`Limits`] before anything is allocated, so
//! a client cannot make the server reserve memory it never sends.

use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Caps on what one request may hold. A request beyond them is a protocol
/// error: the client gets `-ERR Protocol error: …` and is disconnected.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest bulk string (the value limit).
    pub max_bulk_bytes: usize,
    /// Most elements in one multibulk.
    pub max_array_len: usize,
    /// Longest inline command, and longest `*`/`$` header line.
    pub max_inline_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_bytes: 16 << 20,
            max_array_len: 1 << 20,
            max_inline_bytes: 64 << 10,
        }
    }
}

/// A request the client got wrong; the text follows `-ERR Protocol error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

fn protocol_error(message: impl Into<String>) -> ProtocolError {
    ProtocolError(message.into())
}

/// The result of looking at the front of the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request of `consumed` bytes whose arguments are these ranges.
    /// An empty list is an empty inline line or `*0`, which Redis ignores.
    Request {
        args: Vec<Range<usize>>,
        consumed: usize,
    },
    /// A whole inline command of `consumed` bytes. Its words are unquoted
    /// and unescaped (`"a b"`, `"\x41"`), so they are bytes of their own
    /// rather than ranges of the buffer.
    Inline { args: Vec<Vec<u8>>, consumed: usize },
    /// More bytes are needed.
    Incomplete,
}

/// Looks for one whole request at the start of `buffer`.
pub fn parse_request(buffer: &[u8], limits: &Limits) -> Result<Parsed, ProtocolError> {
    RequestParser::new(*limits).parse(buffer)
}

/// Takes the first whole request off `buffer`, as argument byte strings.
pub fn take_request(
    buffer: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    RequestParser::new(*limits).take(buffer)
}

/// Frames up to this size are copied out of the read buffer.
const COPIED_FRAME_BYTES: usize = 64 << 10;

/// Takes the first `consumed` bytes off `buffer` as a frame of their own.
///
/// The arguments are slices of the frame, and a SET's value is stored as
/// one: a frame split off the read buffer would share the buffer's whole
/// allocation (16 KiB or more), so one stored 100-byte value could keep
/// every other command read with it in memory for as long as the key lives.
/// A small frame is therefore copied into an allocation of its own (which
/// also leaves the read buffer unshared, so it is reused, not reallocated).
/// A large one is split off without a copy when it fills most of the
/// buffer's allocation, so it pins little besides itself.
fn detach_frame(buffer: &mut BytesMut, consumed: usize) -> Bytes {
    if consumed <= COPIED_FRAME_BYTES || buffer.capacity() > consumed.saturating_mul(2) {
        let frame = Bytes::copy_from_slice(&buffer[..consumed]);
        buffer.advance(consumed);
        frame
    } else {
        buffer.split_to(consumed).freeze()
    }
}

/// A request parser that remembers how far it got into a partial multibulk,
/// so a large request arriving in many reads is parsed once, not once per
/// read. The buffer's front must not change between calls until a request is
/// taken.
#[derive(Debug)]
pub struct RequestParser {
    limits: Limits,
    partial: Option<Partial>,
}

/// The arguments of a multibulk found so far.
#[derive(Debug)]
struct Partial {
    count: usize,
    args: Vec<Range<usize>>,
    /// Where the next bulk string starts.
    position: usize,
}

impl RequestParser {
    pub fn new(limits: Limits) -> RequestParser {
        RequestParser {
            limits,
            partial: None,
        }
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Takes the first whole request off `buffer`, as argument byte strings.
    pub fn take(&mut self, buffer: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        match self.parse(buffer)? {
            Parsed::Incomplete => Ok(None),
            Parsed::Request { args, consumed } => {
                let frame = detach_frame(buffer, consumed);
                Ok(Some(
                    args.into_iter().map(|range| frame.slice(range)).collect(),
                ))
            }
            Parsed::Inline { args, consumed } => {
                buffer.advance(consumed);
                Ok(Some(args.into_iter().map(Bytes::from).collect()))
            }
        }
    }

    /// Looks for one whole request at the start of `buffer`.
    pub fn parse(&mut self, buffer: &[u8]) -> Result<Parsed, ProtocolError> {
        if let Some(partial) = self.partial.take() {
            return self.continue_multibulk(buffer, partial);
        }
        match buffer.first() {
            None => Ok(Parsed::Incomplete),
            Some(b'*') => match parse_multibulk_header(buffer, &self.limits)? {
                Some(partial) => self.continue_multibulk(buffer, partial),
                None => Ok(Parsed::Incomplete),
            },
            Some(_) => parse_inline(buffer, &self.limits),
        }
    }

    fn continue_multibulk(
        &mut self,
        buffer: &[u8],
        mut partial: Partial,
    ) -> Result<Parsed, ProtocolError> {
        while partial.args.len() < partial.count {
            match parse_bulk(buffer, partial.position, &self.limits)? {
                Some(range) => {
                    partial.position = range.end + 2;
                    partial.args.push(range);
                }
                None => {
                    self.partial = Some(partial);
                    return Ok(Parsed::Incomplete);
                }
            }
        }
        Ok(Parsed::Request {
            args: partial.args,
            consumed: partial.position,
        })
    }
}

/// The end of the line starting at `start` (the index of its `\r`), if the
/// whole line is buffered; an error if it is longer than `max` without ending.
fn find_line_end(
    buffer: &[u8],
    start: usize,
    max: usize,
    what: &str,
) -> Result<Option<usize>, ProtocolError> {
    let window = &buffer[start..buffer.len().min(start.saturating_add(max + 2))];
    match window.windows(2).position(|pair| pair == b"\r\n") {
        Some(offset) => Ok(Some(start + offset)),
        None if window.len() > max => Err(protocol_error(format!("too big {what}"))),
        None => Ok(None),
    }
}

/// A length as Redis reads it (`string2ll`): optional `-`, digits, no
/// leading zero and no `-0`, so `*01` and `$-0` are protocol errors there
/// as here.
fn parse_length(digits: &[u8]) -> Option<i64> {
    crate::store::number::parse_i64(digits)
}

/// The `*<count>` line: the request's argument count and where its first
/// bulk string starts, if the line is all there.
fn parse_multibulk_header(
    buffer: &[u8],
    limits: &Limits,
) -> Result<Option<Partial>, ProtocolError> {
    let Some(end) = find_line_end(buffer, 1, 32, "mbulk count string")? else {
        return Ok(None);
    };
    let count = parse_length(&buffer[1..end])
        .filter(|&count| count <= limits.max_array_len as i64)
        .ok_or_else(|| protocol_error("invalid multibulk length"))?;
    let count = count.max(0) as usize;
    Ok(Some(Partial {
        count,
        args: Vec::with_capacity(count.min(64)),
        position: end + 2,
    }))
}

/// One `$<len>\r\n<bytes>\r\n` at `start`: the range of its bytes.
fn parse_bulk(
    buffer: &[u8],
    start: usize,
    limits: &Limits,
) -> Result<Option<Range<usize>>, ProtocolError> {
    let Some(&marker) = buffer.get(start) else {
        return Ok(None);
    };
    if marker != b'$' {
        return Err(protocol_error(format!(
            "expected '$', got '{}'",
            char::from(marker).escape_default()
        )));
    }
    let Some(end) = find_line_end(buffer, start + 1, 32, "bulk count string")? else {
        return Ok(None);
    };
    let length = parse_length(&buffer[start + 1..end])
        .filter(|&length| (0..=limits.max_bulk_bytes as i64).contains(&length))
        .ok_or_else(|| protocol_error("invalid bulk length"))? as usize;
    let data = end + 2;
    if buffer.len() < data + length + 2 {
        return Ok(None);
    }
    if &buffer[data + length..data + length + 2] != b"\r\n" {
        return Err(protocol_error("bulk string is not terminated by CRLF"));
    }
    Ok(Some(data..data + length))
}

fn parse_inline(buffer: &[u8], limits: &Limits) -> Result<Parsed, ProtocolError> {
    let window = &buffer[..buffer.len().min(limits.max_inline_bytes + 1)];
    let Some(newline) = window.iter().position(|&byte| byte == b'\n') else {
        return if window.len() > limits.max_inline_bytes {
            Err(protocol_error("too big inline request"))
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let line_end = if newline > 0 && buffer[newline - 1] == b'\r' {
        newline - 1
    } else {
        newline
    };
    let args = split_inline(&buffer[..line_end])?;
    Ok(Parsed::Inline {
        args,
        consumed: newline + 1,
    })
}

/// Splits an inline line into words as Redis's `sdssplitargs` does, so what
/// a user types into telnet means the same here:
/// - words are separated by blanks; a NUL ends the line;
/// - `"…"` may hold blanks and the escapes `\n`, `\r`, `\t`, `\b`, `\a`,
///   `\xHH` and `\` before any other byte (that byte itself);
/// - `'…'` may hold blanks, and `\'` for a quote; nothing else is escaped;
/// - a quote may open inside a word (`a"b c"` is `ab c`), but a closing quote
///   must end the word, and every quote must close: otherwise the line is
///   refused with Redis's "unbalanced quotes" error.
fn split_inline(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let unbalanced = || protocol_error("unbalanced quotes in request");
    // C's `isspace`, which separates words and must follow a closing quote.
    let is_space =
        |byte: Option<&u8>| matches!(byte, Some(b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'));
    let line = line.split(|&byte| byte == 0).next().unwrap_or_default();
    let mut words = Vec::new();
    let mut position = 0;
    loop {
        while is_space(line.get(position)) {
            position += 1;
        }
        if position == line.len() {
            return Ok(words);
        }
        let mut word = Vec::new();
        let mut quote: Option<u8> = None;
        loop {
            let byte = line.get(position).copied();
            match (quote, byte) {
                (Some(_), None) => return Err(unbalanced()),
                (None, None | Some(b' ' | b'\n' | b'\r' | b'\t')) => break,
                (None, Some(open @ (b'"' | b'\''))) => quote = Some(open),
                (None, Some(other)) => word.push(other),
                (Some(close), Some(byte)) if byte == close => {
                    if line.get(position + 1).is_some() && !is_space(line.get(position + 1)) {
                        return Err(unbalanced());
                    }
                    position += 1;
                    break;
                }
                (Some(b'"'), Some(b'\\')) => {
                    let (unescaped, length) = unescape(&line[position..]);
                    word.push(unescaped);
                    position += length - 1;
                }
                (Some(_), Some(b'\\')) if line.get(position + 1) == Some(&b'\'') => {
                    word.push(b'\'');
                    position += 1;
                }
                (Some(_), Some(other)) => word.push(other),
            }
            position += 1;
        }
        words.push(word);
    }
}

/// The byte a backslash escape inside double quotes stands for, and how many
/// bytes of `escape` (which starts at the backslash) it takes. A backslash
/// that ends the line stands for itself.
fn unescape(escape: &[u8]) -> (u8, usize) {
    let hex = |byte: u8| char::from(byte).to_digit(16);
    if let [b'x', high, low, ..] = escape[1..]
        && let (Some(high), Some(low)) = (hex(high), hex(low))
    {
        return ((high * 16 + low) as u8, 4);
    }
    match escape.get(1) {
        None => (b'\\', 1),
        Some(b'n') => (b'\n', 2),
        Some(b'r') => (b'\r', 2),
        Some(b't') => (b'\t', 2),
        Some(b'b') => (0x08, 2),
        Some(b'a') => (0x07, 2),
        Some(&other) => (other, 2),
    }
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`-style status line.
    Simple(&'static str),
    /// `-ERR …`: the whole text after `-`, including its code.
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    /// `$-1`, the missing value.
    Null,
    Array(Vec<Reply>),
    /// `*-1`, the missing array.
    NullArray,
    /// RESP3 `%`: a map; a flat array of keys and values in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// RESP3 `=`: text with a format (`txt`); a bulk string in RESP2.
    Verbatim(String),
    /// RESP3 `,`: a double; a bulk string in RESP2.
    Double(f64),
    /// RESP3 `#t`/`#f`; an integer 1/0 in RESP2.
    Boolean(bool),
    /// RESP3 `>`: out-of-band data (a Pub/Sub message or confirmation); an
    /// array in RESP2.
    Push(Vec<Reply>),
    /// Several replies in turn, for one request (SUBSCRIBE confirms each
    /// channel separately).
    Sequence(Vec<Reply>),
}

/// The protocol a connection speaks: 2 by default, 3 after `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

impl Protocol {
    /// The version number HELLO and CLIENT LIST show (2 or 3).
    pub fn version(self) -> u8 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Simple("OK")
    }

    /// `-ERR <message>`.
    pub fn err(message: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {message}"))
    }

    pub fn bulk(bytes: impl Into<Bytes>) -> Reply {
        Reply::Bulk(bytes.into())
    }

    pub fn text(text: impl Into<String>) -> Reply {
        Reply::Bulk(Bytes::from(text.into()))
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Out-of-band data (a push, or a sequence of them).
    pub fn is_push(&self) -> bool {
        match self {
            Reply::Push(_) => true,
            Reply::Sequence(replies) => replies.iter().all(Reply::is_push),
            _ => false,
        }
    }

    /// Appends the RESP2 wire form to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        self.encode_as(Protocol::Resp2, out);
    }

    /// Appends the wire form in `protocol` to `out`.
    pub fn encode_as(&self, protocol: Protocol, out: &mut BytesMut) {
        let resp3 = protocol == Protocol::Resp3;
        match self {
            Reply::Null | Reply::NullArray if resp3 => out.put_slice(b"_\r\n"),
            Reply::Map(pairs) if resp3 => {
                number_line(out, b'%', pairs.len());
                for (key, value) in pairs {
                    key.encode_as(protocol, out);
                    value.encode_as(protocol, out);
                }
            }
            Reply::Map(pairs) => {
                number_line(out, b'*', pairs.len() * 2);
                for (key, value) in pairs {
                    key.encode_as(protocol, out);
                    value.encode_as(protocol, out);
                }
            }
            Reply::Verbatim(text) if resp3 => {
                number_line(out, b'=', text.len() + 4);
                out.put_slice(b"txt:");
                out.put_slice(text.as_bytes());
                out.put_slice(b"\r\n");
            }
            Reply::Verbatim(text) => {
                Reply::Bulk(Bytes::copy_from_slice(text.as_bytes())).encode_as(protocol, out)
            }
            Reply::Double(value) if resp3 => line(out, b',', format_double(*value).as_bytes()),
            Reply::Double(value) => {
                Reply::Bulk(Bytes::from(format_double(*value))).encode_as(protocol, out)
            }
            Reply::Boolean(value) if resp3 => line(out, b'#', if *value { b"t" } else { b"f" }),
            Reply::Boolean(value) => Reply::Integer(i64::from(*value)).encode_as(protocol, out),
            Reply::Simple(text) => line(out, b'+', text.as_bytes()),
            Reply::Error(text) => {
                // A newline would end the reply early; Redis replaces them too.
                let clean: Vec<u8> = text
                    .bytes()
                    .map(|byte| {
                        if byte == b'\r' || byte == b'\n' {
                            b' '
                        } else {
                            byte
                        }
                    })
                    .collect();
                line(out, b'-', &clean);
            }
            Reply::Integer(value) => number_line(out, b':', *value),
            Reply::Bulk(bytes) => {
                number_line(out, b'$', bytes.len());
                out.put_slice(bytes);
                out.put_slice(b"\r\n");
            }
            Reply::Null => out.put_slice(b"$-1\r\n"),
            Reply::NullArray => out.put_slice(b"*-1\r\n"),
            Reply::Array(items) | Reply::Push(items) => {
                let kind = if resp3 && matches!(self, Reply::Push(_)) {
                    b'>'
                } else {
                    b'*'
                };
                number_line(out, kind, items.len());
                for item in items {
                    item.encode_as(protocol, out);
                }
            }
            Reply::Sequence(replies) => {
                for reply in replies {
                    reply.encode_as(protocol, out);
                }
            }
        }
    }
}

/// A double as Redis prints one: `inf`, `-inf`, `nan`, or the shortest form
/// that reads back the same.
fn format_double(value: f64) -> String {
    if value.is_nan() {
        "nan".into()
    } else if value.is_infinite() {
        if value > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else {
        format!("{value}")
    }
}

/// `marker`, then `number` in decimal, then CRLF: a length or an integer
/// reply, formatted on the stack (every reply has at least one).
fn number_line(out: &mut BytesMut, marker: u8, number: impl itoa::Integer) {
    line(out, marker, itoa::Buffer::new().format(number).as_bytes());
}

fn line(out: &mut BytesMut, marker: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.put_u8(marker);
    out.put_slice(text);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Option<Vec<Vec<u8>>>, ProtocolError> {
        let mut buffer = BytesMut::from(input);
        Ok(take_request(&mut buffer, &Limits::default())?
            .map(|args| args.iter().map(|arg| arg.to_vec()).collect()))
    }

    fn points_into(arg: &Bytes, start: usize, len: usize) -> bool {
        let at = arg.as_ptr() as usize;
        (start..start + len).contains(&at)
    }

    #[test]
    fn a_small_request_owns_its_memory_and_leaves_the_read_buffer_unshared() {
        let mut buffer = BytesMut::with_capacity(16 << 10);
        buffer.extend_from_slice(
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n*1\r\n$4\r\nPING\r\n",
        );
        let (start, len) = (buffer.as_ptr() as usize, buffer.capacity());
        let args = take_request(&mut buffer, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(args[2], &b"value"[..]);
        assert!(
            args.iter().all(|arg| !points_into(arg, start, len)),
            "a stored value must not keep the 16 KiB read buffer alive"
        );
        // Unshared, the buffer takes the next read in place.
        buffer.clear();
        buffer.reserve(8 << 10);
        let now_at = buffer.as_ptr() as usize;
        assert!(
            (start..start + len).contains(&now_at),
            "the read buffer is reused, not reallocated"
        );
    }

    /// `SET k <value_len × 'x'>` read into a buffer of `capacity` bytes:
    /// where the buffer starts, its capacity, and the value taken from it.
    fn take_large_set(value_len: usize, capacity: usize) -> (usize, usize, Bytes) {
        let mut frame = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${value_len}\r\n").into_bytes();
        frame.resize(frame.len() + value_len, b'x');
        frame.extend_from_slice(b"\r\n");
        let mut buffer = BytesMut::with_capacity(capacity.max(frame.len()));
        buffer.extend_from_slice(&frame);
        let (start, len) = (buffer.as_ptr() as usize, buffer.capacity());
        let mut args = take_request(&mut buffer, &Limits::default())
            .unwrap()
            .unwrap();
        let value = args.swap_remove(2);
        assert_eq!(value.len(), value_len);
        (start, len, value)
    }

    #[test]
    fn a_large_request_that_fills_the_buffer_is_taken_without_a_copy() {
        let (start, len, value) = take_large_set(200 << 10, 0);
        assert!(points_into(&value, start, len));
    }

    #[test]
    fn a_large_request_in_a_much_larger_buffer_is_copied_out() {
        let (start, len, value) = take_large_set(100 << 10, 4 << 20);
        assert!(!points_into(&value, start, len));
    }

    #[test]
    fn multibulk_parses_and_every_prefix_is_incomplete() {
        let frame = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n";
        assert_eq!(
            parse_all(frame).unwrap(),
            Some(vec![b"SET".to_vec(), b"k".to_vec(), Vec::new()])
        );
        for cut in 0..frame.len() {
            assert_eq!(parse_all(&frame[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn inline_commands_split_on_whitespace() {
        assert_eq!(
            parse_all(b"SET  k \"v\"\r\n").unwrap(),
            Some(vec![b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()])
        );
        assert_eq!(parse_all(b"PING\n").unwrap(), Some(vec![b"PING".to_vec()]));
        assert_eq!(parse_all(b"\r\n").unwrap(), Some(Vec::new()));
        assert_eq!(parse_all(b"PIN").unwrap(), None);
    }

    /// Each line against the words Redis 7's `sdssplitargs` makes of it.
    #[test]
    fn inline_quotes_and_escapes_read_as_redis_reads_them() {
        let words = |line: &[u8]| {
            let mut input = line.to_vec();
            input.extend_from_slice(b"\r\n");
            parse_all(&input).unwrap().unwrap()
        };
        assert_eq!(
            words(b"SET a \"hello world\""),
            [&b"SET"[..], b"a", b"hello world"]
        );
        assert_eq!(words(b"SET a 'x y'"), [&b"SET"[..], b"a", b"x y"]);
        assert_eq!(words(b"ECHO \"\\x41\\x4a\""), [&b"ECHO"[..], b"AJ"]);
        assert_eq!(words(b"ECHO \"\\\"q\\\"\""), [&b"ECHO"[..], b"\"q\""]);
        assert_eq!(words(b"ECHO a\"b c\""), [&b"ECHO"[..], b"ab c"]);
        assert_eq!(
            words(b"ECHO \"\\n\\r\\t\\b\\a\\z\\xZZ\""),
            [&b"ECHO"[..], b"\n\r\t\x08\x07zxZZ"]
        );
        assert_eq!(
            words(b"ECHO 'it\\'s' 'a\\nb'"),
            [&b"ECHO"[..], b"it's", b"a\\nb"]
        );
        assert_eq!(words(b"ECHO \"\" ''"), [&b"ECHO"[..], b"", b""]);
        assert_eq!(words(b"ECHO \"a\"\t'b'"), [&b"ECHO"[..], b"a", b"b"]);
        // Only space, tab, CR and LF end an unquoted word; a NUL ends the line.
        assert_eq!(words(b"ECHO a\x0bb"), [&b"ECHO"[..], b"a\x0bb"]);
        assert_eq!(words(b"ECHO a\0b c"), [&b"ECHO"[..], b"a"]);
        let error = |line: &[u8]| parse_all(line).unwrap_err().0;
        for line in [
            &b"SET a \"b\r\n"[..],
            b"SET a 'b\r\n",
            b"ECHO \"a\"b\r\n",
            b"ECHO 'a'b\r\n",
            b"ECHO \"a\\\r\n",
        ] {
            assert_eq!(error(line), "unbalanced quotes in request", "{line:?}");
        }
    }

    #[test]
    fn bad_lengths_are_protocol_errors() {
        let error = |input: &[u8]| parse_all(input).unwrap_err().0;
        assert_eq!(error(b"*x\r\n"), "invalid multibulk length");
        assert_eq!(error(b"*99999999999\r\n"), "invalid multibulk length");
        assert_eq!(error(b"*1\r\n$-1\r\n"), "invalid bulk length");
        assert_eq!(error(b"*1\r\n$20000000\r\n"), "invalid bulk length");
        // Redis's `string2ll`: a leading zero or `-0` is no length.
        assert_eq!(error(b"*01\r\n$4\r\nPING\r\n"), "invalid multibulk length");
        assert_eq!(error(b"*-0\r\n"), "invalid multibulk length");
        assert_eq!(error(b"*1\r\n$04\r\nPING\r\n"), "invalid bulk length");
        assert_eq!(error(b"*1\r\n$-0\r\n"), "invalid bulk length");
        assert_eq!(error(b"*+1\r\n"), "invalid multibulk length");
        assert_eq!(error(b"*1\r\n*1\r\n"), "expected '$', got '*'");
        assert_eq!(
            error(b"*1\r\n$1\r\nab\r\n"),
            "bulk string is not terminated by CRLF"
        );
        assert_eq!(error(&[b'*'; 100]), "too big mbulk count string");
        assert_eq!(error(&vec![b'a'; 70_000]), "too big inline request");
    }

    #[test]
    fn negative_or_empty_multibulk_is_an_empty_request() {
        assert_eq!(parse_all(b"*0\r\n").unwrap(), Some(Vec::new()));
        assert_eq!(parse_all(b"*-1\r\n").unwrap(), Some(Vec::new()));
        assert_eq!(parse_all(b"*-2\r\n").unwrap(), Some(Vec::new()));
    }

    #[test]
    fn replies_encode() {
        let mut out = BytesMut::new();
        Reply::Array(vec![
            Reply::ok(),
            Reply::err("x\r\ny"),
            Reply::Integer(-3),
            Reply::bulk(&b"ab"[..]),
            Reply::Null,
            Reply::NullArray,
        ])
        .encode(&mut out);
        assert_eq!(
            &out[..],
            b"*6\r\n+OK\r\n-ERR x  y\r\n:-3\r\n$2\r\nab\r\n$-1\r\n*-1\r\n"
        );
    }

    #[test]
    fn a_resumed_parse_matches_a_fresh_one() {
        let mut frame = b"*3\r\n".to_vec();
        for arg in [&b"SET"[..], b"key", b"a longer value"] {
            frame.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            frame.extend_from_slice(arg);
            frame.extend_from_slice(b"\r\n");
        }
        frame.extend_from_slice(b"PING\r\n");
        let mut parser = RequestParser::new(Limits::default());
        let mut buffer = BytesMut::new();
        let mut requests = Vec::new();
        for &byte in &frame {
            buffer.extend_from_slice(&[byte]);
            while let Some(args) = parser.take(&mut buffer).unwrap() {
                requests.push(args);
            }
        }
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0][2], Bytes::from_static(b"a longer value"));
        assert_eq!(requests[1], vec![Bytes::from_static(b"PING")]);
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let limits = Limits { max_bulk_bytes: 64, max_array_len: 16, max_inline_bytes: 64 };
            let mut buffer = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = take_request(&mut buffer, &limits) {
                if buffer.is_empty() { break; }
            }
        }

        #[test]
        fn requests_survive_any_split(args in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..20), 1..5), cut in 0usize..200) {
            let mut frame = format!("*{}\r\n", args.len()).into_bytes();
            for arg in &args {
                frame.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                frame.extend_from_slice(arg);
                frame.extend_from_slice(b"\r\n");
            }
            let cut = cut.min(frame.len());
            let limits = Limits::default();
            let mut buffer = BytesMut::from(&frame[..cut]);
            if cut < frame.len() {
                proptest::prop_assert_eq!(take_request(&mut buffer, &limits).unwrap(), None);
            }
            buffer.extend_from_slice(&frame[cut..]);
            let parsed = take_request(&mut buffer, &limits).unwrap().unwrap();
            let parsed: Vec<Vec<u8>> = parsed.iter().map(|arg| arg.to_vec()).collect();
            proptest::prop_assert_eq!(parsed, args);
        }
    }
}
