//! Lease: grant, revoke, keep-alive, time-to-live, leases, expiry.

use std::time::Duration;

use etcd_client::{
    GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, WatchOptions,
};
use tonic::Code;

use crate::common::*;

const NOT_FOUND: &str = "etcdserver: requested lease not found";

#[tokio::test]
async fn grant_with_and_without_id() {
    let (_s, mut c) = start().await;
    let rev = current_rev(&mut c).await;
    let g = c.lease_grant(30, None).await.unwrap();
    assert!(g.id() > 0);
    assert_eq!(g.ttl(), 30);
    assert_eq!(g.error(), "");
    assert_eq!(
        hrev(g.header()),
        rev,
        "granting a lease does not bump the revision"
    );
    let g2 = c.lease_grant(30, None).await.unwrap();
    assert_ne!(g.id(), g2.id());

    let g = c
        .lease_grant(45, Some(LeaseGrantOptions::new().with_id(0x1234)))
        .await
        .unwrap();
    assert_eq!(g.id(), 0x1234);
    assert_eq!(g.ttl(), 45);
    assert_status(
        c.lease_grant(45, Some(LeaseGrantOptions::new().with_id(0x1234)))
            .await,
        Code::FailedPrecondition,
        "etcdserver: lease already exists",
    );
    let ttl = c.lease_time_to_live(0x1234, None).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 45);
    assert!(ttl.ttl() > 40 && ttl.ttl() <= 45, "ttl {}", ttl.ttl());
}

#[tokio::test]
async fn too_large_ttl_is_rejected() {
    let (_s, mut c) = start().await;
    assert_status(
        c.lease_grant(9_000_000_001, None).await,
        Code::OutOfRange,
        "etcdserver: too large lease TTL",
    );
    let g = c.lease_grant(9_000_000_000, None).await.unwrap();
    assert_eq!(g.ttl(), 9_000_000_000);
}

#[tokio::test]
async fn minimum_ttl_is_applied() {
    let (_s, mut c) = start().await;
    // etcd raises TTLs below its minimum (1.5 × election timeout, rounded up: 2 s).
    let g = c.lease_grant(1, None).await.unwrap();
    assert_eq!(g.ttl(), 2);
}

