//! Sorting the certificates of a CA ConfigMap value from everything else in it.
//!
//! Cluster bundles are edited by hand and merged by operators, so one broken block is not rare.
//! Go's `AppendCertsFromPEM`, which the node's tools use, skips what it cannot parse and keeps the
//! rest; we do the same, but count what was skipped so the operator can be told.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;

const BEGIN: &[u8] = b"-----BEGIN ";
const END: &[u8] = b"-----END ";
const DASHES: &[u8] = b"-----";

/// The result of scanning one PEM value.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Every valid certificate, re-encoded as canonical PEM (64-column base64, `\n` line ends).
    pub(crate) pem: Vec<u8>,
    pub(crate) certificates: usize,
    /// CERTIFICATE blocks that did not decode or parse, other block types, unterminated blocks.
    pub(crate) skipped: usize,
}

/// Keeps the CERTIFICATE blocks whose DER a rustls root store accepts; text between blocks
/// (bundle comments) is ignored, as PEM allows.
pub(crate) fn scan(input: &[u8]) -> Scan {
    let mut scan = Scan::default();
    // The open block's label and its base64 lines, while inside one.
    let mut open: Option<(Vec<u8>, Vec<u8>)> = None;
    for raw in input.split(|&b| b == b'\n') {
        let line = raw.trim_ascii();
        if let Some(label) = marker(line, BEGIN) {
            if open.is_some() {
                // A BEGIN inside a block: the previous one never ended.
                scan.skipped += 1;
            }
            open = Some((label.to_vec(), Vec::new()));
        } else if let Some(label) = marker(line, END) {
            match open.take() {
                Some((begin, body)) if begin == label => scan.block(&begin, &body),
                // END with another label, or with no BEGIN: the block (if any) is broken.
                Some(_) => scan.skipped += 1,
                None => {}
            }
        } else if let Some((_, body)) = open.as_mut() {
            body.extend_from_slice(line);
        }
    }
    if open.is_some() {
        scan.skipped += 1;
    }
    scan
}

impl Scan {
    fn block(&mut self, label: &[u8], body: &[u8]) {
        match (label == b"CERTIFICATE")
            .then(|| certificate(body))
            .flatten()
        {
            Some(der) => {
                self.pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
                let encoded = BASE64.encode(&der);
                for chunk in encoded.as_bytes().chunks(64) {
                    self.pem.extend_from_slice(chunk);
                    self.pem.push(b'\n');
                }
                self.pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
                self.certificates += 1;
            }
            None => self.skipped += 1,
        }
    }
}

/// `-----BEGIN LABEL-----` → `LABEL` (for `prefix` BEGIN or END).
fn marker<'a>(line: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    line.strip_prefix(prefix)?.strip_suffix(DASHES)
}

/// The DER of a CERTIFICATE block, if it decodes and is a certificate rustls would take as a
/// root: the same check the trust module's store applies later, so nothing kept here fails there.
fn certificate(body: &[u8]) -> Option<Vec<u8>> {
    let der = BASE64.decode(body).ok()?;
    let mut probe = RootCertStore::empty();
    probe.add(CertificateDer::from(der.as_slice())).ok()?;
    Some(der)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A real self-signed CA certificate (EC P-256, made with openssl for this test), so the rustls
    /// check has something to accept.
    pub(crate) const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBjzCCATWgAwIBAgIUKrKRTkAx/sMkXdBlkXqgnjrD44QwCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRY2x1c3Rlci11bml0LXRlc3QwIBcNMjYxMTI0MDgzMTUwWhgP
MjEyNjEwMzEwODMxNTBaMBwxGjAYBgNVBAMMEWNsdXN0ZXItdW5pdC10ZXN0MFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEtq7Mj+TkMM0je5I9lm8UHu9/5EYWsixv
XwLNZSpdpPr4yEv7KEonr5rouNQhOMTO1mx3NLcFOflSvL5EBVoLE6NTMFEwHQYD
VR0OBBYEFDQe5PkoDpUogLF1aHx7ItF8XVgJMB8GA1UdIwQYMBaAFDQe5PkoDpUo
gLF1aHx7ItF8XVgJMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIg
FA3d8tT6/T76Yw6MGVbBjftnREvcVmTcFXJ87n3EiGoCIQCJ40GvEdawUe4VECQw
0/+5YCmvFmNWXwEkWYcDhsatJQ==
-----END CERTIFICATE-----
";

    #[test]
    fn keeps_a_valid_certificate_byte_for_byte() {
        let scan = scan(CERT.as_bytes());
        assert_eq!(scan.certificates, 1);
        assert_eq!(scan.skipped, 0);
        assert_eq!(String::from_utf8(scan.pem).unwrap(), CERT);
    }

    #[test]
    fn ignores_comments_crlf_and_indentation_between_blocks() {
        let input = format!(
            "# Root A\r\n{}\n  # Root B\n{}",
            CERT.replace('\n', "\r\n"),
            CERT
        );
        let scan = scan(input.as_bytes());
        assert_eq!(scan.certificates, 2);
        assert_eq!(scan.skipped, 0);
        assert_eq!(
            String::from_utf8(scan.pem).unwrap(),
            format!("{CERT}{CERT}")
        );
    }

    #[test]
    fn skips_bad_base64_non_certificate_der_other_labels_and_unterminated_blocks() {
        let not_a_cert = BASE64.encode(b"definitely not DER");
        let input = format!(
            "{CERT}-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n\
             -----BEGIN CERTIFICATE-----\n{not_a_cert}\n-----END CERTIFICATE-----\n\
             -----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n\
             -----BEGIN CERTIFICATE-----\nAAAA\n-----END OTHER-----\n\
             {CERT}-----BEGIN CERTIFICATE-----\nAAAA\n"
        );
        let scan = scan(input.as_bytes());
        assert_eq!(scan.certificates, 2);
        assert_eq!(scan.skipped, 5);
        assert_eq!(
            String::from_utf8(scan.pem).unwrap(),
            format!("{CERT}{CERT}")
        );
    }

    #[test]
    fn nothing_in_plain_text_or_empty_input() {
        assert_eq!(scan(b""), Scan::default());
        assert_eq!(scan(b"hello\nworld"), Scan::default());
    }
}
