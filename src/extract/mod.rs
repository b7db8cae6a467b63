//! `provider-images extract`: pull every image of images.json, compute what each image volume would show
//! under `capi-operator-manifests/`, and publish the tree with index.json — all of it, or nothing.
//! The one module that drives the whole pipeline; what each stage does is the stage's own module.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::images::ImageEntry;
use crate::layers::{self, Limits, Node, Subtree};
use crate::plan::Planner;
use crate::policy::RenderedPolicy;
use crate::profiles::Profile;
use crate::publish::{self, PublishError, Publisher};
use crate::registry::{Platform, RegistryClient};
use cache::Cache;
use partial::Partial;
use pull::{ByDigest, Run, pull_image};

mod cache;
mod error;
mod index;
pub(crate) mod partial;
mod progress;
mod pull;
mod queue;
mod signature;
mod warm;

pub(crate) use error::{ExtractError, ImageFailure};
use index::{Described, index_json};
use signature::SignatureRecord;

pub(crate) struct ExtractOptions {
    pub(crate) output: PathBuf,
    pub(crate) platform: Platform,
    pub(crate) concurrency: usize,
    pub(crate) limits: Limits,
    pub(crate) lock_timeout: Duration,
    /// Partial pulls through a layer's TOC (off with `--no-partial`).
    pub(crate) partial: bool,
    /// `--cache-dir`.
    pub(crate) cache_dir: Option<PathBuf>,
}

/// One image, pulled and merged.
pub(crate) struct PulledImage {
    pub(crate) entry: ImageEntry,
    pub(crate) source: String,
    pub(crate) digest: String,
    pub(crate) index_digest: Option<String>,
    pub(crate) subtree: Subtree,
    pub(crate) profiles: Vec<Profile>,
    /// What verified it, when a signature policy applied.
    pub(crate) signature: Option<SignatureRecord>,
}

pub(crate) struct Summary {
    pub(crate) images: usize,
    pub(crate) profiles: usize,
    /// The published tree was already current: nothing was pulled or written.
    pub(crate) warm: bool,
}

/// Pulls every image (`concurrency` at a time, every one attempted even when others fail), each
/// checked against the signature `policy` when one applies to it, then publishes.
pub(crate) async fn extract(
    client: Arc<RegistryClient>,
    planner: Arc<Planner>,
    policy: Option<Arc<RenderedPolicy>>,
    entries: Vec<ImageEntry>,
    options: &ExtractOptions,
) -> Result<Summary, ExtractError> {
    let total = entries.len();
    let started = Instant::now();
    let reuse = warm::reuse(&client, &planner, policy.as_deref(), &entries, options).await;
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
        policy,
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
    publish_tree(&pulled, options)?;
    Ok(Summary {
        images: pulled.len(),
        profiles,
        warm: false,
    })
}

fn publish_tree(images: &[PulledImage], options: &ExtractOptions) -> Result<(), ExtractError> {
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
    publisher.commit(&staged).map_err(publish_error)?;
    Ok(())
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
