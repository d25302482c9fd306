//! raftkine's Admin service (client port): join tokens, member removal, and the cluster status
//! the `raftkine` CLI prints. Not part of etcd's API.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::membership;
use crate::node::Node;
use crate::proto::raftkinepb::{
    admin_server::Admin, AddNodeRequest, AddNodeResponse, ClusterStatusRequest,
    ClusterStatusResponse, MemberStatus, RemoveNodeRequest, RemoveNodeResponse,
};

/// Join tokens expire after an hour unless asked otherwise.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

pub struct AdminService {
    node: Arc<Node>,
}

impl AdminService {
    pub fn new(node: Arc<Node>) -> AdminService {
        AdminService { node }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn add_node(
        &self,
        request: Request<AddNodeRequest>,
    ) -> Result<Response<AddNodeResponse>, Status> {
        let req = request.into_inner();
        let ttl = if req.ttl_seconds > 0 {
            Duration::from_secs(req.ttl_seconds as u64)
        } else {
            DEFAULT_TOKEN_TTL
        };
        Ok(Response::new(
            membership::create_join_token(&self.node, ttl).await?,
        ))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        let members = membership::remove(&self.node, &request.into_inner().node).await?;
        Ok(Response::new(RemoveNodeResponse { members }))
    }

    async fn cluster_status(
        &self,
        _request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let view = self.node.group_view().await?;
        let members = self.node.store.members()?;
        let statuses = members
            .into_iter()
            .map(|member| {
                let progress = view.progress.iter().find(|p| p.id == member.id);
                let matched = progress.map_or(0, |p| p.matched);
                MemberStatus {
                    is_leader: member.id == view.leader,
                    matched_index: matched,
                    lag: if progress.is_some() {
                        view.last_index.saturating_sub(matched)
                    } else {
                        0
                    },
                    reachable: progress.is_none_or(|p| p.recent_active),
                    failure_domain: self.node.store.failure_domain(member.id).unwrap_or(0),
                    member: Some(member),
                }
            })
            .collect();
        let alarms = self
            .node
            .store
            .alarms()?
            .into_iter()
            .map(|(member, alarm)| crate::api::maintenance::alarm_text(member, alarm))
            .collect();
        Ok(Response::new(ClusterStatusResponse {
            cluster_id: self.node.cluster_id,
            leader: view.leader,
            term: view.term,
            commit_index: view.commit,
            applied_index: view.applied,
            revision: self.node.store.revision(),
            members: statuses,
            target_voters: self.node.config.voters as u64,
            db_size: self.node.store.size_on_disk() as i64,
            alarms,
            leader_changes: crate::metrics::metrics().leader_changes.get(),
        }))
    }
}
