//! Starting and stopping the servers under test on loopback: a fresh temp data dir and free
//! ports per start, readiness by a successful linearizable get on every member, SIGTERM (then
//! SIGKILL) to stop. Only the processes started here are ever signalled.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use etcd_client::{Client, ConnectOptions};
use serde::Serialize;
use tempfile::TempDir;

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Raftkine,
    Etcd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Raftkine => "raftkine",
            Kind::Etcd => "etcd",
        }
    }
}

/// A server binary that can be started as a cluster of one or more members.
#[derive(Clone, Debug)]
pub struct Target {
    pub kind: Kind,
    pub bin: PathBuf,
}

/// One running member.
pub struct Member {
    child: Child,
    pub data_dir: PathBuf,
    pub client_url: String,
    log: PathBuf,
    /// How it was started (a restart runs the same command on the same data dir).
    command: Vec<String>,
    target: Target,
}

impl Member {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9 (the data dir stays for a restart).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the member again with the same command on its data dir (after [`Member::kill`]),
    /// and waits until it serves a linearizable get.
    pub async fn restart(&mut self) -> Result<()> {
        let again = self.target.spawn(
            &self.command,
            self.data_dir.clone(),
            self.client_url.clone(),
        )?;
        *self = again;
        wait_ready(self).await
    }

    /// The end of this member's log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: signals our own child, which has not been reaped yet (try_wait above).
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The members of one started server, and the temp dir holding their data and logs.
pub struct Cluster {
    pub members: Vec<Member>,
    dir: TempDir,
}

impl Cluster {
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().map(Member::pid).collect()
    }

    pub fn data_dirs(&self) -> Vec<&Path> {
        self.members.iter().map(|m| m.data_dir.as_path()).collect()
    }

    /// Stops every member (the data is removed when the cluster is dropped).
    pub fn stop(mut self) {
        for m in &mut self.members {
            m.stop();
        }
    }
}

/// A free TCP port on 127.0.0.1 (the kernel's pick of an ephemeral port).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

impl Target {
    /// Starts `nodes` members and waits until each serves a linearizable get.
    pub async fn start(&self, nodes: usize) -> Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("raftkine-bench-{}-", self.kind.name()))
            .tempdir()
            .context("creating a temp dir")?;
        let mut cluster = Cluster {
            members: Vec::new(),
            dir,
        };
        let dir = cluster.dir.path().to_path_buf();
        match self.kind {
            Kind::Raftkine => {
                // The first member starts a new cluster; the others join it with a token.
                let first = self.spawn_raftkine(&dir, 0, None)?;
                cluster.members.push(first);
                wait_ready(&mut cluster.members[0]).await?;
                for i in 1..nodes.max(1) {
                    let token = self.join_token(&cluster.members[0].client_url)?;
                    cluster
                        .members
                        .push(self.spawn_raftkine(&dir, i, Some(token))?);
                }
                if nodes > 1 {
                    self.wait_voters(&cluster.members[0].client_url, nodes)
                        .await?;
                    for m in &mut cluster.members[1..] {
                        wait_ready(m).await?;
                    }
                }
            }
            Kind::Etcd => {
                cluster.members = self.spawn_etcd(&dir, nodes)?;
                for m in &mut cluster.members {
                    wait_ready(m).await?;
                }
            }
        }
        Ok(cluster)
    }

    /// `raftkine add-node --json` against a member: the `ADDR/TOKEN` to join with.
    fn join_token(&self, client_url: &str) -> Result<String> {
        let out = Command::new(&self.bin)
            .args(["add-node", "--json", "--endpoint", client_url])
            .stdin(Stdio::null())
            .output()
            .context("running raftkine add-node")?;
        if !out.status.success() {
            bail!(
                "raftkine add-node failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("parsing raftkine add-node --json")?;
        v.get("join")
            .and_then(|j| j.as_str())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("raftkine add-node --json printed no \"join\""))
    }

    /// Waits (up to 60 s) until `raftkine status` reports `voters` voters.
    async fn wait_voters(&self, client_url: &str, voters: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = 0;
        while Instant::now() < deadline {
            let out = Command::new(&self.bin)
                .args(["status", "--format", "json", "--endpoint", client_url])
                .stdin(Stdio::null())
                .output()
                .context("running raftkine status")?;
            if out.status.success() {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
                    seen = v
                        .get("voters")
                        .and_then(|v| v.as_array())
                        .map_or(0, |a| a.len());
                    if seen >= voters {
                        return Ok(());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bail!("raftkine cluster did not form: {seen} of {voters} voters after 60 s")
    }

    fn spawn(&self, args: &[String], data_dir: PathBuf, client_url: String) -> Result<Member> {
        let log = data_dir.with_extension("log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .context("creating the server log")?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        if self.kind == Kind::Etcd && std::env::consts::ARCH != "x86_64" {
            cmd.env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        Ok(Member {
            child,
            data_dir,
            client_url,
            log,
            command: args.to_vec(),
            target: self.clone(),
        })
    }

    /// Member `index`: `serve` for a new cluster, or `join ADDR/TOKEN`.
    fn spawn_raftkine(&self, dir: &Path, index: usize, join: Option<String>) -> Result<Member> {
        let port = free_port()?;
        let peer_port = free_port()?;
        let data_dir = dir.join(format!("raftkine-{index}"));
        let mut args = match join {
            None => vec!["serve".to_string()],
            Some(token) => vec!["join".to_string(), token],
        };
        args.extend([
            "--name".into(),
            format!("m{index}"),
            "--storage-dir".into(),
            data_dir.display().to_string(),
            "--listen".into(),
            format!("tcp://127.0.0.1:{port}"),
            "--peer-listen".into(),
            format!("tcp://127.0.0.1:{peer_port}"),
        ]);
        self.spawn(&args, data_dir, format!("http://127.0.0.1:{port}"))
    }

    fn spawn_etcd(&self, dir: &Path, nodes: usize) -> Result<Vec<Member>> {
        let mut ports = Vec::with_capacity(nodes);
        for _ in 0..nodes.max(1) {
            ports.push((free_port()?, free_port()?));
        }
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::with_capacity(ports.len());
        for (i, (client, peer)) in ports.iter().enumerate() {
            let data_dir = dir.join(format!("etcd-{i}"));
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let args: Vec<String> = [
                "--name",
                &format!("m{i}"),
                "--data-dir",
                &data_dir.display().to_string(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &initial_cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "raftkine-bench",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            members.push(self.spawn(&args, data_dir, client_url)?);
        }
        Ok(members)
    }
}

/// Waits (up to 60 s) until the member answers a linearizable get.
async fn wait_ready(member: &mut Member) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(2));
    let mut last_error = String::from("no attempt");
    while Instant::now() < deadline {
        if let Ok(Some(status)) = member.child.try_wait() {
            bail!(
                "server exited during startup ({status}); log:\n{}",
                member.log_tail()
            );
        }
        let attempt = async {
            let mut client =
                Client::connect([member.client_url.as_str()], Some(options.clone())).await?;
            client.get("raftkine-bench/ready", None).await?;
            Ok::<_, anyhow::Error>(())
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) => last_error = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(anyhow!(
        "server at {} not ready after 60 s ({last_error}); log:\n{}",
        member.client_url,
        member.log_tail()
    ))
}
