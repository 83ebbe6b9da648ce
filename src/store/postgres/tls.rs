//! TLS for the connections, with rustls through `tokio-postgres-rustls`: a small adapter kept
//! current with rustls 0.23 and tokio-postgres 0.7 that also gives SCRAM its channel binding.
//! rustls needs no system OpenSSL, and builds here with the `ring` provider alone (no C
//! toolchain beyond what `ring` needs).
//!
//! The verification follows libpq's `sslmode`: `prefer` and `require` encrypt without checking
//! the certificate (they guard against eavesdropping, not impersonation); `verify-ca` checks
//! the chain up to a trusted root; `verify-full` also checks the host name. Roots come from
//! `sslrootcert` when given, else from the system's store.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::url::{PgUrl, SslMode};

/// The connector for `url`'s `sslmode`. Built for `disable` too (it is then never used), so
/// that every connection has the same type.
pub fn connector(url: &PgUrl) -> Result<MakeRustlsConnect, String> {
    // The provider is named rather than taken from the process default, which is ambiguous
    // when another crate in the binary enables a second one.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let algorithms = provider.signature_verification_algorithms;
    let check = match url.sslmode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => Check::KeyOnly,
        SslMode::VerifyCa | SslMode::VerifyFull => Check::Chain {
            webpki: WebPkiServerVerifier::builder_with_provider(Arc::new(roots(url)?), provider)
                .build()
                .map_err(|e| format!("TLS setup: {e}"))?,
            check_name: url.sslmode == SslMode::VerifyFull,
        },
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { check, algorithms }))
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn roots(url: &PgUrl) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match &url.sslrootcert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "sslrootcert {}: no usable certificate in it",
                    path.display()
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(
                    "verifying the server needs trusted roots, and the system has none: set sslrootcert"
                        .into(),
                );
            }
        }
    }
    Ok(roots)
}

/// What is checked of the server's certificate.
#[derive(Debug)]
enum Check {
    /// Only that the server holds the certificate's key: the session is encrypted to whoever
    /// answered (`prefer`, `require`).
    KeyOnly,
    /// The chain up to a trusted root, and for `verify-full` the host name.
    Chain {
        webpki: Arc<WebPkiServerVerifier>,
        check_name: bool,
    },
}

#[derive(Debug)]
struct Verifier {
    check: Check,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Check::Chain { webpki, check_name } = &self.check else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            // `verify-ca`: a trusted certificate for another name will do.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
