//! Reusing the published tree: an image the tree already holds, as this run would pull it, is not
//! pulled again; when the tree holds every image and nothing else, nothing is written either (a warm
//! run).
//!
//! All of it is read from the payload `..data` points to, under the publish lock, so a concurrent
//! publisher cannot swap the tree mid-check. The tree is considered at all only when index.json's
//! `generator` is this binary's and its `platform` the one asked for. An image of it is reused when:
//! - its volume holds exactly the files index.json lists for its profiles (and their directories),
//!   each with its sha256, within the limits and with the modes the tool writes, and nothing else —
//!   a volume holding anything index.json cannot vouch for is pulled again;
//! - its ref is pinned by digest, names the recorded digest (the index's, when it named one), and the
//!   recorded source is still one of its pull sources: no request at all;
//! - or it is a tag ref whose pull sources, asked in order, still serve the recorded digest from the
//!   recorded source: one manifest request;
//! - and the signature policy that applies to it now has the fingerprint index.json records (none
//!   applying and none recorded alike): a changed policy, or one that applies to an image recorded
//!   without one (a tree published before policies were checked), has it pulled and verified again.
//!
//! The run is warm when every image is reused, the visible links point through `..data`, the payload
//! holds nothing else, and index.json rebuilt from images.json and what was read back is byte for
//! byte the published one (names, volumes, profiles, metadata, hashes and paths all follow).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use thiserror::Error;

use super::index::{Described, GENERATOR, IndexImage, IndexJson, index_json};
use super::signature;
use super::{ExtractOptions, PulledImage};
use crate::images::ImageEntry;
use crate::layers::{self, Subtree};
use crate::plan::Planner;
use crate::plan::mirrors::MirrorError;
use crate::policy::RenderedPolicy;
use crate::profiles::{self, Profile, ProfileError};
use crate::publish::{self, Publisher};
use crate::registry::RegistryClient;

