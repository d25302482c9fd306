//! The scenario matrix of `compare`: each row is a `raftkine-bench` command line (without
//! `--endpoints`), so any row can be rerun by hand. Shapes follow etcd's performance docs
//! (1 client on 1 connection, and 1000 clients on 100 connections; 8-byte keys, 256-byte
//! values); quick mode shrinks the totals and the time cap.

/// One row of the comparison.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub args: Vec<String>,
}

/// Sizes of one mode.
struct Sizes {
    /// --max-seconds of every row (a safety cap: the totals are picked to finish before it).
    secs: u32,
    put_1: u32,
    put_1000: u32,
    range_1: u32,
    range_1000: u32,
    lease_1: u32,
    lease_1000: u32,
    watch_puts: u32,
    watch_streams: u32,
    watch_per_stream: u32,
    watch_get_watchers: u32,
    watch_get_events: u32,
    list_objects: u32,
    lists: u32,
    mix_objects: u32,
    mix_total: u32,
    compact_ms: u32,
}

const FULL: Sizes = Sizes {
    secs: 15,
    put_1: 5_000,
    put_1000: 30_000,
    range_1: 10_000,
    range_1000: 50_000,
    lease_1: 20_000,
    lease_1000: 60_000,
    watch_puts: 2_000,
    watch_streams: 10,
    watch_per_stream: 100,
    watch_get_watchers: 10_000,
    watch_get_events: 16,
    list_objects: 10_000,
    lists: 40,
    mix_objects: 2_000,
    mix_total: 20_000,
    compact_ms: 1_000,
};

const QUICK: Sizes = Sizes {
    secs: 4,
    put_1: 1_000,
    put_1000: 5_000,
    range_1: 2_000,
    range_1000: 10_000,
    lease_1: 5_000,
    lease_1000: 20_000,
    watch_puts: 300,
    watch_streams: 10,
    watch_per_stream: 100,
    watch_get_watchers: 4_000,
    watch_get_events: 16,
    list_objects: 2_000,
    lists: 20,
    mix_objects: 500,
    mix_total: 5_000,
    compact_ms: 500,
};

fn row(name: &str, args: String) -> Scenario {
    Scenario {
        name: name.to_string(),
        args: args.split_whitespace().map(str::to_string).collect(),
    }
}

/// The rows, in running order.
pub fn scenarios(quick: bool) -> Vec<Scenario> {
    let s = if quick { &QUICK } else { &FULL };
    let cap = format!("--max-seconds {}", s.secs);
    let c1 = "--conns 1 --clients 1";
    let c1000 = "--conns 100 --clients 1000";
    let put = |total: u32| {
        format!("put --key-size 8 --val-size 256 --sequential-keys --key-space-size {total} --total {total} {cap}")
    };
    let range = |cons: &str, total: u32| {
        format!(
            "range bench-key --consistency {cons} --put-first --val-size 256 --total {total} {cap}"
        )
    };
    let txn = |total: u32| {
        format!("txn-put --txn-ops 1 --key-size 8 --val-size 256 --key-space-size {total} --total {total} {cap}")
    };
    let lease = |total: u32| format!("lease-keepalive --total {total} {cap}");
    vec![
        row("put 1c", format!("{} {c1}", put(s.put_1))),
        row("put 1000c", format!("{} {c1000}", put(s.put_1000))),
        row("range-l 1c", format!("{} {c1}", range("l", s.range_1))),
        row("range-l 1000c", format!("{} {c1000}", range("l", s.range_1000))),
        row("range-s 1c", format!("{} {c1}", range("s", s.range_1))),
        row("range-s 1000c", format!("{} {c1000}", range("s", s.range_1000))),
        row("txn-put 1c", format!("{} {c1}", txn(s.put_1))),
        row("txn-put 1000c", format!("{} {c1000}", txn(s.put_1000))),
        row("lease-keepalive 1c", format!("{} {c1}", lease(s.lease_1))),
        row(
            "lease-keepalive 1000c",
            format!("{} {c1000}", lease(s.lease_1000)),
        ),
        row(
            "watch",
            format!(
                "watch --streams {} --watchers-per-stream {} --put-total {} --val-size 256 \
                 --key-space-size 1000 --conns 10 --clients 10 {cap}",
                s.watch_streams, s.watch_per_stream, s.watch_puts
            ),
        ),
        row(
            "watch-get",
            format!(
                "watch-get --watchers {} --streams 10 --watch-events {} --conns 10 --clients 10 {cap}",
                s.watch_get_watchers, s.watch_get_events
            ),
        ),
        row(
            "k8s-list",
            format!(
                "k8s-list --objects {} --object-size 4096 --limit 500 --total {} \
                 --conns 10 --clients 10 {cap}",
                s.list_objects, s.lists
            ),
        ),
        row(
            "k8s-mix",
            format!(
                "k8s-mix --objects {} --object-size 2048 --namespaces 10 --limit 500 \
                 --compact-interval-ms {} --max-watches 50 --total {} --conns 10 --clients 100 {cap}",
                s.mix_objects, s.compact_ms, s.mix_total
            ),
        ),
    ]
}

/// The rows whose name contains one of `only` (all when `only` is empty).
pub fn select(all: Vec<Scenario>, only: &[String]) -> Vec<Scenario> {
    if only.is_empty() {
        return all;
    }
    all.into_iter()
        .filter(|s| only.iter().any(|o| s.name.contains(o.as_str())))
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    #[test]
    fn every_row_parses() {
        for quick in [false, true] {
            for s in scenarios(quick) {
                let mut argv = vec!["raftkine-bench".to_string()];
                argv.extend(s.args.clone());
                assert!(
                    Cli::try_parse_from(&argv).is_ok(),
                    "{}: {:?}",
                    s.name,
                    s.args
                );
            }
        }
    }
}
