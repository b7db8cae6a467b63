//! The OCI distribution client: manifests, indexes, configs and blobs, each verified against its digest and
//! size. It knows nothing of provider manifests: it hands verified bytes (or a verifying byte stream) on.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;
use sha2::{Digest as _, Sha256, Sha512};
use thiserror::Error;
use tokio::sync::mpsc;

use crate::auth::{AuthError, Authenticator};
use crate::transport::{Transport, TransportError, error_chain, read_body_capped};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Manifests and configs are small documents; containers/image caps them at 4 MiB (CVE-2020-1702).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;
/// How long a blob download may stall between two chunks before it is abandoned.
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Chunks in flight between a download and the thread that decompresses it: bounds memory per layer.
const STREAM_DEPTH: usize = 16;

#[derive(Debug, Error)]
pub enum RegistryError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{registry} answered {status} for {what}{detail}")]
    Status {
        registry: String,
        what: String,
        status: StatusCode,
        detail: String,
    },
    #[error("{what} from {registry}: {cause}")]
    Body {
        registry: String,
        what: String,
        cause: String,
    },
    #[error("{what} from {registry} has digest {actual}, expected {expected}")]
    DigestMismatch {
        registry: String,
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what} from {registry} is {actual} bytes, expected {expected}")]
    SizeMismatch {
        registry: String,
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("unsupported digest {0:?} (sha256 and sha512 are supported)")]
    UnsupportedDigest(String),
    /// `what` already names the document (`manifest <repository>:<tag or digest>`).
    #[error("{what} from {registry}: {cause}")]
    BadManifest {
        registry: String,
        what: String,
        cause: String,
    },
}

/// Where to pull from: the registry host actually contacted and the repository there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    pub registry: String,
    pub repository: String,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

/// A descriptor as found in manifests and indexes (only the fields we use).
#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
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

