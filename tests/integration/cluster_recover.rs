//! Quorum recovery (`raftkine recover`): a 3-node cluster loses two nodes for good; the survivor
//! is recovered, serves writes again with every acknowledged key, and a fresh node joins it.

use std::time::{Duration, Instant};

use etcd_client::GetOptions;

use crate::support::cluster::Cluster;
use crate::support::raftkine_bin;

fn recover(dir: &std::path::Path, extra: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(raftkine_bin())
        .arg("recover")
        .arg("--storage-dir")
        .arg(dir)
        .args(extra)
        .output()
        .expect("raftkine recover runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_recover_the_last_survivor_then_a_fresh_node_joins() {
    let mut cluster = tokio::task::spawn_blocking(|| Cluster::start(3))
        .await
        .expect("cluster starts");
    let mut c = cluster.client_of_all().await;
    let mut acknowledged = vec![];
    for i in 0..50 {
        let key = format!("/registry/acked/{i:03}");
        if c.put(key.as_str(), format!("v{i}"), None).await.is_ok() {
            acknowledged.push(key);
        }
    }
    assert_eq!(acknowledged.len(), 50);

    // Two nodes are gone for good; the survivor alone cannot write.
    cluster.kill(1);
    cluster.kill(2);
    let dir = cluster.node(0).dir.clone();
    // Refused while the survivor runs (its storage dir is in use).
    let (ok, _, err) = recover(&dir, &[]);
    assert!(!ok && err.contains("stop raftkine"), "{err}");
    cluster.node_mut(0).terminate(Duration::from_secs(10));

    let (ok, plan, err) = recover(&dir, &["--dry-run"]);
    assert!(ok, "{err}");
    assert!(
        plan.contains("voter") && plan.matches("removed").count() == 2,
        "{plan}"
    );
    let (ok, out, err) = recover(&dir, &[]);
    assert!(ok, "{out}{err}");

    cluster.start_node(0);
    let mut survivor = cluster.client(0).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match survivor.put("/registry/after-recovery", "1", None).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "no write after recovery: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    acknowledged.push("/registry/after-recovery".into());

    // A fresh node joins the recovered cluster and holds everything.
    let fresh = tokio::task::spawn_blocking(move || {
        let i = cluster.add_node();
        cluster.wait_voters(2, Duration::from_secs(60));
        (cluster, i)
    })
    .await
    .expect("join");
    let (cluster, i) = fresh;
    let mut joined = cluster.client(i).await;
    let got = joined
        .get(
            "/registry/",
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .expect("read on the new node");
    let keys: Vec<String> = got
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    for key in &acknowledged {
        assert!(keys.contains(key), "{key} missing on the new node");
    }
    joined
        .put("/registry/on-the-new-node", "1", None)
        .await
        .expect("the two-node cluster writes");
}
