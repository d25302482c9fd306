//! The `dqlite` admin command as MicroK8s's scripts run it:
//!
//! ```text
//! dqlite -s file://DIR/cluster.yaml -c DIR/cluster.crt -k DIR/cluster.key [-f json] k8s ".cluster"
//! ```
//!
//! Verbs: `.cluster`, `.leader`, `.remove ADDRESS` talk to the members named by `-s` over the
//! peer port (mutual TLS with the cluster certificate, raftkine's Admin service);
//! `.reconfigure DIR CLUSTER.yaml` rewrites a stopped node's membership (quorum recovery).
//! Output is what go-dqlite's shell prints, so the scripts parse it unchanged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::files::{self, NodeInfo};
use crate::error::{Error, Result};
use crate::peer::{connect, url_to_addr};
use crate::proto::raftkinepb::{
    admin_client::AdminClient, ClusterStatusRequest, ClusterStatusResponse, RemoveNodeRequest,
};
use crate::tls::PeerIdentity;

/// `raftkine dqlite` (also the binary run under the name `dqlite`).
#[derive(Args, Debug, Clone)]
pub struct ShellArgs {
    /// The servers: `file://PATH` of a cluster.yaml, or addresses separated by commas.
    #[arg(short = 's', long = "servers", default_value = "127.0.0.1:9001")]
    pub servers: String,
    /// The cluster certificate (`cluster.crt`).
    #[arg(short = 'c', long = "cert")]
    pub cert: Option<PathBuf>,
    /// The cluster key (`cluster.key`).
    #[arg(short = 'k', long = "key")]
    pub key: Option<PathBuf>,
    /// Output format: tabular or json.
    #[arg(short = 'f', long = "format", default_value = "tabular")]
    pub format: String,
    /// How long to try the servers.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The database name (`k8s`; accepted for compatibility).
    pub database: String,
    /// The command: `.cluster`, `.leader`, `.remove ADDRESS` or `.reconfigure DIR FILE`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Tabular,
    Json,
}

/// Runs one command; returns what to print (go-dqlite prints it followed by a newline).
pub async fn run(args: &ShellArgs) -> Result<String> {
    let format = match args.format.as_str() {
        "tabular" => Format::Tabular,
        "json" => Format::Json,
        other => return Err(Error::Config(format!("unknown format {other}"))),
    };
    let line = args.command.join(" ");
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.first().map(|w| w.to_ascii_lowercase()).as_deref() {
        Some(".cluster") => {
            let status = cluster_status(args).await?;
            Ok(render_cluster(&nodes_of(&status), format))
        }
        Some(".leader") => {
            let status = cluster_status(args).await?;
            Ok(nodes_of_leader(&status).unwrap_or_default())
        }
        Some(".remove") => {
            let [_, address] = words[..] else {
                return Err(Error::Config(
                    "bad command format, should be: .remove <address>".into(),
                ));
            };
            remove(args, address).await
        }
        Some(".reconfigure") => {
            let [_, dir, file] = words[..] else {
                return Err(Error::Config(
                    "bad command format, should be: .reconfigure <dir> <clusteryaml>".into(),
                ));
            };
            crate::recover::reconfigure_from_cluster_yaml(&PathBuf::from(dir), &PathBuf::from(file))
                .await?;
            Ok("OK".into())
        }
        _ => Err(Error::Config(format!(
            "{line:?}: raftkine's dqlite command knows .cluster, .leader, .remove <address> and .reconfigure <dir> <clusteryaml>"
        ))),
    }
}

fn identity(args: &ShellArgs) -> Result<PeerIdentity> {
    let (Some(cert), Some(key)) = (&args.cert, &args.key) else {
        return Err(Error::Config(
            "raftkine's peer port needs the cluster certificate: pass -c cluster.crt -k cluster.key"
                .into(),
        ));
    };
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).map_err(|e| Error::Config(format!("{}: {e}", p.display())))
    };
    PeerIdentity::from_ca(read(cert)?, read(key)?, "dqlite-shell")
}

