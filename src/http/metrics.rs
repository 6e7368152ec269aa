//! Request metrics and the `/metrics` page (Prometheus text format 0.0.4).
//!
//! Counters live in fixed arrays indexed by route and status, so recording a
//! request is two relaxed atomic adds and no lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::metrics::{Histogram, LATENCY_BUCKETS, family, sample};
use crate::node::Node;
use crate::raft::ClusterNode;
use crate::store::KvStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    KvGet,
    KvPut,
    KvDelete,
    KvList,
    KvWatch,
    Health,
    Ready,
    Metrics,
    Other,
}

impl Route {
    const ALL: [Route; 9] = [
        Route::KvGet,
        Route::KvPut,
        Route::KvDelete,
        Route::KvList,
        Route::KvWatch,
        Route::Health,
        Route::Ready,
        Route::Metrics,
        Route::Other,
    ];

    fn name(self) -> &'static str {
        match self {
            Route::KvGet => "kv_get",
            Route::KvPut => "kv_put",
            Route::KvDelete => "kv_delete",
            Route::KvList => "kv_list",
            Route::KvWatch => "kv_watch",
            Route::Health => "health",
            Route::Ready => "ready",
            Route::Metrics => "metrics",
            Route::Other => "other",
        }
    }
}

/// Status codes counted one by one: every status walrus's handlers answer.
/// Anything else (hyper's own 431, say) counts as its class.
const STATUSES: [u16; 16] = [
    200, 304, 400, 401, 403, 404, 405, 408, 409, 410, 412, 413, 414, 500, 501, 503,
];
/// The class slots `2xx` to `5xx` follow the known statuses.
const FIRST_CLASS_SLOT: usize = STATUSES.len();
const STATUS_SLOTS: usize = FIRST_CLASS_SLOT + 4;

fn status_slot(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|&known| known == status)
        .unwrap_or(FIRST_CLASS_SLOT + usize::from(status / 100).clamp(2, 5) - 2)
}

fn slot_label(slot: usize) -> String {
    match STATUSES.get(slot) {
        Some(status) => status.to_string(),
        None => format!("{}xx", slot - FIRST_CLASS_SLOT + 2),
    }
}

pub struct HttpMetrics {
    requests: Vec<AtomicU64>,
    latency: Vec<Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: (0..Route::ALL.len() * STATUS_SLOTS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            latency: Route::ALL
                .iter()
                .map(|_| Histogram::new(LATENCY_BUCKETS))
                .collect(),
        }
    }
}

impl HttpMetrics {
    pub fn record(&self, route: Route, status: u16, elapsed: Duration) {
        let route_index = route as usize;
        self.requests[route_index * STATUS_SLOTS + status_slot(status)]
            .fetch_add(1, Ordering::Relaxed);
        self.latency[route_index].observe(elapsed.as_secs_f64());
    }

    /// The whole `/metrics` page: requests, store and log figures.
    pub fn render(&self, node: &Node) -> String {
        let store = &**node.store();
        let mut out = String::with_capacity(16 * 1024);
        family(
            &mut out,
            "walrus_http_requests_total",
            "counter",
            "HTTP requests by route and status.",
        );
        for route in Route::ALL {
            for slot in 0..STATUS_SLOTS {
                let count =
                    self.requests[route as usize * STATUS_SLOTS + slot].load(Ordering::Relaxed);
                if count > 0 {
                    let labels =
                        format!("route=\"{}\",status=\"{}\"", route.name(), slot_label(slot));
                    sample(&mut out, "walrus_http_requests_total", &labels, count);
                }
            }
        }
        family(
            &mut out,
            "walrus_http_request_duration_seconds",
            "histogram",
            "HTTP request latency by route, from request to response.",
        );
        for route in Route::ALL {
            let histogram = &self.latency[route as usize];
            if histogram.count() > 0 {
                let labels = format!("route=\"{}\"", route.name());
                histogram.render(&mut out, "walrus_http_request_duration_seconds", &labels);
            }
        }
        render_store(&mut out, store);
        render_allocator(&mut out);
        if let Some(cluster) = node.cluster() {
            render_cluster(&mut out, &cluster);
        }
        out
    }
}

