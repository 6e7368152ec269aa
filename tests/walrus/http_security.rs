//! Bearer-token auth and TLS, with a certificate made in the test.

use std::io::{BufReader, Write};
use std::process::Command;

use crate::server::{Server, get, read_reply, request};

#[test]
fn bearer_token_guards_every_route_but_health() {
    let dir = tempfile::tempdir().expect("dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").expect("token");
    let token = token_file.to_string_lossy().into_owned();
    let server = Server::start_in(dir.path(), &["--auth-token-file", &token]);
    let address = server.address;
    assert_eq!(get(address, "/health").status, 200);
    for path in ["/kv/a", "/ready", "/metrics", "/kv/?prefix="] {
        let reply = get(address, path);
        assert_eq!(reply.status, 401, "{path}");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    }
    // The admin endpoints (backup, compaction) need it too.
    for (method, path) in [("GET", "/admin/snapshot"), ("POST", "/admin/compact")] {
        let reply = request(address, method, path, &[], b"");
        assert_eq!(reply.status, 401, "{method} {path}");
    }
    let wrong = request(
        address,
        "PUT",
        "/kv/a",
        &[("Authorization", "Bearer nope")],
        b"v",
    );
    assert_eq!(wrong.status, 401);
    let auth = [("Authorization", "Bearer s3cret-token")];
    assert_eq!(request(address, "PUT", "/kv/a", &auth, b"v").status, 200);
    assert_eq!(request(address, "GET", "/kv/a", &auth, b"").body, b"v");
    let snapshot = request(address, "GET", "/admin/snapshot", &auth, b"");
    assert_eq!(snapshot.status, 200);
    assert_eq!(
        request(address, "POST", "/admin/compact", &auth, b"").status,
        200
    );

    // The CLI finds the token through WALRUS_TOKEN_FILE (and the endpoint
    // through WALRUS_ENDPOINTS); without it, the server's refusal is told.
    let cli = |args: &[&str], token: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_walrus"));
        command
            .args(args)
            .env("WALRUS_ENDPOINTS", format!("http://{address}"))
            .env_remove("WALRUS_TOKEN_FILE");
        if let Some(token) = token {
            command.env("WALRUS_TOKEN_FILE", token);
        }
        command.output().expect("run walrus")
    };
    let put = cli(&["put", "from-cli", "yes"], Some(&token));
    assert!(put.status.success(), "{put:?}");
    let got = cli(&["get", "from-cli"], Some(&token));
    assert_eq!(got.stdout, b"yes", "{got:?}");
    let backup = dir.path().join("backup");
    let saved = cli(&["backup", backup.to_str().expect("utf-8")], Some(&token));
    assert!(saved.status.success(), "{saved:?}");
    let refused = cli(&["get", "from-cli"], None);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("401") || said.contains("token"), "{said}");
    drop(server);

    // With the probe flags, /ready and /metrics answer without the token;
    // the data still needs it.
    let open = tempfile::tempdir().expect("dir");
    let server = Server::start_in(
        open.path(),
        &[
            "--auth-token-file",
            &token,
            "--ready-without-auth",
            "--metrics-without-auth",
        ],
    );
    assert_eq!(get(server.address, "/ready").status, 200);
    assert_eq!(get(server.address, "/metrics").status, 200);
    assert_eq!(get(server.address, "/kv/a").status, 401);
}

