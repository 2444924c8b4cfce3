//! The HTTP API and dashboard over TLS (HTTPS), beside the plain listener: browsers
//! and scripts that want the token and the data encrypted use it; receivers keep the
//! plain port (their window requests carry the token; the audio is not secret, see
//! docs/security.md). rustls with the ring provider, TLS 1.2 and 1.3; the same routes,
//! limits and access rule as [`crate::http::serve`].

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::http::{accept_loop, serve_connection, HEADER_READ_TIMEOUT};

pub use crate::HttpsConfig;

/// Largest certificate or key file read, bytes.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// A TLS acceptor for the certificate chain `cert` and key `key`.
///
/// Errors: a file that cannot be read, holds no certificate or no key (named), or a
/// key that does not match the certificate.
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let read = |p: &Path| {
        syncstream_shared::fsutil::read_capped(p, MAX_PEM_BYTES)
            .with_context(|| format!("reading {}", p.display()))
    };
    let cert_pem = read(cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        anyhow::bail!("{}: no PEM certificate in it", cert.display());
    }
    let key_pem = read(key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| anyhow::anyhow!("{}: no PEM private key in it ({e})", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .with_context(|| {
            format!(
                "{} and {}: the key does not fit the certificate",
                cert.display(),
                key.display()
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` over TLS on `listener` forever, as [`crate::http::serve`] does over
/// plain TCP; the TLS handshake must finish within the header timeout.
///
/// Errors: none; failed accepts and handshakes are logged.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, tls: TlsAcceptor) {
    accept_loop(listener, "HTTPS", move |stream, peer| {
        let (app, tls) = (app.clone(), tls.clone());
        async move {
            match tokio::time::timeout(HEADER_READ_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(stream)) => serve_connection(stream, app, peer).await,
                Ok(Err(e)) => tracing::debug!(%peer, "HTTPS handshake: {e}"),
                Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
            }
        }
    })
    .await
}
