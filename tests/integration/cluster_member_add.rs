//! etcd's way of growing a cluster: `etcdctl member add` on a running member, then the new
//! node started with `--initial-cluster-state existing` and the cluster's CA in its storage dir.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{free_port, raftkine_bin};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn etcdctl(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .output()
        .expect("etcdctl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn serve(dir: &std::path::Path, name: &str, client: u16, peer: u16, extra: &[&str]) -> Proc {
    let log = std::fs::File::create(dir.with_extension("log")).expect("log");
    Proc(
        Command::new(raftkine_bin())
            .args(["serve", "--name", name, "--storage-dir"])
            .arg(dir)
            .args([
                "--listen",
                &format!("tcp://127.0.0.1:{client}"),
                "--peer-listen",
                &format!("tcp://127.0.0.1:{peer}"),
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("raftkine starts"),
    )
}

fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> Option<String>) {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        match check() {
            None => return,
            Some(why) => last = why,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what} within {limit:?}: {last}");
}

#[test]
fn cluster_member_add_then_start_with_initial_cluster_state_existing() {
    let root = tempfile::tempdir().expect("tempdir");
    // The operator's CA, in both storage dirs before their first start.
    let ca = raftkine::tls::PeerIdentity::bootstrap(1, "ca").expect("CA");
    let (d1, d2) = (root.path().join("n1"), root.path().join("n2"));
    for d in [&d1, &d2] {
        std::fs::create_dir_all(d.join("peer")).expect("peer dir");
        std::fs::write(d.join("peer/ca.crt"), &ca.ca_cert).expect("ca.crt");
        std::fs::write(d.join("peer/ca.key"), &ca.ca_key).expect("ca.key");
    }
    let (c1, p1, c2, p2) = (free_port(), free_port(), free_port(), free_port());
    let _n1 = serve(&d1, "n1", c1, p1, &[]);
    let e1 = format!("127.0.0.1:{c1}");
    wait_until("n1 serves", Duration::from_secs(30), || {
        let (ok, _, err) = etcdctl(&e1, &["put", "before", "1"]);
        (!ok).then_some(err)
    });

    let peer2 = format!("https://127.0.0.1:{p2}");
    let (ok, out, err) = etcdctl(
        &e1,
        &["member", "add", "n2", &format!("--peer-urls={peer2}")],
    );
    assert!(ok, "member add: {err}");
    let id = out
        .split_whitespace()
        .nth(1)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .expect("Member ID added to cluster ...");
    let initial = out
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER="))
        .map(|v| v.trim_matches('"').to_string())
        .expect("ETCD_INITIAL_CLUSTER line");
    assert!(initial.contains(&format!("n2={peer2}")), "{initial}");
    // The same peer URL twice is refused like etcd does.
    let (ok, _, err) = etcdctl(
        &e1,
        &["member", "add", "again", &format!("--peer-urls={peer2}")],
    );
    assert!(!ok && err.contains("Peer URLs already exists"), "{err}");

    let _n2 = serve(
        &d2,
        "n2",
        c2,
        p2,
        &[
            "--initial-cluster-state",
            "existing",
            "--initial-cluster",
            &initial,
        ],
    );
    // n2 took the added member's place: same id, its name and client URL published, promoted.
    wait_until(
        "n2 joined as the added member",
        Duration::from_secs(60),
        || {
            let (ok, out, err) = etcdctl(&e1, &["member", "list", "-w", "json"]);
            if !ok {
                return Some(err);
            }
            let doc: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            let members = doc["members"].as_array().cloned().unwrap_or_default();
            let me = members.iter().find(|m| m["ID"].as_u64() == Some(id));
            let ready = members.len() == 2
                && me.is_some_and(|m| {
                    m["name"] == "n2"
                        && m["isLearner"].as_bool() != Some(true)
                        && m["clientURLs"].to_string().contains(&c2.to_string())
                });
            (!ready).then_some(out)
        },
    );
    let e2 = format!("127.0.0.1:{c2}");
    let (ok, out, err) = etcdctl(&e2, &["get", "before", "--print-value-only"]);
    assert!(ok && out == "1\n", "{out}{err}");
    let (ok, _, err) = etcdctl(&e2, &["put", "via-n2", "1"]);
    assert!(ok, "{err}");
    // MemberUpdate with its peer URL answers like etcd.
    let (ok, out, err) = etcdctl(
        &e1,
        &[
            "member",
            "update",
            &format!("{id:x}"),
            &format!("--peer-urls={peer2}"),
        ],
    );
    assert!(ok && out.contains("updated"), "{out}{err}");
}
