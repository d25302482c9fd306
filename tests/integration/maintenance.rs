//! Maintenance: status, defragment, hash/hashKV, alarms, snapshot; gRPC health; auth disabled.

use etcd_client::{AlarmAction, AlarmType, GetOptions};
use tonic::Code;

use crate::common::*;
use crate::support::Server;

#[tokio::test]
async fn status_reports_version_db_size_leader_and_raft_state() {
    let (_s, mut c) = start().await;
    let rev = put(&mut c, "k", "v").await;
    let st = c.status().await.unwrap();
    let h = st.header().unwrap();
    assert_eq!(
        h.revision(),
        rev,
        "status header carries the store revision"
    );
    assert_ne!(h.member_id(), 0);
    assert!(h.raft_term() >= 1);
    assert_eq!(st.leader(), h.member_id(), "single node leads itself");
    assert!(st.raft_term() >= 1);
    assert_eq!(st.raft_term(), h.raft_term());
    assert!(st.raft_index() >= 1);
    assert!(st.db_size() > 0, "db_size {}", st.db_size());
    let v = st.version();
    let parts: Vec<u64> = v
        .split('.')
        .map(|p| p.parse().unwrap_or_else(|_| panic!("bad version {v:?}")))
        .collect();
    assert_eq!(parts.len(), 3, "version {v:?} is major.minor.patch");
    assert_eq!(parts[0], 3);

    // raft_index grows with writes.
    let idx = st.raft_index();
    for i in 0..3 {
        put(&mut c, &format!("k{i}"), "v").await;
    }
    let st = c.status().await.unwrap();
    assert!(st.raft_index() >= idx + 3, "{} -> {}", idx, st.raft_index());
}

fn version_at_least(v: &str, want: (u64, u64, u64)) -> bool {
    let p: Vec<u64> = v.split('.').map(|p| p.parse().unwrap()).collect();
    (p[0], p[1], p[2]) >= want
}

#[tokio::test]
async fn status_version_enables_kube_progress_requests() {
    if skip_on_etcd("status_version_enables_kube_progress_requests") {
        return;
    }
    let (_s, mut c) = start().await;
    let v = c.status().await.unwrap().version().to_string();
    assert!(
        version_at_least(&v, (3, 5, 13)),
        "default version {v} must be >= 3.5.13 for kube-apiserver's progress requests"
    );
    let s = Server::raftkine_with(&["--emulated-etcd-version", "3.5.21"]);
    let mut c = s.client().await;
    assert_eq!(c.status().await.unwrap().version(), "3.5.21");
}

