//! The routes file of `hatoba proxy --routes FILE`: run the proxy alone over
//! fixed backends, for benchmarks and for testing it by itself.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! admin = "127.0.0.1:9901"     # optional: /metrics, /routes, /healthz
//! service = "web"
//! threads = 2                  # optional, default one per core
//! sticky = false               # optional
//!
//! [tls]                        # optional: serve HTTPS (h2 and http/1.1 by ALPN)
//! cert = "cert.pem"            # PEM chain, leaf first; relative to this file's directory
//! key = "key.pem"              # PEM private key: PKCS#8, RSA or SEC1
//!
//! [[group]]
//! role = "stable"              # stable | canary | preview
//! version = "v1"
//! weight = 90
//! backends = ["127.0.0.1:9001", "127.0.0.1:9002"]
//!
//! [[group]]
//! role = "canary"
//! version = "v2"
//! weight = 10
//! backends = ["127.0.0.1:9003"]
//! ```
//!
//! Under `hatoba up` the controller builds route tables itself; this file
//! format exists only for the standalone proxy.
//!
//! [`RoutesFile::parse`] reads text only: it neither opens the `[tls]` files
//! nor resolves their paths; the caller, which knows where the file is, does
//! both with [`TlsConfig::relative_to`] and [`TlsConfig::load`].

use crate::table::{GroupSpec, RouteSpec};
use crate::tls::TlsConfig;
use hatoba_metrics::Role;
use serde::Deserialize;
use std::net::SocketAddr;

/// A parsed routes file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesFile {
    /// Where the proxy listens.
    pub listen: SocketAddr,
    /// Where the admin endpoints listen, if anywhere.
    #[serde(default)]
    pub admin: Option<SocketAddr>,
    /// The service name (metrics label).
    pub service: String,
    /// Proxy threads; 0 or absent: one per core.
    #[serde(default)]
    pub threads: usize,
    /// Sticky sessions.
    #[serde(default)]
    pub sticky: bool,
    /// The groups.
    #[serde(rename = "group", default)]
    pub groups: Vec<GroupEntry>,
    /// TLS termination, if wanted; paths as written (relative to the file).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// One `[[group]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    /// `stable`, `canary` or `preview`.
    pub role: RoleName,
    /// The version its backends run.
    pub version: String,
    /// Percent of traffic.
    pub weight: u8,
    /// The backends.
    pub backends: Vec<SocketAddr>,
}

/// A role as written in the file.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    /// The version serving users.
    Stable,
    /// The new version under test.
    Canary,
    /// The idle colour of a blue-green deployment.
    Preview,
}

/// Why a routes file can not be used.
#[derive(Debug, thiserror::Error)]
pub enum RoutesFileError {
    /// Not valid TOML, or not the expected shape (the message has line and column).
    #[error("{0}")]
    Syntax(String),
    /// Valid TOML, but not routable.
    #[error(transparent)]
    Routes(#[from] crate::table::RouteError),
}

impl RoutesFile {
    /// Parses and checks a routes file's text.
    pub fn parse(text: &str) -> Result<RoutesFile, RoutesFileError> {
        let file: RoutesFile = toml::from_str(text)
            .map_err(|e| RoutesFileError::Syntax(e.to_string().trim_end().to_owned()))?;
        file.route_spec().validate()?;
        Ok(file)
    }

    /// The route spec it describes.
    pub fn route_spec(&self) -> RouteSpec {
        RouteSpec {
            service: self.service.clone(),
            sticky: self.sticky,
            groups: self
                .groups
                .iter()
                .map(|g| GroupSpec {
                    role: match g.role {
                        RoleName::Stable => Role::Stable,
                        RoleName::Canary => Role::Canary,
                        RoleName::Preview => Role::Preview,
                    },
                    version: g.version.clone(),
                    weight: g.weight,
                    backends: g.backends.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let ok = "listen = \"127.0.0.1:8080\"\nservice = \"web\"\n[[group]]\nrole = \"stable\"\nversion = \"v1\"\nweight = 100\nbackends = [\"127.0.0.1:9001\"]\n";
        let f = RoutesFile::parse(ok).unwrap();
        assert_eq!(f.route_spec().groups[0].backends.len(), 1);
        let typo = ok.replace("weight", "wieght");
        assert!(
            RoutesFile::parse(&typo)
                .unwrap_err()
                .to_string()
                .contains("unknown field `wieght`")
        );
        let bad_weights = ok.replace("weight = 100", "weight = 90");
        assert_eq!(
            RoutesFile::parse(&bad_weights).unwrap_err().to_string(),
            "group weights add up to 90, expected 100"
        );
        let bad_addr = ok.replace("127.0.0.1:9001", "nowhere");
        assert!(
            RoutesFile::parse(&bad_addr)
                .unwrap_err()
                .to_string()
                .contains("line 7")
        );
    }

    #[test]
    fn tls_table_is_optional_and_checked() {
        let base = "listen = \"127.0.0.1:8443\"\nservice = \"web\"\n[[group]]\nrole = \"stable\"\nversion = \"v1\"\nweight = 100\nbackends = [\"127.0.0.1:9001\"]\n";
        assert!(RoutesFile::parse(base).unwrap().tls.is_none());
        let with =
            format!("{base}[tls]\ncert = \"certs/cert.pem\"\nkey = \"/etc/hatoba/key.pem\"\n");
        let tls = RoutesFile::parse(&with).unwrap().tls.unwrap();
        let resolved = tls.relative_to(std::path::Path::new("/srv/proxy"));
        assert_eq!(
            resolved.cert,
            std::path::Path::new("/srv/proxy/certs/cert.pem")
        );
        assert_eq!(resolved.key, std::path::Path::new("/etc/hatoba/key.pem"));
        let missing_key = format!("{base}[tls]\ncert = \"cert.pem\"\n");
        assert!(
            RoutesFile::parse(&missing_key)
                .unwrap_err()
                .to_string()
                .contains("missing field `key`")
        );
        let typo = format!("{base}[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nkeys = \"x\"\n");
        assert!(
            RoutesFile::parse(&typo)
                .unwrap_err()
                .to_string()
                .contains("unknown field `keys`")
        );
    }
}
