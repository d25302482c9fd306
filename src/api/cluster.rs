//! etcd's Cluster service: MemberList, MemberAdd (a learner record a node then takes over,
//! see `membership::add_member`), MemberRemove, MemberUpdate, MemberPromote.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::config::ServeConfig;
use crate::error::Error;
use crate::membership;
use crate::node::Node;
use crate::proto::etcdserverpb::{cluster_server::Cluster, *};

pub struct ClusterService {
    node: Arc<Node>,
}

impl ClusterService {
    pub fn new(node: Arc<Node>) -> ClusterService {
        ClusterService { node }
    }

    fn members(&self) -> Result<Vec<Member>, Status> {
        let mut members = self.node.store.members()?;
        if members.is_empty() {
            // Before this member's attributes are published (first moments after start).
            members.push(self.node.self_member());
        }
        Ok(members)
    }

    /// etcd's Cluster service leaves the revision out of its headers.
    fn header(&self) -> Option<ResponseHeader> {
        Some(self.node.header(0))
    }
}

/// The client URLs of this member as etcd prints them.
pub fn client_urls_of(config: &ServeConfig) -> Vec<String> {
    if !config.advertise_client_urls.is_empty() {
        return config.advertise_client_urls.clone();
    }
    let scheme = if config.cert_file.is_some() {
        "https"
    } else {
        "http"
    };
    config
        .listen
        .iter()
        .map(|l| match l.split_once("://") {
            Some(("unix", path)) => format!("unix://{path}"),
            Some((_, addr)) => format!("{scheme}://{addr}"),
            None => format!("{scheme}://{l}"),
        })
        .collect()
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let req = request.into_inner();
        let member = membership::add_member(&self.node, &req.peer_ur_ls).await?;
        Ok(Response::new(MemberAddResponse {
            header: self.header(),
            member: Some(member),
            members: self.members()?,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let id = request.into_inner().id;
        let target = self.node.store.member(id)?.ok_or(Error::MemberNotFound)?;
        membership::remove_member(&self.node, target).await?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(),
            members: self.members()?,
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let req = request.into_inner();
        membership::update_member(&self.node, req.id, &req.peer_ur_ls).await?;
        Ok(Response::new(MemberUpdateResponse {
            header: self.header(),
            members: self.members()?,
        }))
    }

    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members: self.members()?,
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        membership::promote(&self.node, request.into_inner().id).await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(),
            members: self.members()?,
        }))
    }
}
