//! The disk guard (`--watch-storage-available-size-*`, `--low-available-storage-action`): with
//! the storage dir on a real 64 MiB tmpfs filled by a ballast file when the test may mount one
//! (root), else through the test probe (`--test-available-bytes-file`). Low space raises the
//! NOSPACE alarm: writes are refused with etcd's error, reads keep working, no acknowledged write
//! is lost; the alarm stays until disarmed and comes back while space is still low. `handover`
//! moves leadership away on a 3-node cluster; `terminate` stops the member cleanly.
//! (`RAFTKINE_TEST_NO_TMPFS=1` forces the probe where a tmpfs could be mounted.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{AlarmAction, AlarmType, Client, GetOptions};
use tonic::Code;

use crate::cluster_ha::{options, start};
use crate::common::*;
use crate::monitoring::{for_member, http_get, logged_metrics_addr, scrape};
use crate::support::{free_port, raftkine_bin, Server};

/// The guard's threshold in these tests.
const MIN_BYTES: u64 = 16 * 1024 * 1024;
const NOSPACE: &str = "etcdserver: mvcc: database space exceeded";

/// How the test makes free space run low.
enum Space {
    /// A tmpfs mounted by the test holds the storage dir; a ballast file eats its free space.
    Tmpfs {
        mount: PathBuf,
        _dir: tempfile::TempDir,
    },
    /// The test probe: a file in the storage dir holds the free bytes the guard sees.
    Probe,
}

impl Space {
    /// A 64 MiB tmpfs when this process may mount one, else the probe.
    fn new() -> Space {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("fs");
        std::fs::create_dir_all(&mount).unwrap();
        // RAFTKINE_TEST_NO_TMPFS=1 runs the probe variant where a tmpfs could be mounted.
        let mounted = std::env::var_os("RAFTKINE_TEST_NO_TMPFS").is_none()
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
                .arg(&mount)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if mounted {
            Space::Tmpfs { mount, _dir: dir }
        } else {
            eprintln!("disk_guard: no tmpfs (cannot mount one, or RAFTKINE_TEST_NO_TMPFS is set); using the free-space probe");
            Space::Probe
        }
    }

    fn start_server(&self, extra: &[&str]) -> Server {
        let mut args = vec![
            "--watch-storage-available-size-interval",
            "100ms",
            "--watch-storage-available-size-min-bytes",
            "16777216",
        ];
        args.extend_from_slice(extra);
        match self {
            Space::Tmpfs { mount, .. } => Server::raftkine_at(mount.join("data"), &args),
            Space::Probe => {
                args.extend_from_slice(&["--test-available-bytes-file", "avail"]);
                Server::raftkine_with(&args)
            }
        }
    }

    /// Leaves half the threshold free.
    fn make_low(&self, server: &Server) {
        match self {
            Space::Tmpfs { mount, .. } => {
                let free = raftkine::disk_guard::statvfs_available(mount).unwrap();
                let fill = free.saturating_sub(MIN_BYTES / 2) as usize;
                std::fs::write(mount.join("ballast"), vec![0u8; fill]).unwrap();
            }
            Space::Probe => set_probe(&server.data_dir, MIN_BYTES / 2),
        }
    }

    fn make_plenty(&self, server: &Server) {
        match self {
            Space::Tmpfs { mount, .. } => std::fs::remove_file(mount.join("ballast")).unwrap(),
            Space::Probe => set_probe(&server.data_dir, 1 << 40),
        }
    }
}

impl Drop for Space {
    fn drop(&mut self) {
        if let Space::Tmpfs { mount, .. } = self {
            let _ = Command::new("umount").arg("-l").arg(&*mount).status();
        }
    }
}

/// Writes the free bytes the probe reports for the member with this storage dir.
fn set_probe(storage_dir: &Path, bytes: u64) {
    let tmp = storage_dir.join("avail.tmp");
    std::fs::write(&tmp, bytes.to_string()).unwrap();
    std::fs::rename(&tmp, storage_dir.join("avail")).unwrap();
}

async fn alarms(c: &mut Client) -> Vec<(u64, AlarmType)> {
    c.alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .unwrap()
        .alarms()
        .iter()
        .map(|a| (a.member_id(), a.alarm()))
        .collect()
}

