//! Starting and stopping real servers for the test suites: raftkine processes (the binary this
//! package builds) and Debian's etcd 3.4 (the oracle), each on free loopback ports with its own
//! temporary data dir, killed when dropped.
#![allow(dead_code)]

pub mod cluster;
pub mod diagnose;
pub mod linearizability;
pub mod listening;
pub mod microk8s;
pub mod proxy;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The ports tests hand out: below Linux's ephemeral range (32768 and up), so that no outgoing
/// connection of any process takes a port between the moment a test picks it and the moment
/// its server binds it (or binds it again after a restart).
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free TCP port on 127.0.0.1, never the same twice in one test process: ports are taken in
/// turn from `TEST_PORTS`, starting at a point derived from the process id (test binaries run
/// one after the other, but a bench or a second suite may run beside them), skipping any that
/// cannot be bound right now.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let port = TEST_PORTS.start + offset as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?}")
}

/// The last `n` lines of `text` (a server's log, for failure messages).
pub fn last_lines(text: &str, n: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(n)..].join("\n")
}

/// Path of the raftkine binary under test.
pub fn raftkine_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RAFTKINE_BIN") {
        return PathBuf::from(p);
    }
    if let Some(p) = option_env!("CARGO_BIN_EXE_raftkine") {
        return PathBuf::from(p);
    }
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/debug/raftkine"
    ))
}

/// Which kind of server a `Server` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Raftkine,
    Etcd,
}

/// A running server process with its own data dir; killed (and the dir removed) on drop.
pub struct Server {
    pub kind: Kind,
    pub endpoint: String,
    pub port: u16,
    pub data_dir: PathBuf,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
    extra_args: Vec<String>,
}

impl Server {
    /// Starts a single-node raftkine with a fresh data dir.
    pub fn raftkine() -> Server {
        Self::raftkine_with(&[])
    }

    /// Starts a single-node raftkine with extra `serve` flags.
    pub fn raftkine_with(args: &[&str]) -> Server {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let dir = tmp.path().join("data");
        let mut s = Server {
            kind: Kind::Raftkine,
            endpoint: String::new(),
            port: free_port(),
            data_dir: dir,
            child: None,
            _tmp: Some(tmp),
            extra_args: args.iter().map(|s| s.to_string()).collect(),
        };
        s.start();
        s
    }

    /// Starts a single-node raftkine on the given data dir (e.g. on a filesystem the test
    /// mounted), with extra `serve` flags; its log goes next to the data dir.
    pub fn raftkine_at(data_dir: PathBuf, args: &[&str]) -> Server {
        let mut s = Server {
            kind: Kind::Raftkine,
            endpoint: String::new(),
            port: free_port(),
            data_dir,
            child: None,
            _tmp: None,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
        };
        s.start();
        s
    }

    /// Starts Debian's etcd (single member) with a fresh data dir.
    pub fn etcd() -> Server {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let dir = tmp.path().join("data");
        let mut s = Server {
            kind: Kind::Etcd,
            endpoint: String::new(),
            port: free_port(),
            data_dir: dir,
            child: None,
            _tmp: Some(tmp),
            extra_args: vec![],
        };
        s.start();
        s
    }

    /// Starts a server of `kind` on an existing data dir (one made by a restore) that lives in
    /// `tmp`, which is removed with the server.
    pub fn on_data_dir(kind: Kind, data_dir: PathBuf, tmp: tempfile::TempDir) -> Server {
        let mut s = Server {
            kind,
            endpoint: String::new(),
            port: free_port(),
            data_dir,
            child: None,
            _tmp: Some(tmp),
            extra_args: vec![],
        };
        s.start();
        s
    }

    /// Starts the server named by RAFTKINE_TEST_TARGET (`etcd` runs a suite against the oracle,
    /// to check the suite itself); raftkine by default.
    pub fn under_test() -> Server {
        match std::env::var("RAFTKINE_TEST_TARGET").as_deref() {
            Ok("etcd") => Server::etcd(),
            _ => Server::raftkine(),
        }
    }

