//! A minimal RESP2 client (`walrus verify`'s workload, MIGRATE): one
//! connection, commands sent pipelined, replies parsed whole (nested arrays
//! included).

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A reply, as RESP2 sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespValue {
    Simple(String),
    Error(String),
    Integer(i64),
    /// `None` for the null bulk string.
    Bulk(Option<Bytes>),
    /// `None` for the null array (a failed EXEC).
    Array(Option<Vec<RespValue>>),
}

/// A plain or TLS connection.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

pub struct RespConnection {
    stream: Box<dyn Stream>,
    buffer: BytesMut,
}

fn broken(reason: impl Into<String>) -> std::io::Error {
    std::io::Error::other(reason.into())
}

impl RespConnection {
    /// Connects to `address` (HOST:PORT), over TLS when `tls` is given
    /// (the certificate checked against HOST), and authenticates.
    pub async fn connect(
        address: &str,
        password: Option<&str>,
        tls: Option<&TlsConnector>,
    ) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(address).await?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match tls {
            None => Box::new(tcp),
            Some(connector) => {
                let host = address
                    .rsplit_once(':')
                    .map_or(address, |(host, _)| host)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|error| broken(format!("{address}: {error}")))?;
                Box::new(connector.connect(name, tcp).await?)
            }
        };
        let mut connection = RespConnection {
            stream,
            buffer: BytesMut::with_capacity(4096),
        };
        if let Some(password) = password {
            let replies = connection.call(&[&[b"AUTH", password.as_bytes()]]).await?;
            if !matches!(replies.first(), Some(RespValue::Simple(_))) {
                return Err(broken("AUTH was refused"));
            }
        }
        Ok(connection)
    }

    /// Sends the commands in one write and reads one reply for each.
    pub async fn call(&mut self, commands: &[&[&[u8]]]) -> std::io::Result<Vec<RespValue>> {
        self.send(commands).await?;
        self.receive(commands.len()).await
    }

    /// Sends the commands in one write, as RESP arrays of bulk strings.
    pub async fn send(&mut self, commands: &[&[&[u8]]]) -> std::io::Result<()> {
        let mut request = Vec::new();
        for args in commands {
            request.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for arg in *args {
                request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                request.extend_from_slice(arg);
                request.extend_from_slice(b"\r\n");
            }
        }
        self.stream.write_all(&request).await
    }

    /// Reads the next `count` replies.
    pub async fn receive(&mut self, count: usize) -> std::io::Result<Vec<RespValue>> {
        let mut replies = Vec::with_capacity(count);
        while replies.len() < count {
            match parse(&self.buffer)? {
                Some((value, used)) => {
                    self.buffer.advance(used);
                    replies.push(value);
                }
                None => {
                    if self.stream.read_buf(&mut self.buffer).await? == 0 {
                        return Err(broken("the server closed the connection"));
                    }
                }
            }
        }
        Ok(replies)
    }

    /// [`RespConnection::call`] with a time limit.
    pub async fn call_within(
        &mut self,
        timeout: Duration,
        commands: &[&[&[u8]]],
    ) -> std::io::Result<Vec<RespValue>> {
        tokio::time::timeout(timeout, self.call(commands))
            .await
            .map_err(|_| broken("no answer in time"))?
    }
}

/// One whole reply from the start of `data` and the bytes it took, or
/// `None` if it has not all arrived.
pub fn parse(data: &[u8]) -> std::io::Result<Option<(RespValue, usize)>> {
    let Some(line_end) = data.windows(2).position(|pair| pair == b"\r\n") else {
        return Ok(None);
    };
    let line = std::str::from_utf8(&data[1..line_end]).map_err(|_| broken("reply is not text"))?;
    let header = line_end + 2;
    let number = || {
        line.parse::<i64>()
            .map_err(|_| broken(format!("bad length {line:?}")))
    };
    let value = match data.first() {
        Some(b'+') => (RespValue::Simple(line.to_string()), header),
        Some(b'-') => (RespValue::Error(line.to_string()), header),
        Some(b':') => (RespValue::Integer(number()?), header),
        Some(b'$') => {
            let length = number()?;
            if length < 0 {
                (RespValue::Bulk(None), header)
            } else {
                let end = header + length as usize;
                if data.len() < end + 2 {
                    return Ok(None);
                }
                let bytes = Bytes::copy_from_slice(&data[header..end]);
                (RespValue::Bulk(Some(bytes)), end + 2)
            }
        }
        Some(b'*') => {
            let count = number()?;
            if count < 0 {
                (RespValue::Array(None), header)
            } else {
                let mut items = Vec::new();
                let mut used = header;
                for _ in 0..count {
                    match parse(&data[used..])? {
                        Some((item, length)) => {
                            items.push(item);
                            used += length;
                        }
                        None => return Ok(None),
                    }
                }
                (RespValue::Array(Some(items)), used)
            }
        }
        _ => return Err(broken("unexpected reply type")),
    };
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_and_null_replies() {
        let data = b"*2\r\n+OK\r\n$-1\r\n*-1\r\n";
        let (first, used) = parse(data).unwrap().unwrap();
        assert_eq!(
            first,
            RespValue::Array(Some(vec![
                RespValue::Simple("OK".into()),
                RespValue::Bulk(None)
            ]))
        );
        assert_eq!(
            parse(&data[used..]).unwrap().unwrap().0,
            RespValue::Array(None)
        );
        assert_eq!(parse(b"$5\r\nhel").unwrap(), None);
    }
}
