//! MicroK8s-shaped nodes for the drop-in tests: a `$SNAP_DATA` tree with the k8s-dqlite args
//! file and `var/kubernetes/backend/` (cluster.crt/cluster.key made with openssl as MicroK8s
//! makes them, init.yaml), raftkine started through deploy/microk8s/run-raftkine-with-args the
//! way MicroK8s starts k8s-dqlite, and the `dqlite` command run under that name.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, raftkine_bin};

/// MicroK8s's default k8s-dqlite args (plus the flags a test adds).
pub const DEFAULT_ARGS: &str = "--storage-dir=${SNAP_DATA}/var/kubernetes/backend/\n\
     --listen=unix://${SNAP_DATA}/var/kubernetes/backend/kine.sock:12379\n";

/// A directory holding a `dqlite` link to the raftkine binary (MicroK8s runs `$SNAP/bin/dqlite`).
pub fn dqlite_bin(root: &Path) -> PathBuf {
    let bin = root.join("bin");
    let link = bin.join("dqlite");
    if !link.exists() {
        std::fs::create_dir_all(&bin).expect("bin dir");
        std::os::unix::fs::symlink(raftkine_bin(), &link).expect("dqlite link");
    }
    link
}

/// Makes cluster.crt/cluster.key in `dir` with MicroK8s's openssl command.
pub fn make_cluster_cert(dir: &Path) {
    std::fs::create_dir_all(dir).expect("backend dir");
    let conf = dir.join("csr-dqlite.conf");
    std::fs::write(
        &conf,
        "[ req ]\nprompt = no\ndefault_md = sha256\ndistinguished_name = dn\n\
         [ dn ]\nCN = k8s\n\
         [ v3_ext ]\nbasicConstraints=CA:FALSE\n\
         keyUsage=keyEncipherment,dataEncipherment,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=DNS:testhost,IP:127.0.0.1\n",
    )
    .expect("csr conf");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-sha256", "-days", "3650", "-nodes",
        ])
        .arg("-keyout")
        .arg(dir.join("cluster.key"))
        .arg("-out")
        .arg(dir.join("cluster.crt"))
        .args(["-subj", "/CN=k8s", "-extensions", "v3_ext"])
        .arg("-config")
        .arg(&conf)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(conf).expect("remove conf");
}

