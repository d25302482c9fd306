//! Scripted cases: fixed operation sequences covering each API feature and its edge cases (puts,
//! deletes, ranges at revisions, limits/sorting/filters, compaction, txns, leases, watches,
//! errors). Each test starts its own pair of empty servers, so revisions must agree exactly.

use etcd_client::{CompareOp as C, SortOrder, SortTarget};

use crate::ops::*;
use crate::pair::Pair;
use crate::watch::{watch, Stream2};

/// Keys used by the KV scripts: prefixes, neighbours, a key with a NUL byte, a high byte.
const KEYS: &[(&str, &str)] = &[
    ("a", "1"),
    ("b", "2"),
    ("c", "3"),
    ("a/1", "x"),
    ("a/2", "y"),
    ("b/1", "z"),
    ("k\0z", "nul-inside"),
    ("~", "tilde"),
];

async fn load_keys(p: &mut Pair) {
    for (k, v) in KEYS {
        p.run(put(k, v)).await;
    }
}

/// Ranges that cover the interesting shapes: single key, missing key, prefix, [a, b), from-key,
/// everything, an end before the key, the NUL key.
fn range_shapes() -> Vec<Range> {
    vec![
        get("a"),
        get("missing"),
        get("a").prefix(),
        get("a/").prefix(),
        get("a").end("c"),
        get("a/1").end("b/1"),
        get("b").through_last_key(),
        get("\0").through_last_key(),
        get("c").end("a"),
        get("k\0z"),
        get("k").prefix(),
    ]
}

#[tokio::test]
async fn scripted_puts_and_ranges() {
    let mut p = Pair::start("scripted_puts_and_ranges").await;
    p.run(get("a")).await;
    p.run(get("\0").through_last_key()).await;
    load_keys(&mut p).await;

    // Overwrites, prev_kv, empty value, ignore_value.
    p.run(put("a", "1b").prev_kv()).await;
    p.run(put("new", "n").prev_kv()).await;
    p.run(put("a", "").prev_kv()).await;
    p.run(put("a", "again")).await;
    p.run(put("b", "ignored").ignore_value().prev_kv()).await;
    p.run(put("b", "2b")).await;

    for shape in range_shapes() {
        p.run(shape.clone()).await;
        p.run(shape.clone().limit(1)).await;
        p.run(shape.clone().limit(2)).await;
        p.run(shape.clone().limit(100)).await;
        p.run(shape.clone().count_only()).await;
        p.run(shape.clone().count_only().limit(1)).await;
        p.run(shape.clone().keys_only()).await;
        p.run(shape.clone().keys_only().limit(2)).await;
        p.run(shape.clone().serializable()).await;
    }
    p.finish();
}

