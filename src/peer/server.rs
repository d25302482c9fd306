//! The peer listener: TLS handshakes with the cluster CA (client certificates verified when
//! presented; required by every call but Join), then the Peer gRPC service, and the Admin
//! service for holders of a cluster certificate (the `dqlite` command).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;

use super::service::PeerService;
use super::url_to_addr;
use crate::api::admin::AdminService;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::proto::raftkinepb::admin_server::AdminServer;
use crate::proto::raftkinepb::peer_server::PeerServer;
use crate::tls::peer_server_config;

/// Binds the peer listener; returns the task serving it until `shutdown`.
pub async fn start(
    node: Arc<Node>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let addr = url_to_addr(&node.config.peer_listen());
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| Error::Config(format!("peer listener {addr}: {e}")))?;
    tracing::info!("peer traffic on {}", listener.local_addr()?);
    let acceptor = TlsAcceptor::from(Arc::new(peer_server_config(
        &node.identity.peer,
        node.config.dqlite.min_tls_version(),
    )?));
    let (conns, incoming) = mpsc::channel(64);
    let accept_shutdown = shutdown.clone();
    tokio::spawn(accept_loop(listener, acceptor, conns, accept_shutdown));
    // The Admin service answers members only (the `dqlite` command holds the cluster key).
    let admin = AdminServer::with_interceptor(
        AdminService::new(node.clone()),
        |request: tonic::Request<()>| match request.peer_certs() {
            Some(certs) if !certs.is_empty() => Ok(request),
            _ => Err(tonic::Status::unauthenticated(
                "raftkine: peer traffic needs a certificate of the cluster CA",
            )),
        },
    );
    let service = PeerServer::new(PeerService::new(node))
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    Ok(tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        let served = Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(5)))
            .add_service(service)
            .add_service(admin)
            .serve_with_incoming_shutdown(
                ReceiverStream::new(incoming).map(Ok::<_, std::io::Error>),
                stop,
            )
            .await;
        if let Err(e) = served {
            tracing::error!("peer listener stopped: {e}");
        }
    }))
}

use futures::StreamExt;

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    conns: mpsc::Sender<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (tcp, from) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("peer accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let conns = conns.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = conns.send(tls).await;
                }
                Ok(Err(e)) => tracing::info!(%from, "peer TLS handshake refused: {e}"),
                Err(_) => tracing::info!(%from, "peer TLS handshake timed out"),
            }
        });
    }
}
