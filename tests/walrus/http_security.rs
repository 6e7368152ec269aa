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

/// The flags of a server whose HTTP and RESP ports speak TLS with `cert`.
fn resp_tls_args<'a>(cert: &'a str, key: &'a str) -> [&'a str; 6] {
    [
        "--resp-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ]
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
    let mut args = resp_tls_args(&cert, &key).to_vec();
    args.extend(["--auth-token-file", &token]);
    let server = Server::start_in(dir.path(), &args);
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

/// MIGRATE from a node with a certificate speaks TLS (`tls-cluster yes`, as
/// such a node starts), so the target's password never travels in the
/// clear: into another TLS walrus, checked against `--peer-cacert`; a target
/// with a certificate it does not trust is refused and the key kept;
/// `CONFIG SET tls-cluster no` goes back to plain TCP, and a node without a
/// certificate cannot turn it on. With `redis-server` installed, the same
/// into a Redis whose TLS port asks for a client certificate (its default).
#[test]
fn migrate_speaks_tls_from_a_node_with_a_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let (certified, cert, key) = crate::common::self_signed_certificate(dir.path());
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").expect("token file");
    let token = token.to_string_lossy().into_owned();
    let tls_args = resp_tls_args(&cert, &key);
    let source_dir = tempfile::tempdir().expect("dir");
    let source = Server::start_in(source_dir.path(), &tls_args);
    let target_dir = tempfile::tempdir().expect("dir");
    let mut target_args = tls_args.to_vec();
    target_args.extend(["--auth-token-file", &token]);
    let target = Server::start_in(target_dir.path(), &target_args);
    let ca = certified.cert.der();
    let mut here = crate::resp_client::RawResp::connect_tls(source.resp_address(), ca);
    let mut there = crate::resp_client::RawResp::connect_tls(target.resp_address(), ca);
    assert_eq!(there.call(&["AUTH", "s3cret"]), "+OK\r\n");
    assert_eq!(
        here.call(&["CONFIG", "GET", "tls-cluster"]),
        "*2\r\n$11\r\ntls-cluster\r\n$3\r\nyes\r\n"
    );
    let migrate = |raw: &mut crate::resp_client::RawResp, port: u16, key: &str| {
        let port = port.to_string();
        raw.call(&[
            "MIGRATE",
            "127.0.0.1",
            &port,
            key,
            "0",
            "5000",
            "AUTH",
            "s3cret",
        ])
    };
    let target_port = target.resp_address().port();
    assert_eq!(here.call(&["SET", "a", "over tls"]), "+OK\r\n");
    assert_eq!(migrate(&mut here, target_port, "a"), "+OK\r\n");
    assert_eq!(here.call(&["EXISTS", "a"]), ":0\r\n");
    assert_eq!(there.call(&["GET", "a"]), "$8\r\nover tls\r\n");

    // Plain TCP to a TLS port: the target closes, the key stays.
    assert_eq!(
        here.call(&["CONFIG", "SET", "tls-cluster", "no"]),
        "+OK\r\n"
    );
    assert_eq!(here.call(&["SET", "b", "kept"]), "+OK\r\n");
    let refused = migrate(&mut here, target_port, "b");
    assert!(refused.starts_with("-IOERR "), "{refused}");
    assert_eq!(here.call(&["GET", "b"]), "$4\r\nkept\r\n");
    assert_eq!(
        here.call(&["CONFIG", "SET", "tls-cluster", "yes"]),
        "+OK\r\n"
    );

    // A target whose certificate --peer-cacert (here --tls-cert) does not hold.
    let stranger_dir = tempfile::tempdir().expect("dir");
    let (_, stranger_cert, stranger_key) =
        crate::common::self_signed_certificate(stranger_dir.path());
    let stranger = Server::start_in(
        stranger_dir.path(),
        &resp_tls_args(&stranger_cert, &stranger_key),
    );
    let untrusted = migrate(&mut here, stranger.resp_address().port(), "b");
    assert!(
        untrusted.starts_with("-IOERR error or timeout connecting to the client (TLS: ")
            && untrusted.contains("--peer-cacert"),
        "{untrusted}"
    );
    assert_eq!(here.call(&["GET", "b"]), "$4\r\nkept\r\n");

    // Without a certificate there is no TLS to turn on.
    let (plain, _plain_dir) = Server::start_resp(&[]);
    let mut plain_raw = crate::resp_client::RawResp::connect(plain.resp_address());
    assert_eq!(
        plain_raw.call(&["CONFIG", "GET", "tls-cluster"]),
        "*2\r\n$11\r\ntls-cluster\r\n$2\r\nno\r\n"
    );
    let refused = plain_raw.call(&["CONFIG", "SET", "tls-cluster", "yes"]);
    assert!(refused.contains("--tls-cert"), "{refused}");

    migrate_into_redis_over_tls(&mut here, dir.path(), &cert, &key);
}

/// MIGRATE into a `redis-server` that serves only TLS and asks for client
/// certificates (Redis's default), reading the key back with `redis-cli`.
fn migrate_into_redis_over_tls(
    here: &mut crate::resp_client::RawResp,
    dir: &std::path::Path,
    cert: &str,
    key: &str,
) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
        .to_string();
    let Ok(redis) = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port, "--bind", "127.0.0.1"])
        .args(["--tls-cert-file", cert, "--tls-key-file", key])
        .args([
            "--tls-ca-cert-file",
            cert,
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
    else {
        eprintln!("SKIPPED (the Redis part): redis-server is not installed");
        return;
    };
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _redis = Stop(redis);
    let redis_cli = |args: &[&str]| {
        Command::new("redis-cli")
            .args(["--tls", "--cacert", cert, "--cert", cert, "--key", key])
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args)
            .output()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match redis_cli(&["PING"]) {
            Err(_) => {
                eprintln!("SKIPPED (the Redis part): redis-cli is not installed");
                return;
            }
            Ok(output) if output.stdout.starts_with(b"PONG") => break,
            Ok(_) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "redis-server did not come up on {port}"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
    assert_eq!(here.call(&["SET", "to-redis", "moved"]), "+OK\r\n");
    assert_eq!(
        here.call(&["MIGRATE", "127.0.0.1", &port, "to-redis", "0", "5000"]),
        "+OK\r\n"
    );
    assert_eq!(here.call(&["EXISTS", "to-redis"]), ":0\r\n");
    let output = redis_cli(&["GET", "to-redis"]).expect("redis-cli");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "moved");
}