/// Why the tree's copy of an image, or the tree itself, is not what this run would publish (for the log).
#[derive(Debug, Error)]
enum NotReused {
    #[error("index.json records another volume")]
    OtherVolume,
    #[error("index.json records another digest")]
    OtherDigest,
    #[error("the signature policy that applies to it is not the one index.json records")]
    OtherPolicy,
    #[error(transparent)]
    Plan(#[from] MirrorError),
    #[error("the recorded source {0} is not one of its pull sources")]
    SourceNotPlanned(String),
    #[error("profile name {0:?}")]
    ProfileName(String),
    #[error("its volume holds other files or directories than its profiles")]
    OtherFiles,
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is over --max-file-size", .0.display())]
    OverFileSize(PathBuf),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("the files of profile {0} do not have the sha256 index.json records")]
    OtherSha256(String),
    #[error("its files are over --max-image-size")]
    OverImageSize,
    #[error("its volume is not a 0755 directory")]
    VolumeMode,
    /// A directory entry that cannot be listed or inspected, named as the walk names it.
    #[error("{name}: {source}")]
    Listing {
        name: String,
        source: std::io::Error,
    },
    #[error("its volume holds a name that is not UTF-8")]
    NotUtf8,
    #[error("{0} is not a 0755 directory or a 0644 file")]
    EntryMode(String),
    #[error("now served by {now}, recorded {recorded}")]
    OtherSource { now: String, recorded: String },
    #[error("the tag now points at {now}, recorded {recorded}")]
    TagMoved { now: String, recorded: String },
    #[error("no pull source answered for the tag")]
    NoSourceAnswered,
    #[error("a visible entry does not link into ..data")]
    VisibleLink,
    #[error("the payload holds other entries than index.json and the volumes")]
    OtherEntries,
    #[error("index.json: {0}")]
    Index(#[source] serde_json::Error),
    #[error("index.json differs from what this run would write")]
    IndexDiffers,
}

/// `name: error`, for the walk's listing failures.
fn listing(name: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> NotReused {
    move |source| NotReused::Listing {
        name: name.to_string(),
        source,
    }
}

/// What the published tree offers this run.
pub(super) struct Reuse {
    /// Images the tree holds as this run would pull them, by ref as written.
    pub(super) images: BTreeMap<String, PulledImage>,
    /// Every image is reused and the tree is exactly what this run would publish.
    pub(super) warm: bool,
    /// Why the run is not warm, for the log.
    pub(super) cold: Vec<String>,
}

impl Reuse {
    fn none(why: impl Into<String>) -> Reuse {
        Reuse {
            images: BTreeMap::new(),
            warm: false,
            cold: vec![why.into()],
        }
    }
}

/// Reads back what the published tree holds of `entries` (sorted by ref, as `parse_images_json` gives
/// them).
pub(super) async fn reuse(
    client: &RegistryClient,
    planner: &Planner,
    policy: Option<&RenderedPolicy>,
    entries: &[ImageEntry],
    options: &ExtractOptions,
) -> Reuse {
    let out = &options.output;
    // Nothing published (the usual first run): no lock taken, nothing created.
    if publish::current_payload(out).is_none() {
        return Reuse::none("nothing is published yet");
    }
    let publisher = match Publisher::open(out, options.lock_timeout) {
        Ok(publisher) => publisher,
        Err(e) => return Reuse::none(format!("cannot lock the output directory: {e}")),
    };
    let Some(payload) = publish::current_payload(out) else {
        return Reuse::none("nothing is published");
    };
    let bytes = match fs::read(payload.join("index.json")) {
        Ok(bytes) => bytes,
        Err(e) => return Reuse::none(format!("cannot read the published index.json: {e}")),
    };
    let index: IndexJson = match serde_json::from_slice(&bytes) {
        Ok(index) => index,
        Err(e) => return Reuse::none(format!("the published index.json does not parse: {e}")),
    };
    if index.generator != GENERATOR {
        return Reuse::none(format!(
            "index.json was written by {:?}, this is {GENERATOR:?}",
            index.generator
        ));
    }
    let platform = options.platform.to_string();
    if index.platform != platform {
        return Reuse::none(format!(
            "index.json is for platform {}, this run for {platform}",
            index.platform
        ));
    }
    let mut cold = Vec::new();
    let mut listed: BTreeMap<String, IndexImage> = index
        .images
        .into_iter()
        .map(|image| (image.reference.clone(), image))
        .collect();
    let mut candidates = Vec::new();
    for entry in entries {
        let Some(image) = listed.remove(&entry.reference_text) else {
            cold.push(format!("{}: not in index.json", entry.reference_text));
            continue;
        };
        match held(&payload, entry, image, planner, policy, options) {
            Ok(held) => candidates.push((entry, held)),
            Err(why) => cold.push(format!("{}: {why}", entry.reference_text)),
        }
    }
    if !listed.is_empty() {
        cold.push("index.json lists images that images.json does not".into());
    }
    let checks = candidates.into_iter().map(|(entry, held)| async move {
        match entry.reference.digest {
            Some(_) => Ok((entry, held)),
            None => match check_tag(client, planner, entry, &held).await {
                Ok(()) => Ok((entry, held)),
                Err(why) => Err(format!("{}: {why}", entry.reference_text)),
            },
        }
    });
    let mut images = BTreeMap::new();
    let mut checked =
        futures_util::stream::iter(checks).buffer_unordered(options.concurrency.max(1));
    while let Some(result) = checked.next().await {
        match result {
            Ok((entry, held)) => {
                images.insert(entry.reference_text.clone(), held);
            }
            Err(why) => cold.push(why),
        }
    }
    drop(checked);
    if cold.is_empty()
        && let Err(why) = exact_tree(out, &payload, entries, &images, &bytes, options)
    {
        cold.push(why.to_string());
    }
    drop(publisher);
    Reuse {
        warm: cold.is_empty(),
        images,
        cold,
    }
}

/// The image as the tree holds it, if the tree holds it as this run would pull it (but for a tag's
/// request).
fn held(
    payload: &Path,
    entry: &ImageEntry,
    image: IndexImage,
    planner: &Planner,
    policy: Option<&RenderedPolicy>,
    options: &ExtractOptions,
) -> Result<PulledImage, NotReused> {
    if image.volume != entry.volume {
        return Err(NotReused::OtherVolume);
    }
    let applies = policy.and_then(|p| signature::applicable(p, &entry.reference));
    let recorded = image.signature.as_ref().map(|s| &s.policy_fingerprint);
    if applies.as_ref().map(|a| &a.fingerprint) != recorded {
        return Err(NotReused::OtherPolicy);
    }
    if let Some(digest) = &entry.reference.digest {
        if image.index_digest.as_ref().unwrap_or(&image.digest) != digest {
            return Err(NotReused::OtherDigest);
        }
        let sources = planner.plan(&entry.reference)?;
        let allowed = sources
            .iter()
            .filter(|p| p.pull.blocked.is_none())
            .any(|p| format!("{}@{digest}", p.source) == image.source);
        if !allowed {
            return Err(NotReused::SourceNotPlanned(image.source));
        }
    }
    let (profiles, files) = read_volume(&payload.join(&entry.volume), &image, options)?;
    let subtree = if files.is_empty() {
        Subtree::new()
    } else {
        Subtree::from_files(files)
    };
    Ok(PulledImage {
        entry: entry.clone(),
        source: image.source,
        digest: image.digest,
        index_digest: image.index_digest,
        subtree,
        profiles,
        signature: image.signature,
    })
}

/// Files of a subtree read back: (path relative to the subtree root, content).
type Files = Vec<(String, Vec<u8>)>;

/// Reads one volume: exactly the files index.json lists for its profiles (with their parent
/// directories), hashed and parsed again. Returns the profiles and the files (relative to the
/// subtree root).
fn read_volume(
    volume: &Path,
    image: &IndexImage,
    options: &ExtractOptions,
) -> Result<(Vec<Profile>, Files), NotReused> {
    let mut expected_dirs = BTreeSet::new();
    let mut expected_files = BTreeSet::new();
    for profile in &image.profiles {
        let name = &profile.profile;
        if matches!(name.as_str(), "" | "." | "..") || name.contains(['/', '\0']) {
            return Err(NotReused::ProfileName(name.clone()));
        }
        let dir = format!("{}/{name}", layers::SUBTREE);
        expected_files.insert(format!("{dir}/{}", profiles::METADATA));
        expected_files.insert(format!("{dir}/{}", profiles::MANIFESTS));
        expected_dirs.insert(dir);
        expected_dirs.insert(layers::SUBTREE.to_string());
    }
    let (dirs, files) = walk(volume)?;
    if dirs != expected_dirs || files != expected_files {
        return Err(NotReused::OtherFiles);
    }
    let mut profiles = Vec::with_capacity(image.profiles.len());
    let mut read_back = Vec::with_capacity(2 * image.profiles.len());
    let mut total = 0u64;
    for profile in &image.profiles {
        let name = &profile.profile;
        let dir = volume.join(layers::SUBTREE).join(name);
        let read = |file: &str| {
            let path = dir.join(file);
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(source) => return Err(NotReused::Read { path, source }),
            };
            if bytes.len() as u64 > options.limits.max_file_size {
                return Err(NotReused::OverFileSize(path));
            }
            Ok(bytes)
        };
        let metadata = read(profiles::METADATA)?;
        let manifests = read(profiles::MANIFESTS)?;
        total += (metadata.len() + manifests.len()) as u64;
        let described = profiles::describe(name, &metadata, &manifests)?;
        let on_disk = BTreeMap::from([
            (profiles::METADATA, described.metadata_sha256.as_str()),
            (profiles::MANIFESTS, described.content_id.as_str()),
        ]);
        let recorded: BTreeMap<&str, &str> = profile
            .files
            .iter()
            .map(|(file, sum)| (file.as_str(), sum.as_str()))
            .collect();
        if on_disk != recorded {
            return Err(NotReused::OtherSha256(name.clone()));
        }
        profiles.push(described);
        read_back.push((format!("{name}/{}", profiles::METADATA), metadata));
        read_back.push((format!("{name}/{}", profiles::MANIFESTS), manifests));
    }
    if total > options.limits.max_image_size {
        return Err(NotReused::OverImageSize);
    }
    // As discover() orders them; comparing index.json byte for byte then checks the recorded order.
    profiles.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((profiles, read_back))
}

/// Directories and regular files under `root` (relative, '/'-separated), requiring the modes the
/// publisher sets and nothing but directories and regular files.
fn walk(root: &Path) -> Result<(BTreeSet<String>, BTreeSet<String>), NotReused> {
    let meta = fs::symlink_metadata(root).map_err(listing(root.display()))?;
    if !meta.is_dir() || meta.permissions().mode() & 0o7777 != 0o755 {
        return Err(NotReused::VolumeMode);
    }
    let mut dirs = BTreeSet::new();
    let mut files = BTreeSet::new();
    let mut pending: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        let entries = fs::read_dir(&dir).map_err(listing(dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(listing(dir.display()))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                return Err(NotReused::NotUtf8);
            };
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(listing(&rel))?;
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() && mode == 0o755 {
                dirs.insert(rel.clone());
                pending.push((path, rel));
            } else if meta.is_file() && mode == 0o644 {
                files.insert(rel);
            } else {
                return Err(NotReused::EntryMode(rel));
            }
        }
    }
    Ok((dirs, files))
}