#[tokio::test]
async fn defragment_keeps_data() {
    let (_s, mut c) = start().await;
    for i in 0..50 {
        put(&mut c, &format!("d/{i}"), &"x".repeat(1000)).await;
    }
    c.delete("d/", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    let rev = put(&mut c, "keep", "me").await;
    c.compact(rev, None).await.unwrap();
    c.defragment().await.unwrap();
    let g = c.get("keep", None).await.unwrap();
    assert_eq!(values_of(g.kvs()), ["me"]);
    assert_eq!(hrev(g.header()), rev);
    assert!(c.status().await.unwrap().db_size() > 0);
}

#[tokio::test]
async fn hash_and_hash_kv() {
    let (_s, mut c) = start().await;
    put(&mut c, "a", "1").await;
    let rev = put(&mut c, "b", "1").await;
    let h1 = c.hash_kv(0).await.unwrap();
    assert_eq!(hrev(h1.header()), rev);
    let h2 = c.hash_kv(0).await.unwrap();
    assert_eq!(h1.hash(), h2.hash(), "no writes, same hash");
    let at = c.hash_kv(rev).await.unwrap();
    assert_eq!(at.hash(), h1.hash());
    let before = c.hash_kv(rev - 1).await.unwrap();
    assert_ne!(
        before.hash(),
        h1.hash(),
        "a different history hashes differently"
    );

    put(&mut c, "c", "1").await;
    let h3 = c.hash_kv(0).await.unwrap();
    assert_ne!(h3.hash(), h1.hash());
    // The hash at an old revision does not change with later writes.
    assert_eq!(c.hash_kv(rev).await.unwrap().hash(), h1.hash());

    assert_status(
        c.hash_kv(rev + 100).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    c.compact(rev, None).await.unwrap();
    assert_status(
        c.hash_kv(rev - 1).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    let hc = c.hash_kv(0).await.unwrap();
    assert_eq!(hc.compact_version(), rev);

    let h = c.hash().await.unwrap();
    assert!(h.header().is_some());
    let h2 = c.hash().await.unwrap();
    assert_eq!(h.hash(), h2.hash(), "no writes, same whole-store hash");
}

#[tokio::test]
async fn alarm_list_is_empty() {
    let (_s, mut c) = start().await;
    let r = c
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .unwrap();
    assert!(
        r.alarms().is_empty(),
        "{:?}",
        r.alarms().iter().map(|a| a.alarm()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn snapshot_stream_produces_bytes() {
    let (_s, mut c) = start().await;
    for i in 0..20 {
        put(&mut c, &format!("s/{i}"), "value").await;
    }
    let mut stream = c.snapshot().await.unwrap();
    let mut total = 0usize;
    let mut last_remaining = None;
    let mut messages = 0;
    while let Some(m) = stream.message().await.unwrap() {
        total += m.blob().len();
        last_remaining = Some(m.remaining_bytes());
        messages += 1;
    }
    assert!(messages >= 1);
    assert!(total > 0, "snapshot is empty");
    assert_eq!(
        last_remaining,
        Some(0),
        "last message has remaining_bytes 0"
    );
}

#[tokio::test]
async fn etcdctl_snapshot_save_accepts_the_stream() {
    let (s, mut c) = start().await;
    put(&mut c, "k", "v").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap.db");
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(&s.endpoint)
        .arg("snapshot")
        .arg("save")
        .arg(&file)
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl snapshot save failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&file).unwrap().len() > 0);
}

#[tokio::test]
async fn grpc_health_service_serving() {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let (s, _c) = start().await;
    let ch = tonic::transport::Channel::from_shared(s.endpoint.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut h = HealthClient::new(ch);
    let r = h
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status(), ServingStatus::Serving);
}

#[tokio::test]
async fn authentication_is_not_enabled() {
    let (s, mut c) = start().await;
    let r = etcd_client::Client::connect(
        [s.endpoint.as_str()],
        Some(etcd_client::ConnectOptions::new().with_user("root", "secret")),
    )
    .await;
    assert_status(
        r.map(|_| ()),
        Code::FailedPrecondition,
        "etcdserver: authentication is not enabled",
    );
    // Requests without credentials work.
    c.get("k", Some(GetOptions::new())).await.unwrap();
}

#[tokio::test]
async fn quota_exceeded_raises_nospace_alarm() {
    if skip_on_etcd("quota_exceeded_raises_nospace_alarm") {
        return;
    }
    let s = Server::raftkine_with(&["--quota-backend-bytes", "8388608"]);
    let mut c = s.client().await;
    let big = "q".repeat(64 * 1024);
    let mut err = None;
    for i in 0..2000 {
        if let Err(e) = c.put(format!("q/{i}"), big.clone(), None).await {
            err = Some(e);
            break;
        }
    }
    let e = status_of(err.expect("an 8 MiB quota never filled after 128 MiB of puts"));
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert_eq!(e.message(), "etcdserver: mvcc: database space exceeded");
    let r = c
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .unwrap();
    assert!(
        r.alarms().iter().any(|a| a.alarm() == AlarmType::Nospace),
        "NOSPACE alarm expected: {:?}",
        r.alarms().iter().map(|a| a.alarm()).collect::<Vec<_>>()
    );
    // Writes refused, reads served.
    assert_status(
        c.put("more", "x", None).await,
        Code::ResourceExhausted,
        "etcdserver: mvcc: database space exceeded",
    );
    let g = c
        .get(
            "q/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert!(g.count() > 0);
    c.get("q/0", None).await.unwrap();
}
