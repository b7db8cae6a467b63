//! Turning a layer blob into its tar stream: the declared compression, checked against the blob's
//! magic, and a cap on how far the stream may inflate.

use std::io::{self, BufReader, Chain, Cursor, Read};

use flate2::read::MultiGzDecoder;

use super::LayerError;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// zstd skippable frames carry magics 0x184D2A50..=0x184D2A5F (little endian on the wire).
const ZSTD_SKIPPABLE_MAGIC: [u8; 3] = [0x2a, 0x4d, 0x18];
/// A 32 MiB window: what zstd's own tools accept without `--long`; a frame demanding more is a
/// memory bomb, not a layer.
const ZSTD_WINDOW_LOG_MAX: u32 = 25;

/// How a layer blob is compressed, as its media type declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From a layer media type: OCI `application/vnd.oci.image.layer.v1.tar`, `+gzip`, `+zstd`, the
    /// `nondistributable` variants of these, Docker `application/vnd.docker.image.rootfs.diff.tar[.gzip]`
    /// and `application/vnd.docker.image.rootfs.foreign.diff.tar.gzip`. Anything else → None.
    pub(crate) fn from_media_type(media_type: &str) -> Option<Compression> {
        let compression = match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
            _ => return None,
        };
        Some(compression)
    }

    fn format(self) -> &'static str {
        match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// The raw blob with the magic bytes we peeked at put back in front.
type Peeked<R> = Chain<Cursor<Vec<u8>>, R>;

enum Decoder<R: Read> {
    Plain(Peeked<R>),
    Gzip(Box<MultiGzDecoder<Peeked<R>>>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<Peeked<R>>>),
}

/// The decompressed tar stream of one layer. Read errors come out as `io::Error`s wrapping a
/// [`LayerError`] (`LayerError::from_io` recovers it), so the inflate cap is told apart from a
/// corrupt stream.
pub(super) struct Inflated<R: Read> {
    decoder: Decoder<R>,
    format: &'static str,
    inflated: u64,
    cap: u64,
}

/// The inflate cap for a blob of `compressed_size` bytes: far above what real layers reach (YAML
/// and binaries inflate 3–10×), far below what a bomb of zeros does (~1000×).
pub(super) fn inflate_cap(compressed_size: u64) -> u64 {
    const FLOOR: u64 = 8 << 30;
    compressed_size.saturating_mul(100).max(FLOOR)
}

/// Checks that `raw` starts the way `compression` says, and starts decompressing it.
pub(super) fn open<R: Read>(
    mut raw: R,
    compression: Compression,
    cap: u64,
) -> Result<Inflated<R>, LayerError> {
    let format = compression.format();
    let magic =
        peek(&mut raw, ZSTD_MAGIC.len()).map_err(|source| LayerError::Read { format, source })?;
    let is_gzip = magic.starts_with(&GZIP_MAGIC);
    let is_zstd = magic == ZSTD_MAGIC;
    let is_skippable =
        magic.len() == 4 && magic[0] & 0xf0 == 0x50 && magic[1..] == ZSTD_SKIPPABLE_MAGIC;
    let peeked = Cursor::new(magic).chain(raw);
    let decoder = match compression {
        Compression::None if is_gzip => return Err(LayerError::UnexpectedMagic { format: "gzip" }),
        Compression::None if is_zstd => return Err(LayerError::UnexpectedMagic { format: "zstd" }),
        Compression::None => Decoder::Plain(peeked),
        Compression::Gzip if !is_gzip => return Err(LayerError::MissingMagic { format }),
        // Multi-member: pigz and mgzip write one gzip member per block, and a reader stopping
        // after the first would silently drop the rest of the layer.
        Compression::Gzip => Decoder::Gzip(Box::new(MultiGzDecoder::new(peeked))),
        Compression::Zstd if !(is_zstd || is_skippable) => {
            return Err(LayerError::MissingMagic { format });
        }
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::new(peeked)
                .map_err(|source| LayerError::Read { format, source })?;
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|source| LayerError::Read { format, source })?;
            Decoder::Zstd(decoder)
        }
    };
    Ok(Inflated {
        decoder,
        format,
        inflated: 0,
        cap,
    })
}

/// Reads up to `len` bytes, fewer only at the end of the stream.
fn peek(raw: &mut impl Read, len: usize) -> io::Result<Vec<u8>> {
    let mut magic = Vec::with_capacity(len);
    raw.take(len as u64).read_to_end(&mut magic)?;
    Ok(magic)
}

