//! HTTPS in the tests: a test certificate authority made with rcgen, and a TLS-terminating
//! front (tokio-rustls on ring) that forwards each decrypted connection, byte for byte, to a
//! real plain-HTTP server — as a load balancer does in front of the product in production.
//!
//! [`TestCa::new`] writes the CA's certificate (PEM) to a fresh temporary directory: that file
//! is what `tls.extra_ca_path` points at. [`TlsFront::start`] serves a leaf certificate signed
//! by that CA for `127.0.0.1` and `localhost`, offering only `http/1.1` over ALPN (the servers
//! behind speak HTTP/1.1).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ssepush::device::stack::unique_name;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A test CA and one server certificate it signed. Dropping it removes its directory.
pub struct TestCa {
    /// The CA's certificate as PEM, written to a file: the extra CA a client must trust.
    pub ca_path: PathBuf,
    dir: PathBuf,
    acceptor: TlsAcceptor,
}

impl TestCa {
    /// A fresh CA (`CN=ssepush test CA`) and a leaf for `127.0.0.1` and `localhost`.
    pub fn new() -> TestCa {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "ssepush test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();

        let mut leaf_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "ssepush test server");
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_cert = leaf_params.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();

        let dir = std::env::temp_dir().join(unique_name("ssepush-test-ca"));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();

        let chain: Vec<CertificateDer<'static>> =
            vec![leaf_cert.der().clone(), ca_cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TestCa {
            ca_path,
            dir,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS-terminating front on an ephemeral loopback port; each connection is decrypted and
/// piped to `backend`. Stops accepting when dropped.
pub struct TlsFront {
    pub addr: SocketAddr,
    /// `https://127.0.0.1:PORT`
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    pub async fn start(ca: &TestCa, backend: SocketAddr) -> TlsFront {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = ca.acceptor.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses our certificate ends the handshake: nothing to do.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsFront {
            addr,
            url: format!("https://{addr}"),
            task,
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}
