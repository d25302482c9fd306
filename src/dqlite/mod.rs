//! The k8s-dqlite drop-in: what lets raftkine take k8s-dqlite's place on a MicroK8s-style node
//! with the node's scripts and kube-apiserver unchanged.
//!
//! - [`flags`]: k8s-dqlite's command-line flags (applied, or acknowledged with a warning).
//! - [`files`]: the YAML files of a k8s-dqlite storage dir, in go-dqlite's shapes.
//! - [`layout`]: what those files mean at startup (`init.yaml`, `update.yaml`, `info.yaml`,
//!   `failure-domain`, `tuning.yaml`) and keeping `info.yaml`/`cluster.yaml` current.
//! - [`shell`]: the `dqlite` admin command MicroK8s's scripts run (`.cluster`, `.leader`,
//!   `.remove`, `.reconfigure`).

pub mod files;
pub mod flags;
pub mod layout;
pub mod shell;
