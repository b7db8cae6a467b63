//! What one layer contributes to the subtree, read from its blob without looking at other layers.

use std::io::Read;
use std::sync::Arc;

use super::decompress::{self, Compression, inflate_cap};
use super::names::{Marker, clean, clean_or_hostile, in_subtree, relative, whiteout};
use super::tar_stream::{Entry, Kind, TarStream};
use super::{LayerError, Limits, MAX_ENTRIES, shown};

/// What one layer contributes to the subtree: the lower layers' paths it hides, then its own
/// entries in stream order. Cloning is cheap (shared).
#[derive(Debug, Clone)]
pub struct Contribution {
    pub(super) recorded: Arc<Recorded>,
}

#[derive(Debug, Default)]
pub(super) struct Recorded {
    pub(super) hidden: Vec<Hidden>,
    pub(super) steps: Vec<Step>,
}

/// What a whiteout hides of the lower layers; paths are relative to the subtree root.
#[derive(Debug)]
pub(super) enum Hidden {
    /// The path and everything below it ("" is the whole subtree).
    Path(String),
    /// Everything below the directory, which itself stays.
    Contents(String),
}

/// One entry under the subtree, in stream order.
#[derive(Debug)]
pub(super) struct Step {
    /// Relative to the subtree root ("" is the root). Messages at apply time name the path from
    /// this rather than keep the tar's spelling of it: half the memory for a layer of many entries.
    pub(super) path: String,
    pub(super) action: Action,
}

#[derive(Debug)]
pub(super) enum Action {
    Dir,
    File(Arc<[u8]>),
    /// Resolved when applied: the target may come from a lower layer. Relative like `path`.
    Hardlink {
        target: String,
    },
}

impl Contribution {
    #[cfg(test)]
    /// True when the layer neither hides nor adds anything under the subtree.
    pub(crate) fn is_empty(&self) -> bool {
        self.recorded.hidden.is_empty() && self.recorded.steps.is_empty()
    }

    /// Every path the layer names under the subtree: what it hides, adds, and links to. For
    /// `crate::fuzz`, which checks that none of them leaves the subtree.
    pub(crate) fn named_paths(&self) -> impl Iterator<Item = &str> {
        let hidden = self.recorded.hidden.iter().map(|hidden| match hidden {
            Hidden::Path(path) | Hidden::Contents(path) => path.as_str(),
        });
        let steps = self.recorded.steps.iter().flat_map(|step| {
            let target = match &step.action {
                Action::Hardlink { target } => Some(target.as_str()),
                Action::Dir | Action::File(_) => None,
            };
            [Some(step.path.as_str()), target].into_iter().flatten()
        });
        hidden.chain(steps)
    }

    pub(super) fn hidden(&self) -> &[Hidden] {
        &self.recorded.hidden
    }

    pub(super) fn steps(&self) -> &[Step] {
        &self.recorded.steps
    }
}

/// Caps that are constants in production and small in tests.
pub(super) struct Caps {
    pub(super) inflate: u64,
    pub(super) entries: usize,
}

/// Reads one layer blob (compressed bytes, as from the registry) **to its very end** — through the
/// tar end-of-archive and past it, draining the decompressor and then the raw reader, so that a
/// caller hashing the raw reader sees every byte. Returns what the layer contributes to the subtree.
///
/// Entries outside the subtree are read past and ignored, but a name anywhere in the layer that is
/// absolute, climbs above the root, holds a NUL or is a malformed whiteout fails the layer as
/// hostile. Duplicate entries are kept in stream order, so when applied the last one wins (as
/// containerd and moby do; the image spec forbids duplicates but does not say what a reader does).
/// Whiteouts hide only lower layers, wherever they stand in this one. On error, reading stops.
pub fn contribution<R: Read>(
    reader: R,
    compression: Compression,
    compressed_size: u64,
    limits: &Limits,
) -> Result<Contribution, LayerError> {
    let caps = Caps {
        inflate: inflate_cap(compressed_size),
        entries: MAX_ENTRIES,
    };
    read_layer(reader, compression, &caps, limits)
}

pub(super) fn read_layer<R: Read>(
    reader: R,
    compression: Compression,
    caps: &Caps,
    limits: &Limits,
) -> Result<Contribution, LayerError> {
    let mut stream = TarStream::new(decompress::open(reader, compression, caps.inflate)?);
    let mut recorder = Recorder {
        limits,
        max_entries: caps.entries,
        recorded: Recorded::default(),
        bytes: 0,
    };
    while let Some(entry) = stream.next_entry()? {
        recorder.entry(entry, &mut stream)?;
    }
    stream.into_inner().finish()?;
    Ok(Contribution {
        recorded: Arc::new(recorder.recorded),
    })
}

