//! Finding the profiles under `capi-operator-manifests/`, validating them by the operator's rules, and
//! describing them for index.json.
//!
//! A profile is a directory directly under the subtree holding both `metadata.yaml` and `manifests.yaml`
//! as regular files. Exactly one of the two fails the image; neither means "not a profile".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::layers::Subtree;
use crate::registry::sha256_hex;

pub(crate) const METADATA: &str = "metadata.yaml";
pub(crate) const MANIFESTS: &str = "manifests.yaml";

#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum ProfileError {
    #[error("profile {profile}: missing {file}")]
    Missing { profile: String, file: &'static str },
    #[error("failed to parse metadata.yaml for profile {profile}: {cause}")]
    BadMetadata { profile: String, cause: String },
}

/// metadata.yaml as the operator reads it: unknown keys ignored, absent keys empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Metadata {
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) ocp_platform: String,
    #[serde(default)]
    pub(crate) self_image_ref: String,
    #[serde(default)]
    pub(crate) install_order: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Profile {
    pub(crate) name: String,
    pub(crate) metadata: Metadata,
    /// sha256 hex of manifests.yaml as written.
    pub(crate) content_id: String,
    pub(crate) metadata_sha256: String,
}

/// The profiles of a merged subtree, sorted by name. An empty list means the image has none (skipped).
pub(crate) fn discover(subtree: &Subtree) -> Result<Vec<Profile>, ProfileError> {
    let mut profiles = Vec::new();
    if !subtree.exists() {
        return Ok(profiles);
    }
    for name in subtree.children("") {
        if !subtree.is_dir(name) {
            continue;
        }
        let metadata = subtree.file(&format!("{name}/{METADATA}"));
        let manifests = subtree.file(&format!("{name}/{MANIFESTS}"));
        let (metadata, manifests) = match (metadata, manifests) {
            (None, None) => continue,
            (None, Some(_)) => return Err(missing(name, METADATA)),
            (Some(_), None) => return Err(missing(name, MANIFESTS)),
            (Some(metadata), Some(manifests)) => (metadata, manifests),
        };
        profiles.push(describe(name, metadata, manifests)?);
    }
    Ok(profiles)
}

/// The profile `name` made of these two files.
pub(crate) fn describe(
    name: &str,
    metadata: &[u8],
    manifests: &[u8],
) -> Result<Profile, ProfileError> {
    Ok(Profile {
        name: name.to_string(),
        metadata: parse_metadata(name, metadata)?,
        content_id: sha256_hex(manifests),
        metadata_sha256: sha256_hex(metadata),
    })
}

fn missing(profile: &str, file: &'static str) -> ProfileError {
    ProfileError::Missing {
        profile: profile.to_string(),
        file,
    }
}

