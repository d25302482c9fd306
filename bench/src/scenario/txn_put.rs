//! `txn-put`: each request is a transaction of `--txn-ops` puts with no comparisons, keys
//! taken sequentially from the key space, as etcd benchmark `txn-put`.

use std::sync::Arc;

use anyhow::Result;
use etcd_client::{KvClient, Txn, TxnOp};

use super::Ctx;
use crate::cli::TxnPutOpts;
use crate::keys::{random_value, KeyGen};
use crate::report::Report;
use crate::runner::{self, OpFuture, Worker};

struct TxnPutWorker {
    kv: KvClient,
    keys: KeyGen,
    ops: u64,
    value: Arc<Vec<u8>>,
}

impl Worker for TxnPutWorker {
    fn call(&mut self, seq: u64) -> OpFuture<'_> {
        Box::pin(async move {
            let ops: Vec<TxnOp> = (0..self.ops)
                .map(|j| {
                    let key = self.keys.key_of(seq * self.ops + j);
                    TxnOp::put(key, self.value.as_ref().clone(), None)
                })
                .collect();
            self.kv.txn(Txn::new().and_then(ops)).await?;
            Ok("txn-put")
        })
    }
}

pub async fn run(ctx: &Ctx, o: &TxnPutOpts) -> Result<Report> {
    let value = Arc::new(random_value(ctx.val_size));
    // etcd's txn-put always walks the key space sequentially (modulo its size).
    let keys = KeyGen::new(ctx.global.key_size, ctx.global.key_space_size, true);
    let workers = (0..ctx.clients)
        .map(|i| TxnPutWorker {
            kv: ctx.pool.client(i).kv_client(),
            keys: keys.clone(),
            ops: o.txn_ops.max(1) as u64,
            value: value.clone(),
        })
        .collect();
    let out = runner::run(workers, &ctx.limits(10_000)).await;
    Ok(Report::from_outcome("txn-put", &out))
}
