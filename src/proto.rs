//! Rust types generated from proto/etcdserverpb (etcd's wire format, plus raftkine's raft command).
#![allow(clippy::all, missing_docs)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

pub mod authpb {
    tonic::include_proto!("authpb");
}

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

pub mod raftkinepb {
    tonic::include_proto!("raftkinepb");
}
