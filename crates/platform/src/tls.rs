//! TLS for a listener: rustls from PEM files, HTTP/2 and HTTP/1.1 offered by ALPN, and a
//! certificate that can be swapped while serving (a reload reads the files again; connections
//! already open keep the one they started with).

use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The TLS settings a listener hands to each new connection.
#[derive(Clone)]
pub struct Tls(Arc<RwLock<Arc<ServerConfig>>>);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Reads a certificate chain and its private key from PEM files.
    pub fn from_pem_files(cert: &str, key: &str) -> Result<Self, String> {
        Ok(Tls(Arc::new(RwLock::new(Arc::new(load(cert, key)?)))))
    }

    /// Reads the files again and uses them for new connections; on error the old certificate
    /// stays.
    pub fn reload(&self, cert: &str, key: &str) -> Result<(), String> {
        let config = Arc::new(load(cert, key)?);
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

fn load(cert: &str, key: &str) -> Result<ServerConfig, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{cert}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{cert}: no certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("{cert}: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
