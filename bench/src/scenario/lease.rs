//! `lease-keepalive`: each client grants one lease (TTL 100 s) before the run; each request is
//! one keep-alive round trip on that client's keep-alive stream, as etcd benchmark
//! `lease-keepalive` (which uses KeepAliveOnce).

use anyhow::{anyhow, Result};
use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};
use tokio::task::JoinSet;

use super::Ctx;
use crate::report::Report;
use crate::runner::{self, OpFuture, Worker};

struct KeepAliveWorker {
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

impl Worker for KeepAliveWorker {
    fn call(&mut self, _seq: u64) -> OpFuture<'_> {
        Box::pin(async move {
            self.keeper.keep_alive().await?;
            match self.stream.message().await? {
                Some(resp) if resp.ttl() > 0 => Ok("keepalive"),
                Some(_) => Err(anyhow!("lease {} not found", self.keeper.id())),
                None => Err(anyhow!("keep-alive stream closed by the server")),
            }
        })
    }
}

pub async fn run(ctx: &Ctx) -> Result<Report> {
    let mut setup = JoinSet::new();
    for i in 0..ctx.clients {
        let mut lease = ctx.pool().await?.client(i).lease_client();
        setup.spawn(async move {
            let granted = lease.grant(100, None).await?;
            // Opening the stream makes (and waits for) a first keep-alive round trip.
            let (keeper, stream) = lease.keep_alive(granted.id()).await?;
            Ok::<_, anyhow::Error>(KeepAliveWorker { keeper, stream })
        });
    }
    let mut workers = Vec::with_capacity(ctx.clients);
    while let Some(joined) = setup.join_next().await {
        workers.push(joined??);
    }
    let out = runner::run(workers, &ctx.limits(10_000)).await;
    Ok(Report::from_outcome("lease-keepalive", &out))
}
