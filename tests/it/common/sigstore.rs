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

pub const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";

impl SignatureLayer {
    /// A signature layer over `payload` with the raw `signature` in its annotation.
    pub fn new(payload: Vec<u8>, signature: &[u8]) -> SignatureLayer {
        SignatureLayer {
            media_type: SIMPLESIGNING.to_string(),
            payload,
            annotations: [(SIGNATURE_ANNOTATION.to_string(), STANDARD.encode(signature))].into(),
        }
    }

    pub fn with(mut self, annotation: &str, value: impl Into<String>) -> SignatureLayer {
        self.annotations
            .insert(annotation.to_string(), value.into());
        self
    }

    /// The raw signature of the layer's annotation.
    pub fn signature(&self) -> Vec<u8> {
        STANDARD
            .decode(&self.annotations[SIGNATURE_ANNOTATION])
            .unwrap()
    }
}

impl SigningKey {
    /// The `dev.sigstore.cosign/bundle` annotation a Rekor log with this key would give for
    /// `layer`'s signature by `signer_pem` (a public key or a certificate), logged at
    /// `integrated_time` (signature-policy §4 "Rekor SET"). The SET signs the RFC 8785 form of
    /// `Payload`: for its four ASCII keys and integer/string values that is serde_json's compact
    /// output with sorted keys, made here independently of the crate's canonicalizer.
    pub fn rekor_bundle(
        &self,
        layer: &SignatureLayer,
        signer_pem: &str,
        integrated_time: i64,
    ) -> String {
        let body = json!({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256",
                                  "value": sha256_digest(&layer.payload).trim_start_matches("sha256:")}},
                "signature": {"content": STANDARD.encode(layer.signature()),
                              "publicKey": {"content": STANDARD.encode(signer_pem)}},
            },
        });
        let payload = json!({
            "body": STANDARD.encode(serde_json::to_vec(&body).unwrap()),
            "integratedTime": integrated_time,
            "logID": sha256_digest(&self.spki_der()).trim_start_matches("sha256:"),
            "logIndex": 7,
        });
        let canonical = serde_json::to_vec(&payload).unwrap();
        json!({"SignedEntryTimestamp": STANDARD.encode(self.sign(&canonical)), "Payload": payload})
            .to_string()
    }
}

/// `spec` of a policy object with a PublicKey root of trust and a Rekor key.
pub fn public_key_rekor_policy(scopes: &[&str], key: &SigningKey, rekor: &SigningKey) -> Value {
    let mut spec = public_key_policy(scopes, key, "MatchRepoDigestOrExact");
    spec["policy"]["rootOfTrust"]["publicKey"]["rekorKeyData"] =
        json!(STANDARD.encode(rekor.public_pem()));
    spec
}

/// Code-signing certificates made with the `openssl` CLI: a root, optionally an intermediate,
/// and leaves with EKU codeSigning, an email SAN and (for Fulcio) the OIDC issuer extension
/// `1.3.6.1.4.1.57264.1.1` (raw bytes), each with chosen dates.
pub struct CodeSigningCa {
    dir: tempfile::TempDir,
}

/// A leaf certificate and its key.
pub struct CodeSigningLeaf {
    pub cert_pem: String,
    dir: std::path::PathBuf,
    key: String,
}

impl CodeSigningCa {
    /// A root valid 2020–2040 and, with `intermediate`, an intermediate CA under it.
    pub fn new(intermediate: bool, email: &str, oidc_issuer: &str) -> CodeSigningCa {
        let dir = tempfile::Builder::new()
            .prefix("harness-codesigning-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let cnf = format!(
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n\
             [root_ext]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n\
             subjectKeyIdentifier = hash\n\
             [intermediate_ext]\nbasicConstraints = critical, CA:TRUE, pathlen:0\n\
             keyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n\
             authorityKeyIdentifier = keyid\n\
             [leaf_ext]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n\
             extendedKeyUsage = codeSigning\nsubjectAltName = email:{email}\n\
             subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n\
             1.3.6.1.4.1.57264.1.1 = DER:{}\n\
             [ca]\ndefault_ca = dated\n[dated]\ndatabase = index.txt\nnew_certs_dir = .\n\
             serial = serial\ndefault_md = sha256\npolicy = any_name\nunique_subject = no\n\
             [any_name]\ncommonName = supplied\n",
            hex::encode(oidc_issuer)
        );
        std::fs::write(d.join("cs.cnf"), cnf).unwrap();
        std::fs::write(d.join("index.txt"), "").unwrap();
        std::fs::write(d.join("serial"), "01\n").unwrap();
        let ca = CodeSigningCa { dir };
        ca.request("root");
        ca.sign_with(
            "-selfsign -keyfile root.key",
            "root",
            "root_ext",
            "20200101000000Z",
            "20400101000000Z",
        );
        if intermediate {
            ca.request("intermediate");
            ca.sign_with(
                "-cert root.pem -keyfile root.key",
                "intermediate",
                "intermediate_ext",
                "20200101000000Z",
                "20400101000000Z",
            );
        }
        ca
    }

    fn request(&self, name: &str) {
        super::pki::openssl(
            self.dir.path(),
            &format!(
                "req -new -config cs.cnf -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                 -keyout {name}.key -out {name}.csr -subj /CN={name}"
            ),
            b"",
        );
    }

    fn sign_with(&self, issuer: &str, name: &str, extensions: &str, start: &str, end: &str) {
        super::pki::openssl(
            self.dir.path(),
            &format!(
                "ca -batch -config cs.cnf {issuer} -in {name}.csr -out {name}.pem -notext \
                 -extensions {extensions} -startdate {start} -enddate {end}"
            ),
            b"",
        );
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.pem"))).unwrap()
    }

    pub fn root_pem(&self) -> String {
        self.read("root")
    }

    pub fn intermediate_pem(&self) -> String {
        self.read("intermediate")
    }

    /// A leaf named `name`, signed by the intermediate (when there is one) or the root, valid
    /// from `start` to `end` (`YYYYMMDDHHMMSSZ`).
    pub fn leaf(&self, name: &str, start: &str, end: &str) -> CodeSigningLeaf {
        let issuer = if self.dir.path().join("intermediate.pem").exists() {
            "intermediate"
        } else {
            "root"
        };
        self.request(name);
        self.sign_with(
            &format!("-cert {issuer}.pem -keyfile {issuer}.key"),
            name,
            "leaf_ext",
            start,
            end,
        );
        CodeSigningLeaf {
            cert_pem: self.read(name),
            dir: self.dir.path().to_path_buf(),
            key: format!("{name}.key"),
        }
    }
}

impl CodeSigningLeaf {
    /// A signature layer over the payload for `docker_reference` and `manifest_digest`, signed
    /// by the leaf's key (ECDSA P-256, SHA-256, DER), carrying the leaf certificate.
    pub fn signature_layer(&self, docker_reference: &str, manifest_digest: &str) -> SignatureLayer {
        let payload = payload(docker_reference, manifest_digest);
        std::fs::write(self.dir.join("payload.bin"), &payload).unwrap();
        super::pki::openssl(
            &self.dir,
            &format!("dgst -sha256 -sign {} -out sig.bin payload.bin", self.key),
            b"",
        );
        let signature = std::fs::read(self.dir.join("sig.bin")).unwrap();
        SignatureLayer::new(payload, &signature).with(CERTIFICATE_ANNOTATION, self.cert_pem.clone())
    }
}
