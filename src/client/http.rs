//! The HTTP client every tool of this package uses (the origin and proxy clients, the gateway's
//! control client, the tester toolkit, the benchmarks): the product's outbound TLS
//! ([`ssepush_origin::service::tls`]: rustls on ring, Mozilla's roots) plus the extra CA file
//! the command was given (`--extra-ca-path` / `SSEPUSH_EXTRA_CA_PATH`), set once per process
//! with [`set_extra_ca`].

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ssepush_origin::service::tls;

static EXTRA_CA: OnceLock<PathBuf> = OnceLock::new();

/// Trusts the PEM CA certificates in `path` (besides Mozilla's roots) in every client built
/// afterwards by this process; checks the file at once.
///
/// Errors: the file cannot be read or holds no certificate; or another file was set first.
pub fn set_extra_ca(path: &Path) -> Result<(), tls::TlsError> {
    tls::root_store(Some(path))?;
    if EXTRA_CA.set(path.to_owned()).is_err() && EXTRA_CA.get().map(PathBuf::as_path) != Some(path)
    {
        return Err(tls::TlsError::new(
            path,
            "another extra CA file was set first in this process",
        ));
    }
    Ok(())
}

/// The extra CA file set with [`set_extra_ca`], if any.
pub fn extra_ca() -> Option<&'static Path> {
    EXTRA_CA.get().map(PathBuf::as_path)
}

/// A reqwest builder with the product's TLS; the caller adds timeouts and the like.
// The last resort below (ring installed as the process default) never happens with a valid
// build: Mozilla's roots alone always make a configuration.
#[allow(clippy::disallowed_methods)]
pub fn builder() -> reqwest::ClientBuilder {
    // The file was checked by `set_extra_ca`; should it have gone since, Mozilla's roots
    // alone are used and an https:// origin on the private CA fails with a certificate reason.
    tls::reqwest_builder(extra_ca())
        .or_else(|_| tls::reqwest_builder(None))
        .unwrap_or_else(|_| {
            tls::install_default_provider();
            reqwest::Client::builder()
        })
}

/// A client with the product's TLS and reqwest's defaults otherwise.
#[allow(clippy::disallowed_methods)]
pub fn client() -> reqwest::Client {
    builder().build().unwrap_or_else(|_| {
        tls::install_default_provider();
        reqwest::Client::new()
    })
}
