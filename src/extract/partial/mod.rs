//! Partial pulls: reading a layer's contribution from its table of contents and the few files under
//! the subtree, fetched by `Range` requests, instead of downloading the whole layer.
//!
//! Two layer formats carry a table of contents (TOC) that the image manifest vouches for:
//! - **zstd:chunked** (containers/storage): the layer annotations give the TOC's position and the
//!   digest of its compressed bytes; every file's data is its own zstd frames, and the TOC gives
//!   their range and the digest of the file.
//! - **eStargz** (stargz-snapshotter): the annotation gives the digest of the TOC JSON, a footer at
//!   the end of the blob gives its offset; every file's data (or each chunk of it) is its own gzip
//!   member, and the TOC gives where each starts and the digest of each chunk.
//!
//! The chain of trust is the manifest digest → the annotation → the TOC → each file's data. The
//! TOC's entries go, in order, through the same recorder as a tar stream's
//! ([`layers::from_listing`]), so the contribution is the one the full path would give for a layer
//! whose TOC matches its tar. Any doubt — no annotations, a registry that ignores `Range`, a digest
//! that does not match, a TOC we cannot read, a file over the limits, a layer the recorder refuses
//! — returns a [`Fallback`] with the reason, and the caller pulls the layer whole, which has the
//! last word (on a hostile layer too). Nothing from a partial attempt that failed is kept.

mod estargz;
mod ranges;
mod zstd_chunked;

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use thiserror::Error;

use crate::layers::{self, Contribution, EntryKind, Limits, ListedEntry};
use crate::plan::Source;
use crate::registry::{Descriptor, RegistryClient, sha256_digest as sha256};
use ranges::Fetcher;

/// Largest TOC read, compressed or not: containers/storage refuses TOCs over 50 MiB too.
const MAX_TOC: u64 = 50 << 20;
/// Layers this small are downloaded whole: one request, where a partial pull takes one or two
/// for about as many bytes.
const MIN_PARTIAL: u64 = 32 << 10;
/// How far into a decompressed member a chunk may start, per compressed byte: the full path's
/// inflate cap, against a TOC that would have us inflate a bomb to skip to its data.
const MAX_INFLATE_RATIO: u64 = 100;

/// Partial pulls in flight at once. They wait on the network, not the CPU, so more of them than
/// whole layers (twice the cores) run together; the bound keeps the TOCs held at once few.
const WIDTH: usize = 16;

/// Partial pulls for one run: whether they are on, and what they cost.
pub(crate) struct Partial {
    enabled: bool,
    in_flight: tokio::sync::Semaphore,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    partial_layers: AtomicU64,
    full_layers: AtomicU64,
    /// Sum of the sizes of the layers pulled, partially or not.
    layer_bytes: AtomicU64,
    /// Bytes of blob data received: ranges, and whole layers.
    fetched_bytes: AtomicU64,
    /// Blob requests: one per range request, one per whole layer.
    requests: AtomicU64,
}

/// Why a layer is pulled whole after all.
#[derive(Debug)]
pub(crate) struct Fallback {
    reason: String,
    kind: FallbackKind,
}

/// How much a fallback is worth saying: it decides the level of its log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FallbackKind {
    /// The layer never could have been pulled partially (it has no TOC): no line of its own at info.
    Ordinary,
    /// It could have been, and was not: a line at info.
    Plain,
    /// A digest or answer that does not match what was vouched for: worth a warning.
    Suspicious,
}

impl Fallback {
    fn plain(reason: impl Into<String>) -> Fallback {
        Fallback {
            reason: reason.into(),
            kind: FallbackKind::Plain,
        }
    }

    /// An ordinary layer, without a TOC: the run's summary counts it.
    fn ordinary(reason: impl Into<String>) -> Fallback {
        Fallback {
            reason: reason.into(),
            kind: FallbackKind::Ordinary,
        }
    }

    fn suspicious(reason: impl Into<String>) -> Fallback {
        Fallback {
            reason: reason.into(),
            kind: FallbackKind::Suspicious,
        }
    }

    #[cfg(test)]
    fn is_suspicious(&self) -> bool {
        self.kind == FallbackKind::Suspicious
    }
}

impl Partial {
    pub(crate) fn new(enabled: bool) -> Partial {
        Partial {
            enabled,
            in_flight: tokio::sync::Semaphore::new(WIDTH),
            stats: Stats::default(),
        }
    }

