//! `watch-get`: `--watch-events` puts to one key, then `--watchers` watchers (on `--streams`
//! streams) start watching it from the first of those revisions, so each has history to catch
//! up on; meanwhile one client on its own connection issues serializable gets. Reports the gets'
//! latency while the watchers catch up, as etcd benchmark `watch-get`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use etcd_client::{GetOptions, WatchOptions};
use tokio::task::JoinSet;

use super::Ctx;
use crate::cli::WatchGetOpts;
use crate::conn::Pool;
use crate::report::Report;
use crate::runner::Outcome;

const WATCH_KEY: &str = "watchkey";

/// Opens one stream of `watchers` watchers from `rev` and waits for all their events.
async fn catch_up(
    ctx_client: etcd_client::Client,
    watchers: usize,
    rev: i64,
    events_each: u64,
) -> Result<u64> {
    let mut client = ctx_client.watch_client();
    let options = WatchOptions::new().with_start_revision(rev);
    let mut stream = client.watch(WATCH_KEY, Some(options.clone())).await?;
    for _ in 1..watchers {
        stream.watch(WATCH_KEY, Some(options.clone())).await?;
    }
    let expected = events_each * watchers as u64;
    let mut events = 0;
    while events < expected {
        let resp = stream
            .message()
            .await?
            .ok_or_else(|| anyhow!("watch stream closed by the server"))?;
        if resp.canceled() {
            return Err(anyhow!("watch canceled: {}", resp.cancel_reason()));
        }
        events += resp.events().len() as u64;
    }
    Ok(events)
}

pub async fn run(ctx: &Ctx, o: &WatchGetOpts) -> Result<Report> {
    let mut kv = ctx.pool().await?.client(0).kv_client();
    let mut first_rev = 0;
    for i in 0..o.watch_events.max(1) {
        let resp = kv.put(WATCH_KEY, i.to_string(), None).await?;
        if i == 0 {
            first_rev = resp
                .header()
                .map(|h| h.revision())
                .ok_or_else(|| anyhow!("put response without a header"))?;
        }
    }

    let get_pool = Pool::connect(&ctx.global.endpoints, 1).await?;
    let mut get_kv = get_pool.client(0).kv_client();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_gets = stop.clone();
    let timeout = Duration::from_secs_f64(ctx.global.request_timeout);
    let getter = tokio::spawn(async move {
        let mut out = Outcome::default();
        let start = Instant::now();
        while !stop_gets.load(Ordering::Relaxed) {
            let began = Instant::now();
            let opts = GetOptions::new().with_serializable();
            match tokio::time::timeout(timeout, get_kv.get("abc", Some(opts))).await {
                Ok(Ok(_)) => {
                    let took = began.elapsed();
                    out.latencies.record(took);
                    out.by_kind.entry("get").or_default().record(took);
                }
                Ok(Err(e)) => out.record_error(e),
                Err(_) => out.record_error("get timed out"),
            }
        }
        out.elapsed = start.elapsed();
        out
    });

    let started = Instant::now();
    let streams = o.streams.max(1);
    let mut catchers = JoinSet::new();
    for s in 0..streams {
        let watchers = o.watchers / streams + usize::from(s < o.watchers % streams);
        if watchers == 0 {
            continue;
        }
        catchers.spawn(catch_up(
            ctx.pool().await?.client(s),
            watchers,
            first_rev,
            o.watch_events.max(1) as u64,
        ));
    }
    let limit = Duration::from_secs_f64(ctx.global.max_seconds.unwrap_or(120.0));
    let mut events = 0;
    let mut first_error = None;
    let waited = tokio::time::timeout(limit, async {
        while let Some(joined) = catchers.join_next().await {
            match joined.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok(n) => events += n,
                Err(e) => {
                    first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
    })
    .await;
    let catchup_s = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    catchers.abort_all();
    let mut out = getter.await.context("get task failed")?;
    if let Some(e) = first_error {
        out.record_error(e);
    }
    out.capped = waited.is_err();
    let mut report = Report::from_outcome("watch-get", &out);
    report.extra.insert("watchers".into(), o.watchers as f64);
    report.extra.insert("catchup_s".into(), catchup_s);
    report.extra.insert("events".into(), events as f64);
    Ok(report)
}
