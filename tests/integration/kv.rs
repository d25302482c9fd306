//! KV.Range, KV.Put, KV.DeleteRange and KV.Compact.

use etcd_client::{
    CompactionOptions, DeleteOptions, GetOptions, LeaseGrantOptions, PutOptions, SortOrder,
    SortTarget,
};
use tonic::Code;

use crate::common::*;

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";

#[tokio::test]
async fn range_single_key_and_header() {
    let (_s, mut c) = start().await;
    let r0 = current_rev(&mut c).await;
    assert_eq!(r0, 1, "a fresh store is at revision 1");
    let rev = put(&mut c, "foo", "bar").await;
    assert_eq!(rev, 2);

    let resp = c.get("foo", None).await.unwrap();
    let h = resp.header().unwrap();
    assert_eq!(h.revision(), 2);
    assert_ne!(h.cluster_id(), 0);
    assert_ne!(h.member_id(), 0);
    assert!(h.raft_term() >= 1);
    assert_eq!(resp.count(), 1);
    assert!(!resp.more());
    let kv = &resp.kvs()[0];
    assert_eq!(kv.key(), b"foo");
    assert_eq!(kv.value(), b"bar");
    assert_eq!(kv.create_revision(), 2);
    assert_eq!(kv.mod_revision(), 2);
    assert_eq!(kv.version(), 1);
    assert_eq!(kv.lease(), 0);

    // A key that does not exist: empty, count 0, header still current.
    let resp = c.get("fo", None).await.unwrap();
    assert!(resp.kvs().is_empty());
    assert_eq!(resp.count(), 0);
    assert_eq!(hrev(resp.header()), 2);
    // The single key is an exact match, not a prefix.
    let resp = c.get("foo2", None).await.unwrap();
    assert!(resp.kvs().is_empty());
}

#[tokio::test]
async fn revisions_versions_and_recreate() {
    let (_s, mut c) = start().await;
    let r1 = put(&mut c, "k", "v1").await;
    let r2 = put(&mut c, "k", "v2").await;
    let r3 = put(&mut c, "k", "v3").await;
    assert_eq!((r2, r3), (r1 + 1, r1 + 2));
    let kv = c.get("k", None).await.unwrap().kvs()[0].clone();
    assert_eq!(
        (kv.create_revision(), kv.mod_revision(), kv.version()),
        (r1, r3, 3)
    );
    let d = c.delete("k", None).await.unwrap();
    assert_eq!(hrev(d.header()), r3 + 1);
    let r5 = put(&mut c, "k", "again").await;
    assert_eq!(r5, r3 + 2);
    let kv = c.get("k", None).await.unwrap().kvs()[0].clone();
    assert_eq!(
        (kv.create_revision(), kv.mod_revision(), kv.version()),
        (r5, r5, 1),
        "a key recreated after a delete starts a new generation"
    );
}

