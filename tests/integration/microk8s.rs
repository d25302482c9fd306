//! raftkine in place of k8s-dqlite on MicroK8s-shaped nodes: the args file run verbatim, the
//! storage-dir files MicroK8s reads and writes, joining through init.yaml, and the `dqlite`
//! verbs of MicroK8s's scripts (real processes, really killed).

use std::time::{Duration, Instant};

use crate::common::skip_on_etcd;
use crate::support::microk8s::Node;

/// (ID, Address, Role) of each entry of a cluster.yaml / `.cluster -f json` document.
fn nodes_in(doc: &serde_yaml_ng::Value) -> Vec<(u64, String, u64)> {
    doc.as_sequence()
        .map(|s| {
            s.iter()
                .map(|n| {
                    (
                        n["ID"].as_u64().unwrap_or(0),
                        n["Address"].as_str().unwrap_or("").to_string(),
                        n["Role"].as_u64().unwrap_or(99),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn cluster_yaml(node: &Node) -> Vec<(u64, String, u64)> {
    node.read_backend("cluster.yaml")
        .and_then(|t| serde_yaml_ng::from_str(&t).ok())
        .map(|d| nodes_in(&d))
        .unwrap_or_default()
}

/// Waits until `node`'s cluster.yaml lists exactly `addresses` as voters.
fn wait_voters(node: &Node, addresses: &[&str]) {
    let mut want: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut got: Vec<String> = cluster_yaml(node)
            .into_iter()
            .filter(|(_, _, role)| *role == 0)
            .map(|(_, a, _)| a)
            .collect();
        got.sort();
        if got == want {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{}: voters {got:?}, wanted {want:?}\n{}",
                node.name,
                node.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "dqlite failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn microk8s_args_file_runs_verbatim_and_serves_on_kine_sock() {
    if skip_on_etcd("microk8s_args_file_runs_verbatim_and_serves_on_kine_sock") {
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let mut node = Node::new(
        root.path(),
        "n1",
        None,
        &[
            "--enable-tls=true",
            "--min-tls-version=tls12",
            "--datastore-max-idle-connections=5",
            "--watch-query-timeout=20s",
            "--watch-progress-notify-interval=5s",
        ],
    );
    node.write_init(&[]);
    node.start();

    // The socket file is literally `kine.sock:12379`, owner-only.
    let meta = std::fs::metadata(node.socket()).expect("socket exists");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let (ok, _, err) = node.etcdctl(&["put", "/registry/pods/default/a", "x"]);
    assert!(ok, "{err}");
    let (ok, out, err) =
        node.etcdctl(&["get", "/registry/pods/", "--prefix", "--print-value-only"]);
    assert!(ok && out == "x\n", "{out} {err}");

    // init.yaml did its job and is gone; info.yaml and cluster.yaml describe the node.
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.read_backend("init.yaml").is_some() || cluster_yaml(&node).is_empty() {
        assert!(
            Instant::now() < deadline,
            "init.yaml stays or no cluster.yaml"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let info: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&node.read_backend("info.yaml").expect("info.yaml"))
            .expect("info.yaml is YAML");
    assert_eq!(info["Address"].as_str(), Some(node.address.as_str()));
    assert_eq!(info["Role"].as_u64(), Some(0));
    let id = info["ID"].as_u64().expect("ID");
    assert_eq!(cluster_yaml(&node), vec![(id, node.address.clone(), 0)]);
    // One warning line per flag without a raftkine meaning.
    let log = node.log();
    for flag in ["datastore-max-idle-connections", "watch-query-timeout"] {
        assert_eq!(
            log.matches(&format!("flag --{flag} ")).count(),
            1,
            "warning for --{flag}:\n{log}"
        );
    }

    // A restart keeps the address (from info.yaml) and the data.
    node.stop();
    node.start();
    let (ok, out, _) = node.etcdctl(&["get", "/registry/pods/default/a", "--print-value-only"]);
    assert!(ok && out == "x\n");
    assert!(log_listens_on(&node, &node.address));

    // update.yaml moves the node to a new address (what MicroK8s's cluster agent does to a
    // first node still on 127.0.0.1 when another node joins).
    node.stop();
    let moved = format!("127.0.0.1:{}", crate::support::free_port());
    std::fs::write(
        node.backend().join("update.yaml"),
        format!("Address: {moved}\n"),
    )
    .expect("update.yaml");
    node.start();
    let deadline = Instant::now() + Duration::from_secs(15);
    while cluster_yaml(&node) != vec![(id, moved.clone(), 0)] {
        assert!(
            Instant::now() < deadline,
            "cluster.yaml after update.yaml: {:?}",
            cluster_yaml(&node)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        node.read_backend("update.yaml").is_none(),
        "update.yaml left"
    );
    let info = node.read_backend("info.yaml").expect("info.yaml");
    assert!(info.contains(&moved), "{info}");
    let (ok, out, _) = node.etcdctl(&["get", "/registry/pods/default/a", "--print-value-only"]);
    assert!(ok && out == "x\n");
}

fn log_listens_on(node: &Node, address: &str) -> bool {
    let log = node.log();
    let mut listening = log.lines().filter(|l| l.contains("peer traffic on"));
    listening.clone().count() >= 2 && listening.all(|l| l.contains(address))
}

#[test]
fn microk8s_three_nodes_join_by_init_yaml_and_dqlite_verbs_work() {
    if skip_on_etcd("microk8s_three_nodes_join_by_init_yaml_and_dqlite_verbs_work") {
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    let mut n1 = Node::new(r, "n1", None, &[]);
    n1.write_init(&[]);
    n1.start();
    let mut n2 = Node::new(r, "n2", Some(&n1), &[]);
    n2.write_init(&[&n1.address]);
    n2.start();
    let mut n3 = Node::new(r, "n3", Some(&n1), &[]);
    n3.write_init(&[&n1.address, &n2.address]);
    n3.start();
    let addresses = [n1.address.clone(), n2.address.clone(), n3.address.clone()];
    let all = [
        addresses[0].as_str(),
        addresses[1].as_str(),
        addresses[2].as_str(),
    ];
    for n in [&n1, &n2, &n3] {
        wait_voters(n, &all);
        assert!(
            n.read_backend("init.yaml").is_none(),
            "{}: init.yaml left",
            n.name
        );
        let info: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&n.read_backend("info.yaml").expect("info.yaml"))
                .expect("YAML");
        assert_eq!(info["Address"].as_str(), Some(n.address.as_str()));
        let me = cluster_yaml(n)
            .into_iter()
            .find(|(_, a, _)| *a == n.address)
            .expect("listed");
        assert_eq!(info["ID"].as_u64(), Some(me.0), "{}: info.yaml ID", n.name);
    }

    // Data written on one node is there on the others.
    let (ok, _, err) = n2.etcdctl(&["put", "/registry/configmaps/default/cm", "v1"]);
    assert!(ok, "{err}");
    let (ok, out, _) = n3.etcdctl(&[
        "get",
        "/registry/configmaps/default/cm",
        "--print-value-only",
    ]);
    assert!(ok && out == "v1\n", "{out}");

    // The verbs, as MicroK8s's scripts call them.
    let json: serde_yaml_ng::Value =
        serde_json::from_str(&stdout(&n1.dqlite(r, true, ".cluster"))).expect(".cluster JSON");
    let mut listed: Vec<(String, u64)> = nodes_in(&json)
        .into_iter()
        .map(|(_, a, role)| (a, role))
        .collect();
    listed.sort();
    let mut want: Vec<(String, u64)> = all.iter().map(|a| (a.to_string(), 0)).collect();
    want.sort();
    assert_eq!(listed, want);
    let tabular = stdout(&n2.dqlite(r, false, ".cluster"));
    assert_eq!(tabular.lines().count(), 3, "{tabular}");
    for line in tabular.lines() {
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(parts.len(), 3, "{line}");
        assert!(u64::from_str_radix(parts[0], 16).is_ok(), "{line}");
        assert!(all.contains(&parts[1]) && parts[2] == "voter", "{line}");
    }
    let leader = stdout(&n3.dqlite(r, false, ".leader"));
    assert!(all.contains(&leader.trim()), "leader {leader:?}");

    // .remove of an unknown address fails; of a stopped node removes it everywhere.
    let unknown = n1.dqlite(r, false, ".remove 10.255.255.1:19001");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no node has address"));
    n3.kill();
    stdout(&n1.dqlite(r, false, &format!(".remove {}", n3.address)));
    wait_voters(&n1, &all[..2]);
    wait_voters(&n2, &all[..2]);

    // Quorum recovery: refused while a quorum is up...
    let cluster_file = n1.backend().join("cluster.yaml");
    n1.stop();
    std::fs::write(
        r.join("survivors.yaml"),
        format!(
            "- ID: {}\n  Address: {}\n  Role: 0\n",
            cluster_yaml(&n1)
                .into_iter()
                .find(|(_, a, _)| *a == n1.address)
                .map(|(id, _, _)| id)
                .expect("n1 listed"),
            n1.address
        ),
    )
    .expect("survivors.yaml");
    let reconfigure = format!(
        ".reconfigure {} {}",
        n1.backend().display(),
        r.join("survivors.yaml").display()
    );
    let refused = n1.dqlite(r, false, &reconfigure);
    assert!(
        !refused.status.success(),
        "recovery must be refused while n2 is up"
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("quorum"));
    // ...and works once the quorum is really lost: n2 is gone for good.
    n1.start();
    let (ok, _, err) = n1.etcdctl(&["put", "/registry/before-loss", "1"]);
    assert!(ok, "{err}");
    n2.kill();
    let (ok, _, _) = n1.etcdctl(&["put", "/registry/during-loss", "1"]);
    assert!(!ok, "a write without quorum must fail");
    n1.stop();
    stdout(&n1.dqlite(r, false, &reconfigure));
    n1.start();
    let (ok, _, err) = n1.etcdctl(&["put", "/registry/after-recovery", "1"]);
    assert!(ok, "{err}\n{}", n1.log());
    let (ok, out, _) = n1.etcdctl(&["get", "/registry/", "--prefix", "--keys-only"]);
    assert!(ok);
    for key in [
        "/registry/configmaps/default/cm",
        "/registry/before-loss",
        "/registry/after-recovery",
    ] {
        assert!(out.contains(key), "{key} missing after recovery: {out}");
    }
    wait_voters(&n1, &all[..1]);
    assert!(cluster_file.exists());
}

/// The roles (address → Role) in a node's cluster.yaml.
fn roles(node: &Node) -> std::collections::BTreeMap<String, u64> {
    cluster_yaml(node)
        .into_iter()
        .map(|(_, address, role)| (address, role))
        .collect()
}

#[test]
fn microk8s_failure_domains_decide_which_standby_replaces_a_dead_voter() {
    if skip_on_etcd("microk8s_failure_domains_decide_which_standby_replaces_a_dead_voter") {
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    // Voters in domains 1, 2, 3; standbys in domains 1 and 3.
    let domains = [1, 2, 3, 1, 3];
    let mut nodes: Vec<Node> = vec![];
    for (i, domain) in domains.iter().enumerate() {
        let node = Node::new(
            r,
            &format!("n{}", i + 1),
            nodes.first(),
            &["--voter-grace=3s"],
        );
        std::fs::write(node.backend().join("failure-domain"), format!("{domain}\n"))
            .expect("failure-domain");
        let seeds: Vec<String> = nodes.iter().map(|n| n.address.clone()).collect();
        let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
        node.write_init(&seeds);
        nodes.push(node);
        let last = nodes.len() - 1;
        nodes[last].start();
        let want_voters: Vec<&str> = nodes.iter().take(3).map(|n| n.address.as_str()).collect();
        wait_voters(&nodes[0], &want_voters);
    }
    // Every node listed: three voters, two standbys.
    let deadline = Instant::now() + Duration::from_secs(30);
    while roles(&nodes[0]).len() != 5 {
        assert!(Instant::now() < deadline, "{:?}", roles(&nodes[0]));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(roles(&nodes[0])[&nodes[3].address], 1);
    assert_eq!(roles(&nodes[0])[&nodes[4].address], 1);

    // Every member's domain has replicated (raftkine status shows them).
    let mut want_domains: Vec<u64> = domains.to_vec();
    want_domains.sort();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::process::Command::new(crate::support::raftkine_bin())
            .args([
                "status",
                "--format",
                "json",
                "--endpoint",
                &nodes[0].etcd_server(),
            ])
            .output()
            .expect("status");
        let doc: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let mut got: Vec<u64> = ["voters", "standbys"]
            .iter()
            .flat_map(|list| doc[list].as_array().cloned().unwrap_or_default())
            .map(|m| m["failure_domain"].as_u64().unwrap_or(0))
            .collect();
        got.sort();
        if got == want_domains {
            break;
        }
        assert!(Instant::now() < deadline, "domains {got:?}: {doc}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The domain-3 voter dies: the domain-3 standby (n5) replaces it, not the domain-1 one.
    nodes[2].kill();
    let want = [
        nodes[0].address.as_str(),
        nodes[1].address.as_str(),
        nodes[4].address.as_str(),
    ];
    wait_voters(&nodes[0], &want);
    assert_eq!(roles(&nodes[0])[&nodes[3].address], 1, "n4 stays a standby");
}