/// One entry of a layer as a table of contents lists it (zstd:chunked, eStargz) rather than as its
/// tar stream frames it: the name, link target and type the tar header would give, and the data
/// when it was fetched.
#[derive(Debug)]
pub(crate) struct ListedEntry {
    pub(crate) name: Vec<u8>,
    pub(crate) link: Vec<u8>,
    pub(crate) kind: Kind,
    /// The data's length, as the listing gives it.
    pub(crate) size: u64,
    /// The data, for the regular files whose data [`wants_data`] asks for (verified by the caller).
    pub(crate) data: Option<Arc<[u8]>>,
}

/// Whether [`from_listing`] needs the data of a regular file of this name: it lies under the
/// subtree and is no whiteout. The same test [`contribution`] applies to a tar entry.
pub(crate) fn wants_data(name: &[u8]) -> bool {
    clean(name).is_ok_and(|c| whiteout(&c) == Ok(None) && in_subtree(&c).is_some())
}

/// What a layer contributes, from the list of its entries in stream order instead of its tar
/// stream. Each entry goes through exactly the checks and recording of [`contribution`] (names
/// anywhere in the layer, types and links under the subtree, limits), so a listing that matches
/// the layer's tar gives the same contribution. A regular file whose data is wanted but missing,
/// or not `size` bytes long, fails the listing: it is never recorded short.
pub(crate) fn from_listing(
    entries: impl IntoIterator<Item = ListedEntry>,
    limits: &Limits,
) -> Result<Contribution, LayerError> {
    let mut recorder = Recorder {
        limits,
        max_entries: MAX_ENTRIES,
        recorded: Recorded::default(),
        bytes: 0,
    };
    for listed in entries {
        let (data, missing) = match &listed.data {
            Some(data) if data.len() as u64 != listed.size => {
                return Err(unlisted(&listed, "the data is not the listed size"));
            }
            Some(data) => (&data[..], None),
            None if listed.size == 0 => (&[][..], None),
            None => (&[][..], Some(unlisted(&listed, "the data was not fetched"))),
        };
        let entry = Entry {
            name: listed.name,
            link: listed.link,
            kind: listed.kind,
            size: listed.size,
        };
        recorder.entry(entry, &mut ListedData { data, missing })?;
    }
    Ok(Contribution {
        recorded: Arc::new(recorder.recorded),
    })
}

fn unlisted(listed: &ListedEntry, reason: &str) -> LayerError {
    LayerError::Read {
        format: "listed",
        source: std::io::Error::other(format!("{}: {reason}", shown(&listed.name))),
    }
}

/// A listed entry's data, or why there is none, which only a read brings out: the recorder reads
/// exactly the data it records.
struct ListedData<'a> {
    data: &'a [u8],
    missing: Option<LayerError>,
}

impl Read for ListedData<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.missing.take() {
            // `LayerError::from_io` unwraps it again.
            Some(error) => Err(std::io::Error::other(error)),
            None => self.data.read(buf),
        }
    }
}

struct Recorder<'l> {
    limits: &'l Limits,
    max_entries: usize,
    recorded: Recorded,
    /// Sum of the file sizes recorded.
    bytes: u64,
}