#[tokio::test]
async fn range_prefix_and_explicit_range_end() {
    let (_s, mut c) = start().await;
    for k in ["a", "a/1", "a/2", "a0", "b", "b/1"] {
        put(&mut c, k, k).await;
    }
    let r = c
        .get("a/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(keys_of(r.kvs()), ["a/1", "a/2"]);
    assert_eq!(r.count(), 2);

    let r = c
        .get("a", Some(GetOptions::new().with_range("b")))
        .await
        .unwrap();
    assert_eq!(
        keys_of(r.kvs()),
        ["a", "a/1", "a/2", "a0"],
        "[a, b) excludes b"
    );

    let r = c
        .get("a/1", Some(GetOptions::new().with_range("a0")))
        .await
        .unwrap();
    assert_eq!(keys_of(r.kvs()), ["a/1", "a/2"]);

    // range_end <= key: empty.
    let r = c
        .get("b", Some(GetOptions::new().with_range("a")))
        .await
        .unwrap();
    assert!(r.kvs().is_empty());
    assert_eq!(r.count(), 0);
}

#[tokio::test]
async fn range_from_key_and_all_keys() {
    let (_s, mut c) = start().await;
    for k in ["a", "b", "c", "d"] {
        put(&mut c, k, "x").await;
    }
    let r = c
        .get("b", Some(GetOptions::new().with_from_key()))
        .await
        .unwrap();
    assert_eq!(keys_of(r.kvs()), ["b", "c", "d"]);
    // key "\0" with range_end "\0" is every key.
    let r = c
        .get(vec![0u8], Some(GetOptions::new().with_range(vec![0u8])))
        .await
        .unwrap();
    assert_eq!(keys_of(r.kvs()), ["a", "b", "c", "d"]);
    assert_eq!(r.count(), 4);
    let r = c
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    assert_eq!(r.count(), 4);
}

#[tokio::test]
async fn range_limit_more_and_count() {
    let (_s, mut c) = start().await;
    for i in 0..5 {
        put(&mut c, &format!("p/{i}"), "v").await;
    }
    let opts = || GetOptions::new().with_prefix();
    let r = c.get("p/", Some(opts().with_limit(2))).await.unwrap();
    assert_eq!(keys_of(r.kvs()), ["p/0", "p/1"]);
    assert!(r.more());
    assert_eq!(r.count(), 5, "count is the whole range, not the page");

    let r = c.get("p/", Some(opts().with_limit(4))).await.unwrap();
    assert_eq!(r.kvs().len(), 4);
    assert!(r.more());

    let r = c.get("p/", Some(opts().with_limit(5))).await.unwrap();
    assert_eq!(r.kvs().len(), 5);
    assert!(!r.more(), "limit == count: no more");

    let r = c.get("p/", Some(opts().with_limit(10))).await.unwrap();
    assert_eq!(r.kvs().len(), 5);
    assert!(!r.more());

    let r = c.get("p/", Some(opts().with_limit(0))).await.unwrap();
    assert_eq!(r.kvs().len(), 5, "limit 0 is unlimited");
    assert!(!r.more());
}

#[tokio::test]
async fn range_at_past_revisions() {
    let (_s, mut c) = start().await;
    let r1 = put(&mut c, "k", "v1").await;
    let r2 = put(&mut c, "k", "v2").await;
    let r3 = hrev(c.delete("k", None).await.unwrap().header());
    let r4 = put(&mut c, "other", "o").await;

    let at = |rev| Some(GetOptions::new().with_revision(rev));
    let g = c.get("k", at(r1)).await.unwrap();
    assert_eq!(values_of(g.kvs()), ["v1"]);
    assert_eq!(g.kvs()[0].mod_revision(), r1);
    assert_eq!(g.kvs()[0].version(), 1);
    assert_eq!(
        hrev(g.header()),
        r4,
        "header revision is the current revision, not the requested one"
    );
    let g = c.get("k", at(r2)).await.unwrap();
    assert_eq!(values_of(g.kvs()), ["v2"]);
    assert_eq!(g.kvs()[0].version(), 2);
    assert_eq!(g.kvs()[0].create_revision(), r1);
    let g = c.get("k", at(r3)).await.unwrap();
    assert!(g.kvs().is_empty(), "deleted at r3");
    assert_eq!(g.count(), 0);
    // Before the key existed.
    let g = c.get("k", at(r1 - 1)).await.unwrap();
    assert!(g.kvs().is_empty());
    // A range at a past revision counts what existed then.
    let g = c
        .get(
            "",
            Some(GetOptions::new().with_all_keys().with_revision(r2)),
        )
        .await
        .unwrap();
    assert_eq!(g.count(), 1);
    // Current revision explicitly.
    let g = c.get("other", at(r4)).await.unwrap();
    assert_eq!(values_of(g.kvs()), ["o"]);
    // Revision 0 means current.
    let g = c.get("other", at(0)).await.unwrap();
    assert_eq!(values_of(g.kvs()), ["o"]);
}

#[tokio::test]
async fn range_future_revision_is_an_error() {
    let (_s, mut c) = start().await;
    let r = put(&mut c, "k", "v").await;
    assert_status(
        c.get("k", Some(GetOptions::new().with_revision(r + 1)))
            .await,
        Code::OutOfRange,
        FUTURE,
    );
    assert_status(
        c.get("k", Some(GetOptions::new().with_revision(r + 1000)))
            .await,
        Code::OutOfRange,
        FUTURE,
    );
}

#[tokio::test]
async fn compact_then_range_below_it() {
    let (_s, mut c) = start().await;
    let r1 = put(&mut c, "k", "v1").await;
    let r2 = put(&mut c, "k", "v2").await;
    put(&mut c, "gone", "x").await;
    let r4 = hrev(c.delete("gone", None).await.unwrap().header());
    let r5 = put(&mut c, "k", "v3").await;

    let resp = c.compact(r4, None).await.unwrap();
    assert_eq!(
        hrev(resp.header()),
        r5,
        "compaction does not change the revision"
    );

    let at = |rev| Some(GetOptions::new().with_revision(rev));
    assert_status(c.get("k", at(r1)).await, Code::OutOfRange, COMPACTED);
    assert_status(c.get("k", at(r2)).await, Code::OutOfRange, COMPACTED);
    assert_status(c.get("k", at(r4 - 1)).await, Code::OutOfRange, COMPACTED);
    // The compaction revision itself is still readable.
    let g = c.get("k", at(r4)).await.unwrap();
    assert_eq!(values_of(g.kvs()), ["v2"]);
    assert_eq!(
        g.kvs()[0].create_revision(),
        r1,
        "live key keeps its create revision"
    );
    assert_eq!(g.kvs()[0].version(), 2);
    let g = c.get("gone", at(r4)).await.unwrap();
    assert!(g.kvs().is_empty());
    let g = c.get("k", None).await.unwrap();
    assert_eq!(values_of(g.kvs()), ["v3"]);
    assert_eq!(g.kvs()[0].version(), 3);
    // A put after compaction still counts versions from the old history.
    put(&mut c, "k", "v4").await;
    let g = c.get("k", None).await.unwrap();
    assert_eq!(g.kvs()[0].version(), 4);
    assert_eq!(g.kvs()[0].create_revision(), r1);

    // Compacting again at or below the compacted revision, or in the future, fails.
    assert_status(c.compact(r4, None).await, Code::OutOfRange, COMPACTED);
    assert_status(c.compact(r2, None).await, Code::OutOfRange, COMPACTED);
    assert_status(c.compact(r5 + 100, None).await, Code::OutOfRange, FUTURE);
    // Physical compaction is accepted.
    c.compact(r5, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    assert_status(c.get("k", at(r4)).await, Code::OutOfRange, COMPACTED);
}

#[tokio::test]
async fn range_sort_orders_and_targets() {
    let (_s, mut c) = start().await;
    // keys in order a,b,c,d; values in order d<c<b<a reversed; versions vary.
    put(&mut c, "c", "2").await; // create order: c, a, d, b
    put(&mut c, "a", "4").await;
    put(&mut c, "d", "1").await;
    put(&mut c, "b", "3").await;
    put(&mut c, "d", "1").await; // d: version 2, newest mod
    put(&mut c, "d", "1").await; // d: version 3
    put(&mut c, "a", "4").await; // a: version 2, newest mod

    async fn sorted(
        c: &mut etcd_client::Client,
        t: SortTarget,
        o: SortOrder,
        limit: i64,
    ) -> (Vec<String>, bool, i64) {
        let r = c
            .get(
                "",
                Some(
                    GetOptions::new()
                        .with_all_keys()
                        .with_sort(t, o)
                        .with_limit(limit),
                ),
            )
            .await
            .unwrap();
        (keys_of(r.kvs()), r.more(), r.count())
    }
    use SortOrder::*;
    use SortTarget::*;
    assert_eq!(sorted(&mut c, Key, Ascend, 0).await.0, ["a", "b", "c", "d"]);
    assert_eq!(
        sorted(&mut c, Key, Descend, 0).await.0,
        ["d", "c", "b", "a"]
    );
    assert_eq!(sorted(&mut c, Key, None, 0).await.0, ["a", "b", "c", "d"]);
    assert_eq!(
        sorted(&mut c, Value, Ascend, 0).await.0,
        ["d", "c", "b", "a"]
    );
    assert_eq!(
        sorted(&mut c, Value, Descend, 0).await.0,
        ["a", "b", "c", "d"]
    );
    // Order NONE with a target other than KEY sorts ascending.
    assert_eq!(sorted(&mut c, Value, None, 0).await.0, ["d", "c", "b", "a"]);
    assert_eq!(
        sorted(&mut c, Create, Ascend, 0).await.0,
        ["c", "a", "d", "b"]
    );
    assert_eq!(
        sorted(&mut c, Create, Descend, 0).await.0,
        ["b", "d", "a", "c"]
    );
    assert_eq!(sorted(&mut c, Mod, Ascend, 0).await.0, ["c", "b", "d", "a"]);
    assert_eq!(
        sorted(&mut c, Mod, Descend, 0).await.0,
        ["a", "d", "b", "c"]
    );
    let by_version = sorted(&mut c, Version, Descend, 0).await.0;
    assert_eq!(by_version[0], "d", "d has version 3");
    assert_eq!(by_version[1], "a", "a has version 2");
    // Sort applies to the whole range before the limit.
    let (keys, more, count) = sorted(&mut c, Key, Descend, 2).await;
    assert_eq!(keys, ["d", "c"]);
    assert!(more);
    assert_eq!(count, 4);
    let (keys, more, _) = sorted(&mut c, Value, Ascend, 3).await;
    assert_eq!(keys, ["d", "c", "b"]);
    assert!(more);
}

#[tokio::test]
async fn range_serializable() {
    let (_s, mut c) = start().await;
    let rev = put(&mut c, "k", "v").await;
    let r = c
        .get("k", Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert_eq!(values_of(r.kvs()), ["v"]);
    assert_eq!(hrev(r.header()), rev);
}

#[tokio::test]
async fn range_keys_only_and_count_only() {
    let (_s, mut c) = start().await;
    for i in 0..4 {
        put(&mut c, &format!("x/{i}"), "value").await;
    }
    let r = c
        .get("x/", Some(GetOptions::new().with_prefix().with_keys_only()))
        .await
        .unwrap();
    assert_eq!(keys_of(r.kvs()), ["x/0", "x/1", "x/2", "x/3"]);
    assert!(r.kvs().iter().all(|kv| kv.value().is_empty()));
    assert!(r
        .kvs()
        .iter()
        .all(|kv| kv.mod_revision() > 0 && kv.version() == 1));
    assert_eq!(r.count(), 4);

    let r = c
        .get(
            "x/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_keys_only()
                    .with_limit(3),
            ),
        )
        .await
        .unwrap();
    assert_eq!(r.kvs().len(), 3);
    assert!(r.more());
    assert_eq!(r.count(), 4);

    let r = c
        .get(
            "x/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert!(r.kvs().is_empty());
    assert_eq!(r.count(), 4);
    assert!(!r.more());

    let r = c
        .get(
            "x/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_count_only()
                    .with_limit(1),
            ),
        )
        .await
        .unwrap();
    assert!(r.kvs().is_empty());
    assert_eq!(r.count(), 4);
}

#[tokio::test]
async fn range_min_max_mod_and_create_revision() {
    let (_s, mut c) = start().await;
    let ra = put(&mut c, "f/a", "1").await;
    let rb = put(&mut c, "f/b", "1").await;
    let rc = put(&mut c, "f/c", "1").await;
    let ra2 = put(&mut c, "f/a", "2").await; // a: create ra, mod ra2
    let _ = (rc, ra2);

    async fn keys(c: &mut etcd_client::Client, o: GetOptions) -> (Vec<String>, i64) {
        let r = c.get("f/", Some(o.with_prefix())).await.unwrap();
        (keys_of(r.kvs()), r.count())
    }
    let (k, count) = keys(&mut c, GetOptions::new().with_min_mod_revision(rc)).await;
    assert_eq!(k, ["f/a", "f/c"]);
    assert_eq!(count, 3, "count is taken before the revision filters");
    let (k, _) = keys(&mut c, GetOptions::new().with_max_mod_revision(rc)).await;
    assert_eq!(k, ["f/b", "f/c"]);
    let (k, _) = keys(&mut c, GetOptions::new().with_min_create_revision(rb)).await;
    assert_eq!(k, ["f/b", "f/c"]);
    let (k, _) = keys(&mut c, GetOptions::new().with_max_create_revision(rb)).await;
    assert_eq!(k, ["f/a", "f/b"]);
    let (k, _) = keys(
        &mut c,
        GetOptions::new()
            .with_min_create_revision(ra)
            .with_max_create_revision(ra)
            .with_min_mod_revision(ra2),
    )
    .await;
    assert_eq!(k, ["f/a"]);
    // Filters are applied before the limit.
    let r = c
        .get(
            "f/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_min_mod_revision(rc)
                    .with_limit(1),
            ),
        )
        .await
        .unwrap();
    assert_eq!(keys_of(r.kvs()), ["f/a"]);
    assert!(r.more());
}

#[tokio::test]
async fn put_prev_kv_and_header() {
    let (_s, mut c) = start().await;
    let r = c
        .put("k", "v1", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert!(r.prev_key().is_none(), "no prev_kv for a created key");
    let rev1 = hrev(r.header());
    let r = c
        .put("k", "v2", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(hrev(r.header()), rev1 + 1);
    let p = r.prev_key().expect("prev_kv of an update");
    assert_eq!(p.value(), b"v1");
    assert_eq!(p.mod_revision(), rev1);
    assert_eq!(p.version(), 1);
    // Without the flag no prev_kv is returned.
    let r = c.put("k", "v3", None).await.unwrap();
    assert!(r.prev_key().is_none());
    // Empty values are allowed and distinct from absent keys.
    c.put("empty", "", None).await.unwrap();
    let g = c.get("empty", None).await.unwrap();
    assert_eq!(g.count(), 1);
    assert_eq!(g.kvs()[0].value(), b"");
    // Binary keys and values round-trip.
    let key = vec![0u8, 1, 0xff, b'k'];
    let val = vec![0xffu8, 0, 7];
    c.put(key.clone(), val.clone(), None).await.unwrap();
    let g = c.get(key.clone(), None).await.unwrap();
    assert_eq!(g.kvs()[0].value(), &val[..]);
}

#[tokio::test]
async fn put_with_lease_and_unknown_lease() {
    let (_s, mut c) = start().await;
    let l = c.lease_grant(60, None).await.unwrap().id();
    c.put("k", "v", Some(PutOptions::new().with_lease(l)))
        .await
        .unwrap();
    assert_eq!(c.get("k", None).await.unwrap().kvs()[0].lease(), l);
    let rev = current_rev(&mut c).await;
    assert_status(
        c.put("k2", "v", Some(PutOptions::new().with_lease(424242)))
            .await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    assert_eq!(
        current_rev(&mut c).await,
        rev,
        "a failed put writes nothing"
    );
    assert!(c.get("k2", None).await.unwrap().kvs().is_empty());
    // A put without lease detaches the key from its lease.
    c.put("k", "v2", None).await.unwrap();
    assert_eq!(c.get("k", None).await.unwrap().kvs()[0].lease(), 0);
}

#[tokio::test]
async fn put_ignore_value_and_ignore_lease() {
    let (_s, mut c) = start().await;
    let l = c
        .lease_grant(60, Some(LeaseGrantOptions::new()))
        .await
        .unwrap()
        .id();
    let r1 = hrev(
        c.put("k", "original", Some(PutOptions::new().with_lease(l)))
            .await
            .unwrap()
            .header(),
    );
    // ignore_value: value kept, lease replaced (none given → 0), version/mod bumped.
    let r = c
        .put(
            "k",
            "",
            Some(PutOptions::new().with_ignore_value().with_prev_key()),
        )
        .await
        .unwrap();
    let r2 = hrev(r.header());
    assert_eq!(r2, r1 + 1);
    assert_eq!(r.prev_key().unwrap().value(), b"original");
    let kv = c.get("k", None).await.unwrap().kvs()[0].clone();
    assert_eq!(kv.value(), b"original");
    assert_eq!(kv.version(), 2);
    assert_eq!(kv.mod_revision(), r2);
    assert_eq!(kv.lease(), 0);

    // ignore_lease: lease kept, value replaced.
    c.put("k", "v", Some(PutOptions::new().with_lease(l)))
        .await
        .unwrap();
    c.put("k", "new", Some(PutOptions::new().with_ignore_lease()))
        .await
        .unwrap();
    let kv = c.get("k", None).await.unwrap().kvs()[0].clone();
    assert_eq!((kv.value(), kv.lease()), (&b"new"[..], l));

    // Both on a missing key, or a value/lease given with the flag: errors.
    assert_status(
        c.put("missing", "", Some(PutOptions::new().with_ignore_value()))
            .await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    assert_status(
        c.put("missing", "v", Some(PutOptions::new().with_ignore_lease()))
            .await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    assert_status(
        c.put("k", "x", Some(PutOptions::new().with_ignore_value()))
            .await,
        Code::InvalidArgument,
        "etcdserver: value is provided",
    );
    assert_status(
        c.put(
            "k",
            "x",
            Some(PutOptions::new().with_ignore_lease().with_lease(l)),
        )
        .await,
        Code::InvalidArgument,
        "etcdserver: lease is provided",
    );
}

#[tokio::test]
async fn empty_key_is_rejected() {
    let (_s, mut c) = start().await;
    assert_status(
        c.put("", "v", None).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    assert_status(
        c.get("", None).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    assert_status(
        c.delete("", None).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
}

#[tokio::test]
async fn delete_single_with_prev_kv() {
    let (_s, mut c) = start().await;
    let r1 = put(&mut c, "k", "v").await;
    let d = c
        .delete("k", Some(DeleteOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(d.deleted(), 1);
    assert_eq!(hrev(d.header()), r1 + 1);
    assert_eq!(d.prev_kvs().len(), 1);
    assert_eq!(d.prev_kvs()[0].value(), b"v");
    assert_eq!(d.prev_kvs()[0].mod_revision(), r1);
    // Deleting a missing key is not an error and does not bump the revision.
    let d = c
        .delete("k", Some(DeleteOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(d.deleted(), 0);
    assert!(d.prev_kvs().is_empty());
    assert_eq!(hrev(d.header()), r1 + 1);
    // Without prev_kv flag: only the count.
    put(&mut c, "k", "v").await;
    let d = c.delete("k", None).await.unwrap();
    assert_eq!(d.deleted(), 1);
    assert!(d.prev_kvs().is_empty());
}

#[tokio::test]
async fn delete_ranges_prefix_and_from_key() {
    let (_s, mut c) = start().await;
    for k in ["a", "b/1", "b/2", "b/3", "c", "d", "e"] {
        put(&mut c, k, k).await;
    }
    let before = current_rev(&mut c).await;
    let d = c
        .delete(
            "b/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(d.deleted(), 3);
    assert_eq!(keys_of(d.prev_kvs()), ["b/1", "b/2", "b/3"]);
    assert_eq!(
        hrev(d.header()),
        before + 1,
        "a range delete is one revision"
    );
    let d = c
        .delete("a", Some(DeleteOptions::new().with_range("c\0")))
        .await
        .unwrap();
    assert_eq!(d.deleted(), 2, "[a, c\\0) holds a and c");
    let d = c
        .delete("d", Some(DeleteOptions::new().with_from_key()))
        .await
        .unwrap();
    assert_eq!(d.deleted(), 2);
    let g = c
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    assert_eq!(g.count(), 0);
    assert_eq!(current_rev(&mut c).await, before + 3);
    // History of the deleted range is still visible before the delete.
    let g = c
        .get(
            "b/",
            Some(GetOptions::new().with_prefix().with_revision(before)),
        )
        .await
        .unwrap();
    assert_eq!(g.count(), 3);
}

#[tokio::test]
async fn values_of_every_size_around_the_message_buffers_come_back_whole() {
    // The server's gRPC buffers start at 512 bytes and grow to a message's length (see
    // src/grpc_codec.rs): messages just under, at and over that size, and over tonic's
    // 8 KiB default, must arrive intact in each direction.
    let (_s, mut c) = start().await;
    let mut w = c
        .watch(
            "sized/",
            Some(etcd_client::WatchOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let id = expect_created(&mut w).await;
    let sizes = [
        0usize,
        1,
        400,
        490,
        500,
        505,
        506,
        507,
        511,
        512,
        513,
        1000,
        8180,
        8191,
        8192,
        8193,
        65_536,
        1 << 20,
    ];
    let value = |size: usize| -> Vec<u8> { (0..size).map(|i| (i % 251) as u8).collect() };
    for size in sizes {
        let key = format!("sized/{size:08}");
        c.put(key.as_str(), value(size), None).await.unwrap();
        let got = c.get(key.as_str(), None).await.unwrap();
        assert_eq!(got.kvs().len(), 1, "{key}");
        assert_eq!(got.kvs()[0].value(), value(size).as_slice(), "{key}");
        let events = next_events(&mut w, id, 1).await;
        let kv = events[0].kv().unwrap();
        assert_eq!(kv.key(), key.as_bytes());
        assert_eq!(
            kv.value(),
            value(size).as_slice(),
            "{key} in its watch event"
        );
    }
    // One answer with all of them (1.1 MiB).
    let all = c
        .get("sized/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(all.kvs().len(), sizes.len());
    for (kv, size) in all.kvs().iter().zip(sizes) {
        assert_eq!(
            kv.value(),
            value(size).as_slice(),
            "size {size} in the list"
        );
    }
}
