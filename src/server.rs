//! Client listeners: parses listen URLs (TCP, unix sockets), sets up TLS, and serves the etcd
//! services plus gRPC health on each listener until shutdown (every call counted by
//! `crate::grpc_metrics`); also starts the metrics listener (`crate::http`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use futures::StreamExt;

use crate::api::Services;
use crate::authority::FixAuthority;
use crate::coalesce::Coalesce;
use crate::config::ServeConfig;
use crate::error::{Error, Result};
use crate::grpc_metrics::GrpcMetricsLayer;
use crate::node::Node;

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(String),
    Unix(PathBuf),
}

impl ListenAddr {
    /// Parses `tcp://H:P`, `http://H:P`, `https://H:P`, `unix://PATH` or `H:P`. As in k8s-dqlite,
    /// a unix URL is split only at `://`: `unix:///run/kine.sock:12379` names the file
    /// `/run/kine.sock:12379`.
    pub fn parse(url: &str) -> Result<ListenAddr> {
        match url.split_once("://") {
            Some(("unix", path)) | Some(("unixs", path)) => {
                if path.is_empty() {
                    return Err(Error::Config(format!("listen URL {url:?} has no path")));
                }
                Ok(ListenAddr::Unix(PathBuf::from(path)))
            }
            Some(("tcp", addr)) | Some(("http", addr)) | Some(("https", addr)) => {
                Ok(ListenAddr::Tcp(addr.trim_end_matches('/').to_string()))
            }
            Some((scheme, _)) => Err(Error::Config(format!(
                "listen URL {url:?}: unknown scheme {scheme:?} (use tcp://, http://, https:// or unix://)"
            ))),
            None => Ok(ListenAddr::Tcp(url.to_string())),
        }
    }
}

fn tls_config(config: &ServeConfig) -> Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) else {
        return Ok(None);
    };
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| Error::Config(format!("reading {}: {e}", p.display())))
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &config.trusted_ca_file {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(tls))
}

/// Binds every listener (failing fast when one cannot be bound), then serves until `shutdown`
/// turns true.
pub async fn serve(node: Arc<Node>, shutdown: watch::Receiver<bool>) -> Result<()> {
    let tls = tls_config(&node.config)?;
    let mut peer = crate::peer::server::start(node.clone(), shutdown.clone()).await?;
    let metrics_listeners = crate::http::start(node.clone(), shutdown.clone()).await?;
    wait_for_leader(&node).await;
    let services = Services::new(node.clone());
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    let mut tasks = vec![];
    let plain = tls.is_none();
    for url in &node.config.listen {
        let addr = ListenAddr::parse(url)?;
        let mut builder = Server::builder();
        if let Some(tls) = tls.clone() {
            builder = builder
                .tls_config(tls)
                .map_err(|e| Error::Config(format!("TLS: {e}")))?;
        }
        let router = builder
            .layer(GrpcMetricsLayer)
            .add_service(services.kv.clone())
            .add_service(services.watch.clone())
            .add_service(services.lease.clone())
            .add_service(services.maintenance.clone())
            .add_service(services.cluster.clone())
            .add_service(services.auth.clone())
            .add_service(services.admin.clone())
            .add_service(health.clone());
        let mut stop = shutdown.clone();
        let signal = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match addr {
            ListenAddr::Tcp(a) => {
                let sock: SocketAddr = tokio::net::lookup_host(&a)
                    .await?
                    .next()
                    .ok_or_else(|| Error::Config(format!("cannot resolve {a}")))?;
                let listener = TcpListener::bind(sock).await?;
                tracing::info!("serving the etcd API on {}", listener.local_addr()?);
                // Small request/response exchanges must not wait for Nagle + delayed ACKs.
                let incoming = TcpListenerStream::new(listener).map(move |c| {
                    c.map(|s| {
                        let _ = s.set_nodelay(true);
                        let info = TcpConnectInfo {
                            local_addr: s.local_addr().ok(),
                            remote_addr: s.peer_addr().ok(),
                        };
                        ClientIo::new(s, info, plain)
                    })
                });
                tasks.push((url, spawn_listener(router, Box::pin(incoming), signal)));
            }
            ListenAddr::Unix(path) => {
                if path.exists() {
                    std::fs::remove_file(&path)?;
                }
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let listener = bind_owner_only(&path)?;
                tracing::info!("serving the etcd API on unix socket {}", path.display());
                let incoming = UnixListenerStream::new(listener).map(move |c| {
                    c.map(|s| {
                        // No IP addresses to report for a unix socket.
                        let info = TcpConnectInfo {
                            local_addr: None,
                            remote_addr: None,
                        };
                        ClientIo::new(s, info, plain)
                    })
                });
                tasks.push((url, spawn_listener(router, Box::pin(incoming), signal)));
            }
        }
    }
    for (url, task) in tasks {
        match task.await {
            // The shutdown signal (or a listener that ended without an error: never
            // expected, and worth seeing in the log).
            Ok(Ok(())) => tracing::info!("stopped serving the etcd API on {url}"),
            Ok(Err(e)) => tracing::error!("listener on {url} stopped: {e}"),
            Err(e) => tracing::error!("listener task on {url} failed: {e}"),
        }
    }
    for task in metrics_listeners {
        if let Err(e) = task.await {
            tracing::error!("metrics listener task failed: {e}");
        }
    }
    // Other members keep their raft streams open: give them a moment, then stop listening.
    match tokio::time::timeout(std::time::Duration::from_secs(1), &mut peer).await {
        Ok(Err(e)) => tracing::error!("peer listener task failed: {e}"),
        Ok(Ok(())) => {}
        Err(_) => peer.abort(),
    }
    Ok(())
}

