//! The k8s-dqlite flags that have no raftkine flag of the same name: parsed so that a MicroK8s
//! args file runs unchanged, applied where they mean something for raftkine, and otherwise
//! acknowledged with one warning line each.
//!
//! Boolean flags take Go's forms (`--debug`, `--debug=true`, `--enable-tls=false`).

use clap::Args;

/// k8s-dqlite's own flags (the shared ones, like `--storage-dir` and `--listen`, are raftkine
/// flags; `--metrics*` and the disk-guard flags are raftkine features of their own).
#[derive(Args, Debug, Clone, Default)]
pub struct DqliteFlags {
    /// k8s-dqlite: TLS between dqlite nodes. raftkine's peer traffic is always mutual TLS
    /// (with `cluster.crt`/`cluster.key` of the storage dir when present); `false` is ignored
    /// with a warning.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub enable_tls: Option<bool>,

    /// Lowest TLS version of the peer listener: tls12 (default) or tls13 (tls10 and tls11 are
    /// accepted and mean tls12: raftkine's TLS stack does not offer older versions).
    #[arg(long, value_parser = parse_tls_version)]
    pub min_tls_version: Option<TlsVersion>,

    /// Debug logging (k8s-dqlite's `--debug`); overrides `--log-level`.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub debug: Option<bool>,

    /// TLS session cache size of outgoing peer connections (0: no session resumption).
    #[arg(long)]
    pub tls_client_session_cache_size: Option<usize>,

    /// Accepted for k8s-dqlite compatibility; no meaning for raftkine (Go's pprof).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub profiling: Option<bool>,
    /// Accepted for k8s-dqlite compatibility; no meaning for raftkine.
    #[arg(long)]
    pub profiling_listen: Option<String>,
    /// Accepted for k8s-dqlite compatibility; no meaning for raftkine.
    #[arg(long)]
    pub profiling_dir: Option<String>,
    /// Accepted for k8s-dqlite compatibility; raftkine always keeps its data on disk.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub disk_mode: Option<bool>,
    /// Accepted for k8s-dqlite compatibility; raftkine has no SQL connection pool.
    #[arg(long, allow_hyphen_values = true)]
    pub datastore_max_idle_connections: Option<i64>,
    /// Accepted for k8s-dqlite compatibility; raftkine has no SQL connection pool.
    #[arg(long, allow_hyphen_values = true)]
    pub datastore_max_open_connections: Option<i64>,
    /// Accepted for k8s-dqlite compatibility; raftkine has no SQL connection pool.
    #[arg(long)]
    pub datastore_connection_max_lifetime: Option<String>,
    /// Accepted for k8s-dqlite compatibility; raftkine has no SQL connection pool.
    #[arg(long)]
    pub datastore_connection_max_idle_time: Option<String>,
    /// Accepted for k8s-dqlite compatibility; raftkine pushes watch events, it does not poll.
    #[arg(long)]
    pub watch_query_timeout: Option<String>,
    /// Accepted for k8s-dqlite compatibility; raftkine exports no OpenTelemetry traces.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub otel: Option<bool>,
    /// Accepted for k8s-dqlite compatibility; no meaning for raftkine.
    #[arg(long)]
    pub otel_listen: Option<String>,
    /// Accepted for k8s-dqlite compatibility; no meaning for raftkine.
    #[arg(long)]
    pub otel_dir: Option<String>,
    /// Accepted for k8s-dqlite compatibility; no meaning for raftkine.
    #[arg(long)]
    pub otel_span_name_filter: Option<String>,
    /// Accepted for k8s-dqlite compatibility; no meaning for raftkine.
    #[arg(long)]
    pub otel_span_min_duration_filter: Option<String>,
    /// Accepted for k8s-dqlite compatibility (its etcd-backed mode); no meaning for raftkine.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub etcd_mode: Option<bool>,
}

/// The lowest TLS version a listener accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TlsVersion {
    #[default]
    Tls12,
    Tls13,
}