    /// The layer's contribution from a partial pull, or None (with a log line saying why) when the
    /// layer is to be pulled whole; the caller then does so, and that is counted here already.
    pub(crate) async fn contribution(
        &self,
        client: &RegistryClient,
        source: &Source,
        layer: &Descriptor,
        limits: &Limits,
    ) -> Option<Contribution> {
        self.stats
            .layer_bytes
            .fetch_add(layer.size(), Ordering::Relaxed);
        let mut fetcher = Fetcher::new(client, source, layer);
        let outcome = if self.enabled {
            let _permit = self.in_flight.acquire().await.expect("never closed");
            pull(&mut fetcher, layer, limits).await
        } else {
            Err(Fallback::plain("--no-partial"))
        };
        self.stats
            .requests
            .fetch_add(fetcher.requests, Ordering::Relaxed);
        self.stats
            .fetched_bytes
            .fetch_add(fetcher.bytes, Ordering::Relaxed);
        match outcome {
            Ok((format, contribution)) => {
                self.stats.partial_layers.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    layer = %layer.digest(),
                    format,
                    requests = fetcher.requests,
                    fetched_bytes = fetcher.bytes,
                    layer_bytes = layer.size(),
                    "layer pulled partially"
                );
                Some(contribution)
            }
            Err(fallback) => {
                self.stats.full_layers.fetch_add(1, Ordering::Relaxed);
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .fetched_bytes
                    .fetch_add(layer.size(), Ordering::Relaxed);
                let (layer, reason) = (layer.digest(), &fallback.reason);
                match fallback.kind {
                    // The flag is the reason for every layer; the run's summary says so once.
                    _ if !self.enabled => {}
                    FallbackKind::Suspicious => {
                        tracing::warn!(%layer, %reason, "partial pull refused; pulling the layer whole")
                    }
                    FallbackKind::Ordinary => {
                        tracing::debug!(%layer, %reason, "pulling the layer whole")
                    }
                    FallbackKind::Plain => {
                        tracing::info!(%layer, %reason, "pulling the layer whole")
                    }
                }
                None
            }
        }
    }

    /// One log line for the run: layers pulled partially and whole, bytes fetched against the
    /// layers' sizes, blob requests made.
    pub(crate) fn log_summary(&self) {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let layer_bytes = load(&self.stats.layer_bytes);
        let fetched = load(&self.stats.fetched_bytes);
        let percent = if layer_bytes == 0 {
            0.0
        } else {
            fetched as f64 * 100.0 / layer_bytes as f64
        };
        tracing::info!(
            partial = self.enabled,
            partial_layers = load(&self.stats.partial_layers),
            full_layers = load(&self.stats.full_layers),
            fetched_bytes = fetched,
            layer_bytes,
            fetched_percent = format!("{percent:.2}"),
            blob_requests = load(&self.stats.requests),
            "layer bytes fetched"
        );
    }
}

/// For `crate::fuzz`: a verified TOC's JSON (eStargz when `estargz`, else zstd:chunked) through
/// every check made before anything is fetched; the number of files whose data would be fetched.
pub(crate) fn check_toc(
    json: &[u8],
    estargz: bool,
    layer: &Descriptor,
    limits: &Limits,
) -> Result<usize, Fallback> {
    let toc = if estargz {
        estargz::entries(json, layer.size())?
    } else {
        zstd_chunked::entries(json)?
    };
    Ok(wanted_files(&toc, layer, limits)?.len())
}

/// A TOC in the terms both formats share.
struct Toc {
    entries: Vec<TocEntry>,
}

/// One tar entry as a TOC lists it. Chunks of a regular file are folded into it.
struct TocEntry {
    name: String,
    link: String,
    kind: EntryKind,
    size: u64,
    /// `sha256:<hex>` of the whole data, when the TOC gives one.
    digest: Option<String>,
    chunks: Vec<Chunk>,
}

/// The entry kind a TOC's `type` names: both formats use the CRFS names. `chunk` is no kind but a
/// further piece of the file before it, which each format reads its own way.
fn toc_kind(toc_type: &str) -> Option<EntryKind> {
    Some(match toc_type {
        "reg" => EntryKind::File,
        "dir" => EntryKind::Dir,
        "symlink" => EntryKind::Symlink,
        "hardlink" => EntryKind::Hardlink,
        "char" => EntryKind::CharDevice,
        "block" => EntryKind::BlockDevice,
        "fifo" => EntryKind::Fifo,
        _ => return None,
    })
}

