//! Running N raftkine processes as one cluster, for the replication tests.
//!
//! Nodes are numbered from 0 (`cluster.node(0)`) and named `n1`, `n2`, …; each has its own
//! storage dir and log under one temporary dir, a client port and a peer port. The first node
//! bootstraps the cluster with `serve`; every other node gets a join token from `add-node` on a
//! running member and starts with `join ADDR/TOKEN` (which joins, then keeps serving). A restart
//! runs `serve` again on the node's storage dir. The command lines are all built in the "command
//! line" section below, the one place to adapt when the CLI changes.
//!
//! With `Cluster::start_with_proxies(n)` each node advertises a [`Proxy`] in front of its real
//! peer port (`--advertise-peer-url`), so the test can partition peers: `isolate(i)` or
//! `partition(&[&[0, 1], &[2]])` blocks the connections between groups, `heal()` ends it.
//! Since a node's outgoing peer connections arrive at the other nodes' proxies mixed with
//! everyone else's, the proxies tell them apart by the process owning the connecting socket
//! (found in /proc, Linux only): a connection into node j's proxy is blocked when it comes from
//! a node of another group. Both directions of every link across groups are thus cut, whichever
//! side dialled.
//!
//! When a test panics with a cluster alive, dropping the cluster prints the tail of every log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, StatusResponse};

use super::free_port;
use super::proxy::Proxy;
use super::raftkine_bin;

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Put a proxy in front of each node's peer port (needed for `isolate`/`partition`).
    pub proxies: bool,
    /// Extra flags for every node's `serve`/`join` (e.g. election timeouts).
    pub extra_args: Vec<String>,
    /// How long a node may take to listen on its client port.
    pub ready_timeout: Duration,
    /// Request timeout of the clients made by `client`/`clients` (a partitioned node may never
    /// answer).
    pub client_timeout: Duration,
    /// `--voters`: learners are promoted while fewer voters exist; `start_with` waits until
    /// `min(nodes, voters)` members are voters.
    pub voters: usize,
}