    /// (Re)starts the process on the same port and data dir, and waits until it serves.
    pub fn start(&mut self) {
        let addr = format!("127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.log_path()).ok();
        let child = match self.kind {
            Kind::Raftkine => {
                let mut cmd = Command::new(raftkine_bin());
                cmd.arg("serve")
                    .arg("--storage-dir")
                    .arg(&self.data_dir)
                    .arg("--listen")
                    .arg(format!("tcp://{addr}"))
                    .args(&self.extra_args);
                if !self
                    .extra_args
                    .iter()
                    .any(|a| a.starts_with("--peer-listen"))
                {
                    cmd.arg("--peer-listen")
                        .arg(format!("tcp://127.0.0.1:{}", free_port()));
                }
                cmd
            }
            Kind::Etcd => {
                let peer = free_port();
                let mut cmd = Command::new("etcd");
                cmd.arg("--name")
                    .arg("default")
                    .arg("--data-dir")
                    .arg(&self.data_dir)
                    .arg("--listen-client-urls")
                    .arg(format!("http://{addr}"))
                    .arg("--advertise-client-urls")
                    .arg(format!("http://{addr}"))
                    .arg("--listen-peer-urls")
                    .arg(format!("http://127.0.0.1:{peer}"))
                    .arg("--initial-advertise-peer-urls")
                    .arg(format!("http://127.0.0.1:{peer}"))
                    .arg("--initial-cluster")
                    .arg(format!("default=http://127.0.0.1:{peer}"))
                    .arg("--log-level")
                    .arg("error");
                cmd
            }
        }
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(match log {
            Some(f) => Stdio::from(f),
            None => Stdio::null(),
        })
        .spawn();
        let child = child.unwrap_or_else(|e| panic!("starting {:?}: {e}", self.kind));
        self.child = Some(child);
        self.endpoint = format!("http://{addr}");
        self.wait_ready();
    }

    fn log_path(&self) -> PathBuf {
        let parent = self.data_dir.parent().unwrap_or(Path::new("/tmp"));
        parent.join("server.log")
    }

    /// The server's stderr so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `lines` lines of the server's stderr so far.
    pub fn log_tail(&self, lines: usize) -> String {
        last_lines(&self.log(), lines)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let Some(child) = self.child.as_mut() else {
            panic!("{:?} was not started", self.kind)
        };
        let pid = child.id();
        match listening::wait_until_serving(child, self.port, deadline) {
            Ok(()) => {}
            Err(listening::NotServing::Exited(status)) => {
                panic!("{:?} exited early ({status}):\n{}", self.kind, self.log())
            }
            Err(listening::NotServing::NotListening) => panic!(
                "{:?} did not listen on port {} within 30 s:\n{}\n{}",
                self.kind,
                self.port,
                self.log(),
                diagnose::process_report(pid, &self.data_dir)
            ),
        }
    }

    /// kill -9, leaving the data dir for a restart.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The exit status once the process ended by itself (`None` while it runs).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The process id (for /proc measurements and signals).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// An etcd-client connected to this server.
    pub async fn client(&self) -> etcd_client::Client {
        let mut last = None;
        for _ in 0..100 {
            match etcd_client::Client::connect([self.endpoint.as_str()], None).await {
                Ok(c) => return c,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("cannot connect to {}: {last:?}", self.endpoint)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.report_after_a_failure();
        }
        self.kill();
    }
}

impl Server {
    /// For a test that failed: whether the server was still running, and the end of its log
    /// (the data dir, and the log with it, goes when the server is dropped).
    fn report_after_a_failure(&mut self) {
        const LINES: usize = 40;
        let state = match self.try_wait() {
            Some(status) => format!("had exited ({status})"),
            None if self.child.is_some() => "was running".to_string(),
            None => "was stopped by the test".to_string(),
        };
        eprintln!(
            "{:?} server on {} {state} at {}; the end of its log:\n{}",
            self.kind,
            self.endpoint,
            humantime::format_rfc3339_micros(std::time::SystemTime::now()),
            self.log_tail(LINES)
        );
    }
}
