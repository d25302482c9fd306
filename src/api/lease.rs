//! etcd's Lease service: grants and revokes are raft commands; keep-alives and time-to-live are
//! answered by the lessor (deadlines are not replicated, as in etcd).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::command::Op;
use crate::error::Error;
use crate::node::Node;
use crate::proto::etcdserverpb::{lease_client::LeaseClient, lease_server::Lease, *};
use crate::store::apply::MAX_LEASE_TTL;
use crate::store::Response as Applied;

pub struct LeaseService {
    node: Arc<Node>,
}

impl LeaseService {
    pub fn new(node: Arc<Node>) -> LeaseService {
        LeaseService { node }
    }

    /// A random positive lease id not in use.
    fn fresh_id(&self) -> i64 {
        loop {
            let id = (rand::random::<u64>() >> 1) as i64;
            if id != 0 && !self.node.lessor.contains(id) {
                return id;
            }
        }
    }
}

/// On the leader, before it answers for a lease it does not know: a grant answered by a
/// follower may be committed but not yet applied here, so catch up with everything committed.
async fn catch_up_if_unknown(node: &Node, id: i64) -> Result<(), Status> {
    if !node.lessor.contains(id) {
        node.read_barrier().await?;
    }
    Ok(())
}

/// One client keep-alive stream's renewals. The leader renews locally (lease deadlines live
/// there; 0 when the lease is gone). A follower forwards them to the leader over one stream of
/// its own, opened at the first renewal and kept while the same member leads: a stream per
/// renewal cost as much as the renewal itself.
#[derive(Default)]
struct KeepAlives {
    upstream: Option<Upstream>,
}

/// A follower's keep-alive stream to the leader.
struct Upstream {
    leader: u64,
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    answers: Streaming<LeaseKeepAliveResponse>,
}

impl KeepAlives {
    async fn renew(&mut self, node: &Node, id: i64) -> Result<i64, Status> {
        let Some((leader, channel)) = node.leader_channel().await? else {
            self.upstream = None;
            catch_up_if_unknown(node, id).await?;
            return Ok(node.lessor.renew(id).unwrap_or(0));
        };
        let forward = self.forward(channel, leader, id);
        // A leader that stopped answering must not hold the client's stream forever.
        match tokio::time::timeout(node.config.request_timeout, forward).await {
            Ok(Ok(Some(answer))) => Ok(answer.ttl),
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                self.upstream = None;
                node.forget_leader_channel().await;
                Err(Error::NoLeader.into())
            }
        }
    }

    /// Sends the renewal of `id` up the stream to `leader` (opened first if there is none to
    /// it) and reads the answer.
    async fn forward(
        &mut self,
        channel: tonic::transport::Channel,
        leader: u64,
        id: i64,
    ) -> Result<Option<LeaseKeepAliveResponse>, Status> {
        let request = LeaseKeepAliveRequest { id };
        let closed = || Status::unavailable("raftkine: the keep-alive stream to the leader closed");
        match self.upstream.as_mut() {
            Some(up) if up.leader == leader => {
                up.requests.send(request).await.map_err(|_| closed())?;
                up.answers.message().await
            }
            _ => {
                self.upstream = None;
                let (requests, outgoing) = mpsc::channel(1);
                // Queued before the call starts, so the call never waits on an empty stream.
                requests.send(request).await.map_err(|_| closed())?;
                let mut answers = LeaseClient::new(channel)
                    .lease_keep_alive(ReceiverStream::new(outgoing))
                    .await?
                    .into_inner();
                let answer = answers.message().await;
                self.upstream = Some(Upstream {
                    leader,
                    requests,
                    answers,
                });
                answer
            }
        }
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let mut req = request.into_inner();
        self.node.check_space()?;
        if req.ttl > MAX_LEASE_TTL {
            return Err(Error::LeaseTtlTooLarge.into());
        }
        req.ttl = req.ttl.max(self.node.config.min_lease_ttl());
        if req.id == 0 {
            req.id = self.fresh_id();
        }
        match self.node.propose(Op::LeaseGrant(req)).await?.response {
            Applied::LeaseGrant(mut resp) => {
                self.node.fill_header(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(Status::internal(
                "raftkine: unexpected apply answer for lease grant",
            )),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let req = request.into_inner();
        match self.node.propose(Op::LeaseRevoke(req)).await?.response {
            Applied::LeaseRevoke(mut resp) => {
                self.node.fill_header(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(Status::internal(
                "raftkine: unexpected apply answer for lease revoke",
            )),
        }
    }

    type LeaseKeepAliveStream =
        Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let node = self.node.clone();
        let incoming = request.into_inner();
        let state = (incoming, KeepAlives::default(), node);
        let answers =
            futures::stream::unfold(state, |(mut incoming, mut keep_alives, node)| async move {
                let answer =
                    match incoming.message().await {
                        Ok(Some(req)) => keep_alives.renew(&node, req.id).await.map(|ttl| {
                            LeaseKeepAliveResponse {
                                header: Some(node.header(node.store.revision())),
                                id: req.id,
                                ttl,
                            }
                        }),
                        Ok(None) => return None,
                        Err(e) => Err(e),
                    };
                Some((answer, (incoming, keep_alives, node)))
            });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        if let Some((_, leader)) = self.node.leader_channel().await? {
            // Only the leader knows how long a lease has left.
            let mut client = LeaseClient::new(leader);
            let forward = client.lease_time_to_live(req);
            return match tokio::time::timeout(self.node.config.request_timeout, forward).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(_)) | Err(_) => {
                    self.node.forget_leader_channel().await;
                    Err(Error::NoLeader.into())
                }
            };
        }
        catch_up_if_unknown(&self.node, req.id).await?;
        let header = Some(self.node.header(self.node.store.revision()));
        let Some(times) = self.node.lessor.times(req.id) else {
            return Ok(Response::new(LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: vec![],
            }));
        };
        let keys = if req.keys {
            self.node.store.lease_keys(req.id)?
        } else {
            vec![]
        };
        Ok(Response::new(LeaseTimeToLiveResponse {
            header,
            id: req.id,
            ttl: times.remaining_ttl,
            granted_ttl: times.granted_ttl,
            keys,
        }))
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let leases = self
            .node
            .lessor
            .ids()
            .into_iter()
            .map(|id| LeaseStatus { id })
            .collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.node.header(self.node.store.revision())),
            leases,
        }))
    }
}
