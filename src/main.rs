//! The raftkine command line: `serve` (the default) runs a member; `version` prints versions.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use raftkine::config::ServeConfig;
use raftkine::node::Node;

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

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a member serving the etcd v3 API (the default).
    Serve(Box<ServeConfig>),
    /// Print raftkine's version and the etcd version it emulates by default.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Version) => {
            println!("raftkine {}", env!("CARGO_PKG_VERSION"));
            println!("etcd API: 3.5 (reported version defaults to 3.5.13)");
            ExitCode::SUCCESS
        }
        Some(Command::Serve(config)) => run_server(*config),
        None => run_server(cli.serve),
    }
}

fn run_server(config: ServeConfig) -> ExitCode {
    init_logging(&config.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftkine: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("raftkine: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: ServeConfig) -> raftkine::error::Result<()> {
    let node = Node::start(config)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
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
