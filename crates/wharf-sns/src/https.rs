//! TLS for `https` subscriptions: rustls on ring (no aws-lc, so no cmake or C toolchain),
//! trusting the operating system's roots plus any CA certificates the operator adds (a private
//! CA, or the self-signed certificate of a local test endpoint). Certificates are verified as
//! AWS does: an endpoint with an untrusted or mismatched certificate gets no delivery, and the
//! attempt counts as failed (retried per the delivery policy).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// The client configuration every https delivery shares. `extra_ca` is a PEM file of CA
/// certificates trusted besides the system's; it must hold at least one.
pub fn client_config(extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!("SNS https: a system certificate could not be read: {error}");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!("SNS https: {added} system root certificates");
    if let Some(path) = extra_ca {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("SNS https CA file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("SNS https CA file {} holds no certificate", path.display()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| format!("SNS https CA file {}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("SNS https: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