impl<R: Read> Inflated<R> {
    /// Reads the rest of the decompressed stream (still under the cap), then the rest of the raw
    /// blob: the caller digests the raw bytes, and a blob must not pass verification with bytes
    /// nobody read (a tar stops at its end marker; a decompressor may stop at its last frame).
    pub(super) fn finish(mut self) -> Result<(), LayerError> {
        let format = self.format;
        io::copy(&mut self, &mut io::sink()).map_err(|e| LayerError::from_io(e, format))?;
        let mut raw = match self.decoder {
            Decoder::Plain(peeked) => peeked.into_inner().1,
            Decoder::Gzip(decoder) => decoder.into_inner().into_inner().1,
            Decoder::Zstd(decoder) => decoder.finish().into_inner().into_inner().1,
        };
        io::copy(&mut raw, &mut io::sink())
            .map_err(|source| LayerError::Read { format, source })?;
        Ok(())
    }
}

impl<R: Read> Read for Inflated<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = match &mut self.decoder {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
        };
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(source) => {
                let format = self.format;
                return Err(io::Error::other(LayerError::Read { format, source }));
            }
        };
        self.inflated += n as u64;
        if self.inflated > self.cap {
            return Err(io::Error::other(LayerError::InflateCap { cap: self.cap }));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::testutil::*;

    #[test]
    fn media_types() {
        let cases = [
            (
                "application/vnd.oci.image.layer.v1.tar",
                Some(Compression::None),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Some(Compression::Zstd),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
                Some(Compression::None),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                Some(Compression::Zstd),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Some(Compression::Gzip),
            ),
            ("application/vnd.oci.image.layer.v1.tar+bzip2", None),
            ("application/vnd.oci.empty.v1+json", None),
            ("application/x-yaml", None),
            ("", None),
        ];
        for (media_type, expected) in cases {
            assert_eq!(
                Compression::from_media_type(media_type),
                expected,
                "{media_type}"
            );
        }
    }

    fn sample() -> Vec<u8> {
        let mut tar = TarWriter::new();
        tar.file("capi-operator-manifests/p/metadata.yaml", b"name: p\n");
        tar.file("capi-operator-manifests/p/manifests.yaml", b"kind: List\n");
        tar.finish()
    }

    const SAMPLE: [&str; 3] = [
        "p/",
        "p/manifests.yaml=kind: List\n",
        "p/metadata.yaml=name: p\n",
    ];

    #[test]
    fn plain_gzip_and_zstd_layers_read_alike() {
        for (blob, compression) in [
            (sample(), Compression::None),
            (gzip(&sample()), Compression::Gzip),
            (zstd(&sample()), Compression::Zstd),
        ] {
            assert_eq!(
                listing_of(&[(blob, compression)]),
                SAMPLE,
                "{compression:?}"
            );
        }
    }

    #[test]
    fn every_gzip_member_is_read() {
        let mut tar = TarWriter::new();
        tar.file("capi-operator-manifests/p/manifests.yaml", b"kind: List\n");
        let first = tar.take();
        tar.file("capi-operator-manifests/p/metadata.yaml", b"name: p\n");
        let second = tar.finish();
        let mut blob = gzip(&first);
        blob.extend(gzip(&second));
        assert_eq!(listing_of(&[(blob, Compression::Gzip)]), SAMPLE);
    }

    #[test]
    fn a_leading_zstd_skippable_frame_is_accepted() {
        let mut blob = vec![0x5a, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, b'a', b'b', b'c'];
        blob.extend(zstd(&sample()));
        assert_eq!(listing_of(&[(blob, Compression::Zstd)]), SAMPLE);
    }

    #[test]
    fn magic_must_match_the_media_type() {
        let err = read(&gzip(&sample()), Compression::Zstd).unwrap_err();
        assert_eq!(err.to_string(), "zstd layer does not start with zstd magic");
        let err = read(&sample(), Compression::Gzip).unwrap_err();
        assert_eq!(err.to_string(), "gzip layer does not start with gzip magic");
        let err = read(&zstd(&sample()), Compression::Gzip).unwrap_err();
        assert_eq!(err.to_string(), "gzip layer does not start with gzip magic");
        let err = read(&gzip(&sample()), Compression::None).unwrap_err();
        assert_eq!(err.to_string(), "uncompressed layer starts with gzip magic");
        let err = read(&zstd(&sample()), Compression::None).unwrap_err();
        assert_eq!(err.to_string(), "uncompressed layer starts with zstd magic");
        let err = read(&[], Compression::Gzip).unwrap_err();
        assert_eq!(err.to_string(), "gzip layer does not start with gzip magic");
    }

    #[test]
    fn an_empty_uncompressed_blob_is_an_empty_layer() {
        assert!(read(&[], Compression::None).unwrap().is_empty());
    }

    #[test]
    fn truncated_streams_fail() {
        let blob = gzip(&big_sample());
        let err = read(&blob[..blob.len() - 100], Compression::Gzip).unwrap_err();
        assert!(
            matches!(err, LayerError::Read { format: "gzip", .. }),
            "{err}"
        );
        let blob = zstd(&big_sample());
        let err = read(&blob[..blob.len() - 100], Compression::Zstd).unwrap_err();
        assert!(
            matches!(err, LayerError::Read { format: "zstd", .. }),
            "{err}"
        );
        // Even the last few bytes: the gzip trailer (CRC, length) and zstd's frame end.
        let blob = gzip(&big_sample());
        let err = read(&blob[..blob.len() - 4], Compression::Gzip).unwrap_err();
        assert!(
            matches!(err, LayerError::Read { format: "gzip", .. }),
            "{err}"
        );
        let blob = zstd(&big_sample());
        let err = read(&blob[..blob.len() - 1], Compression::Zstd).unwrap_err();
        assert!(
            matches!(err, LayerError::Read { format: "zstd", .. }),
            "{err}"
        );
    }

    /// Enough distinct content that 100 bytes off the end cut into the compressed body.
    fn big_sample() -> Vec<u8> {
        let mut tar = TarWriter::new();
        let body: Vec<u8> = (0..20_000u32).flat_map(|i| i.to_le_bytes()).collect();
        tar.file("capi-operator-manifests/p/manifests.yaml", &body);
        tar.file("capi-operator-manifests/p/metadata.yaml", b"name: p\n");
        tar.finish()
    }

    #[test]
    fn the_blob_is_read_to_its_very_end() {
        let mut padded = sample();
        padded.extend([0u8; 4096]);
        for (blob, compression) in [
            (padded.clone(), Compression::None),
            (gzip(&padded), Compression::Gzip),
            (zstd(&padded), Compression::Zstd),
        ] {
            let mut counted = Counting::new(&blob[..]);
            let layer =
                contribution(&mut counted, compression, blob.len() as u64, &LIMITS).unwrap();
            assert!(!layer.is_empty());
            assert_eq!(counted.count, blob.len() as u64, "{compression:?}");
        }
    }

    #[test]
    fn junk_after_the_last_gzip_member_is_an_error() {
        let mut blob = gzip(&sample());
        blob.extend([0u8; 16]);
        let err = read(&blob, Compression::Gzip).unwrap_err();
        assert!(
            matches!(err, LayerError::Read { format: "gzip", .. }),
            "{err}"
        );
        let mut blob = gzip(&sample());
        blob.extend(b"not gzip at all");
        let err = read(&blob, Compression::Gzip).unwrap_err();
        assert!(
            matches!(err, LayerError::Read { format: "gzip", .. }),
            "{err}"
        );
    }

    #[test]
    fn junk_after_the_last_zstd_frame_is_an_error() {
        let mut blob = zstd(&sample());
        blob.extend(b"not zstd at all");
        let err = read(&blob, Compression::Zstd).unwrap_err();
        assert!(
            matches!(err, LayerError::Read { format: "zstd", .. }),
            "{err}"
        );
    }

    #[test]
    fn inflating_past_the_cap_fails_even_after_the_end_of_archive() {
        let mut bomb = sample();
        bomb.extend(vec![0u8; 1 << 20]);
        for (blob, compression) in [
            (bomb.clone(), Compression::None),
            (gzip(&bomb), Compression::Gzip),
            (zstd(&bomb), Compression::Zstd),
        ] {
            let err = read_layer(&blob[..], compression, &caps(64 << 10), &LIMITS).unwrap_err();
            assert_eq!(
                err.to_string(),
                "layer inflates past 65536 bytes",
                "{compression:?}"
            );
        }
        let blob = gzip(&bomb);
        let layer = read_layer(
            &blob[..],
            Compression::Gzip,
            &caps(bomb.len() as u64),
            &LIMITS,
        );
        assert!(layer.is_ok());
    }

    #[test]
    fn the_default_cap_is_100_times_the_blob_but_at_least_8_gib() {
        assert_eq!(inflate_cap(0), 8 << 30);
        assert_eq!(inflate_cap(1 << 30), 100 << 30);
        assert_eq!(inflate_cap(u64::MAX), u64::MAX);
    }

    #[test]
    fn zstd_windows_over_32_mib_are_refused() {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder.window_log(27).unwrap();
        encoder.long_distance_matching(true).unwrap();
        std::io::Write::write_all(&mut encoder, &sample()).unwrap();
        let blob = encoder.finish().unwrap();
        let err = read(&blob, Compression::Zstd).unwrap_err();
        assert!(
            matches!(err, LayerError::Read { format: "zstd", .. }),
            "{err}"
        );
    }

    fn read(blob: &[u8], compression: Compression) -> Result<Contribution, LayerError> {
        contribution(blob, compression, blob.len() as u64, &LIMITS)
    }

    fn caps(inflate: u64) -> Caps {
        Caps {
            inflate,
            entries: 100,
        }
    }

    use crate::layers::contribution::{Caps, read_layer};
    use crate::layers::{Contribution, contribution};
}
