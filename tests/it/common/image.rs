//! Image documents built in memory, no registry involved: compressed layers with their media
//! types and DiffIDs, the image config, manifests (OCI or Docker v2s2) and indexes.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

/// Two gzip members, `data[..split_at]` and `data[split_at..]`, back to back, as pigz -i and
/// mgzip write: a reader that stops after the first member loses the rest.
pub fn gzip_multi_member(data: &[u8], split_at: usize) -> Vec<u8> {
    let (first, second) = data.split_at(split_at);
    [gzip(first), gzip(second)].concat()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    ::zstd::encode_all(data, 3).expect("zstd")
}

/// A layer blob as pushed. Fields are public so a test can lie: a wrong media type, a wrong
/// DiffID, bytes that don't match either.
#[derive(Clone, Debug)]
pub struct Layer {
    pub bytes: Vec<u8>,
    /// An OCI layer media type; Docker manifests translate it (see `ManifestFormat`).
    pub media_type: String,
    /// `sha256:` of the uncompressed tar, for the config's `rootfs.diff_ids`.
    pub diff_id: String,
}

impl Layer {
    pub fn uncompressed(tar: &[u8]) -> Self {
        Layer::new(tar.to_vec(), OCI_LAYER_TAR, tar)
    }

    pub fn gzip(tar: &[u8]) -> Self {
        Layer::new(gzip(tar), OCI_LAYER_GZIP, tar)
    }

    pub fn gzip_multi_member(tar: &[u8], split_at: usize) -> Self {
        Layer::new(gzip_multi_member(tar, split_at), OCI_LAYER_GZIP, tar)
    }

    pub fn zstd(tar: &[u8]) -> Self {
        Layer::new(zstd(tar), OCI_LAYER_ZSTD, tar)
    }

    fn new(bytes: Vec<u8>, media_type: &str, tar: &[u8]) -> Self {
        Layer {
            bytes,
            media_type: media_type.to_owned(),
            diff_id: sha256_digest(tar),
        }
    }
}

/// An OCI platform: `os`, `architecture` and maybe `variant`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`, e.g. `linux/arm64/v8`.
    pub fn parse(text: &str) -> Self {
        let mut parts = text.split('/');
        let (Some(os), Some(architecture)) = (parts.next(), parts.next()) else {
            panic!("platform {text:?} is not os/arch[/variant]");
        };
        Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: parts.next().map(str::to_owned),
        }
    }

    /// The platform the tests run on, which the binary picks from an index by default.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform::parse(&format!("linux/{architecture}"))
    }

    fn json(&self) -> Value {
        let mut platform = json!({"os": self.os, "architecture": self.architecture});
        if let Some(variant) = &self.variant {
            platform["variant"] = json!(variant);
        }
        platform
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestFormat {
    Oci,
    /// Docker image manifest v2 schema 2 and manifest list.
    Docker,
}

impl ManifestFormat {
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => OCI_MANIFEST,
            ManifestFormat::Docker => DOCKER_MANIFEST,
        }
    }

    pub fn index_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => OCI_INDEX,
            ManifestFormat::Docker => DOCKER_MANIFEST_LIST,
        }
    }

    fn config_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => OCI_CONFIG,
            ManifestFormat::Docker => DOCKER_CONFIG,
        }
    }

    /// Docker v2s2 has its own names for the OCI tar and tar+gzip types; anything else (zstd,
    /// a deliberately bogus type) is kept as the layer says.
    fn layer_media_type(self, layer: &Layer) -> &str {
        match (self, layer.media_type.as_str()) {
            (ManifestFormat::Docker, OCI_LAYER_GZIP) => DOCKER_LAYER_GZIP,
            (ManifestFormat::Docker, OCI_LAYER_TAR) => DOCKER_LAYER_TAR,
            (_, media_type) => media_type,
        }
    }
}

/// A single-platform image: OCI for the host platform unless told otherwise.
#[derive(Clone, Debug)]
pub struct Image {
    pub layers: Vec<Layer>,
    pub platform: Platform,
    pub format: ManifestFormat,
}

/// An image's documents, ready to push: the config blob, then the manifest that names it and
/// the layers.
pub struct BuiltImage {
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    pub media_type: &'static str,
}

impl Image {
    pub fn new(layers: Vec<Layer>) -> Self {
        Image {
            layers,
            platform: Platform::host(),
            format: ManifestFormat::Oci,
        }
    }

    pub fn format(mut self, format: ManifestFormat) -> Self {
        self.format = format;
        self
    }

    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    pub fn build(&self) -> BuiltImage {
        let mut config = json!({
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "rootfs": {
                "type": "layers",
                "diff_ids": self.layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>(),
            },
            "config": {},
        });
        if let Some(variant) = &self.platform.variant {
            config["variant"] = json!(variant);
        }
        let config = serde_json::to_vec(&config).expect("serialize config");
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|layer| descriptor(self.format.layer_media_type(layer), &layer.bytes))
            .collect();
        let media_type = self.format.manifest_media_type();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": descriptor(self.format.config_media_type(), &config),
            "layers": layers,
        });
        BuiltImage {
            config,
            manifest: serde_json::to_vec(&manifest).expect("serialize manifest"),
            media_type,
        }
    }
}

/// One `manifests[]` entry of an index. `platform: None` leaves the field out, as some
/// registries' indexes do.
#[derive(Clone, Debug)]
pub struct IndexEntry {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub platform: Option<Platform>,
}

/// An index (OCI) or manifest list (Docker) over `entries`.
pub fn index_json(entries: &[IndexEntry], format: ManifestFormat) -> Vec<u8> {
    let manifests: Vec<Value> = entries
        .iter()
        .map(|entry| {
            let mut manifest = json!({
                "mediaType": entry.media_type,
                "digest": entry.digest,
                "size": entry.size,
            });
            if let Some(platform) = &entry.platform {
                manifest["platform"] = platform.json();
            }
            manifest
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": format.index_media_type(),
        "manifests": manifests,
    });
    serde_json::to_vec(&index).expect("serialize index")
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256_digest(bytes), "size": bytes.len()})
}
