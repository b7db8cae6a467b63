//! What Go's crypto/x509 (the operator) and CRI-O check of a server certificate besides its chain
//! and name: the validity period and the extended key usage. WebPKI checks both too, but refuses
//! a self-signed `CA:TRUE` leaf before it gets there, so the bundle-leaf fallback checks them here,
//! with the fields x509-parser reads (webpki keeps them private).

use std::time::Duration;

use rustls::{CertificateError, ExtendedKeyPurpose};
use rustls_pki_types::UnixTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ExtendedKeyUsage;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

/// Refuses `cert` (DER) at `now` unless notBefore ≤ now ≤ notAfter and, when it has an extended
/// key usage extension, that extension allows serverAuth or any purpose.
pub(super) fn check_time_and_purpose(cert: &[u8], now: UnixTime) -> Result<(), CertificateError> {
    let (rest, cert) =
        X509Certificate::from_der(cert).map_err(|_| CertificateError::BadEncoding)?;
    if !rest.is_empty() {
        return Err(CertificateError::BadEncoding);
    }
    let validity = cert.validity();
    let (not_before, not_after) = (unix(validity.not_before), unix(validity.not_after));
    if now < not_before {
        return Err(CertificateError::NotValidYetContext {
            time: now,
            not_before,
        });
    }
    if now > not_after {
        return Err(CertificateError::ExpiredContext {
            time: now,
            not_after,
        });
    }
    // A second extended key usage extension is refused (RFC 5280 §4.2: at most once).
    let usage = cert
        .extended_key_usage()
        .map_err(|_| CertificateError::BadEncoding)?;
    match usage.map(|extension| extension.value) {
        None => Ok(()),
        Some(usage) if usage.server_auth || usage.any => Ok(()),
        Some(usage) => Err(CertificateError::InvalidPurposeContext {
            required: ExtendedKeyPurpose::ServerAuth,
            presented: presented(usage),
        }),
    }
}

/// A time before 1970 is 1970: every time this is compared with is later.
fn unix(time: ASN1Time) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(time.timestamp()).unwrap_or(0),
    ))
}

/// The purposes a certificate names, for the error (serverAuth and any are never among them).
fn presented(usage: &ExtendedKeyUsage<'_>) -> Vec<ExtendedKeyPurpose> {
    let other =
        |arcs: &[u64]| ExtendedKeyPurpose::Other(arcs.iter().map(|&a| a as usize).collect());
    let mut purposes = Vec::new();
    if usage.client_auth {
        purposes.push(ExtendedKeyPurpose::ClientAuth);
    }
    for (named, arc) in [
        (usage.code_signing, 3),
        (usage.email_protection, 4),
        (usage.time_stamping, 8),
        (usage.ocsp_signing, 9),
    ] {
        if named {
            // id-kp (1.3.6.1.5.5.7.3) and its arc.
            purposes.push(other(&[1, 3, 6, 1, 5, 5, 7, 3, arc]));
        }
    }
    for oid in &usage.other {
        let arcs: Vec<u64> = oid.iter().into_iter().flatten().collect();
        purposes.push(other(&arcs));
    }
    purposes
}