#[tokio::test]
async fn scripted_sorting_and_filters() {
    let mut p = Pair::start("scripted_sorting_and_filters").await;
    load_keys(&mut p).await;
    // Give keys different versions/values so every sort target orders differently.
    p.run(put("c", "0")).await;
    p.run(put("c", "00")).await;
    p.run(put("a/1", "zz")).await;
    p.run(put("b", "9")).await;

    let all = get("\0").through_last_key();
    let targets = [
        SortTarget::Key,
        SortTarget::Version,
        SortTarget::Create,
        SortTarget::Mod,
        SortTarget::Value,
    ];
    let orders = [SortOrder::None, SortOrder::Ascend, SortOrder::Descend];
    for t in targets {
        for o in orders {
            p.run(all.clone().sort(t, o)).await;
            p.run(all.clone().sort(t, o).limit(3)).await;
            p.run(get("a").prefix().sort(t, o).limit(1)).await;
            p.run(all.clone().sort(t, o).keys_only().limit(2)).await;
        }
    }

    // min/max mod/create revision filters, alone, with limit (count stays the range's total)
    // and with sorting; one-sided bounds.
    let rev = p.current_revision().await;
    for (lo, hi) in [
        (0, 0),
        (3, 0),
        (0, 5),
        (3, 8),
        (rev, rev),
        (rev + 1, 0),
        (5, 3),
    ] {
        p.run(all.clone().mod_between(lo, hi)).await;
        p.run(all.clone().create_between(lo, hi)).await;
        p.run(all.clone().mod_between(lo, hi).limit(2)).await;
        p.run(all.clone().create_between(lo, hi).count_only()).await;
        p.run(all.clone().mod_between(lo, hi).create_between(2, 6))
            .await;
        p.run(
            all.clone()
                .mod_between(lo, hi)
                .sort(SortTarget::Mod, SortOrder::Descend)
                .limit(2),
        )
        .await;
        p.run(all.clone().mod_between(lo, hi).rev(rev - 2)).await;
    }
    // count_only / keys_only combined with limit and sorting or filters (`more` included).
    for r in [
        all.clone().count_only().limit(2),
        all.clone()
            .count_only()
            .limit(2)
            .sort(SortTarget::Value, SortOrder::Ascend),
        all.clone().count_only().limit(2).mod_between(2, 0),
        all.clone().count_only().limit(2).create_between(0, 5),
        all.clone()
            .keys_only()
            .limit(2)
            .sort(SortTarget::Mod, SortOrder::Descend),
        all.clone().keys_only().limit(2).mod_between(3, 0),
        all.clone()
            .count_only()
            .limit(2)
            .sort(SortTarget::Value, SortOrder::Ascend)
            .create_between(3, 0),
    ] {
        p.run(r.clone()).await;
        p.run(txn().then(vec![r.clone().into()])).await; // the same read inside a txn
        p.run(txn().then(vec![put("zz", "w").into(), r.into()]))
            .await; // ... after a write
    }
    p.finish();
}

#[tokio::test]
async fn scripted_deletes() {
    let mut p = Pair::start("scripted_deletes").await;
    load_keys(&mut p).await;
    p.run(del("missing")).await;
    p.run(del("missing").prev_kv()).await;
    p.run(del("a").prev_kv()).await;
    p.run(del("a")).await;
    p.run(del("a/").prefix().prev_kv()).await;
    p.run(put("a", "back")).await; // version restarts at 1, new create_revision
    p.run(get("a")).await;
    p.run(del("b").end("c").prev_kv()).await;
    p.run(del("c").end("a")).await; // empty range
    p.run(del("k").through_last_key().prev_kv()).await;
    p.run(get("\0").through_last_key()).await;
    let before = p.current_revision().await;
    p.run(del("\0").through_last_key().prev_kv()).await;
    p.run(del("\0").through_last_key()).await; // nothing left: no new revision
    p.run(get("\0").through_last_key()).await;
    for r in 1..=before {
        p.run(get("\0").through_last_key().rev(r)).await;
    }
    p.finish();
}

#[tokio::test]
async fn scripted_revisions_and_compaction() {
    let mut p = Pair::start("scripted_revisions_and_compaction").await;
    for v in 1..=5 {
        p.run(put("a", &format!("v{v}"))).await;
        p.run(put(&format!("b/{v}"), "b")).await;
    }
    p.run(del("b/2")).await;
    p.run(put("b/2", "again")).await;
    let cur = p.current_revision().await;
    for r in [-1, 0, 1, 2, 3, 7, cur - 1, cur, cur + 1, cur + 100] {
        p.run(get("a").rev(r)).await;
        p.run(get("b/").prefix().rev(r)).await;
        p.run(get("b/").prefix().rev(r).limit(2)).await;
        p.run(get("b/").prefix().rev(r).count_only()).await;
    }

    // Compaction: reads below it fail, at it and above work; compacting again, below it, or in
    // the future fails.
    p.run(compact(5)).await;
    for r in [1, 4, 5, 6, cur] {
        p.run(get("a").rev(r)).await;
        p.run(get("\0").through_last_key().rev(r)).await;
    }
    p.run(compact(5)).await;
    p.run(compact(3)).await;
    p.run(compact(cur + 1)).await;
    p.run(compact(cur + 50)).await;
    p.run(Op::Compact {
        revision: cur - 2,
        physical: true,
    })
    .await;
    for r in [cur - 3, cur - 2, cur - 1, cur] {
        p.run(get("\0").through_last_key().rev(r)).await;
        p.run(get("b/").prefix().rev(r).mod_between(cur - 2, 0))
            .await;
    }
    // Versions survive compaction; a write after it continues them.
    p.run(put("a", "after").prev_kv()).await;
    p.run(get("a")).await;
    // Compact at the current revision: everything readable only at the head.
    let cur = p.current_revision().await;
    p.run(compact(cur)).await;
    p.run(get("\0").through_last_key().rev(cur - 1)).await;
    p.run(get("\0").through_last_key().rev(cur)).await;
    p.run(txn().then(vec![get("a").rev(cur - 1).into()])).await;
    p.finish();
}

