//! The OCI distribution client: manifests, indexes, configs and blobs, each verified against its digest and
//! size. It knows nothing of provider manifests: it hands verified bytes (or a verifying byte stream) on.
//!
//! Requests are retried as `retry` says. A blob download that is cut resumes with `Range: bytes=N-`;
//! bytes that do not verify are downloaded again from the start, into a fresh consumer.
//!
//! | threat | outcome |
//! |---|---|
//! | manifest, index or config over 4 MiB (announced, chunked or streamed) | error at the cap, read no further |
//! | a manifest that is not JSON, schema 1, both `layers` and `manifests`, an unknown media type | error naming the document |
//! | a document that does not hash to the digest asked for, or to its `Docker-Content-Digest` | fetched again, then error |
//! | blob bytes that do not match the digest or size | downloaded again from the start, then error; never handed on as complete |
//! | a `Content-Length` other than the blob's size (or what is left of it) | fetched again, then error |
//! | a body cut short, reset or stalled (`idle`) | resumed from the last byte received; the digest runs on |
//! | a 206 whose `Content-Range` is not `bytes N-LAST/SIZE` for the resume asked | not used; whole bodies from then on |
//! | a 200 to a Range request | its first N bytes must hash like the N already handed on (else start over); then it goes on |
//! | `urls` on a layer (foreign or non-distributable) | ignored: every blob comes from the registry |
//! | ranges of a blob (`blob_ranges`, for partial pulls) answered 200, or with other ranges or lengths | `RangeRefused`, the body unread: the caller pulls the blob whole |
//! | the consumer fails on a blob | the download still runs to its end: unverified → start over, verified → the consumer's error |
//!
//! `extract` adds: an index child whose size is not its descriptor's, indexes nested deeper than 2, a
//! config that is not an image config (artifacts) and a layer media type that is not a filesystem layer are
//! errors; the tar walk's own table is in `layers`.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{
    ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;
use sha2::{Digest as _, Sha256, Sha512};
use thiserror::Error;
use tokio::sync::mpsc;

use crate::auth::{AuthError, Authenticator};
use crate::error::error_chain;
use crate::transport::body::{BodyFailure, read_capped};
use crate::transport::proxy::connector::ProxyError;
use crate::transport::retry::{self, Attempts, GiveUp, RetryPolicy};
use crate::transport::{Insecure, Transport, TransportError};

mod byteranges;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Manifests and configs are small documents; containers/image caps them at 4 MiB (CVE-2020-1702).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;
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
    /// The registry answered a `Range` request with the whole blob (200), or not with the ranges
    /// asked; what it sent is not used.
    #[error("{registry} did not serve the ranges asked of {what}: {cause}")]
    RangeRefused {
        registry: String,
        what: String,
        cause: String,
    },
    /// A failure that was retried until the retry policy said stop.
    #[error("{cause} ({why})")]
    GaveUp {
        cause: Box<RegistryError>,
        why: GiveUp,
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
    /// This pull source may use plain http or unverified TLS, on its own registry only.
    pub insecure: bool,
}

impl Source {
    /// How requests to this source's registry may skip verification.
    pub fn insecurity(&self) -> Insecure<'_> {
        Insecure::registry(&self.registry, self.insecure)
    }
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
    /// Kept as JSON: a non-string value must not make the whole manifest unreadable.
    #[serde(default)]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Descriptor {
    /// A string annotation of this descriptor.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key)?.as_str()
    }
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
#[derive(Clone)]
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
    /// `http` for insecure registries found to speak plain HTTP, keyed by registry and insecurity:
    /// what an insecure source found never switches a secure source of the same registry to http.
    schemes: Mutex<HashMap<(String, bool), &'static str>>,
    retry: RetryPolicy,
    /// Registries that stayed unreachable through a whole round of tries: tried once from then on, so
    /// every image of a run does not wait out the backoff before falling back to its next source.
    unreachable: Mutex<HashSet<String>>,
}

/// How a blob download ended badly.
enum Download {
    /// For good: retries and resumes are spent, or the registry said no.
    Failed(RegistryError),
    /// What arrived does not verify (digest, size, a resent body that differs): start over.
    Unverified(RegistryError),
}

