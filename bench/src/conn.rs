//! Connections: `--conns` of them, shared round-robin by the `--clients` workers, as etcd's
//! benchmark does. Unary scenarios use the lean client of `crate::grpc` ([`LeanPool`]); the
//! streaming ones (watch, lease keep-alive) and the Kubernetes-shaped ones use `etcd-client`
//! ([`Pool`]). A scenario opens only the kind it uses (see `scenario::Ctx`).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use etcd_client::{Client, ConnectOptions};

use crate::grpc::GrpcConn;

/// `etcd-client` connections.
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

/// Lean HTTP/2 connections; connection `i` goes to endpoint `i % endpoints`.
pub struct LeanPool {
    conns: Vec<GrpcConn>,
}

impl LeanPool {
    /// Opens `conns` connections spread over `endpoints` (at least one).
    pub async fn connect(endpoints: &[String], conns: usize) -> Result<LeanPool> {
        if endpoints.is_empty() {
            bail!("no endpoints given");
        }
        let mut out = Vec::with_capacity(conns.max(1));
        for i in 0..conns.max(1) {
            out.push(GrpcConn::connect(&endpoints[i % endpoints.len()]).await?);
        }
        Ok(LeanPool { conns: out })
    }

    /// The connection of worker `i`.
    pub fn conn(&self, i: usize) -> GrpcConn {
        self.conns[i % self.conns.len()].clone()
    }
}
