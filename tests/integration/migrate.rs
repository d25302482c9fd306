//! `raftkine migrate` from a real etcd 3.4, and k8s-dqlite's `migrator` backup-dir format, with
//! the end-of-copy verification (which must also be able to fail).

use std::collections::BTreeMap;
use std::process::Command;

use etcd_client::{Client, GetOptions, PutOptions, Txn, TxnOp};

use crate::common::skip_on_etcd;
use crate::support::{raftkine_bin, Server};

/// Every key and value of a server.
async fn everything(c: &mut Client) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let resp = c
        .get(vec![0u8], Some(GetOptions::new().with_from_key()))
        .await
        .expect("get all");
    resp.kvs()
        .iter()
        .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
        .collect()
}

fn raftkine(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(raftkine_bin())
        .args(args)
        .output()
        .expect("raftkine runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// 10,000 keys shaped like kube-apiserver's, some rewritten and deleted, one on a lease.
async fn load_etcd(c: &mut Client) -> i64 {
    for batch in 0..100 {
        let ops: Vec<TxnOp> = (0..100)
            .map(|i| {
                let n = batch * 100 + i;
                TxnOp::put(
                    format!("/registry/configmaps/ns{}/cm{n}", n % 7),
                    format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(n % 300)),
                    None,
                )
            })
            .collect();
        c.txn(Txn::new().and_then(ops)).await.expect("txn");
    }
    c.put("/registry/configmaps/ns0/cm0", "rewritten", None)
        .await
        .expect("put");
    c.delete("/registry/configmaps/ns1/cm1", None)
        .await
        .expect("delete");
    c.put("/registry/other/extra", vec![0u8, 255, 1], None)
        .await
        .expect("put");
    let lease = c.lease_grant(600, None).await.expect("grant").id();
    c.put(
        "/registry/leases/kube-node-lease/n1",
        "held",
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .expect("put leased");
    lease
}

#[tokio::test]
async fn migrate_from_real_etcd_copies_everything_and_checks_it() {
    if skip_on_etcd("migrate_from_real_etcd_copies_everything_and_checks_it") {
        return;
    }
    let etcd = Server::etcd();
    let mut source = etcd.client().await;
    load_etcd(&mut source).await;
    let target = Server::raftkine();
    let (ok, out, err) = raftkine(&[
        "migrate",
        "--from",
        &etcd.endpoint,
        "--endpoint",
        &target.endpoint,
    ]);
    assert!(ok, "migrate failed: {out}\n{err}");
    assert!(out.contains("migrated 10001 keys"), "{out}");
    assert!(out.contains("sha256 "), "{out}");

    let mut t = target.client().await;
    let want = everything(&mut source).await;
    assert_eq!(want.len(), 10001);
    assert_eq!(everything(&mut t).await, want);
    // The leased key is on a lease there too, with (about) the source's TTL.
    let got = t
        .get("/registry/leases/kube-node-lease/n1", None)
        .await
        .expect("get");
    let lease = got.kvs()[0].lease();
    assert_ne!(lease, 0);
    let ttl = t.lease_time_to_live(lease, None).await.expect("ttl").ttl();
    assert!((500..=600).contains(&ttl), "ttl {ttl}");

    // Only a prefix: copied into a fresh target, other keys stay out.
    let second = Server::raftkine();
    let (ok, out, err) = raftkine(&[
        "migrate",
        "--from",
        &etcd.endpoint,
        "--prefix",
        "/registry/other/",
        "--endpoint",
        &second.endpoint,
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("migrated 1 keys"), "{out}");

    // A target that already holds other keys under the prefix fails the check, loudly.
    let mut s2 = second.client().await;
    s2.put("/registry/other/stray", "1", None)
        .await
        .expect("put");
    let (ok, _, err) = raftkine(&[
        "migrate",
        "--from",
        &etcd.endpoint,
        "--prefix",
        "/registry/other/",
        "--endpoint",
        &second.endpoint,
    ]);
    assert!(!ok);
    assert!(err.contains("verification failed"), "{err}");
}

#[tokio::test]
async fn k8s_dqlite_migrator_dirs_round_trip() {
    if skip_on_etcd("k8s_dqlite_migrator_dirs_round_trip") {
        return;
    }
    let etcd = Server::etcd();
    let mut source = etcd.client().await;
    for i in 0..300 {
        source
            .put(
                format!("/registry/pods/default/p{i}"),
                format!("pod {i}"),
                None,
            )
            .await
            .expect("put");
    }
    source
        .put("outside", "slash-less", None)
        .await
        .expect("put");
    let dir = tempfile::tempdir().expect("tempdir");
    let backup = dir.path().join("backup");
    let backup_arg = backup.display().to_string();
    // MicroK8s dbctl's command line, against etcd.
    let (ok, out, err) = raftkine(&[
        "migrator",
        "--endpoint",
        &etcd.endpoint,
        "--mode",
        "backup-etcd",
        "--db-dir",
        &backup_arg,
    ]);
    assert!(ok, "{out}{err}");
    assert!(backup.join("300.key").exists() && !backup.join("301.key").exists());

    // `migrate --from-dir` imports it and checks it.
    let target = Server::raftkine();
    let (ok, out, err) = raftkine(&[
        "migrate",
        "--from-dir",
        &backup_arg,
        "--endpoint",
        &target.endpoint,
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("migrated 301 keys"), "{out}");
    let mut t = target.client().await;
    assert_eq!(everything(&mut t).await, everything(&mut source).await);

    // backup-dqlite takes the keys under "/" only; restore-to-dqlite puts them back.
    let only_slash = dir.path().join("dqlite");
    let only_slash_arg = only_slash.display().to_string();
    let (ok, out, err) = raftkine(&[
        "migrator",
        "--endpoint",
        &target.endpoint,
        "--mode",
        "backup-dqlite",
        "--db-dir",
        &only_slash_arg,
    ]);
    assert!(ok, "{out}{err}");
    assert!(only_slash.join("299.key").exists() && !only_slash.join("300.key").exists());
    let fresh = Server::raftkine();
    let (ok, out, err) = raftkine(&[
        "migrator",
        "--endpoint",
        &fresh.endpoint,
        "--mode",
        "restore-to-dqlite",
        "--db-dir",
        &only_slash_arg,
    ]);
    assert!(ok, "{out}{err}");
    let mut f = fresh.client().await;
    let restored = everything(&mut f).await;
    assert_eq!(restored.len(), 300);
    assert_eq!(
        restored
            .get(b"/registry/pods/default/p7".as_slice())
            .map(Vec::as_slice),
        Some(b"pod 7".as_slice())
    );
}
