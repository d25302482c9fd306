//! KV.Txn: compares, branches, nesting, revisions and errors.

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use tonic::Code;

use crate::common::*;

async fn succeeded(c: &mut etcd_client::Client, cmp: Compare) -> bool {
    c.txn(Txn::new().when(vec![cmp])).await.unwrap().succeeded()
}

#[tokio::test]
async fn compare_value_all_operators() {
    let (_s, mut c) = start().await;
    put(&mut c, "k", "m").await;
    use CompareOp::*;
    assert!(succeeded(&mut c, Compare::value("k", Equal, "m")).await);
    assert!(!succeeded(&mut c, Compare::value("k", Equal, "n")).await);
    assert!(succeeded(&mut c, Compare::value("k", NotEqual, "n")).await);
    assert!(!succeeded(&mut c, Compare::value("k", NotEqual, "m")).await);
    assert!(succeeded(&mut c, Compare::value("k", Greater, "a")).await);
    assert!(succeeded(&mut c, Compare::value("k", Greater, "")).await);
    assert!(!succeeded(&mut c, Compare::value("k", Greater, "m")).await);
    assert!(succeeded(&mut c, Compare::value("k", Less, "z")).await);
    assert!(succeeded(&mut c, Compare::value("k", Less, "ma")).await);
    assert!(!succeeded(&mut c, Compare::value("k", Less, "m")).await);
    // A value compare on a missing key always fails, even NotEqual.
    assert!(!succeeded(&mut c, Compare::value("nokey", Equal, "")).await);
    assert!(!succeeded(&mut c, Compare::value("nokey", NotEqual, "x")).await);
}

#[tokio::test]
async fn compare_version_create_mod_and_lease() {
    let (_s, mut c) = start().await;
    let r1 = put(&mut c, "k", "a").await;
    let r2 = put(&mut c, "k", "b").await;
    use CompareOp::*;
    assert!(succeeded(&mut c, Compare::version("k", Equal, 2)).await);
    assert!(succeeded(&mut c, Compare::version("k", Greater, 1)).await);
    assert!(succeeded(&mut c, Compare::version("k", Less, 3)).await);
    assert!(succeeded(&mut c, Compare::version("k", NotEqual, 1)).await);
    assert!(!succeeded(&mut c, Compare::version("k", Less, 2)).await);
    assert!(succeeded(&mut c, Compare::create_revision("k", Equal, r1)).await);
    assert!(!succeeded(&mut c, Compare::create_revision("k", Equal, r2)).await);
    assert!(succeeded(&mut c, Compare::create_revision("k", Less, r2)).await);
    assert!(succeeded(&mut c, Compare::mod_revision("k", Equal, r2)).await);
    assert!(succeeded(&mut c, Compare::mod_revision("k", Greater, r1)).await);
    assert!(!succeeded(&mut c, Compare::mod_revision("k", NotEqual, r2)).await);
    // Missing keys compare as version/create/mod/lease 0.
    assert!(succeeded(&mut c, Compare::version("nokey", Equal, 0)).await);
    assert!(succeeded(&mut c, Compare::create_revision("nokey", Equal, 0)).await);
    assert!(succeeded(&mut c, Compare::mod_revision("nokey", Equal, 0)).await);
    assert!(succeeded(&mut c, Compare::mod_revision("nokey", Less, 1)).await);
    assert!(succeeded(&mut c, Compare::lease("nokey", Equal, 0)).await);

    let l = c.lease_grant(60, None).await.unwrap().id();
    c.put("leased", "v", Some(PutOptions::new().with_lease(l)))
        .await
        .unwrap();
    assert!(succeeded(&mut c, Compare::lease("leased", Equal, l)).await);
    assert!(succeeded(&mut c, Compare::lease("k", Equal, 0)).await);
    assert!(!succeeded(&mut c, Compare::lease("leased", Equal, 0)).await);
    assert!(succeeded(&mut c, Compare::lease("leased", Greater, 0)).await);
    assert!(succeeded(&mut c, Compare::lease("leased", NotEqual, l ^ 1)).await);
}