impl Platform {
    /// `os/arch[/variant]`.
    pub fn parse(text: &str) -> Option<Platform> {
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
    pub fn running() -> Platform {
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

    /// Whether an index entry's platform satisfies this (requested) one: os and architecture equal, and
    /// the variant equal when one was asked for (arm64's implicit variant is v8).
    pub fn accepts(&self, candidate: &Platform) -> bool {
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

/// An image manifest (OCI or Docker v2s2).
#[derive(Debug, Clone, Deserialize)]
pub struct ImageManifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageIndex {
    pub manifests: Vec<Descriptor>,
}

/// The image configuration fields we look at.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl ImageConfig {
    pub fn platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Manifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

/// A manifest as fetched: its bytes, its digest (computed, and verified when asked by digest), and what
/// it parsed to.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub manifest: Manifest,
    /// The body as served (the digest is of these bytes).
    pub body: Bytes,
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

/// Parses a manifest body, rejecting schema 1, ambiguous documents and unknown media types.
pub fn parse_manifest(body: &[u8], content_type: &str) -> Result<(String, Manifest), String> {
    let shape: ManifestShape =
        serde_json::from_slice(body).map_err(|e| format!("not a JSON manifest: {e}"))?;
    let content_type = content_type.split(';').next().unwrap_or("").trim();
    if shape.schema_version == Some(1)
        || shape.fs_layers.is_some()
        || content_type.starts_with(DOCKER_SCHEMA1)
    {
        return Err("Docker schema 1 manifests are not supported".into());
    }
    if shape.schema_version != Some(2) {
        return Err(format!(
            "unsupported schemaVersion {:?}",
            shape.schema_version
        ));
    }
    let media_type = shape
        .media_type
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| content_type.to_string());
    let is_image = shape.config.is_some() || shape.layers.is_some();
    let is_index = shape.manifests.is_some();
    if is_image && is_index {
        return Err("document has both layers and manifests".into());
    }
    let parsed = match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST if !is_index => serde_json::from_slice(body)
            .map(Manifest::Image)
            .map_err(|e| format!("invalid image manifest: {e}"))?,
        OCI_INDEX | DOCKER_MANIFEST_LIST if !is_image => serde_json::from_slice(body)
            .map(Manifest::Index)
            .map_err(|e| format!("invalid index: {e}"))?,
        OCI_MANIFEST | DOCKER_MANIFEST | OCI_INDEX | DOCKER_MANIFEST_LIST => {
            return Err(format!("body does not match media type {media_type}"));
        }
        // Some registries omit the media type for OCI documents; the structure then decides.
        "" | "application/json" if is_index => serde_json::from_slice(body)
            .map(Manifest::Index)
            .map_err(|e| format!("invalid index: {e}"))?,
        "" | "application/json" if is_image => serde_json::from_slice(body)
            .map(Manifest::Image)
            .map_err(|e| format!("invalid image manifest: {e}"))?,
        other => return Err(format!("unsupported manifest media type {other:?}")),
    };
    Ok((media_type, parsed))
}

/// A running digest of sha256 or sha512.
enum Digester {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Digester {
    fn for_digest(digest: &str) -> Result<Digester, RegistryError> {
        match digest.split_once(':') {
            Some(("sha256", _)) => Ok(Digester::Sha256(Sha256::new())),
            Some(("sha512", _)) => Ok(Digester::Sha512(Sha512::new())),
            _ => Err(RegistryError::UnsupportedDigest(digest.to_string())),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Digester::Sha256(h) => h.update(data),
            Digester::Sha512(h) => h.update(data),
        }
    }

    fn finish(self) -> String {
        match self {
            Digester::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Digester::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The registry client: one per run, shared by every image.
pub struct RegistryClient {
    transport: Arc<Transport>,
    auth: Arc<Authenticator>,
    /// `http` for insecure registries found to speak plain HTTP.
    schemes: Mutex<HashMap<String, &'static str>>,
}

impl RegistryClient {
    pub fn new(transport: Arc<Transport>, auth: Arc<Authenticator>) -> RegistryClient {
        RegistryClient {
            transport,
            auth,
            schemes: Mutex::default(),
        }
    }

    fn url(&self, source: &Source, scheme: &str, path: &str) -> Result<Uri, RegistryError> {
        format!(
            "{scheme}://{}/v2/{}/{path}",
            source.registry, source.repository
        )
        .parse()
        .map_err(|_| TransportError::BadUrl(format!("{source}/{path}")).into())
    }

    /// GETs `/v2/<repository>/<path>`, authorizing as the registry asks, and returns a 2xx response.
    async fn get(
        &self,
        source: &Source,
        path: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<Response<Incoming>, RegistryError> {
        let mut headers = HeaderMap::new();
        if let Some(accept) = accept {
            headers.insert(
                ACCEPT,
                HeaderValue::from_str(accept).expect("static accept list"),
            );
        }
        let mut authorization = self
            .auth
            .authorization(&self.transport, &source.registry, &source.repository)
            .await?;
        let mut challenged = false;
        loop {
            let response = self
                .send(source, path, &headers, authorization.as_ref())
                .await?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let answer = self
                    .auth
                    .challenged(
                        &self.transport,
                        &source.registry,
                        &source.repository,
                        response.headers().get(WWW_AUTHENTICATE),
                    )
                    .await?;
                if answer.is_some() && answer != authorization {
                    authorization = answer;
                    continue;
                }
            }
            if status.is_success() {
                return Ok(response);
            }
            return Err(self.status_error(source, what, response).await);
        }
    }

    async fn send(
        &self,
        source: &Source,
        path: &str,
        headers: &HeaderMap,
        authorization: Option<&HeaderValue>,
    ) -> Result<Response<Incoming>, RegistryError> {
        let known = self.schemes.lock().unwrap().get(&source.registry).copied();
        let scheme = known.unwrap_or("https");
        let result = self
            .transport
            .get(self.url(source, scheme, path)?, headers, authorization)
            .await;
        match result {
            // An insecure registry may speak plain HTTP only: fall back once and remember it.
            Err(TransportError::Connect { .. })
                if known.is_none() && self.transport.is_insecure(&source.registry) =>
            {
                let response = self
                    .transport
                    .get(self.url(source, "http", path)?, headers, authorization)
                    .await?;
                self.schemes
                    .lock()
                    .unwrap()
                    .insert(source.registry.clone(), "http");
                Ok(response)
            }
            other => Ok(other?),
        }
    }

    async fn status_error(
        &self,
        source: &Source,
        what: &str,
        response: Response<Incoming>,
    ) -> RegistryError {
        let status = response.status();
        let body = read_body_capped(response.into_body(), 64 << 10)
            .await
            .unwrap_or_default();
        let mut detail = describe_error_body(&body);
        if status == StatusCode::UNAUTHORIZED {
            if self
                .auth
                .has_credentials(&source.registry, &source.repository)
            {
                detail.push_str(" (the pull secret's credentials were refused)");
            } else {
                detail.push_str(&format!(
                    " (no credentials for {} in the pull secret)",
                    source.registry
                ));
            }
        }
        RegistryError::Status {
            registry: source.registry.clone(),
            what: what.to_string(),
            status,
            detail,
        }
    }

    /// Fetches a manifest or index by tag or digest. By digest, the body must hash to it.
    pub async fn manifest(
        &self,
        source: &Source,
        object: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let what = format!("manifest {}:{object}", source.repository);
        let accept = [
            OCI_MANIFEST,
            OCI_INDEX,
            DOCKER_MANIFEST,
            DOCKER_MANIFEST_LIST,
        ]
        .join(", ");
        let response = self
            .get(source, &format!("manifests/{object}"), Some(&accept), &what)
            .await?;
        let content_type = header_text(response.headers(), CONTENT_TYPE);
        let header_digest = header_text(response.headers(), "docker-content-digest");
        let body = self.read_small(source, &what, response).await?;
        let expected = object.contains(':').then_some(object);
        let digest = match expected {
            Some(expected) => {
                let mut digester = Digester::for_digest(expected)?;
                digester.update(&body);
                digester.finish()
            }
            None => sha256_digest(&body),
        };
        // By digest the body must match the ask; by tag, a registry's own digest header must match the body.
        for claimed in [
            expected,
            (!header_digest.is_empty()).then_some(header_digest.as_str()),
        ]
        .into_iter()
        .flatten()
        {
            if claimed.split(':').next() == digest.split(':').next() && claimed != digest {
                return Err(RegistryError::DigestMismatch {
                    registry: source.registry.clone(),
                    what,
                    expected: claimed.to_string(),
                    actual: digest,
                });
            }
        }
        let (media_type, manifest) =
            parse_manifest(&body, &content_type).map_err(|cause| RegistryError::BadManifest {
                registry: source.registry.clone(),
                what: what.clone(),
                cause,
            })?;
        Ok(FetchedManifest {
            digest,
            media_type,
            size: body.len() as u64,
            manifest,
            body,
        })
    }

    async fn read_small(
        &self,
        source: &Source,
        what: &str,
        response: Response<Incoming>,
    ) -> Result<Bytes, RegistryError> {
        read_body_capped(response.into_body(), MAX_MANIFEST_SIZE)
            .await
            .map_err(|cause| RegistryError::Body {
                registry: source.registry.clone(),
                what: what.to_string(),
                cause,
            })
    }

    /// Fetches a small blob (an image config) whole, verified.
    pub async fn small_blob(
        &self,
        source: &Source,
        descriptor: &Descriptor,
    ) -> Result<Bytes, RegistryError> {
        let what = format!("blob {}", descriptor.digest);
        if descriptor.size > MAX_MANIFEST_SIZE as u64 {
            return Err(RegistryError::Body {
                registry: source.registry.clone(),
                what,
                cause: format!(
                    "{} bytes is over the {MAX_MANIFEST_SIZE} byte limit for configs",
                    descriptor.size
                ),
            });
        }
        let mut digester = Digester::for_digest(&descriptor.digest)?;
        let response = self
            .get(source, &format!("blobs/{}", descriptor.digest), None, &what)
            .await?;
        let body = self.read_small(source, &what, response).await?;
        digester.update(&body);
        verify(
            source,
            &what,
            descriptor,
            body.len() as u64,
            digester.finish(),
        )?;
        Ok(body)
    }

    /// Starts streaming a blob; bytes arrive through the returned reader (for a blocking consumer), and the
    /// returned task ends with the verdict on digest and size once the whole body has been read.
    pub async fn blob_stream(
        &self,
        source: &Source,
        descriptor: &Descriptor,
    ) -> Result<
        (
            BlobReader,
            tokio::task::JoinHandle<Result<u64, RegistryError>>,
        ),
        RegistryError,
    > {
        let what = format!("blob {}", descriptor.digest);
        let mut digester = Digester::for_digest(&descriptor.digest)?;
        let response = self
            .get(source, &format!("blobs/{}", descriptor.digest), None, &what)
            .await?;
        let announced = header_text(response.headers(), CONTENT_LENGTH)
            .parse::<u64>()
            .ok();
        if let Some(length) = announced.filter(|&l| l != descriptor.size) {
            return Err(RegistryError::SizeMismatch {
                registry: source.registry.clone(),
                what,
                expected: descriptor.size,
                actual: length,
            });
        }
        let (sender, receiver) = mpsc::channel(STREAM_DEPTH);
        let source = source.clone();
        let descriptor = descriptor.clone();
        let mut body = response.into_body();
        let task = tokio::spawn(async move {
            let fail = |error: RegistryError, sender: mpsc::Sender<io::Result<Bytes>>| async move {
                let _ = sender.send(Err(io::Error::other(error.to_string()))).await;
                Err(error)
            };
            let body_error = |cause: String| RegistryError::Body {
                registry: source.registry.clone(),
                what: what.clone(),
                cause,
            };
            let mut received: u64 = 0;
            let mut progress = Progress::new();
            loop {
                let frame = match tokio::time::timeout(BODY_IDLE_TIMEOUT, body.frame()).await {
                    Err(_) => {
                        return fail(
                            body_error(format!("stalled for {BODY_IDLE_TIMEOUT:?}")),
                            sender,
                        )
                        .await;
                    }
                    Ok(None) => break,
                    Ok(Some(Err(e))) => return fail(body_error(error_chain(&e)), sender).await,
                    Ok(Some(Ok(frame))) => frame,
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                received += data.len() as u64;
                if received > descriptor.size {
                    let error = RegistryError::SizeMismatch {
                        registry: source.registry.clone(),
                        what: what.clone(),
                        expected: descriptor.size,
                        actual: received,
                    };
                    return fail(error, sender).await;
                }
                digester.update(&data);
                progress.report(&descriptor, &source, received);
                if sender.send(Ok(data)).await.is_err() {
                    // The consumer stopped (it failed on its own); its error is the one reported.
                    return Ok(received);
                }
            }
            if let Err(error) = verify(&source, &what, &descriptor, received, digester.finish()) {
                return fail(error, sender).await;
            }
            Ok(received)
        });
        Ok((BlobReader::new(receiver), task))
    }
}

/// Logs a long download's progress every few seconds, so a slow pull shows it is alive.
struct Progress {
    started: std::time::Instant,
    last: std::time::Instant,
}

impl Progress {
    const EVERY: Duration = Duration::from_secs(5);

    fn new() -> Progress {
        let now = std::time::Instant::now();
        Progress {
            started: now,
            last: now,
        }
    }

    fn report(&mut self, descriptor: &Descriptor, source: &Source, received: u64) {
        if self.last.elapsed() < Self::EVERY {
            return;
        }
        self.last = std::time::Instant::now();
        let seconds = self.started.elapsed().as_secs_f64();
        tracing::info!(
            blob = %descriptor.digest,
            registry = %source.registry,
            received,
            size = descriptor.size,
            mib_per_s = format!("{:.1}", received as f64 / seconds / (1 << 20) as f64),
            "downloading"
        );
    }
}

fn verify(
    source: &Source,
    what: &str,
    descriptor: &Descriptor,
    size: u64,
    digest: String,
) -> Result<(), RegistryError> {
    if size != descriptor.size {
        return Err(RegistryError::SizeMismatch {
            registry: source.registry.clone(),
            what: what.to_string(),
            expected: descriptor.size,
            actual: size,
        });
    }
    if digest != descriptor.digest {
        return Err(RegistryError::DigestMismatch {
            registry: source.registry.clone(),
            what: what.to_string(),
            expected: descriptor.digest.clone(),
            actual: digest,
        });
    }
    Ok(())
}

fn header_text(headers: &HeaderMap, name: impl http::header::AsHeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// `: CODE: message` from an OCI error body, or nothing.
fn describe_error_body(body: &[u8]) -> String {
    let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) else {
        return String::new();
    };
    let parts: Vec<String> = parsed
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.code, e.message))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join("; "))
    }
}

/// A blocking `Read` over a blob being downloaded by an async task. A verification failure of the
/// download arrives as a read error, so a consumer can never see the end of a blob that did not verify.
pub struct BlobReader {
    receiver: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl BlobReader {
    fn new(receiver: mpsc::Receiver<io::Result<Bytes>>) -> BlobReader {
        BlobReader {
            receiver,
            current: Bytes::new(),
        }
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                None => return Ok(0),
                Some(chunk) => self.current = chunk?,
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
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
            .contains("schema 1")
        );
        let both = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"x","digest":"sha256:00","size":1},"layers":[],"manifests":[]}"#;
        assert!(
            parse_manifest(both, OCI_MANIFEST)
                .unwrap_err()
                .contains("both")
        );
        assert!(
            parse_manifest(b"<html>", OCI_MANIFEST)
                .unwrap_err()
                .contains("not a JSON")
        );
    }

    #[test]
    fn manifests_parse_by_media_type_or_shape() {
        let image = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aa","size":2},"layers":[]}"#;
        let (media_type, parsed) = parse_manifest(image, OCI_MANIFEST).unwrap();
        assert_eq!(media_type, OCI_MANIFEST);
        assert!(matches!(parsed, Manifest::Image(m) if m.config.size == 2));
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
                .contains("unsupported manifest media type")
        );
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

    #[test]
    fn error_bodies_are_summarised() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            describe_error_body(body),
            ": MANIFEST_UNKNOWN: manifest unknown"
        );
        assert_eq!(describe_error_body(b"oops"), "");
    }

    #[test]
    fn blob_reader_surfaces_a_failed_verification_instead_of_eof() {
        let (sender, receiver) = mpsc::channel(4);
        sender.try_send(Ok(Bytes::from_static(b"abc"))).unwrap();
        sender
            .try_send(Err(io::Error::other("digest mismatch")))
            .unwrap();
        drop(sender);
        let mut reader = BlobReader::new(receiver);
        let mut out = Vec::new();
        let err = reader.read_to_end(&mut out).unwrap_err();
        assert_eq!(out, b"abc");
        assert!(err.to_string().contains("digest mismatch"));
    }
}
