//! The metrics listener: `/metrics` scraped over HTTP and read with a Prometheus text parser
//! after a workload (etcd's metric names, gRPC counters per method and code), and etcd's
//! `/health` / `/readyz` answers as alarms come and go.

use std::time::Duration;

use etcd_client::{AlarmAction, AlarmOptions, AlarmType, GetOptions, WatchOptions};
use prometheus_parse::{Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;
use crate::support::{free_port, Server};

/// Alarm options naming a member.
pub fn for_member(member: u64) -> AlarmOptions {
    let mut options = AlarmOptions::new();
    options.with_member(member);
    options
}

/// A plain HTTP/1.1 GET: (status code, content type, body).
pub async fn http_get(addr: &str, path: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = vec![];
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .unwrap_or_else(|_| panic!("GET {path} on {addr}: no answer within 10 s"))
        .unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad HTTP answer: {head}"));
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

/// The metrics of the member listening on `addr`, parsed.
pub async fn scrape(addr: &str) -> Metrics {
    let (status, content_type, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "/metrics answered {status}: {body}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "content type {content_type:?}"
    );
    let lines = body.lines().map(|l| Ok(l.to_string()));
    Metrics {
        scrape: Scrape::parse(lines).unwrap_or_else(|e| panic!("unparsable metrics: {e}\n{body}")),
    }
}

/// A parsed scrape with lookups by name and labels.
pub struct Metrics {
    pub scrape: Scrape,
}

impl Metrics {
    /// Samples named `name` whose labels include all of `labels`.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&prometheus_parse::Sample> {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .collect()
    }

    /// The value of a counter, gauge or untyped sample (the sum over matching samples); `None`
    /// if there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found = self.find(name, labels);
        if found.is_empty() {
            return None;
        }
        Some(
            found
                .iter()
                .map(|s| match &s.value {
                    Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                    other => panic!("{name} is not a plain value: {other:?}"),
                })
                .sum(),
        )
    }

    /// Like [`Metrics::value`], panicking with the metric names when missing.
    #[track_caller]
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or_else(|| {
            let mut names: Vec<_> = self.scrape.samples.iter().map(|s| &s.metric).collect();
            names.sort();
            names.dedup();
            panic!("no {name} {labels:?} in the scrape; metrics: {names:?}")
        })
    }

    /// Observations of a histogram (its +Inf bucket), summed over matching label sets.
    #[track_caller]
    pub fn observations(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found = self.find(name, labels);
        assert!(!found.is_empty(), "no histogram {name} {labels:?}");
        found
            .iter()
            .map(|s| match &s.value {
                Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .sum()
    }
}

/// The metrics address a node logged when started with `--metrics-listen 127.0.0.1:0`.
pub fn logged_metrics_addr(log: &str) -> Option<String> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("serving metrics and health on http://"))?;
    let at = line.find("http://")? + "http://".len();
    Some(line[at..].split_whitespace().next()?.to_string())
}

/// A single raftkine with a metrics listener on a free port: (server, metrics address).
fn with_metrics(extra: &[&str]) -> (Server, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--metrics-listen", addr.as_str()];
    args.extend_from_slice(extra);
    (Server::raftkine_with(&args), addr)
}

fn grpc(method: &str, code: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grpc_service", "etcdserverpb.KV".to_string()),
        ("grpc_method", method.to_string()),
        ("grpc_code", code.to_string()),
        ("grpc_type", "unary".to_string()),
    ]
}

