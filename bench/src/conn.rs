//! Connections: `--conns` etcd clients (each one gRPC connection), shared round-robin by the
//! `--clients` workers, as etcd's benchmark does.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use etcd_client::{Client, ConnectOptions};

/// The connections of one run.
pub struct Pool {
    clients: Vec<Client>,
}

impl Pool {
    /// Opens `conns` connections to `endpoints` (at least one).
    pub async fn connect(endpoints: &[String], conns: usize) -> Result<Pool> {
        if endpoints.is_empty() {
            bail!("no endpoints given");
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(30), Duration::from_secs(10));
        let mut clients = Vec::with_capacity(conns.max(1));
        for _ in 0..conns.max(1) {
            let client = Client::connect(endpoints, Some(options.clone()))
                .await
                .with_context(|| format!("connecting to {}", endpoints.join(",")))?;
            clients.push(client);
        }
        Ok(Pool { clients })
    }

    /// The connection of worker `i`.
    pub fn client(&self, i: usize) -> Client {
        self.clients[i % self.clients.len()].clone()
    }
}
