//! Public keys from PEM and signature checks with ring, as sigstore's `LoadVerifier(key, SHA-256)`
//! does them (signature-policy §3 step 5).
//!
//! Stricter than the node, on purpose: ECDSA only on P-256 and P-384 (ring has no P-521; Go
//! verifies any curve it parses), RSA only from 2048 bits (ring's floor). Such keys are refused
//! when the requirement is built, so the image is rejected, never let through unchecked.

use ring::signature::{self, UnparsedPublicKey};
use thiserror::Error;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_ED25519: &str = "1.3.101.112";

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("no PEM block found")]
    NoPem,
    #[error("PEM block of type {0:?} is not a public key")]
    NotPublicKey(String),
    #[error("public key is not valid DER: {0}")]
    BadDer(String),
    #[error("unsupported public key algorithm {0}")]
    UnsupportedAlgorithm(String),
    #[error(
        "unsupported elliptic curve {0} (only P-256 and P-384; P-521 is refused, stricter than the node)"
    )]
    UnsupportedCurve(String),
}

/// What kind of key: decides the ring algorithms tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    EcdsaP384,
    Rsa,
    Ed25519,
}

/// A parsed public key: its kind, the raw key bytes ring wants (EC point, PKCS#1 RSA key,
/// Ed25519 bytes) and the DER it was read from (for its fingerprint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kind: KeyKind,
    raw: Vec<u8>,
    der: Vec<u8>,
}

impl PublicKey {
    /// The first PEM block of `pem` only, as sigstore's `UnmarshalPEMToPublicKey`:
    /// `PUBLIC KEY` (SubjectPublicKeyInfo) or `RSA PUBLIC KEY` (PKCS#1).
    pub fn from_pem(pem: &[u8]) -> Result<PublicKey, KeyError> {
        let block = x509_parser::pem::Pem::iter_from_buffer(pem)
            .next()
            .ok_or(KeyError::NoPem)?
            .map_err(|_| KeyError::NoPem)?;
        match block.label.as_str() {
            "PUBLIC KEY" => PublicKey::from_spki(&block.contents),
            "RSA PUBLIC KEY" => Ok(PublicKey {
                kind: KeyKind::Rsa,
                raw: block.contents.clone(),
                der: block.contents,
            }),
            other => Err(KeyError::NotPublicKey(other.to_string())),
        }
    }

    /// A DER SubjectPublicKeyInfo, with no trailing data.
    pub fn from_spki(der: &[u8]) -> Result<PublicKey, KeyError> {
        let (rest, spki) =
            SubjectPublicKeyInfo::from_der(der).map_err(|e| KeyError::BadDer(e.to_string()))?;
        if !rest.is_empty() {
            return Err(KeyError::BadDer("trailing data".into()));
        }
        let algorithm = spki.algorithm.algorithm.to_id_string();
        let kind = match algorithm.as_str() {
            OID_EC_PUBLIC_KEY => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|oid| oid.to_id_string())
                    .unwrap_or_default();
                match curve.as_str() {
                    OID_P256 => KeyKind::EcdsaP256,
                    OID_P384 => KeyKind::EcdsaP384,
                    _ => return Err(KeyError::UnsupportedCurve(curve)),
                }
            }
            OID_RSA => KeyKind::Rsa,
            OID_ED25519 => KeyKind::Ed25519,
            _ => return Err(KeyError::UnsupportedAlgorithm(algorithm)),
        };
        Ok(PublicKey {
            kind,
            raw: spki.subject_public_key.data.to_vec(),
            der: der.to_vec(),
        })
    }

    /// `sha256:<hex>` of the DER the key was read from: the SubjectPublicKeyInfo (or, for an
    /// `RSA PUBLIC KEY` block, the PKCS#1 key), as `openssl pkey -pubin -outform DER | sha256sum`.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&self.der)))
    }

    pub fn is_ecdsa(&self) -> bool {
        matches!(self.kind, KeyKind::EcdsaP256 | KeyKind::EcdsaP384)
    }

    /// Whether `sig` is this key's signature over SHA-256 of `message`: ECDSA in DER or r‖s,
    /// RSA PKCS#1 v1.5, Ed25519 (pure, over the message itself).
    pub fn verifies(&self, message: &[u8], sig: &[u8]) -> bool {
        let check = |alg: &'static dyn signature::VerificationAlgorithm, sig: &[u8]| {
            UnparsedPublicKey::new(alg, &self.raw)
                .verify(message, sig)
                .is_ok()
        };
        match self.kind {
            KeyKind::EcdsaP256 => {
                check(&signature::ECDSA_P256_SHA256_ASN1, sig)
                    || check(&signature::ECDSA_P256_SHA256_FIXED, sig)
            }
            KeyKind::EcdsaP384 => {
                check(&signature::ECDSA_P384_SHA256_ASN1, sig)
                    || fixed_to_der(sig, 48)
                        .is_some_and(|der| check(&signature::ECDSA_P384_SHA256_ASN1, &der))
            }
            KeyKind::Rsa => check(&signature::RSA_PKCS1_2048_8192_SHA256, sig),
            KeyKind::Ed25519 => check(&signature::ED25519, sig),
        }
    }
}

