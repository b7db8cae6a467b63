//! `provider-images extract`: pull every image of images.json, compute what each image volume would show
//! under `capi-operator-manifests/`, and publish the tree with index.json — all of it, or nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use thiserror::Error;

use crate::cache::Cache;
use crate::images::ImageEntry;
use crate::layers::{self, Compression, Contribution, LayerError, Limits, Node, Subtree};
use crate::partial::Partial;
use crate::plan::mirrors::MirrorError;
use crate::plan::{Planner, Source};
use crate::profiles::{self, Profile, ProfileError};
use crate::publish::{self, PublishError, Publisher};
use crate::registry::{
    BlobError, DOCKER_CONFIG, Descriptor, FetchedManifest, Manifest, OCI_CONFIG, Platform,
    RegistryClient, RegistryError, parse_manifest,
};

mod queue;
mod warm;

/// Index → index → image is as deep as real images nest; deeper is a loop or an attack.
const MAX_INDEX_DEPTH: usize = 2;

pub struct ExtractOptions {
    pub output: PathBuf,
    pub platform: Platform,
    pub concurrency: usize,
    pub limits: Limits,
    pub lock_timeout: Duration,
    /// Partial pulls through a layer's TOC (off with `--no-partial`).
    pub partial: bool,
    /// `--cache-dir`.
    pub cache_dir: Option<PathBuf>,
}

/// Why one image failed. Its `Display` is the cause alone; the image and source are added by `ImageFailure`.
#[derive(Debug, Error)]
pub enum ImageError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("layer {digest}: {source}")]
    Layer {
        digest: String,
        #[source]
        source: LayerError,
    },
    #[error("layer {digest}: {media_type:?} is not a filesystem layer, so this is not an image")]
    NotALayer { digest: String, media_type: String },
    #[error("config media type {0:?} is not an image config, so this is not an image")]
    NotAnImage(String),
    #[error("config {digest}: {cause}")]
    BadConfig { digest: String, cause: String },
    #[error("index {digest} has no manifest for {wanted}; it has: {available}")]
    NoPlatform {
        digest: String,
        wanted: Platform,
        available: String,
    },
    #[error("indexes nested deeper than {MAX_INDEX_DEPTH} levels")]
    NestedTooDeep,
    #[error("{0}")]
    Profile(#[from] ProfileError),
    #[error("layer {digest}: worker stopped: {cause}")]
    Worker { digest: String, cause: String },
}

/// Why one pull source of an image did not serve it.
#[derive(Debug)]
pub enum AttemptError {
    /// Listed by the mirror configuration but not to be contacted: `not contacted: <why>`.
    Blocked(String),
    Failed(ImageError),
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Blocked(skipped) => f.write_str(skipped),
            AttemptError::Failed(error) => f.write_str(&crate::error::error_chain(error)),
        }
    }
}

#[derive(Debug)]
pub struct Attempt {
    /// The reference as pulled from that source.
    pub source: String,
    pub error: AttemptError,
}

/// An image that no pull source served, with every source tried and why each failed.
#[derive(Debug)]
pub struct ImageFailure {
    pub reference: String,
    pub attempts: Vec<Attempt>,
    /// The mirror configuration could not produce the sources at all.
    pub plan_error: Option<MirrorError>,
}

