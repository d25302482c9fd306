//! etcd's Cluster service. A raftkine node is, for now, a cluster of one member; membership
//! changes (MemberAdd/Remove/Promote) arrive with replication.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::node::Node;
use crate::proto::etcdserverpb::{cluster_server::Cluster, *};

pub struct ClusterService {
    node: Arc<Node>,
}

impl ClusterService {
    pub fn new(node: Arc<Node>) -> ClusterService {
        ClusterService { node }
    }

    fn members(&self) -> Vec<Member> {
        vec![Member {
            id: self.node.member_id,
            name: self.node.config.name.clone(),
            peer_ur_ls: vec![],
            client_ur_ls: client_urls(&self.node),
            is_learner: false,
        }]
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(self.node.header(self.node.store.revision()))
    }
}

/// The client URLs of this member as etcd prints them.
pub fn client_urls(node: &Node) -> Vec<String> {
    let scheme = if node.config.cert_file.is_some() {
        "https"
    } else {
        "http"
    };
    node.config
        .listen
        .iter()
        .map(|l| match l.split_once("://") {
            Some(("unix", path)) => format!("unix://{path}"),
            Some((_, addr)) => format!("{scheme}://{addr}"),
            None => format!("{scheme}://{l}"),
        })
        .collect()
}

fn not_yet() -> Status {
    Status::unimplemented("raftkine: membership changes are not available yet (single-node)")
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Err(not_yet())
    }

    async fn member_remove(
        &self,
        _: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(not_yet())
    }

    async fn member_update(
        &self,
        _: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(not_yet())
    }

    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        _: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(not_yet())
    }
}
