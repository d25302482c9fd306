//! `put`: each request writes one key (sequential or random in the key space) with a
//! `--val-size` value, as etcd benchmark `put`.

use anyhow::Result;
use bytes::Bytes;
use raftkine::proto::etcdserverpb::{PutRequest, PutResponse};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::Ctx;
use crate::grpc::{path, GrpcConn};
use crate::keys::{random_value, KeyGen};
use crate::report::Report;
use crate::runner::{self, OpFuture, Worker};

struct PutWorker {
    conn: GrpcConn,
    keys: KeyGen,
    value: Bytes,
    rng: StdRng,
}

impl Worker for PutWorker {
    fn call(&mut self, seq: u64) -> OpFuture<'_> {
        Box::pin(async move {
            let request = PutRequest {
                key: self.keys.key(seq, &mut self.rng),
                value: self.value.clone(),
                ..Default::default()
            };
            let _: PutResponse = self.conn.unary(path::PUT, &request).await?;
            Ok("put")
        })
    }
}

pub async fn run(ctx: &Ctx) -> Result<Report> {
    let value = Bytes::from(random_value(ctx.val_size));
    let lean = ctx.lean().await?;
    let workers = (0..ctx.clients)
        .map(|i| PutWorker {
            conn: lean.conn(i),
            keys: ctx.keys.clone(),
            value: value.clone(),
            rng: StdRng::from_entropy(),
        })
        .collect();
    let out = runner::run(workers, &ctx.limits(10_000)).await;
    Ok(Report::from_outcome("put", &out))
}
