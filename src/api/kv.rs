//! etcd's KV service: Range reads the store (after a ReadIndex barrier unless serializable);
//! Put, DeleteRange, Txn and Compact become raft commands.

use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::{check_message_size, validate};
use crate::command::Op;
use crate::error::Error;
use crate::node::Node;
use crate::proto::etcdserverpb::{
    kv_server::Kv, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RangeStreamResponse, TxnRequest,
    TxnResponse,
};
use crate::store::Response as Applied;

pub struct KvService {
    node: Arc<Node>,
}

impl KvService {
    pub fn new(node: Arc<Node>) -> KvService {
        KvService { node }
    }

    async fn write(&self, op: Op) -> Result<Applied, Status> {
        Ok(self.node.propose(op).await?.response)
    }
}

fn unexpected(what: &str) -> Status {
    Status::internal(format!("raftkine: unexpected apply answer for {what}"))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let req = request.into_inner();
        check_message_size(&self.node, &req)?;
        validate::check_range(&req)?;
        if !req.serializable {
            self.node.read_barrier().await?;
        }
        let mut resp = self.node.store.range(&req)?;
        self.node.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    type RangeStreamStream =
        std::pin::Pin<Box<dyn Stream<Item = Result<RangeStreamResponse, Status>> + Send>>;

    async fn range_stream(
        &self,
        _request: Request<RangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(Status::unimplemented(
            "raftkine: KV/RangeStream is not implemented; use Range",
        ))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = request.into_inner();
        check_message_size(&self.node, &req)?;
        validate::check_put(&req)?;
        self.node.check_space()?;
        match self.write(Op::Put(req)).await? {
            Applied::Put(mut resp) => {
                self.node.fill_header(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected("put")),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let req = request.into_inner();
        check_message_size(&self.node, &req)?;
        validate::check_delete(&req)?;
        match self.write(Op::DeleteRange(req)).await? {
            Applied::DeleteRange(mut resp) => {
                self.node.fill_header(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected("delete")),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = request.into_inner();
        check_message_size(&self.node, &req)?;
        validate::check_txn(&req, self.node.config.max_txn_ops)?;
        if validate::txn_has_writes(&req) {
            self.node.check_space()?;
        }
        match self.write(Op::Txn(req)).await? {
            Applied::Txn(mut resp) => {
                self.node.fill_header(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected("txn")),
        }
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let req = request.into_inner();
        match self.write(Op::Compact(req)).await? {
            Applied::Compact(mut resp) => {
                self.node.fill_header(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(Error::Corrupt("compact answer".into()).into()),
        }
    }
}