impl Recorder<'_> {
    fn entry(&mut self, entry: Entry, data: &mut impl Read) -> Result<(), LayerError> {
        let name = clean_or_hostile(&entry.name)?;
        // Checked wherever the link stands: a hostile target marks a hostile layer.
        let target = match entry.kind {
            Kind::Hardlink => clean(&entry.link).map_err(|reason| LayerError::Hostile {
                path: shown(&entry.name),
                reason: format!("links to \"{}\", which {reason}", shown(&entry.link)),
            })?,
            _ => Vec::new(),
        };
        let marker = whiteout(&name).map_err(|reason| LayerError::Hostile {
            path: shown(&entry.name),
            reason: reason.to_owned(),
        })?;
        if let Some(marker) = marker {
            return self.whiteout(marker, &name, &entry.name);
        }
        let Some(below) = in_subtree(&name) else {
            return Ok(());
        };
        let path = relative(below, &entry.name)?;
        let shown_name = shown(&entry.name);
        let unsupported = |kind: &str| LayerError::Unsupported {
            path: shown_name.clone(),
            kind: kind.to_owned(),
        };
        let action = match entry.kind {
            Kind::File => Action::File(self.read_file(entry.size, &shown_name, data)?),
            Kind::Dir => Action::Dir,
            Kind::Hardlink => {
                let shown_target = shown(&entry.link);
                let Some(target_below) = in_subtree(&target) else {
                    return Err(LayerError::Hardlink {
                        path: shown_name,
                        target: shown_target,
                        reason: "points outside capi-operator-manifests/",
                    });
                };
                Action::Hardlink {
                    target: relative(target_below, &entry.link)?,
                }
            }
            Kind::Symlink => return Err(LayerError::Symlink { path: shown_name }),
            Kind::CharDevice => return Err(unsupported("character devices")),
            Kind::BlockDevice => return Err(unsupported("block devices")),
            Kind::Fifo => return Err(unsupported("fifos")),
            Kind::Sparse => return Err(unsupported("sparse files")),
            Kind::Other(typeflag) => {
                return Err(unsupported(&format!(
                    "entries of tar type {:?}",
                    typeflag as char
                )));
            }
        };
        self.record(Step { path, action }, &shown_name)
    }

    fn read_file(
        &mut self,
        size: u64,
        shown_name: &str,
        data: &mut impl Read,
    ) -> Result<Arc<[u8]>, LayerError> {
        let too_large = || LayerError::FileTooLarge {
            path: shown_name.to_owned(),
            limit: self.limits.max_file_size,
        };
        if size > self.limits.max_file_size {
            return Err(too_large());
        }
        if self.bytes.saturating_add(size) > self.limits.max_image_size {
            return Err(LayerError::LayerTooLarge {
                path: shown_name.to_owned(),
                limit: self.limits.max_image_size,
            });
        }
        // Grown as the data arrives: a header may promise bytes the stream never delivers.
        let mut content = Vec::with_capacity(size.min(1 << 20) as usize);
        data.take(self.limits.max_file_size.saturating_add(1))
            .read_to_end(&mut content)
            .map_err(|e| LayerError::from_io(e, "tar"))?;
        if content.len() as u64 > self.limits.max_file_size {
            return Err(too_large());
        }
        self.bytes += content.len() as u64;
        Ok(content.into())
    }

    /// Records what a whiteout hides, if it touches the subtree. Its directory exists in this layer
    /// (an overlay upper layer holds the whiteout inside it), so that is recorded too.
    fn whiteout(
        &mut self,
        marker: Marker<'_>,
        name: &[&[u8]],
        raw: &[u8],
    ) -> Result<(), LayerError> {
        let parent = &name[..name.len() - 1];
        let hidden = match marker {
            // At the image root, an opaque marker hides the lower subtree along with the rest.
            Marker::Opaque if parent.is_empty() => Some(Hidden::Path(String::new())),
            Marker::Opaque => in_subtree(parent)
                .map(|below| relative(below, raw))
                .transpose()?
                .map(Hidden::Contents),
            // A name we could not have stored (not UTF-8, too long) hides nothing.
            Marker::Remove(target) => in_subtree(&target)
                .and_then(|below| relative(below, raw).ok())
                .map(Hidden::Path),
            Marker::Meta => None,
        };
        if let Some(hidden) = hidden {
            self.count(&shown(raw))?;
            self.recorded.hidden.push(hidden);
        }
        if let Some(below) = in_subtree(parent) {
            let path = relative(below, raw)?;
            self.record(
                Step {
                    path,
                    action: Action::Dir,
                },
                &shown(raw),
            )?;
        }
        Ok(())
    }

    fn record(&mut self, step: Step, shown_name: &str) -> Result<(), LayerError> {
        self.count(shown_name)?;
        self.recorded.steps.push(step);
        Ok(())
    }

    fn count(&self, shown_name: &str) -> Result<(), LayerError> {
        if self.recorded.hidden.len() + self.recorded.steps.len() >= self.max_entries {
            return Err(LayerError::TooManyEntries {
                path: shown_name.to_owned(),
                limit: self.max_entries,
            });
        }
        Ok(())
    }
}

impl Contribution {
    /// Whether reading the layer under `limits` would have kept every file (the limits a layer is
    /// checked against are its largest file and the sum of its files).
    pub(crate) fn fits(&self, limits: &Limits) -> bool {
        let mut total = 0u64;
        for step in &self.recorded.steps {
            if let Action::File(content) = &step.action {
                let size = content.len() as u64;
                if size > limits.max_file_size {
                    return false;
                }
                total += size;
            }
        }
        total <= limits.max_image_size
    }
}

