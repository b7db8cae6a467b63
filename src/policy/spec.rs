//! The `spec` of `ClusterImagePolicy` and `ImagePolicy` (`config.openshift.io/v1`; v1alpha1 has
//! the same fields), as the API serves it: byte fields are base64 strings (signature-policy §1).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer};

/// Identical for both kinds.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImagePolicySpec {
    pub scopes: Vec<String>,
    pub policy: PolicySpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    pub root_of_trust: RootOfTrust,
    #[serde(default)]
    pub signed_identity: Option<SignedIdentitySpec>,
}

/// A union on `policyType`: only the member it names is read.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RootOfTrust {
    pub policy_type: String,
    #[serde(default)]
    pub public_key: Option<PublicKeySpec>,
    #[serde(default, rename = "fulcioCAWithRekor")]
    pub fulcio_ca_with_rekor: Option<FulcioSpec>,
    #[serde(default)]
    pub pki: Option<PkiSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicKeySpec {
    pub key_data: Bytes,
    #[serde(default)]
    pub rekor_key_data: Option<Bytes>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FulcioSpec {
    #[serde(rename = "fulcioCAData")]
    pub fulcio_ca_data: Bytes,
    pub rekor_key_data: Bytes,
    pub fulcio_subject: FulcioSubject,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FulcioSubject {
    pub oidc_issuer: String,
    pub signed_email: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PkiSpec {
    #[serde(rename = "caRootsData")]
    pub ca_roots_data: Bytes,
    #[serde(default, rename = "caIntermediatesData")]
    pub ca_intermediates_data: Option<Bytes>,
    pub pki_certificate_subject: PkiSubject,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PkiSubject {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedIdentitySpec {
    pub match_policy: String,
    #[serde(default)]
    pub exact_repository: Option<ExactRepositorySpec>,
    #[serde(default)]
    pub remap_identity: Option<RemapIdentitySpec>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ExactRepositorySpec {
    pub repository: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemapIdentitySpec {
    pub prefix: String,
    pub signed_prefix: String,
}

/// A Kubernetes `[]byte` field: base64 on the wire, bytes here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Bytes)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// signature-policy §1: the v1 wire fields, byte fields base64.
    #[test]
    fn parses_the_wire_format() {
        let spec: ImagePolicySpec = serde_json::from_str(
            r#"{"scopes":["quay.io/openshift-release-dev/ocp-release"],
                "policy":{"rootOfTrust":{"policyType":"FulcioCAWithRekor",
                  "fulcioCAWithRekor":{"fulcioCAData":"Y2E=","rekorKeyData":"cms=",
                    "fulcioSubject":{"oidcIssuer":"https://i","signedEmail":"a@b"}}},
                  "signedIdentity":{"matchPolicy":"RemapIdentity",
                    "remapIdentity":{"prefix":"m.io/x","signedPrefix":"q.io/x"}}}}"#,
        )
        .unwrap();
        let fulcio = spec.policy.root_of_trust.fulcio_ca_with_rekor.unwrap();
        assert_eq!(fulcio.fulcio_ca_data, Bytes(b"ca".to_vec()));
        assert_eq!(fulcio.rekor_key_data, Bytes(b"rk".to_vec()));
        let remap = spec.policy.signed_identity.unwrap().remap_identity.unwrap();
        assert_eq!(remap.signed_prefix, "q.io/x");
        assert!(serde_json::from_str::<Bytes>(r#""not base64!""#).is_err());
    }
}