#[tokio::test]
async fn compare_over_ranges() {
    let (_s, mut c) = start().await;
    put(&mut c, "r/a", "1").await;
    put(&mut c, "r/b", "1").await;
    put(&mut c, "r/c", "2").await;
    use CompareOp::*;
    // Every key in the range must satisfy the compare.
    assert!(succeeded(&mut c, Compare::version("r/", Equal, 1).with_prefix()).await);
    assert!(!succeeded(&mut c, Compare::value("r/", Equal, "1").with_prefix()).await);
    assert!(succeeded(&mut c, Compare::value("r/", Less, "3").with_prefix()).await);
    assert!(succeeded(&mut c, Compare::value("r/a", Equal, "1").with_range("r/c")).await);
    assert!(!succeeded(&mut c, Compare::value("r/a", Equal, "1").with_range("r/d")).await);
    // An empty range: VALUE fails, other targets compare against zero values.
    assert!(!succeeded(&mut c, Compare::value("q/", Equal, "").with_prefix()).await);
    assert!(succeeded(&mut c, Compare::version("q/", Equal, 0).with_prefix()).await);
    // Several compares are ANDed.
    let t = Txn::new().when(vec![
        Compare::version("r/a", Equal, 1),
        Compare::value("r/c", Equal, "2"),
    ]);
    assert!(c.txn(t).await.unwrap().succeeded());
    let t = Txn::new().when(vec![
        Compare::version("r/a", Equal, 1),
        Compare::value("r/c", Equal, "1"),
    ]);
    assert!(!c.txn(t).await.unwrap().succeeded());
}

#[tokio::test]
async fn branches_and_op_responses() {
    let (_s, mut c) = start().await;
    let r0 = put(&mut c, "k", "v").await;
    put(&mut c, "del/1", "x").await;
    let t = Txn::new()
        .when(vec![Compare::value("k", CompareOp::Equal, "v")])
        .and_then(vec![
            TxnOp::put("k", "v2", Some(PutOptions::new().with_prev_key())),
            TxnOp::get("k", None),
            TxnOp::delete(
                "del/",
                Some(DeleteOptions::new().with_prefix().with_prev_key()),
            ),
            TxnOp::get("del/", Some(GetOptions::new().with_prefix())),
        ])
        .or_else(vec![TxnOp::put("failure", "ran", None)]);
    let resp = c.txn(t).await.unwrap();
    assert!(resp.succeeded());
    let rev = hrev(resp.header());
    assert_eq!(rev, r0 + 2);
    let ops = resp.op_responses();
    assert_eq!(ops.len(), 4);
    match &ops[0] {
        TxnOpResponse::Put(p) => {
            assert_eq!(p.prev_key().unwrap().value(), b"v");
            // Inner responses carry a header with the txn's revision.
            if let Some(h) = p.header() {
                assert_eq!(h.revision(), rev);
            }
        }
        o => panic!("expected put, got {o:?}"),
    }
    match &ops[1] {
        TxnOpResponse::Get(g) => {
            assert_eq!(
                values_of(g.kvs()),
                ["v2"],
                "a get sees the txn's earlier put"
            );
            assert_eq!(g.kvs()[0].mod_revision(), rev);
        }
        o => panic!("expected get, got {o:?}"),
    }
    match &ops[2] {
        TxnOpResponse::Delete(d) => {
            assert_eq!(d.deleted(), 1);
            assert_eq!(keys_of(d.prev_kvs()), ["del/1"]);
        }
        o => panic!("expected delete, got {o:?}"),
    }
    match &ops[3] {
        TxnOpResponse::Get(g) => assert_eq!(g.count(), 0, "a get sees the txn's delete"),
        o => panic!("expected get, got {o:?}"),
    }
    assert!(c.get("failure", None).await.unwrap().kvs().is_empty());

    // Failure branch.
    let t = Txn::new()
        .when(vec![Compare::value("k", CompareOp::Equal, "nope")])
        .and_then(vec![TxnOp::put("success", "ran", None)])
        .or_else(vec![
            TxnOp::put("failure", "ran", None),
            TxnOp::get("k", None),
        ]);
    let resp = c.txn(t).await.unwrap();
    assert!(!resp.succeeded());
    assert_eq!(hrev(resp.header()), rev + 1);
    let ops = resp.op_responses();
    assert_eq!(ops.len(), 2);
    assert!(matches!(ops[0], TxnOpResponse::Put(_)));
    assert!(c.get("success", None).await.unwrap().kvs().is_empty());
    assert_eq!(
        values_of(c.get("failure", None).await.unwrap().kvs()),
        ["ran"]
    );

    // An empty txn succeeds and writes nothing.
    let resp = c.txn(Txn::new()).await.unwrap();
    assert!(resp.succeeded());
    assert_eq!(hrev(resp.header()), rev + 1);
    assert!(resp.op_responses().is_empty());
}