fn labels<'a>(l: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    l.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn metrics_follow_a_workload() {
    if skip_on_etcd("metrics_follow_a_workload") {
        return;
    }
    let (s, addr) = with_metrics(&[]);
    let mut c = s.client().await;
    let before = scrape(&addr).await;
    let range_ok_before = before
        .value("grpc_server_handled_total", &labels(&grpc("Range", "OK")))
        .unwrap_or(0.0);

    // A watcher that stays open during the scrape.
    let mut events = c
        .watch("m/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    // The stream is open once watch() returns; the watcher exists once "created" arrives
    // (puts before it would not be its events).
    expect_created(&mut events).await;
    for i in 0..10 {
        put(&mut c, &format!("m/{i}"), "v").await;
    }
    put(&mut c, "m/0", "again").await;
    c.delete("m/9", None).await.unwrap();
    for i in 0..10 {
        c.get(format!("m/{i}"), None).await.unwrap();
    }
    let rev = current_rev(&mut c).await;
    assert_status(
        c.get("m/0", Some(GetOptions::new().with_revision(rev + 100)))
            .await,
        tonic::Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    // The watcher got the writes (so the lag histogram has observations).
    let mut seen = 0;
    while seen < 12 {
        let r = tokio::time::timeout(Duration::from_secs(5), events.message())
            .await
            .expect("watch events")
            .unwrap()
            .expect("watch stream open");
        seen += r.events().len();
    }

    let m = scrape(&addr).await;
    assert_eq!(m.get("etcd_server_has_leader", &[]), 1.0);
    assert_eq!(m.get("etcd_server_is_leader", &[]), 1.0);
    assert!(m.get("etcd_server_leader_changes_seen_total", &[]) >= 1.0);
    let committed = m.get("etcd_server_proposals_committed_total", &[]);
    let applied = m.get("etcd_server_proposals_applied_total", &[]);
    assert!(applied >= 12.0, "applied {applied}");
    assert!(
        applied <= committed,
        "applied {applied} > committed {committed}"
    );
    assert!(
        committed > before.get("etcd_server_proposals_committed_total", &[]),
        "the commit index did not move"
    );
    assert_eq!(m.get("etcd_server_proposals_pending", &[]), 0.0);
    assert_eq!(m.get("etcd_server_proposals_failed_total", &[]), 0.0);
    assert!(m.get("etcd_mvcc_db_total_size_in_bytes", &[]) > 0.0);
    assert!(m.get("etcd_mvcc_db_total_size_in_use_in_bytes", &[]) > 0.0);
    assert!(m.get("raftkine_sled_size_bytes", &[]) > 0.0);
    assert_eq!(m.get("etcd_server_quota_backend_bytes", &[]), 2147483648.0);
    assert_eq!(
        m.get("etcd_debugging_mvcc_keys_total", &[]),
        9.0,
        "10 keys put, one overwritten, one deleted"
    );
    for histogram in [
        "etcd_disk_wal_fsync_duration_seconds",
        "etcd_disk_backend_commit_duration_seconds",
        "raftkine_apply_duration_seconds",
    ] {
        let n = m.observations(histogram, &[]);
        let was = before.observations(histogram, &[]);
        assert!(n >= was + 12.0, "{histogram}: {was} -> {n} after 12 writes");
    }
    assert!(m.observations("raftkine_watch_lag_revisions", &[]) >= 12.0);
    assert_eq!(m.get("raftkine_watchers", &[]), 1.0);
    assert_eq!(m.get("raftkine_watch_streams", &[]), 1.0);
    assert!(m.get("process_resident_memory_bytes", &[]) > 0.0);

    // gRPC counters: per method and code, as go-grpc-prometheus.
    let range_ok = m.get("grpc_server_handled_total", &labels(&grpc("Range", "OK")));
    assert!(
        range_ok >= range_ok_before + 11.0,
        "Range OK {range_ok_before} -> {range_ok}"
    );
    assert!(m.get("grpc_server_handled_total", &labels(&grpc("Put", "OK"))) >= 11.0);
    assert!(
        m.get(
            "grpc_server_handled_total",
            &labels(&grpc("DeleteRange", "OK"))
        ) >= 1.0
    );
    assert!(
        m.get(
            "grpc_server_handled_total",
            &labels(&grpc("Range", "OutOfRange"))
        ) >= 1.0
    );
    let started_range = m.get(
        "grpc_server_started_total",
        &[
            ("grpc_service", "etcdserverpb.KV"),
            ("grpc_method", "Range"),
            ("grpc_type", "unary"),
        ],
    );
    let handled_range = m.get(
        "grpc_server_handled_total",
        &[
            ("grpc_service", "etcdserverpb.KV"),
            ("grpc_method", "Range"),
        ],
    );
    assert!(
        started_range >= handled_range && handled_range >= range_ok,
        "started {started_range}, handled {handled_range}"
    );
    // The watch stream is started and not handled while it is open.
    assert_eq!(
        m.get(
            "grpc_server_started_total",
            &[("grpc_method", "Watch"), ("grpc_type", "bidi_stream")]
        ),
        1.0
    );
    assert_eq!(
        m.value("grpc_server_handled_total", &[("grpc_method", "Watch")]),
        None
    );
}

#[tokio::test]
async fn health_and_readyz_follow_alarms() {
    if skip_on_etcd("health_and_readyz_follow_alarms") {
        return;
    }
    let (s, addr) = with_metrics(&[]);
    let mut c = s.client().await;
    let healthy = r#"{"health":"true","reason":""}"#;
    for path in ["/health", "/readyz", "/health?serializable=true"] {
        let (status, content_type, body) = http_get(&addr, path).await;
        assert_eq!((status, body.as_str()), (200, healthy), "{path}");
        assert_eq!(content_type, "application/json");
    }
    let member = c.status().await.unwrap().header().unwrap().member_id();
    c.alarm(
        AlarmAction::Activate,
        AlarmType::Nospace,
        Some(for_member(member)),
    )
    .await
    .unwrap();
    let unhealthy = r#"{"health":"false","reason":"ALARM NOSPACE"}"#;
    for path in ["/health", "/readyz"] {
        let (status, _, body) = http_get(&addr, path).await;
        assert_eq!((status, body.as_str()), (503, unhealthy), "{path}");
    }
    // etcd's exclusion of an alarm.
    let (status, _, body) = http_get(&addr, "/health?exclude=NOSPACE").await;
    assert_eq!((status, body.as_str()), (200, healthy));
    let m = scrape(&addr).await;
    assert_eq!(m.get("raftkine_alarms_active", &[]), 1.0);

    c.alarm(
        AlarmAction::Deactivate,
        AlarmType::Nospace,
        Some(for_member(member)),
    )
    .await
    .unwrap();
    let (status, _, body) = http_get(&addr, "/health").await;
    assert_eq!((status, body.as_str()), (200, healthy));
    let (status, _, _) = http_get(&addr, "/nope").await;
    assert_eq!(status, 404);
    let (status, _, body) = http_get(&addr, "/livez").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

#[tokio::test]
async fn metrics_listener_is_off_by_default_and_flags_parse() {
    if skip_on_etcd("metrics_listener_is_off_by_default_and_flags_parse") {
        return;
    }
    // etcd's flag name, and k8s-dqlite's boolean with an explicit value.
    let addr = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{addr}");
    let s = Server::raftkine_with(&["--listen-metrics-urls", &url, "--metrics=true"]);
    let (status, _, _) = http_get(&addr, "/health").await;
    assert_eq!(status, 200);
    drop(s);
    let s = Server::raftkine_with(&[]);
    assert!(
        !s.log().contains("serving metrics"),
        "metrics served without being asked:\n{}",
        s.log()
    );
}
