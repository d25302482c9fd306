//! Backup and restore in etcd's snapshot format, checked against the real thing (Debian's etcd
//! 3.4 and its etcdctl): a snapshot saved from etcd restored into raftkine; raftkine's snapshots
//! (`raftkine backup` and `etcdctl snapshot save`) checked, restored and served by etcd; a backup
//! of a 3-node cluster under write load restored into a new member; refusals.
//!
//! The bbolt page reader/writer has its own unit tests (`src/backup/bbolt.rs`).

use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, CompactionOptions, GetOptions, LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp,
};

use crate::common::skip_on_etcd;
use crate::support::{raftkine_bin, Kind, Server};

/// A key-value as a Range answer shows it: key, value, create, mod, version, lease.
type Kv = (String, Vec<u8>, i64, i64, i64, i64);

/// Every key at `rev` (Err with the message when the server refuses, e.g. compacted).
async fn all_at(c: &mut Client, rev: i64) -> Result<Vec<Kv>, String> {
    let r = c
        .get(
            "",
            Some(GetOptions::new().with_all_keys().with_revision(rev)),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(r.kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.value().to_vec(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
                kv.lease(),
            )
        })
        .collect())
}

async fn revision(c: &mut Client) -> i64 {
    c.get("\u{1}", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision()
}

/// What [`workload`] made.
struct Made {
    compacted_at: i64,
    revision: i64,
    lease: i64,
}

/// Puts, updates, deletes (single and range), a txn writing several keys in one revision, a
/// lease with two keys, a value larger than a page, 300 more rows (so the `key` bucket spans
/// branch and leaf pages), a physical compaction, then more writes.
async fn workload(c: &mut Client) -> Made {
    for i in 0..20 {
        c.put(format!("k/{i:02}"), format!("v{i}"), None)
            .await
            .expect("put");
    }
    for i in 0..10 {
        c.put(format!("k/{i:02}"), format!("v{i}-again"), None)
            .await
            .expect("update");
    }
    c.delete("k/00", None).await.expect("delete");
    c.delete("k/1", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .expect("delete range");
    let lease = c.lease_grant(600, None).await.expect("lease").id();
    for k in ["leased/a", "leased/b"] {
        c.put(k, "l", Some(PutOptions::new().with_lease(lease)))
            .await
            .expect("put with lease");
    }
    c.txn(Txn::new().and_then(vec![
        TxnOp::put("t/1", "x", None),
        TxnOp::put("t/2", "y", None),
        TxnOp::delete("k/02", None),
    ]))
    .await
    .expect("txn");
    c.put("big", vec![7u8; 20_000], None).await.expect("big");
    // Enough rows for many leaf pages under a branch page.
    for t in 0..3 {
        let puts = (0..100)
            .map(|i| TxnOp::put(format!("many/{t}/{i:03}"), vec![b'm'; 100], None))
            .collect::<Vec<_>>();
        c.txn(Txn::new().and_then(puts))
            .await
            .expect("txn of 100 puts");
    }
    let compacted_at = revision(c).await - 3;
    c.compact(compacted_at, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    c.put("k/05", "after compaction", None).await.expect("put");
    c.delete("t/1", None).await.expect("delete");
    c.put("big", vec![8u8; 30_000], None).await.expect("big");
    Made {
        compacted_at,
        revision: revision(c).await,
        lease,
    }
}

/// Asserts that two servers answer the same at every revision from the compaction on, and
/// both refuse the revision before it.
async fn assert_same_history(want: &mut Client, got: &mut Client, made: &Made) {
    for rev in made.compacted_at..=made.revision {
        let expected = all_at(want, rev).await.expect("reference answers");
        let actual = all_at(got, rev).await;
        assert_eq!(actual.as_ref(), Ok(&expected), "at revision {rev}");
    }
    let before = made.compacted_at - 1;
    assert!(all_at(want, before).await.is_err());
    let refused = all_at(got, before).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("compacted")),
        "revision {before} is compacted: {refused:?}"
    );
    assert_eq!(revision(got).await, made.revision);
}

async fn assert_lease_kept(c: &mut Client, lease: i64) {
    let t = c
        .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("time to live");
    assert_eq!(t.granted_ttl(), 600, "granted TTL");
    assert!(t.ttl() > 500, "a fresh deadline: {}", t.ttl());
    let mut keys = t.keys().to_vec();
    keys.sort();
    assert_eq!(keys, [b"leased/a".to_vec(), b"leased/b".to_vec()]);
}

fn check(what: &str, out: std::io::Result<Output>) -> String {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn raftkine(args: &[&str]) -> std::io::Result<Output> {
    tokio::process::Command::new(raftkine_bin())
        .args(args)
        .output()
        .await
}

async fn etcdctl(args: &[&str]) -> std::io::Result<Output> {
    tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(args)
        .output()
        .await
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// `raftkine restore FILE` into a new dir, and a raftkine serving it.
async fn restored_raftkine(file: &Path) -> Server {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let out = check(
        "raftkine restore",
        raftkine(&["restore", path(file), "--storage-dir", path(&dir)]).await,
    );
    assert!(out.contains("restored"), "{out}");
    Server::on_data_dir(Kind::Raftkine, dir, tmp)
}

/// The revision `raftkine backup` printed.
fn printed_revision(out: &str) -> i64 {
    out.split("revision ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no revision in {out:?}"))
}

#[tokio::test]
async fn etcd_snapshot_restores_into_raftkine() {
    if skip_on_etcd("etcd_snapshot_restores_into_raftkine") {
        return;
    }
    let etcd = Server::etcd();
    let mut ec = etcd.client().await;
    let made = workload(&mut ec).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("etcd.db");
    check(
        "etcdctl snapshot save",
        etcdctl(&[
            "--endpoints",
            &etcd.endpoint,
            "snapshot",
            "save",
            path(&file),
        ])
        .await,
    );

    let rk = restored_raftkine(&file).await;
    let mut rc = rk.client().await;
    assert_same_history(&mut ec, &mut rc, &made).await;
    assert_lease_kept(&mut rc, made.lease).await;
    let members = rc.member_list().await.expect("members");
    assert_eq!(members.members().len(), 1, "a new single-member cluster");
    // It is a working member: writes go on from the restored revision.
    let r = rc.put("after", "restore", None).await.expect("put");
    assert_eq!(r.header().expect("header").revision(), made.revision + 1);
}

#[tokio::test]
async fn raftkine_snapshot_is_restored_and_served_by_etcd() {
    if skip_on_etcd("raftkine_snapshot_is_restored_and_served_by_etcd") {
        return;
    }
    let rk = Server::raftkine();
    let mut rc = rk.client().await;
    let made = workload(&mut rc).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let ours = tmp.path().join("raftkine-backup.db");
    let saved = tmp.path().join("etcdctl-save.db");
    let out = check(
        "raftkine backup",
        raftkine(&["backup", path(&ours), "--endpoint", &rk.endpoint]).await,
    );
    assert_eq!(printed_revision(&out), made.revision, "{out}");
    check(
        "etcdctl snapshot save",
        etcdctl(&[
            "--endpoints",
            &rk.endpoint,
            "snapshot",
            "save",
            path(&saved),
        ])
        .await,
    );
    for file in [&ours, &saved] {
        let status = check(
            "etcdctl snapshot status",
            etcdctl(&["snapshot", "status", path(file), "-w", "json"]).await,
        );
        let doc: serde_json::Value = serde_json::from_str(status.trim())
            .unwrap_or_else(|e| panic!("status JSON ({e}): {status}"));
        assert_eq!(
            doc["revision"],
            serde_json::json!(made.revision),
            "{status}"
        );
        assert!(doc["totalKey"].as_i64().unwrap_or(0) > 10, "{status}");
    }

    let etcd_tmp = tempfile::tempdir().expect("tempdir");
    let data = etcd_tmp.path().join("data");
    check(
        "etcdctl snapshot restore",
        etcdctl(&[
            "snapshot",
            "restore",
            path(&ours),
            "--data-dir",
            path(&data),
        ])
        .await,
    );
    let etcd = Server::on_data_dir(Kind::Etcd, data, etcd_tmp);
    let mut ec = etcd.client().await;
    assert_same_history(&mut rc, &mut ec, &made).await;
    assert_lease_kept(&mut ec, made.lease).await;
}

/// Writes distinct keys through one member until stopped; returns how many succeeded.
async fn writer(mut c: Client, id: usize, stop: Arc<AtomicBool>) -> usize {
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let key = format!("load/{id}/{}", n % 50);
        if c.put(key, format!("{n}"), None).await.is_ok() {
            n += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_backup_under_load_restores_with_the_same_hash() {
    if skip_on_etcd("cluster_backup_under_load_restores_with_the_same_hash") {
        return;
    }
    let mut cluster =
        crate::cluster_ha::start(crate::cluster_ha::options(3, Duration::from_secs(5)));
    let mut c = cluster.client(0).await;
    let lease = c.lease_grant(600, None).await.expect("lease").id();
    for k in ["leased/a", "leased/b"] {
        c.put(k, "l", Some(PutOptions::new().with_lease(lease)))
            .await
            .expect("put with lease");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = vec![];
    for i in 0..3 {
        let client = cluster.client(i).await;
        writers.push(tokio::spawn(writer(client, i, stop.clone())));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let compact_at = revision(&mut c).await;
    c.compact(compact_at, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The backup is taken from a member while the writes go on.
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("cluster.db");
    let endpoint = cluster.node(1).endpoint();
    let out = check(
        "raftkine backup",
        raftkine(&["backup", path(&file), "--endpoint", &endpoint]).await,
    );
    let at = printed_revision(&out);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut written = 0;
    for w in writers {
        written += w.await.expect("writer");
    }
    let converged = cluster.wait_converged(Duration::from_secs(20)).await;
    assert!(
        converged > at && at > compact_at,
        "writes went on around the backup: compacted at {compact_at}, backup at {at}, \
         end at {converged} ({written} writes)"
    );

    eprintln!(
        "backup: compacted at {compact_at}, backup at {at}, end at {converged} ({written} writes)"
    );
    let restored = restored_raftkine(&file).await;
    let mut rc = restored.client().await;
    assert_eq!(revision(&mut rc).await, at);
    let want = c.hash_kv(at).await.expect("hash_kv on the cluster");
    let got = rc
        .hash_kv(at)
        .await
        .expect("hash_kv on the restored member");
    assert_eq!(
        got.hash(),
        want.hash(),
        "HashKV at the backup revision {at}"
    );
    assert_eq!(got.compact_version(), want.compact_version());
    assert_eq!(all_at(&mut rc, at).await, all_at(&mut c, at).await);
    assert_lease_kept(&mut rc, lease).await;
}

#[tokio::test]
async fn restore_refuses_a_used_dir_and_a_damaged_file() {
    if skip_on_etcd("restore_refuses_a_used_dir_and_a_damaged_file") {
        return;
    }
    let rk = Server::raftkine();
    let mut c = rk.client().await;
    c.put("k", "v", None).await.expect("put");
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("snap.db");
    check(
        "raftkine backup",
        raftkine(&["backup", path(&file), "--endpoint", &rk.endpoint]).await,
    );
    assert!(!tmp.path().join("snap.db.part").exists(), "temp file left");

    // A storage dir in use.
    let out = raftkine(&["restore", path(&file), "--storage-dir", path(&rk.data_dir)])
        .await
        .expect("run restore");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not empty"), "{err}");

    // One flipped byte.
    let mut bytes = std::fs::read(&file).expect("read");
    bytes[5000] ^= 0x40;
    let damaged = tmp.path().join("damaged.db");
    std::fs::write(&damaged, &bytes).expect("write");
    let target = tmp.path().join("new");
    let out = raftkine(&["restore", path(&damaged), "--storage-dir", path(&target)])
        .await
        .expect("run restore");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(!target.exists(), "nothing is left behind");

    // The trailer cut off: refused unless asked.
    let bare = tmp.path().join("bare.db");
    std::fs::write(&bare, &bytes[..bytes.len() - 32]).expect("write");
    let out = raftkine(&["restore", path(&bare), "--storage-dir", path(&target)])
        .await
        .expect("run restore");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no sha256 trailer"));
}