impl ClusterOptions {
    pub fn new(nodes: usize) -> Self {
        ClusterOptions {
            nodes,
            proxies: false,
            extra_args: Vec::new(),
            ready_timeout: Duration::from_secs(60),
            client_timeout: Duration::from_secs(5),
            voters: 3,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The command line (adapt here when the CLI changes).

/// The flags every node gets, whether it bootstraps, joins or restarts.
fn node_flags(node: &Node) -> Vec<String> {
    let mut flags = vec![
        "--storage-dir".to_string(),
        node.dir.display().to_string(),
        "--listen".to_string(),
        format!("tcp://127.0.0.1:{}", node.client_port),
        "--peer-listen".to_string(),
        format!("tcp://127.0.0.1:{}", node.peer_port),
        "--name".to_string(),
        node.name.clone(),
    ];
    if node.voters != 3 {
        flags.push("--voters".to_string());
        flags.push(node.voters.to_string());
    }
    if node.advertised_peer_port != node.peer_port {
        flags.push("--advertise-peer-url".to_string());
        flags.push(format!("tcp://127.0.0.1:{}", node.advertised_peer_port));
    }
    if let Ok(level) = std::env::var("RAFTKINE_TEST_LOG_LEVEL") {
        flags.push("--log-level".to_string());
        flags.push(level);
    }
    flags.extend(node.extra_args.iter().cloned());
    flags
}

/// The first node (`join: None`) or a restart: `raftkine serve ...`; a new member:
/// `raftkine join ADDR/TOKEN ...`.
fn node_command(node: &Node, join: Option<&str>) -> Command {
    let mut cmd = Command::new(raftkine_bin());
    match join {
        None => cmd.arg("serve"),
        Some(arg) => cmd.arg("join").arg(arg),
    };
    cmd.args(node_flags(node));
    cmd
}

/// `raftkine add-node --endpoint http://... --json [--token-ttl TTL]`, run against a member.
fn add_node_command(endpoint: &str, ttl: Option<&str>) -> Command {
    let mut cmd = Command::new(raftkine_bin());
    cmd.arg("add-node")
        .arg("--endpoint")
        .arg(endpoint)
        .arg("--json");
    if let Some(ttl) = ttl {
        cmd.arg("--token-ttl").arg(ttl);
    }
    cmd
}

/// `raftkine status --endpoint http://... --format json`.
fn status_command(endpoint: &str) -> Command {
    let mut cmd = Command::new(raftkine_bin());
    cmd.arg("status")
        .arg("--endpoint")
        .arg(endpoint)
        .arg("--format")
        .arg("json");
    cmd
}

/// The `ADDR/TOKEN` argument in what `add-node --json` printed (`{"join": "ADDR/TOKEN", ...}`),
/// or in the `raftkine join ADDR/TOKEN` line of its text output.
pub fn parse_add_node_output(output: &str) -> Option<String> {
    if let Ok(doc) = serde_json::from_str::<serde_json::Value>(output.trim()) {
        return doc.get("join")?.as_str().map(str::to_string);
    }
    parse_join_arg(output)
}

/// The `ADDR/TOKEN` argument of the `raftkine join ADDR/TOKEN` line that `add-node` prints.
pub fn parse_join_arg(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        while let Some(word) = words.next() {
            if word.ends_with("raftkine") && words.clone().next() == Some("join") {
                let arg = words.nth(1)?;
                return arg.contains('/').then(|| arg.to_string());
            }
        }
        None
    })
}

/// The outcome of `Cluster::join_attempt`.
#[derive(Debug)]
pub struct JoinAttempt {
    /// The exit status, `None` if the process was still running (it joined and served).
    pub status: Option<std::process::ExitStatus>,
    /// What it printed (stdout then stderr).
    pub output: String,
    /// Its storage dir.
    pub dir: PathBuf,
}

// ---------------------------------------------------------------------------------------------
// Nodes.

/// One member process; killed when dropped.
pub struct Node {
    pub index: usize,
    pub name: String,
    pub client_port: u16,
    /// The port the node listens on for peers.
    pub peer_port: u16,
    /// The peer port other nodes are told to use: the proxy's, or `peer_port` without proxies.
    pub advertised_peer_port: u16,
    /// The storage dir (kept across restarts).
    pub dir: PathBuf,
    /// The `ADDR/TOKEN` the node joined with (None for the first node).
    pub joined_with: Option<String>,
    log_path: PathBuf,
    extra_args: Vec<String>,
    voters: usize,
    ready_timeout: Duration,
    child: Option<Child>,
    /// The running process's pid, 0 when not running (read by the proxies' filters).
    pid: Arc<AtomicU32>,
}

impl Node {
    /// The client URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The process id, if started and not killed.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the process is running (false once it exited by itself or was killed).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// kill -9, leaving the storage dir for a restart.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.pid.store(0, Ordering::SeqCst);
    }

    /// SIGTERM (a graceful stop, as systemd does it); waits up to `grace` for the process to
    /// exit, and kill -9s it if it did not. Returns how long it took to exit by itself, `None`
    /// if it had to be killed.
    pub fn terminate(&mut self, grace: Duration) -> Option<Duration> {
        let mut child = self.child.take()?;
        let t = Instant::now();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let exited = loop {
            if let Ok(Some(_)) = child.try_wait() {
                break Some(t.elapsed());
            }
            if t.elapsed() >= grace {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.pid.store(0, Ordering::SeqCst);
        exited
    }

    /// Starts the node again on its storage dir (`serve`) and waits until it listens.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn(None);
    }

    /// Everything the node logged (stderr and stdout, across restarts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last panic the log shows (the message after `panicked at`), or "".
    pub fn panic_message(&self) -> String {
        let log = self.log();
        let Some(at) = log.rfind("panicked at") else {
            return String::new();
        };
        let start = log[..at].rfind('\n').map_or(0, |i| i + 1);
        log[start..].lines().take(2).collect::<Vec<_>>().join("\n")
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        super::last_lines(&self.log(), lines)
    }

    /// A client of this node only (requests time out after the cluster's client timeout).
    pub async fn client(&self, timeout: Duration) -> Client {
        connect(&[self.endpoint()], timeout).await
    }

    /// Maintenance.Status of this node, failing after `timeout`.
    pub async fn status(&self, timeout: Duration) -> Result<StatusResponse, String> {
        let mut client = self.client(timeout).await;
        match tokio::time::timeout(timeout, client.status()).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(format!("{}: {e}", self.name)),
            Err(_) => Err(format!("{}: no status within {timeout:?}", self.name)),
        }
    }

    /// Starts the process (`join` for a new member) and waits until it listens.
    fn spawn(&mut self, join: Option<&str>) {
        self.spawn_process(join);
        self.wait_listening();
    }

