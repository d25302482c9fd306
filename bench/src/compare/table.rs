//! The comparison table: per scenario and metric, the median over rounds for raftkine and for
//! etcd and their ratio, rendered as Markdown (latest.md) and JSON (latest.json).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::report::Report;

/// What one run of one scenario on one server measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunResult {
    pub round: usize,
    /// The load tool's report (None when the run failed).
    pub report: Option<Report>,
    /// Why the run failed, or "not available yet".
    pub error: Option<String>,
    /// Server CPU seconds (user + system, all members) during the scenario.
    pub cpu_s: Option<f64>,
    /// The load tool's own CPU seconds (this process) during the scenario: on a machine whose
    /// cores it shares with the server, the part of them the server could not have.
    pub load_cpu_s: Option<f64>,
    /// Peak resident set (VmHWM of a fresh process, largest member), MiB.
    pub peak_rss_mib: Option<f64>,
    /// Resident set once ready, before any load (largest member), MiB.
    pub idle_rss_mib: Option<f64>,
    /// Disk space of the data dirs after the scenario (all members), MiB.
    pub data_dir_mib: Option<f64>,
    /// Wall time of the run, server start to stop, seconds.
    pub wall_s: f64,
    /// Whether the server started (None: not attempted).
    pub started: Option<bool>,
}

/// A metric of the table.
struct Metric {
    key: &'static str,
    label: &'static str,
    get: fn(&RunResult) -> Option<f64>,
}

fn lat(r: &RunResult, f: fn(&Report) -> f64) -> Option<f64> {
    r.report.as_ref().filter(|x| x.requests > 0).map(f)
}

/// `seconds` of CPU during a run, as µs per request measured.
fn per_request(r: &RunResult, seconds: Option<f64>) -> Option<f64> {
    let n = r.report.as_ref()?.requests;
    (n > 0).then(|| seconds.unwrap_or(0.0) * 1e6 / n as f64)
}

const METRICS: [Metric; 12] = [
    Metric {
        key: "requests_per_s",
        label: "req/s",
        get: |r| r.report.as_ref().map(|x| x.requests_per_s),
    },
    Metric {
        key: "avg_ms",
        label: "avg ms",
        get: |r| lat(r, |x| x.latency.avg_ms),
    },
    Metric {
        key: "p50_ms",
        label: "p50 ms",
        get: |r| lat(r, |x| x.latency.p50_ms),
    },
    Metric {
        key: "p99_ms",
        label: "p99 ms",
        get: |r| lat(r, |x| x.latency.p99_ms),
    },
    Metric {
        key: "p999_ms",
        label: "p99.9 ms",
        get: |r| lat(r, |x| x.latency.p999_ms),
    },
    Metric {
        // watch-get: how long the watchers took to receive their history (the gets measure
        // how reads fare meanwhile; when catch-up is short they are few).
        key: "catchup_s",
        label: "catch-up s",
        get: |r| r.report.as_ref()?.extra.get("catchup_s").copied(),
    },
    Metric {
        key: "cpu_s",
        label: "server CPU s",
        get: |r| r.cpu_s,
    },
    Metric {
        key: "cpu_us_per_req",
        label: "server CPU µs/req",
        get: |r| per_request(r, r.cpu_s),
    },
    Metric {
        key: "load_cpu_us_per_req",
        label: "load tool CPU µs/req",
        get: |r| per_request(r, r.load_cpu_s),
    },
    Metric {
        key: "peak_rss_mib",
        label: "peak RSS MiB",
        get: |r| r.peak_rss_mib,
    },
    Metric {
        key: "data_dir_mib",
        label: "data dir MiB",
        get: |r| r.data_dir_mib,
    },
    Metric {
        key: "errors",
        label: "errors",
        get: |r| r.report.as_ref().map(|x| x.errors as f64),
    },
];

/// Median of the values present.
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// One figure of the table.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    pub raftkine: Option<f64>,
    pub etcd: Option<f64>,
    /// raftkine / etcd.
    pub ratio: Option<f64>,
}

