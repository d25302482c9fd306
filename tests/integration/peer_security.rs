//! The peer port admits only members of the cluster: a client without a certificate may only
//! call Join (with a valid token), and a certificate from another cluster's CA is refused at
//! the TLS handshake. (raftkine only; etcd's peer port is not part of its client API.)

use std::sync::Arc;

use raftkine::peer::connect;
use raftkine::proto::raftkinepb::{peer_client::PeerClient, JoinRequest, RaftMessage};
use raftkine::tls::{join_client_config, peer_client_config, PeerIdentity};

use crate::common::skip_on_etcd;
use crate::support::{free_port, Server};

/// The peer address and CA of a fresh single-node raftkine.
fn start_member() -> (Server, String, PeerIdentity) {
    let peer_port = free_port();
    let peer = format!("tcp://127.0.0.1:{peer_port}");
    let server = Server::raftkine_with(&["--peer-listen", &peer]);
    let identity = PeerIdentity::load(&server.data_dir)
        .expect("readable")
        .expect("the first member made its peer identity");
    (server, format!("127.0.0.1:{peer_port}"), identity)
}

#[tokio::test]
async fn raft_traffic_needs_a_cluster_certificate() {
    if skip_on_etcd("raft_traffic_needs_a_cluster_certificate") {
        return;
    }
    let (_server, addr, identity) = start_member();
    let fingerprint = identity.ca_fingerprint().expect("fingerprint");

    // TLS without a client certificate (what a joining node uses): Raft is refused...
    let anonymous = Arc::new(join_client_config(&fingerprint[..32]).expect("config"));
    let channel = connect::channel(&addr, anonymous.clone())
        .await
        .expect("TLS handshake");
    let refused = PeerClient::new(channel)
        .raft(futures::stream::iter(vec![RaftMessage { message: vec![] }]))
        .await
        .expect_err("raft traffic without a member certificate");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    // ...and Join wants a valid token.
    let channel = connect::channel(&addr, anonymous)
        .await
        .expect("TLS handshake");
    let bad_token = PeerClient::new(channel)
        .join(JoinRequest {
            token: "0".repeat(32),
            name: "intruder".into(),
            peer_url: "https://127.0.0.1:1".into(),
            client_urls: vec![],
        })
        .await
        .expect_err("join with an unknown token");
    assert!(bad_token.message().contains("join token"), "{bad_token:?}");

    // A member certificate of another cluster fails the handshake.
    let stranger = PeerIdentity::bootstrap(7, "stranger").expect("other CA");
    let foreign = Arc::new(peer_client_config(&stranger).expect("config"));
    assert!(
        connect::channel(&addr, foreign).await.is_err(),
        "a certificate from another CA must be refused"
    );

    // A joiner that pins another CA does not talk to this cluster.
    let wrong_pin = Arc::new(
        join_client_config(&stranger.ca_fingerprint().expect("fp")[..32]).expect("config"),
    );
    assert!(connect::channel(&addr, wrong_pin).await.is_err());
}
