//! Request size and txn size limits.

use etcd_client::{Txn, TxnOp};
use tonic::Code;

use crate::common::*;
use crate::support::Server;

const TOO_LARGE: &str = "etcdserver: request is too large";

#[tokio::test]
async fn request_over_1_5_mib_is_too_large() {
    let (_s, mut c) = start().await;
    let rev = current_rev(&mut c).await;
    // Just under the default limit of 1.5 MiB (1,572,864 bytes): accepted.
    c.put("ok", vec![b'a'; 1_500_000], None).await.unwrap();
    let rev_ok = current_rev(&mut c).await;
    assert_eq!(rev_ok, rev + 1);
    // Over it (but under gRPC's own message limit): etcd's error.
    assert_status(
        c.put("big", vec![b'a'; 1_600_000], None).await,
        Code::InvalidArgument,
        TOO_LARGE,
    );
    // The limit is on the whole request: a txn of small puts adding up past it.
    let ops: Vec<TxnOp> = (0..16)
        .map(|i| TxnOp::put(format!("t{i}"), vec![b'b'; 100 * 1024], None))
        .collect();
    assert_status(
        c.txn(Txn::new().and_then(ops)).await,
        Code::InvalidArgument,
        TOO_LARGE,
    );
    assert_eq!(current_rev(&mut c).await, rev_ok, "nothing written");
    assert!(c.get("big", None).await.unwrap().kvs().is_empty());
}

#[tokio::test]
async fn request_far_over_the_limit_is_resource_exhausted() {
    let (_s, mut c) = start().await;
    // Past max-request-bytes + 512 KiB of gRPC overhead, the gRPC layer itself refuses the
    // message (etcd: ResourceExhausted "grpc: received message larger than max").
    let e = status_of(
        c.put("huge", vec![b'a'; 3 * 1024 * 1024], None)
            .await
            .expect_err("3 MiB put accepted"),
    );
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // The server keeps serving.
    put(&mut c, "after", "ok").await;
    assert!(c.get("huge", None).await.unwrap().kvs().is_empty());
}

#[tokio::test]
async fn max_request_bytes_flag() {
    if skip_on_etcd("max_request_bytes_flag") {
        return;
    }
    let s = Server::raftkine_with(&["--max-request-bytes", "4096"]);
    let mut c = s.client().await;
    c.put("small", vec![b'a'; 2000], None).await.unwrap();
    assert_status(
        c.put("big", vec![b'a'; 5000], None).await,
        Code::InvalidArgument,
        TOO_LARGE,
    );
}

#[tokio::test]
async fn max_txn_ops_flag() {
    if skip_on_etcd("max_txn_ops_flag") {
        return;
    }
    let s = Server::raftkine_with(&["--max-txn-ops", "4"]);
    let mut c = s.client().await;
    let ops = |n: usize| -> Vec<TxnOp> {
        (0..n)
            .map(|i| TxnOp::put(format!("k{i}"), "v", None))
            .collect()
    };
    c.txn(Txn::new().and_then(ops(4))).await.unwrap();
    assert_status(
        c.txn(Txn::new().and_then(ops(5))).await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    // A raised limit allows more than etcd's default 128.
    let s = Server::raftkine_with(&["--max-txn-ops", "300"]);
    let mut c = s.client().await;
    let r = c.txn(Txn::new().and_then(ops(200))).await.unwrap();
    assert_eq!(r.op_responses().len(), 200);
}
