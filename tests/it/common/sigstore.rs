//! Cosign-style signatures made at test time (signature-policy §4 "Generate fixtures instead"):
//! an ECDSA P-256 key (ring), the simple-signing payload, the `.sig` manifest pushed under a
//! repository as `sha256-<hex>.sig`, and ClusterImagePolicy / ImagePolicy objects naming the key.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

use super::image::{OCI_MANIFEST, sha256_digest};
use super::registry::Registry;

pub const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// SubjectPublicKeyInfo DER up to the P-256 point: id-ecPublicKey, prime256v1, BIT STRING.
const P256_SPKI_PREFIX: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200";

/// An ECDSA P-256 signing key.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl SigningKey {
    pub fn generate() -> SigningKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        SigningKey { pair, rng }
    }

    /// The public key's SubjectPublicKeyInfo, DER.
    pub fn spki_der(&self) -> Vec<u8> {
        let mut der = hex::decode(P256_SPKI_PREFIX).unwrap();
        der.extend_from_slice(self.pair.public_key().as_ref());
        der
    }

    /// `-----BEGIN PUBLIC KEY-----` PEM, as a policy's `keyData` holds it (before base64).
    pub fn public_pem(&self) -> String {
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(self.spki_der())
        )
    }

    /// `public key sha256:<hex of the SPKI DER>`, as index.json records what verified.
    pub fn verified_by(&self) -> String {
        format!("public key {}", sha256_digest(&self.spki_der()))
    }

    /// ECDSA over SHA-256, ASN.1 DER.
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        self.pair.sign(&self.rng, data).unwrap().as_ref().to_vec()
    }

    /// A signature layer for `manifest_digest`, claiming `docker_reference`.
    pub fn signature_layer(&self, docker_reference: &str, manifest_digest: &str) -> SignatureLayer {
        let payload = payload(docker_reference, manifest_digest);
        let signature = STANDARD.encode(self.sign(&payload));
        SignatureLayer {
            media_type: SIMPLESIGNING.to_string(),
            payload,
            annotations: [(SIGNATURE_ANNOTATION.to_string(), signature)].into(),
        }
    }
}

/// The cosign simple-signing payload (signature-policy §3 step 6).
pub fn payload(docker_reference: &str, manifest_digest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .unwrap()
}

/// One layer of a `.sig` manifest.
#[derive(Clone, Debug)]
pub struct SignatureLayer {
    pub media_type: String,
    pub payload: Vec<u8>,
    pub annotations: BTreeMap<String, String>,
}

/// `sha256:<hex>` → `sha256-<hex>.sig`.
pub fn signature_tag(manifest_digest: &str) -> String {
    format!("{}.sig", manifest_digest.replacen(':', "-", 1))
}

impl Registry {
    /// Pushes the `.sig` manifest of `manifest_digest` under `repo`: an OCI image manifest
    /// whose layers are `layers`, as cosign writes it.
    pub fn push_signatures(&self, repo: &str, manifest_digest: &str, layers: &[SignatureLayer]) {
        let config = self.push_blob(repo, b"{}");
        let layers: Vec<Value> = layers
            .iter()
            .map(|layer| {
                let blob = self.push_blob(repo, &layer.payload);
                json!({"mediaType": layer.media_type, "size": blob.size,
                       "digest": blob.digest, "annotations": layer.annotations})
            })
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "size": config.size, "digest": config.digest},
            "layers": layers,
        });
        self.push_manifest(
            repo,
            &signature_tag(manifest_digest),
            OCI_MANIFEST,
            &serde_json::to_vec(&manifest).unwrap(),
        );
    }
}

/// `spec` of a policy object with a PublicKey root of trust.
pub fn public_key_policy(scopes: &[&str], key: &SigningKey, match_policy: &str) -> Value {
    json!({
        "scopes": scopes,
        "policy": {
            "rootOfTrust": {"policyType": "PublicKey",
                            "publicKey": {"keyData": STANDARD.encode(key.public_pem())}},
            "signedIdentity": {"matchPolicy": match_policy},
        },
    })
}

pub fn cluster_image_policy(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "config.openshift.io/v1", "kind": "ClusterImagePolicy",
           "metadata": {"name": name}, "spec": spec})
}

pub fn image_policy(namespace: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "config.openshift.io/v1", "kind": "ImagePolicy",
           "metadata": {"name": name, "namespace": namespace}, "spec": spec})
}
