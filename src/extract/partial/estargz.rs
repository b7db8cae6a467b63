//! eStargz layers (stargz-snapshotter `docs/estargz.md`): a gzip tar whose every regular file's
//! data (or each chunk of a large one) starts a gzip member of its own, followed by a member
//! holding the tar entry `stargz.index.json` (the TOC) and a 51-byte footer: an empty gzip member
//! whose extra field is `%016xSTARGZ`, the TOC member's offset.
//!
//! The TOC lists every tar entry; a regular file's entry, and one `chunk` entry per further chunk,
//! give the offset of the member holding the chunk, the chunk's offset in that member's data
//! (`innerOffset`, when several chunks share a member) and size, and its sha256 (`chunkDigest`).
//! A member ends where the next one starts: the next offset of the TOC, or the TOC itself.
//! The annotation `containerd.io/snapshot/stargz/toc.digest` is the sha256 of the TOC JSON.

use std::io::Read;

use serde::Deserialize;

use super::ranges::Fetcher;
use super::zstd_chunked::is_sha256;
use super::{Chunk, Fallback, MAX_TOC, Toc, TocEntry, sha256, toc_kind};
use crate::layers::{Compression, EntryKind};
use crate::registry::Descriptor;

const TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";
const TOC_NAME: &[u8] = b"stargz.index.json";
const FOOTER: u64 = 51;
/// The blob's tail fetched first: the footer and, for small layers, the whole TOC with it (and
/// often the last files' data). A larger TOC takes a second request.
const TAIL: u64 = 16 << 10;

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Found {
    toc_digest: String,
    size: u64,
}

/// The TOC's digest, when the layer says it is eStargz; a fallback when it says so wrongly.
pub(super) fn find(layer: &Descriptor) -> Result<Option<Found>, Fallback> {
    let Some(digest) = crate::registry::annotation(layer, TOC_DIGEST) else {
        return Ok(None);
    };
    let bad = |why: String| Fallback::plain(format!("eStargz annotation: {why}"));
    if Compression::from_media_type(layer.media_type().to_string().as_str())
        != Some(Compression::Gzip)
    {
        return Err(bad(format!("on a {} layer", layer.media_type())));
    }
    if !is_sha256(digest) {
        return Err(bad(format!("TOC digest {digest:?} is not a sha256 digest")));
    }
    if layer.size() <= FOOTER {
        return Err(bad(format!(
            "a layer of {} bytes has no room for a TOC",
            layer.size()
        )));
    }
    Ok(Some(Found {
        toc_digest: digest.to_owned(),
        size: layer.size(),
    }))
}

impl Found {
    /// Fetches the footer and the TOC (one request when the TOC is small), checks the TOC against
    /// the annotation and reads it.
    pub(super) async fn read(self, fetcher: &mut Fetcher<'_>) -> Result<Toc, Fallback> {
        let tail_start = self.size.saturating_sub(TAIL);
        let tail = fetcher.one(tail_start..self.size).await?;
        let footer = &tail[tail.len() - FOOTER as usize..];
        let toc_offset = footer_offset(footer).ok_or_else(|| {
            Fallback::plain("the layer does not end with an eStargz footer".to_owned())
        })?;
        let toc_end = self.size - FOOTER;
        if toc_offset >= toc_end || toc_end - toc_offset > MAX_TOC {
            return Err(Fallback::plain(format!(
                "the eStargz footer puts the TOC at {toc_offset}, out of bounds"
            )));
        }
        let in_tail = (toc_end - tail_start) as usize;
        let toc_member = if toc_offset >= tail_start {
            tail.slice((toc_offset - tail_start) as usize..in_tail)
        } else {
            let head = fetcher.one(toc_offset..tail_start).await?;
            [&head[..], &tail[..in_tail]].concat().into()
        };
        let digest = self.toc_digest;
        tokio::task::spawn_blocking(move || parse(&toc_member, &digest, toc_offset))
            .await
            .map_err(|error| Fallback::plain(format!("worker stopped: {error}")))?
    }
}

