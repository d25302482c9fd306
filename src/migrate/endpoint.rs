//! A gRPC channel to an etcd-compatible endpoint: `http://H:P`, `H:P`, `https://H:P` (with
//! etcdctl's `--cacert`, `--cert`, `--key`), or `unix://PATH` (kine's and raftkine's sockets).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::error::{Error, Result};

/// etcdctl's TLS options for an https endpoint.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsFiles {
    /// CA bundle (PEM) that verifies the endpoint's certificate.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
}

fn read(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// Connects to `endpoint`.
pub async fn connect(endpoint: &str, tls: &TlsFiles) -> Result<Channel> {
    if !endpoint.starts_with("https://") {
        return crate::cli::connect(endpoint).await;
    }
    let mut config = ClientTlsConfig::new();
    if let Some(ca) = &tls.cacert {
        config = config.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| Error::Config(format!("endpoint {endpoint:?}: {e}")))?
        .tls_config(config)
        .map_err(|e| Error::Config(format!("TLS for {endpoint}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| Error::Unavailable(format!("cannot reach {endpoint}: {e}")))
}
