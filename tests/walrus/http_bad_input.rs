//! Bad input gets a clear error, and afterwards the server is alive and the data
//! intact: oversized keys and bodies, malformed requests, slow clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::server::{Server, get, put, raw, request};

fn assert_healthy(server: &Server, case: &str) {
    let reply = get(server.address, "/kv/canary");
    assert_eq!(reply.body, b"alive", "after {case}");
}

#[test]
fn malformed_and_oversized_requests_are_refused() {
    let (server, _dir) = Server::start(&["--header-timeout-ms", "1500"]);
    let address = server.address;
    put(address, "/kv/canary", b"alive");

    let long_key = format!("/kv/{}", "k".repeat(8 * 1024));
    assert_eq!(get(address, &long_key).status, 414, "8 KiB key");
    assert_eq!(put(address, &long_key, b"v").status, 414);
    assert_healthy(&server, "an 8 KiB key");
    // Past the 16 KiB limit on the request head, before any handler: 431.
    let huge_key = format!("/kv/{}", "k".repeat(64 * 1024));
    assert_eq!(get(address, &huge_key).status, 431, "64 KiB request line");
    let big_header = format!("X-Big: {}", "a".repeat(20_000));
    let reply = raw(
        address,
        format!("GET /kv/canary HTTP/1.1\r\nHost: x\r\n{big_header}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .expect("an answer");
    assert_eq!(reply.status, 431, "20 KB header");
    assert_healthy(&server, "oversized heads");

    // 100 MiB declared: refused from the headers, before any body is sent.
    let reply = raw(
        address,
        b"PUT /kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n",
    )
    .expect("a 413 before the body");
    assert_eq!(reply.status, 413);
    // A chunked body that grows past the limit (16 MiB) is cut off too.
    let mut chunked =
        b"PUT /kv/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..170 {
        chunked.extend_from_slice(format!("{:x}\r\n", 100_000).as_bytes());
        chunked.extend_from_slice(&vec![b'x'; 100_000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(raw(address, &chunked).map(|reply| reply.status), Some(413));
    assert_eq!(get(address, "/kv/big").status, 404, "nothing of it stored");
    assert_healthy(&server, "oversized bodies");

    let malformed: &[(&str, &[u8])] = &[
        ("garbage request line", b"HELLO\r\n\r\n"),
        ("bad version", b"GET /kv/canary HTTP/9.9\r\n\r\n"),
        (
            "header without colon",
            b"GET /kv/canary HTTP/1.1\r\nHost x\r\n\r\n",
        ),
        (
            "NUL in a header",
            b"GET /kv/canary HTTP/1.1\r\nHost: a\0b\r\n\r\n",
        ),
        (
            "duplicate Content-Length",
            b"PUT /kv/dup HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        ),
        (
            "bad percent-encoding",
            b"GET /kv/%zz HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
    ];
    for (case, bytes) in malformed {
        if let Some(reply) = raw(address, bytes) {
            assert!(
                (400..500).contains(&reply.status),
                "{case}: got {}",
                reply.status
            );
        }
        assert_healthy(&server, case);
    }
    assert_eq!(get(address, "/kv/dup").status, 404);
    for method in ["POST", "TRACE", "CONNECT"] {
        let reply = request(address, method, "/kv/canary", &[], b"");
        assert!(
            matches!(reply.status, 400 | 405),
            "{method}: {}",
            reply.status
        );
    }
    assert_healthy(&server, "wrong methods");
}

#[test]
fn a_slow_client_cannot_hold_the_server() {
    let (server, _dir) =
        Server::start(&["--header-timeout-ms", "1000", "--body-timeout-ms", "1000"]);
    let address = server.address;
    put(address, "/kv/canary", b"alive");
    // One byte a second of headers, on a few connections.
    let slow: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(address).expect("connect");
                let started = Instant::now();
                for byte in b"GET /kv/canary HTTP/1.1\r\nHost: slow\r\n\r\n" {
                    if stream.write_all(&[*byte]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                    if started.elapsed() > Duration::from_secs(6) {
                        break;
                    }
                }
                let mut rest = Vec::new();
                let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
                let _ = stream.read_to_end(&mut rest);
                started.elapsed()
            })
        })
        .collect();
    // Meanwhile everyone else is served promptly.
    for _ in 0..20 {
        let started = Instant::now();
        assert_healthy(&server, "slow clients");
        assert!(started.elapsed() < Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(50));
    }
    for handle in slow {
        let held = handle.join().expect("slow client");
        assert!(
            held < Duration::from_secs(6),
            "cut off after the header timeout, held {held:?}"
        );
    }
    // A body that trickles in is cut off by the body timeout.
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .write_all(b"PUT /kv/trickle HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
        .expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert_eq!(get(address, "/kv/trickle").status, 404);
    assert_healthy(&server, "a trickling body");
}

/// A client that asks for a large value and stops reading holds the server's
/// write: once that write has waited the idle timeout the connection is
/// dropped (a graceful close would wait for the response for ever), and
/// the server goes on serving.
#[test]
fn a_client_that_stops_reading_a_response_is_cut_off() {
    let (server, _dir) = Server::start(&["--idle-timeout-ms", "500"]);
    let value = vec![b'v'; 16 << 20];
    assert_eq!(put(server.address, "/kv/big", &value).status, 200);
    let mut stream = TcpStream::connect(server.address).expect("connect");
    stream
        .write_all(b"GET /kv/big HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    // Far longer than the idle timeout, reading nothing.
    std::thread::sleep(Duration::from_secs(3));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    let mut received = 0usize;
    let mut chunk = vec![0u8; 1 << 20];
    let ended = loop {
        match stream.read(&mut chunk) {
            Ok(0) => break true,
            Ok(read) => received += read,
            // A reset is the server dropping the connection too.
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    assert!(ended, "the connection ended rather than timing out");
    assert!(
        received < value.len(),
        "the server dropped the connection before sending the whole value ({received} bytes)"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(get(server.address, "/kv/big").status, 200);
}

#[test]
fn idle_connections_are_closed() {
    let (server, _dir) =
        Server::start(&["--idle-timeout-ms", "500", "--header-timeout-ms", "5000"]);
    let mut stream = TcpStream::connect(server.address).expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let started = Instant::now();
    let mut everything = Vec::new();
    let _ = stream.read_to_end(&mut everything);
    assert!(String::from_utf8_lossy(&everything).starts_with("HTTP/1.1 200"));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed after idling"
    );
}

#[test]
fn a_port_in_use_fails_before_the_data_directory_is_touched() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let temp = tempfile::tempdir().expect("temp dir");
    let data = temp.path().join("data");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_walrus"))
        .args(["serve", "--listen", &address, "--data-dir"])
        .arg(&data)
        .output()
        .expect("run walrus");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(!data.exists(), "the data directory was created");
}
