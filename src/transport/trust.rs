//! The TLS root store and client configurations: system roots, plus the cluster's CAs and `--ca-file`.
//!
//! Registries listed as insecure get a separate configuration that skips certificate verification; the
//! transport picks it per host, so one `--insecure-registry` never weakens any other connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use thiserror::Error;

mod leaf;

#[derive(Debug, Error)]
pub(crate) enum TrustError {
    #[error("cannot read CA file {path}: {source}")]
    ReadCaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA file {0} holds no PEM certificate")]
    NoCertificate(String),
    #[error("CA bundle {origin}: {message}")]
    BadCertificate { origin: String, message: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Roots collected from every source, each remembered with where it came from (for the log).
#[derive(Debug, Default)]
pub(crate) struct Roots {
    extra: Vec<(String, CertificateDer<'static>)>,
}

impl Roots {
    /// Adds every certificate of a PEM bundle. Non-certificate blocks are skipped (as Go's
    /// AppendCertsFromPEM does); a bundle with no certificate at all is an error for files the user named.
    pub(crate) fn add_pem(&mut self, origin: &str, pem: &[u8]) -> Result<usize, TrustError> {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| TrustError::BadCertificate {
                origin: origin.to_string(),
                message: e.to_string(),
            })?;
            self.extra.push((origin.to_string(), cert));
            added += 1;
        }
        Ok(added)
    }

    pub(crate) fn add_file(&mut self, path: &Path) -> Result<(), TrustError> {
        let pem = std::fs::read(path).map_err(|source| TrustError::ReadCaFile {
            path: path.to_path_buf(),
            source,
        })?;
        let origin = path.display().to_string();
        if self.add_pem(&origin, &pem)? == 0 {
            return Err(TrustError::NoCertificate(origin));
        }
        Ok(())
    }

    pub(crate) fn extra_count(&self) -> usize {
        self.extra.len()
    }

    /// The system roots (as rustls-native-certs finds them) plus every extra root.
    fn store(&self) -> RootCertStore {
        let mut store = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(%error, "could not load some system CA certificates");
        }
        let (added, ignored) = store.add_parsable_certificates(native.certs);
        tracing::debug!(added, ignored, "system CA certificates");
        for (origin, cert) in &self.extra {
            if let Err(error) = store.add(cert.clone()) {
                tracing::warn!(%origin, %error, "ignoring an unusable CA certificate");
            }
        }
        store
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The verifying configuration used for every registry not listed as insecure.
pub(crate) fn verifying_config(roots: &Roots) -> Result<ClientConfig, TrustError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(BundleLeafVerifier::new(roots)?))
        .with_no_client_auth())
}

/// The usual WebPKI verification, plus what Go and CRI-O accept and rustls refuses: a server certificate
/// that is itself, byte for byte, one of the extra trusted certificates (lab mirrors commonly serve a
/// self-signed `CA:TRUE` certificate made with `openssl req -x509`, which WebPKI rejects as
/// CaUsedAsEndEntity). That certificate is still checked as Go checks a leaf: validity period,
/// serverAuth purpose (if it names any) and host name.
#[derive(Debug)]
struct BundleLeafVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    bundle: Vec<CertificateDer<'static>>,
}

impl BundleLeafVerifier {
    fn new(roots: &Roots) -> Result<BundleLeafVerifier, TrustError> {
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots.store()), provider())
                .build()
                .map_err(|e| TrustError::Tls(rustls::Error::General(e.to_string())))?;
        Ok(BundleLeafVerifier {
            webpki,
            bundle: roots.extra.iter().map(|(_, cert)| cert.clone()).collect(),
        })
    }
}

impl ServerCertVerifier for BundleLeafVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let refused = match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => return Ok(verified),
            Err(refused) => refused,
        };
        if !self
            .bundle
            .iter()
            .any(|trusted| trusted.as_ref() == end_entity.as_ref())
        {
            return Err(refused);
        }
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| refused.clone())?;
        leaf::check_time_and_purpose(end_entity.as_ref(), now)?;
        cert.verify_is_valid_for_subject_name(server_name)
            .map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
            })?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The configuration for `--insecure-registry` hosts: TLS without certificate verification.
