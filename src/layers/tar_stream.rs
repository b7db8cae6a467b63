//! The tar framing: headers, GNU long names and PAX records folded into one entry each.
//!
//! The `tar` crate is used for header fields only. Its iterator either buffers GNU long names and
//! PAX headers without bound or, raw, frames every entry by its ustar size, ignoring a PAX `size`;
//! so the stream is framed here, block by block, following Go's `archive/tar` (what the runtime
//! reads) where parsers disagree:
//! - a PAX `x` header describes the next *real* entry: GNU `L`/`K` headers in between are framed by
//!   their own size (GHSA-3cv2-h65g-fgmm), and a PAX `size` overrides the ustar one (CVE-2026-33055);
//! - links, devices, fifos and directories carry no data, whatever their size field says;
//! - typeflag NUL with a name ending in `/` is a directory;
//! - a zero block ends the archive, unless a header follows it directly (an error).
//!
//! Where Go would quietly pick one reading — two `x` (or two `L`, two `K`) headers for one entry, a
//! GNU long name *and* a PAX `path`, an extension header with no entry after it, a `g` header between
//! an extension header and its entry — the stream is refused as malformed.

use std::io::{self, Read};

use super::{LayerError, shown};

/// Cap on the data of one GNU long name/link or PAX header: real ones are a few hundred bytes.
pub(super) const MAX_EXTENSION: u64 = 1 << 20;
const BLOCK: usize = 512;
const GNU_MAGIC: &[u8] = b"ustar  \0";

/// What a tar entry is, by its typeflag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    CharDevice,
    BlockDevice,
    Fifo,
    /// Old GNU (`S`) or PAX (`GNU.sparse.*`) sparse file.
    Sparse,
    Other(u8),
}

impl Kind {
    fn from_typeflag(typeflag: u8, name: &[u8]) -> Kind {
        match typeflag {
            b'0' | b'7' => Kind::File,
            b'\0' if name.ends_with(b"/") => Kind::Dir,
            b'\0' => Kind::File,
            b'1' => Kind::Hardlink,
            b'2' => Kind::Symlink,
            b'3' => Kind::CharDevice,
            b'4' => Kind::BlockDevice,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            b'S' => Kind::Sparse,
            other => Kind::Other(other),
        }
    }

    fn is_header_only(self) -> bool {
        matches!(
            self,
            Kind::Dir
                | Kind::Symlink
                | Kind::Hardlink
                | Kind::CharDevice
                | Kind::BlockDevice
                | Kind::Fifo
        )
    }
}

/// One real entry, with its extension headers applied. Its data is read from the [`TarStream`].
#[derive(Debug)]
pub(super) struct Entry {
    /// Raw name: GNU long name, PAX `path` or ustar prefix/name, in that order.
    pub(super) name: Vec<u8>,
    /// Raw link target, empty when none.
    pub(super) link: Vec<u8>,
    pub(super) kind: Kind,
    /// Bytes of data that follow in the stream.
    pub(super) size: u64,
}

/// Extension records waiting for the entry they describe.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Pax>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.long_name.is_none() && self.long_link.is_none() && self.pax.is_none()
    }
}

/// The PAX records we act on; the others (times, owners, xattrs, charset…) are ignored.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    sparse: bool,
    sparse_name: Option<Vec<u8>>,
}

/// Reads a tar stream entry by entry; between two calls to [`TarStream::next_entry`], its `Read`
/// impl yields the current entry's data.
pub(super) struct TarStream<R> {
    inner: R,
    /// Bytes consumed so far, for messages.
    offset: u64,
    /// Data of the current entry not yet read, and the padding after it.
    remaining: u64,
    padding: u64,
    current: Option<String>,
}

impl<R: Read> TarStream<R> {
    pub(super) fn new(inner: R) -> Self {
        TarStream {
            inner,
            offset: 0,
            remaining: 0,
            padding: 0,
            current: None,
        }
    }

    /// The underlying stream, positioned after the end-of-archive marker.
    pub(super) fn into_inner(self) -> R {
        self.inner
    }

