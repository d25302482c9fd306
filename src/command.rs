//! The commands raft carries: the closed set of mutations of the revision table.
//!
//! A command is the protobuf `raftkinepb.Command` (proto/etcdserverpb/raft_internal.proto): etcd's
//! own request message for the operation plus the proposer's id and request id. Raft replicates the
//! encoded bytes; `store::Store::apply` is the only function that executes them.

use prost::Message;

pub use crate::proto::raftkinepb::command::Op;
pub use crate::proto::raftkinepb::Command;

use crate::error::{Error, Result};

impl Command {
    /// A command for `op`; the raft layer fills in proposer and request id.
    pub fn new(op: Op) -> Command {
        Command {
            proposer: 0,
            request_id: 0,
            op: Some(op),
        }
    }

    /// Decodes a command from a raft entry's data.
    pub fn decode_entry(data: &[u8]) -> Result<Command> {
        Command::decode(data).map_err(|e| Error::Corrupt(format!("raft entry: {e}")))
    }
}
