//! Peer TLS: the cluster CA and member certificates (made automatically with rcgen), and the
//! rustls configurations of the peer port.
//!
//! Every member certificate names the fixed DNS name [`PEER_SERVER_NAME`], so members verify each
//! other by the cluster CA whatever their addresses. The peer server accepts connections without
//! a client certificate only for the Join call; everything else requires one signed by the CA.
//! A joining node does not know the CA yet: its token carries the CA's SHA-256 fingerprint, and
//! it accepts only a server whose chain ends in that CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::dqlite::flags::TlsVersion;
use crate::error::{Error, Result};

/// The DNS name in every member certificate; peers connect by it.
pub const PEER_SERVER_NAME: &str = "raftkine-peer";

/// PEM files of this member's peer identity, in `<storage-dir>/peer/`.
#[derive(Clone, Debug)]
pub struct PeerIdentity {
    pub ca_cert: String,
    pub ca_key: String,
    pub cert: String,
    pub key: String,
}

fn tls_err(e: impl std::fmt::Display) -> Error {
    Error::Config(format!("TLS: {e}"))
}

impl PeerIdentity {
    fn dir(storage_dir: &Path) -> PathBuf {
        storage_dir.join("peer")
    }

    /// Loads the identity from the storage dir, if it was made before.
    pub fn load(storage_dir: &Path) -> Result<Option<PeerIdentity>> {
        let dir = Self::dir(storage_dir);
        let read = |name: &str| std::fs::read_to_string(dir.join(name));
        match (
            read("ca.crt"),
            read("ca.key"),
            read("member.crt"),
            read("member.key"),
        ) {
            (Ok(ca_cert), Ok(ca_key), Ok(cert), Ok(key)) => Ok(Some(PeerIdentity {
                ca_cert,
                ca_key,
                cert,
                key,
            })),
            _ => Ok(None),
        }
    }

    /// Writes the identity (keys with mode 0600).
    pub fn save(&self, storage_dir: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = Self::dir(storage_dir);
        std::fs::create_dir_all(&dir)?;
        for (name, body, secret) in [
            ("ca.crt", &self.ca_cert, false),
            ("ca.key", &self.ca_key, true),
            ("member.crt", &self.cert, false),
            ("member.key", &self.key, true),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, body)?;
            if secret {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
        }
        Ok(())
    }

    /// An operator-provided CA in the peer dir (`ca.crt` + `ca.key`), with its member
    /// certificate if provided too, else one issued by that CA.
    pub fn load_user_ca(storage_dir: &Path, member_name: &str) -> Result<Option<PeerIdentity>> {
        let dir = Self::dir(storage_dir);
        let read = |name: &str| std::fs::read_to_string(dir.join(name));
        let (Ok(ca_cert), Ok(ca_key)) = (read("ca.crt"), read("ca.key")) else {
            return Ok(None);
        };
        let (cert, key) = match (read("member.crt"), read("member.key")) {
            (Ok(cert), Ok(key)) => (cert, key),
            _ => issue_member_cert(&ca_cert, &ca_key, member_name)?,
        };
        let identity = PeerIdentity {
            ca_cert,
            ca_key,
            cert,
            key,
        };
        // Fail now, not at the first peer connection, if the files do not fit together.
        peer_server_config(&identity, TlsVersion::default())?;
        Ok(Some(identity))
    }

    /// A k8s-dqlite storage dir's shared `cluster.crt`/`cluster.key` (every node of a MicroK8s
    /// cluster has the same pair): used as the cluster CA, with a member certificate issued
    /// from it at each start.
    pub fn from_cluster_files(
        storage_dir: &Path,
        member_name: &str,
    ) -> Result<Option<PeerIdentity>> {
        let read = |name: &str| std::fs::read_to_string(storage_dir.join(name));
        let (ca_cert, ca_key) = match (read("cluster.crt"), read("cluster.key")) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) | (_, Err(e)) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(tls_err(format!("cluster.crt/cluster.key: {e}")))
            }
            _ => return Ok(None),
        };
        Self::from_ca(ca_cert, ca_key, member_name)
            .map(Some)
            .map_err(|e| tls_err(format!("cluster.crt/cluster.key: {e}")))
    }

    /// An identity under a CA whose key this member holds: a member certificate is issued
    /// from it, and the pair is checked to fit before any peer connection.
    pub fn from_ca(ca_cert: String, ca_key: String, member_name: &str) -> Result<PeerIdentity> {
        let (cert, key) = issue_member_cert(&ca_cert, &ca_key, member_name)?;
        let identity = PeerIdentity {
            ca_cert,
            ca_key,
            cert,
            key,
        };
        peer_server_config(&identity, TlsVersion::default())?;
        Ok(identity)
    }

    /// A new cluster CA and a certificate for the first member.
    pub fn bootstrap(cluster_id: u64, member_name: &str) -> Result<PeerIdentity> {
        let ca_key = KeyPair::generate().map_err(tls_err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
        params.distinguished_name.push(
            DnType::CommonName,
            format!("raftkine cluster {cluster_id:016x} CA"),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_after = rcgen::date_time_ymd(2125, 1, 1);
        let ca_cert = params.self_signed(&ca_key).map_err(tls_err)?;
        let ca_cert = ca_cert.pem();
        let ca_key = ca_key.serialize_pem();
        let (cert, key) = issue_member_cert(&ca_cert, &ca_key, member_name)?;
        Ok(PeerIdentity {
            ca_cert,
            ca_key,
            cert,
            key,
        })
    }

    /// SHA-256 of the CA certificate (DER), hex: what join tokens carry.
    pub fn ca_fingerprint(&self) -> Result<String> {
        let der = first_cert_der(&self.ca_cert)?;
        Ok(hex(&Sha256::digest(der.as_ref())))
    }
}

/// A certificate for a member, signed by the cluster CA. Returns (cert PEM, key PEM).
pub fn issue_member_cert(ca_cert: &str, ca_key: &str, name: &str) -> Result<(String, String)> {
    let ca_key = KeyPair::from_pem(ca_key).map_err(tls_err)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert, ca_key).map_err(tls_err)?;
    let key = KeyPair::generate().map_err(tls_err)?;
    let mut params = CertificateParams::new(vec![PEER_SERVER_NAME.to_string()]).map_err(tls_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("raftkine member {name}"));
    params.not_after = rcgen::date_time_ymd(2125, 1, 1);
    let cert = params.signed_by(&key, &issuer).map_err(tls_err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(tls_err)
}

fn first_cert_der(pem: &str) -> Result<CertificateDer<'static>> {
    certs(pem)?
        .into_iter()
        .next()
        .ok_or_else(|| tls_err("no certificate in PEM"))
}

fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(tls_err)?
        .ok_or_else(|| tls_err("no private key in PEM"))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca_pem)? {
        roots.add(cert).map_err(tls_err)?;
    }
    Ok(roots)
}

/// The peer port's server config: presents this member's certificate (with the CA in the
/// chain, for joiners) and verifies client certificates by the CA when one is presented.
pub fn peer_server_config(id: &PeerIdentity, min_version: TlsVersion) -> Result<ServerConfig> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&id.ca_cert)?), provider())
            .allow_unauthenticated()
            .build()
            .map_err(tls_err)?;
    let mut chain = certs(&id.cert)?;
    chain.extend(certs(&id.ca_cert)?);
    let versions: &[&rustls::SupportedProtocolVersion] = match min_version {
        TlsVersion::Tls12 => rustls::DEFAULT_VERSIONS,
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private_key(&id.key)?)
        .map_err(tls_err)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A member's client config towards other members: verifies them by the CA, presents its cert.
pub fn peer_client_config(id: &PeerIdentity) -> Result<ClientConfig> {
    peer_client_config_with(id, None)
}

/// [`peer_client_config`] with a TLS session cache of `session_cache` entries (k8s-dqlite's
/// `--tls-client-session-cache-size`; 0 turns resumption off; `None` keeps rustls' default).
pub fn peer_client_config_with(
    id: &PeerIdentity,
    session_cache: Option<usize>,
) -> Result<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_root_certificates(roots(&id.ca_cert)?)
        .with_client_auth_cert(certs(&id.cert)?, private_key(&id.key)?)
        .map_err(tls_err)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    match session_cache {
        Some(0) => config.resumption = rustls::client::Resumption::disabled(),
        Some(n) => config.resumption = rustls::client::Resumption::in_memory_sessions(n),
        None => {}
    }
    Ok(config)
}

/// A joining node's client config: trusts a server only if its chain ends in the CA whose
/// fingerprint (a hex prefix of at least 32 digits) the join token carries.
pub fn join_client_config(ca_fingerprint: &str) -> Result<ClientConfig> {
    if ca_fingerprint.len() < 32 {
        return Err(tls_err(
            "the CA fingerprint in a join token has at least 32 hex digits",
        ));
    }
    let verifier = PinnedCaVerifier {
        fingerprint: ca_fingerprint.to_ascii_lowercase(),
        provider: provider(),
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

#[derive(Debug)]
struct PinnedCaVerifier {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| hex(&Sha256::digest(c.as_ref())).starts_with(&self.fingerprint))
            .ok_or_else(|| {
                rustls::Error::General(
                    "the server's certificate does not chain to the cluster CA whose fingerprint \
                     the join token carries (wrong token, or not the cluster it was made for)"
                        .into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operator_provided_ca_is_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(PeerIdentity::load_user_ca(dir.path(), "n1")
            .expect("ok")
            .is_none());
        let theirs = PeerIdentity::bootstrap(9, "x").expect("identity");
        std::fs::create_dir_all(dir.path().join("peer")).expect("mkdir");
        std::fs::write(dir.path().join("peer/ca.crt"), &theirs.ca_cert).expect("write");
        std::fs::write(dir.path().join("peer/ca.key"), &theirs.ca_key).expect("write");
        let used = PeerIdentity::load_user_ca(dir.path(), "n1")
            .expect("valid")
            .expect("found");
        assert_eq!(used.ca_fingerprint().ok(), theirs.ca_fingerprint().ok());
    }

    #[test]
    fn bootstrap_makes_a_ca_and_a_member_certificate_that_configs_accept() {
        let id = PeerIdentity::bootstrap(42, "n1").expect("identity");
        assert!(id.ca_cert.contains("BEGIN CERTIFICATE"));
        let fp = id.ca_fingerprint().expect("fingerprint");
        assert_eq!(fp.len(), 64);
        peer_server_config(&id, TlsVersion::Tls13).expect("server config");
        peer_client_config(&id).expect("client config");
        join_client_config(&fp).expect("join config");
        let (cert, key) = issue_member_cert(&id.ca_cert, &id.ca_key, "n2").expect("issue");
        assert!(cert.contains("BEGIN CERTIFICATE") && key.contains("PRIVATE KEY"));
    }
}