    /// The next real entry, or `None` at the end of the archive.
    pub(super) fn next_entry(&mut self) -> Result<Option<Entry>, LayerError> {
        self.skip_data()?;
        self.current = None;
        let mut pending = Pending::default();
        loop {
            let start = self.offset;
            let Some(block) = self.read_block()? else {
                return self.end(&pending, start);
            };
            if block.iter().all(|&b| b == 0) {
                self.second_zero_block()?;
                return self.end(&pending, start);
            }
            let header = tar::Header::from_byte_slice(&block);
            let path = || Some(shown(&header.path_bytes()));
            if !checksum_matches(&block) {
                return Err(malformed(start, path(), "header checksum mismatch"));
            }
            let typeflag = block[156];
            let Some(size) = numeric(&block[124..136]) else {
                return Err(malformed(start, path(), "invalid size field"));
            };
            match typeflag {
                b'L' | b'K' => {
                    let (slot, kind) = match typeflag {
                        b'L' => (&mut pending.long_name, "GNU long name"),
                        _ => (&mut pending.long_link, "GNU long link name"),
                    };
                    if slot.is_some() {
                        return Err(malformed(
                            start,
                            path(),
                            &format!("two {kind} headers for one entry"),
                        ));
                    }
                    let mut data = self.read_extension(size, kind, &block)?;
                    // GNU tar NUL-terminates the name; a NUL inside it is left for the name
                    // check to refuse.
                    while data.last() == Some(&0) {
                        data.pop();
                    }
                    *slot = Some(data);
                }
                b'x' => {
                    if pending.pax.is_some() {
                        return Err(malformed(start, path(), "two PAX headers for one entry"));
                    }
                    let data = self.read_extension(size, "PAX", &block)?;
                    pending.pax =
                        Some(parse_pax(&data).map_err(|reason| malformed(start, path(), reason))?);
                }
                b'g' => {
                    if !pending.is_empty() {
                        return Err(malformed(
                            start,
                            path(),
                            "PAX global header between an extension header and its entry",
                        ));
                    }
                    // Global records (defaults for every later entry) set nothing we act on.
                    self.read_extension(size, "PAX global", &block)?;
                }
                _ => return self.entry(&block, typeflag, size, pending, start).map(Some),
            }
        }
    }

    fn entry(
        &mut self,
        block: &[u8; BLOCK],
        typeflag: u8,
        size: u64,
        pending: Pending,
        start: u64,
    ) -> Result<Entry, LayerError> {
        let header = tar::Header::from_byte_slice(block);
        let pax = pending.pax.unwrap_or_default();
        let both = |what| malformed(start, Some(shown(&header.path_bytes())), what);
        let mut name = match (pending.long_name, pax.path) {
            (Some(_), Some(_)) => return Err(both("both a GNU long name and a PAX path")),
            (Some(name), None) | (None, Some(name)) => name,
            (None, None) => header.path_bytes().into_owned(),
        };
        let link = match (pending.long_link, pax.linkpath) {
            (Some(_), Some(_)) => return Err(both("both a GNU long link name and a PAX linkpath")),
            (Some(link), None) | (None, Some(link)) => link,
            (None, None) => header
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default(),
        };
        let mut kind = Kind::from_typeflag(typeflag, &name);
        if pax.sparse {
            kind = Kind::Sparse;
            name = pax.sparse_name.unwrap_or(name);
        }
        let mut size = pax.size.unwrap_or(size);
        if kind.is_header_only() {
            size = 0;
        }
        if typeflag == b'S' {
            self.skip_sparse_map(block, start, &name)?;
        }
        self.remaining = size;
        self.padding = padding(size);
        self.current = Some(shown(&name));
        Ok(Entry {
            name,
            link,
            kind,
            size,
        })
    }

    /// Old GNU sparse headers may be followed by blocks of further sparse map before the data.
    fn skip_sparse_map(
        &mut self,
        block: &[u8; BLOCK],
        start: u64,
        name: &[u8],
    ) -> Result<(), LayerError> {
        if &block[257..265] != GNU_MAGIC {
            return Err(malformed(
                start,
                Some(shown(name)),
                "sparse entry in a non-GNU header",
            ));
        }
        let mut extended = block[482] != 0;
        while extended {
            let at = self.offset;
            let Some(map) = self.read_block()? else {
                return Err(malformed(
                    at,
                    Some(shown(name)),
                    "the stream ends inside a sparse map",
                ));
            };
            extended = map[504] != 0;
        }
        Ok(())
    }

