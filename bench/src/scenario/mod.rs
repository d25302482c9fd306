//! The scenarios. `run` connects, builds the scenario's workers from the global flags, runs
//! them and returns the report.

mod k8s;
mod k8s_list;
mod k8s_mix;
mod lease;
mod put;
mod range;
mod txn_put;
mod watch;
mod watch_get;

use std::time::Duration;

use anyhow::{bail, Result};

use tokio::sync::OnceCell;

use crate::cli::{Cli, Command, GlobalOpts};
use crate::conn::{LeanPool, Pool};
use crate::keys::KeyGen;
use crate::report::Report;
use crate::runner::Limits;

/// What every scenario gets: connections (opened on first use, so a scenario holds only the
/// kind it uses), limits and key/value shapes.
pub struct Ctx {
    pool: OnceCell<Pool>,
    lean: OnceCell<LeanPool>,
    pub clients: usize,
    pub keys: KeyGen,
    pub val_size: usize,
    pub global: GlobalOpts,
}

impl Ctx {
    /// The `etcd-client` connections.
    pub async fn pool(&self) -> Result<&Pool> {
        self.pool
            .get_or_try_init(|| Pool::connect(&self.global.endpoints, self.global.conns))
            .await
    }

    /// The lean unary connections.
    pub async fn lean(&self) -> Result<&LeanPool> {
        self.lean
            .get_or_try_init(|| LeanPool::connect(&self.global.endpoints, self.global.conns))
            .await
    }

    /// Limits for a run of `default_total` requests unless --total says otherwise.
    pub fn limits(&self, default_total: u64) -> Limits {
        Limits {
            total: self.global.total.unwrap_or(default_total),
            max_duration: self.global.max_seconds.map(Duration::from_secs_f64),
            request_timeout: Duration::from_secs_f64(self.global.request_timeout),
            rate: None,
        }
    }
}

/// Runs the scenario named on the command line.
pub async fn run(cli: &Cli) -> Result<Report> {
    let g = &cli.global;
    if g.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let ctx = Ctx {
        pool: OnceCell::new(),
        lean: OnceCell::new(),
        clients: g.clients,
        keys: KeyGen::new(g.key_size, g.key_space_size, g.sequential_keys),
        val_size: g.val_size,
        global: g.clone(),
    };
    match &cli.command {
        Command::Put => put::run(&ctx).await,
        Command::Range(o) => range::run(&ctx, o).await,
        Command::TxnPut(o) => txn_put::run(&ctx, o).await,
        Command::LeaseKeepalive => lease::run(&ctx).await,
        Command::Watch(o) => watch::run(&ctx, o).await,
        Command::WatchGet(o) => watch_get::run(&ctx, o).await,
        Command::K8sList(o) => k8s_list::run(&ctx, o).await,
        Command::K8sMix(o) => k8s_mix::run(&ctx, o).await,
        Command::Compare(_) => bail!("compare is not a scenario"),
    }
}