#[test]
fn https_with_a_generated_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).expect("cert file");
    std::fs::write(&key_path, certified.key_pair.serialize_pem()).expect("key file");
    let (cert, key) = (
        cert_path.to_string_lossy().into_owned(),
        key_path.to_string_lossy().into_owned(),
    );
    let server = Server::start_in(dir.path(), &["--tls-cert", &cert, "--tls-key", &key]);

    let mut tls = crate::server::tls_to_localhost(server.address, certified.cert.der());
    tls.write_all(b"PUT /kv/secure HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\nok")
        .expect("write");
    let mut reader = BufReader::new(tls);
    let reply = read_reply(&mut reader).expect("reply over TLS");
    assert_eq!(reply.status, 200);
    reader
        .get_mut()
        .write_all(b"GET /kv/secure HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("write");
    let reply = read_reply(&mut reader).expect("reply over TLS");
    assert_eq!(reply.body, b"ok");

    // Plain HTTP on the TLS port gets no answer and does not disturb the server.
    assert!(
        crate::server::raw(server.address, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .is_none_or(|reply| reply.status >= 400)
    );
}

/// With --tls-cert the RESP port speaks TLS with the same certificate:
/// AUTH never travels in the clear, and `redis-cli --tls --cacert` works.
#[test]
fn resp_speaks_tls_with_the_node_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("cert");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    let token_path = dir.path().join("token");
    std::fs::write(&cert_path, certified.cert.pem()).expect("cert file");
    std::fs::write(&key_path, certified.key_pair.serialize_pem()).expect("key file");
    std::fs::write(&token_path, "s3cret\n").expect("token file");
    let (cert, key, token) = (
        cert_path.to_string_lossy().into_owned(),
        key_path.to_string_lossy().into_owned(),
        token_path.to_string_lossy().into_owned(),
    );
    let server = Server::start_in(
        dir.path(),
        &[
            "--resp-listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--auth-token-file",
            &token,
        ],
    );
    let mut tls =
        crate::resp_client::RawResp::connect_tls(server.resp_address(), certified.cert.der());
    assert_eq!(tls.call(&["AUTH", "s3cret"]), "+OK\r\n");
    assert_eq!(tls.call(&["SET", "k", "over tls"]), "+OK\r\n");
    assert_eq!(tls.call(&["GET", "k"]), "$8\r\nover tls\r\n");
    // Plain RESP on the TLS port is not served: a TLS alert at most, then
    // the connection closes.
    let mut plain = crate::resp_client::RawResp::connect(server.resp_address());
    plain.send_raw(b"PING\r\n");
    let answer = plain.reply();
    assert!(
        answer.as_deref().is_none_or(|text| !text.starts_with('+')),
        "{answer:?}"
    );
    assert!(plain.is_closed());

    let Ok(output) = std::process::Command::new("redis-cli")
        .args(["--tls", "--cacert", &cert, "-h", "127.0.0.1"])
        .args(["-p", &server.resp_address().port().to_string()])
        .args(["--no-auth-warning", "-a", "s3cret", "GET", "k"])
        .output()
    else {
        eprintln!("SKIPPED (the redis-cli part): redis-cli is not installed");
        return;
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "over tls");
}

/// The certificate `openssl req -x509` makes is self-signed and marked as a CA,
/// which WebPKI refuses as a server's own. Given with `--cacert`, the CLI
/// trusts exactly that certificate; another one is refused with a message that
/// says what `--cacert` must hold, and `--cacert` with an http endpoint says it
/// needs https.
#[test]
fn the_cli_trusts_a_self_signed_ca_certificate_given_with_cacert() {
    let dir = tempfile::tempdir().expect("dir");
    let write_ca_cert = |name: &str| {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("cert");
        let cert_path = dir.path().join(format!("{name}.pem"));
        let key_path = dir.path().join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("cert file");
        std::fs::write(&key_path, key.serialize_pem()).expect("key file");
        (
            cert_path.to_string_lossy().into_owned(),
            key_path.to_string_lossy().into_owned(),
        )
    };
    let (cert, key) = write_ca_cert("server");
    let (other, _) = write_ca_cert("other");
    let server = Server::start_in(dir.path(), &["--tls-cert", &cert, "--tls-key", &key]);
    let walrus = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_walrus"))
            .args(args)
            .output()
            .expect("run walrus");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    // By IP, which the certificate does not name: the exact certificate is pinned.
    let https = format!("https://127.0.0.1:{}", server.address.port());
    let (ok, text) = walrus(&["put", "k", "v", "--cacert", &cert, "--endpoints", &https]);
    assert!(ok, "{text}");
    let (ok, text) = walrus(&["get", "k", "--cacert", &cert, "--endpoints", &https]);
    assert!(ok && text.starts_with('v'), "{text}");

    let (ok, text) = walrus(&["get", "k", "--cacert", &other, "--endpoints", &https]);
    assert!(!ok);
    assert!(
        text.contains("does not trust") && text.contains("--tls-cert"),
        "{text}"
    );

    let http = format!("http://127.0.0.1:{}", server.address.port());
    let (ok, text) = walrus(&["get", "k", "--cacert", &cert, "--endpoints", &http]);
    assert!(!ok);
    assert!(text.contains("is for https:// endpoints"), "{text}");
}
