//! The etcd v3 gRPC services. Each file is one etcd service: it validates requests as etcd's
//! v3rpc layer does, turns writes into commands for raft and reads into store reads, and fills
//! response headers. No storage logic lives here; errors map to statuses in `crate::error`.

pub mod admin;
pub mod auth;
pub mod cluster;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod validate;
pub mod watch;

use std::sync::Arc;

use tonic::Status;

use crate::error::Error;
use crate::node::Node;
use crate::proto::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use crate::proto::raftkinepb::admin_server::AdminServer;

/// Headroom etcd allows on top of --max-request-bytes for gRPC framing.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// tonic's own limit on a decoded message: above etcd's, so that etcd's gRPC error (see
/// [`check_message_size`]) is what clients see for any plausible request.
const DECODE_LIMIT_BYTES: usize = 64 * 1024 * 1024;

/// Every etcd service of a node, ready to be added to a tonic server.
#[derive(Clone)]
pub struct Services {
    pub kv: KvServer<kv::KvService>,
    pub watch: WatchServer<watch::WatchService>,
    pub lease: LeaseServer<lease::LeaseService>,
    pub maintenance: MaintenanceServer<maintenance::MaintenanceService>,
    pub cluster: ClusterServer<cluster::ClusterService>,
    pub auth: AuthServer<auth::AuthService>,
    pub admin: AdminServer<admin::AdminService>,
}

impl Services {
    pub fn new(node: Arc<Node>) -> Services {
        let limit = DECODE_LIMIT_BYTES;
        Services {
            kv: KvServer::new(kv::KvService::new(node.clone()))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
            watch: WatchServer::new(watch::WatchService::new(node.clone()))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
            lease: LeaseServer::new(lease::LeaseService::new(node.clone()))
                .max_decoding_message_size(limit),
            maintenance: MaintenanceServer::new(maintenance::MaintenanceService::new(node.clone()))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
            cluster: ClusterServer::new(cluster::ClusterService::new(node.clone())),
            auth: AuthServer::new(auth::AuthService::new(node.clone())),
            admin: AdminServer::new(admin::AdminService::new(node)),
        }
    }
}

/// Refuses a request that carries etcd's `hasleader` metadata when this member has no leader.
pub(crate) fn require_leader_if_asked<T>(
    node: &Node,
    request: &tonic::Request<T>,
) -> Result<(), Status> {
    let wants_leader = request
        .metadata()
        .get("hasleader")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "true");
    if wants_leader && !node.raft_status().has_leader() {
        return Err(Error::NoLeader.into());
    }
    Ok(())
}

/// grpc-go's answer (which etcd clients see) to a message over --max-request-bytes plus gRPC
/// overhead.
pub(crate) fn check_message_size(node: &Node, message: &impl prost::Message) -> Result<(), Status> {
    let max = node.config.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let len = message.encoded_len();
    if len > max {
        return Err(Status::resource_exhausted(format!(
            "grpc: received message larger than max ({len} vs. {max})"
        )));
    }
    Ok(())
}
