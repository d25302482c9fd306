//! `k8s-mix`: kube-apiserver's traffic shapes against `--objects` objects spread over
//! `--namespaces` namespaces (in a key space twice that size, so creates and deletes find room):
//!
//! | kind       | share | request                                                        |
//! |------------|-------|----------------------------------------------------------------|
//! | get        | 30 %  | Range(key, limit=1)                                            |
//! | list       | 5 %   | paginated list of one namespace (limit `--limit`)              |
//! | create     | 10 %  | Txn If(mod_revision(k)==0) Then(Put)                           |
//! | update     | 40 %  | Txn If(mod_revision(k)==R) Then(Put) Else(Get), one retry      |
//! | delete     | 10 %  | Txn If(mod_revision(k)==R) Then(Delete) Else(Get), one retry   |
//! | list-watch | 5 %   | paginated list, then Watch(prefix, from list revision + 1)     |
//!
//! Watches opened by list-watch stay open (draining events) up to `--max-watches`. Meanwhile a
//! compactor does what the apiserver's does every `--compact-interval-ms`: the
//! `compact_rev_key` txn `If(version(compact_rev_key)==T) Then(Put(compact_rev_key, R))
//! Else(Get)`, then Compact(R) of the revision seen on the previous tick.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use etcd_client::{
    Compare, CompareOp, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchClient,
    WatchOptions,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

use super::k8s::{load_objects, object_body, paged_list};
use super::Ctx;
use crate::cli::K8sMixOpts;
use crate::report::Report;
use crate::runner::{self, OpFuture, Outcome, Worker};

const COMPACT_REV_KEY: &str = "compact_rev_key";
/// Kinds of request and their weights (out of 100).
const MIX: [(&str, u32); 6] = [
    ("get", 30),
    ("list", 5),
    ("create", 10),
    ("update", 40),
    ("delete", 10),
    ("list-watch", 5),
];
/// Known mod revision of a slot whose key exists but whose revision is unknown.
const EXISTS: i64 = -1;

struct Shared {
    /// Per slot: the last known mod revision, 0 when the key is believed absent.
    revs: Vec<AtomicI64>,
    namespaces: u64,
    object_size: usize,
    limit: i64,
    max_watches: usize,
    watches: Mutex<VecDeque<JoinHandle<()>>>,
    watch_events: Arc<AtomicU64>,
    conflicts: AtomicU64,
}

impl Shared {
    fn key(&self, slot: usize) -> String {
        format!(
            "/registry/configmaps/ns-{:03}/object-{slot:07}",
            slot as u64 % self.namespaces
        )
    }

    fn namespace_prefix(&self, ns: u64) -> String {
        format!("/registry/configmaps/ns-{ns:03}/")
    }

    fn close_all_watches(&self) {
        if let Ok(mut w) = self.watches.lock() {
            for h in w.drain(..) {
                h.abort();
            }
        }
    }
}

struct MixWorker {
    kv: KvClient,
    watch: WatchClient,
    rng: StdRng,
    shared: Arc<Shared>,
}

impl MixWorker {
    /// A random slot whose key is (`present`) or is not believed to exist, if one is found
    /// within a few draws.
    fn pick(&mut self, present: bool) -> Option<usize> {
        let n = self.shared.revs.len();
        (0..16).find_map(|_| {
            let slot = self.rng.gen_range(0..n);
            let exists = self.shared.revs[slot].load(Ordering::Relaxed) != 0;
            (exists == present).then_some(slot)
        })
    }

    fn revision_of(resp: &TxnResponse) -> Result<i64> {
        resp.header()
            .map(|h| h.revision())
            .ok_or_else(|| anyhow!("txn response without a header"))
    }

