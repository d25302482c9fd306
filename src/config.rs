//! All settings of a serving node, as command-line flags (clap). Names follow etcd's flags where
//! etcd has the setting, so an etcd command line mostly carries over.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::dqlite::flags::DqliteFlags;

/// `raftkine serve` flags.
#[derive(Args, Debug, Clone)]
pub struct ServeConfig {
    /// Directory holding the data (created when missing).
    #[arg(long, default_value = "./raftkine-data", env = "RAFTKINE_STORAGE_DIR")]
    pub storage_dir: PathBuf,

    /// Client API listeners: tcp://HOST:PORT, http://HOST:PORT, https://HOST:PORT,
    /// unix:///PATH or HOST:PORT. Repeat the flag or separate with commas.
    #[arg(
        long,
        alias = "listen-client-urls",
        value_delimiter = ',',
        default_value = "tcp://127.0.0.1:2379"
    )]
    pub listen: Vec<String>,

    /// Peer listener (raft traffic between members, mutual TLS with the cluster CA). Default:
    /// the Address of the storage dir's `info.yaml` / `init.yaml` when it has one (a
    /// k8s-dqlite storage dir), else tcp://127.0.0.1:2380.
    #[arg(long, alias = "listen-peer-urls")]
    pub peer_listen: Option<String>,

    /// Peer URL other members use to reach this one (default: the peer listener's address; set
    /// it when listening on 0.0.0.0 or behind a proxy).
    #[arg(long, alias = "initial-advertise-peer-urls")]
    pub advertise_peer_url: Option<String>,

    /// Client URLs announced in MemberList (default: the client listeners).
    #[arg(long, alias = "advertise-client-urls", value_delimiter = ',')]
    pub advertise_client_urls: Vec<String>,

    /// etcd's --initial-cluster-state. `existing`: a new storage dir joins the cluster of
    /// --initial-cluster as the member a MemberAdd recorded at this node's peer URL (the
    /// storage dir must hold the cluster's CA: `peer/ca.crt` + `peer/ca.key`, or a k8s-dqlite
    /// `cluster.crt` + `cluster.key`). `new`: a new storage dir starts a new cluster.
    #[arg(long, default_value = "new", value_parser = ["new", "existing"])]
    pub initial_cluster_state: String,

    /// etcd's --initial-cluster (NAME=PEER_URL,...): with `--initial-cluster-state existing`,
    /// the members to join through.
    #[arg(long, value_delimiter = ',')]
    pub initial_cluster: Vec<String>,

    /// Voters to keep: learners are promoted automatically while fewer exist (3, 5 or 7).
    #[arg(long, default_value_t = 3, value_parser = parse_voters)]
    pub voters: usize,

    /// Applied raft entries kept in the log; older ones are compacted away, and a member that
    /// falls further behind catches up by snapshot (etcd's --snapshot-count).
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_count: u64,

    /// A voter not heard from for this long is replaced by a caught-up standby, if there is one.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub voter_grace: Duration,

    /// Human-readable name of this member (etcd's --name).
    #[arg(long, default_value = "default")]
    pub name: String,

    /// Largest request accepted, in bytes (etcd's default: 1.5 MiB).
    #[arg(long, default_value_t = 1536 * 1024)]
    pub max_request_bytes: usize,

    /// Most operations in one txn branch.
    #[arg(long, default_value_t = 128)]
    pub max_txn_ops: usize,

    /// Memory the table may use to cache its pages, in MiB. Pages not cached are read from the
    /// data dir's file (usually from the kernel's page cache) when needed.
    #[arg(
        long,
        default_value_t = crate::store::DEFAULT_CACHE_MIB,
        env = "RAFTKINE_CACHE_MIB",
        value_parser = clap::value_parser!(u64).range(1..=1 << 20)
    )]
    pub cache_mib: u64,

    /// Size of the data dir above which the NOSPACE alarm is raised and writes are refused.
    #[arg(long, default_value_t = 2 * 1024 * 1024 * 1024)]
    pub quota_backend_bytes: u64,

    // Monitoring and the disk guard (k8s-dqlite's flags; etcd's --listen-metrics-urls).
    /// Serve Prometheus metrics and /health on --metrics-listen (k8s-dqlite's --metrics;
    /// `--metrics=false` turns it off again).
    #[arg(
        long,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub metrics: bool,

    /// Metrics listener: HOST:PORT or http://HOST:PORT (default 127.0.0.1:9042 with
    /// --metrics). Giving it turns metrics on. Repeat or comma-separate for several.
    #[arg(long, alias = "listen-metrics-urls", value_delimiter = ',')]
    pub metrics_listen: Vec<String>,

    /// How often the free space of the storage dir's filesystem is checked (0 disables).
    #[arg(long, default_value = "5s", value_parser = parse_duration_or_zero)]
    pub watch_storage_available_size_interval: Duration,

    /// Below this many free bytes the NOSPACE alarm is raised (writes refused) and
    /// --low-available-storage-action is taken.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    pub watch_storage_available_size_min_bytes: u64,

    /// What else to do when storage runs low: none, handover (a leader hands leadership to
    /// another voter) or terminate (the member shuts down).
    #[arg(long, value_enum, default_value_t = LowStorageAction::None)]
    pub low_available_storage_action: LowStorageAction,

    /// Tests only: a file holding the free bytes the disk guard sees instead of statvfs (a
    /// relative path is taken inside the storage dir, so each member of a test cluster has its
    /// own). Read at each check; missing or unreadable means statvfs.
    #[arg(long, hide = true, env = "RAFTKINE_TEST_AVAILABLE_BYTES_FILE")]
    pub test_available_bytes_file: Option<PathBuf>,

    /// etcd version reported by Maintenance.Status (kube-apiserver enables features from it).
    #[arg(long, default_value = "3.5.13")]
    pub emulated_etcd_version: String,

    /// TLS certificate (PEM) for the client listeners.
    #[arg(long, requires = "key_file")]
    pub cert_file: Option<PathBuf>,

    /// TLS private key (PEM) for the client listeners.
    #[arg(long, requires = "cert_file")]
    pub key_file: Option<PathBuf>,

    /// CA bundle (PEM) that client certificates must chain to; makes client certificates mandatory.
    #[arg(long, requires = "cert_file")]
    pub trusted_ca_file: Option<PathBuf>,

    /// Raft heartbeat interval in milliseconds (etcd's default).
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval: u64,

    /// Raft election timeout in milliseconds (etcd's default).
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,

    /// How long a write or linearizable read may wait for raft before failing.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Interval of progress notifications to watches that asked for them.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub watch_progress_notify_interval: Duration,

    /// Automatic compaction mode (etcd's): periodic or revision.
    #[arg(long, default_value = "periodic")]
    pub auto_compaction_mode: String,

    /// Automatic compaction retention: periodic mode a duration (1h, 30m) or a number of
    /// hours; revision mode a number of revisions. 0 (the default) turns it off
    /// (kube-apiserver compacts by itself).
    #[arg(long, default_value = "0")]
    pub auto_compaction_retention: String,

    /// Log level: error, warn, info, debug, trace, or per-target levels ("info,sled=warn").
    #[arg(long, default_value = "info", env = "RAFTKINE_LOG")]
    pub log_level: String,

    /// k8s-dqlite's flags (MicroK8s args files run unchanged).
    #[command(flatten)]
    pub dqlite: DqliteFlags,

    /// This member's failure domain (the storage dir's `failure-domain` file; 0 without one).
    #[arg(skip)]
    pub failure_domain: u64,
}