impl std::fmt::Display for ImageFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(error) = &self.plan_error {
            return write!(
                f,
                "image {}: {}",
                self.reference,
                crate::error::error_chain(error)
            );
        }
        match self.attempts.as_slice() {
            [only] => write!(
                f,
                "image {} (from {}): {}",
                self.reference, only.source, only.error
            ),
            attempts => {
                write!(f, "image {}: every pull source failed", self.reference)?;
                for attempt in attempts {
                    write!(f, "; {}: {}", attempt.source, attempt.error)?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug, Error)]
pub enum ExtractError {
    #[error("{} of {total} images failed; nothing was published", failures.len())]
    Images {
        failures: Vec<ImageFailure>,
        total: usize,
    },
    #[error("publishing to {path}: {source}")]
    Publish {
        path: PathBuf,
        #[source]
        source: PublishError,
    },
    #[error("writing index.json: {0}")]
    Index(#[from] serde_json::Error),
}

impl ExtractError {
    /// The error with every failed image on a line of its own.
    pub fn report(&self) -> String {
        let mut text = crate::error::error_chain(self);
        if let ExtractError::Images { failures, .. } = self {
            for failure in failures {
                text.push('\n');
                text.push_str(&failure.to_string());
            }
        }
        text
    }
}

/// One image, pulled and merged.
pub struct PulledImage {
    pub entry: ImageEntry,
    pub source: String,
    pub digest: String,
    pub index_digest: Option<String>,
    pub subtree: Subtree,
    pub profiles: Vec<Profile>,
}

pub struct Summary {
    pub images: usize,
    pub profiles: usize,
    pub published: PathBuf,
    /// The published tree was already current: nothing was pulled or written.
    pub warm: bool,
}

/// Pulls every image (`concurrency` at a time, every one attempted even when others fail), then publishes.
pub async fn extract(
    client: Arc<RegistryClient>,
    planner: Arc<Planner>,
    entries: Vec<ImageEntry>,
    options: &ExtractOptions,
) -> Result<Summary, ExtractError> {
    let total = entries.len();
    let started = Instant::now();
    let reuse = warm::reuse(&client, &planner, &entries, options).await;
    if reuse.warm {
        let profiles = reuse.images.values().map(|i| i.profiles.len()).sum();
        tracing::info!(
            images = total,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "warm run: the published tree is current; nothing pulled, nothing written"
        );
        return Ok(Summary {
            images: total,
            profiles,
            published: reuse.payload.unwrap_or_else(|| options.output.clone()),
            warm: true,
        });
    }
    for why in &reuse.cold {
        tracing::info!(reason = %why, "not reusing the published tree for this");
    }
    if !reuse.images.is_empty() {
        tracing::info!(
            images = reuse.images.len(),
            "reusing images the published tree holds as they are"
        );
    }
    let reused = reuse.images;
    let entries: Vec<ImageEntry> = entries
        .into_iter()
        .filter(|entry| !reused.contains_key(&entry.reference_text))
        .collect();
    let cache = options
        .cache_dir
        .as_deref()
        .and_then(|dir| match Cache::open(dir) {
            Ok(cache) => Some(cache),
            Err(e) => {
                tracing::warn!(cache_dir = %dir.display(), error = %e, "cannot use the cache directory; pulling everything");
                None
            }
        });
    let run = Run {
        client,
        planner,
        cache,
        queue: queue::WorkQueue::for_this_machine(),
        layers: ByDigest::default(),
        configs: ByDigest::default(),
        manifests: ByDigest::default(),
        platform: options.platform.clone(),
        limits: options.limits,
        partial: Partial::new(options.partial),
    };
    let results: Vec<Result<PulledImage, ImageFailure>> = futures_util::stream::iter(entries)
        .map(|entry| pull_image(&run, entry))
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;
    run.partial.log_summary();
    let mut pulled = Vec::new();
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(image) => pulled.push(image),
            Err(failure) => {
                tracing::error!(image = %failure.reference, error = %failure, "image failed");
                failures.push(failure);
            }
        }
    }
    if !failures.is_empty() {
        failures.sort_by(|a, b| a.reference.cmp(&b.reference));
        return Err(ExtractError::Images { failures, total });
    }
    pulled.extend(reused.into_values());
    pulled.sort_by(|a, b| a.entry.reference_text.cmp(&b.entry.reference_text));
    let profiles = pulled.iter().map(|image| image.profiles.len()).sum();
    let published = publish_tree(&pulled, options)?;
    Ok(Summary {
        images: pulled.len(),
        profiles,
        published,
        warm: false,
    })
}

/// What every image of a run shares.
struct Run {
    client: Arc<RegistryClient>,
    planner: Arc<Planner>,
    cache: Option<Cache>,
    /// Every layer pulled whole, across images (a partial pull does not wait here).
    queue: queue::WorkQueue,
    layers: ByDigest<Contribution>,
    configs: ByDigest<bytes::Bytes>,
    manifests: ByDigest<FetchedManifest>,
    platform: Platform,
    limits: Limits,
    partial: Partial,
}

/// What this run already has, by digest: a base layer shared by a dozen provider images is downloaded
/// and walked once, and images asking for it meanwhile wait for that one pull; so are a config or a
/// manifest that several refs share. What is kept is content-addressed and verified, so one from any
/// source serves all; a failure is not kept, so the next asker (perhaps through another source) tries
/// again.
struct ByDigest<T> {
    cells: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::OnceCell<T>>>>,
}

impl<T> Default for ByDigest<T> {
    fn default() -> Self {
        ByDigest {
            cells: std::sync::Mutex::default(),
        }
    }
}

impl<T: Clone> ByDigest<T> {
    async fn get_or_fetch<E>(
        &self,
        digest: &str,
        fetch: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let cell = self
            .cells
            .lock()
            .unwrap()
            .entry(digest.to_string())
            .or_default()
            .clone();
        cell.get_or_try_init(|| fetch).await.cloned()
    }
}

