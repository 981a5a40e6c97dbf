//! TLS for every outbound HTTP client of the product, built in one place: the proxy's upstream
//! watchers, the origin's webhook deliveries, the push providers' transport, and the clients
//! and tester toolkit in the root package.
//!
//! * **rustls on the `ring` provider**, chosen explicitly (never aws-lc, never OpenSSL).
//!   reqwest is built with `rustls-no-provider`, so a client built *without* this module would
//!   have no crypto provider: [`install_default_provider`] installs ring as the process default
//!   (idempotent), and every builder here calls it, so even a plain `reqwest::Client::new()`
//!   later in the process works.
//! * **Trust**: Mozilla's root program (the `webpki-roots` crate, compiled in, so a distroless
//!   image needs no CA bundle) plus the PEM certificates of an optional extra CA file
//!   (`tls.extra_ca_path`): a private PKI in production, a test CA in the tests.
//! * **Errors**: [`describe_error`] walks an error's source chain to the end (reqwest's own
//!   message says only "error sending request"), and names a certificate problem plainly
//!   ([`certificate_problem`]) so a handoff or a webhook attempt fails with a reason an operator
//!   can act on.
//!
//! The servers themselves speak plain HTTP: TLS for inbound traffic ends at the load balancer
//! (see docs/deployment.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

/// `[tls]` in both servers' settings: what outbound TLS trusts beyond Mozilla's roots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// A PEM file of extra CA certificates trusted for outbound HTTPS (upstream streams,
    /// webhook targets), added to Mozilla's roots. Default: none.
    pub extra_ca_path: Option<PathBuf>,
}

/// Why outbound TLS could not be set up (a bad extra CA file).
#[derive(Debug, thiserror::Error)]
#[error("tls.extra_ca_path {path}: {reason}")]
pub struct TlsError {
    path: String,
    reason: String,
}

impl TlsError {
    /// An error about the CA file at `path`.
    pub fn new(path: &Path, reason: &str) -> TlsError {
        TlsError {
            path: path.display().to_string(),
            reason: reason.to_owned(),
        }
    }
}

/// Installs rustls' `ring` provider as the process default, once. Needed because reqwest is
/// built without a provider of its own: a client built with reqwest's default TLS setup asks
/// for the process default (and panics without one).
pub fn install_default_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first (by a library): leave it.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The root store: Mozilla's roots plus every certificate in `extra_ca` (PEM).
///
/// Errors: the file cannot be read, holds no certificate, or a certificate is malformed.
pub fn root_store(extra_ca: Option<&Path>) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_ca {
        let bad = |reason: String| TlsError {
            path: path.display().to_string(),
            reason,
        };
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("no PEM certificate in the file".into()));
        }
    }
    Ok(roots)
}

/// A rustls client configuration on `ring` trusting [`root_store`]`(extra_ca)`, TLS 1.2 and
/// 1.3, no client certificate. ALPN is left to the HTTP client that uses it.
pub fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    install_default_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            path: "-".into(),
            reason: format!("TLS versions: {e}"),
        })?;
    Ok(builder
        .with_root_certificates(root_store(extra_ca)?)
        .with_no_client_auth())
}

/// A reqwest client builder with the product's TLS ([`client_config`]); the caller adds its
/// timeouts, redirect policy and so on.
// The one place a reqwest builder is made (`.clippy.toml` sends everyone else here).
#[allow(clippy::disallowed_methods)]
pub fn reqwest_builder(extra_ca: Option<&Path>) -> Result<reqwest::ClientBuilder, TlsError> {
    Ok(reqwest::Client::builder().tls_backend_preconfigured(client_config(extra_ca)?))
}

/// A ready reqwest client with the product's TLS and reqwest's defaults otherwise.
///
/// Errors: as [`client_config`].
pub fn http_client(extra_ca: Option<&Path>) -> Result<reqwest::Client, TlsError> {
    reqwest_builder(extra_ca)?.build().map_err(|e| TlsError {
        path: extra_ca.map_or_else(|| "-".into(), |p| p.display().to_string()),
        reason: describe_error(&e),
    })
}

/// The certificate problem somewhere in `e`'s source chain, as a sentence naming it
/// (`"TLS certificate problem: … (unknown issuer)"`), or `None` when the error is not about a
/// certificate.
pub fn certificate_problem(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return certificate_sentence(tls);
        }
        // `io::Error::source` skips the error it wraps (it returns the wrapped error's own
        // source), and the TLS stack hands rustls' error up inside (nested) `io::Error`s: step
        // into the wrapped error instead.
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) => match io.get_ref() {
                Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                None => None,
            },
            None => err.source(),
        };
    }
    None
}

fn certificate_sentence(e: &rustls::Error) -> Option<String> {
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(cert) = e else {
        return None;
    };
    let what = match cert {
        C::UnknownIssuer => {
            "the server's certificate is not signed by a trusted CA (unknown issuer); \
             a private CA goes in tls.extra_ca_path"
                .to_owned()
        }
        C::Expired | C::ExpiredContext { .. } => "the server's certificate has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "the server's certificate is not valid yet".into()
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "the server's certificate is not valid for the host name".into()
        }
        C::Revoked => "the server's certificate is revoked".into(),
        C::BadSignature => "the server's certificate has a bad signature".into(),
        C::BadEncoding => "the server's certificate is malformed".into(),
        other => format!("the server's certificate was refused ({other:?})"),
    };
    Some(format!("TLS certificate problem: {what}"))
}

/// `e` and its causes on one line, `": "`-separated, with a certificate problem named first
/// when there is one. Never includes a URL's query (reqwest's errors are passed without it).
pub fn describe_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        // hyper and reqwest repeat their causes' messages; keep each once.
        if !chain.contains(&text) {
            chain.push_str(": ");
            chain.push_str(&text);
        }
        source = s.source();
    }
    match certificate_problem(e) {
        Some(problem) => format!("{problem} ({chain})"),
        None => chain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_ca_must_hold_a_certificate() {
        let dir = std::env::temp_dir().join(format!("ssepush-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let err = client_config(Some(&empty)).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        let missing = dir.join("missing.pem");
        assert!(client_config(Some(&missing)).is_err());
        assert!(client_config(None).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_certificate_error_is_found_through_an_io_error() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::other(std::io::Error::other(tls));
        let problem = certificate_problem(&io).unwrap();
        assert!(problem.contains("unknown issuer"), "{problem}");
        let plain = std::io::Error::other("connection refused");
        assert_eq!(certificate_problem(&plain), None);
        assert_eq!(describe_error(&plain), "connection refused");
    }
}