#[tokio::test]
async fn revoke_deletes_attached_keys_in_one_revision() {
    let (_s, mut c) = start().await;
    let l = c.lease_grant(60, None).await.unwrap().id();
    for k in ["l/a", "l/b", "l/c"] {
        c.put(k, "v", Some(PutOptions::new().with_lease(l)))
            .await
            .unwrap();
    }
    put(&mut c, "l/free", "v").await;
    let rev = current_rev(&mut c).await;
    let mut w = c
        .watch(
            "l/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    let id = expect_created(&mut w).await;

    let r = c.lease_revoke(l).await.unwrap();
    assert_eq!(
        hrev(r.header()),
        rev + 1,
        "revoke deletes all keys in one revision"
    );
    let evs = next_events(&mut w, id, 3).await;
    let got: Vec<_> = evs.iter().map(ev).collect();
    assert_eq!(
        got,
        [
            del_ev("l/a", rev + 1),
            del_ev("l/b", rev + 1),
            del_ev("l/c", rev + 1)
        ]
    );
    assert!(evs
        .iter()
        .all(|e| e.prev_kv().map(|p| p.lease()) == Some(l)));
    let g = c
        .get("l/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(keys_of(g.kvs()), ["l/free"]);

    assert_status(c.lease_revoke(l).await, Code::NotFound, NOT_FOUND);
    assert_status(
        c.put("x", "v", Some(PutOptions::new().with_lease(l))).await,
        Code::NotFound,
        NOT_FOUND,
    );
    // Revoking a lease without keys does not bump the revision.
    let l2 = c.lease_grant(60, None).await.unwrap().id();
    let r = c.lease_revoke(l2).await.unwrap();
    assert_eq!(hrev(r.header()), rev + 1);
}

#[tokio::test]
async fn time_to_live_with_keys_and_leases_list() {
    let (_s, mut c) = start().await;
    let l = c.lease_grant(100, None).await.unwrap().id();
    let l2 = c.lease_grant(100, None).await.unwrap().id();
    for k in ["b", "a", "c"] {
        c.put(k, "v", Some(PutOptions::new().with_lease(l)))
            .await
            .unwrap();
    }
    let t = c
        .lease_time_to_live(l, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(t.id(), l);
    assert_eq!(t.granted_ttl(), 100);
    assert!(t.ttl() > 90 && t.ttl() <= 100);
    let mut keys: Vec<_> = t.keys().to_vec();
    keys.sort();
    assert_eq!(keys, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    let t = c.lease_time_to_live(l, None).await.unwrap();
    assert!(t.keys().is_empty(), "keys only when asked");
    // Moving a key to another lease detaches it from the first.
    c.put("a", "v", Some(PutOptions::new().with_lease(l2)))
        .await
        .unwrap();
    let t = c
        .lease_time_to_live(l, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(t.keys().len(), 2);

    // Unknown lease: TTL -1, no error.
    let t = c
        .lease_time_to_live(424242, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(t.ttl(), -1);

    let mut ids: Vec<i64> = c
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|s| s.id())
        .collect();
    ids.sort();
    let mut want = vec![l, l2];
    want.sort();
    assert_eq!(ids, want);
    c.lease_revoke(l2).await.unwrap();
    let ids: Vec<i64> = c
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|s| s.id())
        .collect();
    assert_eq!(ids, [l]);
}

#[tokio::test]
async fn keep_alive_stream_refreshes_the_ttl() {
    let (_s, mut c) = start().await;
    let l = c.lease_grant(3, None).await.unwrap().id();
    c.put("ka", "v", Some(PutOptions::new().with_lease(l)))
        .await
        .unwrap();
    let (mut keeper, mut stream) = c.lease_keep_alive(l).await.unwrap();
    assert_eq!(keeper.id(), l);
    // Keep it alive for longer than its TTL.
    for _ in 0..5 {
        keeper.keep_alive().await.unwrap();
        let r = tokio::time::timeout(WAIT, stream.message())
            .await
            .unwrap()
            .unwrap()
            .expect("keep-alive stream ended");
        assert_eq!(r.id(), l);
        assert_eq!(r.ttl(), 3, "keep-alive resets to the granted TTL");
        assert!(r.header().is_some());
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    assert_eq!(c.get("ka", None).await.unwrap().count(), 1, "kept alive");
    let t = c.lease_time_to_live(l, None).await.unwrap();
    assert!(t.ttl() >= 1, "ttl {}", t.ttl());

    // Keep-alive of a revoked lease answers TTL 0.
    c.lease_revoke(l).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let r = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap()
        .expect("keep-alive stream ended");
    assert_eq!(r.ttl(), 0);
}

#[tokio::test]
async fn expiry_deletes_keys_with_delete_events() {
    let (_s, mut c) = start().await;
    let g = c.lease_grant(2, None).await.unwrap();
    let l = g.id();
    for k in ["e/1", "e/2"] {
        c.put(k, "v", Some(PutOptions::new().with_lease(l)))
            .await
            .unwrap();
    }
    let rev = put(&mut c, "e/3", "unleased").await;
    let mut w = c
        .watch(
            "e/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    let id = expect_created(&mut w).await;
    let started = std::time::Instant::now();
    let evs = next_events(&mut w, id, 2).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(8),
        "expiry took {elapsed:?} for a 2 s lease"
    );
    let got: Vec<_> = evs.iter().map(ev).collect();
    assert_eq!(got, [del_ev("e/1", rev + 1), del_ev("e/2", rev + 1)]);
    assert!(evs.iter().all(|e| e.prev_kv().is_some()));
    let g = c
        .get("e/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(keys_of(g.kvs()), ["e/3"]);
    assert_eq!(hrev(g.header()), rev + 1);
    let t = c.lease_time_to_live(l, None).await.unwrap();
    assert_eq!(t.ttl(), -1, "an expired lease is gone");
    assert!(c.leases().await.unwrap().leases().is_empty());
}

#[tokio::test]
async fn lease_survives_key_deletion() {
    let (_s, mut c) = start().await;
    let l = c.lease_grant(60, None).await.unwrap().id();
    c.put("k", "v", Some(PutOptions::new().with_lease(l)))
        .await
        .unwrap();
    c.delete("k", None).await.unwrap();
    let t = c
        .lease_time_to_live(l, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(t.granted_ttl(), 60);
    assert!(t.keys().is_empty(), "deleted key detached from the lease");
    // Revoking it now deletes nothing and writes no revision.
    let rev = current_rev(&mut c).await;
    assert_eq!(hrev(c.lease_revoke(l).await.unwrap().header()), rev);
}
