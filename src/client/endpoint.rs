//! One server address, parsed once from a URL such as `http://127.0.0.1:8080`.

use http::HeaderValue;
use http::uri::{Scheme, Uri};

use super::ClientError;

/// Where to send requests: scheme, address, `Host` header and base path.
///
/// A URL without a scheme is taken as `http://`. A path in the URL is a prefix for
/// every request (for a server behind a reverse proxy); the `static` benchmark
/// style requests the path itself.
#[derive(Debug, Clone)]
pub struct Endpoint {
    url: String,
    tls: bool,
    host: String,
    port: u16,
    authority: HeaderValue,
    base_path: String,
    path_and_query: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidEndpoint {
            endpoint: url.to_string(),
            reason: reason.to_string(),
        };
        let full = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        let uri: Uri = full.parse().map_err(|_| invalid("not a URL"))?;
        let tls = match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTP => false,
            Some(scheme) if *scheme == Scheme::HTTPS => true,
            _ => return Err(invalid("the scheme must be http or https")),
        };
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user information in the URL is not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let header = HeaderValue::from_str(authority.as_str()).map_err(|_| invalid("bad host"))?;
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
        Ok(Endpoint {
            url: url.to_string(),
            tls,
            host: host.to_string(),
            port,
            authority: header,
            base_path: uri.path().trim_end_matches('/').to_string(),
            path_and_query: path_and_query.to_string(),
        })
    }

    /// The URL as given, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The host name or IP address, without IPv6 brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The value of the `Host` header.
    pub fn authority(&self) -> &HeaderValue {
        &self.authority
    }

    /// The request target for `path_and_query` (which starts with `/`) under the
    /// URL's base path.
    pub fn target(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base_path)
    }

    /// The URL's own path and query, `/` when it has none.
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_http_with_port() {
        let endpoint = Endpoint::parse("http://127.0.0.1:8080").unwrap();
        assert!(!endpoint.is_tls());
        assert_eq!((endpoint.host(), endpoint.port()), ("127.0.0.1", 8080));
        assert_eq!(endpoint.authority(), "127.0.0.1:8080");
        assert_eq!(endpoint.target("/kv/a"), "/kv/a");
        assert_eq!(endpoint.path_and_query(), "/");
    }

    #[test]
    fn defaults_scheme_and_ports() {
        let endpoint = Endpoint::parse("localhost:9000").unwrap();
        assert_eq!((endpoint.is_tls(), endpoint.port()), (false, 9000));
        assert_eq!(Endpoint::parse("http://db").unwrap().port(), 80);
        assert_eq!(Endpoint::parse("https://db").unwrap().port(), 443);
    }

    #[test]
    fn keeps_base_path_and_strips_ipv6_brackets() {
        let endpoint = Endpoint::parse("https://[::1]:8443/walrus/").unwrap();
        assert_eq!(endpoint.host(), "::1");
        assert_eq!(endpoint.authority(), "[::1]:8443");
        assert_eq!(endpoint.target("/kv/a"), "/walrus/kv/a");
        let file = Endpoint::parse("http://127.0.0.1/index.html?x=1").unwrap();
        assert_eq!(file.path_and_query(), "/index.html?x=1");
    }

    #[test]
    fn rejects_other_schemes_and_garbage() {
        for url in [
            "ftp://host",
            "http://",
            "http://user@host",
            "http://a b",
            "",
        ] {
            assert!(Endpoint::parse(url).is_err(), "{url}");
        }
    }
}