fn render_cluster(out: &mut String, cluster: &ClusterNode) {
    let status = cluster.status();
    let gauges: [(&str, &str, u64); 11] = [
        ("walrus_raft_term", "The current Raft term.", status.term),
        (
            "walrus_raft_leader_id",
            "The node id of the leader this node knows (0: none).",
            status.leader_id.unwrap_or(0),
        ),
        (
            "walrus_raft_is_leader",
            "1 on the leader.",
            u64::from(status.role == "leader"),
        ),
        (
            "walrus_raft_commit_index",
            "The last log index known committed.",
            status.commit_index,
        ),
        (
            "walrus_raft_applied_index",
            "The last log index applied to the state.",
            status.applied_index,
        ),
        (
            "walrus_raft_snapshot_index",
            "The last log index the newest snapshot covers.",
            status.snapshot_index,
        ),
        (
            "walrus_raft_purged_index",
            "The log is purged up to this index; a follower behind it needs a snapshot.",
            status.purged_index,
        ),
        (
            "walrus_raft_log_bytes_in_memory",
            "Memory the Raft log's unpurged entries take, about.",
            status.log_bytes_in_memory,
        ),
        (
            "walrus_disk_free_bytes",
            "Free bytes on the data directory's disk, as last estimated.",
            status.disk_free_bytes,
        ),
        (
            "walrus_disk_kept_free_bytes",
            "Free bytes a leader keeps (--min-free-space plus room for a snapshot); under it, writes that add data are refused.",
            status.disk_kept_free_bytes,
        ),
        (
            "walrus_raft_refusing_entries",
            "1 while this node refuses its leader's entries for want of disk space.",
            u64::from(status.refusing_entries),
        ),
    ];
    for (name, help, value) in gauges {
        family(out, name, "gauge", help);
        sample(out, name, "", value);
    }
    family(
        out,
        "walrus_raft_follower_lag_entries",
        "gauge",
        "On the leader: entries each follower is behind the leader's log.",
    );
    for (id, matched) in &status.replication {
        let labels = format!("follower=\"{id}\"");
        let lag = status.last_log_index.saturating_sub(*matched);
        sample(out, "walrus_raft_follower_lag_entries", &labels, lag);
    }
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    family(
        out,
        "walrus_raft_forwarded_total",
        "counter",
        "Requests this node forwarded to the leader, by kind.",
    );
    let counters = &cluster.counters;
    sample(
        out,
        "walrus_raft_forwarded_total",
        "kind=\"write\"",
        load(&counters.forwarded_writes),
    );
    sample(
        out,
        "walrus_raft_forwarded_total",
        "kind=\"read_index\"",
        load(&counters.forwarded_reads),
    );
    family(
        out,
        "walrus_raft_snapshots_installed_total",
        "counter",
        "Snapshots received from the leader and installed.",
    );
    sample(
        out,
        "walrus_raft_snapshots_installed_total",
        "",
        load(&counters.snapshots_received),
    );
    family(
        out,
        "walrus_raft_leader_handovers_total",
        "counter",
        "Times this node, leading, handed leadership to another voter, by reason.",
    );
    sample(
        out,
        "walrus_raft_leader_handovers_total",
        "reason=\"disk_space\"",
        load(&counters.handovers_for_space),
    );
    sample(
        out,
        "walrus_raft_leader_handovers_total",
        "reason=\"unreached\"",
        load(&counters.handovers_unreached),
    );
    family(
        out,
        "walrus_pubsub_broadcast_dropped_total",
        "counter",
        "PUBLISHed messages not delivered to another member (its queue was full, or it could not be reached).",
    );
    sample(
        out,
        "walrus_pubsub_broadcast_dropped_total",
        "",
        cluster.broadcast_dropped(),
    );
}

