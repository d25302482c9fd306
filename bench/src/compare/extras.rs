//! The cluster extras (3 members each side, each measurement on a fresh cluster):
//!
//! - failover: kill -9 of the leader until a write succeeds on a survivor;
//! - restart: kill -9 of a follower holding N keys of 1 KiB until it serves them again, with
//!   the members' RSS after the load and the restarted member's RSS after the restart;
//! - cross-member watch: a write on one member until a watcher on another member sees it.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use etcd_client::{Client, ConnectOptions, GetOptions, Txn, TxnOp, WatchOptions};

use super::procfs;
use super::server::{Cluster, Target};

const MIB: f64 = 1024.0 * 1024.0;

/// One measured figure of one run: (name, unit, value).
pub type Figure = (&'static str, &'static str, f64);

async fn client(url: &str, timeout: Duration) -> Result<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(timeout);
    Ok(Client::connect([url], Some(options)).await?)
}

/// The index of the leader (asked of every member).
async fn leader(cluster: &Cluster) -> Result<usize> {
    for _ in 0..100 {
        for (i, m) in cluster.members.iter().enumerate() {
            let Ok(mut c) = client(&m.client_url, Duration::from_secs(1)).await else {
                continue;
            };
            if let Ok(s) = c.status().await {
                let me = s.header().map_or(0, |h| h.member_id());
                if s.leader() != 0 && s.leader() == me {
                    return Ok(i);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("no leader found")
}

/// Milliseconds from kill -9 of the leader until a put succeeds on a survivor.
pub async fn failover(target: &Target) -> Result<Figure> {
    let mut cluster = target.start(3).await?;
    let lead = leader(&cluster).await?;
    let survivors: Vec<String> = cluster
        .members
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != lead)
        .map(|(_, m)| m.client_url.clone())
        .collect();
    let mut clients = vec![];
    for url in &survivors {
        clients.push(client(url, Duration::from_millis(500)).await?);
    }
    cluster.members[lead].kill();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(30);
    'wait: loop {
        for c in clients.iter_mut() {
            if c.put("bench/failover", "x", None).await.is_ok() {
                break 'wait;
            }
        }
        if Instant::now() > deadline {
            bail!("no write succeeded within 30 s of killing the leader");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ms = killed.elapsed().as_secs_f64() * 1000.0;
    tokio::task::spawn_blocking(move || cluster.stop()).await?;
    Ok(("failover: kill -9 leader → write ok", "ms", ms))
}

/// Loads `keys` keys of 1 KiB (txns of 100 puts, 8 at a time) through member `via`.
async fn load(url: &str, keys: usize) -> Result<()> {
    let value = vec![b'v'; 1024];
    let mut tasks = vec![];
    let per_task = keys.div_ceil(8);
    for t in 0..8 {
        let url = url.to_string();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = client(&url, Duration::from_secs(30)).await?;
            let start = t * per_task;
            let end = ((t + 1) * per_task).min(keys);
            let mut i = start;
            while i < end {
                let ops: Vec<TxnOp> = (i..(i + 100).min(end))
                    .map(|k| TxnOp::put(format!("bench/restart/{k:08}"), value.clone(), None))
                    .collect();
                i += ops.len();
                c.txn(Txn::new().and_then(ops)).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Seconds from restarting a kill -9'd follower holding `keys` keys until it serves them (a
/// serializable count on it sees them all); and RSS after the load and after the restart.
pub async fn restart(target: &Target, keys: usize) -> Result<Vec<Figure>> {
    let mut cluster = target.start(3).await?;
    let lead = leader(&cluster).await?;
    load(&cluster.members[lead].client_url, keys).await?;
    let follower = (lead + 1) % 3;
    // Every member has applied the load (serializable counts on each).
    wait_count(
        &cluster.members[follower].client_url,
        keys,
        Duration::from_secs(120),
    )
    .await?;
    let mut loaded_rss = 0.0f64;
    for m in &cluster.members {
        loaded_rss = loaded_rss.max(procfs::rss_bytes(m.pid())?.0 as f64 / MIB);
    }
    cluster.members[follower].kill();
    let began = Instant::now();
    cluster.members[follower].restart().await?;
    wait_count(
        &cluster.members[follower].client_url,
        keys,
        Duration::from_secs(300),
    )
    .await?;
    let secs = began.elapsed().as_secs_f64();
    let restarted_rss = procfs::rss_bytes(cluster.members[follower].pid())?.0 as f64 / MIB;
    tokio::task::spawn_blocking(move || cluster.stop()).await?;
    Ok(vec![
        (
            "restart: member with the keys, kill -9 → serving",
            "s",
            secs,
        ),
        (
            "restart: RSS after the load (largest member)",
            "MiB",
            loaded_rss,
        ),
        ("restart: RSS of the restarted member", "MiB", restarted_rss),
    ])
}

async fn wait_count(url: &str, keys: usize, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(mut c) = client(url, Duration::from_secs(5)).await {
            let options = GetOptions::new()
                .with_prefix()
                .with_count_only()
                .with_serializable();
            if let Ok(r) = c.get("bench/restart/", Some(options)).await {
                if r.count() as usize >= keys {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            bail!("{url} did not serve the {keys} keys within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Median and p99 milliseconds from a put on member 2 until a watcher on member 0 sees it.
pub async fn cross_member_watch(target: &Target, samples: usize) -> Result<Vec<Figure>> {
    let cluster = target.start(3).await?;
    let mut watcher = client(&cluster.members[0].client_url, Duration::from_secs(10)).await?;
    let mut writer = client(&cluster.members[2].client_url, Duration::from_secs(10)).await?;
    let mut stream = watcher
        .watch("bench/xwatch/", Some(WatchOptions::new().with_prefix()))
        .await?;
    // The created response.
    stream.message().await?.context("watch stream closed")?;
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let sent = Instant::now();
        writer.put(format!("bench/xwatch/{i}"), "x", None).await?;
        loop {
            let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .map_err(|_| anyhow!("no event within 10 s"))??
                .context("watch stream closed")?;
            if !resp.events().is_empty() {
                break;
            }
        }
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    let figures = vec![
        ("watch on another member: put → event p50", "ms", at(0.5)),
        ("watch on another member: put → event p99", "ms", at(0.99)),
    ];
    tokio::task::spawn_blocking(move || cluster.stop()).await?;
    Ok(figures)
}

/// Every extra for one target (errors are reported per measurement, not fatal).
pub async fn measure(target: &Target, keys: usize) -> (Vec<Figure>, Vec<String>) {
    let mut figures = vec![];
    let mut errors = vec![];
    match failover(target).await {
        Ok(f) => figures.push(f),
        Err(e) => errors.push(format!("failover: {e:#}")),
    }
    match cross_member_watch(target, 200).await {
        Ok(f) => figures.extend(f),
        Err(e) => errors.push(format!("cross-member watch: {e:#}")),
    }
    match restart(target, keys).await {
        Ok(f) => figures.extend(f),
        Err(e) => errors.push(format!("restart: {e:#}")),
    }
    (figures, errors)
}