/// An r‖s signature as DER `SEQUENCE { INTEGER r, INTEGER s }`. ring has no fixed-length
/// P-384/SHA-256 algorithm, and the DER writer is this small.
fn fixed_to_der(sig: &[u8], half: usize) -> Option<Vec<u8>> {
    if sig.len() != 2 * half {
        return None;
    }
    let integer = |bytes: &[u8]| {
        let trimmed = &bytes[bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1)..];
        let mut out = vec![0x02];
        let pad = trimmed[0] & 0x80 != 0;
        out.push((trimmed.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(trimmed);
        out
    };
    let body = [integer(&sig[..half]), integer(&sig[half..])].concat();
    // At most 2 × (2 + 49) = 102 bytes: a short-form length.
    let mut der = vec![0x30, body.len() as u8];
    der.extend(body);
    Some(der)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    fn ecdsa(alg: &'static signature::EcdsaSigningAlgorithm) -> (EcdsaKeyPair, Vec<u8>) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        (pair, point)
    }

    /// signature-policy §3 step 5: ECDSA over SHA-256, signature in DER or IEEE-P1363 r‖s.
    #[test]
    fn ecdsa_der_and_fixed() {
        let rng = SystemRandom::new();
        for alg in [
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        ] {
            let (pair, point) = ecdsa(alg);
            let key = PublicKey {
                kind: KeyKind::EcdsaP256,
                raw: point,
                der: Vec::new(),
            };
            let sig = pair.sign(&rng, b"payload").unwrap();
            assert!(key.verifies(b"payload", sig.as_ref()));
            assert!(!key.verifies(b"payload!", sig.as_ref()));
        }
    }

    /// The r‖s → DER rewrite used for P-384 (ring has no fixed P-384/SHA-256 verifier), checked
    /// on P-256, where ring can sign r‖s and verify DER: high bits padded, leading zeros trimmed.
    #[test]
    fn fixed_to_der_rewrite() {
        let rng = SystemRandom::new();
        let (pair, point) = ecdsa(&signature::ECDSA_P256_SHA256_FIXED_SIGNING);
        for i in 0..32 {
            let message = [i as u8; 8];
            let sig = pair.sign(&rng, &message).unwrap();
            let der = fixed_to_der(sig.as_ref(), 32).unwrap();
            assert!(
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &point)
                    .verify(&message, &der)
                    .is_ok()
            );
        }
        assert_eq!(fixed_to_der(&[1; 95], 48), None);
        // r = 0x80…, s = 0x00…01: a 0x00 pad, then a trimmed one-byte integer.
        let mut sig = vec![0u8; 4];
        sig[0] = 0x80;
        sig[3] = 1;
        assert_eq!(
            fixed_to_der(&sig, 2).unwrap(),
            [0x30, 0x08, 0x02, 0x03, 0x00, 0x80, 0x00, 0x02, 0x01, 0x01]
        );
    }

    /// signature-policy §3 step 5: Ed25519 signs the payload itself.
    #[test]
    fn ed25519() {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let key = PublicKey {
            kind: KeyKind::Ed25519,
            raw: pair.public_key().as_ref().to_vec(),
            der: Vec::new(),
        };
        assert!(key.verifies(b"p", pair.sign(b"p").as_ref()));
        assert!(!key.verifies(b"q", pair.sign(b"p").as_ref()));
    }

    /// signature-policy §3 step 1: only the first PEM block, `PUBLIC KEY` or `RSA PUBLIC KEY`;
    /// §5 item 9: P-521 refused (stricter, ring lacks it).
    #[test]
    fn pem_parsing() {
        // SPKI of a P-521 key: id-ecPublicKey with secp521r1 (1.3.132.0.35); the point is never read.
        let p521 = "-----BEGIN PUBLIC KEY-----\nMBYwEAYHKoZIzj0CAQYFK4EEACMDAgAE\n-----END PUBLIC KEY-----\n";
        assert!(matches!(
            PublicKey::from_pem(p521.as_bytes()),
            Err(KeyError::UnsupportedCurve(c)) if c == "1.3.132.0.35"
        ));
        let private = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(
            PublicKey::from_pem(private.as_bytes()),
            Err(KeyError::NotPublicKey("PRIVATE KEY".into()))
        );
        assert_eq!(PublicKey::from_pem(b"not pem"), Err(KeyError::NoPem));
    }
}
