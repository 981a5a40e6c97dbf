//! Optional TLS for the gateway (`--tls`): a self-signed certificate made at start-up, with
//! ALPN offering `h2` then `http/1.1`, as api.push.apple.com and Google's front ends do. The
//! certificate (not its key) is written to the credentials directory so the proxy can trust it.
//!
//! rustls with the `ring` provider, chosen explicitly so it does not depend on which crypto
//! provider other crates in the process enable.

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The file the certificate is written to.
pub const CERT_FILE: &str = "gateway-cert.pem";

/// A TLS acceptor and the PEM of its certificate.
pub struct SelfSigned {
    pub acceptor: TlsAcceptor,
    pub cert_pem: String,
}

/// A fresh self-signed certificate for `hosts` (DNS names or IP addresses).
pub fn self_signed(hosts: Vec<String>) -> Result<SelfSigned, String> {
    let certified = rcgen::generate_simple_self_signed(hosts).map_err(|e| e.to_string())?;
    let cert_pem = certified.cert.pem();
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(SelfSigned {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        cert_pem,
    })
}
