//! index.json: what the published tree holds, written by a run and read back by the warm check,
//! through one type. An image a signature policy applied to also has a `signature` object (its
//! fields are described in `signature`'s module doc).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::PulledImage;
use super::signature::SignatureRecord;
use crate::images::ImageEntry;
use crate::layers;
use crate::profiles::{self, Metadata, Profile};
use crate::registry::Platform;

/// index.json. The warm check reads only some fields and rebuilds the file to compare it byte for
/// byte, so the fields it does not read may be absent when read.
#[derive(Serialize, Deserialize)]
pub(super) struct IndexJson {
    pub(crate) generator: String,
    pub(crate) platform: String,
    pub(crate) images: Vec<IndexImage>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct IndexImage {
    #[serde(default)]
    pub(crate) names: Vec<String>,
    #[serde(rename = "ref")]
    pub(crate) reference: String,
    pub(crate) source: String,
    pub(crate) digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) index_digest: Option<String>,
    pub(crate) volume: String,
    pub(crate) profiles: Vec<IndexProfile>,
    /// When a signature policy applied (see `signature`'s module doc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) signature: Option<SignatureRecord>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct IndexProfile {
    pub(crate) profile: String,
    #[serde(default)]
    pub(crate) metadata: Metadata,
    #[serde(rename = "contentID", default)]
    pub(crate) content_id: String,
    /// File name → sha256 hex.
    pub(crate) files: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) manifests_path: String,
}

pub(crate) const GENERATOR: &str = concat!("provider-images ", env!("CARGO_PKG_VERSION"));

/// What index.json says of one image: a pulled image, or (warm run) one the published tree already holds.
pub(super) struct Described<'a> {
    entry: &'a ImageEntry,
    source: &'a str,
    digest: &'a str,
    index_digest: Option<&'a str>,
    profiles: &'a [Profile],
    signature: Option<&'a SignatureRecord>,
}

impl PulledImage {
    pub(super) fn described(&self) -> Described<'_> {
        Described {
            entry: &self.entry,
            source: &self.source,
            digest: &self.digest,
            index_digest: self.index_digest.as_deref(),
            profiles: &self.profiles,
            signature: self.signature.as_ref(),
        }
    }
}

pub(super) fn index_json(
    images: &[Described<'_>],
    platform: &Platform,
) -> Result<Vec<u8>, serde_json::Error> {
    let index = IndexJson {
        generator: GENERATOR.to_string(),
        platform: platform.to_string(),
        images: images
            .iter()
            .map(|image| IndexImage {
                names: image.entry.names.clone(),
                reference: image.entry.reference_text.clone(),
                source: image.source.to_string(),
                digest: image.digest.to_string(),
                index_digest: image.index_digest.map(str::to_string),
                volume: image.entry.volume.clone(),
                signature: image.signature.cloned(),
                profiles: image
                    .profiles
                    .iter()
                    .map(|profile| IndexProfile {
                        profile: profile.name.clone(),
                        metadata: profile.metadata.clone(),
                        content_id: profile.content_id.clone(),
                        files: [
                            (
                                profiles::METADATA.to_string(),
                                profile.metadata_sha256.clone(),
                            ),
                            (profiles::MANIFESTS.to_string(), profile.content_id.clone()),
                        ]
                        .into(),
                        manifests_path: format!(
                            "{}/{}/{}/{}",
                            image.entry.volume,
                            layers::SUBTREE,
                            profile.name,
                            profiles::MANIFESTS
                        ),
                    })
                    .collect(),
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&index)?;
    bytes.push(b'\n');
    Ok(bytes)
}