fn parse_metadata(profile: &str, bytes: &[u8]) -> Result<Metadata, ProfileError> {
    let bad = |cause: String| ProfileError::BadMetadata {
        profile: profile.to_string(),
        cause,
    };
    // An empty document is an empty object for the operator's YAML→JSON decoder.
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if value.is_null() {
        return Ok(Metadata::default());
    }
    serde_yaml_ng::from_value(value).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::testutil::{TarWriter, merge};

    const AWS_METADATA: &str = "name: aws\nattributes:\n  type: infrastructure\n  version: v1.0.0\nocpPlatform: AWS\ninstallOrder: 20\n";

    /// A layer with the given files under capi-operator-manifests/.
    fn layer(files: &[(&str, &str)]) -> Vec<u8> {
        let mut tar = TarWriter::new();
        for (path, content) in files {
            tar.file(
                &format!("capi-operator-manifests/{path}"),
                content.as_bytes(),
            );
        }
        tar.finish()
    }

    fn discover_layers(layers: &[Vec<u8>]) -> Result<Vec<Profile>, ProfileError> {
        discover(&merge(layers).unwrap())
    }

    #[test]
    fn a_single_valid_profile() {
        let manifests = "kind: Deployment\n";
        let profiles = discover_layers(&[layer(&[
            ("default/metadata.yaml", AWS_METADATA),
            ("default/manifests.yaml", manifests),
        ])])
        .unwrap();
        assert_eq!(profiles.len(), 1);
        let profile = &profiles[0];
        assert_eq!(profile.name, "default");
        assert_eq!(profile.metadata.name, "aws");
        assert_eq!(profile.metadata.ocp_platform, "AWS");
        // sha256 of "kind: Deployment\n", computed with sha256sum.
        assert_eq!(
            profile.content_id,
            "2e15259aa2d978f7affbf2000945c972ebf0beed0e2dcb7b0c490ee33871f120"
        );
    }

    #[test]
    fn an_image_without_the_directory_has_no_profiles() {
        let mut tar = TarWriter::new();
        tar.file("some-other-file.txt", b"x");
        assert_eq!(discover_layers(&[tar.finish()]).unwrap(), vec![]);
    }

    #[test]
    fn one_file_of_two_fails_the_image() {
        let err = discover_layers(&[layer(&[("default/manifests.yaml", "a: b\n")])]).unwrap_err();
        assert_eq!(err.to_string(), "profile default: missing metadata.yaml");
        let err =
            discover_layers(&[layer(&[("default/metadata.yaml", AWS_METADATA)])]).unwrap_err();
        assert_eq!(err.to_string(), "profile default: missing manifests.yaml");
    }

    #[test]
    fn the_upper_layer_wins() {
        let lower = layer(&[
            ("default/metadata.yaml", AWS_METADATA),
            ("default/manifests.yaml", "content: from-lower-layer\n"),
        ]);
        let upper = layer(&[
            (
                "default/metadata.yaml",
                "name: aws-new\nattributes:\n  type: NewType\n  version: v2.0.0\ninstallOrder: 20\n",
            ),
            ("default/manifests.yaml", "content: from-higher-layer\n"),
        ]);
        let profiles = discover_layers(&[lower, upper]).unwrap();
        assert_eq!(profiles[0].metadata.name, "aws-new");
        assert_eq!(profiles[0].metadata.attributes["version"], "v2.0.0");
        assert_eq!(
            profiles[0].content_id,
            sha256_hex(b"content: from-higher-layer\n")
        );
    }

    #[test]
    fn several_profiles_sorted_and_non_profile_directories_skipped() {
        let profiles = discover_layers(&[layer(&[
            (
                "techpreview/metadata.yaml",
                "name: aws\nattributes:\n  version: v2\n",
            ),
            ("techpreview/manifests.yaml", "b: 2\n"),
            (
                "default/metadata.yaml",
                "name: aws\nattributes:\n  version: v1\nocpPlatform: \"\"\n",
            ),
            ("default/manifests.yaml", "a: 1\n"),
            ("randomdir/somefile.txt", "x"),
            ("stray.yaml", "x"),
        ])])
        .unwrap();
        let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["default", "techpreview"]);
        assert_eq!(profiles[1].metadata.attributes["version"], "v2");
    }

    #[test]
    fn a_whited_out_metadata_file_leaves_an_incomplete_profile() {
        let lower = layer(&[
            ("p/metadata.yaml", AWS_METADATA),
            ("p/manifests.yaml", "a: 1\n"),
        ]);
        let mut upper = TarWriter::new();
        upper.file("capi-operator-manifests/p/.wh.metadata.yaml", b"");
        let err = discover_layers(&[lower, upper.finish()]).unwrap_err();
        assert_eq!(err.to_string(), "profile p: missing metadata.yaml");
    }

    #[test]
    fn metadata_keeps_known_fields_and_ignores_unknown_ones() {
        let yaml = b"name: aws\nattributes:\n  type: infrastructure\n  version: v1.0.0\nocpPlatform: AWS\nselfImageRef: PLACEHOLDER\ninstallOrder: 20\nextra: [1, 2]\n";
        let metadata = parse_metadata("default", yaml).unwrap();
        assert_eq!(metadata.name, "aws");
        assert_eq!(metadata.attributes["type"], "infrastructure");
        assert_eq!(metadata.attributes["version"], "v1.0.0");
        assert_eq!(metadata.ocp_platform, "AWS");
        assert_eq!(metadata.self_image_ref, "PLACEHOLDER");
        assert_eq!(metadata.install_order, 20);
    }

    #[test]
    fn metadata_with_only_unknown_keys_is_accepted() {
        let metadata = parse_metadata("p", b"providerName: x\nproviderType: y\n").unwrap();
        assert_eq!(metadata, Metadata::default());
    }

    #[test]
    fn invalid_metadata_names_the_profile() {
        let err = parse_metadata("default", b"not: valid: yaml: content: [[[").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("failed to parse metadata.yaml for profile default"),
            "{err}"
        );
    }

    #[test]
    fn metadata_serialises_with_the_operators_field_names() {
        let json = serde_json::to_value(
            parse_metadata("p", b"name: aws\nocpPlatform: AWS\ninstallOrder: 20\n").unwrap(),
        )
        .unwrap();
        assert_eq!(json["ocpPlatform"], "AWS");
        assert_eq!(json["installOrder"], 20);
        assert_eq!(json["selfImageRef"], "");
    }
}
