//! zstd:chunked layers, as containers/storage (`pkg/chunked`) writes them: every tar header and
//! every file's data are zstd frames of their own; after them, in zstd skippable frames (which a
//! plain zstd reader passes over), the TOC: zstd-compressed JSON listing every tar entry with, for
//! regular files, the blob range of their frames (`offset`..`endOffset`) and the sha256 of their
//! data (`digest`). Large files are further split into `chunk` entries, which the range and digest
//! of the file already cover.
//!
//! The layer's annotations say where the compressed TOC is (`offset:length:uncompressed:type`)
//! and give the sha256 of those `length` bytes. containers/storage wrote them under
//! `io.containers.` before it moved to `io.github.containers.`; both are read.

use std::ops::Range;

use serde::Deserialize;

use super::ranges::Fetcher;
use super::{Chunk, Fallback, MAX_TOC, Toc, TocEntry, ZSTD_WINDOW_LOG_MAX, sha256, toc_kind};
use crate::layers::{Compression, EntryKind};
use crate::registry::Descriptor;

/// (checksum, position) annotation keys, newest first.
const KEYS: [(&str, &str); 2] = [
    (
        "io.github.containers.zstd-chunked.manifest-checksum",
        "io.github.containers.zstd-chunked.manifest-position",
    ),
    (
        "io.containers.zstd-chunked.manifest-checksum",
        "io.containers.zstd-chunked.manifest-position",
    ),
];
/// The only TOC type there is: JSON in the CRFS layout.
const TOC_TYPE_JSON: u64 = 1;

/// A layer's TOC, as its annotations place it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Found {
    compressed: Range<u64>,
    uncompressed: u64,
    checksum: String,
}

/// The TOC's place, when the layer says it is zstd:chunked; a fallback when it says so wrongly.
pub(super) fn find(layer: &Descriptor) -> Result<Option<Found>, Fallback> {
    let Some((checksum_key, checksum, position)) = KEYS.iter().find_map(|(checksum, position)| {
        Some((
            *checksum,
            crate::registry::annotation(layer, checksum)?,
            crate::registry::annotation(layer, position),
        ))
    }) else {
        return Ok(None);
    };
    let bad = |why: String| Fallback::plain(format!("zstd:chunked annotations: {why}"));
    if Compression::from_media_type(layer.media_type().to_string().as_str())
        != Some(Compression::Zstd)
    {
        return Err(bad(format!("on a {} layer", layer.media_type())));
    }
    let position = position.ok_or_else(|| bad(format!("{checksum_key} without a position")))?;
    let fields: Vec<u64> = position
        .split(':')
        .map(|field| field.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            bad(format!(
                "position {position:?} is not offset:length:uncompressed:type"
            ))
        })?;
    let [offset, length, uncompressed, toc_type] = fields[..] else {
        return Err(bad(format!(
            "position {position:?} is not offset:length:uncompressed:type"
        )));
    };
    if toc_type != TOC_TYPE_JSON {
        return Err(bad(format!("TOC type {toc_type} is not known")));
    }
    if length == 0 || length > MAX_TOC || uncompressed > MAX_TOC {
        return Err(bad(format!(
            "a TOC of {length} bytes ({uncompressed} uncompressed) is out of bounds"
        )));
    }
    let end = offset
        .checked_add(length)
        .filter(|&end| end <= layer.size())
        .ok_or_else(|| bad(format!("the TOC at {position:?} lies outside the layer")))?;
    if !is_sha256(checksum) {
        return Err(bad(format!("checksum {checksum:?} is not a sha256 digest")));
    }
    Ok(Some(Found {
        compressed: offset..end,
        uncompressed,
        checksum: checksum.to_owned(),
    }))
}