/// The peer listener when neither the flag nor the storage dir names one.
pub const DEFAULT_PEER_LISTEN: &str = "tcp://127.0.0.1:2380";

impl ServeConfig {
    /// The minimum lease TTL etcd derives from the election timeout (seconds, rounded up).
    pub fn min_lease_ttl(&self) -> i64 {
        let ms = 3 * self.election_timeout / 2;
        ms.div_ceil(1000).max(1) as i64
    }
}

/// The metrics listener when none is given (k8s-dqlite's default).
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9042";

/// What the disk guard does besides raising the NOSPACE alarm (k8s-dqlite's choices).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LowStorageAction {
    /// Only the alarm.
    None,
    /// A leader hands leadership to another voter.
    Handover,
    /// The member shuts down (cleanly; the exit status is 0, so that a service manager
    /// restarting on failure leaves it stopped).
    Terminate,
}

impl ServeConfig {
    /// Where to serve metrics: the --metrics-listen addresses, or the default one with
    /// --metrics, or none.
    pub fn metrics_addresses(&self) -> Vec<String> {
        if !self.metrics_listen.is_empty() {
            self.metrics_listen.clone()
        } else if self.metrics {
            vec![DEFAULT_METRICS_LISTEN.to_string()]
        } else {
            vec![]
        }
    }
}

/// A duration as humantime takes it ("5s", "1m 30s"), or a bare "0" (disabled).
fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

fn parse_voters(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n @ (1 | 3 | 5 | 7)) => Ok(n),
        _ => Err(format!("{s:?}: the number of voters must be 1, 3, 5 or 7")),
    }
}

impl ServeConfig {
    /// The peer URL announced to other members (`https://`: peer traffic is always TLS).
    pub fn peer_url(&self) -> String {
        let listen = self.peer_listen();
        let url = self.advertise_peer_url.as_ref().unwrap_or(&listen);
        format!("https://{}", crate::peer::url_to_addr(url))
    }

    /// The peer listener's URL.
    pub fn peer_listen(&self) -> String {
        self.peer_listen
            .clone()
            .unwrap_or_else(|| DEFAULT_PEER_LISTEN.to_string())
    }

    /// The log filter: `--debug` (k8s-dqlite) wins over `--log-level`.
    pub fn log_filter(&self) -> String {
        if self.dqlite.debug == Some(true) {
            "debug,h2=info,tower=info,hyper=info".to_string()
        } else {
            self.log_level.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        serve: ServeConfig,
    }

    #[test]
    fn the_cache_size_is_at_least_one_mib() {
        let cli = Cli::try_parse_from(["x", "--cache-mib", "8"]).expect("parses");
        assert_eq!(cli.serve.cache_mib, 8);
        let err = Cli::try_parse_from(["x", "--cache-mib", "0"]).expect_err("refused");
        assert!(err.to_string().contains("--cache-mib"), "{err}");
    }

    #[test]
    fn storage_interval_takes_go_style_durations_and_zero() {
        assert_eq!(parse_duration_or_zero("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration_or_zero("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration_or_zero("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration_or_zero("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration_or_zero("soon").is_err());
    }
}
