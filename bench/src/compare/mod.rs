//! `compare`: the side-by-side driver behind `make bench`. Installs etcd if missing, builds
//! raftkine, then for each round and each scenario starts a fresh raftkine and a fresh etcd in
//! turn (A B A B ...), runs the scenario in-process against it while reading the server's CPU
//! and RSS from /proc, measures the data dir, stops it, and finally writes the table of medians
//! and ratios to `bench/results/latest.md` and `latest.json`.

mod extras;
mod plan;
mod procfs;
mod server;
mod setup;
mod table;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;

use crate::cli::{Cli, CompareOpts};
use crate::scenario;
use plan::Scenario;
use server::{Kind, Target};
use table::{Comparison, ExtraRow, Row, RunResult};

const MIB: f64 = 1024.0 * 1024.0;
/// Longest a single run (server start, scenario, stop) may take before it counts as failed.
const RUN_LIMIT: Duration = Duration::from_secs(180);

pub async fn run(opts: &CompareOpts) -> Result<()> {
    let started = Instant::now();
    let rounds = opts.rounds.unwrap_or(if opts.quick { 1 } else { 3 }).max(1);
    let etcd_version = setup::ensure_etcd(&opts.etcd_bin)?;
    let raftkine_bin = match &opts.raftkine_bin {
        Some(bin) => bin.clone(),
        None => setup::build_raftkine(&opts.workspace)?,
    };
    let targets = [
        Target {
            kind: Kind::Raftkine,
            bin: raftkine_bin.clone(),
        },
        Target {
            kind: Kind::Etcd,
            bin: opts.etcd_bin.clone(),
        },
    ];
    let plan = plan::select(plan::scenarios(opts.quick), &opts.only);
    let mut rows: Vec<Row> = plan
        .iter()
        .map(|s| Row::new(&s.name, s.args.join(" ")))
        .collect();

    // A server that could not be started is not started again in this comparison.
    let mut unstartable: [Option<String>; 2] = [None, None];
    for round in 1..=rounds {
        for (i, sc) in plan.iter().enumerate() {
            for (t, target) in targets.iter().enumerate() {
                let r = match &unstartable[t] {
                    Some(why) => RunResult {
                        round,
                        error: Some(why.clone()),
                        ..RunResult::default()
                    },
                    None => run_one(target, sc, opts.nodes, round).await,
                };
                if r.started == Some(false) && unstartable[t].is_none() {
                    let why = r
                        .error
                        .as_deref()
                        .unwrap_or("?")
                        .lines()
                        .next()
                        .unwrap_or("?");
                    unstartable[t] = Some(format!("skipped: could not start earlier ({why})"));
                }
                eprintln!(
                    "[round {round}/{rounds}] {:<22} {:<8} {}",
                    sc.name,
                    target.kind.name(),
                    progress_line(&r)
                );
                match target.kind {
                    Kind::Raftkine => rows[i].raftkine_runs.push(r),
                    Kind::Etcd => rows[i].etcd_runs.push(r),
                }
            }
        }
    }

    // The cluster extras, with 3-member clusters (A B per round, like the scenarios).
    let mut extras: Vec<ExtraRow> = vec![];
    if opts.nodes >= 3 && (opts.only.is_empty() || opts.only.iter().any(|o| o == "extras")) {
        let keys = if opts.quick { 10_000 } else { 100_000 };
        for round in 1..=rounds {
            for target in &targets {
                let (figures, errors) = extras::measure(target, keys).await;
                for e in &errors {
                    eprintln!(
                        "[round {round}/{rounds}] extras {:<8} FAILED: {e}",
                        target.kind.name()
                    );
                }
                for (name, unit, value) in figures {
                    eprintln!(
                        "[round {round}/{rounds}] extras {:<8} {name}: {value:.1} {unit}",
                        target.kind.name()
                    );
                    let name = name.replace("the keys", &format!("{keys} keys of 1 KiB"));
                    let row = match extras.iter().position(|r| r.name == name) {
                        Some(i) => &mut extras[i],
                        None => {
                            extras.push(ExtraRow {
                                name: name.clone(),
                                unit: unit.to_string(),
                                ..ExtraRow::default()
                            });
                            let last = extras.len() - 1;
                            &mut extras[last]
                        }
                    };
                    match target.kind {
                        Kind::Raftkine => row.raftkine_runs.push(value),
                        Kind::Etcd => row.etcd_runs.push(value),
                    }
                }
            }
        }
    }

    let mut meta = BTreeMap::new();
    meta.insert("date".into(), now_utc());
    meta.insert(
        "mode".into(),
        if opts.quick { "quick" } else { "full" }.into(),
    );
    meta.insert("members per cluster".into(), opts.nodes.to_string());
    meta.insert("rounds".into(), rounds.to_string());
    meta.insert("etcd".into(), etcd_version);
    meta.insert("raftkine".into(), raftkine_bin.display().to_string());
    meta.insert(
        "machine".into(),
        format!(
            "{} cores, {} (load tool on the same cores)",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            std::env::consts::ARCH
        ),
    );
    meta.insert(
        "duration".into(),
        format!("{:.0} s", started.elapsed().as_secs_f64()),
    );
    let comparison = Comparison::new(meta, rows).with_extras(extras);
    let md = comparison.markdown();
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("creating {}", opts.out_dir.display()))?;
    std::fs::write(opts.out_dir.join("latest.md"), &md)?;
    let json = serde_json::to_string_pretty(&comparison)?;
    let tmp = opts.out_dir.join("latest.json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, opts.out_dir.join("latest.json"))?;
    println!("{md}");
    eprintln!(
        "wrote {} and latest.json ({:.0} s)",
        opts.out_dir.join("latest.md").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn progress_line(r: &RunResult) -> String {
    match (&r.report, &r.error) {
        (_, Some(e)) => format!("FAILED: {}", e.lines().next().unwrap_or("")),
        (Some(rep), None) => format!(
            "{:>9.0} req/s  p99 {:>8.2} ms  cpu {:>5.1} s  rss {:>6.1} MiB  dir {:>6.1} MiB  errors {}  ({:.1} s)",
            rep.requests_per_s,
            rep.latency.p99_ms,
            r.cpu_s.unwrap_or(0.0),
            r.peak_rss_mib.unwrap_or(0.0),
            r.data_dir_mib.unwrap_or(0.0),
            rep.errors,
            r.wall_s
        ),
        (None, None) => "no result".into(),
    }
}

/// Starts a fresh server, runs one scenario against it, measures it, stops it.
async fn run_one(target: &Target, sc: &Scenario, nodes: usize, round: usize) -> RunResult {
    let began = Instant::now();
    let mut result = RunResult {
        round,
        ..RunResult::default()
    };
    match tokio::time::timeout(RUN_LIMIT, measure(target, sc, nodes, &mut result)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => result.error = Some(format!("{e:#}")),
        Err(_) => result.error = Some(format!("run did not finish within {RUN_LIMIT:?}")),
    }
    result.wall_s = began.elapsed().as_secs_f64();
    result
}

async fn measure(target: &Target, sc: &Scenario, nodes: usize, out: &mut RunResult) -> Result<()> {
    out.started = Some(false);
    let cluster = target.start(nodes).await?;
    out.started = Some(true);
    let pids = cluster.pids();
    let mut idle = 0.0f64;
    let mut cpu_before = 0.0;
    for &pid in &pids {
        idle = idle.max(procfs::rss_bytes(pid)?.0 as f64 / MIB);
        cpu_before += procfs::cpu_seconds(pid)?;
    }
    out.idle_rss_mib = Some(idle);

    let mut argv = vec![
        "raftkine-bench".to_string(),
        "--endpoints".to_string(),
        cluster.endpoints().join(","),
    ];
    argv.extend(sc.args.iter().cloned());
    let cli = Cli::try_parse_from(&argv).context("parsing the scenario's command line")?;
    let load_cpu_before = procfs::cpu_seconds(std::process::id())?;
    let outcome = scenario::run(&cli).await;
    out.load_cpu_s = Some(procfs::cpu_seconds(std::process::id())? - load_cpu_before);

    let mut cpu_after = 0.0;
    let mut peak = 0.0f64;
    for &pid in &pids {
        cpu_after += procfs::cpu_seconds(pid)?;
        peak = peak.max(procfs::rss_bytes(pid)?.1 as f64 / MIB);
    }
    out.cpu_s = Some(cpu_after - cpu_before);
    out.peak_rss_mib = Some(peak);
    let dir: u64 = cluster.data_dirs().into_iter().map(procfs::dir_bytes).sum();
    out.data_dir_mib = Some(dir as f64 / MIB);
    // Stopping may block up to a few seconds: keep it off the runtime's worker threads.
    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .context("stopping the server")?;
    out.report = Some(outcome?);
    Ok(())
}

fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