#[tokio::test]
async fn scripted_txns() {
    let mut p = Pair::start("scripted_txns").await;
    p.run(grant(0x1000, 600)).await;
    p.run(put("a", "10").lease(0x1000)).await;
    p.run(put("b", "20")).await;
    p.run(put("b", "21")).await;
    p.run(put("r/1", "x")).await;
    p.run(put("r/2", "y")).await;

    // Every target and operator, on an existing and on a missing key.
    let ops = [C::Equal, C::NotEqual, C::Greater, C::Less];
    for key in ["a", "b", "missing"] {
        for op in ops {
            for c in [
                value(key, op, "20"),
                value(key, op, "21"),
                value(key, op, ""),
                version(key, op, 0),
                version(key, op, 2),
                create(key, op, 0),
                create(key, op, 3),
                modr(key, op, 0),
                modr(key, op, 4),
                lease(key, op, 0),
                lease(key, op, 0x1000),
            ] {
                let t = txn()
                    .when(vec![c])
                    .then(vec![get(key).into()])
                    .otherwise(vec![get("b").keys_only().into()]);
                p.run(t).await;
            }
        }
    }
    // Range compares: every key in the range must satisfy it.
    for c in [
        value("r/", C::Equal, "x").prefix(),
        value("r/", C::Greater, "a").prefix(),
        version("r/", C::Equal, 1).prefix(),
        modr("a", C::Greater, 0).end("c"),
        create("\0", C::Greater, 0).end("\0"),
        version("zz", C::Equal, 0).prefix(),
    ] {
        p.run(txn().when(vec![c]).then(vec![get("r/").prefix().into()]))
            .await;
    }
    // Several compares: all must hold.
    p.run(
        txn()
            .when(vec![value("b", C::Equal, "21"), version("a", C::Equal, 1)])
            .then(vec![put("c", "both").into()])
            .otherwise(vec![put("c", "neither").into()]),
    )
    .await;
    p.run(
        txn()
            .when(vec![value("b", C::Equal, "21"), version("a", C::Equal, 9)])
            .then(vec![put("c", "both").into()])
            .otherwise(vec![put("c", "not-both").prev_kv().into()]),
    )
    .await;

    // Empty txn; read-only txns do not create a revision; writes share one revision with
    // sub-revisions; reads see earlier writes of the same txn.
    p.run(txn()).await;
    p.run(txn().then(vec![
        get("a").into(),
        get("r/").prefix().count_only().into(),
    ]))
    .await;
    p.current_revision().await;
    p.run(txn().then(vec![
        put("t/1", "1").into(),
        get("t/1").into(),
        put("t/2", "2").prev_kv().into(),
        del("r/1").prev_kv().into(),
        get("\0").through_last_key().into(),
    ]))
    .await;
    p.run(txn().then(vec![del("nothing").into(), get("t/").prefix().into()]))
        .await;
    p.current_revision().await;

    // Nested txns in both branches, two levels deep.
    let inner = txn()
        .when(vec![version("t/1", C::Equal, 1)])
        .then(vec![put("t/1", "inner-then").into(), get("t/1").into()])
        .otherwise(vec![put("t/2", "inner-else").into()]);
    p.run(
        txn()
            .when(vec![value("b", C::Equal, "21")])
            .then(vec![inner.clone().into(), put("t/3", "outer").into()])
            .otherwise(vec![get("b").into()]),
    )
    .await;
    p.run(
        txn()
            .when(vec![value("b", C::Equal, "nope")])
            .then(vec![get("b").into()])
            .otherwise(vec![
                inner.clone().into(),
                txn().then(vec![inner.clone().into()]).into(),
            ]),
    )
    .await;

    // Duplicate keys: rejected within a branch (puts, put + delete, overlapping delete range,
    // across nesting levels), accepted across branches.
    for bad in [
        txn().then(vec![put("d", "1").into(), put("d", "2").into()]),
        txn().then(vec![put("d", "1").into(), del("d").into()]),
        txn().then(vec![put("d/1", "1").into(), del("d/").prefix().into()]),
        txn().otherwise(vec![put("d", "1").into(), put("d", "2").into()]),
        txn().then(vec![
            put("d", "1").into(),
            txn().then(vec![put("d", "2").into()]).into(),
        ]),
        txn().then(vec![del("d").into(), del("d").into()]),
        // etcd 3.4's check misses from-key ranges: this one is accepted.
        txn().then(vec![
            del("d").through_last_key().into(),
            put("d", "1").into(),
        ]),
    ] {
        p.run(bad).await;
    }
    p.run(
        txn()
            .then(vec![put("d", "then").into()])
            .otherwise(vec![put("d", "else").into()]),
    )
    .await;
    p.run(txn().then(vec![get("d").into(), get("d").into(), put("d", "x").into()]))
        .await;

    // Errors inside txns: unknown lease, compacted/future read, too many operations.
    p.run(txn().then(vec![put("e", "1").lease(0x9999).into()]))
        .await;
    let cur = p.current_revision().await;
    p.run(txn().then(vec![get("a").rev(cur + 10).into()])).await;
    let many: Vec<Op> = (0..129).map(|i| get(&format!("m{i}")).into()).collect();
    p.run(txn().then(many)).await;
    let ok: Vec<Op> = (0..128)
        .map(|i| put(&format!("m{i}"), "v").into())
        .collect();
    p.run(txn().then(ok)).await;

    // The four kube-apiserver shapes.
    p.run(
        txn()
            .when(vec![modr("/registry/pods/x", C::Equal, 0)])
            .then(vec![put("/registry/pods/x", "v1").lease(0x1000).into()]),
    )
    .await;
    let m = p.rev(get("/registry/pods/x")).await;
    for r in [m, m - 1] {
        p.run(
            txn()
                .when(vec![modr("/registry/pods/x", C::Equal, r)])
                .then(vec![put("/registry/pods/x", "v2").into()])
                .otherwise(vec![get("/registry/pods/x").into()]),
        )
        .await;
    }
    for t in [0, 1] {
        p.run(
            txn()
                .when(vec![version("compact_rev_key", C::Equal, t)])
                .then(vec![put("compact_rev_key", &m.to_string()).into()])
                .otherwise(vec![get("compact_rev_key").into()]),
        )
        .await;
    }
    let m = p.rev(get("/registry/pods/x")).await;
    p.run(
        txn()
            .when(vec![modr("/registry/pods/x", C::Equal, m)])
            .then(vec![del("/registry/pods/x").into()])
            .otherwise(vec![get("/registry/pods/x").into()]),
    )
    .await;
    p.finish();
}

