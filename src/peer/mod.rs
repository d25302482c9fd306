//! Member-to-member traffic on the peer port: raft messages, and joining a cluster.
//!
//! - [`connect`]: opening a gRPC channel to a peer over our own rustls configuration.
//! - [`transport`]: one outbound stream of raft messages per peer, reconnecting as needed.
//! - [`service`]: the Peer gRPC service (inbound raft messages, Join).
//! - [`server`]: the peer listener (mutual TLS with the cluster CA).

pub mod connect;
pub mod server;
pub mod service;
pub mod transport;

/// `host:port` of a peer URL (`tcp://`, `http://`, `https://` or bare).
pub fn url_to_addr(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.trim_end_matches('/').to_string()
}

/// When each peer was last heard from (any raft message). The leader hears from every live
/// member at least once a heartbeat, so this is how dead voters are told from slow ones.
#[derive(Default)]
pub struct PeerHealth {
    last_seen: std::sync::Mutex<std::collections::HashMap<u64, std::time::Instant>>,
}

impl PeerHealth {
    pub fn seen(&self, id: u64) {
        self.last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, std::time::Instant::now());
    }

    /// Time since `id` was last heard from (None: never, since this member started).
    pub fn silence(&self, id: u64) -> Option<std::time::Duration> {
        self.last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map(|t| t.elapsed())
    }
}
