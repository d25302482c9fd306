//! The Peer gRPC service: raft messages from other members, and Join for new ones.

use std::sync::Arc;

use protobuf::Message as _;
use raft::prelude::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::membership;
use crate::node::Node;
use crate::proto::raftkinepb::{
    peer_server::Peer, JoinRequest, JoinResponse, RaftDone, RaftMessage,
};

pub struct PeerService {
    node: Arc<Node>,
}

impl PeerService {
    pub fn new(node: Arc<Node>) -> PeerService {
        PeerService { node }
    }
}

/// Only members hold a certificate of the cluster CA (the TLS layer verified it if presented).
fn require_member_certificate<T>(request: &Request<T>) -> Result<(), Status> {
    match request.peer_certs() {
        Some(certs) if !certs.is_empty() => Ok(()),
        _ => Err(Status::unauthenticated(
            "raftkine: peer traffic needs a certificate of the cluster CA",
        )),
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(
        &self,
        request: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<RaftDone>, Status> {
        require_member_certificate(&request)?;
        let mut incoming = request.into_inner();
        let mut first = true;
        while let Some(envelope) = incoming.message().await? {
            let message = Message::parse_from_bytes(&envelope.message)
                .map_err(|e| Status::invalid_argument(format!("raft message: {e}")))?;
            if first {
                // A member that opens a stream to us is up: our link to it need not wait out
                // its reconnect backoff.
                self.node.transport.reconnect_now(message.from);
                first = false;
            }
            self.node.peer_health.seen(message.from);
            self.node.step(message)?;
        }
        Ok(Response::new(RaftDone {}))
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let holds_cluster_certificate = require_member_certificate(&request).is_ok();
        let req = request.into_inner();
        let resp = membership::admit(&self.node, req, holds_cluster_certificate).await?;
        Ok(Response::new(resp))
    }
}