#[tokio::test]
async fn scripted_errors() {
    let mut p = Pair::start("scripted_errors").await;
    p.run(put("", "empty key")).await;
    p.run(get("")).await;
    p.run(del("")).await;
    p.run(put("missing", "x").ignore_value()).await;
    p.run(put("missing", "").ignore_value()).await;
    p.run(put("missing", "x").ignore_lease()).await;
    p.run(put("k", "v").lease(12345)).await;
    p.run(put("k", "v")).await;
    p.run(put("k", "w").ignore_lease()).await;
    p.run(put("k", "w").ignore_lease().lease(1)).await;
    p.run(put("k", "w").ignore_value().ignore_lease().prev_kv())
        .await;
    p.run(put("k", "w").ignore_value().lease(99)).await;
    p.run(get("k").rev(100)).await;
    p.run(compact(100)).await;
    p.run(compact(0)).await;
    p.run(compact(-1)).await;
    p.run(revoke(777)).await;
    p.run(grant(1, 9_000_000_001)).await;
    p.run(grant(-5, 10)).await;
    p.finish();
}

#[tokio::test]
async fn scripted_leases() {
    let mut p = Pair::start("scripted_leases").await;
    p.run(grant(1000, 600)).await;
    p.run(grant(1000, 60)).await; // already exists
                                  // TTLs below etcd's minimum: the answer shows the TTL granted. Revoked at once, before they
                                  // could expire (expiry timing is not compared here).
    p.run(grant(1001, 1)).await;
    p.run(grant(1002, 0)).await;
    p.run(revoke(1001)).await;
    p.run(revoke(1002)).await;
    p.run(grant(1003, 300)).await;
    p.run(grant(i64::MAX, 300)).await;
    p.run(Op::Leases).await;
    p.run(put("l/1", "a").lease(1000)).await;
    p.run(put("l/2", "b").lease(1000).prev_kv()).await;
    p.run(put("l/3", "c").lease(1003)).await;
    p.run(put("l/4", "d").lease(4242)).await; // unknown lease
    p.run(get("l/").prefix()).await;
    p.run(time_to_live(1000)).await;
    p.run(Op::TimeToLive {
        id: 1000,
        keys: false,
    })
    .await;
    p.run(time_to_live(4242)).await;
    // ignore_lease keeps the lease; a plain put detaches it; moving to another lease.
    p.run(put("l/1", "a2").ignore_lease()).await;
    p.run(get("l/1")).await;
    p.run(put("l/1", "a3")).await;
    p.run(time_to_live(1000)).await;
    p.run(put("l/3", "c2").lease(1000)).await;
    p.run(time_to_live(1000)).await;
    p.run(time_to_live(1003)).await;
    p.run(
        txn()
            .when(vec![lease("l/2", C::Equal, 1000)])
            .then(vec![get("l/2").into()]),
    )
    .await;
    // Revoke deletes the attached keys in one revision; revoking twice fails; revoking a lease
    // without keys does not create a revision.
    p.run(revoke(1000)).await;
    p.run(get("l/").prefix()).await;
    let cur = p.current_revision().await;
    p.run(get("l/2").rev(cur - 1)).await;
    p.run(revoke(1000)).await;
    p.run(time_to_live(1000)).await;
    p.run(revoke(1003)).await;
    p.run(revoke(i64::MAX)).await;
    p.run(revoke(1001)).await;
    p.current_revision().await;
    p.run(Op::Leases).await;
    p.run(put("l/5", "e").lease(1000)).await;
    p.finish();
}