/// Polls until the NOSPACE alarm is (or is not) raised.
async fn wait_nospace(c: &mut Client, raised: bool, timeout: Duration) {
    let t = Instant::now();
    loop {
        let now = alarms(c).await.iter().any(|a| a.1 == AlarmType::Nospace);
        if now == raised {
            return;
        }
        assert!(
            t.elapsed() < timeout,
            "NOSPACE alarm raised={now}, wanted {raised}, after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `raftkine ARGS...`: its stdout, panicking on failure.
fn raftkine(args: &[&str]) -> String {
    let out = Command::new(raftkine_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "raftkine {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into()
}

/// Puts `w/N` keys one after the other until stopped; returns the acknowledged ones and the
/// numbers of the refused ones.
fn spawn_writer(
    mut c: Client,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(BTreeMap<String, String>, Vec<usize>)> {
    tokio::spawn(async move {
        let mut acked = BTreeMap::new();
        let mut refused = vec![];
        let mut n = 0;
        while !stop.load(Ordering::Acquire) {
            let (key, value) = (format!("w/{n:05}"), format!("v{n}"));
            match c.put(key.clone(), value.clone(), None).await {
                Ok(_) => {
                    acked.insert(key, value);
                }
                Err(e) => {
                    let s = status_of(e);
                    assert_eq!((s.code(), s.message()), (Code::ResourceExhausted, NOSPACE));
                    refused.push(n);
                }
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (acked, refused)
    })
}

#[tokio::test]
async fn low_disk_space_refuses_writes_until_disarmed() {
    if skip_on_etcd("low_disk_space_refuses_writes_until_disarmed") {
        return;
    }
    let space = Space::new();
    let metrics = format!("127.0.0.1:{}", free_port());
    let s = space.start_server(&["--metrics-listen", &metrics]);
    let endpoint = format!("127.0.0.1:{}", s.port);
    let mut c = s.client().await;
    for i in 0..20 {
        put(&mut c, &format!("d/{i:02}"), "before").await;
    }
    let member = c.status().await.unwrap().header().unwrap().member_id();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(s.client().await, stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Free space runs low: the guard raises NOSPACE through raft.
    space.make_low(&s);
    wait_nospace(&mut c, true, Duration::from_secs(5)).await;
    assert_eq!(alarms(&mut c).await, vec![(member, AlarmType::Nospace)]);
    assert_status(
        c.put("refused", "x", None).await,
        Code::ResourceExhausted,
        NOSPACE,
    );
    assert_status(
        c.txn(etcd_client::Txn::new().and_then([etcd_client::TxnOp::put("t", "x", None)]))
            .await,
        Code::ResourceExhausted,
        NOSPACE,
    );
    // Reads and deletes keep working.
    let got = c
        .get("d/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(got.kvs().len(), 20);
    c.delete("d/19", None).await.unwrap();
    let m = scrape(&metrics).await;
    assert!(m.get("raftkine_storage_available_bytes", &[]) < MIN_BYTES as f64);
    let (status, _, body) = http_get(&metrics, "/health").await;
    assert_eq!(
        (status, body.as_str()),
        (503, r#"{"health":"false","reason":"ALARM NOSPACE"}"#)
    );
    let status_json: serde_json::Value = serde_json::from_str(&raftkine(&[
        "status",
        "--endpoint",
        &endpoint,
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        status_json["alarms"],
        serde_json::json!([format!("memberID:{member} alarm:NOSPACE")])
    );
    assert!(status_json["leader_changes"].as_u64() >= Some(1));
    assert!(status_json["db_size"].as_i64() > Some(0));

    // Disarmed while space is still low: the guard raises it again.
    let disarmed = raftkine(&["alarm", "disarm", "--endpoint", &endpoint]);
    assert_eq!(disarmed.trim(), format!("memberID:{member} alarm:NOSPACE"));
    wait_nospace(&mut c, true, Duration::from_secs(5)).await;
    assert_status(
        c.put("refused", "x", None).await,
        Code::ResourceExhausted,
        NOSPACE,
    );

    // Space comes back; disarming then lets writes through, and the alarm stays off.
    space.make_plenty(&s);
    let t = Instant::now();
    while scrape(&metrics)
        .await
        .get("raftkine_storage_available_bytes", &[])
        < MIN_BYTES as f64
    {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the guard never saw the space back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = raftkine(&["alarm", "list", "--endpoint", &endpoint]);
    assert_eq!(listed.trim(), format!("memberID:{member} alarm:NOSPACE"));
    raftkine(&["alarm", "disarm", "--endpoint", &endpoint]);
    assert!(raftkine(&["alarm", "list", "--endpoint", &endpoint]).is_empty());
    put(&mut c, "after", "ok").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        alarms(&mut c).await.is_empty(),
        "the guard raised the alarm again"
    );
    let (status, _, _) = http_get(&metrics, "/health").await;
    assert_eq!(status, 200);

    // No acknowledged write was lost; writes were refused while the alarm stood.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Release);
    let (acked, refused) = writer.await.unwrap();
    assert!(!refused.is_empty(), "the writer was never refused");
    let stored = c
        .get("w/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let stored: BTreeMap<String, String> = stored
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_string(),
                kv.value_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        stored, acked,
        "acknowledged writes differ from the stored ones"
    );
    let last_refused = refused.iter().max().copied().unwrap_or(0);
    assert!(
        acked.contains_key(&format!("w/{:05}", last_refused + 1)),
        "the writer's next write after the alarm was not acknowledged"
    );
    eprintln!(
        "disk_guard: {} writes acknowledged, {} refused ({})",
        acked.len(),
        refused.len(),
        match space {
            Space::Tmpfs { .. } => "tmpfs",
            Space::Probe => "probe",
        }
    );
    drop(s);
}

#[tokio::test]
async fn terminate_stops_the_member_cleanly() {
    if skip_on_etcd("terminate_stops_the_member_cleanly") {
        return;
    }
    let mut s = Server::raftkine_with(&[
        "--watch-storage-available-size-interval",
        "100ms",
        "--low-available-storage-action",
        "terminate",
        "--test-available-bytes-file",
        "avail",
    ]);
    let mut c = s.client().await;
    put(&mut c, "kept", "yes").await;
    set_probe(&s.data_dir, 1024);
    let t = Instant::now();
    let status = loop {
        if let Some(status) = s.try_wait() {
            break status;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "still running:\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}:\n{}", s.log());
    assert!(s.log().contains("terminating"), "{}", s.log());

    // Back with space: the data is there, and so is the alarm until disarmed.
    set_probe(&s.data_dir, 1 << 40);
    s.start();
    let mut c = s.client().await;
    let got = c.get("kept", None).await.unwrap();
    assert_eq!(values_of(got.kvs()), ["yes"]);
    assert!(alarms(&mut c)
        .await
        .iter()
        .any(|a| a.1 == AlarmType::Nospace));
    raftkine(&[
        "alarm",
        "disarm",
        "--endpoint",
        &format!("127.0.0.1:{}", s.port),
    ]);
    put(&mut c, "again", "ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_moves_leadership_away_from_a_member_low_on_disk() {
    if skip_on_etcd("handover_moves_leadership_away_from_a_member_low_on_disk") {
        return;
    }
    let mut opts = options(3, Duration::from_secs(5));
    opts.extra_args = [
        "--metrics-listen",
        "127.0.0.1:0",
        "--low-available-storage-action",
        "handover",
        "--watch-storage-available-size-interval",
        "200ms",
        "--test-available-bytes-file",
        "avail",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut cluster = start(opts);
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
    let metrics_of = |cluster: &crate::support::cluster::Cluster, i: usize| {
        logged_metrics_addr(&cluster.node(i).log())
            .unwrap_or_else(|| panic!("node {i} logged no metrics address"))
    };

    // Peer round trips are measured from the leader to each follower.
    let addr = metrics_of(&cluster, leader);
    let t = Instant::now();
    loop {
        let m = scrape(&addr).await;
        let peers = m.find("etcd_network_peer_round_trip_time_seconds", &[]);
        let measured = peers
            .iter()
            .filter(|s| match &s.value {
                prometheus_parse::Value::Histogram(b) => b.iter().any(|b| b.count > 0.0),
                _ => false,
            })
            .count();
        if measured == 2 {
            assert_eq!(m.get("etcd_server_is_leader", &[]), 1.0);
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "round trips: {peers:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in (0..3).filter(|i| *i != leader) {
        let m = scrape(&metrics_of(&cluster, i)).await;
        assert_eq!(m.get("etcd_server_has_leader", &[]), 1.0);
        assert_eq!(m.get("etcd_server_is_leader", &[]), 0.0);
    }
    let changes_before = scrape(&addr)
        .await
        .get("etcd_server_leader_changes_seen_total", &[]);

    // The leader's disk runs low: it raises NOSPACE and hands leadership over.
    set_probe(&cluster.node(leader).dir, 1024);
    let t = Instant::now();
    let new_leader = loop {
        if let Some(i) = cluster.leader().await {
            if i != leader {
                break i;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the leader kept leading\n{}",
            cluster.log_tails(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("disk_guard: leadership handed over in {:?}", t.elapsed());
    let mut c = cluster.client(new_leader).await;
    wait_nospace(&mut c, true, Duration::from_secs(5)).await;
    assert_status(
        c.put("k", "v", None).await,
        Code::ResourceExhausted,
        NOSPACE,
    );
    c.get("k", None).await.unwrap();
    // It does not take leadership back while its disk is low.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_ne!(cluster.leader().await, Some(leader));
    let m = scrape(&addr).await;
    assert_eq!(m.get("etcd_server_is_leader", &[]), 0.0);
    assert!(m.get("etcd_server_leader_changes_seen_total", &[]) > changes_before);

    // Space back, etcdctl disarms: writes work again.
    set_probe(&cluster.node(leader).dir, 1 << 40);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(cluster.node(new_leader).endpoint())
        .args(["alarm", "disarm"])
        .output();
    match out {
        Ok(out) => assert!(
            out.status.success(),
            "etcdctl alarm disarm: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => {
            eprintln!("disk_guard: no etcdctl; disarming with the client");
            for (member, alarm) in alarms(&mut c).await {
                c.alarm(AlarmAction::Deactivate, alarm, Some(for_member(member)))
                    .await
                    .unwrap();
            }
        }
    }
    let t = Instant::now();
    while c.put("k", "v", None).await.is_err() {
        assert!(t.elapsed() < Duration::from_secs(5), "writes still refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Without a leader, /health says so.
    let survivor = leader;
    let others: Vec<usize> = (0..3).filter(|i| *i != survivor).collect();
    for i in others {
        cluster.kill(i);
    }
    let t = Instant::now();
    loop {
        let (status, _, body) = http_get(&addr, "/health").await;
        if status == 503 && body == r#"{"health":"false","reason":"RAFT NO LEADER"}"# {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "/health still answers {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(scrape(&addr).await.get("etcd_server_has_leader", &[]), 0.0);
}
