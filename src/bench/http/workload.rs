//! What each benchmark request is: the operation mix, the keys, and per style the
//! method, target and body of a PUT or a GET.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method};
use rand::Rng;
use rand::rngs::SmallRng;
use serde::Serialize;

use crate::client::{Endpoint, bearer, key_path};

/// Which server API the requests speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    /// `PUT` / `GET /kv/<prefix><n>`.
    Walrus,
    /// The etcd v3 JSON gateway: `POST /v3/kv/put` and `POST /v3/kv/range` with
    /// base64 keys and values.
    Etcd,
    /// `GET` of the endpoint URL's own path (a static file, e.g. from nginx): the
    /// ceiling of the HTTP stack alone. Always GETs, whatever the mix.
    Static,
}

impl FromStr for Style {
    type Err = String;

    fn from_str(text: &str) -> Result<Style, String> {
        match text {
            "walrus" => Ok(Style::Walrus),
            "etcd" => Ok(Style::Etcd),
            "static" => Ok(Style::Static),
            _ => Err(format!(
                "unknown style {text:?}: expected walrus, etcd or static"
            )),
        }
    }
}

impl fmt::Display for Style {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Style::Walrus => "walrus",
            Style::Etcd => "etcd",
            Style::Static => "static",
        };
        f.write_str(name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    Put,
    Get,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "PUT",
            Op::Get => "GET",
        }
    }
}

/// Relative weights of PUTs and GETs, written `put:get`: `1:0` writes only,
/// `0:1` reads only, `1:9` one write in ten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub put: u32,
    pub get: u32,
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Mix, String> {
        let invalid = || format!("invalid mix {text:?}: expected put:get weights such as 1:9");
        let (put, get) = text.split_once(':').ok_or_else(invalid)?;
        let put = put.trim().parse().map_err(|_| invalid())?;
        let get = get.trim().parse().map_err(|_| invalid())?;
        let mix = Mix { put, get };
        if mix.total() == 0 {
            return Err(format!("invalid mix {text:?}: both weights are 0"));
        }
        Ok(mix)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.put, self.get)
    }
}

impl Mix {
    fn total(self) -> u64 {
        u64::from(self.put) + u64::from(self.get)
    }
}

/// One request to send.
pub struct Planned {
    pub method: Method,
    pub target: String,
    pub body: Bytes,
}

/// The requests of one run: style, mix, key space and the value every PUT sends.
pub struct Workload {
    style: Style,
    mix: Mix,
    key_space: u64,
    /// Every key the run touches starts with this.
    key_prefix: String,
    value: Bytes,
    value_base64: String,
}

impl Workload {
    /// `mix` must have a non-zero weight and `key_space` must not be 0.
    pub fn new(
        style: Style,
        mix: Mix,
        key_space: u64,
        key_prefix: &str,
        value_size: usize,
    ) -> Workload {
        assert!(mix.total() > 0 && key_space > 0, "validated by the config");
        // Letters, so the value is also valid text for servers that care.
        let value: Bytes = (0..value_size)
            .map(|index| b'a' + (index % 26) as u8)
            .collect();
        let value_base64 = BASE64.encode(&value);
        Workload {
            style,
            mix,
            key_space,
            key_prefix: key_prefix.to_string(),
            value,
            value_base64,
        }
    }

    /// The name of benchmark key `index`.
    pub fn key(&self, index: u64) -> String {
        format!("{}{index}", self.key_prefix)
    }

    pub fn style(&self) -> Style {
        self.style
    }

    /// The operations this run performs, in report order.
    pub fn ops(&self) -> Vec<Op> {
        if self.style == Style::Static {
            return vec![Op::Get];
        }
        let mut ops = Vec::new();
        if self.mix.put > 0 {
            ops.push(Op::Put);
        }
        if self.mix.get > 0 {
            ops.push(Op::Get);
        }
        ops
    }

    /// Whether GETs need the keys written first.
    pub fn reads_keys(&self) -> bool {
        self.style != Style::Static && self.mix.get > 0
    }

    /// The next operation and key, drawn uniformly.
    pub fn next(&self, rng: &mut SmallRng) -> (Op, u64) {
        let key = rng.random_range(0..self.key_space);
        if self.style == Style::Static
            || rng.random_range(0..self.mix.total()) >= u64::from(self.mix.put)
        {
            (Op::Get, key)
        } else {
            (Op::Put, key)
        }
    }

