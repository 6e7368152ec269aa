//! Raw bytes at the RESP port: malformed frames, bad lengths, nesting, inline
//! commands, and a request split at every byte boundary. A client that breaks
//! the protocol gets `-ERR Protocol error: …` and is disconnected; the server
//! and its data are untouched.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use crate::resp_client::{RawResp, encode, err};
use crate::server::Server;

/// Sends `bytes` and expects one protocol error, then a closed connection.
fn assert_protocol_error(server: &Server, bytes: &[u8], message: &str) {
    let mut raw = RawResp::connect(server.resp_address());
    raw.send_raw(bytes);
    assert_eq!(
        raw.reply().as_deref(),
        Some(err(&format!("Protocol error: {message}")).as_str()),
        "for {:?}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(60)])
    );
    assert!(raw.is_closed());
}

#[test]
fn resp_malformed_frames_close_the_connection_only() {
    let (server, _dir) = Server::start_resp(&["--max-value-bytes", "1024"]);
    let mut keeper = RawResp::connect(server.resp_address());
    assert_eq!(keeper.call(&["SET", "safe", "v"]), "+OK\r\n");
    assert_protocol_error(&server, b"*1\r\n$-5\r\n", "invalid bulk length");
    assert_protocol_error(&server, b"*1\r\n$1025\r\n", "invalid bulk length");
    assert_protocol_error(
        &server,
        b"*1\r\n$99999999999999999999\r\n",
        "invalid bulk length",
    );
    assert_protocol_error(&server, b"*abc\r\n", "invalid multibulk length");
    assert_protocol_error(&server, b"*9999999999\r\n", "invalid multibulk length");
    assert_protocol_error(&server, b"*2\r\n:1\r\n", "expected '$', got ':'");
    assert_protocol_error(
        &server,
        b"*1\r\n$1\r\nab\r\n",
        "bulk string is not terminated by CRLF",
    );
    assert_protocol_error(&server, &[b'*'; 100], "too big mbulk count string");
    assert_protocol_error(&server, &vec![b'x'; 70_000], "too big inline request");
    assert_protocol_error(
        &server,
        b"SET \"a b\"c d\r\n",
        "unbalanced quotes in request",
    );
    let mut deep = Vec::new();
    for _ in 0..10_000 {
        deep.extend_from_slice(b"*1\r\n");
    }
    assert_protocol_error(&server, &deep, "expected '$', got '*'");
    assert_eq!(keeper.call(&["GET", "safe"]), "$1\r\nv\r\n");
}

#[test]
fn resp_inline_commands_and_empty_requests() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    // Words quoted and escaped as Redis's `sdssplitargs` reads them.
    raw.send_raw(b"PING\r\n\r\nSET k \"v 1\\x21\"\r\nGET k\r\nSET q 'it\\'s'\r\nGET q\r\n");
    assert_eq!(raw.reply().as_deref(), Some("+PONG\r\n"));
    assert_eq!(raw.reply().as_deref(), Some("+OK\r\n"));
    assert_eq!(raw.reply().as_deref(), Some("$4\r\nv 1!\r\n"));
    assert_eq!(raw.reply().as_deref(), Some("+OK\r\n"));
    assert_eq!(raw.reply().as_deref(), Some("$4\r\nit's\r\n"));
    // A quote that never closes, or closes inside a word: refused, and the
    // connection closed, as Redis does.
    raw.send_raw(b"SET k \"v 1\r\n");
    assert_eq!(
        raw.reply().as_deref(),
        Some(err("Protocol error: unbalanced quotes in request").as_str())
    );
    let mut raw = RawResp::connect(server.resp_address());
    raw.send_raw(b"ECHO \"a\"b\r\n");
    assert_eq!(
        raw.reply().as_deref(),
        Some(err("Protocol error: unbalanced quotes in request").as_str())
    );
    let mut raw = RawResp::connect(server.resp_address());
    raw.send_raw(b"set k v1\nget k\r\n*0\r\nEXISTS k\r\n");
    assert_eq!(raw.reply().as_deref(), Some("+OK\r\n"));
    assert_eq!(raw.reply().as_deref(), Some("$2\r\nv1\r\n"));
    assert_eq!(raw.reply().as_deref(), Some(":1\r\n"));
}