pub(crate) fn unverified_config() -> Result<ClientConfig, TrustError> {
    let provider = provider();
    let verifier = AcceptAnyCertificate(provider.signature_verification_algorithms);
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// Accepts any certificate, but still checks handshake signatures so the session keys are sound.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_without_certificates_adds_nothing() {
        let mut roots = Roots::default();
        assert_eq!(roots.add_pem("x", b"not a pem").unwrap(), 0);
        assert_eq!(roots.extra_count(), 0);
    }

    /// A self-signed CA:TRUE certificate for 127.0.0.1, as `openssl req -x509` makes for lab mirrors.
    fn self_signed_cert(dir: &Path, name: &str) -> Vec<u8> {
        self_signed_cert_with(dir, name, &[])
    }

    /// The same, valid from now for a day, with more `-addext` extensions.
    fn self_signed_cert_with(dir: &Path, name: &str, extensions: &[&str]) -> Vec<u8> {
        let out = dir.join(format!("{name}.pem"));
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "1",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-addext",
            ])
            .arg("basicConstraints=critical,CA:TRUE")
            .args(extensions.iter().flat_map(|e| ["-addext", e]))
            .arg("-keyout")
            .arg(dir.join(format!("{name}.key")))
            .arg("-out")
            .arg(&out)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success());
        std::fs::read(out).unwrap()
    }

    #[test]
    fn a_self_signed_leaf_in_the_bundle_is_accepted_for_its_own_names_only() {
        let dir = tempfile::tempdir().unwrap();
        let trusted = self_signed_cert(dir.path(), "trusted");
        let stranger = self_signed_cert(dir.path(), "stranger");
        let mut roots = Roots::default();
        roots.add_pem("bundle", &trusted).unwrap();
        let verifier = BundleLeafVerifier::new(&roots).unwrap();
        let der = |pem: &[u8]| CertificateDer::pem_slice_iter(pem).next().unwrap().unwrap();
        let verify = |cert: &CertificateDer<'_>, name: &str| {
            verifier.verify_server_cert(
                cert,
                &[],
                &ServerName::try_from(name.to_string()).unwrap(),
                &[],
                UnixTime::now(),
            )
        };
        assert!(verify(&der(&trusted), "127.0.0.1").is_ok());
        assert!(matches!(
            verify(&der(&trusted), "mirror.example"),
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
            ))
        ));
        assert!(
            verify(&der(&stranger), "127.0.0.1").is_err(),
            "a certificate outside the bundle is refused"
        );
    }

    fn first_cert(pem: &[u8]) -> CertificateDer<'static> {
        CertificateDer::pem_slice_iter(pem).next().unwrap().unwrap()
    }

    /// Verifies `cert`, trusted as a bundle leaf, for 127.0.0.1 at `now`.
    fn verify_bundle_leaf(
        cert: &CertificateDer<'static>,
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut roots = Roots::default();
        roots.extra.push(("bundle".into(), cert.clone()));
        let name = ServerName::try_from("127.0.0.1").unwrap();
        BundleLeafVerifier::new(&roots)
            .unwrap()
            .verify_server_cert(cert, &[], &name, &[], now)
    }

    fn shifted(now: UnixTime, seconds: i64) -> UnixTime {
        let secs = now.as_secs().checked_add_signed(seconds).unwrap();
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
    }

    /// A self-signed leaf in the bundle is refused once expired, as Go's crypto/x509 and CRI-O
    /// refuse it (issue item 3; README "How mirrors, CAs and credentials are chosen", CAs).
    #[test]
    fn a_bundle_leaf_is_refused_after_its_not_after() {
        let dir = tempfile::tempdir().unwrap();
        let cert = first_cert(&self_signed_cert(dir.path(), "lab"));
        let now = UnixTime::now();
        assert!(verify_bundle_leaf(&cert, now).is_ok());
        let err = verify_bundle_leaf(&cert, shifted(now, 3 * 86_400)).unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext { .. })
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("expired"), "{err}");
    }

    /// A self-signed leaf in the bundle is refused before its notBefore (issue item 3).
    #[test]
    fn a_bundle_leaf_is_refused_before_its_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let cert = first_cert(&self_signed_cert(dir.path(), "lab"));
        let err = verify_bundle_leaf(&cert, shifted(UnixTime::now(), -3_600)).unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidYetContext { .. }
                )
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("not valid yet"), "{err}");
    }

    /// A bundle leaf that names extended key usages must allow serverAuth (or any usage, which
    /// Go accepts); one naming none is accepted (issue item 3).
    #[test]
    fn a_bundle_leaf_naming_purposes_must_allow_server_authentication() {
        let dir = tempfile::tempdir().unwrap();
        let make = |name, extensions: &[&str]| {
            first_cert(&self_signed_cert_with(dir.path(), name, extensions))
        };
        // Each is verified after it is made: its notBefore is the second it was made.
        let client_only = make("client", &["extendedKeyUsage=clientAuth"]);
        let err = verify_bundle_leaf(&client_only, UnixTime::now()).unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::InvalidPurposeContext { .. }
                )
            ),
            "{err:?}"
        );
        for (name, extensions) in [
            ("server", &["extendedKeyUsage=clientAuth,serverAuth"][..]),
            ("any", &["extendedKeyUsage=anyExtendedKeyUsage"]),
            ("none", &[]),
        ] {
            let cert = make(name, extensions);
            assert!(verify_bundle_leaf(&cert, UnixTime::now()).is_ok(), "{name}");
        }
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let mut roots = Roots::default();
        let err = roots
            .add_file(Path::new("/nonexistent/ca.pem"))
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
