//! The result of one scenario run: requests/s and latency percentiles (plus per-kind
//! breakdowns and scenario-specific extras), printable as text or JSON.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::runner::Outcome;
use crate::stats::LatencySummary;

/// One scenario's figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    /// Successful requests (for `watch`: events delivered).
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed_s: f64,
    pub requests_per_s: f64,
    pub latency: LatencySummary,
    /// True when --max-seconds ended the run before --total.
    pub capped: bool,
    /// Latencies per kind of request, when a scenario makes several kinds.
    pub breakdown: BTreeMap<String, LatencySummary>,
    /// Scenario-specific figures (events/s, pages per list, ...).
    pub extra: BTreeMap<String, f64>,
}

impl Report {
    /// A report from a runner outcome.
    pub fn from_outcome(scenario: &str, out: &Outcome) -> Report {
        let elapsed_s = out.elapsed.as_secs_f64();
        let requests = out.latencies.count();
        let breakdown = if out.by_kind.len() > 1 {
            out.by_kind
                .iter()
                .map(|(k, v)| (k.to_string(), v.summary()))
                .collect()
        } else {
            BTreeMap::new()
        };
        Report {
            scenario: scenario.to_string(),
            requests,
            errors: out.errors,
            first_error: out.first_error.clone(),
            elapsed_s,
            requests_per_s: if elapsed_s > 0.0 {
                requests as f64 / elapsed_s
            } else {
                0.0
            },
            latency: out.latencies.summary(),
            capped: out.capped,
            breakdown,
            extra: BTreeMap::new(),
        }
    }

    /// Human-readable summary, in the spirit of etcd benchmark's.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let l = &self.latency;
        let _ = writeln!(s, "Summary ({}):", self.scenario);
        let _ = writeln!(s, "  Total:\t{:.4} secs.", self.elapsed_s);
        let _ = writeln!(s, "  Requests:\t{}", self.requests);
        let _ = writeln!(s, "  Requests/sec:\t{:.1}", self.requests_per_s);
        let _ = writeln!(s, "  Average:\t{:.3} ms", l.avg_ms);
        let _ = writeln!(s, "  p50:\t\t{:.3} ms", l.p50_ms);
        let _ = writeln!(s, "  p99:\t\t{:.3} ms", l.p99_ms);
        let _ = writeln!(s, "  p99.9:\t{:.3} ms", l.p999_ms);
        let _ = writeln!(s, "  Slowest:\t{:.3} ms", l.max_ms);
        if self.capped {
            let _ = writeln!(s, "  (stopped by --max-seconds before --total)");
        }
        if self.errors > 0 {
            let _ = writeln!(
                s,
                "  Errors:\t{} (first: {})",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            );
        }
        if !self.breakdown.is_empty() {
            let _ = writeln!(s, "  By kind:");
            for (kind, b) in &self.breakdown {
                let _ = writeln!(
                    s,
                    "    {kind:<12} n={:<8} avg {:.3} ms  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms",
                    b.count, b.avg_ms, b.p50_ms, b.p99_ms, b.p999_ms
                );
            }
        }
        for (k, v) in &self.extra {
            let _ = writeln!(s, "  {k}:\t{v:.3}");
        }
        s
    }
}
