//! Command-line flags. Global flags and scenario names follow etcd's `benchmark` tool
//! (`--endpoints`, `--conns`, `--clients`, `--total`, `--key-size`, `--val-size`,
//! `--sequential-keys`, `--key-space-size`; `put`, `range`, `txn-put`, ...), so a command line
//! from etcd's performance docs carries over.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// raftkine-bench: etcd `benchmark`-style load scenarios, and a side-by-side driver.
#[derive(Parser, Debug, Clone)]
#[command(name = "raftkine-bench", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,

    #[command(subcommand)]
    pub command: Command,
}

/// Flags shared by every scenario (accepted before or after the scenario name).
#[derive(Args, Debug, Clone)]
pub struct GlobalOpts {
    /// Server endpoints, comma separated (HOST:PORT or http://HOST:PORT).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379",
        global = true
    )]
    pub endpoints: Vec<String>,

    /// Number of gRPC connections; clients share them round-robin.
    #[arg(long, default_value_t = 1, global = true)]
    pub conns: usize,

    /// Number of concurrent clients (each runs one request at a time).
    #[arg(long, default_value_t = 1, global = true)]
    pub clients: usize,

    /// Total number of requests (each scenario has its own default).
    #[arg(long, global = true)]
    pub total: Option<u64>,

    /// Key size in bytes.
    #[arg(long, default_value_t = 8, global = true)]
    pub key_size: usize,

    /// Value size in bytes (the k8s scenarios use --object-size instead).
    #[arg(long, default_value_t = 8, global = true)]
    pub val_size: usize,

    /// Use sequential keys (request i writes key i % key-space-size) instead of random ones.
    #[arg(long, global = true)]
    pub sequential_keys: bool,

    /// Number of distinct keys written.
    #[arg(long, default_value_t = 1, global = true)]
    pub key_space_size: u64,

    /// Stop issuing requests after this many seconds, even if --total is not reached.
    #[arg(long, global = true)]
    pub max_seconds: Option<f64>,

    /// Per-request timeout in seconds (a timed-out request counts as an error).
    #[arg(long, default_value_t = 10.0, global = true)]
    pub request_timeout: f64,

    /// Print the report as JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The scenarios, and the side-by-side driver.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Write keys (etcd benchmark `put`).
    Put,
    /// Read a key or range repeatedly (etcd benchmark `range KEY [END] --consistency l|s`).
    Range(RangeOpts),
    /// Transactions of --txn-ops puts (etcd benchmark `txn-put`).
    TxnPut(TxnPutOpts),
    /// Lease keep-alive round trips, one lease per client (etcd benchmark `lease-keepalive`).
    LeaseKeepalive,
    /// Puts fanned out to many watchers: events/s and put-to-event latency.
    Watch(WatchOpts),
    /// Serializable gets while many unsynced watchers catch up (etcd benchmark `watch-get`).
    WatchGet(WatchGetOpts),
    /// Paginated lists (limit 500) of N ~4 KiB objects under a prefix, at a fixed revision.
    K8sList(K8sListOpts),
    /// kube-apiserver's traffic shapes: create/update/delete txns, gets, paged lists,
    /// list-then-watch, and periodic compaction through the compact_rev_key txn.
    K8sMix(K8sMixOpts),
    /// Run every scenario against raftkine and etcd alternately and print the comparison.
    Compare(CompareOpts),
}

/// Read consistency, as etcd's `--consistency`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable.
    L,
    /// Serializable.
    S,
}

#[derive(Args, Debug, Clone)]
pub struct RangeOpts {
    /// Key to read.
    pub key: String,
    /// Optional range end (exclusive).
    pub end: Option<String>,
    /// l (linearizable) or s (serializable).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Write KEY (with a --val-size value) once before measuring, so the range finds it.
    #[arg(long)]
    pub put_first: bool,
}

