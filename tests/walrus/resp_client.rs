//! A tiny blocking RESP client for tests that need the exact bytes: it sends
//! commands or raw bytes and reads replies back as their wire text.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A byte stream a test client talks over: plain TCP or TLS.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

pub struct RawResp {
    reader: BufReader<Box<dyn Stream>>,
}

impl RawResp {
    pub fn connect(address: SocketAddr) -> RawResp {
        let stream = TcpStream::connect(address).expect("connect to RESP");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        RawResp {
            reader: BufReader::new(Box::new(stream)),
        }
    }

    /// Connects over TLS, trusting the certificate `ca` (DER) for `localhost`.
    pub fn connect_tls(
        address: SocketAddr,
        ca: &rustls::pki_types::CertificateDer<'static>,
    ) -> RawResp {
        RawResp {
            reader: BufReader::new(Box::new(crate::server::tls_to_localhost(address, ca))),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("send");
    }

    /// Sends one command as a multibulk.
    pub fn send(&mut self, args: &[&[u8]]) {
        self.send_raw(&encode(args));
    }

    /// This connection's `CLIENT ID`, as text.
    pub fn client_id(&mut self) -> String {
        let reply = self.call(&["CLIENT", "ID"]);
        reply.trim_start_matches(':').trim_end().to_string()
    }

    /// Sends a command and returns its reply as wire text.
    pub fn call(&mut self, args: &[&str]) -> String {
        let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        self.send(&args);
        self.reply().expect("a reply")
    }

    /// Sends a command whose reply must be an integer, and returns it.
    pub fn integer(&mut self, args: &[&str]) -> i64 {
        let reply = self.call(args);
        reply
            .strip_prefix(':')
            .and_then(|number| number.trim_end().parse().ok())
            .unwrap_or_else(|| panic!("{args:?} answered {reply:?}, not an integer"))
    }

    /// Reads one whole reply (nested arrays included) as wire text; `None` if
    /// the server closed the connection.
    pub fn reply(&mut self) -> Option<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let mut text = line.clone();
        let body = line.trim_end();
        match body.as_bytes().first()? {
            b'$' | b'=' => {
                let length: i64 = body[1..].parse().ok()?;
                if length >= 0 {
                    let mut data = vec![0; length as usize + 2];
                    self.reader.read_exact(&mut data).ok()?;
                    text.push_str(&String::from_utf8_lossy(&data));
                }
            }
            b'*' | b'~' | b'>' => {
                let count: i64 = body[1..].parse().ok()?;
                for _ in 0..count.max(0) {
                    text.push_str(&self.reply()?);
                }
            }
            b'%' => {
                let count: i64 = body[1..].parse().ok()?;
                for _ in 0..count.max(0) * 2 {
                    text.push_str(&self.reply()?);
                }
            }
            _ => {}
        }
        Some(text)
    }

    /// Whether the server has closed the connection (after any replies).
    pub fn is_closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).is_ok() && rest.is_empty()
    }
}

pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut bytes = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        bytes.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        bytes.extend_from_slice(arg);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes
}

/// A `-ERR …` reply's wire text.
pub fn err(message: &str) -> String {
    format!("-ERR {message}\r\n")
}
