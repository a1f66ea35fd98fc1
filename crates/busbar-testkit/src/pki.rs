//! Throwaway certificates for TLS tests: a CA, a server certificate for `127.0.0.1` and
//! `localhost`, a client certificate, and an unrelated CA whose trust must make verification
//! fail. Each set lives in its own temporary directory (removed on drop) as PEM files, so a
//! broker process can load them, and in memory as DER, so a server written in a test can.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::TestkitError;

/// A certificate set made for one test.
///
/// Files in [`dir`](Pki::dir): `ca.pem`, `other-ca.pem`, `server.pem`, `server.key`,
/// `client.pem`, `client.key`.
pub struct Pki {
    dir: PathBuf,
    server_cert: Vec<u8>,
    server_key: Vec<u8>,
}

impl Pki {
    /// Makes a new set.
    pub fn make() -> Result<Pki, TestkitError> {
        let dir = std::env::temp_dir().join(format!("busbar-pki-{}", crate::unique_name()));
        let prepare = |path: &Path, source| TestkitError::Prepare { path: path.into(), source };
        std::fs::create_dir_all(&dir).map_err(|e| prepare(&dir, e))?;
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| prepare(&path, e))
        };
        let ca = ca("busbar test CA")?;
        write("ca.pem", ca.pem())?;
        write("other-ca.pem", crate::pki::ca("someone else's CA")?.pem())?;
        let mut server = None;
        for (name, sans) in [
            ("server", vec!["127.0.0.1".to_owned(), "localhost".to_owned()]),
            ("client", vec!["client".to_owned()]),
        ] {
            let key = KeyPair::generate().map_err(certificate)?;
            let params = CertificateParams::new(sans).map_err(certificate)?;
            let cert = params.signed_by(&key, &ca).map_err(certificate)?;
            write(&format!("{name}.pem"), cert.pem())?;
            write(&format!("{name}.key"), key.serialize_pem())?;
            if name == "server" {
                server = Some((cert.der().to_vec(), key.serialize_der()));
            }
        }
        let (server_cert, server_key) = server.unwrap_or_default();
        Ok(Pki { dir, server_cert, server_key })
    }

    /// The directory holding the PEM files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of one of the files, e.g. `pki.path("ca.pem")`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The server's certificate chain and key, for a TLS server written in a test.
    pub fn server_identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![CertificateDer::from(self.server_cert.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone())),
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn certificate(e: rcgen::Error) -> TestkitError {
    TestkitError::Certificate(e.to_string())
}

fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, TestkitError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(certificate)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().map_err(certificate)?;
    CertifiedIssuer::self_signed(params, key).map_err(certificate)
}