/// A piece of a regular file's data: compressed bytes of the blob which, decompressed from their
/// start, hold the piece at `skip`.
#[derive(Debug, Clone)]
struct Chunk {
    compressed: Range<u64>,
    skip: u64,
    size: u64,
    digest: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum Codec {
    /// Any number of whole zstd frames.
    Zstd,
    /// One gzip member.
    Gzip,
}

/// The layer's contribution through its TOC, and the format's name.
async fn pull(
    fetcher: &mut Fetcher<'_>,
    layer: &Descriptor,
    limits: &Limits,
) -> Result<(&'static str, Contribution), Fallback> {
    enum Found {
        ZstdChunked(zstd_chunked::Found),
        Estargz(estargz::Found),
    }
    let found = if let Some(found) = zstd_chunked::find(layer)? {
        Found::ZstdChunked(found)
    } else if let Some(found) = estargz::find(layer)? {
        Found::Estargz(found)
    } else {
        return Err(Fallback::ordinary("no TOC annotations"));
    };
    if layer.size() < MIN_PARTIAL {
        return Err(Fallback::plain(format!(
            "a layer under {MIN_PARTIAL} bytes is fetched whole"
        )));
    }
    let (format, codec, toc) = match found {
        Found::ZstdChunked(found) => ("zstd:chunked", Codec::Zstd, found.read(fetcher).await?),
        Found::Estargz(found) => ("estargz", Codec::Gzip, found.read(fetcher).await?),
    };
    let wanted = wanted_files(&toc, layer, limits)?;
    let compressed: Vec<Range<u64>> = wanted
        .iter()
        .flat_map(|&i| toc.entries[i].chunks.iter().map(|c| c.compressed.clone()))
        .collect();
    let fetched = fetcher.fetch(compressed).await?;
    let limits = *limits;
    let contribution = tokio::task::spawn_blocking(move || {
        let mut data = vec![None; toc.entries.len()];
        for i in wanted {
            data[i] = Some(file_data(&toc.entries[i], codec, &fetched)?);
        }
        let listed = toc
            .entries
            .into_iter()
            .zip(data)
            .map(|(entry, data)| ListedEntry {
                name: entry.name.into_bytes(),
                link: entry.link.into_bytes(),
                kind: entry.kind,
                size: entry.size,
                data,
            });
        layers::from_listing(listed, &limits).map_err(|error| {
            Fallback::plain(format!(
                "the TOC's entries are refused: {}",
                crate::error::error_chain(&error)
            ))
        })
    })
    .await
    .map_err(|error| Fallback::plain(format!("worker stopped: {error}")))??;
    Ok((format, contribution))
}

/// The regular files whose data the contribution needs, after checking what can be checked
/// before fetching anything: names a TOC may have mangled, limits, digests, ranges.
fn wanted_files(toc: &Toc, layer: &Descriptor, limits: &Limits) -> Result<Vec<usize>, Fallback> {
    let mut wanted = Vec::new();
    let mut total: u64 = 0;
    for (i, entry) in toc.entries.iter().enumerate() {
        // JSON encoders replace bytes that are not UTF-8 with U+FFFD: such a name may not be
        // the tar's, and the tar path decides what to make of it.
        if entry.name.contains('\u{fffd}') || entry.link.contains('\u{fffd}') {
            return Err(Fallback::plain(format!(
                "TOC name {:?} may not be the tar's",
                entry.name
            )));
        }
        if entry.kind != EntryKind::File
            || entry.size == 0
            || !layers::wants_data(entry.name.as_bytes())
        {
            continue;
        }
        // The recorder would refuse these on the size alone; the full path says how.
        total = total.saturating_add(entry.size);
        if entry.size > limits.max_file_size || total > limits.max_image_size {
            return Err(Fallback::plain(format!(
                "{} is over --max-file-size or --max-image-size",
                entry.name
            )));
        }
        check_chunks(entry, layer)?;
        wanted.push(i);
    }
    Ok(wanted)
}

/// A file's chunks must cover its data exactly, lie within the layer and be vouched for by
/// digests: the file's, or every chunk's.
fn check_chunks(entry: &TocEntry, layer: &Descriptor) -> Result<(), Fallback> {
    let bad = |why: &str| Fallback::plain(format!("TOC entry {}: {why}", entry.name));
    if entry.chunks.is_empty() {
        return Err(bad("no data range"));
    }
    let mut covered: u64 = 0;
    for chunk in &entry.chunks {
        if chunk.compressed.start >= chunk.compressed.end || chunk.compressed.end > layer.size() {
            return Err(bad("a data range outside the layer"));
        }
        let inflatable =
            (chunk.compressed.end - chunk.compressed.start).saturating_mul(MAX_INFLATE_RATIO);
        if chunk.skip.saturating_add(chunk.size) > inflatable {
            return Err(bad("data deeper in its member than the member can hold"));
        }
        covered = covered.saturating_add(chunk.size);
    }
    if covered != entry.size {
        return Err(bad("chunks do not add up to the file's size"));
    }
    let vouched = entry.digest.is_some() || entry.chunks.iter().all(|c| c.digest.is_some());
    if !vouched {
        return Err(bad("no digest for the data"));
    }
    Ok(())
}

/// A file's data from the fetched ranges, decompressed and verified against every digest the TOC
/// gives for it.
fn file_data(
    entry: &TocEntry,
    codec: Codec,
    fetched: &ranges::Fetched,
) -> Result<Arc<[u8]>, Fallback> {
    let mut data = Vec::with_capacity(entry.size.min(1 << 20) as usize);
    for chunk in &entry.chunks {
        let compressed = fetched
            .get(&chunk.compressed)
            .ok_or_else(|| Fallback::plain(format!("{}: a range was not fetched", entry.name)))?;
        let piece = decompress(codec, compressed, chunk.skip, chunk.size).map_err(|why| {
            Fallback::suspicious(format!("{}: data does not decompress: {why}", entry.name))
        })?;
        if let Some(expected) = &chunk.digest {
            verify(&piece, expected, &entry.name)?;
        }
        data.extend_from_slice(&piece);
    }
    if let Some(expected) = &entry.digest {
        verify(&data, expected, &entry.name)?;
    }
    Ok(data.into())
}

fn verify(data: &[u8], expected: &str, name: &str) -> Result<(), Fallback> {
    let actual = sha256(data);
    if actual != expected {
        return Err(Fallback::suspicious(format!(
            "{name}: data has digest {actual}, the TOC says {expected}"
        )));
    }
    Ok(())
}

/// Why a chunk does not decompress to its data.
#[derive(Debug, Error)]
enum ChunkError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("it ends before byte {0}, where the data starts")]
    EndsBeforeData(u64),
    #[error("{got} bytes where {size} were expected")]
    Short { got: u64, size: u64 },
    #[error("more than the {0} bytes expected")]
    Long(u64),
}