/// A tag ref: the first pull source that answers must serve the recorded digest, as the recorded
/// source.
async fn check_tag(
    client: &RegistryClient,
    planner: &Planner,
    entry: &ImageEntry,
    held: &PulledImage,
) -> Result<(), NotReused> {
    let sources = planner.plan(&entry.reference)?;
    let recorded = held.index_digest.as_ref().unwrap_or(&held.digest);
    for planned in sources.iter().filter(|p| p.pull.blocked.is_none()) {
        match client
            .manifest(&planned.source, planned.pull.reference.object())
            .await
        {
            Ok(fetched) if &fetched.digest == recorded => {
                let source = format!("{}@{}", planned.source, fetched.digest);
                if source != held.source {
                    return Err(NotReused::OtherSource {
                        now: source,
                        recorded: held.source.clone(),
                    });
                }
                return Ok(());
            }
            Ok(fetched) => {
                return Err(NotReused::TagMoved {
                    now: fetched.digest.to_string(),
                    recorded: recorded.to_string(),
                });
            }
            Err(error) => {
                tracing::debug!(image = %entry.reference_text, source = %planned.display(), error = %crate::error::error_chain(&error), "checking the tag: source did not answer");
            }
        }
    }
    Err(NotReused::NoSourceAnswered)
}