#[cfg(test)]
impl Contribution {
    pub(super) fn from_parts(hidden: Vec<Hidden>, steps: Vec<Step>) -> Contribution {
        Contribution {
            recorded: Arc::new(Recorded { hidden, steps }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::testutil::*;

    const M: &str = "capi-operator-manifests";

    fn error(tar: Vec<u8>) -> String {
        layer(&tar).unwrap_err().to_string()
    }

    fn merged(tars: &[Vec<u8>]) -> Vec<String> {
        listing(&merge(tars).unwrap())
    }

    fn tar(build: impl FnOnce(&mut TarWriter)) -> Vec<u8> {
        let mut writer = TarWriter::new();
        build(&mut writer);
        writer.finish()
    }

    fn profile() -> Vec<u8> {
        tar(|t| {
            t.dir(&format!("{M}/"));
            t.dir(&format!("{M}/p/"));
            t.file(&format!("{M}/p/metadata.yaml"), b"meta");
            t.file(&format!("{M}/p/manifests.yaml"), b"manifests");
        })
    }

    #[test]
    fn only_the_subtree_is_recorded() {
        let layer = layer(&tar(|t| {
            t.dir("etc/");
            t.file("etc/passwd", b"root");
            t.symlink("etc/localtime", "/usr/share/zoneinfo/UTC");
            t.raw(b'3', b"dev/null", b"", 0, b"");
            t.hardlink("etc/passwd-", "etc/passwd");
            t.file("capi-operator-manifests-old/p/x", b"no");
            t.file("usr/capi-operator-manifests/p/x", b"no");
            t.file("etc/big", &vec![0; LIMITS.max_file_size as usize + 1]);
            t.file("etc/.wh.shadow", b"");
            t.file("etc/.wh..wh..opq", b"");
        }))
        .unwrap();
        assert!(layer.is_empty());
        assert_eq!(
            merged(&[profile()]),
            ["p/", "p/manifests.yaml=manifests", "p/metadata.yaml=meta"]
        );
    }

    #[test]
    fn names_are_cleaned() {
        let layer = tar(|t| {
            t.file(&format!("./{M}/p/x"), b"1");
            t.file(&format!("{M}//q/./y"), b"2");
            t.file(&format!("{M}/r/z/../w"), b"3");
            t.file(&format!("etc/../{M}/s"), b"4");
        });
        assert_eq!(
            merged(&[layer]),
            ["p/", "p/x=1", "q/", "q/y=2", "r/", "r/w=3", "s=4"]
        );
    }

    #[test]
    fn hostile_names_fail_the_layer_anywhere() {
        for (name, reason) in [
            ("../evil", "escapes the image root"),
            ("/etc/evil", "is an absolute path"),
            ("a/../../evil", "escapes the image root"),
            (
                "capi-operator-manifests/../../evil",
                "escapes the image root",
            ),
        ] {
            let layer = tar(|t| {
                t.file("capi-operator-manifests/p/metadata.yaml", b"meta");
                t.file(name, b"evil");
            });
            assert_eq!(
                error(layer),
                format!("hostile layer: entry \"{name}\" {reason}")
            );
        }
        let layer = tar(|t| {
            t.pax(&[("path", b"a\0b")]);
            t.file("ok", b"");
        });
        assert_eq!(
            error(layer),
            "hostile layer: entry \"a\\0b\" contains a NUL byte"
        );
        let layer = tar(|t| {
            t.long_name(b"capi-operator-manifests/a\0b\0");
            t.file("ok", b"");
        });
        assert_eq!(
            error(layer),
            "hostile layer: entry \"capi-operator-manifests/a\\0b\" contains a NUL byte"
        );
    }

    #[test]
    fn a_pax_path_is_checked_like_any_name() {
        let layer = tar(|t| {
            t.pax(&[("path", b"../../evil")]);
            t.file("capi-operator-manifests/ok.yaml", b"");
        });
        assert_eq!(
            error(layer),
            "hostile layer: entry \"../../evil\" escapes the image root"
        );
    }

    #[test]
    fn pax_paths_and_gnu_long_names_place_entries() {
        let long = "l".repeat(150);
        let layer = tar(|t| {
            t.pax(&[
                ("path", format!("{M}/p/{long}.yaml").as_bytes()),
                ("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02"),
                ("uid", b"0"),
            ]);
            t.file("short", b"pax");
            t.long_name(format!("{M}/q/{long}.yaml").as_bytes());
            t.file("short", b"gnu");
            t.pax(&[("size", b"5")]);
            t.raw(b'0', format!("{M}/r/sized").as_bytes(), b"", 1, b"sized");
        });
        assert_eq!(
            merged(&[layer]),
            [
                "p/".to_owned(),
                format!("p/{long}.yaml=pax"),
                "q/".to_owned(),
                format!("q/{long}.yaml=gnu"),
                "r/".to_owned(),
                "r/sized=sized".to_owned(),
            ]
        );
    }

    #[test]
    fn duplicates_last_wins() {
        let layer = tar(|t| {
            t.file(&format!("{M}/p/x.yaml"), b"A");
            t.file(&format!("{M}/p/x.yaml"), b"B");
            t.file(&format!("{M}/p/d"), b"file first");
            t.dir(&format!("{M}/p/d/"));
            t.raw(b'\0', format!("{M}/p/e/").as_bytes(), b"", 0, b"");
        });
        assert_eq!(merged(&[layer]), ["p/", "p/d/", "p/e/", "p/x.yaml=B"]);
    }

    #[test]
    fn symlinks_under_the_subtree_fail() {
        for name in [
            M,
            "capi-operator-manifests/p",
            "capi-operator-manifests/p/metadata.yaml",
        ] {
            let layer = tar(|t| {
                t.dir(&format!("{M}/"));
                t.symlink(name, "/tmp");
            });
            assert_eq!(
                error(layer),
                format!("{name}: symlinks are not allowed under capi-operator-manifests/")
            );
        }
        let layer = tar(|t| {
            t.symlink(&format!("./{M}"), "/tmp");
            t.file(&format!("{M}/x.yaml"), b"through the link");
        });
        assert_eq!(
            error(layer),
            "./capi-operator-manifests: symlinks are not allowed under capi-operator-manifests/"
        );
    }

    #[test]
    fn devices_fifos_sparse_and_unknown_types_under_the_subtree_fail() {
        for (typeflag, kind) in [
            (b'3', "character devices"),
            (b'4', "block devices"),
            (b'6', "fifos"),
            (b'V', "entries of tar type 'V'"),
        ] {
            let layer = tar(|t| t.raw(typeflag, b"capi-operator-manifests/p/null", b"", 0, b""));
            assert_eq!(
                error(layer),
                format!(
                    "capi-operator-manifests/p/null: {kind} are not allowed under capi-operator-manifests/"
                )
            );
        }
        let layer = tar(|t| {
            t.pax(&[
                ("GNU.sparse.major", b"1"),
                ("GNU.sparse.name", b"capi-operator-manifests/p/s"),
            ]);
            t.file("GNUSparseFile.0/s", b"");
        });
        assert_eq!(
            error(layer),
            "capi-operator-manifests/p/s: sparse files are not allowed under capi-operator-manifests/"
        );
    }

    #[test]
    fn hardlinks_copy_an_earlier_file_of_the_subtree() {
        let layer = tar(|t| {
            t.file(&format!("{M}/p/metadata.yaml"), b"meta");
            t.hardlink(
                &format!("{M}/q/metadata.yaml"),
                &format!("./{M}/p/metadata.yaml"),
            );
        });
        assert_eq!(
            merged(&[layer]),
            ["p/", "p/metadata.yaml=meta", "q/", "q/metadata.yaml=meta"]
        );
        let upper =
            tar(|t| t.hardlink(&format!("{M}/p/copy.yaml"), &format!("{M}/p/metadata.yaml")));
        assert_eq!(
            merged(&[profile(), upper]),
            [
                "p/",
                "p/copy.yaml=meta",
                "p/manifests.yaml=manifests",
                "p/metadata.yaml=meta"
            ]
        );
    }

    #[test]
    fn hardlinks_to_anything_else_fail() {
        let layer = tar(|t| {
            t.file("etc/passwd", b"root");
            t.hardlink(&format!("{M}/p/passwd"), "etc/passwd");
        });
        assert_eq!(
            error(layer),
            "capi-operator-manifests/p/passwd: hardlink to \"etc/passwd\" points outside capi-operator-manifests/"
        );
        for target in [
            format!("{M}/p"),
            format!("{M}/p/later"),
            format!("{M}/p/missing"),
        ] {
            let layer = tar(|t| {
                t.dir(&format!("{M}/p/"));
                t.hardlink(&format!("{M}/p/h"), &target);
                t.file(&format!("{M}/p/later"), b"too late");
            });
            let err = merge(&[layer]).unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "capi-operator-manifests/p/h: hardlink to \"{target}\" is not an earlier regular file under capi-operator-manifests/"
                )
            );
        }
        // A file whited out by the same layer is gone by the time the link is applied.
        let upper = tar(|t| {
            t.file(&format!("{M}/p/.wh.metadata.yaml"), b"");
            t.hardlink(&format!("{M}/p/h"), &format!("{M}/p/metadata.yaml"));
        });
        assert!(merge(&[profile(), upper]).is_err());
    }

    #[test]
    fn hostile_hardlink_targets_fail_the_layer_anywhere() {
        for (name, target, reason) in [
            (
                "capi-operator-manifests/p/h",
                "../../etc/passwd",
                "escapes the image root",
            ),
            (
                "capi-operator-manifests/p/h",
                "/etc/passwd",
                "is an absolute path",
            ),
            ("etc/mypasswd", "../../etc/passwd", "escapes the image root"),
            ("etc/mypasswd", "/etc/passwd", "is an absolute path"),
        ] {
            let layer = tar(|t| t.hardlink(name, target));
            assert_eq!(
                error(layer),
                format!("hostile layer: entry \"{name}\" links to \"{target}\", which {reason}")
            );
        }
    }

    #[test]
    fn whiteouts_hide_lower_layers() {
        let upper = tar(|t| t.file(&format!("{M}/p/.wh.metadata.yaml"), b""));
        assert_eq!(
            merged(&[profile(), upper]),
            ["p/", "p/manifests.yaml=manifests"]
        );
        let upper = tar(|t| t.file(&format!("{M}/.wh.p"), b""));
        assert_eq!(merged(&[profile(), upper]), Vec::<String>::new());
        let upper = tar(|t| t.file(&format!("{M}/p/.wh.absent"), b""));
        assert_eq!(
            merged(&[profile(), upper]),
            ["p/", "p/manifests.yaml=manifests", "p/metadata.yaml=meta"]
        );
        let upper = tar(|t| t.file(&format!("{M}/p/.wh..wh.plnk"), b""));
        assert_eq!(
            merged(&[profile(), upper]),
            ["p/", "p/manifests.yaml=manifests", "p/metadata.yaml=meta"]
        );
    }

    #[test]
    fn whiteouts_never_hide_their_own_layer() {
        let layer = tar(|t| {
            t.file(&format!("{M}/p/x.yaml"), b"new");
            t.file(&format!("{M}/p/.wh.x.yaml"), b"");
        });
        assert_eq!(merged(std::slice::from_ref(&layer)), ["p/", "p/x.yaml=new"]);
        let lower = tar(|t| t.file(&format!("{M}/p/x.yaml"), b"old"));
        assert_eq!(merged(&[lower, layer]), ["p/", "p/x.yaml=new"]);
    }

    #[test]
    fn opaque_directories_hide_lower_contents_wherever_the_marker_is() {
        let lower = tar(|t| {
            t.file(&format!("{M}/m/a.yaml"), b"a");
            t.file(&format!("{M}/m/b.yaml"), b"b");
            t.file(&format!("{M}/n/keep.yaml"), b"keep");
        });
        let upper = tar(|t| {
            t.file(&format!("{M}/m/c.yaml"), b"c");
            t.file(&format!("{M}/m/.wh..wh..opq"), b"");
        });
        assert_eq!(
            merged(&[lower, upper]),
            ["m/", "m/c.yaml=c", "n/", "n/keep.yaml=keep"]
        );
    }

    #[test]
    fn whiteouts_at_the_image_root_remove_the_subtree() {
        for marker in [".wh.capi-operator-manifests", "./.wh..wh..opq"] {
            let upper = tar(|t| t.file(marker, b""));
            let subtree = merge(&[profile(), upper]).unwrap();
            assert!(!subtree.exists(), "{marker}");
            assert_eq!(listing(&subtree), Vec::<String>::new());
            assert_eq!(subtree.total_bytes(), 0);
            let upper = tar(|t| {
                t.file(&format!("{M}/q/new.yaml"), b"new");
                t.file(marker, b"");
            });
            assert_eq!(
                merged(&[profile(), upper]),
                ["q/", "q/new.yaml=new"],
                "{marker}"
            );
        }
        let upper = tar(|t| t.file(".wh.etc", b""));
        assert_eq!(
            merged(&[profile(), upper]),
            ["p/", "p/manifests.yaml=manifests", "p/metadata.yaml=meta"]
        );
    }

    #[test]
    fn a_whiteout_entry_implies_its_directory() {
        let subtree = merge(&[tar(|t| t.file(&format!("{M}/p/.wh.gone"), b""))]).unwrap();
        assert!(subtree.exists());
        assert_eq!(listing(&subtree), ["p/"]);
    }

    #[test]
    fn nameless_whiteouts_are_hostile_anywhere() {
        for name in [
            ".wh..",
            "etc/.wh.",
            "etc/.wh..",
            "capi-operator-manifests/p/.wh...",
        ] {
            let layer = tar(|t| t.file(name, b""));
            assert_eq!(
                error(layer),
                format!(
                    "hostile layer: entry \"{name}\" is a whiteout of no name, of its directory or of its parent"
                )
            );
        }
    }

    #[test]
    fn file_size_limit() {
        let max = LIMITS.max_file_size as usize;
        let layer = tar(|t| t.file(&format!("{M}/p/big"), &vec![b'x'; max]));
        assert_eq!(merge(&[layer]).unwrap().total_bytes(), max as u64);
        let layer = tar(|t| t.file(&format!("{M}/p/big"), &vec![b'x'; max + 1]));
        assert_eq!(
            error(layer),
            "capi-operator-manifests/p/big: file exceeds --max-file-size (1048576 bytes)"
        );
        // Refused on the header alone: the terabyte is never there to read.
        let layer = tar(|t| {
            t.pax(&[("size", b"1099511627776")]);
            t.raw(b'0', b"capi-operator-manifests/p/huge", b"", 0, b"");
        });
        assert_eq!(
            error(layer),
            "capi-operator-manifests/p/huge: file exceeds --max-file-size (1048576 bytes)"
        );
    }

    #[test]
    fn layer_size_limit() {
        let chunk = vec![b'x'; LIMITS.max_file_size as usize];
        let layer = tar(|t| {
            for i in 0..5 {
                t.file(&format!("{M}/p/{i}"), &chunk);
            }
        });
        assert_eq!(
            error(layer),
            "capi-operator-manifests/p/4: the layer's files under capi-operator-manifests/ exceed --max-image-size (4194304 bytes)"
        );
    }

    #[test]
    fn entry_cap() {
        let caps = Caps {
            inflate: u64::MAX,
            entries: 3,
        };
        let three = tar(|t| {
            t.dir(&format!("{M}/"));
            t.dir(&format!("{M}/a/"));
            t.file(&format!("{M}/.wh.b"), b"");
        });
        assert!(read_layer(&three[..], Compression::None, &caps, &LIMITS).is_err());
        let three = tar(|t| {
            t.dir(&format!("{M}/"));
            t.dir(&format!("{M}/a/"));
            t.dir(&format!("{M}/b/"));
        });
        assert!(read_layer(&three[..], Compression::None, &caps, &LIMITS).is_ok());
        let four = tar(|t| {
            t.dir(&format!("{M}/"));
            t.dir(&format!("{M}/a/"));
            t.dir(&format!("{M}/b/"));
            t.dir(&format!("{M}/c/"));
        });
        let err = read_layer(&four[..], Compression::None, &caps, &LIMITS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "capi-operator-manifests/c/: more than 3 entries under capi-operator-manifests/"
        );
    }

    #[test]
    fn names_under_the_subtree_must_be_storable() {
        let blob = tar(|t| t.file("capi-operator-manifests/p/\u{7f}\u{1b}[31m", b""));
        assert_eq!(merged(&[blob]), ["p/", "p/\u{7f}\u{1b}[31m="]);
        let blob = tar(|t| t.raw(b'0', b"capi-operator-manifests/p/\xff", b"", 0, b""));
        assert_eq!(
            error(blob),
            "capi-operator-manifests/p/\u{fffd}: name is not valid UTF-8"
        );
        let outside = tar(|t| t.raw(b'0', b"etc/\xff", b"", 0, b""));
        assert!(layer(&outside).unwrap().is_empty());
    }

    #[test]
    fn a_tar_crate_built_layer() {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in [
            ("./capi-operator-manifests/p/metadata.yaml", &b"meta"[..]),
            ("./capi-operator-manifests/p/manifests.yaml", b"manifests"),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o4755);
            header.set_uid(0);
            builder.append_data(&mut header, path, data).unwrap();
        }
        let blob = gzip(&builder.into_inner().unwrap());
        assert_eq!(
            listing_of(&[(blob, Compression::Gzip)]),
            ["p/", "p/manifests.yaml=manifests", "p/metadata.yaml=meta"]
        );
    }

