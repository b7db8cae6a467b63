//! Layer blobs → the `capi-operator-manifests/` subtree that an image volume of the image would show.
//! Imports nothing else of the crate: bytes in, a subtree out.
//!
//! [`contribution`] turns one layer blob into what it contributes to the subtree, independently of
//! every other layer (so layers may be read in parallel); [`Subtree::apply`] then merges the
//! contributions lowest layer first. Nothing is written to disk here: file contents are held in
//! memory, bounded by [`Limits`], and the layer stream itself is never held whole.
//!
//! The tar framing is our own (see `tar_stream`): it follows Go's `archive/tar` — what the container
//! runtime reads — wherever parsers are known to disagree, and refuses what stays ambiguous.
//!
//! | threat | outcome |
//! |---|---|
//! | `../x`, `/x`, `a/../../x` or a NUL byte in a name, anywhere in the layer | hostile-layer error |
//! | the same in a hardlink target, anywhere in the layer | hostile-layer error |
//! | whiteout `.wh.`, `.wh..` or `.wh...`, anywhere in the layer | hostile-layer error |
//! | symlink at or under the subtree (root, profile directory or file) | error naming the path |
//! | device, fifo, sparse file or unknown entry type under the subtree | error naming the path |
//! | hardlink under the subtree to an earlier regular file under it | a regular file with that content |
//! | any other hardlink under the subtree (outside target, not a regular file) | error naming the path |
//! | anything outside the subtree (links, devices, …) | ignored, but read past |
//! | `.wh.<name>` / `.wh..wh..opq` | hide lower layers only, whatever their place in the layer |
//! | duplicate entries, file ↔ directory at one path | the later entry wins |
//! | file over `--max-file-size`; layer or merged subtree over `--max-image-size` | error naming the limit |
//! | more than 100 000 entries recorded for the subtree; a name over 4096 bytes there | error |
//! | stream inflating past max(8 GiB, 100 × compressed size) | error |
//! | body not starting with the declared compression's magic; truncated stream | error |
//! | GNU long name/link or PAX header over 1 MiB | error |
//! | PAX `x` record before a GNU `L` header | applies to the next real entry, as in Go |
//! | both a GNU long name and a PAX `path` (or long link and `linkpath`) for one entry | malformed-layer error |
//! | size field of links, devices, fifos and directories | ignored: they carry no data, as in Go |
//! | bytes after the end-of-archive marker | read (counted towards the inflate cap) and otherwise ignored |
//! | mode, owner, xattrs, times | ignored |

mod codec;
mod contribution;
mod decompress;
mod names;
mod subtree;
mod tar_stream;
#[cfg(test)]
pub(crate) mod testutil;

pub use contribution::{Contribution, contribution};
pub(crate) use contribution::{ListedEntry, from_listing, wants_data};
pub use decompress::Compression;
pub(crate) use subtree::Node;
pub use subtree::Subtree;
pub(crate) use tar_stream::Kind as EntryKind;

/// The directory of the image that this module extracts.
pub(crate) const SUBTREE: &str = "capi-operator-manifests";

/// Most entries a contribution, or the merged subtree, may hold: far more than any provider ships,
/// and few enough that a flood of empty entries cannot exhaust memory.
const MAX_ENTRIES: usize = 100_000;

/// Longest path accepted under the subtree: Linux's `PATH_MAX`, so a name the runtime could not
/// create is refused rather than kept in memory.
const MAX_PATH_LEN: usize = 4096;

/// Byte limits set on the command line.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest single file under the subtree (`--max-file-size`).
    pub max_file_size: u64,
    /// Largest sum of file sizes under the subtree, per layer and merged (`--max-image-size`).
    pub max_image_size: u64,
}

/// Why a layer could not be read or applied. Paths are shown as the tar names them; the caller adds
/// the image reference and the layer digest.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The layer tries to reach outside the image root, or is built to confuse parsers.
    #[error("hostile layer: entry \"{path}\" {reason}")]
    Hostile { path: String, reason: String },
    #[error("{path}: symlinks are not allowed under {SUBTREE}/")]
    Symlink { path: String },
    /// Devices, fifos, sparse files and entry types with no meaning for us.
    #[error("{path}: {kind} are not allowed under {SUBTREE}/")]
    Unsupported { path: String, kind: String },
    #[error("{path}: hardlink to \"{target}\" {reason}")]
    Hardlink {
        path: String,
        target: String,
        reason: &'static str,
    },
    #[error("{path}: {reason}")]
    BadName { path: String, reason: String },
    #[error("{path}: file exceeds --max-file-size ({limit} bytes)")]
    FileTooLarge { path: String, limit: u64 },
    #[error("{path}: the layer's files under {SUBTREE}/ exceed --max-image-size ({limit} bytes)")]
    LayerTooLarge { path: String, limit: u64 },
    #[error(
        "{SUBTREE}/ of the merged layers holds {total} bytes, over --max-image-size ({limit} bytes)"
    )]
    ImageTooLarge { total: u64, limit: u64 },
    #[error("{path}: more than {limit} entries under {SUBTREE}/")]
    TooManyEntries { path: String, limit: usize },
    #[error("layer inflates past {cap} bytes")]
    InflateCap { cap: u64 },
    #[error("{format} layer does not start with {format} magic")]
    MissingMagic { format: &'static str },
    #[error("uncompressed layer starts with {format} magic")]
    UnexpectedMagic { format: &'static str },
    #[error("{path}: {kind} header of {size} bytes exceeds the {limit}-byte cap")]
    HeaderTooLarge {
        path: String,
        kind: &'static str,
        size: u64,
        limit: u64,
    },
    /// Not a tar stream we can read unambiguously; `path` is the entry concerned, when there is one.
    #[error("malformed tar stream at byte {offset}{}: {reason}", at_entry(path))]
    Malformed {
        offset: u64,
        path: Option<String>,
        reason: String,
    },
    #[error("reading the {format} layer stream: {source}")]
    Read {
        format: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn at_entry(path: &Option<String>) -> String {
    path.as_ref()
        .map(|path| format!(" (entry \"{path}\")"))
        .unwrap_or_default()
}

impl LayerError {
    /// Errors travel through `Read` impls as `io::Error`; this recovers ours from them.
    fn from_io(error: std::io::Error, format: &'static str) -> LayerError {
        match error.downcast::<LayerError>() {
            Ok(ours) => ours,
            Err(source) => LayerError::Read { format, source },
        }
    }
}

/// A tar name as it may appear in a message: escaped, so control bytes cannot forge log lines,
/// and cut short, since a PAX name may be a megabyte long.
fn shown(name: &[u8]) -> String {
    const MAX_SHOWN: usize = 300;
    let text = String::from_utf8_lossy(name);
    match text.char_indices().nth(MAX_SHOWN) {
        Some((cut, _)) => format!("{}…", text[..cut].escape_debug()),
        None => text.escape_debug().to_string(),
    }
}