    /// After a zero block, Go reads one more: the end, unless it is a header.
    fn second_zero_block(&mut self) -> Result<(), LayerError> {
        let start = self.offset;
        match self.read_block()? {
            Some(block) if block.iter().any(|&b| b != 0) => Err(malformed(
                start,
                None,
                "a header follows a single zero block",
            )),
            _ => Ok(()),
        }
    }

    fn end(&self, pending: &Pending, start: u64) -> Result<Option<Entry>, LayerError> {
        if pending.is_empty() {
            Ok(None)
        } else {
            Err(malformed(
                start,
                None,
                "extension header with no entry after it",
            ))
        }
    }

    fn read_extension(
        &mut self,
        size: u64,
        kind: &'static str,
        block: &[u8; BLOCK],
    ) -> Result<Vec<u8>, LayerError> {
        let path = shown(&tar::Header::from_byte_slice(block).path_bytes());
        if size > MAX_EXTENSION {
            return Err(LayerError::HeaderTooLarge {
                path,
                kind,
                size,
                limit: MAX_EXTENSION,
            });
        }
        self.remaining = size;
        self.padding = padding(size);
        self.current = Some(path);
        let mut data = Vec::with_capacity(size as usize);
        self.read_to_end(&mut data)
            .map_err(|e| LayerError::from_io(e, "tar"))?;
        self.skip_data()?;
        Ok(data)
    }

    /// Skips what is left of the current entry's data, then its padding.
    fn skip_data(&mut self) -> Result<(), LayerError> {
        io::copy(self, &mut io::sink()).map_err(|e| LayerError::from_io(e, "tar"))?;
        // Go tolerates a stream ending inside the padding of its last entry; so do we.
        let padding = std::mem::take(&mut self.padding);
        let skipped = io::copy(&mut (&mut self.inner).take(padding), &mut io::sink())
            .map_err(|e| LayerError::from_io(e, "tar"))?;
        self.offset += skipped;
        Ok(())
    }

    /// A whole block, or `None` at the end of the stream; a partial block is an error.
    fn read_block(&mut self) -> Result<Option<[u8; BLOCK]>, LayerError> {
        let start = self.offset;
        let mut block = [0u8; BLOCK];
        let mut filled = 0;
        while filled < BLOCK {
            match self.inner.read(&mut block[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LayerError::from_io(e, "tar")),
            }
        }
        self.offset += filled as u64;
        match filled {
            0 => Ok(None),
            BLOCK => Ok(Some(block)),
            _ => Err(malformed(start, None, "the stream ends inside a header")),
        }
    }
}

impl<R: Read> Read for TarStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            let truncated = malformed(
                self.offset,
                self.current.clone(),
                "the stream ends inside the entry's data",
            );
            return Err(io::Error::other(truncated));
        }
        self.remaining -= n as u64;
        self.offset += n as u64;
        Ok(n)
    }
}

