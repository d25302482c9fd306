//! `watch`: `--streams` watch streams with `--watchers-per-stream` watchers each, all on one
//! prefix; `--clients` put `--put-total` keys under it. Every put is an event for every
//! watcher. Reports events delivered per second and the put-to-event latency (each value
//! carries the time its put was sent), plus the puts' own rate.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use etcd_client::{KvClient, WatchOptions, WatchStream};
use tokio::sync::watch as signal;

use super::Ctx;
use crate::cli::WatchOpts;
use crate::report::Report;
use crate::runner::{self, OpFuture, Worker};
use crate::stats::Latencies;

const PREFIX: &str = "watch-bench/";
/// How long watchers may lag behind the last put before the run gives up on missing events.
const GRACE: Duration = Duration::from_secs(30);

struct StampedPutWorker {
    kv: KvClient,
    base: Instant,
    val_size: usize,
    key_space: u64,
}

impl Worker for StampedPutWorker {
    fn call(&mut self, seq: u64) -> OpFuture<'_> {
        Box::pin(async move {
            let key = format!("{PREFIX}{:08}", seq % self.key_space);
            let value = stamped_value(self.base, self.val_size);
            self.kv.put(key, value, None).await?;
            Ok("put")
        })
    }
}

/// A value starting with the nanoseconds since `base`, padded to `size`.
fn stamped_value(base: Instant, size: usize) -> Vec<u8> {
    let mut v = (base.elapsed().as_nanos() as u64).to_le_bytes().to_vec();
    if v.len() < size {
        v.resize(size, b'v');
    }
    v
}

/// What one stream's receiver saw.
struct Received {
    latencies: Latencies,
    events: u64,
    last_event: Option<Instant>,
    error: Option<String>,
}

/// Opens a stream with `watchers` watchers on the prefix and waits until all are created.
pub(super) async fn open_stream(
    ctx: &Ctx,
    index: usize,
    key: &str,
    options: WatchOptions,
    watchers: usize,
) -> Result<WatchStream> {
    let mut client = ctx.pool().await?.client(index).watch_client();
    let mut stream = client.watch(key, Some(options.clone())).await?;
    for _ in 1..watchers {
        stream.watch(key, Some(options.clone())).await?;
    }
    let mut created = 0;
    while created < watchers {
        let resp = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .context("timed out creating watchers")??
            .ok_or_else(|| anyhow!("watch stream closed while creating watchers"))?;
        if resp.canceled() {
            bail!("watch canceled by the server: {}", resp.cancel_reason());
        }
        if resp.created() {
            created += 1;
        }
    }
    Ok(stream)
}

/// Receives events until `target` of them arrived; `target` is lowered when fewer puts were
/// made than planned, and set to 0 to give up.
async fn receive(
    mut stream: WatchStream,
    base: Instant,
    mut target: signal::Receiver<u64>,
) -> Received {
    let mut r = Received {
        latencies: Latencies::new(),
        events: 0,
        last_event: None,
        error: None,
    };
    loop {
        if r.events >= *target.borrow_and_update() {
            break;
        }
        let msg = tokio::select! {
            msg = stream.message() => msg,
            changed = target.changed() => match changed {
                Ok(()) => continue,
                Err(_) => break,
            },
        };
        match msg {
            Ok(Some(resp)) => {
                let now = Instant::now();
                let since_base = now.duration_since(base);
                for ev in resp.events() {
                    let sent = ev
                        .kv()
                        .and_then(|kv| kv.value().get(..8))
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map(|b| Duration::from_nanos(u64::from_le_bytes(b)));
                    if let Some(sent) = sent {
                        r.latencies.record(since_base.saturating_sub(sent));
                    }
                    r.events += 1;
                }
                if !resp.events().is_empty() {
                    r.last_event = Some(now);
                }
            }
            Ok(None) => {
                r.error = Some("watch stream closed by the server".into());
                break;
            }
            Err(e) => {
                r.error = Some(format!("watch stream failed: {e}"));
                break;
            }
        }
    }
    r
}

pub async fn run(ctx: &Ctx, o: &WatchOpts) -> Result<Report> {
    let puts = o.put_total.or(ctx.global.total).unwrap_or(1000);
    let watchers = o.streams.max(1) * o.watchers_per_stream.max(1);
    let base = Instant::now();
    let setup_start = Instant::now();
    let mut streams = Vec::with_capacity(o.streams.max(1));
    for s in 0..o.streams.max(1) {
        let options = WatchOptions::new().with_prefix();
        streams.push(open_stream(ctx, s, PREFIX, options, o.watchers_per_stream.max(1)).await?);
    }
    let setup_s = setup_start.elapsed().as_secs_f64();

    let per_stream = o.watchers_per_stream.max(1) as u64;
    let (target_tx, target_rx) = signal::channel(puts * per_stream);
    let receivers: Vec<_> = streams
        .into_iter()
        .map(|s| tokio::spawn(receive(s, base, target_rx.clone())))
        .collect();

    let pool = ctx.pool().await?;
    let workers = (0..ctx.clients)
        .map(|i| StampedPutWorker {
            kv: pool.client(i).kv_client(),
            base,
            val_size: ctx.val_size.max(8),
            key_space: ctx.global.key_space_size.max(1),
        })
        .collect();
    let mut limits = ctx.limits(puts);
    limits.total = puts;
    limits.rate = (o.put_rate > 0.0).then_some(o.put_rate);
    let put_start = Instant::now();
    let put_out = runner::run(workers, &limits).await;
    let puts_done = put_out.latencies.count();

    // Let the watchers drain what was put, then stop the stragglers.
    let _ = target_tx.send(puts_done * per_stream);
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(GRACE).await;
        let _ = target_tx.send(0);
    });
    let mut latencies = Latencies::new();
    let mut events = 0;
    let mut last_event = put_start;
    let mut stream_error = None;
    for handle in receivers {
        let r = handle
            .await
            .map_err(|e| anyhow!("watch receiver failed: {e}"))?;
        latencies.merge(&r.latencies);
        events += r.events;
        if let Some(t) = r.last_event {
            last_event = last_event.max(t);
        }
        if stream_error.is_none() {
            stream_error = r.error;
        }
    }
    stopper.abort();

    let elapsed = last_event.duration_since(put_start).as_secs_f64();
    let expected = puts_done * watchers as u64;
    let mut report = Report {
        scenario: "watch".into(),
        requests: events,
        errors: put_out.errors,
        first_error: put_out.first_error.clone().or(stream_error),
        elapsed_s: elapsed,
        requests_per_s: if elapsed > 0.0 {
            events as f64 / elapsed
        } else {
            0.0
        },
        latency: latencies.summary(),
        capped: put_out.capped,
        ..Report::default()
    };
    let put_summary = put_out.latencies.summary();
    let put_secs = put_out.elapsed.as_secs_f64();
    let extra = &mut report.extra;
    extra.insert("watchers".into(), watchers as f64);
    extra.insert("watcher_setup_s".into(), setup_s);
    extra.insert("puts".into(), puts_done as f64);
    extra.insert(
        "put_per_s".into(),
        if put_secs > 0.0 {
            puts_done as f64 / put_secs
        } else {
            0.0
        },
    );
    extra.insert("put_p99_ms".into(), put_summary.p99_ms);
    extra.insert("expected_events".into(), expected as f64);
    extra.insert(
        "missing_events".into(),
        expected.saturating_sub(events) as f64,
    );
    Ok(report)
}