    /// The layer as a table of contents would list it: every entry of its tar, with the data of
    /// those `wants_data` names.
    fn listed(tar: &[u8]) -> Vec<ListedEntry> {
        let mut stream = TarStream::new(tar);
        let mut entries = Vec::new();
        while let Some(entry) = stream.next_entry().unwrap() {
            let data = (entry.kind == Kind::File && wants_data(&entry.name)).then(|| {
                let mut data = Vec::new();
                stream.read_to_end(&mut data).unwrap();
                Arc::from(data)
            });
            entries.push(ListedEntry {
                name: entry.name,
                link: entry.link,
                kind: entry.kind,
                size: entry.size,
                data,
            });
        }
        entries
    }

    #[test]
    fn a_listing_contributes_what_the_tar_does() {
        let layers = [
            profile(),
            tar(|t| {
                t.dir("etc/");
                t.file("etc/passwd", b"root");
                t.file(&format!("./{M}/p/x"), b"1");
                t.file(&format!("{M}//q/./y"), b"2");
                t.file(&format!("etc/../{M}/s"), b"4");
                t.file(&format!("{M}/p/x"), b"last wins");
                t.file(&format!("{M}/p/.wh.metadata.yaml"), b"");
                t.file(&format!("{M}/m/.wh..wh..opq"), b"");
                t.file(".wh.etc", b"");
                t.hardlink(&format!("{M}/p/h"), &format!("{M}/p/x"));
                t.file(&format!("{M}/p/empty"), b"");
            }),
            tar(|t| t.file("./.wh..wh..opq", b"")),
            // Refused alike: a symlink, a device, a hostile name, a hardlink out of the subtree.
            tar(|t| t.symlink(&format!("{M}/p"), "/etc")),
            tar(|t| t.raw(b'3', format!("{M}/null").as_bytes(), b"", 0, b"")),
            tar(|t| t.file("../evil", b"")),
            tar(|t| t.hardlink(&format!("{M}/passwd"), "etc/passwd")),
            tar(|t| {
                t.file(
                    &format!("{M}/big"),
                    &vec![b'x'; LIMITS.max_file_size as usize + 1],
                )
            }),
        ];
        for tar in layers {
            let full = layer(&tar)
                .map(|c| format!("{c:?}"))
                .map_err(|e| e.to_string());
            let listed = from_listing(listed(&tar), &LIMITS)
                .map(|c| format!("{c:?}"))
                .map_err(|e| e.to_string());
            assert_eq!(listed, full);
        }
    }

