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
//! connections, see `cluster::owner_of_connection`). Both return once the cut is in force:
//! every forwarding connection it blocks has been closed, so nothing written after the call
//! gets through (bytes already handed to the target's socket are like packets already on the
//! wire). Dropping the proxy stops it and closes all of its connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// The connections that are forwarding, so that a cut can close them before it returns.
#[derive(Default)]
struct Live {
    next_id: AtomicU64,
    connections: Mutex<HashMap<u64, LiveConnection>>,
}

/// One forwarding connection as the cutting side sees it.
struct LiveConnection {
    source: SocketAddr,
    /// Closes the connection when sent to (or dropped).
    close: Option<oneshot::Sender<()>>,
}

/// A running proxy; see the module doc. Stopped when dropped.
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    rules: watch::Sender<Rules>,
    live: Arc<Live>,
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
        let live = Arc::new(Live::default());
        let shared = Shared {
            rules: rules_rx,
            live: live.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("proxy-{}", addr.port()))
            .spawn(move || run(listener, target, shared, stop_rx))
            .expect("spawning the proxy thread");
        Proxy {
            addr,
            target,
            rules,
            live,
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
        self.enforce(Rules::CutAll);
    }

    /// Blocks only the connections whose source address matches `blocked` (forwarding ones are
    /// closed, new ones held); the others are forwarded. Replaces any earlier cut.
    pub fn cut_from(&self, blocked: impl Fn(SocketAddr) -> bool + Send + Sync + 'static) {
        self.enforce(Rules::CutFrom(Arc::new(blocked)));
    }

    /// Puts `rules` in force: new connections see them at once; the forwarding connections they
    /// block are told to close, and this waits until they have.
    ///
    /// A connection registers itself as forwarding and then checks the rules again, so one that
    /// registers after the scan below still sees these rules and does not forward.
    fn enforce(&self, rules: Rules) {
        self.rules.send_replace(rules.clone());
        let closing: Vec<u64> = {
            let mut connections = self.live.connections.lock().unwrap();
            connections
                .iter_mut()
                .filter(|(_, c)| rules.blocks(c.source))
                .map(|(&id, c)| {
                    if let Some(close) = c.close.take() {
                        let _ = close.send(());
                    }
                    id
                })
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let still_open = {
                let connections = self.live.connections.lock().unwrap();
                closing.iter().any(|id| connections.contains_key(id))
            };
            if !still_open {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "proxy {}: blocked connections were not closed within 5 s",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(1));
        }
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
        self.live.connections.lock().unwrap().len()
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

/// What the proxy thread's connections share with the `Proxy` handle.
#[derive(Clone)]
struct Shared {
    rules: watch::Receiver<Rules>,
    live: Arc<Live>,
}

/// The proxy thread: a runtime accepting until told to stop; dropping the runtime then closes
/// every connection.
fn run(
    listener: std::net::TcpListener,
    target: SocketAddr,
    shared: Shared,
    stop: oneshot::Receiver<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("proxy runtime");
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener).expect("proxy listener");
        tokio::select! {
            _ = accept_loop(listener, target, shared) => {}
            _ = stop => {}
        }
    });
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Shared) {
    loop {
        let (inbound, source) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of descriptors or similar: wait instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let connection = Connection {
            inbound,
            source,
            target,
            shared: shared.clone(),
        };
        tokio::spawn(connection.serve());
    }
}

/// One accepted connection.
struct Connection {
    inbound: TcpStream,
    source: SocketAddr,
    target: SocketAddr,
    shared: Shared,
}

impl Connection {
    /// Holds the connection while it is blocked, then forwards until either side closes or a
    /// cut closes it.
    async fn serve(mut self) {
        let (id, closed) = loop {
            if !self.wait_until_allowed().await {
                return;
            }
            // Register, then look at the rules once more: a cut that scanned the registry
            // before this registration has already replaced the rules, and is seen here.
            let (close, closed) = oneshot::channel();
            let id = self.shared.live.next_id.fetch_add(1, Ordering::SeqCst);
            self.shared.live.connections.lock().unwrap().insert(
                id,
                LiveConnection {
                    source: self.source,
                    close: Some(close),
                },
            );
            if !self.shared.rules.borrow().blocks(self.source) {
                break (id, closed);
            }
            self.shared.live.connections.lock().unwrap().remove(&id);
        };
        if let Ok(mut outbound) = TcpStream::connect(self.target).await {
            let _ = self.inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut self.inbound, &mut outbound) => {}
                _ = closed => {}
            }
        }
        // Both sockets are closed before the cut that closed this connection returns.
        drop(self.inbound);
        self.shared.live.connections.lock().unwrap().remove(&id);
    }

    /// Waits until the rules let this connection through; false if the proxy is stopping.
    async fn wait_until_allowed(&mut self) -> bool {
        loop {
            let current = self.shared.rules.borrow_and_update().clone();
            if !current.blocks(self.source) {
                return true;
            }
            if self.shared.rules.changed().await.is_err() {
                return false;
            }
        }
    }
}