#[tokio::test]
async fn one_revision_per_txn() {
    let (_s, mut c) = start().await;
    let r0 = put(&mut c, "x", "0").await;
    let t = Txn::new().and_then(vec![
        TxnOp::put("a", "1", None),
        TxnOp::put("b", "1", None),
        TxnOp::put("c", "1", None),
        TxnOp::delete("x", None),
    ]);
    let resp = c.txn(t).await.unwrap();
    let rev = hrev(resp.header());
    assert_eq!(rev, r0 + 1, "a txn with four writes is one revision");
    let g = c
        .get("a", Some(GetOptions::new().with_range("d")))
        .await
        .unwrap();
    assert_eq!(g.count(), 3);
    assert!(g.kvs().iter().all(|kv| kv.mod_revision() == rev));
    assert!(g.kvs().iter().all(|kv| kv.create_revision() == rev));

    // Read-only txns and txns whose writes do nothing do not bump the revision.
    let t = Txn::new().and_then(vec![TxnOp::get("a", None), TxnOp::get("b", None)]);
    assert_eq!(hrev(c.txn(t).await.unwrap().header()), rev);
    let t = Txn::new().and_then(vec![TxnOp::delete("nothing-here", None)]);
    assert_eq!(hrev(c.txn(t).await.unwrap().header()), rev);
    assert_eq!(current_rev(&mut c).await, rev);
    // A failed compare without writes in the failure branch: no revision.
    let t = Txn::new()
        .when(vec![Compare::version("a", CompareOp::Equal, 9)])
        .and_then(vec![TxnOp::put("a", "2", None)]);
    let resp = c.txn(t).await.unwrap();
    assert!(!resp.succeeded());
    assert_eq!(hrev(resp.header()), rev);
}

#[tokio::test]
async fn nested_txns() {
    let (_s, mut c) = start().await;
    put(&mut c, "flag", "on").await;
    let inner_ok = Txn::new()
        .when(vec![Compare::value("flag", CompareOp::Equal, "on")])
        .and_then(vec![TxnOp::put("inner", "success", None)])
        .or_else(vec![TxnOp::put("inner", "failure", None)]);
    let inner_fail = Txn::new()
        .when(vec![Compare::value("flag", CompareOp::Equal, "off")])
        .and_then(vec![TxnOp::put("inner2", "success", None)])
        .or_else(vec![
            TxnOp::put("inner2", "failure", None),
            TxnOp::get("inner", None),
        ]);
    let outer = Txn::new()
        .when(vec![Compare::version("flag", CompareOp::Equal, 1)])
        .and_then(vec![
            TxnOp::txn(inner_ok),
            TxnOp::txn(inner_fail),
            TxnOp::put("outer", "x", None),
        ]);
    let resp = c.txn(outer).await.unwrap();
    assert!(resp.succeeded());
    let rev = hrev(resp.header());
    let ops = resp.op_responses();
    assert_eq!(ops.len(), 3);
    match &ops[0] {
        TxnOpResponse::Txn(t) => {
            assert!(t.succeeded());
            assert_eq!(t.op_responses().len(), 1);
        }
        o => panic!("expected txn, got {o:?}"),
    }
    match &ops[1] {
        TxnOpResponse::Txn(t) => {
            assert!(!t.succeeded());
            let inner = t.op_responses();
            assert_eq!(inner.len(), 2);
            match &inner[1] {
                TxnOpResponse::Get(g) => assert_eq!(values_of(g.kvs()), ["success"]),
                o => panic!("expected get, got {o:?}"),
            }
        }
        o => panic!("expected txn, got {o:?}"),
    }
    for (k, v) in [("inner", "success"), ("inner2", "failure"), ("outer", "x")] {
        let g = c.get(k, None).await.unwrap();
        assert_eq!(values_of(g.kvs()), [v]);
        assert_eq!(
            g.kvs()[0].mod_revision(),
            rev,
            "nested writes share the revision"
        );
    }
}