async fn pull_image(run: &Run, entry: ImageEntry) -> Result<PulledImage, ImageFailure> {
    let failure = |attempts, plan_error| ImageFailure {
        reference: entry.reference_text.clone(),
        attempts,
        plan_error,
    };
    let sources = match run.planner.plan(&entry.reference) {
        Ok(sources) => sources,
        Err(error) => return Err(failure(Vec::new(), Some(error))),
    };
    let mut attempts = Vec::new();
    for planned in &sources {
        let shown = planned.display();
        if let Some(skipped) = planned.pull.not_contacted() {
            tracing::info!(image = %entry.reference_text, source = %shown, "{skipped}");
            attempts.push(Attempt {
                source: shown,
                error: AttemptError::Blocked(skipped),
            });
            continue;
        }
        let started = Instant::now();
        tracing::info!(image = %entry.reference_text, source = %shown, "pulling");
        match pull_from(run, &planned.source, planned.pull.reference.object()).await {
            Ok(pulled) => {
                let source_ref = format!("{}@{}", planned.source, pulled.resolved.top_digest);
                tracing::info!(
                    image = %entry.reference_text,
                    source = %source_ref,
                    digest = %pulled.resolved.image_digest,
                    bytes = pulled.bytes,
                    profiles = pulled.profiles.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "pulled"
                );
                if pulled.profiles.is_empty() {
                    tracing::info!(image = %entry.reference_text, "no provider manifests in this image; skipped");
                }
                return Ok(PulledImage {
                    entry,
                    source: source_ref,
                    digest: pulled.resolved.image_digest,
                    index_digest: pulled.resolved.index_digest,
                    subtree: pulled.subtree,
                    profiles: pulled.profiles,
                });
            }
            Err(error) => {
                tracing::warn!(image = %entry.reference_text, source = %shown, error = %crate::error::error_chain(&error), "pull source failed");
                attempts.push(Attempt {
                    source: shown,
                    error: AttemptError::Failed(error),
                });
            }
        }
    }
    Err(failure(attempts, None))
}

/// What one source served for an image.
struct Pulled {
    resolved: Resolved,
    subtree: Subtree,
    profiles: Vec<Profile>,
    bytes: u64,
}

struct Resolved {
    top_digest: String,
    image_digest: String,
    index_digest: Option<String>,
    manifest: crate::registry::ImageManifest,
}

async fn pull_from(run: &Run, source: &Source, object: &str) -> Result<Pulled, ImageError> {
    let (client, platform, limits) = (&run.client, &run.platform, run.limits);
    let resolved = resolve_manifest(run, source, object).await?;
    let config_descriptor = &resolved.manifest.config;
    if config_descriptor.media_type != OCI_CONFIG && config_descriptor.media_type != DOCKER_CONFIG {
        return Err(ImageError::NotAnImage(config_descriptor.media_type.clone()));
    }
    // The config is fetched alongside the layers: it is one small request that the layers do not
    // depend on, and waiting for it first would cost every image a round trip.
    let config_job = async {
        let config = run
            .configs
            .get_or_fetch(&config_descriptor.digest, async {
                let cache = run.cache.as_ref();
                let kept = cache.and_then(|c| c.blob(&config_descriptor.digest));
                if let Some(kept) = kept.filter(|k| k.len() as u64 == config_descriptor.size) {
                    return Ok(kept);
                }
                let config = client.small_blob(source, config_descriptor).await?;
                if let Some(cache) = cache {
                    cache.put_blob(&config_descriptor.digest, &config);
                }
                Ok::<_, RegistryError>(config)
            })
            .await?;
        check_config(
            config_descriptor,
            &config,
            platform,
            resolved.index_digest.is_some(),
            &source.to_string(),
        )?;
        Ok::<_, ImageError>(config)
    };
    let layer_jobs = resolved.manifest.layers.iter().map(|layer| async move {
        let compression = Compression::from_media_type(&layer.media_type).ok_or_else(|| {
            ImageError::NotALayer {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
            }
        })?;
        // By digest and compression: a blob declared with a compression it does not have fails,
        // whatever another image declared for it.
        let key = format!("{} {compression:?}", layer.digest);
        run.layers
            .get_or_fetch(&key, pull_layer(run, source, layer, compression))
            .await
    });
    let (config, contributions) =
        futures_util::future::try_join(config_job, futures_util::future::try_join_all(layer_jobs))
            .await?;
    let mut subtree = Subtree::new();
    let mut bytes = config.len() as u64;
    for (layer, contribution) in resolved.manifest.layers.iter().zip(&contributions) {
        bytes += layer.size;
        subtree
            .apply(contribution, &limits)
            .map_err(|source| ImageError::Layer {
                digest: layer.digest.clone(),
                source,
            })?;
    }
    let profiles = profiles::discover(&subtree)?;
    Ok(Pulled {
        resolved,
        subtree,
        profiles,
        bytes,
    })
}

