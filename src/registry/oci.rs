//! The OCI and Docker v2 documents: manifests, indexes, descriptors, platforms and image configs, and
//! the media types that name them. Parsing only; no I/O.

use bytes::Bytes;
use serde::Deserialize;

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Manifests and configs are small documents; containers/image caps them at 4 MiB (CVE-2020-1702).
pub(crate) const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// Descriptors, manifests, indexes and image configs are oci-spec's (Docker v2s2 documents have
/// the same shape). Where oci-spec refuses what containers/image, and so the node, accepts, the JSON
/// is completed before it is decoded (see [`complete_for_oci_spec`]); where it is stricter in a way the
/// node is too (annotations must be strings: Go's `map[string]string`), it decides.
pub(crate) use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

/// A string annotation of a descriptor.
pub(crate) fn annotation<'a>(descriptor: &'a Descriptor, key: &str) -> Option<&'a str> {
    descriptor
        .annotations()
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// A platform asked for (`--platform`, or the one this binary runs on), matched against the
/// platforms that index entries and image configs declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Platform {
    pub(crate) os: String,
    pub(crate) architecture: String,
    pub(crate) variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(variant) if !variant.is_empty() => write!(f, "/{variant}"),
            _ => Ok(()),
        }
    }
}

impl From<&oci_spec::image::Platform> for Platform {
    fn from(declared: &oci_spec::image::Platform) -> Platform {
        Platform {
            os: declared.os().to_string(),
            architecture: declared.architecture().to_string(),
            variant: declared.variant().clone(),
        }
    }
}

impl From<&ImageConfiguration> for Platform {
    fn from(config: &ImageConfiguration) -> Platform {
        Platform {
            os: config.os().to_string(),
            architecture: config.architecture().to_string(),
            variant: config.variant().clone(),
        }
    }
}

impl Platform {
    /// `os/arch[/variant]`.
    pub(crate) fn parse(text: &str) -> Option<Platform> {
        let mut parts = text.split('/');
        let os = parts.next().filter(|s| !s.is_empty())?;
        let architecture = parts.next().filter(|s| !s.is_empty())?;
        let variant = parts.next().map(str::to_string);
        if parts.next().is_some() || variant.as_deref() == Some("") {
            return None;
        }
        Some(Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant,
        })
    }

    /// The platform this binary runs on, in OCI terms.
    pub(crate) fn running() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "powerpc64" => "ppc64le",
            "x86" => "386",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: None,
        }
    }

    /// Whether a declared platform satisfies this (requested) one: os and architecture equal, and
    /// the variant equal when one was asked for (arm64's implicit variant is v8).
    pub(crate) fn accepts(&self, candidate: &Platform) -> bool {
        let variant = |p: &Platform| match (p.architecture.as_str(), p.variant.as_deref()) {
            ("arm64", None | Some("")) => Some("v8".to_string()),
            (_, Some("")) => None,
            (_, v) => v.map(str::to_string),
        };
        self.os == candidate.os
            && self.architecture == candidate.architecture
            && (self.variant.is_none() || variant(self) == variant(candidate))
    }
}

/// Decodes an image config. containers/image accepts a config without `os`, `architecture` or
/// `rootfs` (Go zero values), which oci-spec requires: they are completed as empty first.
pub(crate) fn parse_config(body: &[u8]) -> Result<ImageConfiguration, serde_json::Error> {
    let mut config: serde_json::Value = serde_json::from_slice(body)?;
    if let Some(object) = config.as_object_mut() {
        for field in ["os", "architecture"] {
            object.entry(field).or_insert_with(|| "".into());
        }
        object
            .entry("rootfs")
            .or_insert_with(|| serde_json::json!({"type": "", "diff_ids": []}));
    }
    serde_json::from_value(config)
}