    #[test]
    fn a_listed_file_under_the_subtree_needs_all_its_data() {
        let file = |data: Option<&[u8]>, size| ListedEntry {
            name: format!("{M}/p/x.yaml").into_bytes(),
            link: Vec::new(),
            kind: Kind::File,
            size,
            data: data.map(Arc::from),
        };
        let error = |entry| from_listing([entry], &LIMITS).unwrap_err().to_string();
        assert_eq!(
            error(file(None, 3)),
            "reading the listed layer stream: capi-operator-manifests/p/x.yaml: the data was not fetched"
        );
        assert_eq!(
            error(file(Some(b"ab"), 3)),
            "reading the listed layer stream: capi-operator-manifests/p/x.yaml: the data is not the listed size"
        );
        let empty = from_listing([file(None, 0)], &LIMITS).unwrap();
        assert_eq!(
            format!("{empty:?}"),
            format!(
                "{:?}",
                layer(&tar(|t| t.file(&format!("{M}/p/x.yaml"), b""))).unwrap()
            )
        );
        // Outside the subtree nothing is read, so nothing need be fetched.
        let outside = ListedEntry {
            name: b"usr/bin/manager".to_vec(),
            link: Vec::new(),
            kind: Kind::File,
            size: 1 << 30,
            data: None,
        };
        assert!(from_listing([outside], &LIMITS).unwrap().is_empty());
    }