    fn spawn_process(&mut self, join: Option<&str>) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("{}: log file: {e}", self.name));
        let out = log.try_clone().expect("log file handle");
        let child = node_command(self, join)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("{}: starting {:?}: {e}", self.name, raftkine_bin()));
        self.pid.store(child.id(), Ordering::SeqCst);
        self.child = Some(child);
    }

    fn wait_listening(&mut self) {
        if let Err(e) = self.try_wait_listening() {
            panic!("{e}");
        }
    }

    /// Waits until the node listens; an error with the end of its log if it exited first or
    /// did not listen within the ready timeout.
    fn try_wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + self.ready_timeout;
        let Some(child) = self.child.as_mut() else {
            return Err(format!("{} was not started", self.name));
        };
        match super::listening::wait_until_serving(child, self.client_port, deadline) {
            Ok(()) => return Ok(()),
            Err(super::listening::NotServing::Exited(status)) => {
                self.pid.store(0, Ordering::SeqCst);
                self.child = None;
                return Err(format!(
                    "{} exited early ({status}):\n{}\n{}",
                    self.name,
                    self.log_tail(20),
                    self.panic_message()
                ));
            }
            Err(super::listening::NotServing::NotListening) => {}
        }
        let report = self
            .child
            .as_ref()
            .map(|c| super::diagnose::process_report(c.id(), &self.dir))
            .unwrap_or_default();
        Err(format!(
            "{} did not listen within {:?}:\n{}\n{report}",
            self.name,
            self.ready_timeout,
            self.log_tail(40)
        ))
    }

    /// Restarts the node (`serve` on its storage dir); an error if it exits instead of
    /// listening.
    pub fn try_restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn_process(None);
        self.try_wait_listening()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster.

/// N raftkine processes forming one cluster; see the module doc.
pub struct Cluster {
    nodes: Vec<Node>,
    /// Node i's peer proxy, when started with proxies.
    proxies: Vec<Proxy>,
    /// Group of each node while partitioned, shared with the proxies' filters.
    groups: Arc<RwLock<Option<Vec<usize>>>>,
    options: ClusterOptions,
    dir: tempfile::TempDir,
    /// Join attempts made (`join_attempt`), to name their dirs.
    attempts: usize,
}

impl Cluster {
    /// Starts an n-node cluster without proxies.
    pub fn start(n: usize) -> Cluster {
        Self::start_with(ClusterOptions::new(n))
    }

    /// Starts an n-node cluster whose peer traffic goes through proxies (for partitions).
    pub fn start_with_proxies(n: usize) -> Cluster {
        Self::start_with(ClusterOptions {
            proxies: true,
            ..ClusterOptions::new(n)
        })
    }

    /// Starts the first node, then adds the others one by one with add-node and join.
    pub fn start_with(options: ClusterOptions) -> Cluster {
        assert!(options.nodes >= 1, "a cluster has at least one node");
        let mut cluster = Cluster {
            nodes: Vec::new(),
            proxies: Vec::new(),
            groups: Arc::new(RwLock::new(None)),
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
            options,
            attempts: 0,
        };
        for _ in 0..cluster.options.nodes {
            cluster.add_node();
        }
        let voters = cluster.options.nodes.min(cluster.options.voters);
        let timeout = cluster.options.ready_timeout;
        cluster.wait_voters(voters, timeout);
        cluster
    }

    /// `raftkine status --format json` run against node i.
    pub fn cluster_status(&self, i: usize) -> Result<serde_json::Value, String> {
        let out = run(
            status_command(&self.nodes[i].endpoint()),
            Duration::from_secs(10),
        )?;
        serde_json::from_str(&out).map_err(|e| format!("status printed no JSON ({e}):\n{out}"))
    }

