//! The HTTP API end to end against the real binary: the original curl session,
//! every status of the SPEC table, key encodings, ETags, compare-and-swap and
//! listing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::server::{Server, delete, get, put, request};

#[test]
fn the_original_curl_session_and_persistence() {
    let (mut server, _dir) = Server::start(&[]);
    let address = server.address;
    let reply = put(address, "/kv/hello", b"world");
    assert_eq!(reply.status, 200);
    let reply = get(address, "/kv/hello");
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"world"[..]));
    assert_eq!(delete(address, "/kv/hello").status, 200);
    let reply = get(address, "/kv/hello");
    assert_eq!((reply.status, reply.text().as_str()), (404, "not found\n"));

    put(address, "/kv/kept", b"across restarts");
    server.restart();
    let reply = get(server.address, "/kv/kept");
    assert_eq!(reply.body, b"across restarts");
    assert_eq!(server.terminate().code(), Some(0), "SIGTERM exits 0");
}

#[test]
fn every_status_of_the_contract() {
    let (server, _dir) = Server::start(&[]);
    let address = server.address;
    assert_eq!(put(address, "/kv/a", b"1").status, 200);
    assert_eq!(get(address, "/kv/a").status, 200);
    assert_eq!(get(address, "/kv/missing").status, 404);
    assert_eq!(
        delete(address, "/kv/missing").status,
        200,
        "deleting nothing is fine"
    );
    let reply = put(address, "/kv/", b"x");
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (400, "key required\n")
    );
    assert_eq!(get(address, "/kv/").status, 400);
    for method in ["POST", "PATCH", "OPTIONS"] {
        let reply = request(address, method, "/kv/a", &[], b"");
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD, PUT, DELETE"));
    }
    assert_eq!(get(address, "/health").text(), "ok\n");
    assert_eq!(get(address, "/ready").status, 200);
    assert_eq!(get(address, "/nowhere").status, 404);
    let metrics = get(address, "/metrics").text();
    assert!(metrics.contains("walrus_http_requests_total{route=\"kv_put\",status=\"200\"}"));
    assert!(metrics.contains("walrus_wal_fsync_duration_seconds_bucket"));
    assert!(metrics.contains("walrus_keys 1"));
    // jemalloc's counts, which the binary registers.
    let gauge = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing: {metrics}"))
    };
    let allocated = gauge("walrus_allocator_allocated_bytes");
    assert!(allocated > 0 && allocated <= gauge("walrus_allocator_active_bytes"));
    assert!(gauge("walrus_allocator_active_bytes") <= gauge("walrus_allocator_resident_bytes"));
}

#[test]
fn keys_are_percent_decoded_bytes() {
    let (server, _dir) = Server::start(&[]);
    let address = server.address;
    let cases: &[(&str, &[u8])] = &[
        ("/kv/a/b/c", b"slashes"),
        ("/kv/with%20space", b"space"),
        ("/kv/%E2%9C%93", b"utf-8"),
        ("/kv/nul%00byte", b"nul"),
        ("/kv/%FF%FE", b"not utf-8"),
        ("/kv/a%2Fb", b"encoded slash"),
    ];
    for (path, value) in cases {
        assert_eq!(put(address, path, value).status, 200, "{path}");
    }
    for (path, value) in cases {
        assert_eq!(get(address, path).body, *value, "{path}");
    }
    // `a%2Fb` and `a/b` are the same key: the key is the decoded bytes.
    assert_eq!(get(address, "/kv/a/b").body, b"encoded slash");
    let listing = get(address, "/kv/?prefix=%FF").text();
    assert!(listing.contains("\"key_base64\":\"//4=\""), "{listing}");
    assert_eq!(get(address, "/kv/bad%zzescape").status, 400);
}

#[test]
fn etags_and_conditional_writes() {
    let (server, _dir) = Server::start(&[]);
    let address = server.address;
    let created = request(address, "PUT", "/kv/k", &[("If-None-Match", "*")], b"v1");
    assert_eq!(created.status, 200);
    let etag = created.header("etag").expect("etag").to_string();
    let again = request(address, "PUT", "/kv/k", &[("If-None-Match", "*")], b"v2");
    assert_eq!(again.status, 412, "create-only on an existing key");
    assert_eq!(get(address, "/kv/k").header("etag"), Some(etag.as_str()));
    let stale = request(address, "PUT", "/kv/k", &[("If-Match", "\"999\"")], b"v3");
    assert_eq!(stale.status, 412);
    assert_eq!(
        stale.header("etag"),
        Some(etag.as_str()),
        "412 tells the current tag"
    );
    let swapped = request(address, "PUT", "/kv/k", &[("If-Match", &etag)], b"v4");
    assert_eq!(swapped.status, 200);
    assert_ne!(swapped.header("etag"), Some(etag.as_str()));
    let not_modified = request(
        address,
        "GET",
        "/kv/k",
        &[("If-None-Match", swapped.header("etag").expect("tag"))],
        b"",
    );
    assert_eq!(not_modified.status, 304);
    assert_eq!(
        request(address, "DELETE", "/kv/k", &[("If-Match", &etag)], b"").status,
        412
    );
    assert_eq!(get(address, "/kv/k").body, b"v4");
    assert_eq!(
        request(address, "PUT", "/kv/k", &[("If-Match", "garbage")], b"x").status,
        400
    );
}