#[test]
fn resp_a_request_split_at_every_byte_is_served() {
    let (server, _dir) = Server::start_resp(&[]);
    let request = encode(&[b"SET", b"split", b"value with\r\nCRLF"]);
    for cut in 1..request.len() {
        let mut stream = TcpStream::connect(server.resp_address()).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.write_all(&request[..cut]).unwrap();
        stream.flush().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        stream.write_all(&request[cut..]).unwrap();
        let mut reader = std::io::BufReader::new(stream);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        assert_eq!(line, "+OK\r\n", "cut at {cut}");
    }
    let mut raw = RawResp::connect(server.resp_address());
    let mut byte_by_byte = encode(&[b"GET", b"split"]);
    byte_by_byte.extend_from_slice(b"PING\r\n");
    for byte in byte_by_byte {
        raw.send_raw(&[byte]);
    }
    assert_eq!(
        raw.reply().as_deref(),
        Some("$16\r\nvalue with\r\nCRLF\r\n")
    );
    assert_eq!(raw.reply().as_deref(), Some("+PONG\r\n"));
}

#[test]
fn resp_binary_keys_and_values_round_trip() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    let value: Vec<u8> = (0..=255).collect();
    raw.send(&[b"SET", b"\x00\xff", &value]);
    assert_eq!(raw.reply().as_deref(), Some("+OK\r\n"));
    let mut connection = redis::Client::open(format!("redis://{}/", server.resp_address()))
        .unwrap()
        .get_connection()
        .unwrap();
    let got: Vec<u8> = redis::cmd("GET")
        .arg(&b"\x00\xff"[..])
        .query(&mut connection)
        .unwrap();
    assert_eq!(got, value);
    let too_long_key = vec![b'k'; 5000];
    raw.send(&[b"GET", &too_long_key]);
    assert_eq!(
        raw.reply().as_deref(),
        Some(err("key is longer than 4096 bytes (--max-key-bytes)").as_str())
    );
}

/// CLIENT REPLY OFF sends nothing until ON; SKIP withholds the next
/// command's reply only (and its own); SKIP while OFF changes nothing. The
/// withheld commands still run.
#[test]
fn resp_client_reply_off_and_skip_withhold_replies_but_run_the_commands() {
    let (server, _dir) = Server::start_resp(&[]);
    let mut raw = RawResp::connect(server.resp_address());
    let mut pipeline = Vec::new();
    for args in [
        &["CLIENT", "REPLY", "OFF"][..],
        &["SET", "a", "1"],
        &["GET", "a"],
        &["PING"],
        &["CLIENT", "REPLY", "SKIP"],
        &["INCR", "a"],
        &["CLIENT", "REPLY", "ON"],
        &["CLIENT", "REPLY", "SKIP"],
        &["SET", "b", "2"],
        &["GET", "b"],
        &["GET", "a"],
    ] {
        let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        pipeline.extend(encode(&args));
    }
    raw.send_raw(&pipeline);
    assert_eq!(raw.reply().as_deref(), Some("+OK\r\n"), "CLIENT REPLY ON");
    assert_eq!(raw.reply().as_deref(), Some("$1\r\n2\r\n"), "GET b");
    assert_eq!(
        raw.reply().as_deref(),
        Some("$1\r\n2\r\n"),
        "GET a, incremented"
    );
    assert_eq!(raw.call(&["PING"]), "+PONG\r\n", "nothing else was sent");
    assert_eq!(raw.call(&["CLIENT", "REPLY", "MAYBE"]), err("syntax error"));
    // RESET turns replies back on.
    raw.send(&[b"CLIENT", b"REPLY", b"OFF"]);
    assert_eq!(raw.call(&["RESET"]), "+RESET\r\n");
    assert_eq!(raw.call(&["PING"]), "+PONG\r\n");
}