/// Why a blob did not serve its consumer.
#[derive(Debug)]
pub enum BlobError<E> {
    /// The download failed for good, after its retries, resumes and restarts.
    Download(RegistryError),
    /// The consumer failed on bytes that verified: the blob itself is at fault.
    Consumer(E),
    /// The consumer's thread panicked.
    Worker(String),
}

impl RegistryClient {
    pub fn new(transport: Arc<Transport>, auth: Arc<Authenticator>) -> RegistryClient {
        RegistryClient {
            transport,
            auth,
            schemes: Mutex::default(),
            retry: RetryPolicy::default(),
            unreachable: Mutex::default(),
        }
    }

    /// Retries as `policy` says (otherwise as `RetryPolicy::default()`).
    pub fn with_retry(mut self, policy: RetryPolicy) -> RegistryClient {
        self.retry = policy;
        self
    }

    fn url(&self, source: &Source, scheme: &str, path: &str) -> Result<Uri, RegistryError> {
        format!(
            "{scheme}://{}/v2/{}/{path}",
            source.registry, source.repository
        )
        .parse()
        .map_err(|_| TransportError::BadUrl(format!("{source}/{path}")).into())
    }

    /// The tries for one request to `source`'s registry.
    fn attempts(&self, source: &Source) -> Attempts {
        let attempts = self.retry.attempts();
        if self.unreachable.lock().unwrap().contains(&source.registry) {
            attempts.once()
        } else {
            attempts
        }
    }

    /// Waits before the next try of `what`, or gives up with `failure` when `attempts` are spent.
    async fn pause_or_give_up(
        &self,
        source: &Source,
        what: &str,
        attempts: &mut Attempts,
        failure: RegistryError,
        retry_after: Option<Duration>,
    ) -> Result<(), RegistryError> {
        match attempts.failed(retry_after) {
            Ok(wait) => {
                tracing::warn!(
                    registry = %source.registry,
                    what,
                    next_try = attempts.next_try(),
                    wait_ms = wait.as_millis() as u64,
                    error = %error_chain(&failure),
                    "retrying"
                );
                tokio::time::sleep(wait).await;
                Ok(())
            }
            Err(why) => Err(RegistryError::GaveUp {
                cause: Box::new(failure),
                why,
            }),
        }
    }

