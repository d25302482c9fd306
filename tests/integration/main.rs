//! Integration tests: etcd v3 API behaviour through the `etcd-client` crate against a running
//! server process (raftkine by default; `RAFTKINE_TEST_TARGET=etcd` runs the same tests against
//! Debian's etcd 3.4 to prove each test states etcd's real semantics).
//!
//! Tests needing raftkine-only features (flags, unix sockets, TLS flags, quota) print a note and
//! return early when the target is etcd.

#[path = "../support/mod.rs"]
mod support;

mod common;

mod auto_compaction;
mod backup;
mod cluster;
mod cluster_ha;
mod cluster_history;
mod cluster_member_add;
mod cluster_recover;
mod cluster_roles;
mod disk_guard;
mod durability;
mod kube_shapes;
mod kv;
mod lease;
mod limits;
mod maintenance;
mod microk8s;
mod microk8s_swap;
mod migrate;
mod monitoring;
mod peer_security;
mod serving;
mod support_tests;
mod tls;
mod txn;
mod watch;
