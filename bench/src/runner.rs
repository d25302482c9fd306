//! The closed-loop load driver: `--clients` workers each issue one request at a time until
//! `--total` requests were issued (or `--max-seconds` passed), optionally paced to a rate, and
//! record per-request latencies by kind. Failed requests count as errors, not latencies.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stats::Latencies;

/// The future of one request; resolves to the kind of request made (for per-kind latencies).
pub type OpFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<&'static str>> + Send + 'a>>;

/// One client: makes request number `seq` when called.
pub trait Worker: Send + 'static {
    fn call(&mut self, seq: u64) -> OpFuture<'_>;
}

/// When a run stops, and how fast it may go.
#[derive(Clone, Debug)]
pub struct Limits {
    pub total: u64,
    pub max_duration: Option<Duration>,
    pub request_timeout: Duration,
    /// Requests per second over all workers (None: unpaced).
    pub rate: Option<f64>,
}

/// What a run measured.
#[derive(Default)]
pub struct Outcome {
    pub latencies: Latencies,
    pub by_kind: BTreeMap<&'static str, Latencies>,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// True when --max-seconds stopped the run before --total.
    pub capped: bool,
}

impl Outcome {
    /// Folds another outcome's latencies and errors into this one.
    pub fn absorb(&mut self, other: Outcome) {
        self.latencies.merge(&other.latencies);
        for (kind, lat) in other.by_kind {
            self.by_kind.entry(kind).or_default().merge(&lat);
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.capped |= other.capped;
    }

    pub fn record_error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
    }
}

/// Runs `workers` to the limits and merges what they measured.
pub async fn run<W: Worker>(workers: Vec<W>, limits: &Limits) -> Outcome {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = limits.max_duration.map(|d| start + d);
    let mut tasks = tokio::task::JoinSet::new();
    for mut worker in workers {
        let next = next.clone();
        let limits = limits.clone();
        tasks.spawn(async move {
            let mut out = Outcome::default();
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= limits.total {
                    break;
                }
                if let Some(rate) = limits.rate {
                    let due = start + Duration::from_secs_f64(seq as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    out.capped = true;
                    break;
                }
                let began = Instant::now();
                match tokio::time::timeout(limits.request_timeout, worker.call(seq)).await {
                    Ok(Ok(kind)) => {
                        let took = began.elapsed();
                        out.latencies.record(took);
                        out.by_kind.entry(kind).or_default().record(took);
                    }
                    Ok(Err(e)) => out.record_error(e),
                    Err(_) => out.record_error(format!(
                        "request timed out after {:?}",
                        limits.request_timeout
                    )),
                }
            }
            out
        });
    }
    // Merged only once every worker is done: merging 1000 workers' histograms takes ~90 ms, which
    // would otherwise count in the run's time and compete with its last requests.
    let mut finished = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        finished.push(joined);
    }
    let elapsed = start.elapsed();
    let mut total = Outcome::default();
    for joined in finished {
        match joined {
            Ok(out) => total.absorb(out),
            Err(e) => total.record_error(format!("worker task failed: {e}")),
        }
    }
    total.elapsed = elapsed;
    total
}