/// One MicroK8s-shaped node.
pub struct Node {
    pub name: String,
    pub snap_data: PathBuf,
    /// The dqlite address (`init.yaml` Address): raftkine's peer listener.
    pub address: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Lays out `$SNAP_DATA` under `root/name` with the args file (MicroK8s's defaults plus
    /// `extra_args` lines) and the cluster certificate copied from `cert_from` (or made anew).
    pub fn new(root: &Path, name: &str, cert_from: Option<&Node>, extra_args: &[&str]) -> Node {
        let snap_data = root.join(name);
        let args_dir = snap_data.join("args");
        std::fs::create_dir_all(&args_dir).expect("args dir");
        let mut args = DEFAULT_ARGS.to_string();
        for a in extra_args {
            args.push_str(a);
            args.push('\n');
        }
        std::fs::write(args_dir.join("k8s-dqlite"), args).expect("args file");
        let node = Node {
            name: name.to_string(),
            address: format!("127.0.0.1:{}", free_port()),
            log: root.join(format!("{name}.log")),
            snap_data,
            child: None,
        };
        match cert_from {
            Some(other) => {
                std::fs::create_dir_all(node.backend()).expect("backend dir");
                for f in ["cluster.crt", "cluster.key"] {
                    std::fs::copy(other.backend().join(f), node.backend().join(f))
                        .expect("copy cluster cert");
                }
            }
            None => make_cluster_cert(&node.backend()),
        }
        node
    }

    pub fn backend(&self) -> PathBuf {
        self.snap_data.join("var/kubernetes/backend")
    }

    pub fn socket(&self) -> PathBuf {
        self.backend().join("kine.sock:12379")
    }

    /// `unix://…/kine.sock:12379`, as kube-apiserver's --etcd-servers names it.
    pub fn etcd_server(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Writes init.yaml as MicroK8s does (Address, and the cluster to join if any).
    pub fn write_init(&self, cluster: &[&str]) {
        let mut text = format!("Address: {}\n", self.address);
        if !cluster.is_empty() {
            text.push_str("Cluster:\n");
            for c in cluster {
                text.push_str(&format!("- {c}\n"));
            }
        }
        std::fs::write(self.backend().join("init.yaml"), text).expect("init.yaml");
    }

    /// Starts raftkine through the args-file wrapper; waits until the socket answers.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let wrapper =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/microk8s/run-raftkine-with-args");
        let child = Command::new("bash")
            .arg(wrapper)
            .env("SNAP_DATA", &self.snap_data)
            .env("RAFTKINE", raftkine_bin())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("wrapper starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("{} exited ({status}):\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} did not listen on its socket:\n{}",
            self.name,
            self.log()
        );
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (a clean stop, as systemd does it).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn read_backend(&self, file: &str) -> Option<String> {
        std::fs::read_to_string(self.backend().join(file)).ok()
    }

    /// MicroK8s's call: `dqlite -s file://…/cluster.yaml -c …/cluster.crt -k …/cluster.key
    /// [-f json] k8s COMMAND`, through a binary named `dqlite`.
    pub fn dqlite(&self, root: &Path, json: bool, command: &str) -> Output {
        let b = self.backend();
        let mut cmd = Command::new(dqlite_bin(root));
        cmd.arg("-s")
            .arg(format!("file://{}", b.join("cluster.yaml").display()))
            .arg("-c")
            .arg(b.join("cluster.crt"))
            .arg("-k")
            .arg(b.join("cluster.key"));
        if json {
            cmd.args(["-f", "json"]);
        }
        cmd.arg("k8s").arg(command);
        cmd.output().expect("dqlite runs")
    }

    /// `etcdctl` (v3) against the node's socket; (success, stdout, stderr).
    pub fn etcdctl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.etcd_server()))
            .arg("--command-timeout=8s")
            .args(args)
            .output()
            .expect("etcdctl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A stand-in for the node's service manager, for the swap scripts: `start`/`stop` run and
/// kill the units' processes (k8s-dqlite is played by an etcd 3.4 listening on the node's
/// `kine.sock:12379`; raftkine's unit is run from the unit file the script installed; kubelite
/// does nothing), `mask` makes `start` fail as systemd does. Returns the script's path.
pub fn fake_systemctl(root: &Path, node: &Node) -> PathBuf {
    let state = root.join("systemd-state");
    let units = root.join("units");
    std::fs::create_dir_all(&state).expect("state dir");
    let peer = free_port();
    let script = root.join("bin/systemctl");
    std::fs::create_dir_all(root.join("bin")).expect("bin dir");
    let body = format!(
        r#"#!/usr/bin/env bash
# Fake systemctl for the swap-script tests.
set -u
STATE={state}
UNITS={units}
BACKEND={backend}
cmd="$1"; unit="${{2:-}}"
pidfile="$STATE/$unit.pid"
running() {{ [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }}
case "$cmd" in
  daemon-reload|enable|disable) exit 0 ;;
  mask) touch "$STATE/$unit.masked" ;;
  unmask) rm -f "$STATE/$unit.masked" ;;
  is-active) running ;;
  stop)
    if running; then
      pid=$(cat "$pidfile"); kill -TERM "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile" ;;
  start)
    if [ -f "$STATE/$unit.masked" ]; then echo "Failed to start $unit.service: Unit $unit.service is masked." >&2; exit 1; fi
    running && exit 0
    case "$unit" in
      snap.microk8s.daemon-k8s-dqlite)
        rm -f "$BACKEND/kine.sock:12379"
        (cd "$BACKEND" && exec etcd --data-dir "$BACKEND/standin-etcd" \
          --listen-client-urls unix://kine.sock:12379 --advertise-client-urls unix://kine.sock:12379 \
          --listen-peer-urls http://127.0.0.1:{peer} --initial-advertise-peer-urls http://127.0.0.1:{peer} \
          --initial-cluster default=http://127.0.0.1:{peer}) >>"$STATE/$unit.log" 2>&1 &
        echo $! >"$pidfile" ;;
      raftkine-microk8s)
        file="$UNITS/$unit.service"
        [ -f "$file" ] || {{ echo "Unit $unit.service not found." >&2; exit 5; }}
        envs=$(sed -n 's/^Environment=//p' "$file")
        exec_start=$(sed -n 's/^ExecStart=//p' "$file")
        env $envs $exec_start >>"$STATE/$unit.log" 2>&1 &
        echo $! >"$pidfile" ;;
      *) touch "$STATE/$unit.started" ;;
    esac ;;
  *) echo "fake systemctl: $cmd?" >&2; exit 1 ;;
esac
"#,
        state = state.display(),
        units = units.display(),
        backend = node.backend().display(),
    );
    std::fs::write(&script, body).expect("fake systemctl");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}