fn malformed(offset: u64, path: Option<String>, reason: &str) -> LayerError {
    LayerError::Malformed {
        offset,
        path,
        reason: reason.to_owned(),
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// Go accepts the checksum summed over unsigned or over signed bytes (old Sun tars); so do we.
fn checksum_matches(block: &[u8; BLOCK]) -> bool {
    let Some(stored) = octal(&block[148..156]) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &byte) in block.iter().enumerate() {
        let byte = if (148..156).contains(&i) { b' ' } else { byte };
        unsigned += u64::from(byte);
        signed += i64::from(byte as i8);
    }
    stored == unsigned || i64::try_from(stored) == Ok(signed)
}

/// A numeric header field: octal text, or GNU base-256 when the high bit is set. Negative and
/// over-`i64` values, which Go refuses, are refused.
fn numeric(field: &[u8]) -> Option<u64> {
    let (&first, rest) = field.split_first()?;
    if first & 0x80 == 0 {
        return octal(field);
    }
    if first & 0x40 != 0 {
        return None;
    }
    let mut value = u64::from(first & 0x7f);
    for &byte in rest {
        if value >> 56 != 0 {
            return None;
        }
        value = value << 8 | u64::from(byte);
    }
    i64::try_from(value).is_ok().then_some(value)
}

/// Octal text, padded with spaces or NULs on either side and ended by a NUL.
fn octal(field: &[u8]) -> Option<u64> {
    let is_padding = |b: &u8| *b == b' ' || *b == 0;
    let start = field
        .iter()
        .position(|b| !is_padding(b))
        .unwrap_or(field.len());
    let end = field
        .iter()
        .rposition(|b| !is_padding(b))
        .map_or(start, |i| i + 1);
    let text = field[start..end]
        .split(|&b| b == 0)
        .next()
        .unwrap_or_default();
    let value = text.iter().try_fold(0u64, |value, &digit| match digit {
        b'0'..=b'7' => value.checked_mul(8)?.checked_add(u64::from(digit - b'0')),
        _ => None,
    })?;
    i64::try_from(value).is_ok().then_some(value)
}

/// PAX records: `"<length> <key>=<value>\n"`, the length counting the whole record.
fn parse_pax(mut data: &[u8]) -> Result<Pax, &'static str> {
    const BAD: &str = "malformed PAX record";
    let mut pax = Pax::default();
    while !data.is_empty() {
        let space = data.iter().position(|&b| b == b' ').ok_or(BAD)?;
        let len = decimal(&data[..space]).ok_or(BAD)?;
        let len = usize::try_from(len).map_err(|_| BAD)?;
        if len <= space + 1 || len > data.len() {
            return Err(BAD);
        }
        let record = data[space + 1..len].strip_suffix(b"\n").ok_or(BAD)?;
        let eq = record.iter().position(|&b| b == b'=').ok_or(BAD)?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" | b"linkpath" if value.is_empty() => return Err("empty PAX path or linkpath"),
            b"path" => pax.path = Some(value.to_vec()),
            b"linkpath" => pax.linkpath = Some(value.to_vec()),
            b"size" => pax.size = Some(decimal(value).ok_or("invalid PAX size")?),
            b"GNU.sparse.name" => {
                pax.sparse = true;
                pax.sparse_name = Some(value.to_vec());
            }
            _ if key.starts_with(b"GNU.sparse.") => pax.sparse = true,
            _ => {}
        }
        data = &data[len..];
    }
    Ok(pax)
}

