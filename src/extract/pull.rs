//! Pulling one image: its pull sources in order, the manifest (through an index) for the platform,
//! the config, and each layer (whole, partially through its TOC, or from the cache), merged into the
//! image's subtree. Shares what the run already has by digest.

use std::sync::Arc;
use std::time::Instant;

use super::cache::Cache;
use super::error::{Attempt, AttemptError, ImageError, ImageFailure};
use super::partial::Partial;
use super::progress::{ImageProgress, LayerCounter};
use super::signature::{self, Applicable, SignatureRecord};
use super::{PulledImage, queue};
use crate::images::ImageEntry;
use crate::layers::{self, Compression, Contribution, Limits, Subtree};
use crate::plan::{Planner, Source};
use crate::policy::RenderedPolicy;
use crate::profiles::{self, Profile};
use crate::registry::{
    BlobError, DOCKER_CONFIG, Descriptor, FetchedManifest, Manifest, OCI_CONFIG, Platform,
    RegistryClient, RegistryError, parse_manifest,
};

/// Index → index → image is as deep as real images nest; deeper is a loop or an attack.
pub(super) const MAX_INDEX_DEPTH: usize = 2;

/// What every image of a run shares.
pub(super) struct Run {
    pub(super) client: Arc<RegistryClient>,
    pub(super) planner: Arc<Planner>,
    pub(super) cache: Option<Cache>,
    /// Every layer pulled whole, across images (a partial pull does not wait here).
    pub(super) queue: queue::WorkQueue,
    pub(super) layers: ByDigest<Contribution>,
    pub(super) configs: ByDigest<bytes::Bytes>,
    pub(super) manifests: ByDigest<FetchedManifest>,
    pub(super) platform: Platform,
    pub(super) limits: Limits,
    pub(super) partial: Partial,
    /// The cluster's signature policy; `None`: unknown (no cluster read), nothing checked.
    pub(super) policy: Option<Arc<RenderedPolicy>>,
}

/// What this run already has, by digest: a base layer shared by a dozen provider images is downloaded
/// and walked once, and images asking for it meanwhile wait for that one pull; so are a config or a
/// manifest that several refs share. What is kept is content-addressed and verified, so one from any
/// source serves all; a failure is not kept, so the next asker (perhaps through another source) tries
/// again.
pub(super) struct ByDigest<T> {
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

pub(super) async fn pull_image(run: &Run, entry: ImageEntry) -> Result<PulledImage, ImageFailure> {
    let failure = |attempts, plan_error| ImageFailure {
        reference: entry.reference_text.clone(),
        attempts,
        plan_error,
    };
    let sources = match run.planner.plan(&entry.reference) {
        Ok(sources) => sources,
        Err(error) => return Err(failure(Vec::new(), Some(error))),
    };
    let applicable =
        (run.policy.as_deref()).and_then(|policy| signature::applicable(policy, &entry.reference));
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
        match pull_from(
            run,
            &entry,
            &planned.source,
            planned.pull.reference.object(),
            applicable.as_ref(),
        )
        .await
        {
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
                    signature: pulled.signature,
                });
            }
            Err(error) => {
                tracing::warn!(image = %entry.reference_text, source = %shown, error = %crate::error::error_chain(&error), "pull source failed");
                let ends_image = error.ends_image();
                attempts.push(Attempt {
                    source: shown,
                    error: AttemptError::Failed(error),
                });
                if ends_image {
                    break;
                }
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
    signature: Option<SignatureRecord>,
}

struct Resolved {
    top_digest: String,
    image_digest: String,
    index_digest: Option<String>,
    manifest: crate::registry::ImageManifest,
    /// The per-platform manifest's bytes, as its digest and signatures cover them.
    manifest_bytes: bytes::Bytes,
}