    /// The mod revision the Else(Get) branch found (0: the key is gone).
    fn current_revision(resp: &TxnResponse) -> i64 {
        resp.op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(get) => {
                    Some(get.kvs().first().map_or(0, |kv| kv.mod_revision()))
                }
                _ => None,
            })
            .unwrap_or(0)
    }

    async fn get(&mut self) -> Result<()> {
        let slot = self.rng.gen_range(0..self.shared.revs.len());
        let key = self.shared.key(slot);
        self.kv
            .get(key, Some(GetOptions::new().with_limit(1)))
            .await?;
        Ok(())
    }

    async fn list(&mut self) -> Result<i64> {
        let ns = self.rng.gen_range(0..self.shared.namespaces);
        let prefix = self.shared.namespace_prefix(ns);
        Ok(
            paged_list(&mut self.kv, prefix.as_bytes(), self.shared.limit, 0)
                .await?
                .revision,
        )
    }

    async fn create(&mut self) -> Result<()> {
        let Some(slot) = self.pick(false) else {
            return self.get().await;
        };
        let key = self.shared.key(slot);
        let body = object_body(&key, self.shared.object_size);
        let txn = Txn::new()
            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, body, None)]);
        let resp = self.kv.txn(txn).await?;
        if resp.succeeded() {
            self.shared.revs[slot].store(Self::revision_of(&resp)?, Ordering::Relaxed);
        } else {
            self.shared.conflicts.fetch_add(1, Ordering::Relaxed);
            self.shared.revs[slot].store(EXISTS, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Update (`delete == false`) or delete a present key, guarded by its mod revision, with one
    /// retry at the revision the Else branch returned, as GuaranteedUpdate does.
    async fn guarded_write(&mut self, delete: bool) -> Result<()> {
        let Some(slot) = self.pick(true) else {
            return self.get().await;
        };
        let key = self.shared.key(slot);
        let mut rev = self.shared.revs[slot].load(Ordering::Relaxed);
        for _attempt in 0..2 {
            let then = if delete {
                TxnOp::delete(key.clone(), None)
            } else {
                TxnOp::put(
                    key.clone(),
                    object_body(&key, self.shared.object_size),
                    None,
                )
            };
            let txn = Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                .and_then([then])
                .or_else([TxnOp::get(key.clone(), None)]);
            let resp = self.kv.txn(txn).await?;
            if resp.succeeded() {
                let new_rev = if delete { 0 } else { Self::revision_of(&resp)? };
                self.shared.revs[slot].store(new_rev, Ordering::Relaxed);
                return Ok(());
            }
            self.shared.conflicts.fetch_add(1, Ordering::Relaxed);
            rev = Self::current_revision(&resp);
            self.shared.revs[slot].store(rev, Ordering::Relaxed);
            if rev == 0 {
                return Ok(()); // gone meanwhile: NotFound
            }
        }
        Ok(())
    }

    async fn list_watch(&mut self) -> Result<()> {
        let ns = self.rng.gen_range(0..self.shared.namespaces);
        let prefix = self.shared.namespace_prefix(ns);
        let listed = paged_list(&mut self.kv, prefix.as_bytes(), self.shared.limit, 0).await?;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(listed.revision + 1);
        let mut stream = self.watch.watch(prefix, Some(options)).await?;
        loop {
            let resp = stream
                .message()
                .await?
                .ok_or_else(|| anyhow!("watch stream closed before the watch was created"))?;
            if resp.canceled() {
                bail!("watch canceled: {}", resp.cancel_reason());
            }
            if resp.created() {
                break;
            }
        }
        let events = self.shared.watch_events.clone();
        let drain = tokio::spawn(async move {
            while let Ok(Some(resp)) = stream.message().await {
                events.fetch_add(resp.events().len() as u64, Ordering::Relaxed);
            }
        });
        if let Ok(mut open) = self.shared.watches.lock() {
            open.push_back(drain);
            while open.len() > self.shared.max_watches {
                if let Some(oldest) = open.pop_front() {
                    oldest.abort();
                }
            }
        }
        Ok(())
    }
}

impl Worker for MixWorker {
    fn call(&mut self, _seq: u64) -> OpFuture<'_> {
        Box::pin(async move {
            let mut draw = self.rng.gen_range(0..100);
            let mut kind = MIX[0].0;
            for (name, weight) in MIX {
                if draw < weight {
                    kind = name;
                    break;
                }
                draw -= weight;
            }
            match kind {
                "get" => self.get().await?,
                "list" => {
                    self.list().await?;
                }
                "create" => self.create().await?,
                "update" => self.guarded_write(false).await?,
                "delete" => self.guarded_write(true).await?,
                _ => self.list_watch().await?,
            }
            Ok(kind)
        })
    }
}

