//! The OpenShift and core objects this module reads, as small serde structs of just the fields
//! used, and their conversion into `ClusterConfig` parts. Both the API reader and the dump reader
//! go through here, so an object means the same thing wherever it came from.
//!
//! Lists and maps are `Option`s throughout: YAML written by hand (or by `oc`) may say `null`
//! where the API would omit the field, and serde's `default` does not cover `null`.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use thiserror::Error;

use super::pem;
use super::{CaBundle, ClusterConfig, PullSecret};
use crate::plan::mirrors::{MirrorKind, MirrorObject, MirrorRule, RegistrySources, SourcePolicy};
use crate::policy::spec::ImagePolicySpec;
use crate::policy::{PolicyObject, PolicyResource};

/// Why an object (here, or the image list's or proxy's) cannot be read; the caller names the object.
#[derive(Debug, Error)]
pub(crate) enum ObjectError {
    /// A field missing or of the wrong type.
    #[error(transparent)]
    Shape(#[from] serde_json::Error),
    #[error("object has no metadata.name")]
    NoName,
    #[error("binaryData key {key}: not base64: {source}")]
    NotBase64 {
        key: String,
        source: base64::DecodeError,
    },
    #[error("no key {0}")]
    MissingKey(&'static str),
}

/// The kinds this module knows, recognised by apiVersion + kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Known {
    Mirror(MirrorKind),
    Image,
    ConfigMap,
    Secret,
    ClusterImagePolicy,
    ImagePolicy,
}

impl Known {
    pub(crate) fn classify(api_version: &str, kind: &str) -> Option<Known> {
        Some(match (api_version, kind) {
            ("config.openshift.io/v1", "ImageDigestMirrorSet") => {
                Known::Mirror(MirrorKind::ImageDigestMirrorSet)
            }
            ("config.openshift.io/v1", "ImageTagMirrorSet") => {
                Known::Mirror(MirrorKind::ImageTagMirrorSet)
            }
            ("operator.openshift.io/v1alpha1", "ImageContentSourcePolicy") => {
                Known::Mirror(MirrorKind::ImageContentSourcePolicy)
            }
            ("config.openshift.io/v1", "Image") => Known::Image,
            ("v1", "ConfigMap") => Known::ConfigMap,
            ("v1", "Secret") => Known::Secret,
            // v1alpha1 (4.16–4.19) has the same fields as v1 (signature-policy §1).
            ("config.openshift.io/v1" | "config.openshift.io/v1alpha1", "ClusterImagePolicy") => {
                Known::ClusterImagePolicy
            }
            ("config.openshift.io/v1" | "config.openshift.io/v1alpha1", "ImagePolicy") => {
                Known::ImagePolicy
            }
            _ => return None,
        })
    }
}

/// REST coordinates of a mirror kind: (group, version, kind, plural).
pub(crate) fn mirror_resource(
    kind: MirrorKind,
) -> (&'static str, &'static str, &'static str, &'static str) {
    match kind {
        MirrorKind::ImageDigestMirrorSet => (
            "config.openshift.io",
            "v1",
            "ImageDigestMirrorSet",
            "imagedigestmirrorsets",
        ),
        MirrorKind::ImageTagMirrorSet => (
            "config.openshift.io",
            "v1",
            "ImageTagMirrorSet",
            "imagetagmirrorsets",
        ),
        MirrorKind::ImageContentSourcePolicy => (
            "operator.openshift.io",
            "v1alpha1",
            "ImageContentSourcePolicy",
            "imagecontentsourcepolicies",
        ),
    }
}

pub(crate) const MIRROR_KINDS: [MirrorKind; 3] = [
    MirrorKind::ImageDigestMirrorSet,
    MirrorKind::ImageTagMirrorSet,
    MirrorKind::ImageContentSourcePolicy,
];

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Metadata {
    pub(crate) name: Option<String>,
    pub(crate) namespace: Option<String>,
}

/// Just the metadata of any object.
#[derive(Debug, Deserialize)]
pub(crate) struct Named {
    pub(crate) metadata: Option<Metadata>,
}

impl Named {
    pub(crate) fn of(object: &Value) -> (Option<String>, Option<String>) {
        let metadata = Named::deserialize(object)
            .ok()
            .and_then(|n| n.metadata)
            .unwrap_or_default();
        (metadata.namespace, metadata.name)
    }
}

#[derive(Debug, Deserialize)]
struct MirrorSet<S> {
    metadata: Option<Metadata>,
    spec: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdmsSpec {
    image_digest_mirrors: Option<Vec<MirrorEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ItmsSpec {
    image_tag_mirrors: Option<Vec<MirrorEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IcspSpec {
    repository_digest_mirrors: Option<Vec<IcspEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MirrorEntry {
    source: String,
    mirrors: Option<Vec<String>>,
    mirror_source_policy: Option<Policy>,
}

/// ICSP has no policy field: its entries always allow the source.
#[derive(Debug, Deserialize)]
struct IcspEntry {
    source: String,
    mirrors: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
enum Policy {
    AllowContactingSource,
    NeverContactSource,
}

impl From<Policy> for SourcePolicy {
    fn from(p: Policy) -> SourcePolicy {
        match p {
            Policy::AllowContactingSource => SourcePolicy::AllowContactingSource,
            Policy::NeverContactSource => SourcePolicy::NeverContactSource,
        }
    }
}

fn decode<T: DeserializeOwned>(object: &Value) -> Result<T, ObjectError> {
    Ok(T::deserialize(object)?)
}

fn name_of(metadata: Option<Metadata>) -> Result<String, ObjectError> {
    metadata
        .and_then(|m| m.name)
        .filter(|n| !n.is_empty())
        .ok_or(ObjectError::NoName)
}

/// An IDMS, ITMS or ICSP object → a `MirrorObject`, rules in the object's order (their order
/// matters to the mirrors module's merge).
pub(crate) fn mirror_object(kind: MirrorKind, object: &Value) -> Result<MirrorObject, ObjectError> {
    let (name, rules) = match kind {
        MirrorKind::ImageDigestMirrorSet => {
            let set: MirrorSet<IdmsSpec> = decode(object)?;
            let entries = set.spec.and_then(|s| s.image_digest_mirrors);
            (name_of(set.metadata)?, rules(entries))
        }
        MirrorKind::ImageTagMirrorSet => {
            let set: MirrorSet<ItmsSpec> = decode(object)?;
            let entries = set.spec.and_then(|s| s.image_tag_mirrors);
            (name_of(set.metadata)?, rules(entries))
        }
        MirrorKind::ImageContentSourcePolicy => {
            let set: MirrorSet<IcspSpec> = decode(object)?;
            let entries = set.spec.and_then(|s| s.repository_digest_mirrors);
            let rules = entries
                .unwrap_or_default()
                .into_iter()
                .map(|e| MirrorRule {
                    source: e.source,
                    mirrors: e.mirrors.unwrap_or_default(),
                    policy: None,
                })
                .collect();
            (name_of(set.metadata)?, rules)
        }
    };
    Ok(MirrorObject { kind, name, rules })
}

#[derive(Debug, Deserialize)]
struct ImagePolicyObject {
    metadata: Option<Metadata>,
    spec: ImagePolicySpec,
}

/// A ClusterImagePolicy (`cluster`) or an ImagePolicy → a `PolicyResource` naming its object.
pub(crate) fn image_policy(cluster: bool, object: &Value) -> Result<PolicyResource, ObjectError> {
    let decoded: ImagePolicyObject = decode(object)?;
    let namespace = decoded.metadata.as_ref().and_then(|m| m.namespace.clone());
    let name = name_of(decoded.metadata)?;
    let object = if cluster {
        PolicyObject::ClusterImagePolicy { name }
    } else {
        PolicyObject::ImagePolicy {
            namespace: namespace.unwrap_or_default(),
            name,
        }
    };
    Ok(PolicyResource {
        object,
        spec: decoded.spec,
    })
}

fn rules(entries: Option<Vec<MirrorEntry>>) -> Vec<MirrorRule> {
    entries
        .unwrap_or_default()
        .into_iter()
        .map(|e| MirrorRule {
            source: e.source,
            mirrors: e.mirrors.unwrap_or_default(),
            policy: e.mirror_source_policy.map(SourcePolicy::from),
        })
        .collect()
}

#[derive(Debug, Deserialize)]
struct Image {
    spec: Option<ImageSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageSpec {
    #[serde(rename = "additionalTrustedCA")]
    additional_trusted_ca: Option<ConfigMapReference>,
    registry_sources: Option<RegistrySourcesSpec>,
}

#[derive(Debug, Deserialize)]
struct ConfigMapReference {
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistrySourcesSpec {
    insecure_registries: Option<Vec<String>>,
    blocked_registries: Option<Vec<String>>,
    allowed_registries: Option<Vec<String>>,
}

/// image.config/cluster → (additionalTrustedCA name, registry sources). An empty name is the
/// API's way of saying "none".
pub(crate) fn image_config(
    object: &Value,
) -> Result<(Option<String>, RegistrySources), ObjectError> {
    let image: Image = decode(object)?;
    let Some(spec) = image.spec else {
        return Ok((None, RegistrySources::default()));
    };
    let additional = spec
        .additional_trusted_ca
        .and_then(|r| r.name)
        .filter(|n| !n.is_empty());
    let sources = spec
        .registry_sources
        .map(|s| RegistrySources {
            allowed: s.allowed_registries.unwrap_or_default(),
            blocked: s.blocked_registries.unwrap_or_default(),
            insecure: s.insecure_registries.unwrap_or_default(),
        })
        .unwrap_or_default();
    Ok((additional, sources))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigMap {
    data: Option<BTreeMap<String, Option<String>>>,
    binary_data: Option<BTreeMap<String, Option<String>>>,
}

/// A CA ConfigMap → one `CaBundle` per key that holds at least one valid certificate (data first,
/// then binaryData, keys sorted). Keys with nothing usable, and broken blocks, leave a note.
pub(crate) fn ca_bundles(
    namespace: &str,
    name: &str,
    object: &Value,
    config: &mut ClusterConfig,
) -> Result<Vec<CaBundle>, ObjectError> {
    let map: ConfigMap = decode(object)?;
    let mut values: Vec<(String, Vec<u8>)> = Vec::new();
    for (key, value) in map.data.unwrap_or_default() {
        values.push((key, value.unwrap_or_default().into_bytes()));
    }
    for (key, value) in map.binary_data.unwrap_or_default() {
        let bytes = BASE64
            .decode(value.unwrap_or_default().trim())
            .map_err(|source| ObjectError::NotBase64 {
                key: key.clone(),
                source,
            })?;
        values.push((key, bytes));
    }
    let mut bundles = Vec::new();
    for (key, value) in values {
        let scan = pem::scan(&value);
        let what = format!("ConfigMap {namespace}/{name} key {key}");
        if scan.certificates == 0 {
            config.warn(format!(
                "{what}: no valid PEM certificate ({} block(s) skipped); ignored",
                scan.skipped
            ));
            continue;
        }
        if scan.skipped > 0 {
            config.warn(format!(
                "{what}: skipped {} PEM block(s) that are not valid certificates; kept {}",
                scan.skipped, scan.certificates
            ));
        }
        bundles.push(CaBundle {
            namespace: namespace.to_string(),
            config_map: name.to_string(),
            key,
            pem: scan.pem,
        });
    }
    Ok(bundles)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Secret {
    data: Option<BTreeMap<String, Option<String>>>,
    string_data: Option<BTreeMap<String, Option<String>>>,
}

const DOCKERCONFIGJSON: &str = ".dockerconfigjson";

/// The pull secret's `.dockerconfigjson`, if it is usable. must-gather redacts Secret values
/// (empty, missing or a placeholder), so anything that is not base64 of a JSON object counts as
/// absent, with a warning note, rather than failing the run: a pull may not need credentials.
pub(crate) fn pull_secret(
    origin: &str,
    object: &Value,
    config: &mut ClusterConfig,
) -> Result<Option<PullSecret>, ObjectError> {
    let secret: Secret = decode(object)?;
    // stringData (plain text) is what a hand-written manifest may use; the API server merges it
    // over data, so it wins here too.
    let plain = secret
        .string_data
        .and_then(|mut d| d.remove(DOCKERCONFIGJSON))
        .flatten()
        .map(String::into_bytes);
    let bytes = match plain {
        Some(bytes) => Some(bytes),
        None => secret
            .data
            .and_then(|mut d| d.remove(DOCKERCONFIGJSON))
            .flatten()
            .and_then(|encoded| BASE64.decode(encoded.trim()).ok()),
    };
    let usable =
        bytes.filter(|b| matches!(serde_json::from_slice::<Value>(b), Ok(Value::Object(_))));
    match usable {
        Some(dockerconfigjson) => Ok(Some(PullSecret {
            origin: origin.to_string(),
            dockerconfigjson,
        })),
        None => {
            config.warn(format!(
                "{origin}: {DOCKERCONFIGJSON} is missing, empty or not a base64-encoded JSON \
                 object (redacted?); treated as absent"
            ));
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn idms_with_policies_and_null_mirrors() {
        let object = json!({
            "apiVersion": "config.openshift.io/v1", "kind": "ImageDigestMirrorSet",
            "metadata": {"name": "release"},
            "spec": {"imageDigestMirrors": [
                {"source": "quay.io/ocp", "mirrors": ["m.local/ocp", "n.local/ocp"],
                 "mirrorSourcePolicy": "NeverContactSource"},
                {"source": "quay.io/empty", "mirrors": null},
                {"source": "quay.io/allow", "mirrors": ["a.local"], "mirrorSourcePolicy": "AllowContactingSource"}
            ]}
        });
        let o = mirror_object(MirrorKind::ImageDigestMirrorSet, &object).unwrap();
        assert_eq!(o.name, "release");
        let got: Vec<_> = o
            .rules
            .iter()
            .map(|r| (r.source.as_str(), r.mirrors.clone(), r.policy))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "quay.io/ocp",
                    vec!["m.local/ocp".to_string(), "n.local/ocp".to_string()],
                    Some(SourcePolicy::NeverContactSource)
                ),
                ("quay.io/empty", vec![], None),
                (
                    "quay.io/allow",
                    vec!["a.local".to_string()],
                    Some(SourcePolicy::AllowContactingSource)
                ),
            ]
        );
    }

    #[test]
    fn itms_icsp_and_missing_spec() {
        let itms = json!({"metadata": {"name": "t"}, "spec": {"imageTagMirrors": [{"source": "s", "mirrors": ["m"]}]}});
        let o = mirror_object(MirrorKind::ImageTagMirrorSet, &itms).unwrap();
        assert_eq!((o.rules[0].source.as_str(), o.rules[0].policy), ("s", None));
        let icsp = json!({"metadata": {"name": "c"}, "spec": {"repositoryDigestMirrors": [{"source": "s", "mirrors": ["m"]}]}});
        let o = mirror_object(MirrorKind::ImageContentSourcePolicy, &icsp).unwrap();
        assert_eq!(o.rules[0].mirrors, vec!["m".to_string()]);
        let bare = json!({"metadata": {"name": "bare"}});
        assert!(
            mirror_object(MirrorKind::ImageDigestMirrorSet, &bare)
                .unwrap()
                .rules
                .is_empty()
        );
    }

    #[test]
    fn malformed_mirror_objects() {
        let no_name = json!({"spec": {}});
        assert_eq!(
            mirror_object(MirrorKind::ImageDigestMirrorSet, &no_name)
                .unwrap_err()
                .to_string(),
            "object has no metadata.name"
        );
        let bad_policy = json!({"metadata": {"name": "x"}, "spec": {"imageDigestMirrors": [
            {"source": "s", "mirrors": ["m"], "mirrorSourcePolicy": "Sometimes"}]}});
        let err = mirror_object(MirrorKind::ImageDigestMirrorSet, &bad_policy)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `Sometimes`"), "{err}");
        let no_source = json!({"metadata": {"name": "x"}, "spec": {"imageDigestMirrors": [{"mirrors": ["m"]}]}});
        assert!(mirror_object(MirrorKind::ImageDigestMirrorSet, &no_source).is_err());
    }

    #[test]
    fn image_config_fields() {
        let object = json!({"spec": {
            "additionalTrustedCA": {"name": "registry-cas"},
            "registrySources": {"insecureRegistries": ["i.local"], "blockedRegistries": ["b.local"],
                                "allowedRegistries": null, "containerRuntimeSearchRegistries": ["x"]}
        }});
        let (ca, sources) = image_config(&object).unwrap();
        assert_eq!(ca.as_deref(), Some("registry-cas"));
        assert_eq!(sources.insecure, vec!["i.local".to_string()]);
        assert_eq!(sources.blocked, vec!["b.local".to_string()]);
        assert!(sources.allowed.is_empty());
        let empty_name = json!({"spec": {"additionalTrustedCA": {"name": ""}}});
        assert_eq!(image_config(&empty_name).unwrap().0, None);
        assert_eq!(image_config(&json!({})).unwrap().0, None);
    }

    #[test]
    fn pull_secret_valid_string_data_and_redacted_forms() {
        let mut config = ClusterConfig::default();
        let good = BASE64.encode(br#"{"auths":{}}"#);
        let object = json!({"data": {".dockerconfigjson": good}});
        let secret = pull_secret("S", &object, &mut config).unwrap().unwrap();
        assert_eq!(secret.dockerconfigjson, br#"{"auths":{}}"#);
        assert!(!format!("{secret:?}").contains("auths"));

        let plain = json!({"stringData": {".dockerconfigjson": "{\"auths\":{\"a\":{}}}"}, "data": {".dockerconfigjson": good}});
        let secret = pull_secret("S", &plain, &mut config).unwrap().unwrap();
        assert_eq!(secret.dockerconfigjson, br#"{"auths":{"a":{}}}"#);
        assert!(config.notes.is_empty());

        for redacted in [
            json!({"data": {".dockerconfigjson": ""}}),
            json!({"data": {".dockerconfigjson": null}}),
            json!({"data": {}}),
            json!({}),
            json!({"data": {".dockerconfigjson": "<redacted>"}}),
            json!({"data": {".dockerconfigjson": BASE64.encode("[1]")}}),
            json!({"data": {".dockerconfigjson": BASE64.encode("not json")}}),
        ] {
            let mut config = ClusterConfig::default();
            assert!(
                pull_secret("F", &redacted, &mut config).unwrap().is_none(),
                "{redacted}"
            );
            assert_eq!(config.notes.len(), 1);
        }
    }

    #[test]
    fn ca_bundles_from_data_and_binary_data() {
        let cert = super::super::pem::tests::CERT;
        let object = json!({
            "data": {"b.crt": cert, "a..5000": cert, "empty": ""},
            "binaryData": {"bin": BASE64.encode(cert)}
        });
        let mut config = ClusterConfig::default();
        let bundles = ca_bundles("ns", "cm", &object, &mut config).unwrap();
        let keys: Vec<_> = bundles.iter().map(|b| b.key.as_str()).collect();
        assert_eq!(keys, ["a..5000", "b.crt", "bin"]);
        assert!(bundles.iter().all(|b| b.pem == cert.as_bytes()));
        assert_eq!(bundles[0].registry_host(), "a:5000");
        assert_eq!(
            config.notes,
            ["ConfigMap ns/cm key empty: no valid PEM certificate (0 block(s) skipped); ignored"]
        );
        let bad = json!({"binaryData": {"k": "%%%"}});
        assert!(ca_bundles("ns", "cm", &bad, &mut config).is_err());
    }
}
