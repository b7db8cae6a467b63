//! `--cache-dir`: what runs keep for later runs (the re-extraction Job's volume), so that a run with a
//! new image sharing layers with earlier ones fetches only what is new.
//!
//! ```text
//! <cache>/layers/sha256/<hex>   a layer's contribution to the subtree, with the compression and the
//!                               limits it was read under, and a sha256 of the whole entry at its end
//! <cache>/blobs/sha256/<hex>    configs, as fetched: their digest is their checksum
//! <cache>/manifests/sha256/<hex> manifests fetched by digest: the media type, a newline, the body
//! <cache>/tmp/                  entries being written
//! ```
//!
//! Every entry is written to `tmp/` and renamed into place, so a reader sees a whole entry or none; and
//! every entry is verified when read (blobs and manifests against their digest, contributions against
//! their checksum), so a torn or corrupted one is read as missing, pulled again and replaced. The cache is
//! the run's own volume, trusted as such: the checks catch damage, not someone able to write there.
//! A failure to read or write the cache never fails a run; it is logged and the run pulls.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::layers::{Compression, Contribution, Limits};
use crate::registry::{sha256, sha256_digest};

/// Changes whenever the format of an entry or the meaning of a contribution does: entries of another
/// version are ignored and replaced.
const LAYER_MAGIC: &[u8] = concat!(
    "provider-images layer cache 1 ",
    env!("CARGO_PKG_VERSION"),
    "\n"
)
.as_bytes();

pub(crate) struct Cache {
    dir: PathBuf,
    /// Names temp files uniquely within the process (the pid covers other processes).
    counter: AtomicU64,
}

impl Cache {
    /// Uses `dir`, creating it and its subdirectories as needed.
    pub(crate) fn open(dir: &Path) -> std::io::Result<Cache> {
        for sub in ["layers/sha256", "blobs/sha256", "manifests/sha256", "tmp"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        Ok(Cache {
            dir: dir.to_path_buf(),
            counter: AtomicU64::new(0),
        })
    }

    /// `<kind>/sha256/<hex>` for a sha256 digest; other digests are not cached.
    fn path(&self, kind: &str, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| self.dir.join(kind).join("sha256").join(hex))
    }

    fn read(&self, path: &Path) -> Option<Vec<u8>> {
        match fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read a cache entry");
                None
            }
        }
    }

    fn write(&self, path: &Path, parts: &[&[u8]]) {
        let tmp = self.dir.join("tmp").join(format!(
            "{}-{}",
            std::process::id(),
            self.counter.fetch_add(1, Ordering::Relaxed)
        ));
        let written = fs::File::create(&tmp)
            .and_then(|mut file| parts.iter().try_for_each(|part| file.write_all(part)))
            .and_then(|()| fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), error = %e, "cannot write a cache entry");
        }
    }

    /// A layer's contribution, if kept, whole, read the same way and still within `limits`.
    pub(crate) fn layer(
        &self,
        digest: &str,
        compression: Compression,
        limits: &Limits,
    ) -> Option<Contribution> {
        let path = self.path("layers", digest)?;
        let bytes = self.read(&path)?;
        let Some((body, sum)) = bytes.split_last_chunk::<32>() else {
            return self.damaged(&path);
        };
        if &sha256(body) != sum {
            return self.damaged(&path);
        }
        let header = layer_header(compression, None);
        let Some(rest) = body.strip_prefix(header.as_slice()) else {
            // Another version, or read as another compression: pulled again and replaced.
            return None;
        };
        // The limits it was read under: a contribution read under other limits is used only when it
        // would have been read whole under these.
        let (_limits, encoded) = rest.split_at_checked(16)?;
        let contribution = Contribution::decode(encoded).or_else(|| self.damaged(&path))?;
        contribution.fits(limits).then_some(contribution)
    }

    pub(crate) fn put_layer(
        &self,
        digest: &str,
        compression: Compression,
        limits: &Limits,
        contribution: &Contribution,
    ) {
        let Some(path) = self.path("layers", digest) else {
            return;
        };
        let mut body = layer_header(compression, Some(limits));
        contribution.encode(&mut body);
        let sum = sha256(&body);
        self.write(&path, &[&body, &sum]);
    }

    /// A config blob, if kept and it still has its digest.
    pub(crate) fn blob(&self, digest: &str) -> Option<Bytes> {
        let path = self.path("blobs", digest)?;
        let bytes = self.read(&path)?;
        if sha256_digest(&bytes) != digest {
            return self.damaged(&path);
        }
        Some(bytes.into())
    }

    pub(crate) fn put_blob(&self, digest: &str, bytes: &[u8]) {
        if let Some(path) = self.path("blobs", digest) {
            self.write(&path, &[bytes]);
        }
    }

    /// A manifest's media type and body, if kept and the body still has its digest.
    pub(crate) fn manifest(&self, digest: &str) -> Option<(String, Bytes)> {
        let path = self.path("manifests", digest)?;
        let bytes = self.read(&path)?;
        let newline = bytes.iter().position(|&b| b == b'\n');
        let Some(newline) = newline else {
            return self.damaged(&path);
        };
        let body = &bytes[newline + 1..];
        let media_type = std::str::from_utf8(&bytes[..newline]).ok();
        match media_type {
            Some(media_type) if sha256_digest(body) == digest => {
                Some((media_type.to_string(), Bytes::copy_from_slice(body)))
            }
            _ => self.damaged(&path),
        }
    }

    pub(crate) fn put_manifest(&self, digest: &str, media_type: &str, body: &[u8]) {
        if media_type.contains('\n') {
            return;
        }
        if let Some(path) = self.path("manifests", digest) {
            self.write(&path, &[media_type.as_bytes(), b"\n", body]);
        }
    }

    fn damaged<T>(&self, path: &Path) -> Option<T> {
        tracing::warn!(path = %path.display(), "cache entry is damaged; pulling again");
        None
    }
}

