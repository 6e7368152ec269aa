use std::sync::atomic::Ordering;

use super::*;
use crate::client::test_server::{Options, TestServer};

/// A short run against `url`, bounded by a request count rather than time.
fn config(url: String, style: Style, mix: &str, max_requests: u64) -> HttpBenchConfig {
    HttpBenchConfig {
        endpoints: vec![url],
        connections: 4,
        duration: Duration::from_secs(5),
        warmup: Duration::ZERO,
        value_size: 16,
        mix: mix.parse().unwrap(),
        key_space: 20,
        style,
        max_requests: Some(max_requests),
        ..HttpBenchConfig::default()
    }
}

fn op<'a>(report: &'a HttpBenchReport, name: &str) -> &'a OpReport {
    report.ops.iter().find(|op| op.row.name == name).unwrap()
}

#[tokio::test]
async fn walrus_mix_writes_the_keys_then_counts_every_request() {
    let server = TestServer::start(Options::default()).await;
    let report = run(&config(server.url(), Style::Walrus, "1:3", 400))
        .await
        .unwrap();
    assert_eq!(report.prepopulated, 20);
    assert_eq!(server.state.data.lock().len(), 20);
    let (put, get) = (op(&report, "walrus PUT"), op(&report, "walrus GET"));
    assert_eq!(put.row.operations + get.row.operations, 400);
    assert!(put.row.operations > 50 && get.row.operations > 200);
    assert_eq!(put.errors + get.errors, 0);
    assert_eq!(get.statuses.get(&200), Some(&get.row.operations));
    assert!(get.row.latency.p99_us > 0.0);
    // 20 prepopulating writes and 400 measured requests: nothing else.
    assert_eq!(server.state.requests.load(Ordering::Relaxed), 420);
    let timeline_ops: f64 = report.timeline.iter().map(|point| point.ops_per_sec).sum();
    assert!(timeline_ops > 0.0);
}

#[tokio::test]
async fn write_only_runs_skip_prepopulation_and_stop_on_time() {
    let server = TestServer::start(Options::default()).await;
    let mut config = config(server.url(), Style::Walrus, "1:0", 0);
    config.max_requests = None;
    config.duration = Duration::from_millis(300);
    config.warmup = Duration::from_millis(100);
    let report = run(&config).await.unwrap();
    assert_eq!(report.prepopulated, 0);
    assert_eq!(report.ops.len(), 1);
    let put = &report.ops[0];
    assert!(put.row.operations > 0 && put.errors == 0);
    assert!(report.duration_seconds >= 0.3 && report.duration_seconds < 1.5);
    assert_eq!(report.timeline.len(), 1);
    // Warm-up requests reached the server but are not in the report.
    assert!(server.state.requests.load(Ordering::Relaxed) > put.row.operations);
}

#[tokio::test]
async fn etcd_style_speaks_the_json_gateway() {
    let server = TestServer::start(Options::default()).await;
    let report = run(&config(server.url(), Style::Etcd, "1:1", 100))
        .await
        .unwrap();
    // Every key is under the bench's own prefix.
    let data = server.state.data.lock();
    assert!(data.contains_key(&b"walrus-bench:0"[..]));
    assert!(data.keys().all(|key| key.starts_with(b"walrus-bench:")));
    drop(data);
    let total: u64 = report.ops.iter().map(|op| op.row.operations).sum();
    assert_eq!(total, 100);
    assert!(report.ops.iter().all(|op| op.errors == 0));
}

#[tokio::test]
async fn static_style_gets_the_endpoint_path() {
    let server = TestServer::start(Options::default()).await;
    let url = format!("{}/index.html", server.url());
    let report = run(&config(url, Style::Static, "1:0", 50)).await.unwrap();
    assert_eq!(report.ops.len(), 1);
    assert_eq!(report.ops[0].row.name, "static GET");
    assert_eq!(report.ops[0].statuses.get(&200), Some(&50));
    assert_eq!(server.state.data.lock().len(), 0);
}

#[tokio::test]
async fn error_statuses_are_counted_not_timed() {
    let server = TestServer::start(Options {
        token: Some("secret".into()),
        ..Options::default()
    })
    .await;
    let report = run(&config(server.url(), Style::Walrus, "1:0", 30))
        .await
        .unwrap();
    let put = &report.ops[0];
    assert_eq!((put.row.operations, put.errors), (0, 30));
    assert_eq!(put.statuses.get(&401), Some(&30));
    assert!(put.first_error.as_deref().unwrap().contains("401"));
    assert!(report.render().contains("401 ×30"));

    let reads = run(&config(server.url(), Style::Walrus, "0:1", 30)).await;
    let message = format!("{:#}", reads.unwrap_err());
    assert!(
        message.contains("writing key") && message.contains("401"),
        "{message}"
    );

    let mut authorized = config(server.url(), Style::Walrus, "1:0", 30);
    authorized.token = Some("secret".into());
    assert_eq!(run(&authorized).await.unwrap().ops[0].errors, 0);
}

#[tokio::test]
async fn missing_keys_are_hits_only_without_prepopulation() {
    let server = TestServer::start(Options::default()).await;
    let mut config = config(server.url(), Style::Walrus, "0:1", 40);
    config.prepopulate = false;
    let report = run(&config).await.unwrap();
    let get = &report.ops[0];
    assert_eq!((get.row.operations, get.errors), (40, 0));
    assert_eq!(get.statuses.get(&404), Some(&40));
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_the_run_at_once() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let error = run(&config(url, Style::Walrus, "1:0", 10))
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("cannot reach"), "{error:#}");
}

#[tokio::test]
async fn spreads_connections_and_samples_rss() {
    let (first, second) = (
        TestServer::start(Options::default()).await,
        TestServer::start(Options::default()).await,
    );
    let mut config = config(first.url(), Style::Walrus, "1:0", 200);
    config.endpoints.push(second.url());
    config.pid = Some(std::process::id());
    let report = run(&config).await.unwrap();
    for server in [&first, &second] {
        assert_eq!(
            server.state.connections.load(Ordering::Relaxed),
            3,
            "probe + 2 workers"
        );
    }
    let rss = report.rss.as_ref().unwrap();
    assert!(rss.start_bytes > 0 && rss.peak_bytes >= rss.end_bytes);
    assert!(report.render().contains("server RSS"));
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["ops"][0]["name"], "walrus PUT");
    assert!(json["ops"][0]["latency"]["p99_us"].is_number());
    assert!(json["timeline"][0]["rss_bytes"].is_number());
}

#[test]
fn validates_the_config() {
    assert!(HttpBenchConfig::default().validate().is_ok());
    let bad = [
        HttpBenchConfig {
            endpoints: vec![],
            ..HttpBenchConfig::default()
        },
        HttpBenchConfig {
            connections: 0,
            ..HttpBenchConfig::default()
        },
        HttpBenchConfig {
            duration: Duration::ZERO,
            ..HttpBenchConfig::default()
        },
        HttpBenchConfig {
            key_space: 0,
            ..HttpBenchConfig::default()
        },
        HttpBenchConfig {
            mix: Mix { put: 0, get: 0 },
            ..HttpBenchConfig::default()
        },
    ];
    for config in bad {
        assert!(config.validate().is_err(), "{config:?}");
    }
}

#[test]
fn splits_the_request_budget() {
    let shares: Vec<u64> = (0..4).map(|index| share(10, 4, index)).collect();
    assert_eq!(shares, [3, 3, 2, 2]);
    assert_eq!((0..3).map(|index| share(2, 3, index)).sum::<u64>(), 2);
}
