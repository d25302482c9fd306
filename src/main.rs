//! The raftkine command line: `serve` (the default) runs a member, `join` joins a cluster and
//! runs a member, and the operator commands talk to a running member.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use raftkine::backup::restore::RestoreOptions;
use raftkine::config::ServeConfig;
use raftkine::error::Result;
use raftkine::node::Node;
use raftkine::store::Store;

/// The server's memory allocator: jemalloc instead of glibc's malloc, whose malloc and free were a
/// quarter of the server's CPU in a write; with jemalloc a put costs ~30 % less server CPU
/// (bench/README.md, session 6). Elsewhere the system allocator stays.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod allocator {
    #[global_allocator]
    static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

    /// jemalloc's settings, read when it starts (`_RJEM_MALLOC_CONF` in the environment
    /// overrides them): one arena, since each arena keeps its own free pages and the per-thread
    /// caches already keep the threads apart; freed pages go back to the system after a second
    /// instead of ten. (Smaller per-thread caches cost the reads ~15 % in session 6, when tonic
    /// still encoded every answer in a buffer of 8 KiB.)
    #[export_name = "_rjem_malloc_conf"]
    pub static JEMALLOC_CONF: &u8 = &b"narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0];

    /// Gives the pages freed while starting (what rebuilding the key index and reading the WAL
    /// read, above all) back to the system at once. jemalloc returns freed pages only as later
    /// allocations and frees move its decay clock, and an idle member makes none. The calling
    /// thread's cache of freed blocks goes back first, or the pages holding them stay in use.
    pub fn release_freed_pages() {
        for name in [c"thread.tcache.flush", c"arena.4096.purge"] {
            // SAFETY: `thread.tcache.flush` and `arena.<MALLCTL_ARENAS_ALL = 4096>.purge` read
            // and write no value, so every pointer may be null; the names are NUL-terminated
            // constants.
            let status = unsafe {
                tikv_jemalloc_sys::mallctl(
                    name.as_ptr(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    0,
                )
            };
            if status != 0 {
                tracing::debug!(status, ?name, "jemalloc did not release the freed pages");
            }
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "raftkine",
    version,
    about = "An etcd v3 compatible datastore for Kubernetes (sled + raft-rs)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// `raftkine` alone is `raftkine serve`.
    #[command(flatten)]
    serve: ServeConfig,
}

/// Where a running member's client API is.
#[derive(Args, Debug, Clone)]
struct Target {
    /// Client URL of a member: http://HOST:PORT, HOST:PORT or unix:///PATH.
    #[arg(long, default_value = "127.0.0.1:2379", env = "RAFTKINE_ENDPOINT")]
    endpoint: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a member serving the etcd v3 API (the default). A new data dir starts a new cluster.
    Serve(Box<ServeConfig>),
    /// Join the cluster of an `add-node` token (ADDR/TOKEN), then run as a member.
    Join {
        /// What `raftkine add-node` printed: ADDR/TOKEN.
        token: String,
        #[command(flatten)]
        serve: Box<ServeConfig>,
    },
    /// Print a one-time command that joins a new node to this cluster.
    AddNode {
        #[command(flatten)]
        target: Target,
        /// How long the token stays valid.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        token_ttl: Duration,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the cluster: voters, standbys, leader, replication lag.
    Status {
        #[command(flatten)]
        target: Target,
        /// Output format: text or json.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Remove a member (by id, name or peer address).
    RemoveNode {
        node: String,
        #[command(flatten)]
        target: Target,
    },
    /// Remove the member behind --endpoint from its cluster.
    Leave {
        #[command(flatten)]
        target: Target,
    },
    /// k8s-dqlite's `dqlite` admin command, as MicroK8s runs it:
    /// `dqlite -s file://DIR/cluster.yaml -c DIR/cluster.crt -k DIR/cluster.key [-f json] k8s .cluster`
    /// (also `.leader`, `.remove ADDRESS`, `.reconfigure DIR CLUSTER.yaml`). The binary run
    /// under the name `dqlite` is this command.
    Dqlite(raftkine::dqlite::shell::ShellArgs),
    /// Quorum recovery on a stopped member: the membership becomes this member (plus
    /// `--voters`); the others are removed. Refused while a quorum of the voters is reachable.
    Recover {
        /// The stopped member's storage dir.
        #[arg(long, default_value = "./raftkine-data")]
        storage_dir: std::path::PathBuf,
        /// Other surviving members to keep as voters (ids, names or peer addresses); run
        /// recover with the same list on each of them.
        #[arg(long, value_delimiter = ',')]
        voters: Vec<String>,
        /// Print the new membership without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Copy every key (under --prefix) from a live etcd, kine or k8s-dqlite endpoint, or from a
    /// k8s-dqlite migrator backup dir, into the raftkine at --endpoint; then check counts and
    /// a checksum on both sides.
    Migrate {
        /// Source endpoint: http://H:P, https://H:P (with --cacert/--cert/--key) or unix://PATH.
        #[arg(
            long,
            required_unless_present = "from_dir",
            conflicts_with = "from_dir"
        )]
        from: Option<String>,
        /// A k8s-dqlite migrator backup dir (N.key / N.data files) instead of an endpoint.
        #[arg(long)]
        from_dir: Option<std::path::PathBuf>,
        /// Copy only keys starting with this prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        #[command(flatten)]
        tls: raftkine::migrate::endpoint::TlsFiles,
        #[command(flatten)]
        target: Target,
    },
    /// k8s-dqlite's `migrator` (MicroK8s's dbctl and upgrade scripts run it):
    /// `--endpoint E --mode backup|backup-dqlite|restore|restore-to-dqlite|… --db-dir DIR`.
    Migrator(raftkine::migrate::backup_dir::MigratorArgs),
    /// Save a member's snapshot (etcd's format: bbolt database + sha256) to FILE.
    Backup {
        /// Where to write the snapshot (atomically).
        file: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Make the data dir of a new single-member cluster from a snapshot file saved by
    /// `raftkine backup` or `etcdctl snapshot save`.
    Restore {
        /// The snapshot file.
        file: PathBuf,
        /// The data dir to create (must be missing or empty).
        #[arg(long, env = "RAFTKINE_STORAGE_DIR", default_value = "./raftkine-data")]
        storage_dir: PathBuf,
        /// Name of the new member (its peer certificate's name).
        #[arg(long, default_value = "default")]
        name: String,
        /// Accept a file without its sha256 trailer, or with a wrong one.
        #[arg(long)]
        skip_hash_check: bool,
    },
    /// List or disarm alarms (NOSPACE), as `etcdctl alarm list|disarm`.
    Alarm {
        #[command(subcommand)]
        action: AlarmCommand,
    },
    /// Print raftkine's version and the etcd version it emulates by default.
    Version,
}

/// The `dqlite` command line (the binary run under that name): `dqlite ARGS` = `raftkine dqlite ARGS`.
#[derive(Parser, Debug)]
#[command(name = "dqlite", about = "dqlite admin verbs on a raftkine cluster")]
struct DqliteCli {
    #[command(flatten)]
    args: raftkine::dqlite::shell::ShellArgs,
}

#[derive(Subcommand, Debug)]
enum AlarmCommand {
    /// Print the raised alarms.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Deactivate every raised alarm (a cause still present raises its alarm again).
    Disarm {
        #[command(flatten)]
        target: Target,
    },
}

fn main() -> ExitCode {
    let invoked_as = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()));
    if invoked_as.as_deref() == Some("dqlite") {
        return run_dqlite(DqliteCli::parse().args);
    }
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Dqlite(args)) => run_dqlite(args),
        Some(Command::Migrate {
            from,
            from_dir,
            prefix,
            tls,
            target,
        }) => run_tool(async move {
            let report = match (from, from_dir) {
                (Some(from), _) => {
                    raftkine::migrate::copy::migrate(
                        &from,
                        &tls,
                        &target.endpoint,
                        prefix.as_bytes(),
                    )
                    .await?
                }
                (None, Some(dir)) => {
                    raftkine::migrate::copy::import_dir(&dir, &target.endpoint).await?
                }
                (None, None) => {
                    return Err(raftkine::error::Error::Config(
                        "--from or --from-dir is required".into(),
                    ))
                }
            };
            println!(
                "migrated {} keys (source revision {}); sha256 {} matches on both sides",
                report.keys, report.source_revision, report.checksum
            );
            Ok(())
        }),
        Some(Command::Migrator(args)) => run_tool(async move {
            let moved = raftkine::migrate::backup_dir::migrator(&args).await?;
            println!("{}: {moved} entries", args.mode);
            Ok(())
        }),
        Some(Command::Recover {
            storage_dir,
            voters,
            dry_run,
        }) => run_tool(async move {
            let plan = raftkine::recover::recover(&storage_dir, &voters, dry_run).await?;
            print!("{}", plan.describe());
            if dry_run {
                println!("(dry run: nothing changed)");
            } else {
                println!("done: start raftkine on this node (and on the other listed voters)");
            }
            Ok(())
        }),
        Some(Command::Version) => {
            println!("raftkine {}", env!("CARGO_PKG_VERSION"));
            println!("etcd API: 3.5 (reported version defaults to 3.5.13)");
            ExitCode::SUCCESS
        }
        Some(Command::Serve(config)) => run_member(*config, None),
        Some(Command::Join { token, serve }) => run_member(*serve, Some(token)),
        None => run_member(cli.serve, None),
        Some(Command::AddNode {
            target,
            token_ttl,
            json,
        }) => run_tool(raftkine::cli::add_node(&target.endpoint, token_ttl, json)),
        Some(Command::Status { target, format }) => {
            run_tool(raftkine::cli::status(&target.endpoint, format == "json"))
        }
        Some(Command::RemoveNode { node, target }) => {
            run_tool(raftkine::cli::remove_node(&target.endpoint, &node))
        }
        Some(Command::Leave { target }) => run_tool(raftkine::cli::leave(&target.endpoint)),
        Some(Command::Backup { file, target }) => {
            run_tool(raftkine::cli::backup::backup(&target.endpoint, &file))
        }
        Some(Command::Restore {
            file,
            storage_dir,
            name,
            skip_hash_check,
        }) => {
            let options = RestoreOptions {
                storage_dir,
                name,
                skip_hash_check,
            };
            run_tool(async move { raftkine::cli::backup::restore(&file, &options) })
        }
        Some(Command::Alarm { action }) => match action {
            AlarmCommand::List { target } => run_tool(raftkine::cli::alarm_list(&target.endpoint)),
            AlarmCommand::Disarm { target } => {
                run_tool(raftkine::cli::alarm_disarm(&target.endpoint))
            }
        },
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn run_tool(task: impl std::future::Future<Output = Result<()>>) -> ExitCode {
    init_logging("warn");
    // `raftkine status | head`: a closed pipe ends the tool quietly, as for other CLI tools,
    // instead of a panic in println!.
    // SAFETY: restoring the default disposition of a signal has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let outcome = runtime()
        .map_err(raftkine::error::Error::from)
        .and_then(|rt| rt.block_on(task));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftkine: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints what the verb printed (go-dqlite prints its result and a newline); errors go to
/// stderr with exit status 1.
fn run_dqlite(args: raftkine::dqlite::shell::ShellArgs) -> ExitCode {
    run_tool(async move {
        let out = raftkine::dqlite::shell::run(&args).await?;
        println!("{out}");
        Ok(())
    })
}

fn run_member(config: ServeConfig, join: Option<String>) -> ExitCode {
    init_logging(&config.log_filter());
    let outcome = runtime()
        .map_err(raftkine::error::Error::from)
        .and_then(|rt| rt.block_on(serve(config, join)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("raftkine: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(mut config: ServeConfig, join: Option<String>) -> Result<()> {
    let compaction = raftkine::compactor::Policy::parse(
        &config.auto_compaction_mode,
        &config.auto_compaction_retention,
    )?;
    let prepared = raftkine::dqlite::layout::prepare(&mut config)?;
    let store = Arc::new(Store::open_with_cache(
        &config.storage_dir,
        config.cache_mib,
    )?);
    let known = raftkine::identity::Identity::load(store.db(), &config.storage_dir)?.is_some();
    if let Some(token) = join {
        raftkine::membership::join_cluster(&token, &config, store.db()).await?;
    } else if let (Some(cluster), false) = (&prepared.join, known) {
        let peer =
            raftkine::tls::PeerIdentity::from_cluster_files(&config.storage_dir, &config.name)?
                .ok_or_else(|| {
                    raftkine::error::Error::Config(
                        "init.yaml names a cluster to join: cluster.crt and cluster.key of that \
                     cluster must be in the storage dir"
                            .into(),
                    )
                })?;
        raftkine::membership::join_with_certificate(cluster, peer, &config, store.db()).await?;
    } else if config.initial_cluster_state == "existing" && !known {
        raftkine::membership::join_existing(&config, store.db()).await?;
    }
    let node = Node::start_with(config, store)?;
    raftkine::dqlite::layout::finish(&node.config, &prepared)?;
    raftkine::dqlite::layout::spawn_state_files(&node);
    raftkine::compactor::spawn(&node, compaction);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    allocator::release_freed_pages();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let member = node.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = wait_for_signal() => tracing::info!("shutting down"),
            reason = member.stop_requested() => tracing::error!("shutting down: {reason}"),
        }
        let _ = stop.send(true);
    });
    let served = raftkine::server::serve(node.clone(), stopped).await;
    node.shutdown();
    served
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The log filter of `--log-level`: a level, or `target=level` directives separated by commas
/// ("info,sled=warn"); what does not parse logs at info.
fn log_filter(level: &str) -> Targets {
    level
        .parse::<Targets>()
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO))
}

fn init_logging(level: &str) {
    let filter = log_filter(level);
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();
}

#[cfg(test)]
mod tests {
    use super::log_filter;
    use tracing::Level;

    #[test]
    fn a_bare_level_applies_to_every_target() {
        let f = log_filter("debug");
        assert!(f.would_enable("sled::pagecache", &Level::DEBUG));
        assert!(f.would_enable("raftkine::store", &Level::INFO));
        assert!(!f.would_enable("raftkine::store", &Level::TRACE));
    }

    #[test]
    fn target_directives_override_the_default() {
        let f = log_filter("info,sled=warn,raftkine::raft=trace");
        assert!(f.would_enable("raftkine::api", &Level::INFO));
        assert!(!f.would_enable("raftkine::api", &Level::DEBUG));
        assert!(!f.would_enable("sled::tree", &Level::INFO));
        assert!(f.would_enable("sled::tree", &Level::WARN));
        assert!(f.would_enable("raftkine::raft::node", &Level::TRACE));
    }

    #[test]
    fn a_filter_that_does_not_parse_logs_at_info() {
        let f = log_filter("sled=loud");
        assert!(f.would_enable("raftkine", &Level::INFO));
        assert!(!f.would_enable("raftkine", &Level::DEBUG));
    }
}
