//! A TCP proxy that a test can cut and heal, to partition raft peers.
//!
//! `Proxy::start(target)` listens on a free 127.0.0.1 port and forwards every accepted
//! connection to `target`, bytes both ways. It runs on its own thread with its own tokio runtime,
//! so it keeps forwarding while the test blocks (starting processes, `std::thread::sleep`) and
//! whatever runtime the test uses.
//!
//! Cutting, chosen to be as close to a real network partition as a proxy can be:
//! - connections that are forwarding when they become blocked are closed (both sides), so the
//!   peers see their streams end and have to reconnect;
//! - connections accepted while blocked are **accepted and held**: the TCP handshake succeeds
//!   but nothing is read or forwarded (what the peer writes waits in the kernel buffers), like
//!   packets dropped on the floor. They are not refused, since a refused connect tells the peer
//!   at once what a partition would leave it to find out by timeout;
//! - on `heal()` the held connections are connected to the target and start forwarding what was
//!   buffered (if the peer has not given up on them meanwhile).
//!
//! `cut()` blocks every connection; `cut_from(pred)` blocks only connections whose source
//! address matches `pred` (the cluster helper uses it to block one process's outgoing
//! connections, see `cluster::owner_of_connection`). Dropping the proxy stops it and closes all
//! of its connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// Decides from a connection's source address whether it is blocked.
pub type SourceFilter = Arc<dyn Fn(SocketAddr) -> bool + Send + Sync>;

/// What the proxy lets through.
#[derive(Clone)]
enum Rules {
    /// Everything is forwarded.
    Forward,
    /// Nothing is forwarded.
    CutAll,
    /// Connections whose source matches are blocked; the others are forwarded.
    CutFrom(SourceFilter),
}

impl Rules {
    fn blocks(&self, source: SocketAddr) -> bool {
        match self {
            Rules::Forward => false,
            Rules::CutAll => true,
            Rules::CutFrom(filter) => filter(source),
        }
    }
}

/// A running proxy; see the module doc. Stopped when dropped.
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    rules: watch::Sender<Rules>,
    forwarding: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts forwarding from a free 127.0.0.1 port to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("proxy: cannot bind 127.0.0.1:0: {e}"));
        Self::start_on(listener, target)
    }

    /// Starts forwarding from an already bound listener to `target`.
    pub fn start_on(listener: std::net::TcpListener, target: SocketAddr) -> Proxy {
        let addr = listener.local_addr().expect("proxy listener address");
        listener
            .set_nonblocking(true)
            .expect("proxy listener non-blocking");
        let (rules, rules_rx) = watch::channel(Rules::Forward);
        let (stop, stop_rx) = oneshot::channel();
        let forwarding = Arc::new(AtomicUsize::new(0));
        let counter = forwarding.clone();
        let thread = std::thread::Builder::new()
            .name(format!("proxy-{}", addr.port()))
            .spawn(move || run(listener, target, rules_rx, counter, stop_rx))
            .expect("spawning the proxy thread");
        Proxy {
            addr,
            target,
            rules,
            forwarding,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Blocks every connection: forwarding ones are closed, new ones accepted and held.
    pub fn cut(&self) {
        self.rules.send_replace(Rules::CutAll);
    }

    /// Blocks only the connections whose source address matches `blocked` (forwarding ones are
    /// closed, new ones held); the others are forwarded. Replaces any earlier cut.
    pub fn cut_from(&self, blocked: impl Fn(SocketAddr) -> bool + Send + Sync + 'static) {
        self.rules.send_replace(Rules::CutFrom(Arc::new(blocked)));
    }

    /// Forwards everything again, including the connections held while cut.
    pub fn heal(&self) {
        self.rules.send_replace(Rules::Forward);
    }

    /// Whether some cut is in force.
    pub fn is_cut(&self) -> bool {
        !matches!(*self.rules.borrow(), Rules::Forward)
    }

    /// How many connections are forwarding right now (held ones are not counted).
    pub fn forwarding(&self) -> usize {
        self.forwarding.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The proxy thread: a runtime accepting until told to stop; dropping the runtime then closes
/// every connection.
fn run(
    listener: std::net::TcpListener,
    target: SocketAddr,
    rules: watch::Receiver<Rules>,
    forwarding: Arc<AtomicUsize>,
    stop: oneshot::Receiver<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("proxy runtime");
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener).expect("proxy listener");
        tokio::select! {
            _ = accept_loop(listener, target, rules, forwarding) => {}
            _ = stop => {}
        }
    });
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    rules: watch::Receiver<Rules>,
    forwarding: Arc<AtomicUsize>,
) {
    loop {
        let (inbound, source) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of descriptors or similar: wait instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let connection = Connection {
            inbound,
            source,
            target,
            rules: rules.clone(),
            forwarding: forwarding.clone(),
        };
        tokio::spawn(connection.serve());
    }
}

/// One accepted connection.
struct Connection {
    inbound: TcpStream,
    source: SocketAddr,
    target: SocketAddr,
    rules: watch::Receiver<Rules>,
    forwarding: Arc<AtomicUsize>,
}

impl Connection {
    /// Holds the connection while it is blocked, then forwards until either side closes or it
    /// becomes blocked.
    async fn serve(mut self) {
        if !self.wait_until_allowed().await {
            return;
        }
        let Ok(mut outbound) = TcpStream::connect(self.target).await else {
            return;
        };
        let _ = self.inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        self.forwarding.fetch_add(1, Ordering::SeqCst);
        let mut rules = self.rules.clone();
        let source = self.source;
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut self.inbound, &mut outbound) => {}
            _ = wait_until_blocked(&mut rules, source) => {}
        }
        self.forwarding.fetch_sub(1, Ordering::SeqCst);
    }

    /// Waits until the rules let this connection through; false if the proxy is stopping.
    async fn wait_until_allowed(&mut self) -> bool {
        loop {
            let current = self.rules.borrow_and_update().clone();
            if !current.blocks(self.source) {
                return true;
            }
            if self.rules.changed().await.is_err() {
                return false;
            }
        }
    }
}

/// Returns once the rules block `source` (or the proxy stops).
async fn wait_until_blocked(rules: &mut watch::Receiver<Rules>, source: SocketAddr) {
    loop {
        let current = rules.borrow_and_update().clone();
        if current.blocks(source) {
            return;
        }
        if rules.changed().await.is_err() {
            return;
        }
    }
}
