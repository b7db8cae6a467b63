//! Signing certificates: Fulcio leaves checked at the Rekor entry's time, PKI leaves at the
//! current time (signature-policy §3 steps 3–4, containers/image `fulcio_cert.go`,
//! `pki_cert.go`). rustls-webpki builds and checks the chain; x509-parser reads the fields webpki
//! does not expose (SAN emails, the Fulcio OIDC-issuer extensions).

use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use thiserror::Error;
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::keys::{KeyError, PublicKey};

/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), DER value. Required only of certificates that carry
/// an EKU: Go treats a missing EKU as unrestricted.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
/// Fulcio's OIDC issuer, v1: raw bytes.
const OID_ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";
/// Fulcio's OIDC issuer, v2: a DER UTF8String.
const OID_ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CertificateError {
    #[error("{what} is not PEM")]
    NotPem { what: &'static str },
    #[error("{what} must be exactly one certificate")]
    NotOneCertificate { what: &'static str },
    #[error("invalid certificate: {0}")]
    Parse(String),
    #[error("certificate is not trusted: {0}")]
    Untrusted(String),
    #[error("certificate has no Fulcio OIDC issuer extension")]
    NoIssuer,
    #[error("certificate has inconsistent Fulcio OIDC issuer extensions {v1:?} and {v2:?}")]
    InconsistentIssuer { v1: String, v2: String },
    #[error("required OIDC issuer {wanted:?}, certificate has {found:?}")]
    IssuerMismatch { wanted: String, found: String },
    #[error("required email {0} not found in the certificate")]
    EmailMissing(String),
    #[error("required hostname {0} not found in the certificate")]
    HostnameMissing(String),
    #[error("certificate public key: {0}")]
    Key(#[from] KeyError),
}

/// Every certificate in a PEM bundle, DER. Non-certificate blocks are an error, as is an empty
/// bundle when `what` needs one.
pub fn pem_certificates(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|_| CertificateError::NotPem { what })?;
        if block.label != "CERTIFICATE" {
            return Err(CertificateError::NotPem { what });
        }
        out.push(CertificateDer::from(block.contents));
    }
    if out.is_empty() && !pem.iter().all(u8::is_ascii_whitespace) {
        return Err(CertificateError::NotPem { what });
    }
    Ok(out)
}

/// The leaf annotation: exactly one certificate.
pub fn leaf(pem: &[u8]) -> Result<CertificateDer<'static>, CertificateError> {
    let what = "certificate";
    let mut certs = pem_certificates(pem, what)?;
    match certs.len() {
        0 => Err(CertificateError::NotPem { what }),
        1 => Ok(certs.remove(0)),
        _ => Err(CertificateError::NotOneCertificate { what }),
    }
}

/// The chain annotation's untrusted intermediates: every certificate but the last (the root is
/// dropped; trust only comes from configured CAs).
pub fn chain_intermediates(
    pem: Option<&[u8]>,
) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    let Some(pem) = pem else {
        return Ok(Vec::new());
    };
    let mut certs = pem_certificates(pem, "certificate chain")?;
    certs.pop();
    Ok(certs)
}

/// Checks `leaf` up to one of `roots` through `intermediates` at `time`, with CodeSigning where
/// an EKU is present, and returns its public key.
pub fn verify_chain(
    leaf: &CertificateDer<'_>,
    roots: &[CertificateDer<'_>],
    intermediates: &[CertificateDer<'_>],
    time_unix: u64,
) -> Result<PublicKey, CertificateError> {
    let untrusted = |e: webpki::Error| CertificateError::Untrusted(format!("{e:?}"));
    let anchors: Vec<TrustAnchor<'_>> = roots
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<_, _>>()
        .map_err(untrusted)?;
    let cert = EndEntityCert::try_from(leaf).map_err(untrusted)?;
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        intermediates,
        UnixTime::since_unix_epoch(Duration::from_secs(time_unix)),
        KeyUsage::required_if_present(CODE_SIGNING),
        None,
        None,
    )
    .map_err(untrusted)?;
    let (_, parsed) = parse(leaf)?;
    Ok(PublicKey::from_spki(parsed.public_key().raw)?)
}

fn parse<'a>(
    der: &'a CertificateDer<'_>,
) -> Result<(&'a [u8], X509Certificate<'a>), CertificateError> {
    X509Certificate::from_der(der.as_ref()).map_err(|e| CertificateError::Parse(e.to_string()))
}