/// An Admin client on the first server that answers.
async fn admin(args: &ShellArgs) -> Result<AdminClient<tonic::transport::Channel>> {
    let servers = files::servers(&args.servers)?;
    if servers.is_empty() {
        return Err(Error::Config("no servers given (-s)".into()));
    }
    let tls = Arc::new(crate::tls::peer_client_config(&identity(args)?)?);
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut last = String::new();
    loop {
        for server in &servers {
            let addr = url_to_addr(server);
            match tokio::time::timeout(Duration::from_secs(2), connect::channel(&addr, tls.clone()))
                .await
            {
                Ok(Ok(channel)) => return Ok(AdminClient::new(channel)),
                Ok(Err(e)) => last = format!("{addr}: {e}"),
                Err(_) => last = format!("{addr}: no answer"),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Unavailable(format!("no server answered ({last})")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn cluster_status(args: &ShellArgs) -> Result<ClusterStatusResponse> {
    let mut client = admin(args).await?;
    Ok(client
        .cluster_status(ClusterStatusRequest {})
        .await
        .map_err(|s| Error::Unavailable(s.message().to_string()))?
        .into_inner())
}

fn nodes_of(status: &ClusterStatusResponse) -> Vec<NodeInfo> {
    let mut nodes: Vec<NodeInfo> = status
        .members
        .iter()
        .filter_map(|s| s.member.as_ref())
        .map(NodeInfo::of_member)
        .collect();
    nodes.sort_by_key(|n| (n.role, n.id));
    nodes
}

fn nodes_of_leader(status: &ClusterStatusResponse) -> Option<String> {
    status
        .members
        .iter()
        .find(|s| s.is_leader)
        .and_then(|s| s.member.as_ref())
        .and_then(|m| m.peer_ur_ls.first())
        .map(|u| url_to_addr(u))
}

/// `.cluster` as go-dqlite prints it: `ID(hex)|ADDRESS|ROLE` lines, or tab-indented JSON.
fn render_cluster(nodes: &[NodeInfo], format: Format) -> String {
    match format {
        Format::Tabular => nodes
            .iter()
            .map(|n| format!("{:x}|{}|{}", n.id, n.address, files::role_name(n.role)))
            .collect::<Vec<_>>()
            .join("\n"),
        Format::Json => {
            let mut out = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
            let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
            match serde::Serialize::serialize(nodes, &mut ser) {
                Ok(()) => String::from_utf8_lossy(&out).to_string(),
                Err(_) => "[]".into(),
            }
        }
    }
}

async fn remove(args: &ShellArgs, address: &str) -> Result<String> {
    let mut client = admin(args).await?;
    let status = client
        .cluster_status(ClusterStatusRequest {})
        .await
        .map_err(|s| Error::Unavailable(s.message().to_string()))?
        .into_inner();
    let Some(node) = nodes_of(&status).into_iter().find(|n| n.address == address) else {
        return Err(Error::Config(format!("no node has address {address:?}")));
    };
    client
        .remove_node(RemoveNodeRequest {
            node: node.id.to_string(),
        })
        .await
        .map_err(|s| Error::Config(format!("remove node {address:?}: {}", s.message())))?;
    Ok(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_renders_like_go_dqlite() {
        let nodes = vec![
            NodeInfo {
                id: 0x2dc171858c3155be,
                address: "127.0.0.1:19001".into(),
                role: 0,
            },
            NodeInfo {
                id: 0xabc,
                address: "10.0.0.2:19001".into(),
                role: 1,
            },
        ];
        assert_eq!(
            render_cluster(&nodes, Format::Tabular),
            "2dc171858c3155be|127.0.0.1:19001|voter\nabc|10.0.0.2:19001|stand-by"
        );
        let json = render_cluster(&nodes[..1], Format::Json);
        assert_eq!(
            json,
            "[\n\t{\n\t\t\"ID\": 3297041220608546238,\n\t\t\"Address\": \"127.0.0.1:19001\",\n\t\t\"Role\": 0\n\t}\n]"
        );
    }
}
