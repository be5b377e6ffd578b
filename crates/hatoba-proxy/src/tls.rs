//! TLS termination: a certificate chain and its key, loaded from PEM, made
//! into a rustls server configuration that the listeners hand each accepted
//! connection to.
//!
//! The crypto is rustls with the `ring` provider, installed explicitly here
//! (no process-wide default is read or set). ALPN offers `h2` and
//! `http/1.1`; the listener serves whichever the client picked (hyper's auto
//! builder tells them apart by the HTTP/2 preface).
//!
//! Keys may be PKCS#8 (`BEGIN PRIVATE KEY`), RSA (`BEGIN RSA PRIVATE KEY`) or
//! SEC1 (`BEGIN EC PRIVATE KEY`); the first key in the key PEM is used. The
//! certificate PEM holds the chain, leaf first.

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// Where the certificate chain and key are (the `[tls]` table of a routes
/// file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, RSA or SEC1).
    pub key: PathBuf,
}

impl TlsConfig {
    /// The same files, with relative paths taken relative to `dir` (the
    /// directory of the file that named them). Absolute paths are kept.
    pub fn relative_to(&self, dir: &Path) -> TlsConfig {
        TlsConfig {
            cert: dir.join(&self.cert),
            key: dir.join(&self.key),
        }
    }

    /// Reads both files and builds the server configuration.
    pub fn load(&self) -> Result<TlsSettings, TlsError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|err| TlsError::Read {
                what,
                path: path.to_owned(),
                err,
            })
        };
        let cert_pem = read("certificate", &self.cert)?;
        let key_pem = read("key", &self.key)?;
        build(
            &cert_pem,
            &format!("certificate file `{}`", self.cert.display()),
            &key_pem,
            &format!("key file `{}`", self.key.display()),
        )
    }
}

/// A loaded certificate and key, ready to terminate TLS. Cheap to clone.
///
/// Set it as [`ProxyOptions::tls`](crate::ProxyOptions::tls) to serve HTTPS;
/// its presence is also what makes the proxy send `X-Forwarded-Proto: https`.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    config: Arc<ServerConfig>,
}

impl TlsSettings {
    /// An acceptor for one listener thread.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.config))
    }
}

/// Builds TLS settings from PEM text: `cert_pem` holds the chain (leaf
/// first), `key_pem` the private key. Errors call them "the certificate
/// PEM" and "the key PEM"; [`TlsConfig::load`] names the files instead.
pub fn load_tls(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsSettings, TlsError> {
    build(cert_pem, "the certificate PEM", key_pem, "the key PEM")
}

/// Why TLS can not be set up. Each message names the file (or PEM) at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} file `{}`: {err}", path.display())]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        err: std::io::Error,
    },
    /// A PEM section is broken (no end line, bad base64).
    #[error("{file} is not valid PEM: {reason}")]
    BadPem {
        /// The file (or PEM) at fault.
        file: String,
        /// What is broken.
        reason: String,
    },
    /// The certificate PEM has no `CERTIFICATE` section.
    #[error("{file} holds no certificate (expected a `-----BEGIN CERTIFICATE-----` section)")]
    NoCertificate {
        /// The file (or PEM) at fault.
        file: String,
    },
    /// The key PEM has no private key section.
    #[error(
        "{file} holds no private key (expected a `-----BEGIN PRIVATE KEY-----`, \
         `-----BEGIN RSA PRIVATE KEY-----` or `-----BEGIN EC PRIVATE KEY-----` section)"
    )]
    NoKey {
        /// The file (or PEM) at fault.
        file: String,
    },
    /// The key is not a key rustls (ring) can use.
    #[error("{file} holds a private key that can not be used: {reason}")]
    InvalidKey {
        /// The file (or PEM) at fault.
        file: String,
        /// What rustls said.
        reason: String,
    },
    /// The leaf certificate can not be parsed.
    #[error("{file} holds an invalid certificate: {reason}")]
    InvalidCertificate {
        /// The file (or PEM) at fault.
        file: String,
        /// What rustls said.
        reason: String,
    },
    /// The key is not the leaf certificate's key.
    #[error("the private key in {key_file} does not match the certificate in {cert_file}")]
    KeyMismatch {
        /// The certificate file (or PEM).
        cert_file: String,
        /// The key file (or PEM).
        key_file: String,
    },
    /// The crypto provider refused the protocol versions (not expected with ring).
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

fn build(
    cert_pem: &[u8],
    cert_file: &str,
    key_pem: &[u8],
    key_file: &str,
) -> Result<TlsSettings, TlsError> {
    let bad_pem = |file: &str, e: pem::Error| TlsError::BadPem {
        file: file.to_owned(),
        reason: e.to_string(),
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(cert_file, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            file: cert_file.to_owned(),
        });
    }
    let key = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(k) => k,
        Err(pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey {
                file: key_file.to_owned(),
            });
        }
        Err(e) => return Err(bad_pem(key_file, e)),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::InvalidKey {
            file: key_file.to_owned(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        // A key that can not tell its public half: nothing to compare.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                cert_file: cert_file.to_owned(),
                key_file: key_file.to_owned(),
            });
        }
        Err(e) => {
            return Err(TlsError::InvalidCertificate {
                file: cert_file.to_owned(),
                reason: e.to_string(),
            });
        }
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(OneCert(Arc::new(certified))));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsSettings {
        config: Arc::new(config),
    })
}

/// The same certificate for every client, whatever name it asked for.
#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}