/// kube-apiserver's compactor loop; returns its latencies (txn + compact) and compactions made.
async fn compactor(
    mut kv: KvClient,
    interval: Duration,
    mut stop: signal::Receiver<bool>,
) -> (Outcome, u64) {
    let mut out = Outcome::default();
    let mut compactions = 0;
    let mut time = 0i64;
    let mut rev = 0i64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let began = Instant::now();
        let step = async {
            let txn = Txn::new()
                .when([Compare::version(COMPACT_REV_KEY, CompareOp::Equal, time)])
                .and_then([TxnOp::put(COMPACT_REV_KEY, rev.to_string(), None)])
                .or_else([TxnOp::get(COMPACT_REV_KEY, None)]);
            let resp = kv.txn(txn).await?;
            let cur_rev = MixWorker::revision_of(&resp)?;
            if !resp.succeeded() {
                let cur_time = resp
                    .op_responses()
                    .into_iter()
                    .find_map(|op| match op {
                        TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.version()),
                        _ => None,
                    })
                    .unwrap_or(0);
                return Ok::<_, anyhow::Error>((cur_time, cur_rev, false));
            }
            let compacted = rev != 0;
            if compacted {
                kv.compact(rev, None).await?;
            }
            Ok((time + 1, cur_rev, compacted))
        };
        match step.await {
            Ok((t, r, compacted)) => {
                time = t;
                rev = r;
                compactions += u64::from(compacted);
                out.latencies.record(began.elapsed());
            }
            Err(e) => out.record_error(e),
        }
    }
    (out, compactions)
}

pub async fn run(ctx: &Ctx, o: &K8sMixOpts) -> Result<Report> {
    let namespaces = o.namespaces.max(1);
    let slots = (o.objects.max(1) * 2) as usize;
    let shared = Arc::new(Shared {
        revs: (0..slots).map(|_| AtomicI64::new(0)).collect(),
        namespaces,
        object_size: o.object_size,
        limit: o.limit,
        max_watches: o.max_watches,
        watches: Mutex::new(VecDeque::new()),
        watch_events: Arc::new(AtomicU64::new(0)),
        conflicts: AtomicU64::new(0),
    });
    let initial: Vec<String> = (0..o.objects as usize).map(|s| shared.key(s)).collect();
    let revs = load_objects(ctx, initial, o.object_size, 64).await?;
    for (slot, rev) in revs.into_iter().enumerate() {
        shared.revs[slot].store(rev, Ordering::Relaxed);
    }

    let (stop_tx, stop_rx) = signal::channel(false);
    let compaction = tokio::spawn(compactor(
        ctx.pool().await?.client(0).kv_client(),
        Duration::from_millis(o.compact_interval_ms.max(1)),
        stop_rx,
    ));
    let pool = ctx.pool().await?;
    let workers = (0..ctx.clients)
        .map(|i| {
            let client = pool.client(i);
            MixWorker {
                kv: client.kv_client().max_decoding_message_size(64 << 20),
                watch: client.watch_client(),
                rng: StdRng::from_entropy(),
                shared: shared.clone(),
            }
        })
        .collect();
    let out = runner::run(workers, &ctx.limits(10_000)).await;
    let _ = stop_tx.send(true);
    let (compact_out, compactions) = compaction
        .await
        .map_err(|e| anyhow!("compactor failed: {e}"))?;
    let open_watches = shared.watches.lock().map(|w| w.len()).unwrap_or(0);
    shared.close_all_watches();

    let mut report = Report::from_outcome("k8s-mix", &out);
    report
        .breakdown
        .insert("compact".into(), compact_out.latencies.summary());
    if report.first_error.is_none() {
        report.first_error = compact_out.first_error.clone();
    }
    report.errors += compact_out.errors;
    let extra = &mut report.extra;
    extra.insert("compactions".into(), compactions as f64);
    extra.insert(
        "conflicts".into(),
        shared.conflicts.load(Ordering::Relaxed) as f64,
    );
    extra.insert(
        "watch_events".into(),
        shared.watch_events.load(Ordering::Relaxed) as f64,
    );
    extra.insert("open_watches".into(), open_watches as f64);
    Ok(report)
}
