use super::test_server::{Options, TestServer};
use super::*;

#[test]
fn key_path_keeps_unreserved_and_slash() {
    assert_eq!(key_path(b"a-Z_0.9~/b"), "/kv/a-Z_0.9~/b");
    assert_eq!(key_path(b"a b%c?d#e"), "/kv/a%20b%25c%3Fd%23e");
    assert_eq!(key_path(b"\x00\xff"), "/kv/%00%FF");
    assert_eq!(key_path("é".as_bytes()), "/kv/%C3%A9");
    assert_eq!(key_path(b""), "/kv/");
}

#[test]
fn rejects_bad_configuration() {
    assert!(matches!(
        Client::new(vec![], None),
        Err(ClientError::NoEndpoints)
    ));
    let bad = Client::new(vec!["ftp://x".into()], None);
    assert!(matches!(bad, Err(ClientError::InvalidEndpoint { .. })));
    let token = Client::new(vec!["http://x".into()], Some("a\nb".into()));
    assert!(matches!(token, Err(ClientError::InvalidToken)));
}

/// An address on which nothing listens: bound, then released.
async fn closed_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test]
async fn put_get_delete_round_trip_on_one_connection() {
    let server = TestServer::start(Options::default()).await;
    let client = Client::new(vec![server.url()], None).unwrap();
    let key = b"dir/sub key\x00\xff";
    assert_eq!(client.get(key).await.unwrap(), None);
    client.put(key, &b"\x01value"[..]).await.unwrap();
    assert_eq!(
        client.get(key).await.unwrap().as_deref(),
        Some(&b"\x01value"[..])
    );
    let response = client
        .request(Method::GET, &key_path(key), HeaderMap::new(), Bytes::new())
        .await
        .unwrap();
    assert_eq!(response.revision(), Some(1));
    client.delete(key).await.unwrap();
    assert_eq!(client.get(key).await.unwrap(), None);
    assert_eq!(server.state.data.lock().len(), 0);
    assert_eq!(server.state.connections.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn lists_pages_until_the_cursor_runs_out() {
    let server = TestServer::start(Options::default()).await;
    let client = Client::new(vec![server.url()], None).unwrap();
    for key in [&b"a/1"[..], b"a/2", b"a/\xff", b"b/1"] {
        client.put(key, Bytes::from_static(b"v")).await.unwrap();
    }
    let mut keys = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .list(b"a/", start.as_deref(), Some(2), true)
            .await
            .unwrap();
        assert!(page.items.iter().all(|item| item.value.is_none()));
        keys.extend(page.items.into_iter().map(|item| item.key));
        match page.next {
            Some(next) => start = Some(next),
            None => break,
        }
    }
    assert_eq!(keys, [&b"a/1"[..], b"a/2", b"a/\xff"]);
    let page = client.list(b"b", None, None, false).await.unwrap();
    assert_eq!(page.items[0].value.as_deref(), Some(&b"v"[..]));
}

#[tokio::test]
async fn moves_past_dead_and_unavailable_endpoints() {
    let unavailable = TestServer::start(Options {
        unavailable: true,
        ..Options::default()
    })
    .await;
    let server = TestServer::start(Options::default()).await;
    let endpoints = vec![closed_endpoint().await, unavailable.url(), server.url()];
    let client = Client::new(endpoints, None).unwrap();
    client.put(b"k", Bytes::from_static(b"v")).await.unwrap();
    client.get(b"k").await.unwrap();
    // The second request started at the endpoint that worked.
    assert_eq!(unavailable.state.requests.load(Ordering::Relaxed), 1);
    assert_eq!(server.state.requests.load(Ordering::Relaxed), 2);
}

/// A write whose outcome is unknown may have been applied: repeated
/// elsewhere, a conditional one could be refused by its own first try, so
/// it is not repeated; an unconditional one, or a request the server says it
/// never proposed, moves on.
#[tokio::test]
async fn a_conditional_write_of_unknown_outcome_is_not_repeated_elsewhere() {
    let unknown = TestServer::start(Options {
        outcome_unknown: true,
        ..Options::default()
    })
    .await;
    let never_proposed = TestServer::start(Options {
        unavailable: true,
        ..Options::default()
    })
    .await;
    let server = TestServer::start(Options::default()).await;
    // PUT with `If-None-Match: *` (create if absent) through `client`.
    let create = |client: Client, key: &'static [u8]| async move {
        let mut headers = HeaderMap::new();
        headers.insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
        let value = Bytes::from_static(b"v");
        client
            .request(Method::PUT, &key_path(key), headers, value)
            .await
            .unwrap()
    };
    let client = Client::new(vec![unknown.url(), server.url()], None).unwrap();
    let response = create(client.clone(), b"k").await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!response.says_nothing_applied());
    assert_eq!(server.state.requests.load(Ordering::Relaxed), 0);
    // Unconditional, the same write may be repeated.
    client.put(b"k", Bytes::from_static(b"v")).await.unwrap();
    assert_eq!(server.state.requests.load(Ordering::Relaxed), 1);

    let client = Client::new(vec![never_proposed.url(), server.url()], None).unwrap();
    let response = create(client, b"j").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(never_proposed.state.requests.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn reports_the_last_503_and_connect_errors() {
    let unavailable = TestServer::start(Options {
        unavailable: true,
        ..Options::default()
    })
    .await;
    let client = Client::new(vec![unavailable.url(), closed_endpoint().await], None).unwrap();
    let error = client.get(b"k").await.unwrap_err();
    assert!(
        matches!(error, ClientError::Http { status, .. } if status == StatusCode::SERVICE_UNAVAILABLE)
    );

    let client = Client::new(vec![closed_endpoint().await], None).unwrap();
    assert!(matches!(
        client.get(b"k").await,
        Err(ClientError::Connect { .. })
    ));
}

#[tokio::test]
async fn sends_the_bearer_token() {
    let options = Options {
        token: Some("secret".into()),
        ..Options::default()
    };
    let server = TestServer::start(options).await;
    let anonymous = Client::new(vec![server.url()], None).unwrap();
    let error = anonymous.get(b"k").await.unwrap_err();
    assert!(
        matches!(error, ClientError::Http { status, .. } if status == StatusCode::UNAUTHORIZED)
    );
    let client = Client::new(vec![server.url()], Some("secret\n".into())).unwrap();
    assert_eq!(client.get(b"k").await.unwrap(), None);
}

#[tokio::test]
async fn times_out_a_silent_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let options = ClientOptions {
        request_timeout: Duration::from_millis(100),
        ..ClientOptions::default()
    };
    let client = Client::with_options(vec![url], None, options).unwrap();
    // The kernel completes the handshake; nobody ever answers.
    let error = client.get(b"k").await.unwrap_err();
    assert!(matches!(error, ClientError::Timeout { .. }), "{error}");
    drop(listener);
}

#[tokio::test]
async fn speaks_https_with_a_ca_file() {
    let (server, ca_pem) = TestServer::start_tls(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let url = format!("https://localhost:{}", server.addr.port());
    let options = ClientOptions {
        ca_file: Some(ca_file),
        ..ClientOptions::default()
    };
    let client = Client::with_options(vec![url.clone()], None, options).unwrap();
    client.put(b"k", Bytes::from_static(b"v")).await.unwrap();
    assert_eq!(client.get(b"k").await.unwrap().as_deref(), Some(&b"v"[..]));

    // Without the CA file there is nothing to trust.
    assert!(matches!(
        Client::new(vec![url], None),
        Err(ClientError::Tls(_))
    ));
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let options = ClientOptions {
        ca_file: Some(empty),
        ..ClientOptions::default()
    };
    assert!(matches!(
        Client::with_options(vec!["https://localhost".into()], None, options),
        Err(ClientError::Tls(_))
    ));
}