/// The Fulcio OIDC issuer: v1 (raw bytes) and/or v2 (UTF8String); both present must agree.
pub fn check_fulcio_issuer(
    leaf: &CertificateDer<'_>,
    wanted: &str,
) -> Result<(), CertificateError> {
    let (_, cert) = parse(leaf)?;
    let mut v1 = None;
    let mut v2 = None;
    for ext in cert.extensions() {
        match ext.oid.to_id_string().as_str() {
            OID_ISSUER_V1 => v1 = Some(String::from_utf8_lossy(ext.value).into_owned()),
            OID_ISSUER_V2 => {
                let (_, s) = x509_parser::der_parser::der::parse_der_utf8string(ext.value)
                    .map_err(|e| CertificateError::Parse(e.to_string()))?;
                let s = s
                    .as_str()
                    .map_err(|e| CertificateError::Parse(e.to_string()))?;
                v2 = Some(s.to_string());
            }
            _ => {}
        }
    }
    let found = match (v1, v2) {
        (None, None) => return Err(CertificateError::NoIssuer),
        (Some(v1), Some(v2)) if v1 != v2 => {
            return Err(CertificateError::InconsistentIssuer { v1, v2 });
        }
        (Some(issuer), _) | (None, Some(issuer)) => issuer,
    };
    if found != wanted {
        return Err(CertificateError::IssuerMismatch {
            wanted: wanted.to_string(),
            found,
        });
    }
    Ok(())
}

/// What a signing certificate says of who signed, for the record: `issuer <DN>, subject <DN>`
/// and its SAN emails and DNS names.
pub fn describe(leaf: &CertificateDer<'_>) -> Result<String, CertificateError> {
    let (_, cert) = parse(leaf)?;
    let mut text = format!(
        "certificate issuer {}, subject {}",
        cert.issuer(),
        cert.subject()
    );
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertificateError::Parse(e.to_string()))?;
    let names: Vec<&str> = san
        .iter()
        .flat_map(|san| san.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::RFC822Name(n) | GeneralName::DNSName(n) => Some(*n),
            _ => None,
        })
        .collect();
    if !names.is_empty() {
        text.push_str(&format!(", SAN {}", names.join(" ")));
    }
    Ok(text)
}

/// `email` must be one of the SAN rfc822 names, exactly (case-sensitive, as upstream).
pub fn check_email(leaf: &CertificateDer<'_>, email: &str) -> Result<(), CertificateError> {
    let (_, cert) = parse(leaf)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertificateError::Parse(e.to_string()))?;
    let found = san.is_some_and(|san| {
        san.value
            .general_names
            .iter()
            .any(|name| matches!(name, GeneralName::RFC822Name(e) if *e == email))
    });
    if found {
        Ok(())
    } else {
        Err(CertificateError::EmailMissing(email.to_string()))
    }
}