/// Completes what oci-spec requires and containers/image does not: an index entry's `platform`
/// without `os` or `architecture` (a Go zero value there, so the entry matches no platform asked for).
fn complete_for_oci_spec(document: &mut serde_json::Value) {
    let entries = document
        .get_mut("manifests")
        .and_then(serde_json::Value::as_array_mut);
    for entry in entries.into_iter().flatten() {
        if let Some(platform) = entry
            .get_mut("platform")
            .and_then(serde_json::Value::as_object_mut)
        {
            for field in ["os", "architecture"] {
                platform.entry(field).or_insert_with(|| "".into());
            }
        }
    }
}

/// Decodes `body` as oci-spec's `T`, completed first (see [`complete_for_oci_spec`]).
fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    let mut document: serde_json::Value = serde_json::from_slice(body)?;
    complete_for_oci_spec(&mut document);
    serde_json::from_value(document)
}

#[derive(Debug, Clone)]
pub enum Manifest {
    // Boxed: oci-spec's documents are hundreds of bytes each, and a manifest is moved around whole.
    Image(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

/// A manifest as fetched: its bytes, its digest (computed, and verified when asked by digest), and what
/// it parsed to.
#[derive(Debug, Clone)]
pub(crate) struct FetchedManifest {
    pub(crate) digest: String,
    pub(crate) media_type: String,
    pub(crate) size: u64,
    pub(crate) manifest: Manifest,
    /// The body as served (the digest is of these bytes).
    pub(crate) body: Bytes,
}

/// The shape a manifest body must have, whatever its headers claim (GHSA-5j5w-g665-5m35: a document must
/// not be readable as both an image and an index).
#[derive(Deserialize)]
struct ManifestShape {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<i64>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    config: Option<serde_json::Value>,
    layers: Option<serde_json::Value>,
    manifests: Option<serde_json::Value>,
    #[serde(rename = "fsLayers")]
    fs_layers: Option<serde_json::Value>,
}

/// Why a manifest body was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not a JSON manifest: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("Docker schema 1 manifests are not supported")]
    Schema1,
    #[error("unsupported schemaVersion {0:?}")]
    SchemaVersion(Option<i64>),
    #[error("document has both layers and manifests")]
    Ambiguous,
    #[error("invalid image manifest: {0}")]
    InvalidImage(#[source] serde_json::Error),
    #[error("invalid index: {0}")]
    InvalidIndex(#[source] serde_json::Error),
    #[error("body does not match media type {0}")]
    MediaTypeMismatch(String),
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
}

/// Parses a manifest body, rejecting schema 1, ambiguous documents and unknown media types.
pub fn parse_manifest(
    body: &[u8],
    content_type: &str,
) -> Result<(String, Manifest), ManifestError> {
    let shape: ManifestShape = serde_json::from_slice(body).map_err(ManifestError::NotJson)?;
    let content_type = content_type.split(';').next().unwrap_or("").trim();
    if shape.schema_version == Some(1)
        || shape.fs_layers.is_some()
        || content_type.starts_with(DOCKER_SCHEMA1)
    {
        return Err(ManifestError::Schema1);
    }
    if shape.schema_version != Some(2) {
        return Err(ManifestError::SchemaVersion(shape.schema_version));
    }
    let media_type = shape
        .media_type
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| content_type.to_string());
    let is_image = shape.config.is_some() || shape.layers.is_some();
    let is_index = shape.manifests.is_some();
    if is_image && is_index {
        return Err(ManifestError::Ambiguous);
    }
    let parsed = match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST if !is_index => decode(body)
            .map(|manifest| Manifest::Image(Box::new(manifest)))
            .map_err(ManifestError::InvalidImage)?,
        OCI_INDEX | DOCKER_MANIFEST_LIST if !is_image => decode(body)
            .map(|index| Manifest::Index(Box::new(index)))
            .map_err(ManifestError::InvalidIndex)?,
        OCI_MANIFEST | DOCKER_MANIFEST | OCI_INDEX | DOCKER_MANIFEST_LIST => {
            return Err(ManifestError::MediaTypeMismatch(media_type));
        }
        // Some registries omit the media type for OCI documents; the structure then decides.
        "" | "application/json" if is_index => decode(body)
            .map(|index| Manifest::Index(Box::new(index)))
            .map_err(ManifestError::InvalidIndex)?,
        "" | "application/json" if is_image => decode(body)
            .map(|manifest| Manifest::Image(Box::new(manifest)))
            .map_err(ManifestError::InvalidImage)?,
        other => return Err(ManifestError::UnsupportedMediaType(other.to_string())),
    };
    Ok((media_type, parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema1_and_ambiguous_manifests_are_refused() {
        let schema1 = br#"{"schemaVersion":1,"name":"a","tag":"b","fsLayers":[]}"#;
        assert!(
            parse_manifest(
                schema1,
                "application/vnd.docker.distribution.manifest.v1+prettyjws"
            )
            .unwrap_err()
            .to_string()
            .contains("schema 1")
        );
        let both = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"x","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1},"layers":[],"manifests":[]}"#;
        assert!(
            parse_manifest(both, OCI_MANIFEST)
                .unwrap_err()
                .to_string()
                .contains("both")
        );
        assert!(
            parse_manifest(b"<html>", OCI_MANIFEST)
                .unwrap_err()
                .to_string()
                .contains("not a JSON")
        );
    }

    #[test]
    fn manifests_parse_by_media_type_or_shape() {
        let image = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","size":2},"layers":[]}"#;
        let (media_type, parsed) = parse_manifest(image, OCI_MANIFEST).unwrap();
        assert_eq!(media_type, OCI_MANIFEST);
        assert!(matches!(parsed, Manifest::Image(m) if m.config().size() == 2));
        let list = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
        assert!(matches!(
            parse_manifest(list, "application/json").unwrap().1,
            Manifest::Index(_)
        ));
        let artifact =
            br#"{"schemaVersion":2,"mediaType":"application/vnd.cncf.helm.chart","layers":[]}"#;
        assert!(
            parse_manifest(artifact, "")
                .unwrap_err()
                .to_string()
                .contains("unsupported manifest media type")
        );
    }

    /// Decisions where oci-spec and containers/image differ (issue 8 Part B): what the node accepts
    /// is completed and accepted; what the node refuses too (a non-string annotation: Go's
    /// `map[string]string`) stays refused.
    #[test]
    fn documents_the_node_accepts_are_accepted() {
        let digest = format!("sha256:{}", "b".repeat(64));
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
                {{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":1,"platform":{{"os":"linux"}}}},
                {{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        );
        let Manifest::Index(index) = parse_manifest(index.as_bytes(), OCI_INDEX).unwrap().1 else {
            panic!("an index")
        };
        let platforms: Vec<String> = index
            .manifests()
            .iter()
            .map(|d| Platform::from(d.platform().as_ref().unwrap()).to_string())
            .collect();
        assert_eq!(platforms, ["linux/", "linux/amd64"]);

        let config = parse_config(br#"{"config":{}}"#).unwrap();
        assert_eq!(Platform::from(&config).to_string(), "/");
        let config = parse_config(br#"{"os":"linux","architecture":"arm64","variant":"v8"}"#);
        assert_eq!(
            Platform::from(&config.unwrap()).to_string(),
            "linux/arm64/v8"
        );

        let annotated = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{digest}","size":1}},"layers":[],"annotations":{{"n":1}}}}"#
        );
        let refused = parse_manifest(annotated.as_bytes(), OCI_MANIFEST)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("invalid image manifest"), "{refused}");
    }

    #[test]
    fn platforms_match_with_implicit_arm64_variant() {
        let p = |s| Platform::parse(s).unwrap();
        assert!(p("linux/amd64").accepts(&p("linux/amd64")));
        assert!(!p("linux/amd64").accepts(&p("linux/arm64")));
        assert!(p("linux/arm64").accepts(&p("linux/arm64/v8")));
        assert!(p("linux/arm64/v8").accepts(&p("linux/arm64")));
        assert!(!p("linux/arm/v7").accepts(&p("linux/arm/v6")));
        assert!(p("linux/arm").accepts(&p("linux/arm/v6")));
        assert!(Platform::parse("linux").is_none() && Platform::parse("linux/amd64/").is_none());
    }
}
