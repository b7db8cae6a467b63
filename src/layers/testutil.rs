//! Building layers byte by byte for the tests, hostile ones included (the `tar` crate's own
//! builder refuses `..` and absolute names, which is why headers are written raw here).

use std::io::{Read, Write};

use super::{Compression, Contribution, LayerError, Limits, Node, Subtree, contribution};

pub(crate) const LIMITS: Limits = Limits {
    max_file_size: 1 << 20,
    max_image_size: 4 << 20,
};

/// A ustar header for `name` (at most 100 bytes), with `size` in its size field.
pub(crate) fn header(typeflag: u8, name: &[u8], link: &[u8], size: u64) -> [u8; 512] {
    let mut header = tar::Header::new_ustar();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    header.set_mode(0o644);
    header.set_size(size);
    header.as_old_mut().linkflag = [typeflag];
    header.set_cksum();
    *header.as_bytes()
}

pub(crate) fn fix_checksum(block: &mut [u8; 512]) {
    let mut header = tar::Header::new_old();
    header.as_mut_bytes().copy_from_slice(block);
    header.set_cksum();
    block.copy_from_slice(header.as_bytes());
}

/// `data` padded to whole blocks.
pub(crate) fn padded(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    out.resize(data.len().div_ceil(512) * 512, 0);
    out
}

pub(crate) fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend(value);
    record.push(b'\n');
    record
}

#[derive(Default)]
pub(crate) struct TarWriter {
    out: Vec<u8>,
}

impl TarWriter {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// One header with `size` in its size field, followed by `data` (whatever its length).
    pub(crate) fn raw(&mut self, typeflag: u8, name: &[u8], link: &[u8], size: u64, data: &[u8]) {
        self.out.extend(header(typeflag, name, link, size));
        self.out.extend(padded(data));
    }

    pub(crate) fn file(&mut self, name: &str, data: &[u8]) {
        self.raw(b'0', name.as_bytes(), b"", data.len() as u64, data);
    }

    pub(crate) fn dir(&mut self, name: &str) {
        self.raw(b'5', name.as_bytes(), b"", 0, b"");
    }

    pub(crate) fn symlink(&mut self, name: &str, target: &str) {
        self.raw(b'2', name.as_bytes(), target.as_bytes(), 0, b"");
    }

    pub(crate) fn hardlink(&mut self, name: &str, target: &str) {
        self.raw(b'1', name.as_bytes(), target.as_bytes(), 0, b"");
    }

    pub(crate) fn pax(&mut self, records: &[(&str, &[u8])]) {
        let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        self.raw(b'x', b"PaxHeader", b"", data.len() as u64, &data);
    }

    pub(crate) fn global_pax(&mut self, records: &[(&str, &[u8])]) {
        let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        self.raw(b'g', b"GlobalHead", b"", data.len() as u64, &data);
    }

    pub(crate) fn long_name(&mut self, name: &[u8]) {
        self.raw(b'L', b"././@LongLink", b"", name.len() as u64, name);
    }

    pub(crate) fn long_link(&mut self, name: &[u8]) {
        self.raw(b'K', b"././@LongLink", b"", name.len() as u64, name);
    }

    pub(crate) fn bytes(&mut self, raw: &[u8]) {
        self.out.extend(raw);
    }

    /// The bytes written so far, without an end marker; the writer starts afresh.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The archive with its end-of-archive marker.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.out.extend([0u8; 1024]);
        self.out
    }
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

pub(crate) fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// Counts the bytes read through it, to check that a blob was read to its very end.
pub(crate) struct Counting<R> {
    inner: R,
    pub(crate) count: u64,
}

impl<R> Counting<R> {
    pub(crate) fn new(inner: R) -> Self {
        Counting { inner, count: 0 }
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// An uncompressed layer's contribution under [`LIMITS`].
pub(crate) fn layer(tar: &[u8]) -> Result<Contribution, LayerError> {
    contribution(tar, Compression::None, tar.len() as u64, &LIMITS)
}

/// Uncompressed layers applied in order.
pub(crate) fn merge(tars: &[Vec<u8>]) -> Result<Subtree, LayerError> {
    let mut subtree = Subtree::new();
    for tar in tars {
        subtree.apply(&layer(tar)?, &LIMITS)?;
    }
    Ok(subtree)
}

/// The subtree as lines: `dir/` for a directory, `path=content` for a file.
pub(crate) fn listing(subtree: &Subtree) -> Vec<String> {
    subtree
        .entries()
        .map(|(path, node)| match node {
            Node::Dir => format!("{path}/"),
            Node::File(content) => format!("{path}={}", String::from_utf8_lossy(content)),
        })
        .collect()
}

/// The listing of layers of any compression, applied in order.
pub(crate) fn listing_of(layers: &[(Vec<u8>, Compression)]) -> Vec<String> {
    let mut subtree = Subtree::new();
    for (blob, compression) in layers {
        let layer = contribution(&blob[..], *compression, blob.len() as u64, &LIMITS).unwrap();
        subtree.apply(&layer, &LIMITS).unwrap();
    }
    listing(&subtree)
}