/// The TOC offset an eStargz footer gives: a gzip header with FEXTRA, one extra subfield `SG`
/// of 22 bytes: 16 hex digits and `STARGZ`.
fn footer_offset(footer: &[u8]) -> Option<u64> {
    const FEXTRA: u8 = 0x04;
    if footer.len() != FOOTER as usize
        || footer[..3] != [0x1f, 0x8b, 0x08]
        || footer[3] & FEXTRA == 0
        || footer[10..12] != [26, 0]
        || footer[12..16] != [b'S', b'G', 22, 0]
        || &footer[32..38] != b"STARGZ"
    {
        return None;
    }
    let hex = std::str::from_utf8(&footer[16..32]).ok()?;
    u64::from_str_radix(hex, 16).ok()
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
    #[serde(default)]
    name: String,
    #[serde(rename = "linkName", default)]
    link: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    offset: u64,
    #[serde(rename = "innerOffset", default)]
    inner_offset: u64,
    #[serde(rename = "chunkOffset", default)]
    chunk_offset: u64,
    #[serde(rename = "chunkSize", default)]
    chunk_size: u64,
    #[serde(rename = "chunkDigest", default)]
    chunk_digest: Option<String>,
}

/// The TOC member (a gzip member holding the tar entry `stargz.index.json`) → its entries, once
/// the JSON matches `digest`.
fn parse(member: &[u8], digest: &str, toc_offset: u64) -> Result<Toc, Fallback> {
    let unreadable = |why: String| Fallback::plain(format!("eStargz TOC: {why}"));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(member));
    let mut entry = archive
        .entries()
        .and_then(|mut entries| entries.next().transpose())
        .map_err(|e| unreadable(e.to_string()))?
        .ok_or_else(|| unreadable("no tar entry".into()))?;
    if &entry.path_bytes()[..] != TOC_NAME || entry.size() > MAX_TOC {
        return Err(unreadable(format!(
            "the first entry is {:?} of {} bytes",
            String::from_utf8_lossy(&entry.path_bytes()),
            entry.size()
        )));
    }
    let mut json = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut json)
        .map_err(|e| unreadable(e.to_string()))?;
    let actual = sha256(&json);
    if actual != digest {
        return Err(Fallback::suspicious(format!(
            "the eStargz TOC has digest {actual}, the annotation says {digest}"
        )));
    }
    entries(&json, toc_offset)
}