/// `size` bytes at `skip` in the decompressed `compressed`, which must hold that many.
fn decompress(
    codec: Codec,
    compressed: Bytes,
    skip: u64,
    size: u64,
) -> Result<Vec<u8>, ChunkError> {
    use std::io::Read;
    let reader: Box<dyn Read> = match codec {
        Codec::Zstd => {
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(std::io::Cursor::new(compressed))?;
            decoder.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            Box::new(decoder)
        }
        Codec::Gzip => Box::new(flate2::read::GzDecoder::new(std::io::Cursor::new(
            compressed,
        ))),
    };
    let mut reader = reader.take(skip.saturating_add(size).saturating_add(1));
    let skipped = std::io::copy(&mut (&mut reader).take(skip), &mut std::io::sink())?;
    let mut piece = Vec::with_capacity(size.min(1 << 20) as usize);
    reader.read_to_end(&mut piece)?;
    if skipped < skip {
        return Err(ChunkError::EndsBeforeData(skip));
    }
    let got = piece.len() as u64;
    if got < size {
        return Err(ChunkError::Short { got, size });
    }
    // A zstd file's frames hold exactly its data; a gzip member may hold more after it.
    if got > size && matches!(codec, Codec::Zstd) {
        return Err(ChunkError::Long(size));
    }
    piece.truncate(size as usize);
    Ok(piece)
}

