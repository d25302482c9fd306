//! deploy/microk8s/swap-in and swap-out on a MicroK8s-shaped node whose k8s-dqlite is played
//! by an etcd 3.4 on the node's `kine.sock:12379`, preloaded with `/registry/...` keys; the
//! service manager is a stand-in that really starts and kills the processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::skip_on_etcd;
use crate::support::microk8s::{fake_systemctl, Node};
use crate::support::{free_port, raftkine_bin};

struct Swap {
    root: PathBuf,
    node: Node,
    systemctl: PathBuf,
}

impl Swap {
    fn script(&self, name: &str, args: &[&str], fail_at: Option<&str>) -> Output {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/microk8s")
            .join(name);
        let mut cmd = Command::new("bash");
        cmd.arg(path)
            .args(args)
            .env("SNAP_DATA", &self.node.snap_data)
            .env("RAFTKINE", raftkine_bin())
            .env("SYSTEMCTL", &self.systemctl)
            .env("UNIT_DIR", self.root.join("units"))
            .env(
                "APISERVER_CHECK",
                format!(
                    "ETCDCTL_API=3 etcdctl --endpoints={} endpoint health",
                    self.node.etcd_server()
                ),
            )
            .env("WAIT_SECONDS", "30")
            .env_remove("RAFTKINE_SWAP_FAIL_AT");
        if let Some(step) = fail_at {
            cmd.env("RAFTKINE_SWAP_FAIL_AT", step);
        }
        cmd.output().expect("script runs")
    }

    fn systemctl(&self, args: &[&str]) -> bool {
        Command::new(&self.systemctl)
            .args(args)
            .status()
            .expect("systemctl")
            .success()
    }