type Served = tokio::task::JoinHandle<std::result::Result<(), tonic::transport::Error>>;

/// The client services behind the gRPC metrics layer.
type Routes = tonic::transport::server::Router<
    tower::layer::util::Stack<GrpcMetricsLayer, tower::layer::util::Identity>,
>;

/// Serves one listener's connections until `signal`.
fn spawn_listener(
    router: Routes,
    incoming: Incoming,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> Served {
    tokio::spawn(router.serve_with_incoming_shutdown(incoming, signal))
}

/// The connections a client listener accepts.
type Incoming = Pin<Box<dyn futures::Stream<Item = std::io::Result<ClientIo>> + Send>>;

/// A bidirectional byte stream of any kind.
trait Io: AsyncRead + AsyncWrite + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + 'static> Io for T {}

/// A client connection of any listener: TCP or a unix socket, plaintext or (terminated by
/// tonic, above this) TLS. Boxed, every listener runs the same instance of tonic's, hyper's and
/// h2's generic server code instead of one each, which keeps ~0.3 MB out of the binary;
/// the cost is one indirect call per read or write.
///
/// Plaintext connections get their writes coalesced (see [`Coalesce`]) and etcdctl's
/// `:authority` repaired (see [`FixAuthority`]); under TLS the wrappers would see only
/// ciphertext, so they are left out.
struct ClientIo {
    inner: Pin<Box<dyn Io>>,
    info: TcpConnectInfo,
}

impl ClientIo {
    fn new<T>(io: T, info: TcpConnectInfo, plaintext: bool) -> ClientIo
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let inner: Pin<Box<dyn Io>> = if plaintext {
            Box::pin(FixAuthority::new(Coalesce::server(io)))
        } else {
            Box::pin(io)
        };
        ClientIo { inner, info }
    }
}

impl Connected for ClientIo {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.inner.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.inner.as_mut().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.inner.as_mut().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.inner.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.inner.as_mut().poll_shutdown(cx)
    }
}

/// Gives the first election a moment before clients arrive, so that the first requests are not
/// answered "no leader"; serves anyway after a few seconds (a member without quorum still
/// answers serializable reads).
async fn wait_for_leader(node: &Node) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while !node.raft_status().has_leader() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A unix socket listener at `path` that is owner-only (0600) before it accepts anyone: the
/// socket is bound, its file made owner-only, and only then put to listening, so no client
/// (nor a readiness check) connects while the file still has the umask's mode.
fn bind_owner_only(path: &std::path::Path) -> Result<UnixListener> {
    use socket2::{Domain, SockAddr, Socket, Type};
    use std::os::unix::fs::PermissionsExt;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(UnixListener::from_std(
        std::os::unix::net::UnixListener::from(socket),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_urls() {
        assert_eq!(
            ListenAddr::parse("tcp://127.0.0.1:2379").ok(),
            Some(ListenAddr::Tcp("127.0.0.1:2379".into()))
        );
        assert_eq!(
            ListenAddr::parse("http://0.0.0.0:2379").ok(),
            Some(ListenAddr::Tcp("0.0.0.0:2379".into()))
        );
        assert_eq!(
            ListenAddr::parse("unix:///var/snap/k/kine.sock:12379").ok(),
            Some(ListenAddr::Unix("/var/snap/k/kine.sock:12379".into()))
        );
        assert_eq!(
            ListenAddr::parse("localhost:2379").ok(),
            Some(ListenAddr::Tcp("localhost:2379".into()))
        );
        assert!(ListenAddr::parse("ftp://x").is_err());
    }
}
