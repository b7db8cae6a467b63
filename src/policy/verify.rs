//! Whether an image's sigstore attachments satisfy its requirements, as containers/image's
//! `isSignatureAccepted` and `isRunningImageAllowed` decide (signature-policy §3 steps 1–9):
//! every requirement must pass, and one requirement passes when one signature is accepted.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256, Sha512};
use thiserror::Error;

use super::certificate::{self, CertificateError};
use super::keys::PublicKey;
use super::payload::{self, PayloadError};
use super::rekor::{self, SetError, Signer};
use super::render::{PolicyObject, ScopedRequirement};
use super::requirement::{ConfigError, Requirement, TrustRoot};
use crate::reference::Reference;

/// The media type of a cosign signature layer; other layers are attachments of another kind.
pub const SIGNATURE_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const ANNOTATION_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
const ANNOTATION_CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
const ANNOTATION_CHAIN: &str = "dev.sigstore.cosign/chain";
const ANNOTATION_BUNDLE: &str = "dev.sigstore.cosign/bundle";

/// One layer of the `.sig` manifest: its media type, blob and annotations.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub media_type: String,
    pub payload: Vec<u8>,
    pub annotations: BTreeMap<String, String>,
}

/// Why one signature was not accepted.
#[derive(Debug, Error)]
pub enum SignatureError {
    #[error("missing {0} annotation")]
    MissingAnnotation(&'static str),
    #[error("invalid {ANNOTATION_SIGNATURE} annotation: {0}")]
    Base64(base64::DecodeError),
    #[error("cryptographic signature verification failed")]
    Crypto,
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("signature for digest {signed} does not match the manifest")]
    DigestMismatch { signed: String },
    #[error("signature for identity {signed:?} is not accepted")]
    Identity { signed: String },
    #[error(transparent)]
    Set(#[from] SetError),
    #[error(transparent)]
    Certificate(#[from] CertificateError),
}

/// Why a requirement rejected the image, in the node's words where it has them.
#[derive(Debug, Error)]
pub enum RequirementError {
    #[error("A signature was required, but no signature exists{}", other_attachments(*.0))]
    NoSignature(usize),
    #[error(transparent)]
    Rejected(SignatureError),
    #[error("None of the signatures were accepted, reasons: {}", join(.0))]
    NoneAccepted(Vec<SignatureError>),
    #[error("the policy cannot be evaluated: {0}")]
    Config(#[source] ConfigError),
}

fn other_attachments(count: usize) -> String {
    if count == 0 {
        String::new()
    } else {
        format!(" (0 non-sigstore signatures, {count} sigstore non-signature attachments)")
    }
}

fn join(errors: &[SignatureError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The image failed one requirement of its scope (the caller names the image).
#[derive(Debug, Error)]
#[error("rejected by {object} (scope {scope}): {source}")]
pub struct PolicyError {
    pub object: String,
    pub scope: String,
    #[source]
    pub source: Box<RequirementError>,
}

/// One requirement passed: its object and what verified the accepted signature (`public key
/// sha256:<hex of the key's DER>`, or the certificate's issuer, subject and SANs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub object: PolicyObject,
    pub verified_by: String,
}

/// Checks every requirement of `scope` for `image` (the original reference), `manifest` (the
/// exact bytes of the per-platform manifest used) and its attachments; the first failure wins.
pub fn check_scope(
    scope: &str,
    requirements: &[ScopedRequirement],
    image: &Reference,
    manifest: &[u8],
    attachments: &[Attachment],
) -> Result<Vec<Accepted>, PolicyError> {
    let mut accepted = Vec::with_capacity(requirements.len());
    for scoped in requirements {
        let result = match &scoped.requirement {
            Ok(requirement) => check(requirement, image, manifest, attachments, now()),
            Err(config) => Err(RequirementError::Config(config.clone())),
        };
        let verified_by = result.map_err(|source| PolicyError {
            object: scoped.object.to_string(),
            scope: scope.to_string(),
            source: Box::new(source),
        })?;
        accepted.push(Accepted {
            object: scoped.object.clone(),
            verified_by,
        });
    }
    Ok(accepted)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One requirement: passes when one signature attachment is accepted, and says what verified
/// it. `now_unix` is the time PKI certificates are checked at.
pub fn check(
    requirement: &Requirement,
    image: &Reference,
    manifest: &[u8],
    attachments: &[Attachment],
    now_unix: u64,
) -> Result<String, RequirementError> {
    let signatures: Vec<&Attachment> = attachments
        .iter()
        .filter(|a| a.media_type == SIGNATURE_MEDIA_TYPE)
        .collect();
    if signatures.is_empty() {
        return Err(RequirementError::NoSignature(attachments.len()));
    }
    let mut rejections = Vec::new();
    for signature in signatures {
        match accept(requirement, image, manifest, signature, now_unix) {
            Ok(verified_by) => return Ok(verified_by),
            Err(e) => rejections.push(e),
        }
    }
    if rejections.len() == 1 {
        Err(RequirementError::Rejected(rejections.remove(0)))
    } else {
        Err(RequirementError::NoneAccepted(rejections))
    }
}

fn accept(
    requirement: &Requirement,
    image: &Reference,
    manifest: &[u8],
    attachment: &Attachment,
    now_unix: u64,
) -> Result<String, SignatureError> {
    let annotation = |name: &'static str| attachment.annotations.get(name).map(String::as_bytes);
    let required =
        |name: &'static str| annotation(name).ok_or(SignatureError::MissingAnnotation(name));
    // Go's base64 decoder skips line breaks, and cosign's PKI signatures carry them.
    let encoded: Vec<u8> = required(ANNOTATION_SIGNATURE)?
        .iter()
        .copied()
        .filter(|b| !matches!(b, b'\r' | b'\n'))
        .collect();
    let signature = STANDARD.decode(encoded).map_err(SignatureError::Base64)?;
    let payload = &attachment.payload;

    let (signer, verified_by): (PublicKey, String) = match &requirement.trust {
        TrustRoot::PublicKey { keys, rekor_keys } => {
            let key = if rekor_keys.is_empty() {
                keys.iter()
                    .find(|key| key.verifies(payload, &signature))
                    .cloned()
                    .ok_or(SignatureError::Crypto)?
            } else {
                let set = required(ANNOTATION_BUNDLE)?;
                let mut last = SetError::KeyMismatch;
                let mut found = None;
                for key in keys {
                    match rekor::verify(set, rekor_keys, &signature, payload, Signer::Key(key)) {
                        Ok(_) => {
                            found = Some(key.clone());
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                found.ok_or(last)?
            };
            let verified_by = format!("public key {}", key.fingerprint());
            (key, verified_by)
        }
        TrustRoot::Fulcio {
            ca,
            oidc_issuer,
            email,
            rekor_keys,
        } => {
            let leaf = certificate::leaf(required(ANNOTATION_CERTIFICATE)?)?;
            let intermediates = certificate::chain_intermediates(annotation(ANNOTATION_CHAIN))?;
            let set = required(ANNOTATION_BUNDLE)?;
            let time = rekor::verify(
                set,
                rekor_keys,
                &signature,
                payload,
                Signer::Certificate(&leaf),
            )?;
            let time = u64::try_from(time)
                .map_err(|_| SetError::Format("negative integratedTime".into()))?;
            let key = certificate::verify_chain(&leaf, ca, &intermediates, time)?;
            certificate::check_fulcio_issuer(&leaf, oidc_issuer)?;
            certificate::check_email(&leaf, email)?;
            (key, certificate::describe(&leaf)?)
        }
        TrustRoot::Pki {
            roots,
            intermediates,
            email,
            hostname,
        } => {
            let leaf = certificate::leaf(required(ANNOTATION_CERTIFICATE)?)?;
            let mut untrusted = intermediates.clone();
            untrusted.extend(certificate::chain_intermediates(annotation(
                ANNOTATION_CHAIN,
            ))?);
            let key = certificate::verify_chain(&leaf, roots, &untrusted, now_unix)?;
            if let Some(email) = email {
                certificate::check_email(&leaf, email)?;
            }
            if let Some(hostname) = hostname {
                certificate::check_hostname(&leaf, hostname)?;
            }
            (key, certificate::describe(&leaf)?)
        }
    };
    if !signer.verifies(payload, &signature) {
        return Err(SignatureError::Crypto);
    }
    let signed = payload::parse(payload)?;
    if !digest_matches(manifest, &signed.manifest_digest) {
        return Err(SignatureError::DigestMismatch {
            signed: signed.manifest_digest,
        });
    }
    if !requirement
        .identity
        .accepts(&signed.docker_reference, image)
    {
        return Err(SignatureError::Identity {
            signed: signed.docker_reference,
        });
    }
    Ok(verified_by)
}

/// `manifest.MatchesDigest`: the digest of the exact bytes, in the algorithm the digest names.
fn digest_matches(manifest: &[u8], digest: &str) -> bool {
    match digest.split_once(':') {
        Some(("sha256", hex)) => hex == hex::encode(Sha256::digest(manifest)),
        Some(("sha512", hex)) => hex == hex::encode(Sha512::digest(manifest)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::mirrors::RegistrySources;
    use crate::policy::render::{PolicyObject, PolicyResource, RenderedPolicy};
    use crate::policy::requirement::SignedIdentity;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    const MANIFEST: &[u8] = br#"{"schemaVersion":2}"#;

    fn ed25519() -> (Ed25519KeyPair, Vec<u8>) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let spki = [
            hex::decode("302a300506032b6570032100").unwrap(),
            pair.public_key().as_ref().to_vec(),
        ]
        .concat();
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(spki)
        );
        (pair, pem.into_bytes())
    }

    fn signed(pair: &Ed25519KeyPair, reference: &str, manifest: &[u8]) -> Attachment {
        let payload = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"sha256:{}"}},"type":"cosign container image signature"}},"optional":null}}"#,
            hex::encode(Sha256::digest(manifest))
        )
        .into_bytes();
        let signature = STANDARD.encode(pair.sign(&payload));
        Attachment {
            media_type: SIGNATURE_MEDIA_TYPE.into(),
            payload,
            annotations: [(ANNOTATION_SIGNATURE.to_string(), signature)].into(),
        }
    }

    fn scoped(key_pem: &[u8], identity: SignedIdentity) -> Vec<ScopedRequirement> {
        vec![ScopedRequirement {
            object: PolicyObject::ClusterImagePolicy {
                name: "openshift".into(),
            },
            requirement: TrustRoot::public_keys(&[key_pem], &[])
                .map(|trust| Requirement { trust, identity }),
        }]
    }

    fn message<T: std::fmt::Debug>(result: Result<T, PolicyError>) -> String {
        result.unwrap_err().to_string()
    }

    /// signature-policy §3 step 9 (the node's messages) and §5 "cosign repo-only identity +
    /// default policy (reject)", with an Ed25519 key made here; issue 16 §7: what verified (the
    /// key's fingerprint) is reported.
    #[test]
    fn outcomes_and_messages() {
        let (pair, pem) = ed25519();
        let image = Reference::parse("quay.io/openshift/x:1").unwrap();
        let by_tag = signed(&pair, "quay.io/openshift/x:1", MANIFEST);
        let repo_only = signed(&pair, "quay.io/openshift/x", MANIFEST);
        let default = scoped(&pem, SignedIdentity::MatchRepoDigestOrExact);
        let check = |reqs: &[ScopedRequirement], attachments: &[Attachment]| {
            check_scope("quay.io/openshift", reqs, &image, MANIFEST, attachments)
        };
        let accepted = check(&default, std::slice::from_ref(&by_tag)).unwrap();
        let spki = x509_parser::pem::Pem::iter_from_buffer(&pem)
            .next()
            .unwrap()
            .unwrap()
            .contents;
        assert_eq!(
            accepted,
            [Accepted {
                object: PolicyObject::ClusterImagePolicy {
                    name: "openshift".into()
                },
                verified_by: format!("public key sha256:{}", hex::encode(Sha256::digest(spki))),
            }]
        );
        assert_eq!(
            message(check(&default, &[])),
            "rejected by ClusterImagePolicy openshift (scope quay.io/openshift): \
             A signature was required, but no signature exists"
        );
        assert!(
            message(check(&default, std::slice::from_ref(&repo_only)))
                .ends_with("signature for identity \"quay.io/openshift/x\" is not accepted")
        );
        assert!(
            check(
                &scoped(&pem, SignedIdentity::MatchRepository),
                std::slice::from_ref(&repo_only)
            )
            .is_ok()
        );
        let mut other_manifest = by_tag.clone();
        other_manifest.payload = signed(&pair, "quay.io/openshift/x:1", b"{}").payload;
        assert!(
            message(check(&default, &[repo_only, other_manifest])).contains(
                "None of the signatures were accepted, reasons: signature for identity \"quay.io/openshift/x\" \
                 is not accepted; cryptographic signature verification failed"
            )
        );
        // Signed over other manifest bytes, validly: the digest check refuses it.
        let wrong_digest = signed(&pair, "quay.io/openshift/x:1", b"{}");
        assert!(message(check(&default, &[wrong_digest])).contains("does not match the manifest"));
    }

    /// signature-policy §5 "bad base64" and "`.sig` with only non-simplesigning layers": an
    /// undecodable signature annotation is refused as such (not as a failed verification); a
    /// `.sig` whose layers are all of another media type holds no signature.
    #[test]
    fn bad_base64_and_other_attachments_are_refused() {
        let (pair, pem) = ed25519();
        let image = Reference::parse("quay.io/openshift/x:1").unwrap();
        let reqs = scoped(&pem, SignedIdentity::MatchRepoDigestOrExact);
        let mut bad_base64 = signed(&pair, "quay.io/openshift/x:1", MANIFEST);
        bad_base64
            .annotations
            .insert(ANNOTATION_SIGNATURE.into(), "not base64!".into());
        let refused = message(check_scope(
            "quay.io/openshift",
            &reqs,
            &image,
            MANIFEST,
            &[bad_base64],
        ));
        assert!(
            refused.contains(
                "(scope quay.io/openshift): invalid dev.cosignproject.cosign/signature annotation: "
            ),
            "{refused}"
        );
        let mut other = signed(&pair, "quay.io/openshift/x:1", MANIFEST);
        other.media_type = "application/vnd.dev.sigstore.bundle.v0.3+json".into();
        assert!(
            message(check_scope(
                "quay.io/openshift",
                &reqs,
                &image,
                MANIFEST,
                &[other.clone(), other],
            ))
            .ends_with(
                "A signature was required, but no signature exists (0 non-sigstore signatures, \
                 2 sigstore non-signature attachments)"
            )
        );
    }

    /// A ClusterImagePolicy on `scope` requiring a signature by `key_pem` (wire format).
    fn key_policy(name: &str, scope: &str, key_pem: &[u8]) -> PolicyResource {
        let spec = serde_json::from_value(serde_json::json!({
            "scopes": [scope],
            "policy": {
                "rootOfTrust": {"policyType": "PublicKey", "publicKey": {"keyData": STANDARD.encode(key_pem)}},
                "signedIdentity": {"matchPolicy": "MatchRepository"},
            },
        }))
        .unwrap();
        PolicyResource {
            object: PolicyObject::ClusterImagePolicy { name: name.into() },
            spec,
        }
    }

    /// signature-policy §5 "two CIPs same scope, one unsatisfied (reject)" (§2.2: their
    /// requirements are ANDed): a signature by one CIP's key only is rejected by the other CIP;
    /// signatures by both keys are accepted, one per CIP.
    #[test]
    fn two_cluster_policies_on_one_scope_must_both_pass() {
        let ((pair_a, pem_a), (pair_b, pem_b)) = (ed25519(), ed25519());
        let policy = RenderedPolicy::render(
            &[
                key_policy("a", "quay.io/openshift", &pem_a),
                key_policy("b", "quay.io/openshift", &pem_b),
            ],
            "ns",
            &RegistrySources::default(),
        );
        let image = Reference::parse("quay.io/openshift/x:1").unwrap();
        let (scope, reqs) = policy.lookup(&image).unwrap();
        let check =
            |attachments: &[Attachment]| check_scope(scope, reqs, &image, MANIFEST, attachments);
        let by_a = signed(&pair_a, "quay.io/openshift/x:1", MANIFEST);
        let by_b = signed(&pair_b, "quay.io/openshift/x:1", MANIFEST);
        assert_eq!(
            message(check(std::slice::from_ref(&by_a))),
            "rejected by ClusterImagePolicy b (scope quay.io/openshift): \
             cryptographic signature verification failed"
        );
        assert_eq!(
            message(check(std::slice::from_ref(&by_b))),
            "rejected by ClusterImagePolicy a (scope quay.io/openshift): \
             cryptographic signature verification failed"
        );
        let both = check(&[by_a, by_b]).unwrap();
        let objects: Vec<String> = both.iter().map(|a| a.object.to_string()).collect();
        assert_eq!(objects, ["ClusterImagePolicy a", "ClusterImagePolicy b"]);
    }

    /// signature-policy §3 step 1 and issue 16 §3: a root of trust that cannot be evaluated
    /// rejects the image; a non-ECDSA Rekor key is refused.
    #[test]
    fn unusable_policy_rejects() {
        let (pair, pem) = ed25519();
        let image = Reference::parse("quay.io/openshift/x:1").unwrap();
        let rekor_not_ecdsa = TrustRoot::public_keys(&[&pem], &[&pem]);
        assert!(matches!(
            rekor_not_ecdsa,
            Err(ConfigError::RekorNotEcdsa(1))
        ));
        let reqs = scoped(b"not a key", SignedIdentity::MatchRepository);
        let result = check_scope(
            "quay.io",
            &reqs,
            &image,
            MANIFEST,
            &[signed(&pair, "quay.io/openshift/x:1", MANIFEST)],
        );
        assert!(
            message(result)
                .contains("the policy cannot be evaluated: public key: no PEM block found")
        );
    }
}
