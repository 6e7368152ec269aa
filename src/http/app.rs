//! `App`: what every request handler shares (the node, its store, the
//! configuration and the request metrics). The router (`router.rs`) adds the
//! dispatch that hands a request to its handler; handlers depend on this, not
//! on the router, so the two never import each other.

use std::sync::Arc;

use tokio::sync::watch;

use super::HttpConfig;
use super::metrics::HttpMetrics;
use crate::node::Node;
use crate::store::KvStore;

/// Everything a request handler needs; shared by all connections.
pub struct App {
    pub node: Node,
    /// The node's store (`node.store()`), for local reads and writes.
    pub store: Arc<dyn KvStore>,
    pub config: HttpConfig,
    pub(super) metrics: HttpMetrics,
    /// Turns true when the server is stopping: long-lived responses (watch
    /// streams) end then, so shutdown does not wait out its grace period.
    pub(super) shutdown: Option<watch::Receiver<bool>>,
    /// Other layers' parts of `/metrics` (the RESP server's counters).
    pub(super) metrics_sources: Vec<Arc<dyn crate::metrics::MetricsSource>>,
}

impl App {
    pub fn new(node: Node, config: HttpConfig) -> App {
        App {
            store: node.store().clone(),
            node,
            config,
            metrics: HttpMetrics::default(),
            shutdown: None,
            metrics_sources: Vec::new(),
        }
    }

    /// Adds `source`'s series to `/metrics`.
    pub fn with_metrics_source(mut self, source: Arc<dyn crate::metrics::MetricsSource>) -> App {
        self.metrics_sources.push(source);
        self
    }

    /// Ends watch streams when `shutdown` turns true.
    pub fn with_shutdown(mut self, shutdown: watch::Receiver<bool>) -> App {
        self.shutdown = Some(shutdown);
        self
    }
}
