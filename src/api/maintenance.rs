//! etcd's Maintenance service: status, hashes, alarms, defragment and snapshot streaming (in
//! etcd's own snapshot format, see `crate::backup`).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use crate::command::Op;
use crate::error::Error;
use crate::node::Node;
use crate::proto::etcdserverpb::{alarm_request::AlarmAction, maintenance_server::Maintenance, *};

/// An alarm as etcd prints it: `memberID:ID alarm:NAME`.
pub fn alarm_text(member_id: u64, alarm: i32) -> String {
    let name = AlarmType::try_from(alarm)
        .map(|t| t.as_str_name())
        .unwrap_or("UNKNOWN");
    format!("memberID:{member_id} alarm:{name}")
}

/// Snapshot stream chunk size (etcd sends 32 KiB chunks).
const SNAPSHOT_CHUNK: usize = 32 * 1024;

pub struct MaintenanceService {
    node: Arc<Node>,
}

impl MaintenanceService {
    pub fn new(node: Arc<Node>) -> MaintenanceService {
        MaintenanceService { node }
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(self.node.header(self.node.store.revision()))
    }

    fn alarm_list(&self) -> Result<Vec<AlarmMember>, Status> {
        Ok(self
            .node
            .store
            .alarms()?
            .into_iter()
            .map(|(member_id, alarm)| AlarmMember { member_id, alarm })
            .collect())
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        let mut req = request.into_inner();
        let action = AlarmAction::try_from(req.action).unwrap_or(AlarmAction::Get);
        if action == AlarmAction::Get {
            return Ok(Response::new(AlarmResponse {
                header: self.header(),
                alarms: self.alarm_list()?,
            }));
        }
        if req.member_id == 0 {
            req.member_id = self.node.member_id;
        }
        let target = AlarmMember {
            member_id: req.member_id,
            alarm: req.alarm,
        };
        let was_raised = self.alarm_list()?.contains(&target);
        self.node.propose(Op::Alarm(req)).await?;
        self.node.refresh_alarms();
        // As etcd: the alarm activated, or the one deactivated (none if it was not raised).
        let changed = action == AlarmAction::Activate || was_raised;
        Ok(Response::new(AlarmResponse {
            header: self.header(),
            alarms: if changed { vec![target] } else { vec![] },
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let raft = self.node.raft_status();
        let size = self.node.store.size_on_disk() as i64;
        let errors = self
            .alarm_list()?
            .iter()
            .map(|a| alarm_text(a.member_id, a.alarm))
            .collect();
        Ok(Response::new(StatusResponse {
            header: self.header(),
            version: self.node.config.emulated_etcd_version.clone(),
            db_size: size,
            leader: raft.leader(),
            raft_index: raft.commit_index.load(std::sync::atomic::Ordering::Acquire),
            raft_term: raft.term(),
            raft_applied_index: raft
                .applied_index
                .load(std::sync::atomic::Ordering::Acquire),
            errors,
            db_size_in_use: size,
            is_learner: false,
            storage_version: String::new(),
            db_size_quota: self.node.config.quota_backend_bytes as i64,
            downgrade_info: None,
        }))
    }

    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        // sled reclaims space by itself; make everything durable, which is what callers rely on.
        self.node.store.flush()?;
        Ok(Response::new(DefragmentResponse {
            header: self.header(),
        }))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Ok(Response::new(HashResponse {
            header: self.header(),
            hash: self.node.store.hash_all()?,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let req = request.into_inner();
        let current = self.node.store.revision();
        let rev = if req.revision <= 0 {
            current
        } else {
            req.revision
        };
        self.node.store.check_readable(rev, current)?;
        let (hash, compact_revision) = self.node.store.hash_kv(rev)?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.node.header(current)),
            hash,
            compact_revision,
            hash_revision: rev,
        }))
    }

    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        // etcd's format (bbolt database + sha256), of the whole history at one applied index.
        let store = self.node.store.clone();
        let (blob, revision) =
            tokio::task::spawn_blocking(move || crate::backup::snapshot_file(&store))
                .await
                .map_err(|e| Status::internal(e.to_string()))??;
        let header = Some(self.node.header(revision));
        let version = self.node.config.emulated_etcd_version.clone();
        let total = blob.len();
        // Chunks are copied out one at a time as the client reads them.
        let chunks = (0..total.div_ceil(SNAPSHOT_CHUNK)).map(move |i| {
            let start = i * SNAPSHOT_CHUNK;
            let end = (start + SNAPSHOT_CHUNK).min(total);
            Ok(SnapshotResponse {
                header,
                remaining_bytes: (total - end) as u64,
                blob: blob[start..end].to_vec(),
                version: version.clone(),
            })
        });
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let req = request.into_inner();
        if !self.node.raft_status().is_leader() {
            return Err(Error::NotLeader.into());
        }
        if req.target_id != self.node.member_id {
            return Err(Status::failed_precondition(
                "etcdserver: bad leader transferee",
            ));
        }
        Ok(Response::new(MoveLeaderResponse {
            header: self.header(),
        }))
    }

    async fn downgrade(
        &self,
        _: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(Status::unimplemented(
            "raftkine: downgrade is not supported",
        ))
    }
}