#[test]
fn compare_and_swap_race_has_one_winner_per_revision() {
    let (server, _dir) = Server::start(&[]);
    let address = server.address;
    put(address, "/kv/counter", b"0");
    let wins = Arc::new(AtomicUsize::new(0));
    for _round in 0..5 {
        let etag = get(address, "/kv/counter")
            .header("etag")
            .expect("etag")
            .to_string();
        let handles: Vec<_> = (0..16)
            .map(|client| {
                let (etag, wins) = (etag.clone(), wins.clone());
                std::thread::spawn(move || {
                    let value = format!("client-{client}");
                    let reply = request(
                        address,
                        "PUT",
                        "/kv/counter",
                        &[("If-Match", &etag)],
                        value.as_bytes(),
                    );
                    match reply.status {
                        200 => {
                            wins.fetch_add(1, Ordering::SeqCst);
                        }
                        412 => {}
                        other => panic!("unexpected status {other}"),
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("client");
        }
    }
    assert_eq!(
        wins.load(Ordering::SeqCst),
        5,
        "exactly one winner per revision"
    );
}

#[test]
fn listing_pages_through_keys_in_byte_order() {
    let (server, _dir) = Server::start(&[]);
    let address = server.address;
    for index in 0..25 {
        put(
            address,
            &format!("/kv/list/{index:02}"),
            format!("v{index}").as_bytes(),
        );
    }
    put(address, "/kv/other", b"x");
    let mut seen = Vec::new();
    let mut query = "prefix=list/&limit=10".to_string();
    loop {
        let reply = get(address, &format!("/kv/?{query}"));
        assert_eq!(reply.status, 200);
        let page: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
        for item in page["items"].as_array().expect("items") {
            seen.push(item["key"].as_str().expect("key").to_string());
            assert!(item["value"].is_string());
        }
        match page["next"].as_str() {
            Some(next) => query = format!("prefix=list/&limit=10&cursor={next}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|index| format!("list/{index:02}")).collect();
    assert_eq!(seen, expected);
    let keys_only: serde_json::Value =
        serde_json::from_slice(&get(address, "/kv/?prefix=list/&keys_only=true&limit=1").body)
            .expect("json");
    assert!(keys_only["items"][0].get("value").is_none());
    assert_eq!(get(address, "/kv/?limit=0").status, 400);
    assert_eq!(get(address, "/kv/?cursor=%25%25").status, 400);
    assert_eq!(get(address, "/kv/?cursor=YQ&start=a").status, 400);
}

/// A listing of large values is paged by bytes as well as by count: five
/// 6 MiB values come two to a page (the third would pass 16 MiB), every key
/// once, in order; keys alone are not limited that way.
#[test]
fn a_page_of_large_values_ends_early_and_paging_still_sees_every_key() {
    let (server, _dir) = Server::start(&[]);
    let address = server.address;
    let value = vec![b'v'; 6 << 20];
    for index in 0..5 {
        assert_eq!(
            put(address, &format!("/kv/big/{index}"), &value).status,
            200
        );
    }
    let mut pages = Vec::new();
    let mut query = "prefix=big/".to_string();
    for _ in 0..10 {
        let reply = get(address, &format!("/kv/?{query}"));
        assert_eq!(reply.status, 200);
        let page: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
        let keys: Vec<String> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| item["key"].as_str().expect("key").to_string())
            .collect();
        pages.push(keys);
        match page["next"].as_str() {
            Some(next) => query = format!("prefix=big/&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(
        pages,
        [
            vec!["big/0", "big/1"],
            vec!["big/2", "big/3"],
            vec!["big/4"]
        ]
    );
    let keys_only: serde_json::Value =
        serde_json::from_slice(&get(address, "/kv/?prefix=big/&keys_only=true").body)
            .expect("json");
    assert_eq!(keys_only["items"].as_array().expect("items").len(), 5);
    assert!(keys_only["next"].is_null());
}

/// The paging bug of old: keys just after a page's last key (`x/a!`, `x/a#`)
/// were skipped when a client encoded the cursor once more, as Python's
/// `requests` does with `params={...}`. The cursor is now URL-safe, so
/// encoding it again changes nothing.
#[test]
fn paging_sees_every_key_however_the_client_encodes_the_cursor() {
    let (server, _dir) = Server::start(&[]);
    let address = server.address;
    for key in ["x/a", "x/a!", "x/a#", "x/b", "x/a\u{0}z"] {
        let path = format!(
            "/kv/{}",
            key.replace('!', "%21")
                .replace('#', "%23")
                .replace('\0', "%00")
        );
        assert_eq!(put(address, &path, b"v").status, 200);
    }
    for encode_again in [false, true] {
        let mut seen = Vec::new();
        let mut query = "prefix=x%2F&limit=1".to_string();
        for _ in 0..20 {
            let reply = get(address, &format!("/kv/?{query}"));
            assert_eq!(reply.status, 200, "{}", reply.text());
            let page: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
            for item in page["items"].as_array().expect("items") {
                seen.push(item["key"].as_str().expect("key").to_string());
            }
            let Some(next) = page["next"].as_str() else {
                break;
            };
            assert!(
                next.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "cursor {next:?} is URL-safe"
            );
            let cursor = if encode_again {
                // What a client library does to a value it is handed.
                next.bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect::<String>()
            } else {
                next.to_string()
            };
            query = format!("prefix=x%2F&limit=1&cursor={cursor}");
        }
        assert_eq!(
            seen,
            ["x/a", "x/a\u{0}z", "x/a!", "x/a#", "x/b"],
            "encode again: {encode_again}"
        );
    }
}