/// The allocator's counts, when the program registered one
/// (`crate::allocator`; the binary registers jemalloc).
fn render_allocator(out: &mut String) {
    let Some(stats) = crate::allocator::stats() else {
        return;
    };
    for (name, help, value) in [
        (
            "walrus_allocator_allocated_bytes",
            "Bytes the allocator has handed out and not had back (INFO's used_memory).",
            stats.allocated,
        ),
        (
            "walrus_allocator_active_bytes",
            "Bytes in the allocator's pages in use, the gaps between allocations included.",
            stats.active,
        ),
        (
            "walrus_allocator_resident_bytes",
            "Bytes the allocator holds resident, its metadata and unreturned free pages included.",
            stats.resident,
        ),
    ] {
        family(out, name, "gauge", help);
        sample(out, name, "", value);
    }
}

fn render_store(out: &mut String, store: &dyn KvStore) {
    family(
        out,
        "walrus_keys",
        "gauge",
        "Keys stored (expired ones not yet removed included).",
    );
    sample(out, "walrus_keys", "", store.len());
    family(
        out,
        "walrus_data_bytes",
        "gauge",
        "Bytes of keys and values stored.",
    );
    sample(out, "walrus_data_bytes", "", store.data_bytes());
    family(
        out,
        "walrus_revision",
        "gauge",
        "The store-wide revision counter.",
    );
    sample(out, "walrus_revision", "", store.revision());
    if let Some(feed) = store.changes() {
        family(
            out,
            "walrus_watchers",
            "gauge",
            "Watch streams open now (?watch=true).",
        );
        sample(out, "walrus_watchers", "", feed.watchers());
        let (oldest, _) = feed.bounds();
        family(
            out,
            "walrus_watch_oldest_revision",
            "gauge",
            "The oldest revision a watch can start after (older is 410 Gone).",
        );
        sample(out, "walrus_watch_oldest_revision", "", oldest);
    }
    family(
        out,
        "walrus_storage_failed",
        "gauge",
        "1 once the log has failed and writes are refused.",
    );
    sample(
        out,
        "walrus_storage_failed",
        "",
        u8::from(store.failure().is_some()),
    );
    let Some(stats) = store.stats() else {
        return;
    };
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    family(
        out,
        "walrus_wal_fsync_duration_seconds",
        "histogram",
        "Time to make a group commit durable: write and fdatasync, or one O_DIRECT|O_DSYNC write.",
    );
    stats
        .sync_latency
        .render(out, "walrus_wal_fsync_duration_seconds", "");
    family(
        out,
        "walrus_wal_group_commit_records",
        "histogram",
        "Records written per group commit.",
    );
    stats
        .batch_size
        .render(out, "walrus_wal_group_commit_records", "");
    family(
        out,
        "walrus_wal_bytes_total",
        "counter",
        "Bytes appended to the log.",
    );
    sample(out, "walrus_wal_bytes_total", "", load(&stats.log_bytes));
    family(
        out,
        "walrus_wal_segments",
        "gauge",
        "Log segment files on disk.",
    );
    sample(out, "walrus_wal_segments", "", load(&stats.segments));
    family(
        out,
        "walrus_snapshots_total",
        "counter",
        "Snapshots written.",
    );
    sample(out, "walrus_snapshots_total", "", load(&stats.snapshots));
    family(
        out,
        "walrus_snapshot_duration_seconds_total",
        "counter",
        "Time spent writing snapshots.",
    );
    sample(
        out,
        "walrus_snapshot_duration_seconds_total",
        "",
        load(&stats.snapshot_nanos) as f64 / 1e9,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_get_their_own_slot_or_their_class() {
        assert_eq!(slot_label(status_slot(200)), "200");
        assert_eq!(slot_label(status_slot(412)), "412");
        assert_eq!(slot_label(status_slot(201)), "2xx");
        assert_eq!(slot_label(status_slot(302)), "3xx");
        assert_eq!(slot_label(status_slot(418)), "4xx");
        assert_eq!(slot_label(status_slot(431)), "4xx");
        assert_eq!(slot_label(status_slot(410)), "410");
        assert_eq!(slot_label(status_slot(503)), "503");
        assert_eq!(slot_label(status_slot(504)), "5xx");
        let labels: std::collections::HashSet<String> = (0..STATUS_SLOTS).map(slot_label).collect();
        assert_eq!(labels.len(), STATUS_SLOTS, "every slot has its own label");
    }
}