/// The verified TOC JSON → its entries; `toc_offset` is where the TOC's own member starts.
pub(super) fn entries(json: &[u8], toc_offset: u64) -> Result<Toc, Fallback> {
    let unreadable = |why: String| Fallback::plain(format!("eStargz TOC: {why}"));
    let toc: Json = serde_json::from_slice(json).map_err(|e| unreadable(e.to_string()))?;
    if toc.version != 1 {
        return Err(unreadable(format!("version {} is not known", toc.version)));
    }
    // Where each member ends: where the next starts, the TOC's member after the last.
    let mut starts: Vec<u64> = toc
        .entries
        .iter()
        .filter(|e| matches!(e.kind.as_str(), "reg" | "chunk") && e.offset > 0)
        .map(|e| e.offset)
        .chain([toc_offset])
        .collect();
    starts.sort_unstable();
    starts.dedup();
    let member = |offset: u64| {
        let next = starts.partition_point(|&start| start <= offset);
        offset..starts.get(next).copied().unwrap_or(offset)
    };
    let mut entries: Vec<TocEntry> = Vec::with_capacity(toc.entries.len());
    for entry in toc.entries {
        if entry.kind == "chunk" {
            let Some(file) = entries.last_mut().filter(|f| f.kind == EntryKind::File) else {
                return Err(unreadable("a chunk entry after another entry".into()));
            };
            let covered: u64 = file.chunks.iter().map(|c| c.size).sum();
            if entry.chunk_offset != covered || covered >= file.size {
                return Err(unreadable(format!(
                    "a chunk of {} at {} does not follow the one before",
                    file.name, entry.chunk_offset
                )));
            }
            let size = match entry.chunk_size {
                0 => file.size - covered,
                size => size,
            };
            // Checked here, so that the sum of the sizes can never overflow.
            if size > file.size - covered {
                return Err(unreadable(format!(
                    "a chunk of {} at {} runs past the file's end",
                    file.name, entry.chunk_offset
                )));
            }
            file.chunks.push(Chunk {
                compressed: member(entry.offset),
                skip: entry.inner_offset,
                size,
                digest: entry.chunk_digest.filter(|d| !d.is_empty()),
            });
            continue;
        }
        let kind = toc_kind(&entry.kind)
            .ok_or_else(|| unreadable(format!("entry type {:?} is not known", entry.kind)))?;
        let chunks = if kind == EntryKind::File && entry.size > 0 {
            vec![Chunk {
                compressed: member(entry.offset),
                skip: entry.inner_offset,
                size: match entry.chunk_size {
                    0 => entry.size,
                    size => size.min(entry.size),
                },
                digest: entry.chunk_digest.filter(|d| !d.is_empty()),
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

    fn footer(offset: u64) -> Vec<u8> {
        let mut footer = vec![
            0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 26, 0, b'S', b'G', 22, 0,
        ];
        footer.extend(format!("{offset:016x}STARGZ").as_bytes());
        footer.extend([0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
        footer
    }

    #[test]
    fn footers() {
        assert_eq!(footer(0x1234).len(), FOOTER as usize);
        assert_eq!(footer_offset(&footer(0x1234)), Some(0x1234));
        // The empty member decompresses as gzip: the footer keeps the blob a valid gzip stream.
        let mut empty = Vec::new();
        flate2::read::GzDecoder::new(&footer(7)[..])
            .read_to_end(&mut empty)
            .unwrap();
        assert!(empty.is_empty());
        let mut legacy = footer(5);
        legacy[12] = b'X';
        assert_eq!(footer_offset(&legacy), None);
        let mut no_magic = footer(5);
        no_magic[37] = b'Y';
        assert_eq!(footer_offset(&no_magic), None);
        assert_eq!(footer_offset(&footer(5)[1..]), None);
    }

    fn member(json: &[u8]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(json.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, "stargz.index.json", json)
            .unwrap();
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn chunks_end_where_the_next_member_starts() {
        let json = serde_json::to_vec(&serde_json::json!({"version": 1, "entries": [
            {"type": "dir", "name": "capi-operator-manifests/"},
            {"type": "reg", "name": "capi-operator-manifests/a", "size": 10, "offset": 100,
             "chunkSize": 4, "chunkDigest": "sha256:a", "digest": "sha256:f"},
            {"type": "chunk", "name": "capi-operator-manifests/a", "offset": 200,
             "chunkOffset": 4, "chunkSize": 3, "chunkDigest": "sha256:b"},
            {"type": "chunk", "name": "capi-operator-manifests/a", "offset": 200,
             "innerOffset": 600, "chunkOffset": 7, "chunkDigest": "sha256:c"},
            {"type": "reg", "name": "capi-operator-manifests/b", "size": 1, "offset": 300,
             "chunkDigest": "sha256:d"},
            {"type": "reg", "name": ".no.prefetch.landmark", "size": 1, "offset": 400},
        ]}))
        .unwrap();
        let toc = parse(&member(&json), &sha256(&json), 500).unwrap();
        let a = &toc.entries[1];
        let chunks: Vec<String> = a
            .chunks
            .iter()
            .map(|c| format!("{:?}+{} {} {:?}", c.compressed, c.skip, c.size, c.digest))
            .collect();
        assert_eq!(
            chunks,
            [
                "100..200+0 4 Some(\"sha256:a\")",
                "200..300+0 3 Some(\"sha256:b\")",
                "200..300+600 3 Some(\"sha256:c\")",
            ]
        );
        assert_eq!(a.digest.as_deref(), Some("sha256:f"));
        assert_eq!(toc.entries[2].chunks[0].compressed, 300..400);
        assert_eq!(toc.entries[3].chunks[0].compressed, 400..500);
    }

    #[test]
    fn a_toc_must_match_its_digest_and_be_readable() {
        let json = br#"{"version":1,"entries":[]}"#;
        let fallback = parse(&member(json), &sha256(b"other"), 9).err().unwrap();
        assert!(fallback.is_suspicious());
        assert!(
            fallback.reason.contains("the annotation says"),
            "{}",
            fallback.reason
        );
        for (json, why) in [
            (&br#"{"version":2,"entries":[]}"#[..], "version 2"),
            (br#"{"version":1,"entries":[{"type":"chunk"}]}"#, "a chunk entry after another"),
            (
                br#"{"version":1,"entries":[{"type":"reg","name":"a","size":4,"offset":9,"chunkSize":2},{"type":"chunk","offset":10,"chunkOffset":3}]}"#,
                "does not follow",
            ),
            (br#"{"version":1,"entries":[{"type":"sock","name":"s"}]}"#, "\"sock\""),
            (b"[", "EOF"),
        ] {
            let fallback = parse(&member(json), &sha256(json), 99).err().unwrap();
            assert!(fallback.reason.contains(why), "{}", fallback.reason);
        }
        let fallback = parse(b"not gzip", "sha256:x", 9).err().unwrap();
        assert!(
            fallback.reason.starts_with("eStargz TOC:"),
            "{}",
            fallback.reason
        );
    }
}