/// Magic, compression and (when writing) the limits; on reading, the limits are skipped.
fn layer_header(compression: Compression, limits: Option<&Limits>) -> Vec<u8> {
    let mut header = LAYER_MAGIC.to_vec();
    header.push(match compression {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Zstd => 2,
    });
    if let Some(limits) = limits {
        header.extend_from_slice(&limits.max_file_size.to_le_bytes());
        header.extend_from_slice(&limits.max_image_size.to_le_bytes());
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{Subtree, contribution};

    const LIMITS: Limits = Limits {
        max_file_size: 1 << 20,
        max_image_size: 4 << 20,
    };
    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// A one-file uncompressed layer under the subtree, read as the pipeline reads it.
    fn sample() -> Contribution {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        let content = b"kind: List\n";
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(
                &mut header,
                "capi-operator-manifests/p/manifests.yaml",
                &content[..],
            )
            .unwrap();
        let blob = builder.into_inner().unwrap();
        contribution(&blob[..], Compression::None, blob.len() as u64, &LIMITS).unwrap()
    }

    fn file_of(layer: &Contribution) -> Vec<u8> {
        let mut subtree = Subtree::new();
        subtree.apply(layer, &LIMITS).unwrap();
        subtree.file("p/manifests.yaml").unwrap().to_vec()
    }

    #[test]
    fn a_kept_layer_is_read_back_for_the_same_compression_and_fitting_limits() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        assert!(cache.layer(DIGEST, Compression::None, &LIMITS).is_none());
        cache.put_layer(DIGEST, Compression::None, &LIMITS, &sample());
        let kept = cache.layer(DIGEST, Compression::None, &LIMITS).unwrap();
        assert_eq!(file_of(&kept), b"kind: List\n");
        assert!(cache.layer(DIGEST, Compression::Gzip, &LIMITS).is_none());
        let tight = Limits {
            max_file_size: 10,
            ..LIMITS
        };
        assert!(cache.layer(DIGEST, Compression::None, &tight).is_none());
        let loose = Limits {
            max_file_size: 11,
            max_image_size: 11,
        };
        assert!(cache.layer(DIGEST, Compression::None, &loose).is_some());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_damaged_entry_reads_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        cache.put_layer(DIGEST, Compression::None, &LIMITS, &sample());
        let path = cache.path("layers", DIGEST).unwrap();
        let good = fs::read(&path).unwrap();
        for at in [0, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            fs::write(&path, &bad).unwrap();
            assert!(
                cache.layer(DIGEST, Compression::None, &LIMITS).is_none(),
                "{at}"
            );
        }
        fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(cache.layer(DIGEST, Compression::None, &LIMITS).is_none());
        fs::write(&path, &good).unwrap();
        assert!(cache.layer(DIGEST, Compression::None, &LIMITS).is_some());
    }

    #[test]
    fn blobs_and_manifests_are_read_back_only_with_their_digest() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let config = br#"{"os":"linux"}"#;
        let digest = sha256_digest(config);
        cache.put_blob(&digest, config);
        assert_eq!(cache.blob(&digest).unwrap(), &config[..]);
        fs::write(cache.path("blobs", &digest).unwrap(), b"{}").unwrap();
        assert!(cache.blob(&digest).is_none());

        let body = br#"{"schemaVersion":2}"#;
        let digest = sha256_digest(body);
        cache.put_manifest(&digest, crate::registry::OCI_MANIFEST, body);
        let (media_type, kept) = cache.manifest(&digest).unwrap();
        assert_eq!(media_type, crate::registry::OCI_MANIFEST);
        assert_eq!(kept, &body[..]);
        assert!(cache.manifest(DIGEST).is_none());
        assert!(cache.path("blobs", "sha512:00").is_none());
        assert!(cache.path("blobs", "sha256:../../etc").is_none());
    }
}