pub(super) fn is_sha256(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

impl Found {
    /// Fetches the TOC, checks it against the annotation's checksum and reads it.
    pub(super) async fn read(self, fetcher: &mut Fetcher<'_>) -> Result<Toc, Fallback> {
        let compressed = fetcher.one(self.compressed.clone()).await?;
        let actual = sha256(&compressed);
        if actual != self.checksum {
            return Err(Fallback::suspicious(format!(
                "the zstd:chunked TOC has digest {actual}, the annotation says {}",
                self.checksum
            )));
        }
        let uncompressed = self.uncompressed;
        tokio::task::spawn_blocking(move || parse(&compressed, uncompressed))
            .await
            .map_err(|error| Fallback::plain(format!("worker stopped: {error}")))?
    }
}

#[derive(Deserialize)]
struct Json {
    version: u64,
    entries: Vec<JsonEntry>,
}

#[derive(Deserialize)]
struct JsonEntry {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    #[serde(rename = "linkName", default)]
    link: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    offset: u64,
    #[serde(rename = "endOffset", default)]
    end_offset: u64,
}

/// The verified, compressed TOC → its entries.
fn parse(compressed: &[u8], uncompressed: u64) -> Result<Toc, Fallback> {
    use std::io::Read;
    let unreadable = |why: String| Fallback::plain(format!("zstd:chunked TOC: {why}"));
    let mut decoder =
        zstd::stream::read::Decoder::new(compressed).map_err(|e| unreadable(e.to_string()))?;
    decoder
        .window_log_max(ZSTD_WINDOW_LOG_MAX)
        .map_err(|e| unreadable(e.to_string()))?;
    let mut json = Vec::with_capacity(uncompressed.min(MAX_TOC) as usize);
    decoder
        .take(uncompressed + 1)
        .read_to_end(&mut json)
        .map_err(|e| unreadable(e.to_string()))?;
    if json.len() as u64 != uncompressed {
        return Err(unreadable(format!(
            "{} bytes uncompressed, the annotation says {uncompressed}",
            json.len()
        )));
    }
    entries(&json)
}

/// The verified, uncompressed TOC JSON → its entries.
pub(super) fn entries(json: &[u8]) -> Result<Toc, Fallback> {
    let unreadable = |why: String| Fallback::plain(format!("zstd:chunked TOC: {why}"));
    let toc: Json = serde_json::from_slice(json).map_err(|e| unreadable(e.to_string()))?;
    if toc.version != 1 {
        return Err(unreadable(format!("version {} is not known", toc.version)));
    }
    let mut entries: Vec<TocEntry> = Vec::with_capacity(toc.entries.len());
    for entry in toc.entries {
        if entry.kind == "chunk" {
            // The file's range and digest, on its `reg` entry, cover its chunks.
            match entries.last() {
                Some(file) if file.kind == EntryKind::File && file.name == entry.name => continue,
                _ => {
                    return Err(unreadable(format!(
                        "chunk of {:?} after another entry",
                        entry.name
                    )));
                }
            }
        }
        let kind = toc_kind(&entry.kind)
            .ok_or_else(|| unreadable(format!("entry type {:?} is not known", entry.kind)))?;
        let chunks = if kind == EntryKind::File && entry.size > 0 {
            vec![Chunk {
                compressed: entry.offset..entry.end_offset,
                skip: 0,
                size: entry.size,
                digest: None,
            }]
        } else {
            Vec::new()
        };
        entries.push(TocEntry {
            name: entry.name,
            link: entry.link,
            kind,
            size: entry.size,
            digest: entry.digest.filter(|d| !d.is_empty()),
            chunks,
        });
    }
    Ok(Toc { entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(media_type: &str, annotations: serde_json::Value) -> Descriptor {
        serde_json::from_value(serde_json::json!({
            "mediaType": media_type,
            "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "size": 1000,
            "annotations": annotations,
        }))
        .unwrap()
    }

    const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    const SUM: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn annotations_old_and_new() {
        for prefix in ["io.github.containers", "io.containers"] {
            let found = find(&layer(
                ZSTD,
                serde_json::json!({
                    format!("{prefix}.zstd-chunked.manifest-checksum"): SUM,
                    format!("{prefix}.zstd-chunked.manifest-position"): "900:50:200:1",
                }),
            ))
            .unwrap();
            assert_eq!(
                found,
                Some(Found {
                    compressed: 900..950,
                    uncompressed: 200,
                    checksum: SUM.into()
                })
            );
        }
        assert_eq!(find(&layer(ZSTD, serde_json::json!({}))).unwrap(), None);
        let plain: Descriptor = serde_json::from_value(
            serde_json::json!({"mediaType": ZSTD, "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000", "size": 1}),
        )
        .unwrap();
        assert_eq!(find(&plain).unwrap(), None);
    }

    #[test]
    fn bad_annotations_fall_back() {
        let key = "io.github.containers.zstd-chunked.manifest-checksum";
        let position = "io.github.containers.zstd-chunked.manifest-position";
        for (media_type, annotations, why) in [
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                serde_json::json!({key: SUM, position: "900:50:200:1"}),
                "on a application/vnd.oci.image.layer.v1.tar+gzip layer",
            ),
            (ZSTD, serde_json::json!({key: SUM}), "without a position"),
            (
                ZSTD,
                serde_json::json!({key: SUM, position: "900:50:200"}),
                "is not offset:length:uncompressed:type",
            ),
            (
                ZSTD,
                serde_json::json!({key: SUM, position: "900:-50:200:1"}),
                "is not offset:length:uncompressed:type",
            ),
            (
                ZSTD,
                serde_json::json!({key: SUM, position: "900:50:200:2"}),
                "TOC type 2 is not known",
            ),
            (
                ZSTD,
                serde_json::json!({key: SUM, position: "990:50:200:1"}),
                "lies outside the layer",
            ),
            (
                ZSTD,
                serde_json::json!({key: SUM, position: "0:0:0:1"}),
                "out of bounds",
            ),
            (
                ZSTD,
                serde_json::json!({key: SUM, position: "0:50:999999999999:1"}),
                "out of bounds",
            ),
            (
                ZSTD,
                serde_json::json!({key: "md5:00", position: "900:50:200:1"}),
                "is not a sha256 digest",
            ),
        ] {
            let fallback = find(&layer(media_type, annotations)).unwrap_err();
            assert!(fallback.reason.contains(why), "{}", fallback.reason);
        }
    }

    fn toc(json: &serde_json::Value) -> (Vec<u8>, u64) {
        let bytes = serde_json::to_vec(json).unwrap();
        (zstd::encode_all(&bytes[..], 3).unwrap(), bytes.len() as u64)
    }

    #[test]
    fn entries_and_their_data_ranges() {
        let (compressed, size) = toc(&serde_json::json!({"version": 1, "entries": [
            {"type": "dir", "name": "./capi-operator-manifests/"},
            {"type": "reg", "name": "./capi-operator-manifests/a", "size": 10, "offset": 100,
             "endOffset": 150, "digest": SUM, "modtime": "2024-01-01T00:00:00Z", "mode": 420},
            {"type": "chunk", "name": "./capi-operator-manifests/a", "offset": 120, "chunkOffset": 5},
            {"type": "reg", "name": "empty"},
            {"type": "hardlink", "name": "b", "linkName": "./capi-operator-manifests/a"},
            {"type": "symlink", "name": "c", "linkName": "/x"},
        ]}));
        let parsed = parse(&compressed, size).unwrap();
        let summary: Vec<String> = parsed
            .entries
            .iter()
            .map(|e| {
                format!(
                    "{} {:?} {} {} {:?} {:?}",
                    e.name,
                    e.kind,
                    e.link,
                    e.size,
                    e.digest,
                    e.chunks
                        .iter()
                        .map(|c| c.compressed.clone())
                        .collect::<Vec<_>>()
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                "./capi-operator-manifests/ Dir  0 None []".to_owned(),
                format!("./capi-operator-manifests/a File  10 Some({SUM:?}) [100..150]"),
                "empty File  0 None []".to_owned(),
                "b Hardlink ./capi-operator-manifests/a 0 None []".to_owned(),
                "c Symlink /x 0 None []".to_owned(),
            ]
        );
    }

    #[test]
    fn unreadable_tocs_fall_back() {
        let reason = |compressed: &[u8], size| parse(compressed, size).err().unwrap().reason;
        let (good, size) = toc(&serde_json::json!({"version": 1, "entries": []}));
        assert!(reason(&good, size + 1).contains("bytes uncompressed, the annotation says"));
        assert!(reason(b"not zstd", size).contains("zstd:chunked TOC"));
        for (json, why) in [
            (
                serde_json::json!({"version": 2, "entries": []}),
                "version 2",
            ),
            (
                serde_json::json!({"version": 1, "entries": [{"type": "sock", "name": "s"}]}),
                "entry type \"sock\" is not known",
            ),
            (
                serde_json::json!({"version": 1, "entries": [{"type": "chunk", "name": "s"}]}),
                "chunk of \"s\" after another entry",
            ),
            (
                serde_json::json!({"version": 1, "entries": [{"type": "reg", "name": "s", "size": -1}]}),
                "invalid value",
            ),
            (serde_json::json!({"version": 1}), "missing field `entries`"),
        ] {
            let (compressed, size) = toc(&json);
            let got = reason(&compressed, size);
            assert!(got.contains(why), "{got}");
        }
    }
}
