//! `txn-put`: each request is a transaction of `--txn-ops` puts with no comparisons, keys
//! taken sequentially from the key space, as etcd benchmark `txn-put`.

use anyhow::Result;
use bytes::Bytes;
use raftkine::proto::etcdserverpb::{request_op, PutRequest, RequestOp, TxnRequest, TxnResponse};

use super::Ctx;
use crate::cli::TxnPutOpts;
use crate::grpc::{path, GrpcConn};
use crate::keys::{random_value, KeyGen};
use crate::report::Report;
use crate::runner::{self, OpFuture, Worker};

struct TxnPutWorker {
    conn: GrpcConn,
    keys: KeyGen,
    ops: u64,
    value: Bytes,
}

impl Worker for TxnPutWorker {
    fn call(&mut self, seq: u64) -> OpFuture<'_> {
        Box::pin(async move {
            let success = (0..self.ops)
                .map(|j| RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: self.keys.key_of(seq * self.ops + j),
                        value: self.value.clone(),
                        ..Default::default()
                    })),
                })
                .collect();
            let request = TxnRequest {
                success,
                ..Default::default()
            };
            let _: TxnResponse = self.conn.unary(path::TXN, &request).await?;
            Ok("txn-put")
        })
    }
}

pub async fn run(ctx: &Ctx, o: &TxnPutOpts) -> Result<Report> {
    let value = Bytes::from(random_value(ctx.val_size));
    // etcd's txn-put always walks the key space sequentially (modulo its size).
    let keys = KeyGen::new(ctx.global.key_size, ctx.global.key_space_size, true);
    let lean = ctx.lean().await?;
    let workers = (0..ctx.clients)
        .map(|i| TxnPutWorker {
            conn: lean.conn(i),
            keys: keys.clone(),
            ops: o.txn_ops.max(1) as u64,
            value: value.clone(),
        })
        .collect();
    let out = runner::run(workers, &ctx.limits(10_000)).await;
    Ok(Report::from_outcome("txn-put", &out))
}