    /// Every key and value the node's socket serves (through k8s-dqlite's migrator format).
    fn keys(&self, tag: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let dir = self.root.join(format!("dump-{tag}"));
        let out = Command::new(raftkine_bin())
            .args([
                "migrator",
                "--endpoint",
                &self.node.etcd_server(),
                "--mode",
                "backup-etcd",
                "--db-dir",
            ])
            .arg(&dir)
            .output()
            .expect("migrator");
        assert!(
            out.status.success(),
            "dump {tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        read_dir(&dir)
    }

    /// Whether raftkine (not the stand-in) serves the socket: only raftkine has the Admin API.
    fn raftkine_serves(&self) -> bool {
        Command::new(raftkine_bin())
            .args(["status", "--endpoint", &self.node.etcd_server()])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

fn read_dir(dir: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    for i in 0.. {
        let Ok(k) = std::fs::read(dir.join(format!("{i}.key"))) else {
            break;
        };
        let v = std::fs::read(dir.join(format!("{i}.data"))).expect("data file");
        out.insert(k, v);
    }
    out
}

fn ok(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A node as k8s-dqlite left it: dqlite's info.yaml/cluster.yaml and 400 keys in the store.
fn node_with_k8s_dqlite(root: &Path) -> Swap {
    let node = Node::new(root, "node", None, &[]);
    let address = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        node.backend().join("info.yaml"),
        format!("Address: {address}\nID: 3297041220608546238\nRole: 0\n"),
    )
    .expect("info.yaml");
    std::fs::write(
        node.backend().join("cluster.yaml"),
        format!("- Address: {address}\n  ID: 3297041220608546238\n  Role: 0\n"),
    )
    .expect("cluster.yaml");
    let systemctl = fake_systemctl(root, &node);
    let swap = Swap {
        root: root.to_path_buf(),
        node,
        systemctl,
    };
    assert!(swap.systemctl(&["start", "snap.microk8s.daemon-k8s-dqlite"]));
    // Preload through the stand-in's etcd API, in k8s-dqlite's migrator format.
    let seed = root.join("seed");
    std::fs::create_dir_all(&seed).expect("seed dir");
    for i in 0..400 {
        let key = format!(
            "/registry/{}/ns{}/obj{i}",
            ["pods", "secrets", "configmaps"][i % 3],
            i % 5
        );
        let value: Vec<u8> = (0..(i % 200)).map(|b| (b * 7 + i) as u8).collect();
        std::fs::write(seed.join(format!("{i}.key")), key).expect("key");
        std::fs::write(seed.join(format!("{i}.data")), value).expect("data");
    }
    let mut loaded = false;
    for _ in 0..100 {
        let out = Command::new(raftkine_bin())
            .args([
                "migrator",
                "--endpoint",
                &swap.node.etcd_server(),
                "--mode",
                "restore",
                "--db-dir",
            ])
            .arg(&seed)
            .output()
            .expect("migrator");
        if out.status.success() {
            loaded = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(loaded, "could not preload the stand-in");
    swap
}

#[test]
fn microk8s_swap_in_and_out_keep_every_key_and_roll_back_on_failure() {
    if skip_on_etcd("microk8s_swap_in_and_out_keep_every_key_and_roll_back_on_failure") {
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let swap = node_with_k8s_dqlite(root.path());
    let original = swap.keys("original");
    assert_eq!(original.len(), 400);
    let backend = swap.node.backend();
    let info_before = swap.node.read_backend("info.yaml").expect("info.yaml");

    // --dry-run prints every step and changes nothing.
    let dry = ok(
        &swap.script("swap-in", &["--dry-run"], None),
        "swap-in --dry-run",
    );
    for step in [
        "[check]",
        "[backup]",
        "[copy]",
        "[stop-dqlite]",
        "[swap-dirs]",
        "[start-raftkine]",
        "[start-kubelite]",
    ] {
        assert!(dry.contains(step), "dry run lacks {step}:\n{dry}");
    }
    assert!(dry.contains("would run"));
    assert!(!root.path().join("units/raftkine-microk8s.service").exists());
    assert!(backend.join("standin-etcd").exists() && !backend.join("db").exists());

    // A failure after raftkine started rolls everything back to k8s-dqlite.
    let failed = swap.script("swap-in", &[], Some("start-raftkine"));
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("rolled back"),
        "{}\n{}",
        String::from_utf8_lossy(&failed.stdout),
        String::from_utf8_lossy(&failed.stderr)
    );
    assert!(!swap.raftkine_serves(), "the stand-in must serve again");
    assert_eq!(swap.keys("after-rollback"), original);
    assert!(backend.join("standin-etcd").exists());

    // The real swap.
    let out = ok(&swap.script("swap-in", &[], None), "swap-in");
    assert!(out.contains("done: raftkine serves"), "{out}");
    assert!(swap.raftkine_serves());
    assert_eq!(swap.keys("after-swap-in"), original);
    assert!(backend.join("db").exists());
    // The node kept its dqlite address.
    let address = |info: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix("Address: ").map(str::to_string))
            .unwrap_or_default()
    };
    let want = address(&info_before);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while address(&swap.node.read_backend("info.yaml").unwrap_or_default()) != want {
        assert!(std::time::Instant::now() < deadline, "info.yaml address");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        !swap.systemctl(&["start", "snap.microk8s.daemon-k8s-dqlite"]),
        "k8s-dqlite must be masked"
    );

    // Writes made on raftkine go back to k8s-dqlite with swap-out; a failed swap-out returns
    // to raftkine.
    let put = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", swap.node.etcd_server()))
        .args(["put", "/registry/pods/ns0/written-on-raftkine", "yes"])
        .output()
        .expect("etcdctl");
    assert!(put.status.success());
    let mut expected = original.clone();
    expected.insert(
        b"/registry/pods/ns0/written-on-raftkine".to_vec(),
        b"yes".to_vec(),
    );
    let failed = swap.script("swap-out", &[], Some("start-dqlite"));
    assert!(!failed.status.success());
    assert!(swap.raftkine_serves());
    assert_eq!(swap.keys("after-failed-swap-out"), expected);

    let out = ok(&swap.script("swap-out", &[], None), "swap-out");
    assert!(out.contains("k8s-dqlite serves"), "{out}");
    assert!(!swap.raftkine_serves());
    assert_eq!(swap.keys("after-swap-out"), expected);
    assert!(swap.systemctl(&["stop", "snap.microk8s.daemon-k8s-dqlite"]));
}