/// A lease that runs out deletes its keys in one revision and watchers see the deletes.
#[tokio::test]
async fn scripted_lease_expiry() {
    let mut p = Pair::start("scripted_lease_expiry").await;
    let s = Stream2::open(&p, watch("x/").prefix().prev_kv()).await;
    p.run(grant(5000, 2)).await;
    p.run(put("x/1", "a").lease(5000)).await;
    p.run(put("x/2", "b").lease(5000)).await;
    p.run(put("x/3", "kept")).await;
    let expired = p.current_revision().await + 1;
    // Expiry is timed: wait for it (etcd: TTL plus up to about a second) on each side.
    s.wait_revision(0, expired).await;
    p.run(get("x/").prefix()).await;
    p.run(time_to_live(5000)).await;
    p.run(Op::Leases).await;
    s.settle_and_compare(&mut p).await;
    p.finish();
}

/// Watches on several ranges with prev_kv and filters, fed puts, overwrites, deletes,
/// multi-write txns, a range delete and a lease revoke.
#[tokio::test]
async fn scripted_watches() {
    let mut p = Pair::start("scripted_watches").await;
    p.run(put("w/seed", "0")).await;
    let specs = [
        watch("w/").prefix(),
        watch("w/a").prev_kv(),
        watch("w/").prefix().no_put(),
        watch("w/").prefix().no_delete().prev_kv(),
        watch("w/b").through_last_key().prev_kv(),
        watch("w/a").end("w/c"),
    ];
    let mut streams = vec![];
    for s in specs {
        streams.push(Stream2::open(&p, s).await);
    }
    p.run(grant(77, 600)).await;
    p.run(put("w/a", "1")).await;
    p.run(put("w/a", "2")).await;
    p.run(put("w/b", "1").lease(77)).await;
    p.run(put("w/c", "1").lease(77)).await;
    p.run(put("x", "outside")).await;
    p.run(del("w/a")).await;
    p.run(put("w/a", "recreated")).await; // a create again: no prev_kv
    p.run(txn().then(vec![
        put("w/d", "1").into(),
        del("w/seed").into(),
        put("w/a", "in-txn").into(),
        put("w/e", "1").into(),
    ]))
    .await;
    p.run(del("w/d").end("w/f")).await;
    // Written and deleted in one txn (etcd 3.4 lets a from-key delete overlap a put): the
    // delete event's prev_kv is what the key held before the txn.
    p.run(txn().then(vec![
        put("w/c", "x").into(),
        del("w/c").through_last_key().into(),
    ]))
    .await;
    p.run(txn().then(vec![
        put("w/new", "x").into(),
        del("w/new").through_last_key().into(),
    ]))
    .await;
    p.run(revoke(77)).await;
    p.run(put("w/b", "after-revoke")).await;
    for s in &streams {
        s.settle_and_compare(&mut p).await;
    }

    // A watch from a past revision replays history (with prev_kv), and one from revision 1.
    let cur = p.current_revision().await;
    for spec in [
        watch("w/").prefix().start(3).prev_kv(),
        watch("w/a").start(1),
        watch("w/").prefix().start(cur - 3).no_delete(),
    ] {
        let s = Stream2::open(&p, spec).await;
        p.run(put("w/a", "live")).await;
        s.settle_and_compare(&mut p).await;
    }

    // A future start revision: nothing until it is reached.
    let cur = p.current_revision().await;
    let s = Stream2::open(&p, watch("w/").prefix().start(cur + 3)).await;
    for i in 0..5 {
        p.run(put("w/f", &i.to_string())).await;
    }
    s.settle_and_compare(&mut p).await;
    p.finish();
}