async fn pull_from(
    run: &Run,
    entry: &ImageEntry,
    source: &Source,
    object: &str,
    applicable: Option<&Applicable<'_>>,
) -> Result<Pulled, ImageError> {
    let (client, platform, limits) = (&run.client, &run.platform, run.limits);
    let image = entry.reference_text.as_str();
    let resolved = resolve_manifest(run, source, object).await?;
    // Before the config and any layer, from this source, on the per-platform manifest (an
    // index's own signature does not count); with no applicable policy, no request at all.
    let signature = match applicable {
        Some(applicable) => Some(
            applicable
                .verify(
                    client,
                    source,
                    &entry.reference,
                    &resolved.image_digest,
                    &resolved.manifest_bytes,
                )
                .await?,
        ),
        None => None,
    };
    let layer_bytes = resolved.manifest.layers().iter().map(|l| l.size()).sum();
    let progress = ImageProgress::new(image, layer_bytes);
    let config_descriptor = &resolved.manifest.config();
    let config_type = config_descriptor.media_type().to_string();
    if config_type != OCI_CONFIG && config_type != DOCKER_CONFIG {
        return Err(ImageError::NotAnImage(
            config_descriptor.media_type().to_string(),
        ));
    }
    // The config is fetched alongside the layers: it is one small request that the layers do not
    // depend on, and waiting for it first would cost every image a round trip.
    let config_job = async {
        let config = run
            .configs
            .get_or_fetch(config_descriptor.digest().as_ref(), async {
                let cache = run.cache.as_ref();
                let kept = cache.and_then(|c| c.blob(config_descriptor.digest().as_ref()));
                if let Some(kept) = kept.filter(|k| k.len() as u64 == config_descriptor.size()) {
                    return Ok(kept);
                }
                let config = client.small_blob(source, config_descriptor).await?;
                if let Some(cache) = cache {
                    cache.put_blob(config_descriptor.digest().as_ref(), &config);
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
    let progress = &progress;
    let layer_jobs = resolved.manifest.layers().iter().map(|layer| async move {
        let compression = Compression::from_media_type(layer.media_type().to_string().as_str())
            .ok_or_else(|| ImageError::NotALayer {
                digest: layer.digest().to_string(),
                media_type: layer.media_type().to_string(),
            })?;
        // By digest and compression: a blob declared with a compression it does not have fails,
        // whatever another image declared for it.
        let key = format!("{} {compression:?}", layer.digest());
        let counter = LayerCounter::new(progress);
        let contribution = run
            .layers
            .get_or_fetch(
                &key,
                pull_layer(run, source, layer, compression, counter.clone()),
            )
            .await;
        counter.done(layer.size());
        contribution
    });
    let (config, contributions) =
        futures_util::future::try_join(config_job, futures_util::future::try_join_all(layer_jobs))
            .await?;
    let mut subtree = Subtree::new();
    let mut bytes = config.len() as u64;
    for (layer, contribution) in resolved.manifest.layers().iter().zip(&contributions) {
        bytes += layer.size();
        subtree
            .apply(contribution, &limits)
            .map_err(|source| ImageError::Layer {
                digest: layer.digest().to_string(),
                source,
            })?;
    }
    let profiles = profiles::discover(&subtree)?;
    Ok(Pulled {
        resolved,
        subtree,
        profiles,
        bytes,
        signature,
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
                    manifest: *manifest,
                    manifest_bytes: current.body,
                });
            }
            Manifest::Index(index) => index,
        };
        index_digest.get_or_insert_with(|| current.digest.clone());
        let chosen = index
            .manifests()
            .iter()
            .find(|d| {
                d.platform()
                    .as_ref()
                    .is_some_and(|p| platform.accepts(&p.into()))
            })
            .ok_or_else(|| ImageError::NoPlatform {
                digest: current.digest.clone(),
                wanted: platform.clone(),
                available: describe_platforms(index.manifests()),
            })?;
        let child = fetch_manifest(run, source, chosen.digest().as_ref()).await?;
        if child.size != chosen.size() {
            return Err(RegistryError::SizeMismatch {
                registry: source.registry.clone(),
                what: format!("manifest {}", chosen.digest()),
                expected: chosen.size(),
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
        .filter_map(|d| d.platform().as_ref().map(|p| Platform::from(p).to_string()))
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
    let parsed = crate::registry::parse_config(config).map_err(|e| ImageError::BadConfig {
        digest: descriptor.digest().to_string(),
        cause: e.to_string(),
    })?;
    let declared = Platform::from(&parsed);
    // A single-platform image for another platform is still used: placeholder images exist for
    // architectures a provider does not support, and their manifests are what the operator expects.
    if !from_index && !platform.accepts(&declared) {
        tracing::warn!(image = reference, image_platform = %declared, wanted = %platform, "image is for another platform; using it anyway");
    }
    Ok(())
}

async fn pull_layer(
    run: &Run,
    source: &Source,
    layer: &Descriptor,
    compression: Compression,
    counter: LayerCounter,
) -> Result<Contribution, ImageError> {
    let (client, limits) = (&run.client, run.limits);
    let cache = run.cache.as_ref();
    if let Some(kept) = cache.and_then(|c| c.layer(layer.digest().as_ref(), compression, &limits)) {
        tracing::debug!(layer = %layer.digest(), "layer taken from the cache");
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
            let _slot = run.queue.acquire(layer.size()).await;
            pull_whole_layer(client, source, layer, compression, limits, counter).await?
        }
    };
    if let Some(cache) = cache {
        cache.put_layer(layer.digest().as_ref(), compression, &limits, &contribution);
    }
    Ok(contribution)
}

/// Downloads a layer and walks it as it streams, counting what it reads into `counter`.
async fn pull_whole_layer(
    client: &RegistryClient,
    source: &Source,
    layer: &Descriptor,
    compression: Compression,
    limits: Limits,
    counter: LayerCounter,
) -> Result<Contribution, ImageError> {
    let size = layer.size();
    let consumed = client
        .consume_blob(source, layer, move |reader| {
            layers::contribution(counter.reader(reader), compression, size, &limits)
        })
        .await;
    // A failed download (digest, size, network) explains a failed unpack, so it is reported first.
    consumed.map_err(|error| match error {
        BlobError::Download(error) => error.into(),
        BlobError::Consumer(source) => ImageError::Layer {
            digest: layer.digest().to_string(),
            source,
        },
        BlobError::Worker(cause) => ImageError::Worker {
            digest: layer.digest().to_string(),
            cause,
        },
    })
}