#[derive(Args, Debug, Clone)]
pub struct TxnPutOpts {
    /// Puts per transaction.
    #[arg(long, default_value_t = 1)]
    pub txn_ops: usize,
}

#[derive(Args, Debug, Clone)]
pub struct WatchOpts {
    /// Watch streams (gRPC bidi streams), spread over the connections.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Watchers per stream; every watcher sees every put.
    #[arg(long, default_value_t = 100)]
    pub watchers_per_stream: usize,
    /// Puts to make (each is delivered to every watcher); --total is an alias.
    #[arg(long)]
    pub put_total: Option<u64>,
    /// Puts per second (0: as fast as the clients go).
    #[arg(long, default_value_t = 0.0)]
    pub put_rate: f64,
}

#[derive(Args, Debug, Clone)]
pub struct WatchGetOpts {
    /// Watchers, all on the same key, starting from the first of the events.
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// Watch streams the watchers are spread over.
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Events each watcher has to catch up on.
    #[arg(long, default_value_t = 8)]
    pub watch_events: usize,
}

#[derive(Args, Debug, Clone)]
pub struct K8sListOpts {
    /// Objects loaded under the prefix before listing.
    #[arg(long, default_value_t = 10_000)]
    pub objects: u64,
    /// Size of each object in bytes.
    #[arg(long, default_value_t = 4096)]
    pub object_size: usize,
    /// Page size of the paginated list.
    #[arg(long, default_value_t = 500)]
    pub limit: i64,
}

#[derive(Args, Debug, Clone)]
pub struct K8sMixOpts {
    /// Objects created before the mix starts (the key space holds twice as many).
    #[arg(long, default_value_t = 2000)]
    pub objects: u64,
    /// Size of each object in bytes.
    #[arg(long, default_value_t = 2048)]
    pub object_size: usize,
    /// Namespaces the objects are spread over (a list reads one namespace).
    #[arg(long, default_value_t = 10)]
    pub namespaces: u64,
    /// Page size of the paginated lists.
    #[arg(long, default_value_t = 500)]
    pub limit: i64,
    /// Compaction interval in milliseconds (kube-apiserver's default is 5 minutes).
    #[arg(long, default_value_t = 1000)]
    pub compact_interval_ms: u64,
    /// Most watches kept open by list-then-watch at once (the oldest is closed first).
    #[arg(long, default_value_t = 50)]
    pub max_watches: usize,
}

#[derive(Args, Debug, Clone)]
pub struct CompareOpts {
    /// Short runs and one round (under 3 minutes).
    #[arg(
        long,
        env = "BENCH_QUICK",
        value_parser = parse_flag,
        default_value = "0",
        num_args = 0..=1,
        default_missing_value = "1"
    )]
    pub quick: bool,
    /// Members per cluster (1, or 3 once raftkine replicates).
    #[arg(long, env = "BENCH_NODES", default_value_t = 1)]
    pub nodes: usize,
    /// Rounds (A B per scenario each); default 3, or 1 in quick mode.
    #[arg(long, env = "BENCH_ROUNDS")]
    pub rounds: Option<usize>,
    /// Only run scenarios whose name contains one of these (comma separated).
    #[arg(long, env = "BENCH_ONLY", value_delimiter = ',')]
    pub only: Vec<String>,
    /// Workspace root (where `cargo build --release --bin raftkine` runs).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/.."))]
    pub workspace: PathBuf,
    /// Use this raftkine binary instead of building one.
    #[arg(long, env = "RAFTKINE_BIN")]
    pub raftkine_bin: Option<PathBuf>,
    /// etcd binary.
    #[arg(long, env = "ETCD_BIN", default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// Where latest.md and latest.json are written.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    pub out_dir: PathBuf,
}

fn parse_flag(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "off" => Ok(false),
        "1" | "true" | "yes" | "on" => Ok(true),
        other => Err(format!("expected 0 or 1, got {other:?}")),
    }
}