/// Follows an index to the manifest for `platform`, verifying every document on the way.
async fn resolve_manifest(
    run: &Run,
    source: &Source,
    object: &str,
) -> Result<Resolved, ImageError> {
    let platform = &run.platform;
    let top = fetch_manifest(run, source, object).await?;
    let top_digest = top.digest.clone();
    let mut current = top;
    let mut index_digest = None;
    for _ in 0..=MAX_INDEX_DEPTH {
        let index = match current.manifest {
            Manifest::Image(manifest) => {
                return Ok(Resolved {
                    top_digest,
                    image_digest: current.digest,
                    index_digest,
                    manifest,
                });
            }
            Manifest::Index(index) => index,
        };
        index_digest.get_or_insert_with(|| current.digest.clone());
        let chosen = index
            .manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| platform.accepts(p)))
            .ok_or_else(|| ImageError::NoPlatform {
                digest: current.digest.clone(),
                wanted: platform.clone(),
                available: describe_platforms(&index.manifests),
            })?;
        let child = fetch_manifest(run, source, &chosen.digest).await?;
        if child.size != chosen.size {
            return Err(RegistryError::SizeMismatch {
                registry: source.registry.clone(),
                what: format!("manifest {}", chosen.digest),
                expected: chosen.size,
                actual: child.size,
            }
            .into());
        }
        current = child;
    }
    Err(ImageError::NestedTooDeep)
}

/// A manifest by tag is asked for every time; by digest, once per run.
async fn fetch_manifest(
    run: &Run,
    source: &Source,
    object: &str,
) -> Result<FetchedManifest, RegistryError> {
    if object.contains(':') {
        let fetch = async {
            let cache = run.cache.as_ref();
            if let Some((media_type, body)) = cache.and_then(|c| c.manifest(object))
                && let Ok((media_type, manifest)) = parse_manifest(&body, &media_type)
            {
                return Ok(FetchedManifest {
                    digest: object.to_string(),
                    media_type,
                    size: body.len() as u64,
                    manifest,
                    body,
                });
            }
            let fetched = run.client.manifest(source, object).await?;
            if let Some(cache) = cache {
                cache.put_manifest(object, &fetched.media_type, &fetched.body);
            }
            Ok(fetched)
        };
        run.manifests.get_or_fetch(object, fetch).await
    } else {
        run.client.manifest(source, object).await
    }
}

fn describe_platforms(manifests: &[Descriptor]) -> String {
    let platforms: Vec<String> = manifests
        .iter()
        .filter_map(|d| d.platform.as_ref().map(Platform::to_string))
        .collect();
    if platforms.is_empty() {
        "no platforms".into()
    } else {
        platforms.join(", ")
    }
}

fn check_config(
    descriptor: &Descriptor,
    config: &[u8],
    platform: &Platform,
    from_index: bool,
    reference: &str,
) -> Result<(), ImageError> {
    let parsed: crate::registry::ImageConfig =
        serde_json::from_slice(config).map_err(|e| ImageError::BadConfig {
            digest: descriptor.digest.clone(),
            cause: e.to_string(),
        })?;
    // A single-platform image for another platform is still used: placeholder images exist for
    // architectures a provider does not support, and their manifests are what the operator expects.
    if !from_index && !platform.accepts(&parsed.platform()) {
        tracing::warn!(image = reference, image_platform = %parsed.platform(), wanted = %platform, "image is for another platform; using it anyway");
    }
    Ok(())
}

async fn pull_layer(
    run: &Run,
    source: &Source,
    layer: &Descriptor,
    compression: Compression,
) -> Result<Contribution, ImageError> {
    let (client, limits) = (&run.client, run.limits);
    let cache = run.cache.as_ref();
    if let Some(kept) = cache.and_then(|c| c.layer(&layer.digest, compression, &limits)) {
        tracing::debug!(layer = %layer.digest, "layer taken from the cache");
        return Ok(kept);
    }
    // Through the layer's TOC when it has one and all checks out; else (the reason logged) whole.
    // A partial pull is a few small requests, so it does not wait in the queue, which orders whole
    // layers by their size: there a 40 MiB layer read through its TOC would go before, and hold up,
    // the small layers that hold the manifests.
    let contribution = match run
        .partial
        .contribution(client, source, layer, &limits)
        .await
    {
        Some(contribution) => contribution,
        None => {
            let _slot = run.queue.acquire(layer.size).await;
            pull_whole_layer(client, source, layer, compression, limits).await?
        }
    };
    if let Some(cache) = cache {
        cache.put_layer(&layer.digest, compression, &limits, &contribution);
    }
    Ok(contribution)
}

