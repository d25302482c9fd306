//! `range KEY [END] --consistency l|s`: each request reads the same key or range, as etcd
//! benchmark `range`.

use anyhow::{Context, Result};
use raftkine::proto::etcdserverpb::{PutRequest, PutResponse, RangeRequest, RangeResponse};

use super::Ctx;
use crate::cli::{Consistency, RangeOpts};
use crate::grpc::{path, GrpcConn};
use crate::keys::random_value;
use crate::report::Report;
use crate::runner::{self, OpFuture, Worker};

struct RangeWorker {
    conn: GrpcConn,
    request: RangeRequest,
}

impl Worker for RangeWorker {
    fn call(&mut self, _seq: u64) -> OpFuture<'_> {
        Box::pin(async move {
            let _: RangeResponse = self.conn.unary(path::RANGE, &self.request).await?;
            Ok("range")
        })
    }
}

pub async fn run(ctx: &Ctx, o: &RangeOpts) -> Result<Report> {
    let lean = ctx.lean().await?;
    if o.put_first {
        let put = PutRequest {
            key: o.key.clone().into_bytes(),
            value: random_value(ctx.val_size).into(),
            ..Default::default()
        };
        let _: PutResponse = lean
            .conn(0)
            .unary(path::PUT, &put)
            .await
            .context("writing the key to range over")?;
    }
    let request = RangeRequest {
        key: o.key.clone().into_bytes(),
        range_end: o.end.clone().map(String::into_bytes).unwrap_or_default(),
        serializable: o.consistency == Consistency::S,
        ..Default::default()
    };
    let workers = (0..ctx.clients)
        .map(|i| RangeWorker {
            conn: lean.conn(i),
            request: request.clone(),
        })
        .collect();
    let out = runner::run(workers, &ctx.limits(10_000)).await;
    let name = match o.consistency {
        Consistency::L => "range-l",
        Consistency::S => "range-s",
    };
    Ok(Report::from_outcome(name, &out))
}