/// One scenario of the comparison, with every run.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub scenario: String,
    pub command: String,
    pub metrics: BTreeMap<String, Cell>,
    pub raftkine_runs: Vec<RunResult>,
    pub etcd_runs: Vec<RunResult>,
}

/// The whole comparison (latest.json).
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub meta: BTreeMap<String, String>,
    pub idle_rss_mib: Cell,
    pub rows: Vec<Row>,
    /// The cluster extras (3 members each side), when measured.
    pub extras: Vec<ExtraRow>,
}

/// One cluster extra over the rounds (lower is better for every one of them).
#[derive(Clone, Debug, Serialize, Default)]
pub struct ExtraRow {
    pub name: String,
    pub unit: String,
    pub raftkine_runs: Vec<f64>,
    pub etcd_runs: Vec<f64>,
    pub cell: Option<Cell>,
}

impl ExtraRow {
    fn summarise(&mut self) {
        let a = median(self.raftkine_runs.clone());
        let b = median(self.etcd_runs.clone());
        self.cell = Some(Cell {
            raftkine: a,
            etcd: b,
            ratio: match (a, b) {
                (Some(a), Some(b)) if b != 0.0 => Some(a / b),
                _ => None,
            },
        });
    }
}

fn cell(rk: &[RunResult], etcd: &[RunResult], get: impl Fn(&RunResult) -> Option<f64>) -> Cell {
    let a = median(rk.iter().filter_map(&get).collect());
    let b = median(etcd.iter().filter_map(&get).collect());
    let ratio = match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        (Some(0.0), Some(_)) => Some(1.0),
        _ => None,
    };
    Cell {
        raftkine: a,
        etcd: b,
        ratio,
    }
}

impl Row {
    pub fn new(scenario: &str, command: String) -> Row {
        Row {
            scenario: scenario.to_string(),
            command,
            metrics: BTreeMap::new(),
            raftkine_runs: Vec::new(),
            etcd_runs: Vec::new(),
        }
    }

    /// Fills `metrics` from the runs.
    pub fn summarise(&mut self) {
        for m in &METRICS {
            self.metrics.insert(
                m.key.to_string(),
                cell(&self.raftkine_runs, &self.etcd_runs, m.get),
            );
        }
    }
}

impl Comparison {
    pub fn new(meta: BTreeMap<String, String>, mut rows: Vec<Row>) -> Comparison {
        for r in &mut rows {
            r.summarise();
        }
        let rk: Vec<RunResult> = rows.iter().flat_map(|r| r.raftkine_runs.clone()).collect();
        let etcd: Vec<RunResult> = rows.iter().flat_map(|r| r.etcd_runs.clone()).collect();
        let idle_rss_mib = cell(&rk, &etcd, |r| r.idle_rss_mib);
        Comparison {
            meta,
            idle_rss_mib,
            rows,
            extras: vec![],
        }
    }

    /// Adds the cluster extras (medians computed here).
    pub fn with_extras(mut self, mut extras: Vec<ExtraRow>) -> Comparison {
        for e in &mut extras {
            e.summarise();
        }
        self.extras = extras;
        self
    }

