//! TLS serving: server certificate, and client certificates made mandatory by a trusted CA
//! (kube-apiserver's --etcd-certfile/--etcd-keyfile/--etcd-cafile). Certificates are made with
//! the openssl CLI. Against etcd the same certificates and client set-up are checked on an etcd
//! started here with its TLS flags; against raftkine the `--listen tcp://` listener of
//! `support::Server` serves TLS when `--cert-file/--key-file` are given.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::common::*;

struct Certs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Certs {
    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.file(name)).unwrap()
    }
    fn arg(&self, name: &str) -> String {
        self.file(name).to_str().unwrap().to_string()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, plus an
/// unrelated CA with its own client certificate.
fn make_certs() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let run = |cmd: String| {
        let args: Vec<&str> = cmd.split_whitespace().collect();
        openssl(&p, &args);
    };
    for ca in ["ca", "other-ca"] {
        run(format!(
            "req -x509 {ec} -keyout {ca}.key -out {ca}.crt -days 2 -subj /CN=raftkine-test-{ca}"
        ));
    }
    std::fs::write(
        p.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    std::fs::write(p.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, ca, ext) in [
        ("server", "ca", "server.ext"),
        ("client", "ca", "client.ext"),
        ("rogue", "other-ca", "client.ext"),
    ] {
        run(format!(
            "req {ec} -keyout {name}.key -out {name}.csr -subj /CN=localhost"
        ));
        run(format!(
            "x509 -req -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -CAcreateserial \
             -out {name}.crt -days 2 -extfile {ext}"
        ));
    }
    Certs { _dir: dir, path: p }
}

/// A TLS server: raftkine with its flags (TLS on its `--listen tcp://` listener), or etcd
/// started here with https URLs and the same certificates.
fn start_tls(certs: &Certs, client_ca: bool) -> AnyServer {
    let (cert, key, ca) = (
        certs.arg("server.crt"),
        certs.arg("server.key"),
        certs.arg("ca.crt"),
    );
    let mut args = vec!["--cert-file", &cert, "--key-file", &key];
    if client_ca {
        args.extend(["--trusted-ca-file", &ca]);
    }
    let mut etcd_args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    if client_ca {
        etcd_args.push("--client-cert-auth".into());
    }
    AnyServer::start(&args, &etcd_args, "https")
}

/// Connects and does one put/get round trip; Err if any step fails.
async fn round_trip(url: String, tls: Option<TlsOptions>) -> Result<(), String> {
    let mut opts = ConnectOptions::new().with_timeout(Duration::from_secs(5));
    if let Some(t) = tls {
        opts = opts.with_tls(t);
    }
    let mut c = Client::connect([url], Some(opts))
        .await
        .map_err(|e| e.to_string())?;
    c.put("tls-key", "v", None)
        .await
        .map_err(|e| e.to_string())?;
    let g = c.get("tls-key", None).await.map_err(|e| e.to_string())?;
    assert_eq!(values_of(g.kvs()), ["v"]);
    Ok(())
}

#[tokio::test]
async fn tls_with_mandatory_client_certificates() {
    let certs = make_certs();
    let server = start_tls(&certs, true);
    let url = format!("https://127.0.0.1:{}", server.port());
    let ca = Certificate::from_pem(certs.read("ca.crt"));
    let good = TlsOptions::new()
        .ca_certificate(ca.clone())
        .identity(Identity::from_pem(
            certs.read("client.crt"),
            certs.read("client.key"),
        ));
    round_trip(url.clone(), Some(good.clone()))
        .await
        .expect("mutual TLS with a trusted client certificate");
    // The DNS name in the certificate works too.
    round_trip(url.clone(), Some(good.domain_name("localhost")))
        .await
        .expect("TLS with SNI localhost");

    // No client certificate: refused.
    let no_cert = TlsOptions::new().ca_certificate(ca.clone());
    assert!(
        round_trip(url.clone(), Some(no_cert)).await.is_err(),
        "a client without certificate must be refused"
    );
    // A client certificate from another CA: refused.
    let rogue = TlsOptions::new()
        .ca_certificate(ca.clone())
        .identity(Identity::from_pem(
            certs.read("rogue.crt"),
            certs.read("rogue.key"),
        ));
    assert!(
        round_trip(url.clone(), Some(rogue)).await.is_err(),
        "a client certificate of an untrusted CA must be refused"
    );
    // Plain-text gRPC on the TLS port: refused.
    assert!(
        round_trip(format!("http://127.0.0.1:{}", server.port()), None)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn tls_server_certificate_only() {
    let certs = make_certs();
    let server = start_tls(&certs, false);
    let url = format!("https://127.0.0.1:{}", server.port());
    let ca = Certificate::from_pem(certs.read("ca.crt"));
    round_trip(url.clone(), Some(TlsOptions::new().ca_certificate(ca)))
        .await
        .expect("TLS without client certificate");
    // A client that does not trust the server's CA fails.
    let other = Certificate::from_pem(certs.read("other-ca.crt"));
    assert!(
        round_trip(url, Some(TlsOptions::new().ca_certificate(other)))
            .await
            .is_err()
    );
}
