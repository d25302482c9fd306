//! `watch`: `--streams` watch streams with `--watchers-per-stream` watchers each, all on one
//! prefix; `--clients` put `--put-total` keys under it. Every put is an event for every
//! watcher. Reports events delivered per second and the put-to-event latency (each value
//! carries the time its put was sent), plus the puts' own rate.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use prost::Message;
use raftkine::proto::etcdserverpb::{
    watch_request::RequestUnion, PutRequest, PutResponse, WatchCreateRequest, WatchRequest,
    WatchResponse,
};
use raftkine::proto::mvccpb::Event;
use tokio::sync::watch as signal;

use super::k8s::prefix_end;
use super::Ctx;
use crate::cli::WatchOpts;
use crate::grpc::{path, BidiStream, GrpcConn};
use crate::report::Report;
use crate::runner::{self, OpFuture, Worker};
use crate::stats::Latencies;

const PREFIX: &str = "watch-bench/";
/// How long watchers may lag behind the last put before the run gives up on missing events.
const GRACE: Duration = Duration::from_secs(30);

struct StampedPutWorker {
    conn: GrpcConn,
    base: Instant,
    val_size: usize,
    key_space: u64,
}

impl Worker for StampedPutWorker {
    fn call(&mut self, seq: u64) -> OpFuture<'_> {
        Box::pin(async move {
            let request = PutRequest {
                key: format!("{PREFIX}{:08}", seq % self.key_space).into_bytes(),
                value: stamped_value(self.base, self.val_size).into(),
                ..Default::default()
            };
            let _: PutResponse = self.conn.unary(path::PUT, &request).await?;
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
    /// Responses that carried events.
    responses: u64,
    last_event: Option<Instant>,
    error: Option<String>,
}

/// Opens a stream with `watchers` watchers on the keys under `prefix` and waits until all are
/// created.
async fn open_stream(conn: &GrpcConn, prefix: &str, watchers: usize) -> Result<BidiStream> {
    let mut stream = conn.bidi(path::WATCH).await?;
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            ..Default::default()
        })),
    };
    for _ in 0..watchers {
        stream.send(&create)?;
    }
    let mut created = 0;
    while created < watchers {
        let resp: WatchResponse = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .context("timed out creating watchers")??
            .ok_or_else(|| anyhow!("watch stream closed while creating watchers"))?;
        if resp.canceled {
            bail!("watch canceled by the server: {}", resp.cancel_reason);
        }
        if resp.created {
            created += 1;
        }
    }
    Ok(stream)
}

/// When the put of an event's value was sent (its first 8 bytes), relative to the run's base.
fn sent_at(event: &Bytes) -> Option<Duration> {
    let event = Event::decode(event.clone()).ok()?;
    let stamp = event.kv?.value.get(..8)?.try_into().ok()?;
    Some(Duration::from_nanos(u64::from_le_bytes(stamp)))
}

/// Receives events until `target` of them arrived; `target` is lowered when fewer puts were
/// made than planned, and set to 0 to give up.
async fn receive(
    mut stream: BidiStream,
    base: Instant,
    mut target: signal::Receiver<u64>,
) -> Received {
    let mut r = Received {
        latencies: Latencies::new(),
        events: 0,
        responses: 0,
        last_event: None,
        error: None,
    };
    loop {
        if r.events >= *target.borrow_and_update() {
            break;
        }
        let msg = tokio::select! {
            msg = stream.message::<WatchResponse>() => msg,
            changed = target.changed() => match changed {
                Ok(()) => continue,
                Err(_) => break,
            },
        };
        match msg {
            Ok(Some(resp)) => {
                let now = Instant::now();
                let since_base = now.duration_since(base);
                for ev in &resp.events {
                    if let Some(sent) = sent_at(ev) {
                        r.latencies.record(since_base.saturating_sub(sent));
                    }
                    r.events += 1;
                }
                if !resp.events.is_empty() {
                    r.responses += 1;
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
    let lean = ctx.lean().await?;
    let mut streams = Vec::with_capacity(o.streams.max(1));
    for s in 0..o.streams.max(1) {
        streams.push(open_stream(&lean.conn(s), PREFIX, o.watchers_per_stream.max(1)).await?);
    }
    let setup_s = setup_start.elapsed().as_secs_f64();

    let per_stream = o.watchers_per_stream.max(1) as u64;
    let (target_tx, target_rx) = signal::channel(puts * per_stream);
    let receivers: Vec<_> = streams
        .into_iter()
        .map(|s| tokio::spawn(receive(s, base, target_rx.clone())))
        .collect();

    let workers = (0..ctx.clients)
        .map(|i| StampedPutWorker {
            conn: lean.conn(i),
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
    let mut responses = 0;
    let mut last_event = put_start;
    let mut stream_error = None;
    for handle in receivers {
        let r = handle
            .await
            .map_err(|e| anyhow!("watch receiver failed: {e}"))?;
        latencies.merge(&r.latencies);
        events += r.events;
        responses += r.responses;
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
        "events_per_response".into(),
        events as f64 / responses.max(1) as f64,
    );
    extra.insert(
        "missing_events".into(),
        expected.saturating_sub(events) as f64,
    );
    Ok(report)
}
