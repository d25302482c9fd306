//! `raftkine-bench`: a load tool for etcd v3 servers (raftkine and etcd) whose flags and
//! scenarios mirror etcd's own `benchmark` tool, plus Kubernetes-shaped scenarios, and a
//! `compare` driver that runs every scenario against raftkine and etcd side by side.

mod cli;
mod compare;
mod conn;
mod grpc;
mod keys;
mod report;
mod runner;
mod scenario;
mod stats;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftkine-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Compare(opts) => compare::run(opts).await,
            _ => {
                let report = scenario::run(&cli).await?;
                if cli.global.json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print!("{}", report.text());
                }
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftkine-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