    /// GETs `/v2/<repository>/<path>`, authorizing as the registry asks and retrying what may pass
    /// (see `retry`), and returns a 2xx response. Failed tries count in `attempts`, which the caller
    /// goes on using for what it does with the body.
    async fn get(
        &self,
        source: &Source,
        path: &str,
        headers: &HeaderMap,
        what: &str,
        attempts: &mut Attempts,
    ) -> Result<Response<Incoming>, RegistryError> {
        let mut challenged = false;
        loop {
            let (failure, retry_after) =
                match self.try_get(source, path, headers, &mut challenged).await {
                    Ok(response) if response.status().is_success() => {
                        self.unreachable.lock().unwrap().remove(&source.registry);
                        return Ok(response);
                    }
                    Ok(response) if retry::retryable_status(response.status()) => {
                        let retry_after = response
                            .headers()
                            .get(RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
                        (self.status_error(source, what, response).await, retry_after)
                    }
                    Ok(response) => return Err(self.status_error(source, what, response).await),
                    Err(error) if worth_retrying(&error) => (error, None),
                    Err(error) => return Err(error),
                };
            let unreachable = is_unreachable(&failure);
            if let Err(error) = self
                .pause_or_give_up(source, what, attempts, failure, retry_after)
                .await
            {
                if unreachable
                    && matches!(error, RegistryError::GaveUp { why: GiveUp::Tries(n), .. } if n > 1)
                {
                    self.unreachable
                        .lock()
                        .unwrap()
                        .insert(source.registry.clone());
                }
                return Err(error);
            }
        }
    }

    /// One try: the request, sent again with fresh authorization when the registry answers 401 for
    /// the first time in this request (a token that expired or was revoked early).
    async fn try_get(
        &self,
        source: &Source,
        path: &str,
        headers: &HeaderMap,
        challenged: &mut bool,
    ) -> Result<Response<Incoming>, RegistryError> {
        let first_contact = self
            .auth
            .first_contact(&source.registry, source.insecure)
            .await;
        let authorization = self
            .auth
            .authorization(
                &self.transport,
                &source.registry,
                source.insecure,
                &source.repository,
            )
            .await?;
        let response = self
            .send(source, path, headers, authorization.as_ref())
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED || *challenged {
            return Ok(response);
        }
        *challenged = true;
        let answer = self
            .auth
            .challenged(
                &self.transport,
                &source.registry,
                source.insecure,
                &source.repository,
                response.headers().get(WWW_AUTHENTICATE),
                authorization.as_ref(),
            )
            .await?;
        // The challenge is known: the requests waiting for it go on.
        drop(first_contact);
        match answer {
            Some(answer) if Some(&answer) != authorization.as_ref() => {
                self.send(source, path, headers, Some(&answer)).await
            }
            _ => Ok(response),
        }
    }

    async fn send(
        &self,
        source: &Source,
        path: &str,
        headers: &HeaderMap,
        authorization: Option<&HeaderValue>,
    ) -> Result<Response<Incoming>, RegistryError> {
        let key = (source.registry.clone(), source.insecure);
        let known = self.schemes.lock().unwrap().get(&key).copied();
        let scheme = known.unwrap_or("https");
        let insecure = source.insecurity();
        let result = self
            .transport
            .get(
                self.url(source, scheme, path)?,
                headers,
                authorization,
                insecure,
            )
            .await;
        match result {
            // An insecure registry may speak plain HTTP only: fall back once and remember it.
            Err(TransportError::Connect { .. }) if known.is_none() && source.insecure => {
                let response = self
                    .transport
                    .get(
                        self.url(source, "http", path)?,
                        headers,
                        authorization,
                        insecure,
                    )
                    .await?;
                self.schemes.lock().unwrap().insert(key, "http");
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
        let body = read_capped(response.into_body(), 64 << 10, Some(self.retry.idle))
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

    /// GETs a document whole (at most `MAX_MANIFEST_SIZE` bytes) and hands it to `check`. A body cut
    /// short, or one that `check` finds does not match its digest or size, is fetched again.
    async fn fetch_small<T>(
        &self,
        source: &Source,
        path: &str,
        accept: Option<&str>,
        what: &str,
        check: impl Fn(Bytes, &HeaderMap) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut headers = HeaderMap::new();
        if let Some(accept) = accept {
            headers.insert(
                ACCEPT,
                HeaderValue::from_str(accept).expect("static accept list"),
            );
        }
        let mut attempts = self.attempts(source);
        loop {
            let response = self
                .get(source, path, &headers, what, &mut attempts)
                .await?;
            let response_headers = response.headers().clone();
            let body = read_capped(
                response.into_body(),
                MAX_MANIFEST_SIZE,
                Some(self.retry.idle),
            )
            .await;
            let failure = match body {
                Err(cut @ BodyFailure::TooLarge(_)) => {
                    return Err(body_error(source, what, cut.to_string()));
                }
                Err(cut) => body_error(source, what, cut.to_string()),
                Ok(body) => match check(body, &response_headers) {
                    Err(
                        error @ (RegistryError::DigestMismatch { .. }
                        | RegistryError::SizeMismatch { .. }),
                    ) => error,
                    other => return other,
                },
            };
            self.pause_or_give_up(source, what, &mut attempts, failure, None)
                .await?;
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
        let check = |body: Bytes, headers: &HeaderMap| {
            let content_type = header_text(headers, CONTENT_TYPE);
            let header_digest = header_text(headers, "docker-content-digest");
            let expected = object.contains(':').then_some(object);
            let digest = match expected {
                Some(expected) => {
                    let mut digester = Digester::for_digest(expected)?;
                    digester.update(&body);
                    digester.finish()
                }
                None => sha256_digest(&body),
            };
            // By digest the body must match the ask; by tag, a registry's own digest header must
            // match the body.
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
                        what: what.clone(),
                        expected: claimed.to_string(),
                        actual: digest,
                    });
                }
            }
            let (media_type, manifest) = parse_manifest(&body, &content_type).map_err(|cause| {
                RegistryError::BadManifest {
                    registry: source.registry.clone(),
                    what: what.clone(),
                    cause,
                }
            })?;
            Ok(FetchedManifest {
                digest,
                media_type,
                size: body.len() as u64,
                manifest,
                body,
            })
        };
        self.fetch_small(
            source,
            &format!("manifests/{object}"),
            Some(&accept),
            &what,
            check,
        )
        .await
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
        Digester::for_digest(&descriptor.digest)?;
        let check = |body: Bytes, _: &HeaderMap| {
            let mut digester = Digester::for_digest(&descriptor.digest)?;
            digester.update(&body);
            verify(
                source,
                &what,
                descriptor,
                body.len() as u64,
                digester.finish(),
            )?;
            Ok(body)
        };
        self.fetch_small(
            source,
            &format!("blobs/{}", descriptor.digest),
            None,
            &what,
            check,
        )
        .await
    }

    /// Fetches byte ranges of a blob (half-open, within the blob) with one request: `Range: bytes=…`,
    /// answered 206 with a `Content-Range` for one range, or as `multipart/byteranges` for several.
    /// Every part must be exactly a range asked for (in any order) and every range must come; the
    /// parts are returned in the order of `ranges`. These bytes cannot be checked against the
    /// blob's digest: the caller verifies them against digests it trusts. A registry that answers
    /// with the whole blob (200) or with other ranges gives `RangeRefused`, its body unread; a body
    /// cut short is fetched again, as `retry` says.
    pub async fn blob_ranges(
        &self,
        source: &Source,
        descriptor: &Descriptor,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<Bytes>, RegistryError> {
        let spec = byteranges::spec(ranges);
        let what = format!("blob {} bytes {spec}", descriptor.digest);
        let refused = |cause: String| RegistryError::RangeRefused {
            registry: source.registry.clone(),
            what: what.clone(),
            cause,
        };
        if ranges.is_empty()
            || ranges
                .iter()
                .any(|r| r.start >= r.end || r.end > descriptor.size)
        {
            return Err(refused("empty ranges or ranges outside the blob".into()));
        }
        let mut headers = HeaderMap::new();
        let range =
            HeaderValue::from_str(&format!("bytes={spec}")).expect("digits and punctuation");
        headers.insert(RANGE, range);
        // The parts' own headers take well under 1 KiB each.
        let wanted: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        let cap = usize::try_from(wanted + 1024 * ranges.len() as u64 + 1024).unwrap_or(usize::MAX);
        let path = format!("blobs/{}", descriptor.digest);
        let mut attempts = self.attempts(source);
        loop {
            let response = self
                .get(source, &path, &headers, &what, &mut attempts)
                .await?;
            if response.status() != StatusCode::PARTIAL_CONTENT {
                return Err(refused(format!("answered {}", response.status())));
            }
            let content_type = header_text(response.headers(), CONTENT_TYPE);
            let content_range = header_text(response.headers(), CONTENT_RANGE);
            let failure = match read_capped(response.into_body(), cap, Some(self.retry.idle)).await
            {
                Err(too_large @ BodyFailure::TooLarge(_)) => {
                    return Err(refused(too_large.to_string()));
                }
                Err(cut) => body_error(source, &what, cut.to_string()),
                Ok(body) => {
                    return byteranges::answer(
                        ranges,
                        descriptor.size,
                        &content_type,
                        &content_range,
                        body,
                    )
                    .map_err(refused);
                }
            };
            self.pause_or_give_up(source, &what, &mut attempts, failure, None)
                .await?;
        }
    }

    /// Streams a blob into `consume`, which runs on a blocking thread with a reader over the bytes as
    /// they arrive. A download cut midway resumes where it stopped (`Range: bytes=N-`; the digest
    /// runs on over the whole blob). When what arrived does not verify, the blob is downloaded again
    /// from the start into a fresh `consume`. The reader reports its end only once the whole blob has
    /// verified, so a consumer that reads to the end never accepts unverified bytes. When `consume`
    /// fails, the download still runs to its end, to tell a damaged blob (downloaded again) from a
    /// hostile one (`BlobError::Consumer`).
    pub async fn consume_blob<T, E, F>(
        &self,
        source: &Source,
        descriptor: &Descriptor,
        consume: F,
    ) -> Result<T, BlobError<E>>
    where
        F: Fn(BlobReader) -> Result<T, E> + Send + Sync + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let what = format!("blob {}", descriptor.digest);
        let consume = Arc::new(consume);
        let mut restarts = self.retry.attempts();
        loop {
            let (sender, receiver) = mpsc::channel(STREAM_DEPTH);
            let consumer = {
                let consume = consume.clone();
                tokio::task::spawn_blocking(move || consume(BlobReader::new(receiver)))
            };
            let mut outlet = Outlet { sender, open: true };
            let downloaded = self.download(source, descriptor, &what, &mut outlet).await;
            match &downloaded {
                Ok(_) => outlet.send(Ok(Bytes::new())).await,
                Err(Download::Failed(error) | Download::Unverified(error)) => {
                    outlet.send(Err(io::Error::other(error.to_string()))).await
                }
            }
            drop(outlet);
            let consumed = consumer
                .await
                .map_err(|e| BlobError::Worker(e.to_string()))?;
            let unverified = match downloaded {
                Ok(_) => return consumed.map_err(BlobError::Consumer),
                Err(Download::Failed(error)) => return Err(BlobError::Download(error)),
                Err(Download::Unverified(error)) => error,
            };
            self.pause_or_give_up(source, &what, &mut restarts, unverified, None)
                .await
                .map_err(BlobError::Download)?;
            tracing::warn!(registry = %source.registry, blob = %descriptor.digest, "downloading the blob again from its start");
        }
    }

    /// Downloads a blob into `outlet`, resuming when the body is cut; returns the bytes received once
    /// they verify.
    async fn download(
        &self,
        source: &Source,
        descriptor: &Descriptor,
        what: &str,
        outlet: &mut Outlet,
    ) -> Result<u64, Download> {
        let path = format!("blobs/{}", descriptor.digest);
        let size = descriptor.size;
        let mut digester = Digester::for_digest(&descriptor.digest).map_err(Download::Failed)?;
        let mut received: u64 = 0;
        // Cleared once the registry answers a Range request wrongly: from then on, full bodies only.
        let mut ranges = true;
        let mut attempts = self.attempts(source);
        let mut progress = Progress::new();
        loop {
            let ranged = received > 0 && ranges;
            let mut headers = HeaderMap::new();
            if ranged {
                headers.insert(
                    RANGE,
                    HeaderValue::from_str(&format!("bytes={received}-")).expect("digits"),
                );
            }
            let response = self
                .get(source, &path, &headers, what, &mut attempts)
                .await
                .map_err(Download::Failed)?;
            // A 206 goes on from `received`; anything else is the whole blob again, whose first
            // `received` bytes were delivered already and must be the same.
            let (skip, length) = match response.status() {
                StatusCode::PARTIAL_CONTENT => (0, size - received),
                _ => (received, size),
            };
            let wrong = if response.status() == StatusCode::PARTIAL_CONTENT {
                check_content_range(response.headers(), ranged, received, size).err()
            } else {
                None
            }
            .map(|cause| body_error(source, what, cause))
            .or_else(|| {
                header_text(response.headers(), CONTENT_LENGTH)
                    .parse::<u64>()
                    .ok()
                    .filter(|&announced| announced != length)
                    .map(|announced| RegistryError::SizeMismatch {
                        registry: source.registry.clone(),
                        what: format!("{what} (Content-Length)"),
                        expected: length,
                        actual: announced,
                    })
            });
            if let Some(failure) = wrong {
                ranges &= response.status() != StatusCode::PARTIAL_CONTENT;
                self.pause_or_give_up(source, what, &mut attempts, failure, None)
                    .await
                    .map_err(Download::Failed)?;
                continue;
            }
            let mut body = response.into_body();
            let mut resent = (skip > 0)
                .then(|| Digester::for_digest(&descriptor.digest).map(|d| (d, skip)))
                .transpose()
                .map_err(Download::Failed)?;
            let cut = loop {
                let frame = match tokio::time::timeout(self.retry.idle, body.frame()).await {
                    Err(_) => break Some(format!("stalled for {:?}", self.retry.idle)),
                    Ok(None) => break None,
                    Ok(Some(Err(e))) => break Some(error_chain(&e)),
                    Ok(Some(Ok(frame))) => frame,
                };
                let Ok(mut data) = frame.into_data() else {
                    continue;
                };
                if let Some((prefix, left)) = &mut resent {
                    let n = (*left).min(data.len() as u64);
                    prefix.update(&data[..n as usize]);
                    *left -= n;
                    data = data.slice(n as usize..);
                    if *left > 0 {
                        continue;
                    }
                    let (prefix, _) = resent.take().expect("checked above");
                    if prefix.finish() != digester.clone().finish() {
                        return Err(Download::Unverified(body_error(
                            source,
                            what,
                            format!(
                                "sent again whole, its first {received} bytes differ from those read before"
                            ),
                        )));
                    }
                }
                if data.is_empty() {
                    continue;
                }
                received += data.len() as u64;
                if received > size {
                    return Err(Download::Unverified(RegistryError::SizeMismatch {
                        registry: source.registry.clone(),
                        what: what.to_string(),
                        expected: size,
                        actual: received,
                    }));
                }
                digester.update(&data);
                attempts.progressed();
                progress.report(descriptor, source, received);
                outlet.send(Ok(data)).await;
            };
            let cut = match (cut, &resent) {
                (None, Some(_)) => Some("the body ended before the bytes already read".to_string()),
                (cut, _) => cut,
            };
            let Some(cause) = cut else { break };
            if received == size && resent.is_none() {
                // Every byte is here; the connection broke after them.
                break;
            }
            self.pause_or_give_up(
                source,
                what,
                &mut attempts,
                body_error(source, what, cause),
                None,
            )
            .await
            .map_err(Download::Failed)?;
            tracing::info!(
                registry = %source.registry,
                blob = %descriptor.digest,
                offset = received,
                size,
                range = ranges,
                "resuming the download"
            );
        }
        verify(source, what, descriptor, received, digester.finish())
            .map_err(Download::Unverified)?;
        Ok(received)
    }
}

/// Where downloaded bytes go: the consumer's channel, while the consumer listens.
struct Outlet {
    sender: mpsc::Sender<io::Result<Bytes>>,
    open: bool,
}

impl Outlet {
    async fn send(&mut self, item: io::Result<Bytes>) {
        if self.open && self.sender.send(item).await.is_err() {
            // The consumer stopped (it failed on its own); the download goes on to its verdict.
            self.open = false;
        }
    }
}

/// Whether a failed request may pass if tried again (see `retry`).
fn worth_retrying(error: &RegistryError) -> bool {
    match error {
        RegistryError::Transport(error) | RegistryError::Auth(AuthError::Transport(error)) => {
            transport_transient(error)
        }
        RegistryError::Auth(AuthError::TokenStatus { status, .. }) => {
            retry::retryable_status(*status)
        }
        _ => false,
    }
}

fn transport_transient(error: &TransportError) -> bool {
    match error {
        TransportError::Connect { transient, .. } => *transient,
        TransportError::Timeout { .. } => true,
        // A proxy that cannot be reached, or that could not reach the registry (CONNECT answered
        // 408, 429 or 5xx), fails like the network; 407 and broken answers do not pass on retry.
        TransportError::Proxy(ProxyError::Unreachable { .. }) => true,
        TransportError::Proxy(ProxyError::ConnectRefused { status, .. }) => status
            .get(..3)
            .and_then(|code| code.parse().ok())
            .and_then(|code| StatusCode::from_u16(code).ok())
            .is_some_and(retry::retryable_status),
        _ => false,
    }
}

/// The registry could not be reached at all (rather than answering badly).
fn is_unreachable(error: &RegistryError) -> bool {
    matches!(error, RegistryError::Transport(e) if transport_transient(e))
}

fn body_error(source: &Source, what: &str, cause: String) -> RegistryError {
    RegistryError::Body {
        registry: source.registry.clone(),
        what: what.to_string(),
        cause,
    }
}

/// A 206 must answer a Range request with `Content-Range: bytes FROM-LAST/TOTAL`, starting where the
/// download stopped and running to the blob's end (TOTAL may be `*`).
fn check_content_range(
    headers: &HeaderMap,
    ranged: bool,
    from: u64,
    size: u64,
) -> Result<(), String> {
    let value = header_text(headers, CONTENT_RANGE);
    if !ranged {
        return Err(format!("206 ({value:?}) to a request for the whole blob"));
    }
    let parsed = value.strip_prefix("bytes ").and_then(|rest| {
        let (range, total) = rest.split_once('/')?;
        let (first, last) = range.split_once('-')?;
        Some((first.parse::<u64>().ok()?, last.parse::<u64>().ok()?, total))
    });
    match parsed {
        Some((first, last, total))
            if first == from
                && last.checked_add(1) == Some(size)
                && (total == "*" || total.parse::<u64>() == Ok(size)) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "Content-Range {value:?} does not answer a resume from byte {from} of {size}"
        )),
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

/// A blocking `Read` over a blob being downloaded by an async task. The download marks the end of a
/// verified blob with an empty chunk; a failed verification arrives as a read error, and a download
/// that stops without either is an error too, so a consumer never sees the end of a blob that did not
/// verify.
pub struct BlobReader {
    receiver: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    verified: bool,
}

impl BlobReader {
    fn new(receiver: mpsc::Receiver<io::Result<Bytes>>) -> BlobReader {
        BlobReader {
            receiver,
            current: Bytes::new(),
            verified: false,
        }
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.verified {
                return Ok(0);
            }
            match self.receiver.blocking_recv() {
                None => {
                    return Err(io::Error::other(
                        "the download stopped before the blob verified",
                    ));
                }
                Some(Ok(chunk)) if chunk.is_empty() => self.verified = true,
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

    #[test]
    fn blob_reader_ends_only_at_the_verified_end_marker() {
        let (sender, receiver) = mpsc::channel(4);
        sender.try_send(Ok(Bytes::from_static(b"abc"))).unwrap();
        drop(sender);
        let mut out = Vec::new();
        let err = BlobReader::new(receiver).read_to_end(&mut out).unwrap_err();
        assert!(
            err.to_string().contains("before the blob verified"),
            "{err}"
        );

        let (sender, receiver) = mpsc::channel(4);
        sender.try_send(Ok(Bytes::from_static(b"abc"))).unwrap();
        sender.try_send(Ok(Bytes::new())).unwrap();
        let mut out = Vec::new();
        BlobReader::new(receiver).read_to_end(&mut out).unwrap();
        assert_eq!(
            out, b"abc",
            "ends at the marker, with the sender still open"
        );
    }

    #[test]
    fn network_and_proxy_failures_are_worth_another_try_and_verdicts_are_not() {
        let connect = |transient| TransportError::Connect {
            host: "r".into(),
            cause: "x".into(),
            transient,
        };
        let refused = |status: &str| {
            TransportError::Proxy(ProxyError::ConnectRefused {
                target: "r:443".into(),
                proxy: "p:3128".into(),
                status: status.into(),
            })
        };
        for (error, expected) in [
            (connect(true), true),
            (connect(false), false),
            (
                TransportError::Timeout {
                    host: "r".into(),
                    after: Duration::from_secs(1),
                },
                true,
            ),
            (
                TransportError::Proxy(ProxyError::Unreachable {
                    proxy: "p:3128".into(),
                    cause: "refused".into(),
                }),
                true,
            ),
            (refused("503 Service Unavailable"), true),
            (refused("502 Bad Gateway"), true),
            (refused("407 Proxy Authentication Required"), false),
            (refused("403 Forbidden"), false),
            (TransportError::BadUrl("x".into()), false),
        ] {
            let shown = error.to_string();
            assert_eq!(
                worth_retrying(&RegistryError::Transport(error)),
                expected,
                "{shown}"
            );
        }
    }

    #[test]
    fn a_resume_must_start_where_the_download_stopped_and_run_to_the_end() {
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_RANGE, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert!(check_content_range(&headers("bytes 100-999/1000"), true, 100, 1000).is_ok());
        assert!(check_content_range(&headers("bytes 100-999/*"), true, 100, 1000).is_ok());
        for wrong in [
            "bytes 0-999/1000",
            "bytes 100-998/1000",
            "bytes 100-999/1001",
            "bytes 100-/1000",
            "100-999/1000",
        ] {
            assert!(
                check_content_range(&headers(wrong), true, 100, 1000).is_err(),
                "{wrong}"
            );
        }
        assert!(
            check_content_range(&headers("bytes 0-999/1000"), false, 0, 1000).is_err(),
            "a 206 to a request without Range"
        );
    }
}