/// The tree is exactly what this run would publish: visible links through `..data`, nothing else in the
/// payload, and index.json as this run would write it.
fn exact_tree(
    out: &Path,
    payload: &Path,
    entries: &[ImageEntry],
    images: &BTreeMap<String, PulledImage>,
    published: &[u8],
    options: &ExtractOptions,
) -> Result<(), NotReused> {
    let mut names: BTreeSet<String> = BTreeSet::from(["index.json".to_string()]);
    names.extend(entries.iter().map(|entry| entry.volume.clone()));
    if !names.iter().all(|name| publish::is_visible_link(out, name)) {
        return Err(NotReused::VisibleLink);
    }
    let mut present = BTreeSet::new();
    for entry in fs::read_dir(payload).map_err(listing(payload.display()))? {
        let entry = entry.map_err(listing(payload.display()))?;
        present.insert(entry.file_name().to_string_lossy().into_owned());
    }
    if present != names {
        return Err(NotReused::OtherEntries);
    }
    let described: Vec<Described<'_>> = entries
        .iter()
        .filter_map(|entry| images.get(&entry.reference_text))
        .map(PulledImage::described)
        .collect();
    let rebuilt = index_json(&described, &options.platform).map_err(NotReused::Index)?;
    if rebuilt != published {
        return Err(NotReused::IndexDiffers);
    }
    Ok(())
}
