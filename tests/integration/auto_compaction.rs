//! `--auto-compaction-mode` / `--auto-compaction-retention` (etcd's semantics; off by default).

use std::time::{Duration, Instant};

use etcd_client::GetOptions;

use crate::common::{put, skip_on_etcd};
use crate::support::Server;

/// Whether reading `key` at `rev` answers "compacted".
async fn compacted(c: &mut etcd_client::Client, key: &str, rev: i64) -> bool {
    match c.get(key, Some(GetOptions::new().with_revision(rev))).await {
        Ok(_) => false,
        Err(e) => e
            .to_string()
            .contains("required revision has been compacted"),
    }
}

#[tokio::test]
async fn periodic_auto_compaction_keeps_one_retention_of_history() {
    if skip_on_etcd("periodic_auto_compaction_keeps_one_retention_of_history") {
        return;
    }
    let s = Server::raftkine_with(&[
        "--auto-compaction-mode",
        "periodic",
        "--auto-compaction-retention",
        "2s",
    ]);
    let mut c = s.client().await;
    let first = put(&mut c, "k", "v1").await;
    // Keep writing; within a few retention periods the first revision is compacted away.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = first;
    while !compacted(&mut c, "k", first).await {
        assert!(
            Instant::now() < deadline,
            "revision {first} never compacted"
        );
        last = put(&mut c, "k", "more").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The latest revisions (written within the retention) are still there.
    let now = c
        .get("k", Some(GetOptions::new().with_revision(last)))
        .await;
    assert!(now.is_ok(), "revision {last} must survive: {now:?}");
}

#[tokio::test]
async fn auto_compaction_is_off_by_default_and_bad_flags_are_refused() {
    if skip_on_etcd("auto_compaction_is_off_by_default_and_bad_flags_are_refused") {
        return;
    }
    let s = Server::raftkine();
    let mut c = s.client().await;
    let first = put(&mut c, "k", "v1").await;
    for _ in 0..20 {
        put(&mut c, "k", "more").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!compacted(&mut c, "k", first).await);

    let out = std::process::Command::new(crate::support::raftkine_bin())
        .args([
            "serve",
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "1h",
        ])
        .output()
        .expect("raftkine runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected a number of revisions"));
}
