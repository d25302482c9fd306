//! Getting the two servers: etcd from Debian's `etcd-server` package (installed with apt-get
//! when missing) and raftkine built in release mode from the workspace.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The first line of `BIN --version`, if it runs.
fn version_of(bin: &Path) -> Option<String> {
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

fn apt_get(args: &[&str]) -> Result<bool> {
    eprintln!("+ apt-get {}", args.join(" "));
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .context("running apt-get")?;
    Ok(status.success())
}

/// Makes sure etcd runs, installing Debian's etcd-server and etcd-client if needed; returns
/// its version line.
pub fn ensure_etcd(bin: &Path) -> Result<String> {
    if let Some(v) = version_of(bin) {
        return Ok(v);
    }
    eprintln!(
        "etcd not found ({}): installing Debian's etcd-server",
        bin.display()
    );
    let install = [
        "install",
        "-y",
        "--no-install-recommends",
        "etcd-server",
        "etcd-client",
    ];
    let installed = apt_get(&install)? || (apt_get(&["update"])? && apt_get(&install)?);
    if !installed {
        bail!("could not install etcd-server with apt-get (run as root?)");
    }
    // The package may start an etcd service on 2379; the benchmark uses its own ports.
    let _ = Command::new("service")
        .args(["etcd", "stop"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    version_of(bin).with_context(|| format!("{} still does not run after install", bin.display()))
}

/// Builds raftkine in release mode and returns the binary. When the build fails (say, src/ is
/// mid-edit) but an earlier binary exists, that one is used with a warning.
pub fn build_raftkine(workspace: &Path) -> Result<PathBuf> {
    let workspace = &workspace
        .canonicalize()
        .with_context(|| format!("finding the workspace {}", workspace.display()))?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let bin = target_dir.join("release").join("raftkine");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("+ cargo build --release --bin raftkine");
    let mut cmd = Command::new(cargo);
    // Under `cargo run`, the package variables cargo sets for this binary would reach the
    // nested build and make its build scripts rerun: drop them.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&k.as_ref())
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd
        .args(["build", "--release", "--bin", "raftkine"])
        .current_dir(workspace)
        .stdin(Stdio::null())
        .status()
        .context("running cargo build")?;
    if !status.success() {
        if bin.exists() {
            eprintln!(
                "warning: building raftkine failed; using the existing {}",
                bin.display()
            );
        } else {
            bail!("building raftkine failed");
        }
    }
    Ok(bin)
}