fn decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    let value = text.iter().try_fold(0u64, |value, &digit| match digit {
        b'0'..=b'9' => value.checked_mul(10)?.checked_add(u64::from(digit - b'0')),
        _ => None,
    })?;
    i64::try_from(value).is_ok().then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::testutil::*;

    /// Every entry as `name kind size data`, as a reader of the stream would see it.
    fn entries(tar: &[u8]) -> Result<Vec<String>, LayerError> {
        let mut stream = TarStream::new(tar);
        let mut out = Vec::new();
        while let Some(entry) = stream.next_entry()? {
            let mut data = Vec::new();
            stream
                .read_to_end(&mut data)
                .map_err(|e| LayerError::from_io(e, "tar"))?;
            let mut line = format!(
                "{} {:?} {}",
                String::from_utf8_lossy(&entry.name),
                entry.kind,
                entry.size
            );
            if !entry.link.is_empty() {
                line += &format!(" -> {}", String::from_utf8_lossy(&entry.link));
            }
            if !data.is_empty() && data.len() <= 32 {
                line += &format!(" {}", String::from_utf8_lossy(&data));
            }
            out.push(line);
        }
        Ok(out)
    }

    #[test]
    fn plain_entries_of_every_kind() {
        let mut tar = TarWriter::new();
        tar.dir("d/");
        tar.file("d/f", b"data");
        tar.raw(b'\0', b"old/", b"", 0, b"");
        tar.raw(b'\0', b"old/f", b"", 2, b"hi");
        tar.raw(b'7', b"contiguous", b"", 1, b"c");
        tar.symlink("s", "/etc/passwd");
        tar.hardlink("h", "d/f");
        tar.raw(b'3', b"chr", b"", 0, b"");
        tar.raw(b'4', b"blk", b"", 0, b"");
        tar.raw(b'6', b"fifo", b"", 0, b"");
        tar.raw(b'V', b"label", b"", 0, b"");
        assert_eq!(
            entries(&tar.finish()).unwrap(),
            [
                "d/ Dir 0",
                "d/f File 4 data",
                "old/ Dir 0",
                "old/f File 2 hi",
                "contiguous File 1 c",
                "s Symlink 0 -> /etc/passwd",
                "h Hardlink 0 -> d/f",
                "chr CharDevice 0",
                "blk BlockDevice 0",
                "fifo Fifo 0",
                "label Other(86) 0",
            ]
        );
    }

    #[test]
    fn the_tar_crate_builder_reads_back() {
        let long = format!("capi-operator-manifests/{}/metadata.yaml", "p".repeat(150));
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, &long, &b"abc"[..])
            .unwrap();
        let mut header = tar::Header::new_ustar();
        header.set_size(2);
        builder
            .append_data(&mut header, "short", &b"de"[..])
            .unwrap();
        let tar = builder.into_inner().unwrap();
        assert_eq!(
            entries(&tar).unwrap(),
            [format!("{long} File 3 abc"), "short File 2 de".to_owned()]
        );
    }

    #[test]
    fn ustar_prefix_is_joined() {
        let mut block = header(b'0', b"name", b"", 1);
        block[345..351].copy_from_slice(b"prefix");
        fix_checksum(&mut block);
        let mut tar = TarWriter::new();
        tar.bytes(&block);
        tar.bytes(&padded(b"x"));
        assert_eq!(entries(&tar.finish()).unwrap(), ["prefix/name File 1 x"]);
    }

    #[test]
    fn gnu_long_name_and_link() {
        let name = format!("capi-operator-manifests/{}/x", "n".repeat(120));
        let target = format!("capi-operator-manifests/{}/y", "t".repeat(120));
        let mut tar = TarWriter::new();
        tar.long_name(format!("{name}\0").as_bytes());
        tar.long_link(target.as_bytes());
        tar.raw(b'1', b"short", b"short-target", 0, b"");
        assert_eq!(
            entries(&tar.finish()).unwrap(),
            [format!("{name} Hardlink 0 -> {target}")]
        );
    }

    #[test]
    fn pax_path_linkpath_and_size_override_the_ustar_fields() {
        let long = format!("capi-operator-manifests/p/{}", "l".repeat(200));
        let mut tar = TarWriter::new();
        tar.pax(&[
            ("path", long.as_bytes()),
            ("mtime", b"1.5"),
            ("size", b"600"),
        ]);
        // The ustar size says 16; the data really is 600 bytes.
        tar.raw(b'0', b"short", b"", 16, &[b'a'; 600]);
        tar.pax(&[("linkpath", b"target")]);
        tar.raw(b'2', b"link", b"ignored", 0, b"");
        tar.file("after", b"ok");
        assert_eq!(
            entries(&tar.finish()).unwrap(),
            [
                format!("{long} File 600"),
                "link Symlink 0 -> target".to_owned(),
                "after File 2 ok".to_owned(),
            ]
        );
    }

    #[test]
    fn a_pax_size_can_also_shrink_the_entry() {
        let mut tar = TarWriter::new();
        tar.pax(&[("size", b"2")]);
        // Were the ustar size (600) obeyed, `after` would be swallowed as data.
        tar.raw(b'0', b"small", b"", 600, b"hi");
        tar.file("after", b"ok");
        assert_eq!(
            entries(&tar.finish()).unwrap(),
            ["small File 2 hi", "after File 2 ok"]
        );
    }

    /// The layout of GHSA-3cv2-h65g-fgmm: an `x` record must skip the `L` header and describe
    /// the file after it.
    #[test]
    fn pax_records_apply_to_the_next_real_entry_past_a_long_name() {
        let mut tar = TarWriter::new();
        tar.pax(&[("size", b"2048")]);
        tar.long_name(b"longname.txt");
        let mut data = b"file_a data.....".to_vec();
        data.extend(header(b'0', b"file_b", b"", 16));
        data.extend(b"file_b data.....");
        data.resize(2048, 0);
        tar.raw(b'0', b"file_a", b"", 16, &data);
        tar.file("file_c", b"c");
        assert_eq!(
            entries(&tar.finish()).unwrap(),
            ["longname.txt File 2048", "file_c File 1 c"]
        );
    }

    #[test]
    fn header_only_types_carry_no_data_whatever_their_size() {
        let mut tar = TarWriter::new();
        tar.raw(b'5', b"dir/", b"", 512, b"");
        tar.raw(b'2', b"sym", b"x", 512, b"");
        tar.file("next", b"n");
        assert_eq!(
            entries(&tar.finish()).unwrap(),
            ["dir/ Dir 0", "sym Symlink 0 -> x", "next File 1 n"]
        );
    }

    #[test]
    fn global_headers_are_skipped() {
        let mut tar = TarWriter::new();
        tar.global_pax(&[("path", b"ignored"), ("comment", b"hello")]);
        tar.file("f", b"1");
        assert_eq!(entries(&tar.finish()).unwrap(), ["f File 1 1"]);
    }

    #[test]
    fn oversized_extension_headers_fail_before_being_read() {
        let big = vec![b'a'; MAX_EXTENSION as usize + 1];
        let cases: [(u8, &str); 4] = [
            (b'x', "PAX"),
            (b'g', "PAX global"),
            (b'L', "GNU long name"),
            (b'K', "GNU long link name"),
        ];
        for (typeflag, kind) in cases {
            let mut tar = TarWriter::new();
            tar.raw(typeflag, b"././@LongLink", b"", big.len() as u64, &big);
            tar.file("f", b"1");
            let err = entries(&tar.finish()).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "././@LongLink: {kind} header of 1048577 bytes exceeds the 1048576-byte cap"
                )
            );
        }
        let mut tar = TarWriter::new();
        tar.raw(
            b'x',
            b"pax",
            b"",
            MAX_EXTENSION,
            &pax_padded(MAX_EXTENSION as usize),
        );
        tar.file("f", b"1");
        assert_eq!(entries(&tar.finish()).unwrap(), ["f File 1 1"]);
    }

    /// A valid PAX header of exactly `len` bytes.
    fn pax_padded(len: usize) -> Vec<u8> {
        let value_len = len - "1048576 comment=\n".len();
        let record = pax_record("comment", &vec![b'c'; value_len]);
        assert_eq!(record.len(), len);
        record
    }

    #[test]
    fn ambiguous_extension_headers_are_malformed() {
        let err_of = |build: &dyn Fn(&mut TarWriter)| {
            let mut tar = TarWriter::new();
            build(&mut tar);
            entries(&tar.finish()).unwrap_err().to_string()
        };
        assert_eq!(
            err_of(&|t| {
                t.long_name(b"a");
                t.pax(&[("path", b"b")]);
                t.file("c", b"");
            }),
            "malformed tar stream at byte 2048 (entry \"c\"): both a GNU long name and a PAX path"
        );
        assert_eq!(
            err_of(&|t| {
                t.long_link(b"a");
                t.pax(&[("linkpath", b"b")]);
                t.hardlink("c", "d");
            }),
            "malformed tar stream at byte 2048 (entry \"c\"): both a GNU long link name and a PAX linkpath"
        );
        assert_eq!(
            err_of(&|t| {
                t.pax(&[("path", b"a")]);
                t.pax(&[("path", b"b")]);
                t.file("c", b"");
            }),
            "malformed tar stream at byte 1024 (entry \"PaxHeader\"): two PAX headers for one entry"
        );
        assert_eq!(
            err_of(&|t| {
                t.long_name(b"a");
                t.long_name(b"b");
                t.file("c", b"");
            }),
            "malformed tar stream at byte 1024 (entry \"././@LongLink\"): two GNU long name headers for one entry"
        );
        assert_eq!(
            err_of(&|t| {
                t.long_name(b"a");
                t.global_pax(&[]);
                t.file("c", b"");
            }),
            "malformed tar stream at byte 1024 (entry \"GlobalHead\"): PAX global header between an extension header and its entry"
        );
        assert_eq!(
            err_of(&|t| t.pax(&[("path", b"dangling")])),
            "malformed tar stream at byte 1024: extension header with no entry after it"
        );
    }

    #[test]
    fn malformed_pax_records() {
        for records in [
            &b"5 a=b"[..],
            b"99 path=x\n",
            b"x path=x\n",
            b"10 pathx\n\n",
            b"3 a\n",
            b"+9 path=x\n",
            b"9 path=x\n\0\0",
        ] {
            let mut tar = TarWriter::new();
            tar.raw(b'x', b"pax", b"", records.len() as u64, records);
            tar.file("f", b"");
            let err = entries(&tar.finish()).unwrap_err();
            assert_eq!(
                err.to_string(),
                "malformed tar stream at byte 0 (entry \"pax\"): malformed PAX record",
                "{records:?}"
            );
        }
        for (records, reason) in [
            (&b"10 size=x\n"[..], "invalid PAX size"),
            (b"11 size=-1\n", "invalid PAX size"),
            (b"8 path=\n", "empty PAX path or linkpath"),
        ] {
            let mut tar = TarWriter::new();
            tar.raw(b'x', b"pax", b"", records.len() as u64, records);
            tar.file("f", b"");
            let err = entries(&tar.finish()).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("malformed tar stream at byte 0 (entry \"pax\"): {reason}")
            );
        }
    }

    #[test]
    fn sparse_entries_are_framed_past_their_map() {
        let mut tar = TarWriter::new();
        let mut block = [0u8; BLOCK];
        block[..6].copy_from_slice(b"sparse");
        block[100..108].copy_from_slice(b"0000644\0");
        block[124..136].copy_from_slice(b"00000000004\0");
        block[156] = b'S';
        block[257..265].copy_from_slice(GNU_MAGIC);
        block[482] = 1;
        fix_checksum(&mut block);
        tar.bytes(&block);
        let mut map = [0u8; BLOCK];
        map[504] = 1;
        tar.bytes(&map);
        tar.bytes(&[0u8; BLOCK]);
        tar.bytes(&padded(b"data"));
        tar.pax(&[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.name", b"real-name"),
        ]);
        tar.raw(b'0', b"GNUSparseFile.0/real-name", b"", 3, b"xyz");
        tar.file("after", b"ok");
        assert_eq!(
            entries(&tar.finish()).unwrap(),
            [
                "sparse Sparse 4 data",
                "real-name Sparse 3 xyz",
                "after File 2 ok"
            ]
        );
    }

    #[test]
    fn end_of_archive() {
        // No end marker at all: the archive ends with the stream, as in Go.
        let mut tar = TarWriter::new();
        tar.file("f", b"1");
        assert_eq!(entries(&tar.take()).unwrap(), ["f File 1 1"]);
        // A single zero block followed by the end of the stream.
        tar.file("f", b"1");
        let mut single = tar.take();
        single.extend([0u8; BLOCK]);
        assert_eq!(entries(&single).unwrap(), ["f File 1 1"]);
        // A header right after one zero block: another parser would go on reading.
        tar.file("f", b"1");
        tar.bytes(&[0u8; BLOCK]);
        tar.file("hidden", b"2");
        let err = entries(&tar.finish()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed tar stream at byte 1536: a header follows a single zero block"
        );
        // The padding of the last entry may be cut; its data may not.
        let mut tar = TarWriter::new();
        tar.file("f", b"1");
        let cut = tar.take();
        assert_eq!(entries(&cut[..513]).unwrap(), ["f File 1 1"]);
        let err = entries(&cut[..512]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed tar stream at byte 512 (entry \"f\"): the stream ends inside the entry's data"
        );
        let err = entries(&cut[..100]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed tar stream at byte 0: the stream ends inside a header"
        );
    }

    #[test]
    fn checksums() {
        let mut block = header(b'0', b"f", b"", 0);
        assert_eq!(entries(&block).unwrap(), ["f File 0"]);
        block[0] = b'g';
        let err = entries(&block).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed tar stream at byte 0 (entry \"g\"): header checksum mismatch"
        );
        // Signed sums, as old Sun tars wrote them, for a name with high bytes.
        let mut block = header(b'0', b"\xe9", b"", 0);
        let signed: i64 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    i64::from(b as i8)
                }
            })
            .sum();
        block[148..156].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
        assert_eq!(entries(&block).unwrap(), ["\u{fffd} File 0"]);
    }

    #[test]
    fn numeric_fields() {
        assert_eq!(numeric(b"00000000017\0"), Some(15));
        assert_eq!(numeric(b"     17 \0\0\0\0"), Some(15));
        assert_eq!(numeric(b"\0\0\0\0\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(numeric(b"0000000001 7"), None);
        assert_eq!(numeric(b"0000000008\0\0"), None);
        assert_eq!(numeric(b"+0000000001\0"), None);
        assert_eq!(numeric(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(
            numeric(&[
                0x80, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
            ]),
            Some(i64::MAX as u64)
        );
        assert_eq!(numeric(&[0x80, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(numeric(&[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(numeric(&[0xff; 12]), None);
    }

    #[test]
    fn a_base256_size_frames_the_entry() {
        let mut block = header(b'0', b"big", b"", 0);
        block[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]);
        fix_checksum(&mut block);
        let mut tar = TarWriter::new();
        tar.bytes(&block);
        tar.bytes(&padded(b"abc"));
        tar.file("after", b"ok");
        assert_eq!(
            entries(&tar.finish()).unwrap(),
            ["big File 3 abc", "after File 2 ok"]
        );
    }
}
