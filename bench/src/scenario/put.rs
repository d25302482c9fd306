//! `put`: each request writes one key (sequential or random in the key space) with a
//! `--val-size` value, as etcd benchmark `put`.

use std::sync::Arc;

use anyhow::Result;
use etcd_client::KvClient;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::Ctx;
use crate::keys::{random_value, KeyGen};
use crate::report::Report;
use crate::runner::{self, OpFuture, Worker};

struct PutWorker {
    kv: KvClient,
    keys: KeyGen,
    value: Arc<Vec<u8>>,
    rng: StdRng,
}

impl Worker for PutWorker {
    fn call(&mut self, seq: u64) -> OpFuture<'_> {
        Box::pin(async move {
            let key = self.keys.key(seq, &mut self.rng);
            self.kv.put(key, self.value.as_ref().clone(), None).await?;
            Ok("put")
        })
    }
}

pub async fn run(ctx: &Ctx) -> Result<Report> {
    let value = Arc::new(random_value(ctx.val_size));
    let workers = (0..ctx.clients)
        .map(|i| PutWorker {
            kv: ctx.pool.client(i).kv_client(),
            keys: ctx.keys.clone(),
            value: value.clone(),
            rng: StdRng::from_entropy(),
        })
        .collect();
    let out = runner::run(workers, &ctx.limits(10_000)).await;
    Ok(Report::from_outcome("put", &out))
}
