//! `range KEY [END] --consistency l|s`: each request reads the same key or range, as etcd
//! benchmark `range`.

use anyhow::{Context, Result};
use etcd_client::{GetOptions, KvClient};

use super::Ctx;
use crate::cli::{Consistency, RangeOpts};
use crate::keys::random_value;
use crate::report::Report;
use crate::runner::{self, OpFuture, Worker};

struct RangeWorker {
    kv: KvClient,
    key: Vec<u8>,
    options: GetOptions,
}

impl Worker for RangeWorker {
    fn call(&mut self, _seq: u64) -> OpFuture<'_> {
        Box::pin(async move {
            self.kv
                .get(self.key.clone(), Some(self.options.clone()))
                .await?;
            Ok("range")
        })
    }
}

pub async fn run(ctx: &Ctx, o: &RangeOpts) -> Result<Report> {
    if o.put_first {
        ctx.pool
            .client(0)
            .kv_client()
            .put(o.key.clone(), random_value(ctx.val_size), None)
            .await
            .context("writing the key to range over")?;
    }
    let mut options = GetOptions::new();
    if let Some(end) = &o.end {
        options = options.with_range(end.clone());
    }
    if o.consistency == Consistency::S {
        options = options.with_serializable();
    }
    let workers = (0..ctx.clients)
        .map(|i| RangeWorker {
            kv: ctx.pool.client(i).kv_client(),
            key: o.key.clone().into_bytes(),
            options: options.clone(),
        })
        .collect();
    let out = runner::run(workers, &ctx.limits(10_000)).await;
    let name = match o.consistency {
        Consistency::L => "range-l",
        Consistency::S => "range-s",
    };
    Ok(Report::from_outcome(name, &out))
}