/// As the full path allows (`layers::decompress`): a frame asking for a larger window is a bomb.
const ZSTD_WINDOW_LOG_MAX: u32 = 25;

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_file_size: 1000,
        max_image_size: 1500,
    };

    fn layer(size: u64) -> Descriptor {
        serde_json::from_value(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
            "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "size": size,
        }))
        .unwrap()
    }

    fn file(name: &str, size: u64, chunks: Vec<Chunk>) -> TocEntry {
        TocEntry {
            name: name.to_owned(),
            link: String::new(),
            kind: EntryKind::File,
            size,
            digest: Some("sha256:ab".to_owned()),
            chunks,
        }
    }

    fn chunk(compressed: Range<u64>, skip: u64, size: u64) -> Chunk {
        Chunk {
            compressed,
            skip,
            size,
            digest: None,
        }
    }

    fn reason(entries: Vec<TocEntry>) -> String {
        wanted_files(&Toc { entries }, &layer(10_000), &LIMITS)
            .unwrap_err()
            .reason
    }

    #[test]
    fn only_files_under_the_subtree_are_wanted() {
        let entries = vec![
            file("usr/bin/big", 1 << 30, Vec::new()),
            file(
                "./capi-operator-manifests/p/a",
                10,
                vec![chunk(0..20, 0, 10)],
            ),
            file("capi-operator-manifests/p/.wh.b", 0, Vec::new()),
            file("capi-operator-manifests/p/empty", 0, Vec::new()),
            TocEntry {
                kind: EntryKind::Dir,
                ..file("capi-operator-manifests/p/", 0, Vec::new())
            },
        ];
        let wanted = wanted_files(&Toc { entries }, &layer(10_000), &LIMITS).unwrap();
        assert_eq!(wanted, [1]);
    }

    #[test]
    fn what_the_toc_says_is_checked_before_anything_is_fetched() {
        let m = "capi-operator-manifests/p";
        assert!(
            reason(vec![file("etc/caf\u{fffd}", 1, Vec::new())]).contains("may not be the tar's")
        );
        assert!(reason(vec![file(&format!("{m}/big"), 1001, Vec::new())]).contains("over"));
        let half = |name: &str| file(&format!("{m}/{name}"), 800, vec![chunk(0..900, 0, 800)]);
        assert!(
            reason(vec![half("a"), half("b")]).contains("over --max-file-size or --max-image-size")
        );
        for (chunks, why) in [
            (Vec::new(), "no data range"),
            (
                vec![chunk(9_990..10_010, 0, 10)],
                "a data range outside the layer",
            ),
            (vec![chunk(5..5, 0, 10)], "a data range outside the layer"),
            (
                vec![chunk(0..10, 0, 4), chunk(10..20, 0, 4)],
                "chunks do not add up",
            ),
            (vec![chunk(0..10, 991, 10)], "deeper in its member"),
        ] {
            let got = reason(vec![file(&format!("{m}/x"), 10, chunks)]);
            assert!(got.contains(why), "{got}");
        }
        let mut unvouched = file(&format!("{m}/x"), 10, vec![chunk(0..10, 0, 10)]);
        unvouched.digest = None;
        assert!(reason(vec![unvouched]).contains("no digest for the data"));
    }

    #[test]
    fn chunks_decompress_to_exactly_their_data() {
        let zstd = Bytes::from(
            [
                zstd::encode_all(&b"hello "[..], 3).unwrap(),
                zstd::encode_all(&b"world"[..], 3).unwrap(),
            ]
            .concat(),
        );
        assert_eq!(
            decompress(Codec::Zstd, zstd.clone(), 0, 11).unwrap(),
            b"hello world"
        );
        assert!(
            decompress(Codec::Zstd, zstd.clone(), 0, 10)
                .unwrap_err()
                .to_string()
                .contains("more than")
        );
        assert!(
            decompress(Codec::Zstd, zstd.clone(), 0, 12)
                .unwrap_err()
                .to_string()
                .contains("11 bytes where 12")
        );
        assert!(decompress(Codec::Zstd, zstd.slice(..zstd.len() - 2), 0, 11).is_err());

        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gzip, b"header|data|more").unwrap();
        let gzip = Bytes::from(gzip.finish().unwrap());
        // A member may hold more after the chunk: headers, padding, other chunks.
        assert_eq!(
            decompress(Codec::Gzip, gzip.clone(), 7, 4).unwrap(),
            b"data"
        );
        assert!(
            decompress(Codec::Gzip, gzip.clone(), 20, 1)
                .unwrap_err()
                .to_string()
                .contains("ends before byte 20")
        );
        assert!(
            decompress(Codec::Gzip, gzip, 12, 5)
                .unwrap_err()
                .to_string()
                .contains("4 bytes where 5")
        );
    }

    #[test]
    fn digests_are_checked_chunk_by_chunk_and_whole() {
        let data = b"0123456789";
        let compressed = Bytes::from(zstd::encode_all(&data[..], 3).unwrap());
        let end = compressed.len() as u64;
        let fetched = ranges::Fetched::of(vec![(0..end, compressed)]);
        let mut entry = file("capi-operator-manifests/x", 10, vec![chunk(0..end, 0, 10)]);
        entry.digest = Some(sha256(data));
        assert_eq!(&file_data(&entry, Codec::Zstd, &fetched).unwrap()[..], data);
        entry.chunks[0].digest = Some(sha256(b"other"));
        let refused = file_data(&entry, Codec::Zstd, &fetched).unwrap_err();
        assert!(refused.is_suspicious() && refused.reason.contains("the TOC says"));
        entry.chunks[0].digest = None;
        entry.digest = Some(sha256(b"other"));
        assert!(
            file_data(&entry, Codec::Zstd, &fetched)
                .unwrap_err()
                .is_suspicious()
        );
    }
}
