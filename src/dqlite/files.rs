//! The files of a k8s-dqlite storage dir, in the YAML shapes go-dqlite and MicroK8s use:
//! `info.yaml` (this node), `cluster.yaml` (every node), `init.yaml` (one-shot bootstrap or
//! join), `update.yaml` (one-shot address change), `failure-domain` and `tuning.yaml`.
//! Reading and writing only; what they mean at startup is `layout`'s job.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const INFO: &str = "info.yaml";
pub const CLUSTER: &str = "cluster.yaml";
pub const INIT: &str = "init.yaml";
pub const UPDATE: &str = "update.yaml";
pub const FAILURE_DOMAIN: &str = "failure-domain";
pub const TUNING: &str = "tuning.yaml";
pub const CLUSTER_CRT: &str = "cluster.crt";
pub const CLUSTER_KEY: &str = "cluster.key";

/// A node's role as dqlite numbers it.
pub const ROLE_VOTER: u8 = 0;
pub const ROLE_STANDBY: u8 = 1;
pub const ROLE_SPARE: u8 = 2;

/// dqlite's role names (`.cluster` in tabular form).
pub fn role_name(role: u8) -> &'static str {
    match role {
        ROLE_VOTER => "voter",
        ROLE_STANDBY => "stand-by",
        _ => "spare",
    }
}

/// One node as go-dqlite's `NodeInfo` serialises it (in `info.yaml`, `cluster.yaml`, and the
/// JSON of `.cluster`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    #[serde(rename = "ID")]
    pub id: u64,
    #[serde(rename = "Address")]
    pub address: String,
    #[serde(rename = "Role", default)]
    pub role: u8,
}

impl NodeInfo {
    /// A raftkine member as dqlite describes a node (learners are standbys).
    pub fn of_member(m: &crate::proto::etcdserverpb::Member) -> NodeInfo {
        NodeInfo {
            id: m.id,
            address: m
                .peer_ur_ls
                .first()
                .map(|u| crate::peer::url_to_addr(u))
                .unwrap_or_default(),
            role: if m.is_learner {
                ROLE_STANDBY
            } else {
                ROLE_VOTER
            },
        }
    }
}

/// `init.yaml`: this node's address, and the addresses of an existing cluster to join (empty:
/// bootstrap a new cluster).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct InitConfig {
    #[serde(rename = "Address", default)]
    pub address: String,
    #[serde(rename = "Cluster", default)]
    pub cluster: Vec<String>,
}

/// `update.yaml`: a new address for this (single) node.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct UpdateConfig {
    #[serde(rename = "Address", default)]
    pub address: String,
}

/// `tuning.yaml` (k8s-dqlite's tuning knobs); durations are Go's (integer nanoseconds).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Tuning {
    #[serde(default)]
    pub snapshot: Option<SnapshotTuning>,
    #[serde(rename = "network-latency", default)]
    pub network_latency: Option<u64>,
    #[serde(rename = "kine-compact-interval", default)]
    pub kine_compact_interval: Option<u64>,
    #[serde(rename = "kine-poll-interval", default)]
    pub kine_poll_interval: Option<u64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct SnapshotTuning {
    #[serde(default)]
    pub threshold: u64,
    #[serde(default)]
    pub trailing: u64,
}

fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

pub fn exists(dir: &Path, name: &str) -> bool {
    path(dir, name).exists()
}

fn bad(name: &str, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("{name}: {e}"))
}

/// Reads and parses a YAML file of the storage dir; `None` when it does not exist.
pub fn read<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Result<Option<T>> {
    let text = match std::fs::read_to_string(path(dir, name)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(name, e)),
    };
    serde_yaml_ng::from_str(&text)
        .map(Some)
        .map_err(|e| bad(name, e))
}

/// Reads and parses the YAML file at `path`; an error when it does not exist.
pub fn read_path<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .ok_or_else(|| bad(&path.display().to_string(), "not a file"))?;
    read(dir, &name)?.ok_or_else(|| bad(&path.display().to_string(), "no such file"))
}

/// Writes a YAML file atomically (temporary file, then rename), readable by its owner only
/// like the rest of the storage dir. Leaves the file alone when the content is unchanged.
pub fn write<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<()> {
    let text = serde_yaml_ng::to_string(value).map_err(|e| bad(name, e))?;
    let target = path(dir, name);
    if std::fs::read_to_string(&target).is_ok_and(|old| old == text) {
        return Ok(());
    }
    let tmp = path(dir, &format!(".{name}.tmp"));
    std::fs::write(&tmp, text.as_bytes()).map_err(|e| bad(name, e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| bad(name, e))?;
    }
    std::fs::rename(&tmp, &target).map_err(|e| bad(name, e))
}

pub fn remove(dir: &Path, name: &str) -> Result<()> {
    match std::fs::remove_file(path(dir, name)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(bad(name, e)),
    }
}

/// The `failure-domain` file: one integer (0 when absent).
pub fn failure_domain(dir: &Path) -> Result<u64> {
    match std::fs::read_to_string(path(dir, FAILURE_DOMAIN)) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|e| bad(FAILURE_DOMAIN, format!("{e} (expected an integer)"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(bad(FAILURE_DOMAIN, e)),
    }
}

/// The servers a `dqlite -s` argument names: `file://PATH` of a cluster.yaml, or addresses
/// separated by commas.
pub fn servers(arg: &str) -> Result<Vec<String>> {
    if let Some(file) = arg.strip_prefix("file://") {
        let nodes: Vec<NodeInfo> = read_path(Path::new(file))?;
        return Ok(nodes.into_iter().map(|n| n.address).collect());
    }
    Ok(arg
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_yaml_round_trips_in_dqlite_shape() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes = vec![
            NodeInfo {
                id: 3297041220608546238,
                address: "10.0.0.1:19001".into(),
                role: ROLE_VOTER,
            },
            NodeInfo {
                id: 7,
                address: "10.0.0.2:19001".into(),
                role: ROLE_STANDBY,
            },
        ];
        write(dir.path(), CLUSTER, &nodes).expect("write");
        let text = std::fs::read_to_string(dir.path().join(CLUSTER)).expect("read");
        assert!(
            text.starts_with("- ID: 3297041220608546238\n  Address: 10.0.0.1:19001\n  Role: 0\n"),
            "{text}"
        );
        let back: Vec<NodeInfo> = read(dir.path(), CLUSTER).expect("read").expect("exists");
        assert_eq!(back, nodes);
        let servers =
            servers(&format!("file://{}", dir.path().join(CLUSTER).display())).expect("servers");
        assert_eq!(servers, vec!["10.0.0.1:19001", "10.0.0.2:19001"]);
    }

    #[test]
    fn init_yaml_as_microk8s_writes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(INIT),
            "Address: 10.0.0.3:19001\nCluster:\n- 10.0.0.1:19001\n- 10.0.0.2:19001\n",
        )
        .expect("write");
        let init: InitConfig = read(dir.path(), INIT).expect("parse").expect("exists");
        assert_eq!(init.address, "10.0.0.3:19001");
        assert_eq!(init.cluster.len(), 2);
        std::fs::write(dir.path().join(FAILURE_DOMAIN), "3\n").expect("write");
        assert_eq!(failure_domain(dir.path()).expect("domain"), 3);
    }
}