    #[test]
    fn data_is_wanted_for_files_under_the_subtree_only() {
        for name in [
            "capi-operator-manifests/p/x",
            "./capi-operator-manifests/p/x",
            "etc/../capi-operator-manifests/x",
        ] {
            assert!(wants_data(name.as_bytes()), "{name}");
        }
        for name in [
            "etc/passwd",
            "capi-operator-manifests-old/x",
            "capi-operator-manifests/p/.wh.x",
            "capi-operator-manifests/.wh..wh..opq",
            "../capi-operator-manifests/x",
            "/capi-operator-manifests/x",
        ] {
            assert!(!wants_data(name.as_bytes()), "{name}");
        }
    }

    fn round_trip(layer: &Contribution) -> Contribution {
        let mut encoded = Vec::new();
        layer.encode(&mut encoded);
        Contribution::decode(&encoded).expect("decodes what it encoded")
    }

    #[test]
    fn a_decoded_contribution_applies_as_the_original() {
        let lower = layer(&profile()).unwrap();
        let upper = layer(&tar(|t| {
            t.file(&format!("{M}/p/.wh.metadata.yaml"), b"");
            t.file(&format!("{M}/q/.wh..wh..opq"), b"");
            t.hardlink(
                &format!("{M}/p/copy.yaml"),
                &format!("{M}/p/manifests.yaml"),
            );
            t.file(&format!("{M}/p/new.yaml"), &[0xff, 0, 1]);
        }))
        .unwrap();
        let apply = |layers: &[&Contribution]| {
            let mut subtree = crate::layers::Subtree::new();
            for layer in layers {
                subtree.apply(layer, &LIMITS).unwrap();
            }
            listing(&subtree)
        };
        let expected = apply(&[&lower, &upper]);
        assert_eq!(
            expected,
            [
                "p/",
                "p/copy.yaml=manifests",
                "p/manifests.yaml=manifests",
                "p/new.yaml=\u{fffd}\0\u{1}",
                "q/"
            ]
        );
        assert_eq!(apply(&[&round_trip(&lower), &round_trip(&upper)]), expected);
        assert!(round_trip(&layer(&tar(|_| {})).unwrap()).is_empty());
    }

