//! Pushing blobs, manifests, images and indexes to a test registry over the distribution API.

use super::client::HttpResponse;
use super::image::{Image, IndexEntry, ManifestFormat, Platform, index_json, sha256_digest};
use super::registry::Registry;

/// A pushed blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobRef {
    pub digest: String,
    pub size: u64,
}

/// A pushed single-platform image.
#[derive(Clone, Debug)]
pub struct PushedImage {
    pub manifest_digest: String,
    pub manifest_bytes: Vec<u8>,
    pub media_type: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub platform: Platform,
}

impl PushedImage {
    /// This image as an entry of an index, with its platform.
    pub fn index_entry(&self) -> IndexEntry {
        IndexEntry {
            media_type: self.media_type.clone(),
            digest: self.manifest_digest.clone(),
            size: self.manifest_bytes.len() as u64,
            platform: Some(self.platform.clone()),
        }
    }
}

/// A pushed index or manifest list.
#[derive(Clone, Debug)]
pub struct PushedIndex {
    pub digest: String,
    pub bytes: Vec<u8>,
    pub media_type: String,
}

impl Registry {
    /// Uploads a blob: POST to open an upload, then one monolithic PUT with the digest.
    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> BlobRef {
        let digest = sha256_digest(bytes);
        let started = self.client().request(
            "POST",
            &self.url(&format!("/v2/{repo}/blobs/uploads/")),
            &[],
            Vec::new(),
        );
        self.expect_status(&started, 202, "start blob upload");
        let location = started
            .header("location")
            .expect("upload Location header")
            .to_owned();
        // distribution answers with an absolute URL, the spec allows a path; either may carry
        // a query (`_state`) already.
        let mut url = if location.starts_with('/') {
            self.url(&location)
        } else {
            location
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={digest}"));
        let finished = self.client().request(
            "PUT",
            &url,
            &[("content-type", "application/octet-stream")],
            bytes.to_vec(),
        );
        self.expect_status(&finished, 201, &format!("finish blob upload {digest}"));
        BlobRef {
            digest,
            size: bytes.len() as u64,
        }
    }

    /// PUTs a manifest (or index) under a tag or a digest; returns its digest.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> String {
        let response = self.client().request(
            "PUT",
            &self.url(&format!("/v2/{repo}/manifests/{reference}")),
            &[("content-type", media_type)],
            bytes.to_vec(),
        );
        self.expect_status(&response, 201, &format!("push manifest {repo}:{reference}"));
        let digest = sha256_digest(bytes);
        assert_eq!(
            response.header("docker-content-digest"),
            Some(digest.as_str()),
            "registry digested manifest {repo}:{reference} differently"
        );
        digest
    }

    /// Pushes the config, the layers and the manifest of `image`, tagged `tag` or, with None,
    /// by digest only (as the children of an index usually are).
    pub fn push_image(&self, repo: &str, tag: Option<&str>, image: &Image) -> PushedImage {
        let built = image.build();
        let config = self.push_blob(repo, &built.config);
        let layer_digests = image
            .layers
            .iter()
            .map(|layer| self.push_blob(repo, &layer.bytes).digest)
            .collect();
        let reference = tag.map_or_else(|| sha256_digest(&built.manifest), str::to_owned);
        let manifest_digest =
            self.push_manifest(repo, &reference, built.media_type, &built.manifest);
        PushedImage {
            manifest_digest,
            manifest_bytes: built.manifest,
            media_type: built.media_type.to_owned(),
            config_digest: config.digest,
            layer_digests,
            platform: image.platform.clone(),
        }
    }

    /// Pushes an OCI index (or a Docker manifest list) over manifests already in `repo`.
    pub fn push_index(
        &self,
        repo: &str,
        tag: Option<&str>,
        entries: &[IndexEntry],
        format: ManifestFormat,
    ) -> PushedIndex {
        let bytes = index_json(entries, format);
        let media_type = format.index_media_type();
        let reference = tag.map_or_else(|| sha256_digest(&bytes), str::to_owned);
        let digest = self.push_manifest(repo, &reference, media_type, &bytes);
        PushedIndex {
            digest,
            bytes,
            media_type: media_type.to_owned(),
        }
    }

    fn expect_status(&self, response: &HttpResponse, status: u16, what: &str) {
        assert_eq!(
            response.status,
            status,
            "{what}: {}\nregistry log:\n{}",
            response.text(),
            self.log()
        );
    }
}