/// Downloads a layer and walks it as it streams.
async fn pull_whole_layer(
    client: &RegistryClient,
    source: &Source,
    layer: &Descriptor,
    compression: Compression,
    limits: Limits,
) -> Result<Contribution, ImageError> {
    let size = layer.size;
    let consumed = client
        .consume_blob(source, layer, move |reader| {
            layers::contribution(reader, compression, size, &limits)
        })
        .await;
    // A failed download (digest, size, network) explains a failed unpack, so it is reported first.
    consumed.map_err(|error| match error {
        BlobError::Download(error) => error.into(),
        BlobError::Consumer(source) => ImageError::Layer {
            digest: layer.digest.clone(),
            source,
        },
        BlobError::Worker(cause) => ImageError::Worker {
            digest: layer.digest.clone(),
            cause,
        },
    })
}

#[derive(Serialize)]
struct IndexJson<'a> {
    generator: String,
    platform: String,
    images: Vec<IndexImage<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexImage<'a> {
    names: &'a [String],
    #[serde(rename = "ref")]
    reference: &'a str,
    source: &'a str,
    digest: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    index_digest: Option<&'a str>,
    volume: &'a str,
    profiles: Vec<IndexProfile<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexProfile<'a> {
    profile: &'a str,
    metadata: &'a profiles::Metadata,
    #[serde(rename = "contentID")]
    content_id: &'a str,
    files: std::collections::BTreeMap<&'static str, &'a str>,
    manifests_path: String,
}

pub const GENERATOR: &str = concat!("provider-images ", env!("CARGO_PKG_VERSION"));

/// What index.json says of one image: a pulled image, or (warm run) one the published tree already holds.
struct Described<'a> {
    entry: &'a ImageEntry,
    source: &'a str,
    digest: &'a str,
    index_digest: Option<&'a str>,
    profiles: &'a [Profile],
}

impl PulledImage {
    fn described(&self) -> Described<'_> {
        Described {
            entry: &self.entry,
            source: &self.source,
            digest: &self.digest,
            index_digest: self.index_digest.as_deref(),
            profiles: &self.profiles,
        }
    }
}

fn index_json(images: &[Described<'_>], platform: &Platform) -> Result<Vec<u8>, serde_json::Error> {
    let index = IndexJson {
        generator: GENERATOR.to_string(),
        platform: platform.to_string(),
        images: images
            .iter()
            .map(|image| IndexImage {
                names: &image.entry.names,
                reference: &image.entry.reference_text,
                source: image.source,
                digest: image.digest,
                index_digest: image.index_digest,
                volume: &image.entry.volume,
                profiles: image
                    .profiles
                    .iter()
                    .map(|profile| IndexProfile {
                        profile: &profile.name,
                        metadata: &profile.metadata,
                        content_id: &profile.content_id,
                        files: [
                            (profiles::METADATA, profile.metadata_sha256.as_str()),
                            (profiles::MANIFESTS, profile.content_id.as_str()),
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

fn publish_tree(images: &[PulledImage], options: &ExtractOptions) -> Result<PathBuf, ExtractError> {
    let described: Vec<Described<'_>> = images.iter().map(PulledImage::described).collect();
    let index = index_json(&described, &options.platform)?;
    let out = &options.output;
    let publish_error = |source| ExtractError::Publish {
        path: out.clone(),
        source,
    };
    let mut publisher = Publisher::open(out, options.lock_timeout).map_err(publish_error)?;
    let staged = publisher.stage().map_err(publish_error)?;
    write_tree(&staged, images, &index).map_err(publish_error)?;
    publish::failpoint("after-write");
    publisher.commit(&staged).map_err(publish_error)
}

fn write_tree(staged: &Path, images: &[PulledImage], index: &[u8]) -> Result<(), PublishError> {
    for image in images {
        let volume = &image.entry.volume;
        publish::make_dir(staged, volume)?;
        if !image.subtree.exists() {
            continue;
        }
        let root = format!("{volume}/{}", layers::SUBTREE);
        publish::make_dir(staged, &root)?;
        for (path, node) in image.subtree.entries() {
            let target = format!("{root}/{path}");
            match node {
                Node::Dir => publish::make_dir(staged, &target)?,
                Node::File(contents) => publish::write_file(staged, &target, contents)?,
            }
        }
    }
    publish::write_file(staged, "index.json", index)
}
