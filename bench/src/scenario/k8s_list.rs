//! `k8s-list`: loads `--objects` objects of `--object-size` bytes under one resource prefix,
//! then each request is a full paginated list of it (`--limit` per page, later pages at the
//! first page's revision), as kube-apiserver serves a LIST with pagination. Latency is per full
//! list; pages per list and the load rate are extras.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use etcd_client::KvClient;

use super::k8s::{load_objects, paged_list};
use super::Ctx;
use crate::cli::K8sListOpts;
use crate::report::Report;
use crate::runner::{self, OpFuture, Worker};

const PREFIX: &str = "/registry/configmaps/bench/";

struct ListWorker {
    kv: KvClient,
    limit: i64,
    pages: Arc<AtomicU64>,
    items: Arc<AtomicU64>,
}

impl Worker for ListWorker {
    fn call(&mut self, _seq: u64) -> OpFuture<'_> {
        Box::pin(async move {
            let listed = paged_list(&mut self.kv, PREFIX.as_bytes(), self.limit, 0).await?;
            self.pages.fetch_add(listed.pages, Ordering::Relaxed);
            self.items.fetch_add(listed.items, Ordering::Relaxed);
            Ok("list")
        })
    }
}

pub async fn run(ctx: &Ctx, o: &K8sListOpts) -> Result<Report> {
    let keys: Vec<String> = (0..o.objects)
        .map(|i| format!("{PREFIX}object-{i:07}"))
        .collect();
    let load_start = Instant::now();
    load_objects(ctx, keys, o.object_size, 64).await?;
    let load_s = load_start.elapsed().as_secs_f64();

    let pages = Arc::new(AtomicU64::new(0));
    let items = Arc::new(AtomicU64::new(0));
    let pool = ctx.pool().await?;
    let workers = (0..ctx.clients)
        .map(|i| ListWorker {
            kv: pool
                .client(i)
                .kv_client()
                .max_decoding_message_size(64 << 20),
            limit: o.limit,
            pages: pages.clone(),
            items: items.clone(),
        })
        .collect();
    let out = runner::run(workers, &ctx.limits(50)).await;
    let mut report = Report::from_outcome("k8s-list", &out);
    let lists = report.requests.max(1) as f64;
    report.extra.insert("objects".into(), o.objects as f64);
    report.extra.insert("load_s".into(), load_s);
    report.extra.insert(
        "load_puts_per_s".into(),
        o.objects as f64 / load_s.max(1e-9),
    );
    report.extra.insert(
        "pages_per_list".into(),
        pages.load(Ordering::Relaxed) as f64 / lists,
    );
    report.extra.insert(
        "items_per_list".into(),
        items.load(Ordering::Relaxed) as f64 / lists,
    );
    Ok(report)
}