    /// The names of the voters and of the standbys in a `status --format json` document.
    pub fn roles(status: &serde_json::Value) -> (Vec<String>, Vec<String>) {
        let names = |list: &str| -> Vec<String> {
            let mut names: Vec<String> = status[list]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|m| m["name"].as_str().unwrap_or("?").to_string())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            names
        };
        (names("voters"), names("standbys"))
    }

    /// Waits until `raftkine status` on some running node shows `voters` voters (and a leader);
    /// panics with the last status and the logs after `timeout`.
    pub fn wait_voters(&mut self, voters: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            for i in self.running() {
                match self.cluster_status(i) {
                    Ok(status) => {
                        let (v, _) = Self::roles(&status);
                        let led = status["voters"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|m| m["leader"] == true));
                        if v.len() == voters && led {
                            return;
                        }
                        last = status.to_string();
                    }
                    Err(e) => last = e,
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "not {voters} voters within {timeout:?}; last status: {last}\n{}{}",
                    self.log_tails(30),
                    self.keep_logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `raftkine join ARG` for a new node (fresh storage dir, not part of the cluster),
    /// expecting it to be refused: returns its exit status and output once it exits, or `None`
    /// as status if it was still running after `timeout` (then it is killed: it joined).
    pub fn join_attempt(&mut self, arg: &str, timeout: Duration) -> JoinAttempt {
        self.attempts += 1;
        let name = format!("attempt{}", self.attempts);
        let base = self.dir.path().join(&name);
        let peer_port = free_port();
        let node = Node {
            index: usize::MAX,
            client_port: free_port(),
            peer_port,
            advertised_peer_port: peer_port,
            dir: base.join("data"),
            joined_with: None,
            log_path: base.join("server.log"),
            extra_args: self.options.extra_args.clone(),
            voters: self.options.voters,
            ready_timeout: self.options.ready_timeout,
            child: None,
            pid: Arc::new(AtomicU32::new(0)),
            name,
        };
        let mut child = node_command(&node, Some(arg))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", raftkine_bin()));
        let stdout = read_in_background(child.stdout.take());
        let stderr = read_in_background(child.stderr.take());
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let output = format!("{}{}", stdout.join().unwrap(), stderr.join().unwrap());
        JoinAttempt {
            status,
            output,
            dir: node.dir.clone(),
        }
    }

    /// Adds a node: bootstraps the cluster if it is the first, else gets a join token from a
    /// running member and joins. Returns its index.
    pub fn add_node(&mut self) -> usize {
        let join = if self.nodes.is_empty() {
            None
        } else {
            Some(self.join_token())
        };
        self.spawn_node(join)
    }

    /// Adds a node that joins with `join` (`ADDR/TOKEN`); returns its index.
    pub fn add_node_with(&mut self, join: &str) -> usize {
        self.spawn_node(Some(join.to_string()))
    }

    fn spawn_node(&mut self, join: Option<String>) -> usize {
        let mut node = self.new_node();
        node.spawn(join.as_deref());
        node.joined_with = join;
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// A node not started yet, with its ports, dirs and (if configured) proxy.
    fn new_node(&mut self) -> Node {
        let index = self.nodes.len();
        let name = format!("n{}", index + 1);
        let base = self.dir.path().join(&name);
        std::fs::create_dir_all(&base).unwrap_or_else(|e| panic!("{name}: {e}"));
        let peer_port = free_port();
        let pid = Arc::new(AtomicU32::new(0));
        let advertised_peer_port = if self.options.proxies {
            self.add_proxy(index, peer_port)
        } else {
            peer_port
        };
        Node {
            index,
            client_port: free_port(),
            peer_port,
            advertised_peer_port,
            dir: base.join("data"),
            joined_with: None,
            log_path: base.join("server.log"),
            extra_args: self.options.extra_args.clone(),
            voters: self.options.voters,
            ready_timeout: self.options.ready_timeout,
            child: None,
            pid,
            name,
        }
    }

    /// Asks a running member for a join token (retrying while the cluster settles).
    pub fn join_token(&mut self) -> String {
        self.join_token_with_ttl(None)
    }

    /// A join token valid for `ttl` (`--token-ttl`, e.g. "1s"), or the default 1 h.
    pub fn join_token_with_ttl(&mut self, ttl: Option<&str>) -> String {
        let deadline = Instant::now() + self.options.ready_timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            for i in 0..self.nodes.len() {
                if !self.nodes[i].is_running() {
                    continue;
                }
                let endpoint = self.nodes[i].endpoint();
                match run(add_node_command(&endpoint, ttl), Duration::from_secs(10)) {
                    Ok(out) => match parse_add_node_output(&out) {
                        Some(arg) => return arg,
                        None => last = format!("add-node printed no join line:\n{out}"),
                    },
                    Err(e) => last = e,
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "no join token within {:?}: {last}",
            self.options.ready_timeout
        )
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i]
    }

    /// kill -9 node i.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node i again (after `kill` or `terminate`) on its storage dir.
    pub fn start_node(&mut self, i: usize) {
        self.nodes[i].restart();
    }

    /// Restarts node i on its storage dir.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].restart();
    }

    /// Indices of the nodes whose process is running.
    pub fn running(&mut self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect()
    }

    /// Every node's client URL, in index order.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(Node::endpoint).collect()
    }

    /// A client of node i.
    pub async fn client(&self, i: usize) -> Client {
        self.nodes[i].client(self.options.client_timeout).await
    }

    /// One client per node, in index order (clients of stopped nodes fail until they return).
    pub async fn clients(&self) -> Vec<Client> {
        let mut clients = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            clients.push(node.client(self.options.client_timeout).await);
        }
        clients
    }

    /// One client balancing over all the nodes.
    pub async fn client_of_all(&self) -> Client {
        connect(&self.endpoints(), self.options.client_timeout).await
    }

    /// Status of every running node, by index (`Err` for nodes that did not answer).
    pub async fn statuses(&mut self) -> Vec<(usize, Result<StatusResponse, String>)> {
        let running = self.running();
        let timeout = Duration::from_secs(1);
        let asks = running.iter().map(|&i| self.nodes[i].status(timeout));
        let answers = futures::future::join_all(asks).await;
        running.into_iter().zip(answers).collect()
    }

    /// The node that reports itself leader, the one with the highest term if several do (an
    /// isolated old leader may still think it leads); `None` if none does.
    pub async fn leader(&mut self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for (i, status) in self.statuses().await {
            let Ok(status) = status else { continue };
            let me = status.header().map(|h| h.member_id());
            if me == Some(status.leader()) && status.leader() != 0 {
                let term = status.raft_term();
                if best.is_none_or(|(t, _)| term > t) {
                    best = Some((term, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// Waits until some node leads; panics with the logs after `timeout`.
    pub async fn wait_for_leader(&mut self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.leader().await {
                return i;
            }
            if Instant::now() >= deadline {
                panic!("no leader within {timeout:?}\n{}", self.log_tails(40));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every running node is at the same revision with the same HashKV there, and
    /// returns that revision; panics with what differed after `timeout`.
    pub async fn wait_converged(&mut self, timeout: Duration) -> i64 {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = match self.revision_everywhere().await {
                Ok(rev) => match self.hash_kv_everywhere(rev).await {
                    Ok(()) => return rev,
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!("not converged within {timeout:?}: {seen}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The revision, if all running nodes report the same.
    async fn revision_everywhere(&mut self) -> Result<i64, String> {
        let mut revisions = Vec::new();
        for (i, status) in self.statuses().await {
            let rev = status?.header().map(|h| h.revision()).unwrap_or(-1);
            revisions.push((self.nodes[i].name.clone(), rev));
        }
        let first = revisions.first().map(|r| r.1).ok_or("no node runs")?;
        if revisions.iter().all(|r| r.1 == first) {
            Ok(first)
        } else {
            Err(format!("revisions differ: {revisions:?}"))
        }
    }

    /// Ok if all running nodes have the same HashKV at `rev`.
    async fn hash_kv_everywhere(&mut self, rev: i64) -> Result<(), String> {
        let mut hashes = Vec::new();
        for i in self.running() {
            let mut client = self.client(i).await;
            let hash = client
                .hash_kv(rev)
                .await
                .map_err(|e| format!("hash_kv: {e}"))?;
            hashes.push((self.nodes[i].name.clone(), hash.hash()));
        }
        if hashes.windows(2).all(|w| w[0].1 == w[1].1) {
            Ok(())
        } else {
            Err(format!("HashKV at revision {rev} differs: {hashes:?}"))
        }
    }

    /// The last `lines` of every node's log, for failure messages.
    /// Copies every node's whole log to a kept directory when `RAFTKINE_TEST_KEEP_LOGS` names
    /// one; returns a line saying where (or "").
    pub fn keep_logs(&self) -> String {
        let Ok(root) = std::env::var("RAFTKINE_TEST_KEEP_LOGS") else {
            return String::new();
        };
        let dir = PathBuf::from(root).join(format!(
            "{}-{}",
            std::process::id(),
            self.dir
                .path()
                .file_name()
                .map_or("cluster".into(), |n| n.to_string_lossy())
        ));
        if std::fs::create_dir_all(&dir).is_err() {
            return String::new();
        }
        for node in &self.nodes {
            let _ = std::fs::write(dir.join(format!("{}.log", node.name)), node.log());
        }
        format!("\n(full logs kept in {})", dir.display())
    }

    pub fn log_tails(&self, lines: usize) -> String {
        let mut s = String::new();
        for node in &self.nodes {
            s.push_str(&format!(
                "--- {} log:\n{}\n",
                node.name,
                node.log_tail(lines)
            ));
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}{}", self.log_tails(30), self.keep_logs());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Partitions.

impl Cluster {
    /// Starts node `index`'s proxy in front of `peer_port`; returns the proxy's port. Its filter
    /// blocks connections from nodes of other groups while partitioned.
    fn add_proxy(&mut self, index: usize, peer_port: u16) -> u16 {
        let target: SocketAddr = ([127, 0, 0, 1], peer_port).into();
        let proxy = Proxy::start(target);
        let port = proxy.addr().port();
        assert_eq!(self.proxies.len(), index, "one proxy per node, in order");
        self.proxies.push(proxy);
        port
    }

    /// Cuts node i off from all other nodes (both directions).
    pub fn isolate(&mut self, i: usize) {
        let groups: Vec<usize> = (0..self.nodes.len()).map(|k| usize::from(k == i)).collect();
        self.apply_groups(groups);
    }

    /// Partitions the nodes into `groups` (nodes not named form one more group).
    pub fn partition(&mut self, groups: &[&[usize]]) {
        let rest = groups.len();
        let mut of = vec![rest; self.nodes.len()];
        for (g, members) in groups.iter().enumerate() {
            for &i in *members {
                of[i] = g;
            }
        }
        self.apply_groups(of);
    }

    /// Ends any partition.
    pub fn heal(&mut self) {
        *self.groups.write().unwrap() = None;
        for proxy in &self.proxies {
            proxy.heal();
        }
    }

    /// Sets each proxy's filter: a connection into node j's proxy is blocked when the process
    /// that opened it is a node of another group than j's.
    fn apply_groups(&mut self, groups: Vec<usize>) {
        assert_eq!(
            self.proxies.len(),
            self.nodes.len(),
            "partitions need a cluster started with proxies (Cluster::start_with_proxies)"
        );
        *self.groups.write().unwrap() = Some(groups);
        let pids: Vec<Arc<AtomicU32>> = self.nodes.iter().map(|n| n.pid.clone()).collect();
        for (j, proxy) in self.proxies.iter().enumerate() {
            let groups = self.groups.clone();
            let pids = pids.clone();
            let proxy_port = proxy.addr().port();
            proxy.cut_from(move |source| {
                let Some(groups) = groups.read().unwrap().clone() else {
                    return false;
                };
                let running: Vec<u32> = pids.iter().map(|p| p.load(Ordering::SeqCst)).collect();
                match owner_of_connection(source, proxy_port, &running) {
                    Some(k) => groups[k] != groups[j],
                    None => false,
                }
            });
        }
    }
}

/// Which of `pids` (by position; 0 = not running) owns the socket connected from `source` to
/// 127.0.0.1:`proxy_port`, found through /proc/net/tcp and /proc/PID/fd.
pub fn owner_of_connection(source: SocketAddr, proxy_port: u16, pids: &[u32]) -> Option<usize> {
    let inode = super::listening::connection_inode(source.port(), proxy_port)?;
    pids.iter()
        .position(|&pid| pid != 0 && super::listening::socket_inodes_of(pid).contains(&inode))
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A client of `endpoints` whose requests time out after `timeout`.
async fn connect(endpoints: &[String], timeout: Duration) -> Client {
    let options = ConnectOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(Duration::from_secs(1));
    Client::connect(endpoints, Some(options))
        .await
        .unwrap_or_else(|e| panic!("client of {endpoints:?}: {e}"))
}

/// Runs a command to completion within `timeout`; its stdout, or an error with its output.
fn run(mut cmd: Command, timeout: Duration) -> Result<String, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (stdout.join().unwrap(), stderr.join().unwrap());
    match status {
        Some(s) if s.success() => Ok(out),
        Some(s) => Err(format!("{cmd:?} failed ({s}):\n{out}{err}")),
        None => Err(format!("{cmd:?} timed out after {timeout:?}:\n{out}{err}")),
    }
}

fn read_in_background(
    pipe: Option<impl std::io::Read + Send + 'static>,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}
