//! A harness that runs the real `walrus` binary on a free loopback port in a
//! temporary directory, and a small blocking HTTP/1.1 client that can also send
//! raw bytes.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Server {
    pub address: SocketAddr,
    /// The RESP address, when started with `--resp-listen`.
    pub resp: Option<SocketAddr>,
    pub dir: PathBuf,
    /// What the server logged up to its "listening on" line.
    pub startup_log: Vec<String>,
    /// The server's standard input, when started with a pipe there.
    pub stdin: Option<ChildStdin>,
    /// Whether it was, so that a restart gives it a pipe again (not the
    /// test's own stdin, which under CI may be closed).
    piped_stdin: bool,
    child: Child,
    /// Keeps the log pipe drained (a full pipe would block the server).
    log: mpsc::Receiver<String>,
    extra_args: Vec<String>,
}

impl Server {
    /// Starts a server on a fresh data directory.
    pub fn start(args: &[&str]) -> (Server, tempfile::TempDir) {
        let temp = tempfile::tempdir().expect("temp dir");
        let server = Server::start_in(temp.path(), args);
        (server, temp)
    }

    /// Starts a server whose data directory is `dir/data`.
    pub fn start_in(dir: &Path, args: &[&str]) -> Server {
        Server::start_in_data(&dir.join("data"), args)
    }

    /// Starts a server on the data directory `data`.
    pub fn start_in_data(data: &Path, args: &[&str]) -> Server {
        Server::spawn(data, args, false)
    }

    /// Starts a server on a fresh data directory whose standard input is a
    /// pipe the test holds ([`Server::stdin`]).
    pub fn start_with_stdin_pipe(args: &[&str]) -> (Server, tempfile::TempDir) {
        let temp = tempfile::tempdir().expect("temp dir");
        let server = Server::spawn(&temp.path().join("data"), args, true);
        (server, temp)
    }

    fn spawn(data: &Path, args: &[&str], piped_stdin: bool) -> Server {
        let data = data.to_path_buf();
        let stdin = if piped_stdin {
            Stdio::piped()
        } else {
            Stdio::inherit()
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_walrus"))
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start walrus");
        let stderr = child.stderr.take().expect("stderr");
        let stdin = child.stdin.take();
        let (lines, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut resp = None;
        let mut startup_log = Vec::new();
        let address = loop {
            let line = log
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("walrus did not report its address: {startup_log:#?}"));
            startup_log.push(line.clone());
            if let Some(rest) = line
                .split("listening for RESP on redis://")
                .nth(1)
                .or_else(|| line.split("listening for RESP on rediss://").nth(1))
            {
                let address = rest.split_whitespace().next().expect("RESP address");
                resp = Some(address.parse().expect("RESP socket address"));
                continue;
            }
            if let Some(rest) = line.split("listening on ").nth(1) {
                let address = rest
                    .split_whitespace()
                    .next()
                    .and_then(|url| url.split("://").nth(1))
                    .expect("address in log line");
                break address.parse().expect("socket address");
            }
        };
        Server {
            address,
            resp,
            dir: data,
            startup_log,
            stdin,
            piped_stdin,
            child,
            log,
            extra_args: args.iter().map(|arg| arg.to_string()).collect(),
        }
    }

    /// Stops with SIGKILL: no chance to sync or unlock anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The names of the server process's threads.
    pub fn thread_names(&self) -> Vec<String> {
        let tasks = format!("/proc/{}/task", self.child.id());
        std::fs::read_dir(tasks)
            .expect("the server's threads")
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_string())
            .collect()
    }

    /// Stops with SIGTERM and returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait for walrus")
    }

    /// Waits up to `within` for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let started = std::time::Instant::now();
        while started.elapsed() < within {
            if let Some(status) = self.child.try_wait().expect("wait for walrus") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Starts a server that also serves RESP on a free port.
    pub fn start_resp(args: &[&str]) -> (Server, tempfile::TempDir) {
        let mut all = vec!["--resp-listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Server::start(&all)
    }

    /// The RESP address; panics if the server was started without one.
    pub fn resp_address(&self) -> SocketAddr {
        self.resp.expect("started with --resp-listen")
    }

    /// A `redis` crate connection to the RESP port.
    pub fn redis_connection(&self) -> redis::Connection {
        redis::Client::open(format!("redis://{}/", self.resp_address()))
            .expect("client")
            .get_connection()
            .expect("connection")
    }

    /// Starts a new process on the same data directory and flags.
    /// What the server logs after start-up, until it exits (its log pipe
    /// closes) or `within` passes.
    pub fn log_until_exit(&self, within: Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + within;
        let mut lines = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.log.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        lines
    }

    pub fn restart(&mut self) {
        self.kill();
        let parent = self
            .dir
            .parent()
            .expect("data dir has a parent")
            .to_path_buf();
        let args: Vec<String> = self.extra_args.clone();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        *self = Server::spawn(&parent.join("data"), &args, self.piped_stdin);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends raw bytes on a fresh connection and reads one response (or `None` if
/// the server closed the connection without answering).
pub fn raw(address: SocketAddr, request: &[u8]) -> Option<Reply> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    stream.write_all(request).ok()?;
    read_reply(&mut BufReader::new(stream))
}

pub fn read_reply(reader: &mut impl BufRead) -> Option<Reply> {
    let mut status_line = String::new();
    if reader.read_line(&mut status_line).ok()? == 0 {
        return None;
    }
    let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let length = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Reply {
        status,
        headers,
        body,
    })
}

/// One request with `Connection: close`.
pub fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut bytes = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        bytes.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "PUT" {
        bytes.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    bytes.push_str("\r\n");
    let mut bytes = bytes.into_bytes();
    bytes.extend_from_slice(body);
    raw(address, &bytes).unwrap_or_else(|| panic!("no reply to {method} {path}"))
}

/// Moves the expiry clock of a server started with
/// `--enable-fault-injection` forward by `ms`, instead of sleeping.
pub fn advance_clock(address: SocketAddr, ms: u64) {
    let reply = request(
        address,
        "POST",
        &format!("/fault/clock?advance_ms={ms}"),
        &[],
        &[],
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
}

pub fn get(address: SocketAddr, path: &str) -> Reply {
    request(address, "GET", path, &[], b"")
}

pub fn put(address: SocketAddr, path: &str, body: &[u8]) -> Reply {
    request(address, "PUT", path, &[], body)
}

pub fn delete(address: SocketAddr, path: &str) -> Reply {
    request(address, "DELETE", path, &[], b"")
}

/// A TLS connection to `address` that trusts the certificate `ca` (DER) for
/// the name `localhost`, with the harness's read timeout.
pub fn tls_to_localhost(
    address: SocketAddr,
    ca: &rustls::pki_types::CertificateDer<'static>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("root");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let connection =
        rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("client");
    let socket = TcpStream::connect(address).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    rustls::StreamOwned::new(connection, socket)
}