    fn extras_markdown(&self, s: &mut String) {
        if self.extras.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "\n## Cluster extras (3 members each side; medians over rounds; lower is better)\n"
        );
        let _ = writeln!(
            s,
            "| measurement | unit | raftkine | etcd | raftkine/etcd |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---:|");
        for e in &self.extras {
            let c = e.cell.clone().unwrap_or(Cell {
                raftkine: None,
                etcd: None,
                ratio: None,
            });
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                e.name,
                e.unit,
                num(c.raftkine),
                num(c.etcd),
                ratio(c.ratio)
            );
        }
    }

    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# raftkine vs etcd\n");
        for (k, v) in &self.meta {
            let _ = writeln!(s, "- {k}: {v}");
        }
        let _ = writeln!(
            s,
            "\nMedians over rounds; ratio = raftkine/etcd (above 1 is better for req/s, below 1 \
             is better for every other metric). Latencies are per request as the client sees \
             them (watch: put-to-event; k8s-list: a whole paginated list). Server CPU and RSS \
             come from /proc of the server process(es) during the scenario.\n"
        );
        let _ = writeln!(s, "| scenario | metric | raftkine | etcd | raftkine/etcd |");
        let _ = writeln!(s, "|---|---|---:|---:|---:|");
        let _ = writeln!(
            s,
            "| (idle) | RSS MiB | {} | {} | {} |",
            num(self.idle_rss_mib.raftkine),
            num(self.idle_rss_mib.etcd),
            ratio(self.idle_rss_mib.ratio)
        );
        for row in &self.rows {
            let failed = |runs: &[RunResult]| {
                runs.iter()
                    .all(|r| r.report.is_none())
                    .then(|| runs.iter().find_map(|r| r.error.clone()))
                    .flatten()
            };
            if let (Some(a), Some(b)) = (failed(&row.raftkine_runs), failed(&row.etcd_runs)) {
                let _ = writeln!(
                    s,
                    "| {} | (failed) | {} | {} | |",
                    row.scenario,
                    short(&a),
                    short(&b)
                );
                continue;
            }
            for m in &METRICS {
                let Some(c) = row.metrics.get(m.key) else {
                    continue;
                };
                if c.raftkine.is_none() && c.etcd.is_none() && m.key != "requests_per_s" {
                    continue;
                }
                if m.key == "errors"
                    && c.raftkine.unwrap_or(0.0) == 0.0
                    && c.etcd.unwrap_or(0.0) == 0.0
                {
                    continue;
                }
                let show = |v: Option<f64>, runs: &[RunResult]| match (v, failed(runs)) {
                    (None, Some(e)) if m.key == "requests_per_s" => short(&e),
                    _ => num(v),
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} |",
                    row.scenario,
                    m.label,
                    show(c.raftkine, &row.raftkine_runs),
                    show(c.etcd, &row.etcd_runs),
                    ratio(c.ratio)
                );
            }
        }
        let mut problems = String::new();
        for row in &self.rows {
            for (name, runs) in [("raftkine", &row.raftkine_runs), ("etcd", &row.etcd_runs)] {
                for r in runs.iter() {
                    let e = r.error.clone().or_else(|| {
                        r.report.as_ref().and_then(|x| {
                            (x.errors > 0).then(|| {
                                format!(
                                    "{} errors, first: {}",
                                    x.errors,
                                    x.first_error.as_deref().unwrap_or("?")
                                )
                            })
                        })
                    });
                    if let Some(e) = e {
                        let _ = writeln!(
                            problems,
                            "- {name}, {} (round {}): {}",
                            row.scenario,
                            r.round,
                            one_line(&e)
                        );
                    }
                }
            }
        }
        self.extras_markdown(&mut s);
        if !problems.is_empty() {
            let _ = writeln!(s, "\n## Errors\n\n{problems}");
        }
        let _ = writeln!(s, "\n## Command lines\n");
        for row in &self.rows {
            let _ = writeln!(
                s,
                "- {}: `raftkine-bench --endpoints URL {}`",
                row.scenario, row.command
            );
        }
        s
    }
}

fn one_line(e: &str) -> String {
    let line = e.lines().next().unwrap_or("").trim();
    if line.chars().count() > 300 {
        format!("{}…", line.chars().take(300).collect::<String>())
    } else {
        line.to_string()
    }
}

fn short(e: &str) -> String {
    if e.starts_with("not available yet") {
        return "not available yet".into();
    }
    if e.starts_with("skipped") {
        return "skipped (did not start)".into();
    }
    let line = one_line(e).replace('|', "/");
    if line.chars().count() > 40 {
        format!("error: {}…", line.chars().take(40).collect::<String>())
    } else {
        format!("error: {line}")
    }
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
    }
}

fn ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |x| format!("{x:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