/// `hostname` must be covered by a SAN DNS name (wildcards in the certificate honoured, as Go's
/// `VerifyHostname`). A policy value that is not a plain DNS name (e.g. with `*`) matches
/// nothing here; Go would compare it literally (stricter).
pub fn check_hostname(leaf: &CertificateDer<'_>, hostname: &str) -> Result<(), CertificateError> {
    let missing = || CertificateError::HostnameMissing(hostname.to_string());
    let name = ServerName::try_from(hostname).map_err(|_| missing())?;
    if !matches!(name, ServerName::DnsName(_)) {
        return Err(missing());
    }
    let cert = EndEntityCert::try_from(leaf).map_err(|_| missing())?;
    cert.verify_is_valid_for_subject_name(&name)
        .map_err(|_| missing())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// containers/image's vectors (read in place, never copied); `None` only outside CI.
    fn vector(name: &str) -> Option<Vec<u8>> {
        let dir = std::env::var_os("SIGSTORE_VECTORS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../shared/fixtures/containers-image-sigstore")
            });
        match std::fs::read(dir.join(name)) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "sigstore vector {name} missing under CI: {e}"
                );
                None
            }
        }
    }

    fn certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
        pem_certificates(pem, "test").unwrap()
    }

    /// The Fulcio leaf `fulcio-cert` was valid 2022-12-12 18:48:18–18:58:18.
    const SET_TIME: u64 = 1_670_870_899;

    /// signature-policy §3 step 3 and the vectors' fulcio_cert_test rows: the leaf is checked at
    /// the SET time (not now), through the chain minus its root, with this issuer and email.
    #[test]
    fn fulcio_leaf_rules() {
        let (Some(leaf_pem), Some(chain), Some(root)) = (
            vector("fulcio-cert"),
            vector("fulcio-chain"),
            vector("fulcio_v1.crt.pem"),
        ) else {
            return;
        };
        let leaf = leaf(&leaf_pem).unwrap();
        let roots = certs(&root);
        let intermediates = chain_intermediates(Some(&chain)).unwrap();
        assert_eq!(intermediates.len(), 1, "the chain's root is dropped");
        assert!(verify_chain(&leaf, &roots, &intermediates, SET_TIME).is_ok());
        for outside in [1_670_870_897, 1_670_871_499] {
            assert!(verify_chain(&leaf, &roots, &intermediates, outside).is_err());
        }
        assert!(verify_chain(&leaf, &roots, &[], SET_TIME).is_err());
        assert!(verify_chain(&leaf, &certs(&chain), &[], SET_TIME).is_ok());

        assert_eq!(
            check_fulcio_issuer(&leaf, "https://github.com/login/oauth"),
            Ok(())
        );
        assert!(matches!(
            check_fulcio_issuer(&leaf, "https://accounts.google.com"),
            Err(CertificateError::IssuerMismatch { .. })
        ));
        assert_eq!(check_email(&leaf, "mitr@redhat.com"), Ok(()));
        assert!(
            check_email(&leaf, "MITR@redhat.com").is_err(),
            "exact, case-sensitive"
        );
        // A PKI root has no Fulcio issuer extension.
        assert_eq!(
            check_fulcio_issuer(&roots[0], "x"),
            Err(CertificateError::NoIssuer)
        );
    }

    /// signature-policy §3 step 4 and the vectors' pki_cert_test rows: roots + intermediates
    /// (configured or from the chain), at the time given (expired: rejected), email and
    /// hostname SANs.
    #[test]
    fn pki_leaf_rules() {
        let (Some(leaf_pem), Some(chain), Some(root), Some(intermediate)) = (
            vector("pki-cert"),
            vector("pki-chain"),
            vector("pki_root_crts.pem"),
            vector("pki_intermediate_crts.pem"),
        ) else {
            return;
        };
        let leaf = leaf(&leaf_pem).unwrap();
        let roots = certs(&root);
        let now = 1_800_000_000;
        assert!(verify_chain(&leaf, &roots, &certs(&intermediate), now).is_ok());
        assert!(
            verify_chain(
                &leaf,
                &roots,
                &chain_intermediates(Some(&chain)).unwrap(),
                now
            )
            .is_ok()
        );
        assert!(verify_chain(&leaf, &roots, &[], now).is_err());
        // After the leaf's notAfter (2052-02-16).
        assert!(verify_chain(&leaf, &roots, &certs(&intermediate), 2_600_000_000).is_err());
        assert_eq!(check_email(&leaf, "qiwan@redhat.com"), Ok(()));
        assert_eq!(check_hostname(&leaf, "myhost.example.com"), Ok(()));
        assert!(check_hostname(&leaf, "other.example.com").is_err());
        assert!(check_hostname(&leaf, "*.example.com").is_err());
    }

    /// A self-signed leaf made with the `openssl` CLI, carrying `extensions` (`-addext` values).
    fn openssl_leaf(extensions: &[String]) -> CertificateDer<'static> {
        let mut command = std::process::Command::new("openssl");
        command.args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "/dev/null",
            "-subj",
            "/CN=leaf",
            "-days",
            "1",
        ]);
        for extension in extensions {
            command.args(["-addext", extension]);
        }
        let output = command.output().expect("run openssl");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        leaf(&output.stdout).unwrap()
    }

    fn issuer_v1(issuer: &str) -> String {
        format!("{OID_ISSUER_V1}=DER:{}", hex::encode(issuer))
    }

    fn issuer_v2(issuer: &str) -> String {
        format!("{OID_ISSUER_V2}=ASN1:UTF8String:{issuer}")
    }

    /// signature-policy §5 "v1≠v2 issuer" and "issuer mismatch" (§3 step 3): both Fulcio issuer
    /// extensions present must agree, and either one alone is read.
    #[test]
    fn fulcio_issuer_v1_and_v2_must_agree() {
        let (github, google) = (
            "https://github.com/login/oauth",
            "https://accounts.google.com",
        );
        let both_differ = openssl_leaf(&[issuer_v1(github), issuer_v2(google)]);
        assert_eq!(
            check_fulcio_issuer(&both_differ, github),
            Err(CertificateError::InconsistentIssuer {
                v1: github.into(),
                v2: google.into()
            })
        );
        assert!(check_fulcio_issuer(&both_differ, google).is_err());
        let both_agree = openssl_leaf(&[issuer_v1(github), issuer_v2(github)]);
        assert_eq!(check_fulcio_issuer(&both_agree, github), Ok(()));
        let v2_only = openssl_leaf(&[issuer_v2(google)]);
        assert_eq!(check_fulcio_issuer(&v2_only, google), Ok(()));
        assert!(matches!(
            check_fulcio_issuer(&v2_only, github),
            Err(CertificateError::IssuerMismatch { .. })
        ));
    }

    /// signature-policy §5 "email absent" (§3 steps 3–4): a leaf with no email SAN, or only
    /// other SANs, does not satisfy a required email.
    #[test]
    fn required_email_absent_from_the_leaf_is_refused() {
        let wanted = "dev@example.com";
        for extensions in [vec![], vec!["subjectAltName=DNS:example.com".to_string()]] {
            assert_eq!(
                check_email(&openssl_leaf(&extensions), wanted),
                Err(CertificateError::EmailMissing(wanted.into())),
                "{extensions:?}"
            );
        }
        let with_email = openssl_leaf(&[format!("subjectAltName=email:{wanted}")]);
        assert_eq!(check_email(&with_email, wanted), Ok(()));
    }

    /// signature-policy §3 step 4 (certificate annotation exactly one PEM block) and step 3
    /// (the chain's last certificate dropped); golden helper vectors "not a certificate".
    #[test]
    fn pem_rules() {
        assert!(matches!(
            leaf(b"this is not a valid certificate"),
            Err(CertificateError::NotPem { .. })
        ));
        assert!(matches!(leaf(b""), Err(CertificateError::NotPem { .. })));
        assert!(chain_intermediates(None).unwrap().is_empty());
        assert!(chain_intermediates(Some(b"not a certificate")).is_err());
        let key = "-----BEGIN PUBLIC KEY-----\nMBYwEAYHKoZIzj0CAQYFK4EEACMDAgAE\n-----END PUBLIC KEY-----\n";
        assert!(matches!(
            leaf(key.as_bytes()),
            Err(CertificateError::NotPem { .. })
        ));
    }
}
