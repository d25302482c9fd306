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
