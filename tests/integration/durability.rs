//! Durability: kill -9 in the middle of a concurrent write load, restart on the same data dir,
//! every acknowledged write is there. (Runs against etcd too: it proves the test itself.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{GetOptions, LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp};

use crate::common::*;
use crate::support::Server;

type Acked = Arc<Mutex<Vec<(String, String, i64)>>>;

/// Starts `writers` tasks writing until their first error; returns the acknowledged writes.
async fn load(
    server: &Server,
    round: usize,
    writers: usize,
) -> (Acked, Vec<tokio::task::JoinHandle<()>>) {
    let acked: Acked = Arc::new(Mutex::new(Vec::new()));
    let mut handles = vec![];
    for t in 0..writers {
        let mut c = server.client().await;
        let acked = acked.clone();
        handles.push(tokio::spawn(async move {
            for i in 0.. {
                let k = format!("dur/{round}/{t}/{i:06}");
                let v = format!("value-{round}-{t}-{i}");
                // Every 5th write is a two-key txn.
                let res = if i % 5 == 4 {
                    let k2 = format!("{k}-txn");
                    c.txn(Txn::new().and_then(vec![
                        TxnOp::put(k.as_str(), v.as_str(), None),
                        TxnOp::put(k2.as_str(), v.as_str(), None),
                    ]))
                    .await
                    .map(|r| {
                        let rev = hrev(r.header());
                        vec![(k2.clone(), v.clone(), rev), (k.clone(), v.clone(), rev)]
                    })
                } else {
                    c.put(k.as_str(), v.as_str(), None)
                        .await
                        .map(|r| vec![(k.clone(), v.clone(), hrev(r.header()))])
                };
                match res {
                    Ok(w) => acked.lock().unwrap().extend(w),
                    Err(_) => return,
                }
            }
        }));
    }
    (acked, handles)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_load_loses_no_acknowledged_write() {
    let mut s = Server::under_test();
    let mut all: Vec<(String, String, i64)> = vec![];
    for round in 0..2 {
        let (acked, handles) = load(&s, round, 6).await;
        // Let the load run, then kill -9 while writes are in flight.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while acked.lock().unwrap().len() < 200 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s.kill();
        for h in handles {
            let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
        }
        let got = acked.lock().unwrap().clone();
        assert!(
            got.len() >= 50,
            "too few writes acknowledged before the kill: {}",
            got.len()
        );
        eprintln!(
            "round {round}: {} acknowledged writes before kill -9",
            got.len()
        );
        all.extend(got);

        s.start();
        let mut c = s.client().await;
        let g = c
            .get("dur/", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        let stored: std::collections::HashMap<Vec<u8>, (Vec<u8>, i64)> = g
            .kvs()
            .iter()
            .map(|kv| (kv.key().to_vec(), (kv.value().to_vec(), kv.mod_revision())))
            .collect();
        let max_rev = all.iter().map(|w| w.2).max().unwrap();
        for (k, v, rev) in &all {
            let (sv, srev) = stored
                .get(k.as_bytes())
                .unwrap_or_else(|| panic!("acknowledged write of {k} (rev {rev}) lost"));
            assert_eq!(sv, v.as_bytes(), "{k}");
            assert_eq!(srev, rev, "{k} has another revision after restart");
        }
        let cur = hrev(g.header());
        assert!(cur >= max_rev, "revision went back: {cur} < {max_rev}");
        // Revisions of surviving keys are unique per revision except within txns, and new
        // writes continue above everything acknowledged.
        let next = put(&mut c, "after-restart", "x").await;
        assert!(next > cur);
    }
}

#[tokio::test]
async fn restart_keeps_data_leases_and_compaction() {
    let mut s = Server::under_test();
    let mut c = s.client().await;
    let r1 = put(&mut c, "a", "1").await;
    let r2 = put(&mut c, "a", "2").await;
    put(&mut c, "b", "1").await;
    c.compact(r2, None).await.unwrap();
    let l = c.lease_grant(600, None).await.unwrap().id();
    let rl = hrev(
        c.put("leased", "v", Some(PutOptions::new().with_lease(l)))
            .await
            .unwrap()
            .header(),
    );
    drop(c);
    s.kill();
    s.start();
    let mut c = s.client().await;
    assert_eq!(current_rev(&mut c).await, rl);
    let g = c.get("a", None).await.unwrap();
    assert_eq!(values_of(g.kvs()), ["2"]);
    assert_eq!(g.kvs()[0].create_revision(), r1);
    assert_eq!(g.kvs()[0].version(), 2);
    assert_status(
        c.get("a", Some(GetOptions::new().with_revision(r1))).await,
        tonic::Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    let t = c
        .lease_time_to_live(l, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(t.granted_ttl(), 600);
    assert!(t.ttl() > 0, "lease survived the restart");
    assert_eq!(t.keys(), [b"leased".to_vec()]);
    // The lease still works: revoking deletes the key.
    c.lease_revoke(l).await.unwrap();
    assert!(c.get("leased", None).await.unwrap().kvs().is_empty());
    // Lease ids are not reused after a restart.
    let l2 = c.lease_grant(60, None).await.unwrap().id();
    assert_ne!(l2, l);
}

/// A member whose cache (`--cache-mib 1`) is far smaller than its data serves every value and
/// every past revision, and keeps doing so after a compaction and two kill -9 restarts (the
/// second start rebuilds the key index from the row owners only).
#[tokio::test]
async fn a_cache_smaller_than_the_data_serves_it_across_restarts() {
    let mut s = Server::raftkine_with(&["--cache-mib", "1"]);
    let mut c = s.client().await;
    let value = |i: usize, round: usize| format!("{round}-{i}-{}", "x".repeat(4096));
    let mut first_revs = vec![];
    for i in 0..600 {
        first_revs.push(put(&mut c, &format!("big/{i:04}"), &value(i, 0)).await);
    }
    for i in (0..600).step_by(2) {
        put(&mut c, &format!("big/{i:04}"), &value(i, 1)).await;
    }
    let deleted = hrev(c.delete("big/0001", None).await.unwrap().header());
    let check = |kvs: &[etcd_client::KeyValue]| {
        assert_eq!(kvs.len(), 599);
        for kv in kvs {
            let i: usize = kv.key_str().unwrap()[4..].parse().unwrap();
            let round = if i % 2 == 0 { 1 } else { 0 };
            assert_eq!(kv.value_str().unwrap(), value(i, round), "big/{i:04}");
        }
    };
    check(
        c.get("big/", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap()
            .kvs(),
    );
    for restart in 0..2 {
        drop(c);
        s.kill();
        s.start();
        c = s.client().await;
        check(
            c.get("big/", Some(GetOptions::new().with_prefix()))
                .await
                .unwrap()
                .kvs(),
        );
        // The first value of an updated key, at its revision (only before the compaction).
        let past = c
            .get(
                "big/0002",
                Some(GetOptions::new().with_revision(first_revs[2])),
            )
            .await;
        if restart == 0 {
            assert_eq!(values_of(past.unwrap().kvs()), [value(2, 0)]);
            c.compact(deleted, None).await.unwrap();
        } else {
            assert_status(
                past,
                tonic::Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            );
        }
        let gone = c.get("big/0001", None).await.unwrap();
        assert!(gone.kvs().is_empty());
    }
    // Writes go on above everything, and the deleted key comes back as a new generation.
    let again = put(&mut c, "big/0001", "back").await;
    let g = c.get("big/0001", None).await.unwrap();
    assert_eq!(g.kvs()[0].create_revision(), again);
    assert_eq!(g.kvs()[0].version(), 1);
}
