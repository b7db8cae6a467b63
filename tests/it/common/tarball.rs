//! Layer tarballs, benign and hostile, written with the tar crate's Builder and Header.

use tar::{EntryType, Header};

/// Where provider manifests live in an image.
pub const MANIFESTS_DIR: &str = "capi-operator-manifests";

/// A fixed mtime, so the same entries always give the same bytes (and digests).
const MTIME: u64 = 1_700_000_000;

/// Builds an uncompressed tar in memory. Paths are written as given (no leading '/'); the
/// checked methods go through the tar crate, which refuses `..` and absolute paths, so hostile
/// names go through `raw_name` or `raw`.
pub struct TarBuilder {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for TarBuilder {
    fn default() -> Self {
        TarBuilder::new()
    }
}

impl TarBuilder {
    pub fn new() -> Self {
        TarBuilder {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    /// A regular file, mode 0644.
    pub fn file(self, path: &str, data: &[u8]) -> Self {
        self.file_mode(path, data, 0o644)
    }

    /// A regular file with the given mode bits (setuid included, for hostile layers).
    pub fn file_mode(mut self, path: &str, data: &[u8], mode: u32) -> Self {
        let mut header = header(EntryType::Regular, mode, data.len() as u64);
        self.builder
            .append_data(&mut header, path, data)
            .unwrap_or_else(|e| panic!("tar file {path}: {e}"));
        self
    }

    /// A directory, mode 0755.
    pub fn dir(mut self, path: &str) -> Self {
        let mut header = header(EntryType::Directory, 0o755, 0);
        self.builder
            .append_data(&mut header, path, &[][..])
            .unwrap_or_else(|e| panic!("tar dir {path}: {e}"));
        self
    }

    /// A symlink `path -> target`; the target is written as is (absolute and `..` allowed).
    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.link(EntryType::Symlink, path, target)
    }

    /// A hardlink `path` to the archive entry `target` (as is, `..` and absolute allowed).
    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.link(EntryType::Link, path, target)
    }

    fn link(mut self, kind: EntryType, path: &str, target: &str) -> Self {
        // Symlink permissions are meaningless (lrwxrwxrwx); a hardlink shares its target's.
        let mode = if kind == EntryType::Symlink {
            0o777
        } else {
            0o644
        };
        let mut header = header(kind, mode, 0);
        self.builder
            .append_link(&mut header, path, target)
            .unwrap_or_else(|e| panic!("tar link {path} -> {target}: {e}"));
        self
    }

    /// A whiteout hiding `path` from lower layers: an empty `<parent>/.wh.<name>`.
    pub fn whiteout(self, path: &str) -> Self {
        let whiteout = match path.rsplit_once('/') {
            Some((parent, name)) => format!("{parent}/.wh.{name}"),
            None => format!(".wh.{path}"),
        };
        self.file(&whiteout, b"")
    }

    /// An opaque marker `<dir>/.wh..wh..opq`: hides everything lower layers put in `dir`.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{}/.wh..wh..opq", dir.trim_end_matches('/')), b"")
    }

    /// A character device node.
    pub fn char_device(mut self, path: &str, major: u32, minor: u32) -> Self {
        let mut header = header(EntryType::Char, 0o666, 0);
        header.set_device_major(major).expect("device major");
        header.set_device_minor(minor).expect("device minor");
        self.builder
            .append_data(&mut header, path, &[][..])
            .unwrap_or_else(|e| panic!("tar char device {path}: {e}"));
        self
    }

    /// A named pipe.
    pub fn fifo(mut self, path: &str) -> Self {
        let mut header = header(EntryType::Fifo, 0o644, 0);
        self.builder
            .append_data(&mut header, path, &[][..])
            .unwrap_or_else(|e| panic!("tar fifo {path}: {e}"));
        self
    }

    /// A PAX extended header (`x`) whose records apply to the next entry, e.g. `path`, `size`
    /// or `SCHILY.xattr.*`.
    pub fn pax(self, records: &[(&str, &[u8])]) -> Self {
        let data: Vec<u8> = records
            .iter()
            .flat_map(|(key, value)| pax_record(key, value))
            .collect();
        let mut header = Header::new_ustar();
        header.set_entry_type(EntryType::XHeader);
        header.set_path("PaxHeader").expect("PAX header name");
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_mtime(MTIME);
        header.set_cksum();
        self.raw(&header, &data)
    }

    /// An entry whose name field holds `name` byte for byte (at most 100 bytes), unchecked:
    /// for `../evil`, `/etc/evil`, `a\0b`, `C:/evil` and the like.
    pub fn raw_name(self, name: &[u8], kind: EntryType, data: &[u8]) -> Self {
        let mut header = header(kind, 0o644, data.len() as u64);
        let field = &mut header.as_old_mut().name;
        assert!(name.len() <= field.len(), "raw name longer than 100 bytes");
        field[..name.len()].copy_from_slice(name);
        header.set_cksum();
        self.raw(&header, data)
    }

    /// `header` and `data` verbatim: the checksum is not recomputed and the size not checked,
    /// so a test can write any header at all.
    pub fn raw(mut self, header: &Header, data: &[u8]) -> Self {
        self.builder.append(header, data).expect("tar raw entry");
        self
    }

    /// The archive, with its two zero blocks at the end.
    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().expect("finish tar")
    }
}

/// A tar holding `capi-operator-manifests/<profile>/{metadata,manifests}.yaml` for each
/// `(profile, metadata_yaml, manifests_yaml)`, with directory entries as image builders write.
pub fn provider_layer(profiles: &[(&str, &str, &str)]) -> Vec<u8> {
    let tar = TarBuilder::new().dir(&format!("{MANIFESTS_DIR}/"));
    profiles
        .iter()
        .fold(tar, |tar, (profile, metadata, manifests)| {
            let dir = format!("{MANIFESTS_DIR}/{profile}");
            tar.dir(&format!("{dir}/"))
                .file(&format!("{dir}/metadata.yaml"), metadata.as_bytes())
                .file(&format!("{dir}/manifests.yaml"), manifests.as_bytes())
        })
        .finish()
}

/// A GNU-format header (long names are then handled by the tar crate), owned by root.
fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(MTIME);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// One PAX record, `"<len> <key>=<value>\n"`, where `<len>` counts the whole record, itself
/// included.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=' and '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}
