//! The operator's image list as the cluster holds it, read when none is given on the command
//! line: key `images.json` of ConfigMap `<namespace>/cluster-capi-operator-images` (what the
//! operator mounts), else the keys of `<namespace>/capi-installer-images` (the operator's newer
//! layout: component name → reference). The namespace is `--namespace`'s, never a kubeconfig
//! context's. Validating the references is `crate::images`' job, as for a file.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

use super::objects::ObjectError;
use crate::images::{self, ImageEntry, ImagesError};

/// The namespace the operator and its images ConfigMaps live in.
pub const DEFAULT_NAMESPACE: &str = "openshift-cluster-api-operator";
pub(crate) const IMAGES_CONFIG_MAP: &str = "cluster-capi-operator-images";
pub(crate) const IMAGES_KEY: &str = "images.json";
pub(crate) const INSTALLER_CONFIG_MAP: &str = "capi-installer-images";

/// An image list from the cluster, not yet validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageList {
    /// Where it came from, for errors: `ConfigMap <ns>/<name> key images.json`, and the dump file
    /// when read from one.
    pub origin: String,
    pub contents: ImageListContents,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageListContents {
    /// The text of an images.json.
    ImagesJson(String),
    /// Component name → reference, as written.
    References(BTreeMap<String, String>),
}

impl ImageList {
    /// The entries, validated as an images.json file's are; errors name the ConfigMap.
    pub fn entries(&self) -> Result<Vec<ImageEntry>, ImagesError> {
        match &self.contents {
            ImageListContents::ImagesJson(text) => {
                images::parse_images_json(text.as_bytes(), &self.origin)
            }
            ImageListContents::References(references) => {
                images::from_named_references(references.clone(), &self.origin)
            }
        }
    }
}

/// Why a run has no usable image list (exit 2).
#[derive(Debug, Error)]
pub enum ImageListError {
    #[error(transparent)]
    Invalid(#[from] ImagesError),
    #[error(
        "no image list: {}; give --images-json FILE|DIR, image references (resolve), or the \
         namespace of the operator's images ConfigMaps with --namespace",
        why_none(namespace, *cluster_read)
    )]
    Missing {
        namespace: String,
        cluster_read: bool,
    },
}

impl crate::error::ExitStatus for ImageListError {
    fn exit_code(&self) -> u8 {
        2
    }
}

fn why_none(namespace: &str, cluster_read: bool) -> String {
    if cluster_read {
        format!(
            "neither {} nor {} was found",
            super::notes::config_map(namespace, IMAGES_CONFIG_MAP),
            super::notes::config_map(namespace, INSTALLER_CONFIG_MAP)
        )
    } else {
        "--no-cluster reads no list from a cluster".to_string()
    }
}

/// The run's images: those given on the command line, else the cluster's list (read from
/// `namespace`, unless `cluster_read` is false: `--no-cluster`).
pub fn given_or_cluster(
    given: Option<Vec<ImageEntry>>,
    cluster_list: Option<&ImageList>,
    namespace: &str,
    cluster_read: bool,
) -> Result<Vec<ImageEntry>, ImageListError> {
    match (given, cluster_list) {
        (Some(entries), _) => Ok(entries),
        (None, Some(list)) => Ok(list.entries()?),
        (None, None) => Err(ImageListError::Missing {
            namespace: namespace.to_string(),
            cluster_read,
        }),
    }
}

#[derive(Deserialize)]
struct ConfigMap {
    data: Option<BTreeMap<String, Option<String>>>,
}

/// The list a ConfigMap object holds: `name` says which layout. `origin_suffix` is appended to
/// the origin (the dump file).
pub(crate) fn from_config_map(
    namespace: &str,
    name: &str,
    object: &Value,
    origin_suffix: &str,
) -> Result<ImageList, ObjectError> {
    let data = ConfigMap::deserialize(object)?.data.unwrap_or_default();
    let config_map = super::notes::config_map(namespace, name);
    if name == IMAGES_CONFIG_MAP {
        let Some(Some(text)) = data.get(IMAGES_KEY) else {
            return Err(ObjectError::MissingKey(IMAGES_KEY));
        };
        return Ok(ImageList {
            origin: format!("{config_map} key {IMAGES_KEY}{origin_suffix}"),
            contents: ImageListContents::ImagesJson(text.clone()),
        });
    }
    let references = data
        .into_iter()
        .map(|(key, value)| (key, value.unwrap_or_default()))
        .collect();
    Ok(ImageList {
        origin: format!("{config_map}{origin_suffix}"),
        contents: ImageListContents::References(references),
    })
}

pub(crate) fn first_missing(namespace: &str) -> String {
    format!(
        "{}: not found; trying {}",
        super::notes::config_map(namespace, IMAGES_CONFIG_MAP),
        super::notes::config_map(namespace, INSTALLER_CONFIG_MAP)
    )
}

pub(crate) fn both_missing(namespace: &str) -> String {
    format!(
        "{}: not found; no image list from the cluster",
        super::notes::config_map(namespace, INSTALLER_CONFIG_MAP)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Issue 15 item 3: the two layouts, and an images ConfigMap without its key is an error.
    #[test]
    fn each_config_map_is_read_in_its_layout() {
        let images = json!({"data": {"images.json": "{\"aws\": \"quay.io/a/b:v1\"}"}});
        let list = from_config_map("ns", IMAGES_CONFIG_MAP, &images, "").unwrap();
        assert_eq!(
            list.origin,
            "ConfigMap ns/cluster-capi-operator-images key images.json"
        );
        assert_eq!(
            list.contents,
            ImageListContents::ImagesJson("{\"aws\": \"quay.io/a/b:v1\"}".into())
        );

        let installer = json!({"data": {"aws": "quay.io/a/b:v1", "empty": null}});
        let list = from_config_map("ns", INSTALLER_CONFIG_MAP, &installer, " (in f.yaml)").unwrap();
        assert_eq!(
            list.origin,
            "ConfigMap ns/capi-installer-images (in f.yaml)"
        );
        let ImageListContents::References(refs) = list.contents else {
            panic!("references expected")
        };
        assert_eq!(refs["aws"], "quay.io/a/b:v1");
        assert_eq!(refs["empty"], "");

        let keyless = json!({"data": {"other": "x"}});
        assert_eq!(
            from_config_map("ns", IMAGES_CONFIG_MAP, &keyless, "").map_err(|e| e.to_string()),
            Err("no key images.json".to_string())
        );
    }
}