fn parse_tls_version(s: &str) -> Result<TlsVersion, String> {
    match s {
        "" | "tls10" | "tls11" | "tls12" => Ok(TlsVersion::Tls12),
        "tls13" => Ok(TlsVersion::Tls13),
        other => Err(format!(
            "unsupported TLS version {other} (supported values are tls10, tls11, tls12, tls13)"
        )),
    }
}

impl DqliteFlags {
    /// One line per given flag that raftkine accepts but does not act on.
    pub fn ignored(&self) -> Vec<String> {
        let mut lines = vec![];
        let mut note = |given: bool, flag: &str, why: &str| {
            if given {
                lines.push(format!(
                    "flag --{flag} is accepted for k8s-dqlite compatibility and ignored: {why}"
                ));
            }
        };
        note(
            self.enable_tls == Some(false),
            "enable-tls=false",
            "peer traffic is always mutual TLS",
        );
        note(
            self.profiling.is_some(),
            "profiling",
            "Go profiling does not apply to raftkine",
        );
        note(
            self.profiling_listen.is_some(),
            "profiling-listen",
            "Go profiling does not apply to raftkine",
        );
        note(
            self.profiling_dir.is_some(),
            "profiling-dir",
            "Go profiling does not apply to raftkine",
        );
        note(
            self.disk_mode.is_some(),
            "disk-mode",
            "raftkine always keeps its data on disk",
        );
        let pool = "raftkine has no SQL connection pool";
        note(
            self.datastore_max_idle_connections.is_some(),
            "datastore-max-idle-connections",
            pool,
        );
        note(
            self.datastore_max_open_connections.is_some(),
            "datastore-max-open-connections",
            pool,
        );
        note(
            self.datastore_connection_max_lifetime.is_some(),
            "datastore-connection-max-lifetime",
            pool,
        );
        note(
            self.datastore_connection_max_idle_time.is_some(),
            "datastore-connection-max-idle-time",
            pool,
        );
        note(
            self.watch_query_timeout.is_some(),
            "watch-query-timeout",
            "raftkine pushes watch events from its apply path instead of polling",
        );
        let otel = "raftkine exports no OpenTelemetry traces";
        note(self.otel.is_some(), "otel", otel);
        note(self.otel_listen.is_some(), "otel-listen", otel);
        note(self.otel_dir.is_some(), "otel-dir", otel);
        note(
            self.otel_span_name_filter.is_some(),
            "otel-span-name-filter",
            otel,
        );
        note(
            self.otel_span_min_duration_filter.is_some(),
            "otel-span-min-duration-filter",
            otel,
        );
        note(
            self.etcd_mode.is_some(),
            "etcd-mode",
            "raftkine is always its own etcd-compatible store",
        );
        lines
    }

    pub fn min_tls_version(&self) -> TlsVersion {
        self.min_tls_version.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        flags: DqliteFlags,
    }

    #[test]
    fn go_style_boolean_and_value_flags_parse() {
        let cli = Cli::try_parse_from([
            "x",
            "--enable-tls=false",
            "--debug",
            "--min-tls-version=tls13",
            "--datastore-max-idle-connections=-1",
            "--datastore-connection-max-lifetime",
            "60s",
            "--otel",
        ])
        .expect("parses");
        assert_eq!(cli.flags.enable_tls, Some(false));
        assert_eq!(cli.flags.debug, Some(true));
        assert_eq!(cli.flags.min_tls_version(), TlsVersion::Tls13);
        let ignored = cli.flags.ignored();
        assert_eq!(ignored.len(), 4, "{ignored:?}");
        assert!(ignored.iter().any(|l| l.contains("--otel ")));
    }

    #[test]
    fn unknown_tls_version_is_refused_like_k8s_dqlite() {
        let err = Cli::try_parse_from(["x", "--min-tls-version=ssl3"]).expect_err("refused");
        assert!(err.to_string().contains("unsupported TLS version ssl3"));
    }
}
