//! Test certificates, made in-process with rcgen: a CA and a server certificate for
//! 127.0.0.1 and localhost, signed by it, written as PEM files into a temporary folder.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// PEM files of a CA and a server certificate it signed; the folder goes with the last
/// clone.
#[derive(Debug, Clone)]
pub struct Certificates {
    /// The CA's certificate: what clients trust (`SSL_CERT_FILE`).
    pub ca_cert: PathBuf,
    /// The server's certificate, for 127.0.0.1 and localhost.
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
    _dir: Arc<tempfile::TempDir>,
}

impl Certificates {
    /// A fresh CA and a server certificate signed by it.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder for certificates");
        let mut ca_params = CertificateParams::new(Vec::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "elastic-cart test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("a CA key"))
            .expect("a self-signed CA");
        let server_key = KeyPair::generate().expect("a server key");
        let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("server parameters")
            .signed_by(&server_key, &*ca)
            .expect("a server certificate");
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("writing a certificate file");
            path
        };
        Self {
            ca_cert: write("ca.pem", ca.pem()),
            server_cert: write("server.pem", server.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            _dir: Arc::new(dir),
        }
    }
}

impl Default for Certificates {
    fn default() -> Self {
        Self::new()
    }
}
