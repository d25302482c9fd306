//! The raftkine command line: `serve` (the default) runs a member, `join` joins a cluster and
//! runs a member, and the operator commands talk to a running member.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use raftkine::config::ServeConfig;
use raftkine::error::Result;
use raftkine::node::Node;
use raftkine::store::Store;

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
    /// List or disarm alarms (NOSPACE), as `etcdctl alarm list|disarm`.
    Alarm {
        #[command(subcommand)]
        action: AlarmCommand,
    },
    /// Print raftkine's version and the etcd version it emulates by default.
    Version,
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
    let cli = Cli::parse();
    match cli.command {
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

fn run_member(config: ServeConfig, join: Option<String>) -> ExitCode {
    init_logging(&config.log_level);
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

async fn serve(config: ServeConfig, join: Option<String>) -> Result<()> {
    let store = Arc::new(Store::open(&config.storage_dir)?);
    if let Some(token) = join {
        raftkine::membership::join_cluster(&token, &config, store.db()).await?;
    }
    let node = Node::start_with(config, store)?;
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

fn init_logging(level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
