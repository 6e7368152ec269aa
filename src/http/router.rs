//! Request dispatch: authentication, routing, and metrics around every request.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use super::admin;
use super::app::App;
use super::cluster;
use super::kv;
use super::metrics::Route;
use super::response::{HttpResponse, body, method_not_allowed, text};

impl App {
    /// Serves one request. Never fails: every problem becomes a response.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<HttpResponse, Infallible> {
        let started = Instant::now();
        let route = route_of(
            request.method(),
            request.uri().path(),
            request.uri().query(),
        );
        let response = if self.needs_auth(route) && !self.authorized(&request) {
            unauthorized()
        } else {
            self.dispatch(route, request).await
        };
        self.metrics
            .record(route, response.status().as_u16(), started.elapsed());
        Ok(response)
    }

    async fn dispatch(&self, route: Route, request: Request<Incoming>) -> HttpResponse {
        let path = request.uri().path();
        if let Some(raw_key) = path.strip_prefix(kv::PREFIX) {
            let raw_key = raw_key.to_string();
            return kv::handle(self, route, &raw_key, request).await;
        }
        if let Some(message) = path.strip_prefix(cluster::RAFT_PREFIX) {
            let message = message.to_string();
            return cluster::raft(self, &message, request).await;
        }
        if let Some(action) = path.strip_prefix(cluster::CLUSTER_PREFIX) {
            let action = action.to_string();
            return cluster::cluster(self, &action, request).await;
        }
        if let Some(action) = path.strip_prefix(admin::PREFIX) {
            let action = action.to_string();
            return admin::handle(self, &action, request).await;
        }
        if let Some(action) = path.strip_prefix(cluster::FAULT_PREFIX) {
            let action = action.to_string();
            return cluster::fault(self, &action, request).await;
        }
        match (path, request.method()) {
            ("/health", &Method::GET | &Method::HEAD) => text(StatusCode::OK, "ok"),
            ("/ready", &Method::GET | &Method::HEAD) => self.ready().await,
            ("/metrics", &Method::GET | &Method::HEAD) => body(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                {
                    let mut page = self.metrics.render(&self.node);
                    for source in &self.metrics_sources {
                        source.render_metrics(&mut page);
                    }
                    page.into()
                },
            ),
            ("/health" | "/ready" | "/metrics", _) => method_not_allowed("GET, HEAD"),
            _ => text(
                StatusCode::NOT_FOUND,
                "no such route; the API is /kv/{key}, /health, /ready, /metrics and /cluster/status",
            ),
        }
    }

    async fn ready(&self) -> HttpResponse {
        match self.node.not_ready().await {
            None => text(StatusCode::OK, "ready"),
            Some(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}"),
            ),
        }
    }

    /// Every route needs the token but `/health`, and `/ready` and `/metrics`
    /// when their flags open them.
    fn needs_auth(&self, route: Route) -> bool {
        match route {
            Route::Health => false,
            Route::Ready => !self.config.ready_without_auth,
            Route::Metrics => !self.config.metrics_without_auth,
            _ => true,
        }
    }

    fn authorized(&self, request: &Request<Incoming>) -> bool {
        let Some(token) = &self.config.auth_token else {
            return true;
        };
        request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| bearer_credentials(value.as_bytes()))
            .is_some_and(|offered| constant_time_eq(offered, token.as_bytes()))
    }
}

/// The token of `Bearer <token>`. The scheme's name is matched without
/// regard to case (RFC 9110 §11.1), so `bearer` and `BEARER` work too.
fn bearer_credentials(header: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = header.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
}

/// Compares without an early exit, so the time taken does not reveal how many
/// leading bytes of a guessed token were right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let length_differs = a.len() != b.len();
    let difference = a
        .iter()
        .zip(b.iter().cycle())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    !length_differs & (difference == 0) & !b.is_empty()
}

fn unauthorized() -> HttpResponse {
    let mut response = text(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token: send Authorization: Bearer <token>",
    );
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn route_of(method: &Method, path: &str, query: Option<&str>) -> Route {
    match path {
        "/health" => return Route::Health,
        "/ready" => return Route::Ready,
        "/metrics" => return Route::Metrics,
        _ => {}
    }
    let Some(key) = path.strip_prefix(kv::PREFIX) else {
        return Route::Other;
    };
    match *method {
        Method::GET if query.is_some_and(kv::wants_watch) => Route::KvWatch,
        Method::GET | Method::HEAD if key.is_empty() && query.is_some() => Route::KvList,
        Method::GET | Method::HEAD => Route::KvGet,
        Method::PUT => Route::KvPut,
        Method::DELETE => Route::KvDelete,
        _ => Route::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret2", b"secret"));
        assert!(!constant_time_eq(b"", b""));
    }

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        for header in [&b"Bearer s3cret"[..], b"bearer s3cret", b"BEARER s3cret"] {
            assert_eq!(bearer_credentials(header), Some(&b"s3cret"[..]));
        }
        assert_eq!(bearer_credentials(b"Basic s3cret"), None);
        assert_eq!(bearer_credentials(b"Bearer"), None);
    }

    #[test]
    fn routes() {
        assert_eq!(route_of(&Method::GET, "/kv/a", None), Route::KvGet);
        assert_eq!(
            route_of(&Method::GET, "/kv/", Some("prefix=a")),
            Route::KvList
        );
        assert_eq!(route_of(&Method::POST, "/kv/a", None), Route::Other);
        assert_eq!(route_of(&Method::GET, "/nope", None), Route::Other);
    }
}