    #[test]
    fn decoding_refuses_every_truncation_trailing_bytes_and_unclean_paths() {
        let mut encoded = Vec::new();
        layer(&profile()).unwrap().encode(&mut encoded);
        for len in 0..encoded.len() {
            assert!(Contribution::decode(&encoded[..len]).is_none(), "{len}");
        }
        let mut longer = encoded.clone();
        longer.push(0);
        assert!(Contribution::decode(&longer).is_none());
        for path in ["../x", "/x", "p//x", "p/./x", "p/"] {
            let layer = Contribution::from_parts(
                Vec::new(),
                vec![Step {
                    path: path.to_string(),
                    action: Action::Dir,
                }],
            );
            let mut encoded = Vec::new();
            layer.encode(&mut encoded);
            assert!(Contribution::decode(&encoded).is_none(), "{path}");
        }
    }

    #[test]
    fn a_contribution_fits_limits_over_its_largest_file_and_its_total() {
        let layer = layer(&tar(|t| {
            t.file(&format!("{M}/p/a"), &[1; 100]);
            t.file(&format!("{M}/p/b"), &[2; 50]);
        }))
        .unwrap();
        let limits = |file, image| Limits {
            max_file_size: file,
            max_image_size: image,
        };
        assert!(layer.fits(&limits(100, 150)));
        assert!(!layer.fits(&limits(99, 150)));
        assert!(!layer.fits(&limits(100, 149)));
    }
}