#[tokio::test]
async fn duplicate_keys_are_rejected() {
    let (_s, mut c) = start().await;
    const DUP: &str = "etcdserver: duplicate key given in txn request";
    let rev = current_rev(&mut c).await;
    let t = Txn::new().and_then(vec![TxnOp::put("k", "1", None), TxnOp::put("k", "2", None)]);
    assert_status(c.txn(t).await, Code::InvalidArgument, DUP);
    // A put inside a deleted range.
    let t = Txn::new().and_then(vec![
        TxnOp::delete("a", Some(DeleteOptions::new().with_range("z"))),
        TxnOp::put("k", "2", None),
    ]);
    assert_status(c.txn(t).await, Code::InvalidArgument, DUP);
    // A put in a nested txn clashing with an outer put.
    let t = Txn::new().and_then(vec![
        TxnOp::put("k", "1", None),
        TxnOp::txn(Txn::new().and_then(vec![TxnOp::put("k", "2", None)])),
    ]);
    assert_status(c.txn(t).await, Code::InvalidArgument, DUP);
    assert_eq!(current_rev(&mut c).await, rev);

    // Allowed: the same key in the success and failure branches, reads of written keys,
    // and two overlapping deletes.
    let t = Txn::new()
        .and_then(vec![TxnOp::put("k", "s", None), TxnOp::get("k", None)])
        .or_else(vec![TxnOp::put("k", "f", None)]);
    assert!(c.txn(t).await.unwrap().succeeded());
    let t = Txn::new().and_then(vec![
        TxnOp::delete("k", None),
        TxnOp::delete("a", Some(DeleteOptions::new().with_range("z"))),
    ]);
    c.txn(t).await.unwrap();
}

#[tokio::test]
async fn too_many_operations() {
    let (_s, mut c) = start().await;
    let ops = |n: usize| -> Vec<TxnOp> {
        (0..n)
            .map(|i| TxnOp::put(format!("k{i}"), "v", None))
            .collect()
    };
    let resp = c.txn(Txn::new().and_then(ops(128))).await.unwrap();
    assert_eq!(resp.op_responses().len(), 128);
    let rev = hrev(resp.header());
    const MSG: &str = "etcdserver: too many operations in txn request";
    assert_status(
        c.txn(Txn::new().and_then(ops(129))).await,
        Code::InvalidArgument,
        MSG,
    );
    assert_status(
        c.txn(Txn::new().or_else(ops(129))).await,
        Code::InvalidArgument,
        MSG,
    );
    let cmps: Vec<Compare> = (0..129)
        .map(|i| Compare::version(format!("k{i}"), CompareOp::Equal, 1))
        .collect();
    assert_status(
        c.txn(Txn::new().when(cmps)).await,
        Code::InvalidArgument,
        MSG,
    );
    assert_eq!(current_rev(&mut c).await, rev);
}

#[tokio::test]
async fn txn_with_unknown_lease_fails_whole_txn() {
    let (_s, mut c) = start().await;
    let rev = current_rev(&mut c).await;
    let t = Txn::new().and_then(vec![
        TxnOp::put("a", "1", None),
        TxnOp::put("b", "1", Some(PutOptions::new().with_lease(987654321))),
    ]);
    assert_status(
        c.txn(t).await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    assert_eq!(current_rev(&mut c).await, rev);
    assert!(c.get("a", None).await.unwrap().kvs().is_empty());
}
