//! A fingerprint of the rendered policy as it applies to one image: what index.json records so a
//! later run can tell whether the image was verified under the policy it would apply now
//! (issue 16 §7).
//!
//! `sha256:<hex>` over compact JSON with sorted keys: the namespace, the scope, and per
//! requirement its object, root of trust (kind, key fingerprints, certificate digests, subject)
//! and signed identity; a requirement that cannot be built counts by its error (so does a scope
//! the MCO would refuse to render because of `image.config` registrySources).

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::keys::PublicKey;
use super::render::ScopedRequirement;
use super::requirement::{SignedIdentity, TrustRoot};

pub fn fingerprint(namespace: &str, scope: &str, requirements: &[ScopedRequirement]) -> String {
    let requirements: Vec<Value> = requirements
        .iter()
        .map(|scoped| {
            let object = scoped.object.to_string();
            match &scoped.requirement {
                Ok(requirement) => json!({
                    "object": object,
                    "trust": trust(&requirement.trust),
                    "identity": identity(&requirement.identity),
                }),
                Err(error) => json!({"object": object, "error": error.to_string()}),
            }
        })
        .collect();
    let canonical = json!({"namespace": namespace, "scope": scope, "requirements": requirements});
    let bytes = serde_json::to_vec(&canonical).expect("JSON values serialize");
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn keys(keys: &[PublicKey]) -> Vec<String> {
    keys.iter().map(PublicKey::fingerprint).collect()
}

fn certificates(certs: &[rustls_pki_types::CertificateDer<'_>]) -> Vec<String> {
    certs
        .iter()
        .map(|c| hex::encode(Sha256::digest(c.as_ref())))
        .collect()
}

fn trust(trust: &TrustRoot) -> Value {
    match trust {
        TrustRoot::PublicKey {
            keys: k,
            rekor_keys,
        } => {
            json!({"type": "PublicKey", "keys": keys(k), "rekorKeys": keys(rekor_keys)})
        }
        TrustRoot::Fulcio {
            ca,
            oidc_issuer,
            email,
            rekor_keys,
        } => json!({
            "type": "FulcioCAWithRekor",
            "ca": certificates(ca),
            "oidcIssuer": oidc_issuer,
            "email": email,
            "rekorKeys": keys(rekor_keys),
        }),
        TrustRoot::Pki {
            roots,
            intermediates,
            email,
            hostname,
        } => json!({
            "type": "PKI",
            "roots": certificates(roots),
            "intermediates": certificates(intermediates),
            "email": email,
            "hostname": hostname,
        }),
    }
}

fn identity(identity: &SignedIdentity) -> Value {
    match identity {
        SignedIdentity::MatchRepoDigestOrExact => json!({"type": "matchRepoDigestOrExact"}),
        SignedIdentity::MatchRepository => json!({"type": "matchRepository"}),
        SignedIdentity::ExactRepository(repository) => {
            json!({"type": "exactRepository", "dockerRepository": repository})
        }
        SignedIdentity::RemapIdentity {
            prefix,
            signed_prefix,
        } => json!({"type": "remapIdentity", "prefix": prefix, "signedPrefix": signed_prefix}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::render::{PolicyObject, RenderedPolicy};
    use crate::reference::Reference;

    fn policy(identity: &str, namespace: &str) -> RenderedPolicy {
        use base64::Engine;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        // An Ed25519 SubjectPublicKeyInfo over arbitrary key bytes: parsed, never verified here.
        let spki = [
            hex::decode("302a300506032b6570032100").unwrap(),
            vec![7; 32],
        ]
        .concat();
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            b64(&spki)
        );
        let spec = serde_json::from_value(json!({
            "scopes": ["q.io/a"],
            "policy": {"rootOfTrust": {"policyType": "PublicKey",
                                       "publicKey": {"keyData": b64(pem.as_bytes())}},
                       "signedIdentity": {"matchPolicy": identity,
                                          "exactRepository": {"repository": "q.io/x"}}},
        }))
        .unwrap();
        let resource = crate::policy::PolicyResource {
            object: PolicyObject::ClusterImagePolicy { name: "c".into() },
            spec,
        };
        RenderedPolicy::render(&[resource], namespace, &Default::default())
    }

    fn of(policy: &RenderedPolicy, namespace: &str) -> String {
        let (scope, reqs) = policy
            .lookup(&Reference::parse("q.io/a/b:1").unwrap())
            .unwrap();
        fingerprint(namespace, scope, reqs)
    }

    /// Issue 16 §7: the fingerprint follows the requirements and the namespace, and nothing else.
    #[test]
    fn follows_requirements_and_namespace() {
        let a = of(&policy("MatchRepository", "ns"), "ns");
        assert_eq!(a, of(&policy("MatchRepository", "ns"), "ns"));
        assert_ne!(a, of(&policy("MatchRepository", "ns"), "other"));
        assert_ne!(a, of(&policy("ExactRepository", "ns"), "ns"));
        assert!(a.starts_with("sha256:") && a.len() == 71);
    }
}