    /// The headers every request carries: the token, and JSON for etcd.
    pub fn headers(&self, token: Option<&str>) -> Result<HeaderMap, crate::client::ClientError> {
        let mut headers = HeaderMap::new();
        if let Some(token) = token {
            headers.insert(AUTHORIZATION, bearer(token)?);
        }
        if self.style == Style::Etcd {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Ok(headers)
    }

    pub fn request(&self, op: Op, key: u64, endpoint: &Endpoint) -> Planned {
        let (method, path, body) = match (self.style, op) {
            (Style::Static, _) => {
                let planned = Planned {
                    method: Method::GET,
                    target: endpoint.path_and_query().to_string(),
                    body: Bytes::new(),
                };
                return planned;
            }
            (Style::Walrus, Op::Put) => (
                Method::PUT,
                key_path(self.key(key).as_bytes()),
                self.value.clone(),
            ),
            (Style::Walrus, Op::Get) => (
                Method::GET,
                key_path(self.key(key).as_bytes()),
                Bytes::new(),
            ),
            (Style::Etcd, Op::Put) => (Method::POST, "/v3/kv/put".to_string(), self.etcd_put(key)),
            (Style::Etcd, Op::Get) => (
                Method::POST,
                "/v3/kv/range".to_string(),
                self.etcd_range(key),
            ),
        };
        Planned {
            method,
            target: endpoint.target(&path),
            body,
        }
    }

    fn etcd_put(&self, key: u64) -> Bytes {
        let key = BASE64.encode(self.key(key));
        format!(r#"{{"key":"{key}","value":"{}"}}"#, self.value_base64).into()
    }

    fn etcd_range(&self, key: u64) -> Bytes {
        format!(r#"{{"key":"{}"}}"#, BASE64.encode(self.key(key))).into()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn parses_mixes_and_styles() {
        assert_eq!("1:9".parse::<Mix>(), Ok(Mix { put: 1, get: 9 }));
        assert_eq!(
            "0:1".parse::<Mix>().map(|mix| mix.to_string()),
            Ok("0:1".into())
        );
        for bad in ["", "1", "0:0", "a:1", "1:-1", "1:2:3"] {
            assert!(bad.parse::<Mix>().is_err(), "{bad}");
        }
        assert_eq!("etcd".parse::<Style>(), Ok(Style::Etcd));
        assert!("redis".parse::<Style>().is_err());
    }

    #[test]
    fn draws_ops_by_weight() {
        let workload = Workload::new(Style::Walrus, Mix { put: 1, get: 3 }, 10, "bench-", 4);
        let mut rng = SmallRng::seed_from_u64(7);
        let draws: Vec<_> = (0..4000).map(|_| workload.next(&mut rng)).collect();
        let puts = draws.iter().filter(|(op, _)| *op == Op::Put).count();
        assert!((800..1200).contains(&puts), "{puts} puts");
        assert!(draws.iter().all(|(_, key)| *key < 10));
        assert_eq!(workload.ops(), [Op::Put, Op::Get]);
    }

    #[test]
    fn builds_requests_per_style() {
        let endpoint = Endpoint::parse("http://127.0.0.1:1/base/index.html?v=1").unwrap();
        let walrus = Workload::new(Style::Walrus, Mix { put: 1, get: 0 }, 10, "bench-", 3);
        let put = walrus.request(Op::Put, 7, &endpoint);
        assert_eq!(
            (put.method, put.target.as_str()),
            (Method::PUT, "/base/index.html/kv/bench-7")
        );
        assert_eq!(put.body, "abc");
        assert_eq!(walrus.ops(), [Op::Put]);
        assert!(!walrus.reads_keys());

        let etcd = Workload::new(Style::Etcd, Mix { put: 1, get: 1 }, 10, "bench-", 3);
        let put = etcd.request(Op::Put, 7, &endpoint);
        assert_eq!(put.method, Method::POST);
        assert_eq!(put.body, r#"{"key":"YmVuY2gtNw==","value":"YWJj"}"#);
        let range = etcd.request(Op::Get, 7, &endpoint);
        assert_eq!(range.target, "/base/index.html/v3/kv/range");
        assert_eq!(range.body, r#"{"key":"YmVuY2gtNw=="}"#);

        let file = Workload::new(Style::Static, Mix { put: 1, get: 0 }, 10, "bench-", 3);
        let get = file.request(Op::Put, 7, &endpoint);
        assert_eq!(
            (get.method, get.target.as_str()),
            (Method::GET, "/base/index.html?v=1")
        );
        assert_eq!(file.ops(), [Op::Get]);
        assert!(!file.reads_keys());
    }
}
