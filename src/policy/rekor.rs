//! The Rekor SET in `dev.sigstore.cosign/bundle` (signature-policy §3 "Rekor SET",
//! containers/image `rekor_set.go`): an ECDSA signature by a Rekor key over the RFC 8785
//! canonical JSON of `Payload`, whose `hashedrekord` body must name this very signature,
//! payload hash and signer key.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::keys::PublicKey;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SetError {
    #[error("invalid Rekor SET: {0}")]
    Format(String),
    #[error("cannot canonicalize the Rekor SET payload: {0}")]
    Canonical(&'static str),
    #[error("the Rekor SET signature does not verify with any configured Rekor key")]
    Signature,
    #[error("invalid Rekor SET body: {0}")]
    Body(String),
    #[error("signature in Rekor SET does not match")]
    SignatureMismatch,
    #[error("payload hash in Rekor SET does not match")]
    HashMismatch,
    #[error("public key or certificate in Rekor SET does not match")]
    KeyMismatch,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Set {
    #[serde(rename = "SignedEntryTimestamp")]
    signed_entry_timestamp: String,
    #[serde(rename = "Payload")]
    payload: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPayload {
    body: String,
    #[serde(rename = "integratedTime")]
    integrated_time: i64,
    #[serde(rename = "logIndex")]
    #[allow(dead_code)] // type-checked only, as upstream
    log_index: i64,
    #[serde(rename = "logID")]
    #[allow(dead_code)] // not checked upstream either
    log_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    kind: String,
    #[serde(rename = "apiVersion")]
    api_version: String,
    spec: BodySpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BodySpec {
    signature: BodySignature,
    data: BodyData,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BodySignature {
    content: String,
    #[serde(rename = "publicKey")]
    public_key: BodyContent,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyContent {
    content: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyData {
    hash: BodyHash,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyHash {
    algorithm: String,
    value: String,
}

/// The signer the SET body must name: the DER of the configured key's SubjectPublicKeyInfo
/// (compared as a parsed key), or the DER of the leaf certificate.
pub enum Signer<'a> {
    Key(&'a PublicKey),
    Certificate(&'a [u8]),
}

/// Verifies `set_json` and returns its `integratedTime` (seconds since the epoch).
pub fn verify(
    set_json: &[u8],
    rekor_keys: &[PublicKey],
    signature: &[u8],
    payload: &[u8],
    signer: Signer<'_>,
) -> Result<i64, SetError> {
    let set: Set = serde_json::from_slice(set_json).map_err(|e| SetError::Format(e.to_string()))?;
    let set_signature = STANDARD
        .decode(&set.signed_entry_timestamp)
        .map_err(|e| SetError::Format(e.to_string()))?;
    let mut canonical = Vec::new();
    canonicalize(&set.payload, &mut canonical)?;
    if !rekor_keys
        .iter()
        .any(|key| key.is_ecdsa() && key.verifies(&canonical, &set_signature))
    {
        return Err(SetError::Signature);
    }
    let set_payload: SetPayload = serde_json::from_value(set.payload)
        .map_err(|e| SetError::Format(format!("Payload: {e}")))?;
    let body_bytes = STANDARD
        .decode(&set_payload.body)
        .map_err(|e| SetError::Body(e.to_string()))?;
    let body: Body =
        serde_json::from_slice(&body_bytes).map_err(|e| SetError::Body(e.to_string()))?;
    if body.kind != "hashedrekord" || body.api_version != "0.0.1" {
        return Err(SetError::Body(format!(
            "unsupported entry {} {}",
            body.kind, body.api_version
        )));
    }
    let signed = STANDARD
        .decode(&body.spec.signature.content)
        .map_err(|e| SetError::Body(e.to_string()))?;
    if signed != signature {
        return Err(SetError::SignatureMismatch);
    }
    let hash = &body.spec.data.hash;
    if hash.algorithm != "sha256" || hash.value != hex::encode(Sha256::digest(payload)) {
        return Err(SetError::HashMismatch);
    }
    let key_pem = STANDARD
        .decode(&body.spec.signature.public_key.content)
        .map_err(|e| SetError::Body(e.to_string()))?;
    let block = x509_parser::pem::Pem::iter_from_buffer(&key_pem)
        .next()
        .and_then(Result::ok)
        .ok_or(SetError::KeyMismatch)?;
    let matches = match signer {
        Signer::Key(key) => PublicKey::from_spki(&block.contents).is_ok_and(|k| &k == key),
        Signer::Certificate(der) => block.contents == der,
    };
    if !matches {
        return Err(SetError::KeyMismatch);
    }
    Ok(set_payload.integrated_time)
}

/// RFC 8785 canonical JSON: object keys sorted by UTF-16 code units, no whitespace,
/// ECMAScript string escaping. Numbers must be integers (all a SET payload has); a fraction is
/// refused rather than formatted differently from the signer (stricter).
pub fn canonicalize(value: &serde_json::Value, out: &mut Vec<u8>) -> Result<(), SetError> {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => {
            out.extend(serde_json::to_vec(value).map_err(|_| SetError::Canonical("string"))?)
        }
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                out.extend(n.to_string().as_bytes());
            } else {
                return Err(SetError::Canonical("a number is not an integer"));
            }
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonicalize(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(key).map_err(|_| SetError::Canonical("key"))?);
                out.push(b':');
                canonicalize(item, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    fn canonical(json: &str) -> String {
        let mut out = Vec::new();
        canonicalize(&serde_json::from_str(json).unwrap(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// RFC 8785 §3.2.3 (key order by UTF-16 units) and §3.2.2.2 (string escaping), as the SET
    /// needs (signature-policy §3 "Rekor SET").
    #[test]
    fn canonical_json() {
        assert_eq!(
            canonical(
                r#"{ "b": 1, "a": [true, null, "x\u000f\"/é"], "\uff5e": 0, "\ud83d\ude00": 2 }"#
            ),
            // U+1F600 sorts before U+FF5E by UTF-16 units (0xD83D), after it by UTF-8 bytes.
            "{\"a\":[true,null,\"x\\u000f\\\"/é\"],\"b\":1,\"😀\":2,\"\u{ff5e}\":0}"
        );
        let mut out = Vec::new();
        assert!(canonicalize(&serde_json::json!({"n": 1.5}), &mut out).is_err());
    }

    struct Fixture {
        pair: EcdsaKeyPair,
        key: PublicKey,
        spki_pem: String,
    }

    fn p256() -> Fixture {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        // SPKI = fixed P-256 prefix + uncompressed point.
        let prefix = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
        let spki = [prefix, pair.public_key().as_ref().to_vec()].concat();
        let spki_pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(&spki)
        );
        let key = PublicKey::from_pem(spki_pem.as_bytes()).unwrap();
        Fixture {
            pair,
            key,
            spki_pem,
        }
    }

    fn make_set(
        rekor: &Fixture,
        signer: &Fixture,
        sig: &[u8],
        payload: &[u8],
        time: i64,
    ) -> Vec<u8> {
        let body = serde_json::json!({
            "apiVersion": "0.0.1", "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(payload))}},
                "signature": {"content": STANDARD.encode(sig),
                              "publicKey": {"content": STANDARD.encode(&signer.spki_pem)}}
            }
        });
        let set_payload = serde_json::json!({
            "body": STANDARD.encode(body.to_string()), "integratedTime": time,
            "logIndex": 7, "logID": "00"
        });
        let mut canonical = Vec::new();
        canonicalize(&set_payload, &mut canonical).unwrap();
        let set_sig = rekor.pair.sign(&SystemRandom::new(), &canonical).unwrap();
        serde_json::json!({"SignedEntryTimestamp": STANDARD.encode(set_sig.as_ref()), "Payload": set_payload})
            .to_string()
            .into_bytes()
    }

    /// signature-policy §3 "Rekor SET": a SET made at test time verifies and yields its time;
    /// a wrong Rekor key, signature, payload, signer key or a tampered SET is rejected.
    #[test]
    fn set_rules() {
        let (rekor, signer, other) = (p256(), p256(), p256());
        let sig = signer.pair.sign(&SystemRandom::new(), b"payload").unwrap();
        let set = make_set(&rekor, &signer, sig.as_ref(), b"payload", 1_674_247_893);
        let check =
            |set: &[u8], keys: &[PublicKey], sig: &[u8], payload: &[u8], key: &PublicKey| {
                verify(set, keys, sig, payload, Signer::Key(key))
            };
        let rekor_keys = [other.key.clone(), rekor.key.clone()];
        assert_eq!(
            check(&set, &rekor_keys, sig.as_ref(), b"payload", &signer.key),
            Ok(1_674_247_893)
        );
        assert_eq!(
            check(
                &set,
                std::slice::from_ref(&other.key),
                sig.as_ref(),
                b"payload",
                &signer.key
            ),
            Err(SetError::Signature)
        );
        assert_eq!(
            check(&set, &rekor_keys, b"other sig", b"payload", &signer.key),
            Err(SetError::SignatureMismatch)
        );
        assert_eq!(
            check(&set, &rekor_keys, sig.as_ref(), b"other", &signer.key),
            Err(SetError::HashMismatch)
        );
        assert_eq!(
            check(&set, &rekor_keys, sig.as_ref(), b"payload", &other.key),
            Err(SetError::KeyMismatch)
        );
        let tampered = String::from_utf8(set.clone())
            .unwrap()
            .replace("1674247893", "1674247894");
        assert_eq!(
            check(
                tampered.as_bytes(),
                &rekor_keys,
                sig.as_ref(),
                b"payload",
                &signer.key
            ),
            Err(SetError::Signature)
        );
        assert!(matches!(
            check(
                b"this is not a valid SET",
                &rekor_keys,
                sig.as_ref(),
                b"payload",
                &signer.key
            ),
            Err(SetError::Format(_))
        ));
    }
}