/// Several watches on one stream: server-chosen and client-chosen ids, a duplicate id, cancel,
/// progress request.
#[tokio::test]
async fn scripted_watch_stream() {
    let mut p = Pair::start("scripted_watch_stream").await;
    p.run(put("s/a", "0")).await;
    let mut s = Stream2::open(&p, watch("s/a")).await;
    s.add(watch("s/").prefix().prev_kv()).await;
    s.add(watch("s/b").id(7)).await;
    s.add(watch("s/c").id(7)).await; // duplicate id: refused
    s.add(watch("s/").prefix().no_delete()).await;
    p.run(put("s/a", "1")).await;
    p.run(put("s/b", "1")).await;
    p.run(del("s/a")).await;
    s.cancel(0).await;
    p.run(put("s/a", "after-cancel")).await;
    s.request_progress().await;
    for n in [1, 2, 4] {
        let upto = s.sentinel(&mut p, n).await;
        s.compare(&mut p, n, upto);
    }
    let cur = p.current_revision().await;
    s.compare(&mut p, 0, cur);
    s.compare(&mut p, 3, cur);
    p.finish();
}

/// A watch whose start revision is compacted is canceled with the compact revision.
#[tokio::test]
async fn scripted_watch_compacted() {
    let mut p = Pair::start("scripted_watch_compacted").await;
    for i in 0..6 {
        p.run(put("c/k", &i.to_string())).await;
    }
    p.run(compact(5)).await;
    for start in [1, 4] {
        let s = Stream2::open(&p, watch("c/").prefix().start(start)).await;
        s.wait_canceled(0).await;
        let cur = p.current_revision().await;
        s.compare(&mut p, 0, cur);
    }
    // At the compact revision itself the watch works.
    let s = Stream2::open(&p, watch("c/").prefix().start(5).prev_kv()).await;
    p.run(put("c/k", "live")).await;
    s.settle_and_compare(&mut p).await;
    p.finish();
}
