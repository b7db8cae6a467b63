//! What Go's crypto/x509 (the operator) and CRI-O check of a server certificate besides its chain
//! and name: the validity period and the extended key usage. WebPKI checks both too, but refuses
//! a self-signed `CA:TRUE` leaf before it gets there, so the bundle-leaf fallback checks them here.

use rustls::{CertificateError, ExtendedKeyPurpose};
use rustls_pki_types::UnixTime;

use super::der::{self, BadDer, Reader};

/// `id-ce-extKeyUsage` (2.5.29.37), DER contents.
const EXTENDED_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
/// `id-kp-serverAuth` (1.3.6.1.5.5.7.3.1).
const SERVER_AUTH: &[usize] = &[1, 3, 6, 1, 5, 5, 7, 3, 1];
/// `id-kp-clientAuth` (1.3.6.1.5.5.7.3.2).
const CLIENT_AUTH: &[usize] = &[1, 3, 6, 1, 5, 5, 7, 3, 2];
/// `anyExtendedKeyUsage` (2.5.29.37.0), which Go accepts for any purpose.
const ANY_EXTENDED_KEY_USAGE: &[usize] = &[2, 5, 29, 37, 0];

/// Context tags in TBSCertificate.
const VERSION: u8 = 0xa0;
const ISSUER_UNIQUE_ID: u8 = 0x81;
const SUBJECT_UNIQUE_ID: u8 = 0x82;
const EXTENSIONS: u8 = 0xa3;
const BOOLEAN: u8 = 0x01;

/// Refuses `cert` (DER) at `now` unless notBefore ≤ now ≤ notAfter and, when it has an extended
/// key usage extension, that extension allows serverAuth or any purpose.
pub(super) fn check_time_and_purpose(cert: &[u8], now: UnixTime) -> Result<(), CertificateError> {
    let fields = Fields::read(cert).map_err(|BadDer| CertificateError::BadEncoding)?;
    if now < fields.not_before {
        return Err(CertificateError::NotValidYetContext {
            time: now,
            not_before: fields.not_before,
        });
    }
    if now > fields.not_after {
        return Err(CertificateError::ExpiredContext {
            time: now,
            not_after: fields.not_after,
        });
    }
    match fields.purposes {
        None => Ok(()),
        Some(purposes)
            if purposes
                .iter()
                .any(|p| p == SERVER_AUTH || p == ANY_EXTENDED_KEY_USAGE) =>
        {
            Ok(())
        }
        Some(purposes) => Err(CertificateError::InvalidPurposeContext {
            required: ExtendedKeyPurpose::ServerAuth,
            presented: purposes.into_iter().map(purpose).collect(),
        }),
    }
}

fn purpose(arcs: Vec<usize>) -> ExtendedKeyPurpose {
    match arcs.as_slice() {
        SERVER_AUTH => ExtendedKeyPurpose::ServerAuth,
        CLIENT_AUTH => ExtendedKeyPurpose::ClientAuth,
        _ => ExtendedKeyPurpose::Other(arcs),
    }
}

/// The fields checked, read from the TBSCertificate (RFC 5280 §4.1).
struct Fields {
    not_before: UnixTime,
    not_after: UnixTime,
    /// The extended key usage OIDs (as arcs), if the extension is present.
    purposes: Option<Vec<Vec<usize>>>,
}

impl Fields {
    fn read(cert: &[u8]) -> Result<Fields, BadDer> {
        let mut certificate = Reader::new(Reader::new(cert).expect(der::SEQUENCE)?);
        let mut tbs = Reader::new(certificate.expect(der::SEQUENCE)?);
        tbs.optional(VERSION)?;
        tbs.any()?; // serialNumber
        tbs.expect(der::SEQUENCE)?; // signature
        tbs.expect(der::SEQUENCE)?; // issuer
        let mut validity = Reader::new(tbs.expect(der::SEQUENCE)?);
        let not_before = validity.time()?;
        let not_after = validity.time()?;
        if !validity.at_end() {
            return Err(BadDer);
        }
        tbs.expect(der::SEQUENCE)?; // subject
        tbs.expect(der::SEQUENCE)?; // subjectPublicKeyInfo
        tbs.optional(ISSUER_UNIQUE_ID)?;
        tbs.optional(SUBJECT_UNIQUE_ID)?;
        let mut purposes = None;
        if let Some(extensions) = tbs.optional(EXTENSIONS)? {
            let mut list = Reader::new(Reader::new(extensions).expect(der::SEQUENCE)?);
            while !list.at_end() {
                let mut extension = Reader::new(list.expect(der::SEQUENCE)?);
                let id = extension.expect(der::OID)?;
                extension.optional(BOOLEAN)?; // critical
                let value = extension.expect(der::OCTET_STRING)?;
                if id != EXTENDED_KEY_USAGE {
                    continue;
                }
                // RFC 5280 §4.2: an extension appears at most once.
                if purposes.is_some() {
                    return Err(BadDer);
                }
                purposes = Some(read_purposes(value)?);
            }
        }
        Ok(Fields {
            not_before,
            not_after,
            purposes,
        })
    }
}

/// `ExtKeyUsageSyntax ::= SEQUENCE SIZE (1..MAX) OF KeyPurposeId`.
fn read_purposes(value: &[u8]) -> Result<Vec<Vec<usize>>, BadDer> {
    let mut outer = Reader::new(value);
    let mut ids = Reader::new(outer.expect(der::SEQUENCE)?);
    if !outer.at_end() {
        return Err(BadDer);
    }
    let mut purposes = Vec::new();
    while !ids.at_end() {
        purposes.push(der::oid_arcs(ids.expect(der::OID)?)?);
    }
    if purposes.is_empty() {
        return Err(BadDer);
    }
    Ok(purposes)
}
