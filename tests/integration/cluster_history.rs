//! A randomized history test: concurrent clients put, get, delete and compare-and-set a few keys
//! on random members of a 3-node cluster while a nemesis kill -9s and restarts members (the
//! leader among them); the recorded history must be linearizable (`support::linearizability`).
//!
//! The random choices come from a seed printed at the start; `RAFTKINE_TEST_SEED=N` replays the
//! choices (not the timing) of a run. `RAFTKINE_HISTORY_SECS` makes the run longer than its
//! default 15 s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::Client;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cluster_ha::{options, restart, start};
use crate::support::linearizability::{Checker, Expect, Op, Out, Recorder};

const KEYS: usize = 8;
const CLIENTS: usize = 5;

/// What a client remembers of a key, to make compare-and-sets that may succeed.
#[derive(Clone, Default)]
struct Seen {
    value: Option<String>,
    mod_revision: i64,
}

/// One client: random operations on random keys through random members until stopped.
async fn client_loop(
    id: usize,
    seed: u64,
    mut clients: Vec<Client>,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> usize {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(id as u64 * 7919));
    let mut seen: Vec<Seen> = vec![Seen::default(); KEYS];
    let mut seq = 0;
    while !stop.load(Ordering::SeqCst) {
        let member = rng.gen_range(0..clients.len());
        let k = rng.gen_range(0..KEYS);
        let key = format!("hist/{k}");
        let c = &mut clients[member];
        seq += 1;
        let value = format!("c{id}-{seq}");
        let dice = rng.gen_range(0..100);
        let failed = if dice < 40 {
            match recorder.get(id, c, &key).await {
                Ok(read) => {
                    seen[k] = match read {
                        Some(r) => Seen {
                            value: Some(r.value),
                            mod_revision: r.mod_revision.unwrap_or(0),
                        },
                        None => Seen::default(),
                    };
                    false
                }
                Err(_) => true,
            }
        } else if dice < 72 {
            recorder.put(id, c, &key, &value).await.is_err()
        } else if dice < 95 {
            let expect = match (&seen[k].value, rng.gen_bool(0.5)) {
                (Some(v), true) => Expect::Value(v.clone()),
                _ => Expect::ModRevision(seen[k].mod_revision),
            };
            recorder.cas(id, c, &key, expect, &value).await.is_err()
        } else {
            recorder.delete(id, c, &key).await.is_err()
        };
        if failed {
            // The member may be down: do not spin.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_randomized_history_with_kills_is_linearizable() {
    let seed = std::env::var("RAFTKINE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    let secs: u64 = std::env::var("RAFTKINE_HISTORY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    eprintln!("cluster_history: seed {seed} (RAFTKINE_TEST_SEED), {secs} s");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cluster = start(options(3, Duration::from_secs(2)));
    let clients = cluster.clients().await;
    let recorder = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client_loop(
                id,
                seed,
                clients.clone(),
                recorder.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // The nemesis: kill a member (the leader every other time), leave it down a while, restart
    // it, let the cluster settle a while; one member down at a time, so a majority stays up.
    let t = Instant::now();
    let mut kills = Vec::new();
    let mut round = 0;
    while t.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(500..1500))).await;
        let victim = match cluster.leader().await {
            Some(l) if round % 2 == 0 => l,
            _ => rng.gen_range(0..3),
        };
        round += 1;
        cluster.kill(victim);
        kills.push(cluster.node(victim).name.clone());
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..2000))).await;
        restart(&mut cluster, victim);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("client task");
    }

    let history = recorder.history();
    let unknown = history.iter().filter(|o| o.is_unknown()).count();
    let count = |f: fn(&Op) -> bool| history.iter().filter(|o| f(&o.input)).count();
    let cas_ok = history
        .iter()
        .filter(|o| {
            matches!(
                o.output,
                Out::Cas {
                    succeeded: true,
                    ..
                }
            )
        })
        .count();
    eprintln!(
        "cluster_history: killed {kills:?}; {} operations ({} gets, {} puts, {} cas of which \
         {cas_ok} succeeded, {} deletes), {unknown} with unknown outcome",
        history.len(),
        count(|o| matches!(o, Op::Get)),
        count(|o| matches!(o, Op::Put(_))),
        count(|o| matches!(o, Op::Cas { .. })),
        count(|o| matches!(o, Op::Delete)),
    );
    assert!(
        history.len() > 200,
        "too few operations to mean anything: {}",
        history.len()
    );
    let checked = Instant::now();
    let verdict = Checker::default().check(&history);
    eprintln!("cluster_history: checked in {:.2?}", checked.elapsed());
    if let Err(violation) = verdict {
        panic!("seed {seed}: {violation}");
    }
    // The members agree at the end too.
    cluster.wait_converged(Duration::from_secs(20)).await;
}
