//! Writing the output tree and `index.json` atomically. Knows nothing of images or of index.json's
//! content, and imports nothing else of the crate but the calendar arithmetic in `time`.
//!
//! `<out>` may be a mount point (an emptyDir or a PVC), so the tree cannot be swapped by renaming `<out>`
//! itself; the swap happens inside it, the way the kubelet's AtomicWriter updates ConfigMap volumes:
//!
//! ```text
//! <out>/
//!   index.json     -> ..data/index.json
//!   <volume-name>  -> ..data/<volume-name>
//!   ..data         -> ..2026_11_24_10_00_00.123456789
//!   ..2026_11_24_10_00_00.123456789/
//!   ..lock
//! ```
//!
//! Readers only ever go through `..data`, a relative symlink replaced with one `rename(2)`, so they see the
//! whole old payload or the whole new one. Every link is relative because the volume is mounted at
//! different paths in different containers. The visible links are created and removed around the swap so
//! that a visible name is always either resolvable in the tree `..data` points to or dangling, and a dangling
//! name reads as "not in this tree" (see [`Publisher::commit`]).
//!
//! Crash safety: everything a crashed run can leave behind is `..`-prefixed (a payload directory, the
//! `..data_tmp` link) or a visible link into `..data/`; [`Publisher::open`] and [`Publisher::commit`]
//! clean those up. Entries the tool did not create are never touched.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use crate::time::civil_from_days;

mod files;

use files::{DIR_MODE, FILE_MODE, remove_file_if_exists, set_dir_mode, sync_dir, sync_tree};
pub(crate) use files::{make_dir, write_file};

/// The symlink readers go through; replaced atomically on every publish.
const DATA_LINK: &str = "..data";
/// The new `..data` is built under this name and renamed over `..data`.
const DATA_TMP_LINK: &str = "..data_tmp";
/// flock'ed for the lifetime of a [`Publisher`] so two runs on one volume do not interleave.
const LOCK_FILE: &str = "..lock";
/// The prefix of every visible link's target; identifies links this tool created.
const VISIBLE_TARGET_PREFIX: &[u8] = b"..data/";
/// Every name the tool owns in `<out>` starts with this, which is also why payloads may not use it.
const RESERVED_PREFIX: &[u8] = b"..";
/// See [`failpoint`]; release builds (outside tests) have no fail points, hence no use for the name.
#[cfg(any(debug_assertions, test))]
const FAILPOINT_ENV: &str = "PROVIDER_IMAGES_FAILPOINT";
/// How often a blocked [`Publisher::open`] retries the lock: short next to any sensible timeout, long
/// enough not to spin.
const LOCK_POLL_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    /// A filesystem operation failed; `action` says which ("creating directory", "renaming", ...).
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the lock {path} is held by another run; gave up after {waited:?}")]
    LockTimeout { path: PathBuf, waited: Duration },
    #[error("invalid path {rel:?} under {dir}: {reason}")]
    InvalidPath {
        dir: PathBuf,
        rel: String,
        reason: &'static str,
    },
    #[error("{path} was not staged by this publisher")]
    NotStaged { path: PathBuf },
    /// Something the tool did not create sits where the tool needs to write; it is never replaced.
    #[error("{path} {reason}; it was not created by provider-images and is left alone")]
    Foreign { path: PathBuf, reason: &'static str },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PublishError {
    let path = path.to_path_buf();
    move |source| PublishError::Io {
        action,
        path,
        source,
    }
}

/// Exclusive publisher of one `<out>` directory; holds `<out>/..lock` for its lifetime.
#[derive(Debug)]
pub(crate) struct Publisher {
    out: PathBuf,
    /// Closing this file releases the flock, so it must live as long as the publisher (and it does: fields
    /// are dropped after [`Drop::drop`] has cleaned up).
    _lock: File,
    /// Names of payload dirs handed out by [`Publisher::stage`], so that `commit` accepts only those and
    /// `Drop` can remove the ones never published.
    staged: Vec<OsString>,
}

impl Publisher {
    /// Creates `<out>` if missing, takes an exclusive flock on `<out>/..lock` (waiting up to `lock_timeout`,
    /// polling `try_lock`, then [`PublishError::LockTimeout`]), then removes `..`-prefixed *directories* that
    /// `..data` does not point to (leftovers of crashed runs) and a leftover `..data_tmp` symlink, never
    /// touching `..data`, `..lock` or anything not starting with "..".
    pub(crate) fn open(out: &Path, lock_timeout: Duration) -> Result<Publisher, PublishError> {
        fs::create_dir_all(out).map_err(io_err("creating output directory", out))?;
        let lock_path = out.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&lock_path)
            .map_err(io_err("opening lock file", &lock_path))?;
        // Polling try_lock rather than a blocking lock() because std has no timed flock and a run must not
        // hang forever behind a stuck one (exit code 4, "lock held too long").
        let started = Instant::now();
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let waited = started.elapsed();
                    if waited >= lock_timeout {
                        return Err(PublishError::LockTimeout {
                            path: lock_path,
                            waited,
                        });
                    }
                    debug!(lock = %lock_path.display(), "output directory locked by another run; waiting");
                    std::thread::sleep(LOCK_POLL_INTERVAL.min(lock_timeout - waited));
                }
                Err(TryLockError::Error(e)) => return Err(io_err("locking", &lock_path)(e)),
            }
        }
        let publisher = Publisher {
            out: out.to_path_buf(),
            _lock: lock,
            staged: Vec::new(),
        };
        // A run that crashed between creating `..data_tmp` and renaming it leaves the link behind; it
        // points at a payload dir the sweep below removes, and would make the next symlink() fail.
        let tmp_link = out.join(DATA_TMP_LINK);
        match fs::symlink_metadata(&tmp_link) {
            Ok(meta) if meta.file_type().is_symlink() => {
                remove_file_if_exists(&tmp_link)?;
            }
            _ => {}
        }
        remove_orphan_payloads(out)?;
        Ok(publisher)
    }

    /// Creates a fresh payload dir `..<UTC timestamp YYYY_MM_DD_HH_MM_SS.nnnnnnnnn>` (unique: if the name
    /// exists, one nanosecond later) and returns its path; the caller writes the new tree into it with
    /// [`write_file`] and [`make_dir`].
    pub(crate) fn stage(&mut self) -> Result<PathBuf, PublishError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let (path, name) = create_payload_dir(&self.out, now.as_secs(), now.subsec_nanos())?;
        debug!(payload = %path.display(), "staged payload directory");
        self.staged.push(name);
        Ok(path)
    }

    /// Publishes the staged dir and returns its path:
    /// 1. fsync every file and dir in it (and the dir itself);
    /// 2. create a temp symlink `..data_tmp` → `<staged dir name>` and rename it over `..data` (one atomic
    ///    rename), fsync `<out>`;
    /// 3. for every top-level entry of the staged dir make the visible relative symlink `<name>` →
    ///    `..data/<name>` (a visible symlink that already points there is left alone); remove visible
    ///    symlinks for names no longer in the payload — only symlinks whose target starts with "..data/",
    ///    never entries the tool did not create (`lost+found`, regular files, dirs, other symlinks); fsync
    ///    `<out>`;
    /// 4. remove the previous payload dir.
    ///
    /// Two refinements of that sequence:
    /// - Visible links for names new in this payload are also created *before* the swap (they dangle until
    ///   then, which reads as "not in the old tree"), so that at the instant `..data` flips, every name the
    ///   new `index.json` lists already resolves. Created only after the swap, they would be missing for a
    ///   moment (and until the next run, if the process died right there) while the new index names them.
    /// - Conflicts (a name of the payload taken in `<out>` by something the tool did not create) are found
    ///   before anything visible changes, so such a commit fails with the old tree intact.
    ///
    /// The final cleanup removes every `..`-prefixed directory other than the new payload, which includes
    /// the previous payload and any other dir staged by this publisher but not committed.
    pub(crate) fn commit(self, staged: &Path) -> Result<PathBuf, PublishError> {
        let name = self.staged_name(staged)?;
        let payload = self.out.join(&name);
        let names = self.payload_names(&payload)?;

        sync_tree(&payload)?;
        // Dangling until the swap; see the doc comment.
        self.link_visible_names(&names)?;
        // Makes the payload dir's entry and the new links durable before `..data` can point at them.
        sync_dir(&self.out)?;
        failpoint("after-fsync");

        let tmp_link = self.out.join(DATA_TMP_LINK);
        remove_file_if_exists(&tmp_link)?;
        symlink(&name, &tmp_link).map_err(io_err("creating symlink", &tmp_link))?;
        failpoint("after-link");

        let data_link = self.out.join(DATA_LINK);
        // rename(2) replaces `..data` atomically: a reader resolves either the old or the new target.
        fs::rename(&tmp_link, &data_link)
            .map_err(io_err("renaming symlink into place", &data_link))?;
        sync_dir(&self.out)?;
        failpoint("after-rename");

        // Idempotent after the pre-swap pass; repairs links a crashed run may have left missing.
        self.link_visible_names(&names)?;
        self.unlink_stale_names(&names)?;
        sync_dir(&self.out)?;
        failpoint("after-visible");

        remove_orphan_payloads(&self.out)?;
        failpoint("after-cleanup");

        info!(out = %self.out.display(), payload = %payload.display(), "published");
        Ok(payload)
    }

    #[cfg(test)]
    /// The currently published payload dir (what ..data points to), if any.
    pub(crate) fn current(&self) -> Option<PathBuf> {
        match current_payload_name(&self.out) {
            Ok(name) => name.map(|name| self.out.join(name)),
            Err(e) => {
                warn!(error = %e, "cannot tell the current payload");
                None
            }
        }
    }

    /// The name of `staged` within `<out>`, if it is a payload dir this publisher staged.
    fn staged_name(&self, staged: &Path) -> Result<OsString, PublishError> {
        let not_staged = || PublishError::NotStaged {
            path: staged.to_path_buf(),
        };
        let name = staged.file_name().ok_or_else(not_staged)?;
        if staged.parent() != Some(self.out.as_path()) || !self.staged.iter().any(|n| n == name) {
            return Err(not_staged());
        }
        match fs::symlink_metadata(staged) {
            Ok(meta) if meta.is_dir() => Ok(name.to_os_string()),
            _ => Err(not_staged()),
        }
    }

    /// The payload's top-level names, checked against what is in `<out>`: each must be free or already a
    /// link this tool made for that very name, so a conflict fails the commit before anything changes.
    fn payload_names(&self, payload: &Path) -> Result<BTreeSet<OsString>, PublishError> {
        let mut names = BTreeSet::new();
        for entry in fs::read_dir(payload).map_err(io_err("reading directory", payload))? {
            let name = entry
                .map_err(io_err("reading directory", payload))?
                .file_name();
            if name.as_bytes().starts_with(RESERVED_PREFIX) {
                return Err(PublishError::InvalidPath {
                    dir: payload.to_path_buf(),
                    rel: name.to_string_lossy().into_owned(),
                    reason: "top-level names starting with \"..\" are reserved for the publisher",
                });
            }
            let visible = self.out.join(&name);
            match fs::symlink_metadata(&visible) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("inspecting", &visible)(e)),
                Ok(meta) if meta.file_type().is_symlink() => {
                    let target =
                        fs::read_link(&visible).map_err(io_err("reading symlink", &visible))?;
                    if target != visible_target(&name) {
                        return Err(PublishError::Foreign {
                            path: visible,
                            reason: "is a symlink to somewhere else than ..data/",
                        });
                    }
                }
                Ok(_) => {
                    return Err(PublishError::Foreign {
                        path: visible,
                        reason: "exists with the name of a published entry",
                    });
                }
            }
            names.insert(name);
        }
        Ok(names)
    }

    /// Makes `<out>/<name>` → `..data/<name>` for every name that lacks it.
    fn link_visible_names(&self, names: &BTreeSet<OsString>) -> Result<(), PublishError> {
        for name in names {
            let visible = self.out.join(name);
            let target = visible_target(name);
            match fs::read_link(&visible) {
                Ok(existing) if existing == target => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Anything else appeared after payload_names checked; never replace it.
                Ok(_) | Err(_) => {
                    return Err(PublishError::Foreign {
                        path: visible,
                        reason: "appeared while publishing",
                    });
                }
            }
            symlink(&target, &visible).map_err(io_err("creating symlink", &visible))?;
            debug!(link = %visible.display(), "created visible link");
        }
        Ok(())
    }

    /// Removes the links this tool made (target `..data/...`) for names the new payload no longer has.
    fn unlink_stale_names(&self, names: &BTreeSet<OsString>) -> Result<(), PublishError> {
        let out = &self.out;
        for entry in fs::read_dir(out).map_err(io_err("reading directory", out))? {
            let entry = entry.map_err(io_err("reading directory", out))?;
            let name = entry.file_name();
            if name.as_bytes().starts_with(RESERVED_PREFIX) || names.contains(&name) {
                continue;
            }
            let is_symlink = entry
                .file_type()
                .map_err(io_err("inspecting", &entry.path()))?
                .is_symlink();
            if !is_symlink {
                continue;
            }
            let path = entry.path();
            let target = fs::read_link(&path).map_err(io_err("reading symlink", &path))?;
            if target
                .as_os_str()
                .as_bytes()
                .starts_with(VISIBLE_TARGET_PREFIX)
            {
                remove_file_if_exists(&path)?;
                debug!(link = %path.display(), "removed visible link of an entry no longer published");
            }
        }
        Ok(())
    }
}

impl Drop for Publisher {
    /// Removes payload dirs staged but never published (e.g. the run failed), so a failed run leaves no
    /// orphan behind. Best effort: the next `open` sweeps whatever this misses.
    fn drop(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        // Never remove what `..data` points to: a commit that failed after the swap published its payload.
        let current = match current_payload_name(&self.out) {
            Ok(current) => current,
            Err(e) => {
                warn!(error = %e, "not cleaning up staged payloads: cannot tell the current one");
                return;
            }
        };
        for name in &self.staged {
            if current.as_ref() == Some(name) {
                continue;
            }
            let path = self.out.join(name);
            match fs::remove_dir_all(&path) {
                Ok(()) => debug!(payload = %path.display(), "removed unpublished payload"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(payload = %path.display(), error = %e, "cannot remove unpublished payload")
                }
            }
        }
    }
}

/// Test-only fail points: when the environment variable PROVIDER_IMAGES_FAILPOINT equals `name`, the process
/// aborts (std::process::abort()) right there. Compiled in only with `cfg(debug_assertions)` (tests run debug
/// builds); a no-op in release.
///
/// Steps, in order: "after-write" (called by the caller once the tree is written into the staged dir), then,
/// inside [`Publisher::commit`], "after-fsync", "after-link" (temp symlink created), "after-rename" (`..data`
/// swapped), "after-visible" (visible links updated), "after-cleanup".
pub(crate) fn failpoint(name: &str) {
    #[cfg(debug_assertions)]
    {
        if std::env::var_os(FAILPOINT_ENV).is_some_and(|v| v == name) {
            eprintln!("{FAILPOINT_ENV}={name}: aborting");
            std::process::abort();
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

#[cfg(test)]
/// `<out>/..data/index.json` as currently published, if any (for the warm-run check).
pub(crate) fn read_current_index(out: &Path) -> Option<Vec<u8>> {
    let path = out.join(DATA_LINK).join("index.json");
    match fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                debug!(path = %path.display(), error = %e, "cannot read the published index");
            }
            None
        }
    }
}

/// The payload directory `<out>/..data` points to, if anything is published (for the warm-run check,
/// which reads the payload directly so that every file comes from one tree).
pub(crate) fn current_payload(out: &Path) -> Option<PathBuf> {
    match current_payload_name(out) {
        Ok(name) => name.map(|name| out.join(name)),
        Err(e) => {
            debug!(out = %out.display(), error = %e, "cannot tell the current payload");
            None
        }
    }
}

/// Whether `<out>/<name>` is the visible link this tool makes for a top-level payload entry.
pub(crate) fn is_visible_link(out: &Path, name: &str) -> bool {
    fs::read_link(out.join(name)).is_ok_and(|target| target == visible_target(OsStr::new(name)))
}

/// The relative target of the visible link for a top-level payload entry.
fn visible_target(name: &OsStr) -> PathBuf {
    Path::new(DATA_LINK).join(name)
}

/// The payload dir name `..data` points to; `None` if nothing is published yet. A `..data` the tool could
/// not have made (not a symlink, or not pointing at a sibling) is an error, so nothing is cleaned up on a
/// guess about what it protects.
fn current_payload_name(out: &Path) -> Result<Option<OsString>, PublishError> {
    let data_link = out.join(DATA_LINK);
    let target = match fs::read_link(&data_link) {
        Ok(target) => target,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            // EINVAL: it exists but is not a symlink.
            return Err(PublishError::Foreign {
                path: data_link,
                reason: "is not a symlink",
            });
        }
        Err(e) => return Err(io_err("reading symlink", &data_link)(e)),
    };
    let mut components = target.components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(name)), None) if name.as_bytes().starts_with(RESERVED_PREFIX) => {
            Ok(Some(name.to_os_string()))
        }
        _ => Err(PublishError::Foreign {
            path: data_link,
            reason: "does not point to a payload directory beside it",
        }),
    }
}

/// Removes every `..`-prefixed directory in `<out>` other than the current payload: payloads of crashed or
/// failed runs and the previous payload. Symlinks and files are left alone (`..data`, `..lock`, and
/// whatever else is there), as is everything not starting with "..".
fn remove_orphan_payloads(out: &Path) -> Result<(), PublishError> {
    let current = current_payload_name(out)?;
    for entry in fs::read_dir(out).map_err(io_err("reading directory", out))? {
        let entry = entry.map_err(io_err("reading directory", out))?;
        let name = entry.file_name();
        if !name.as_bytes().starts_with(RESERVED_PREFIX)
            || name == DATA_LINK
            || name == LOCK_FILE
            || current.as_ref() == Some(&name)
        {
            continue;
        }
        let path = entry.path();
        // DirEntry::file_type does not follow symlinks, so a `..`-named symlink to a directory is kept.
        if !entry
            .file_type()
            .map_err(io_err("inspecting", &path))?
            .is_dir()
        {
            continue;
        }
        match fs::remove_dir_all(&path) {
            Ok(()) => debug!(payload = %path.display(), "removed unpublished or previous payload"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing directory", &path)(e)),
        }
    }
    Ok(())
}

/// Creates `..<timestamp>` in `out`, moving one nanosecond later for as long as the name is taken (two
/// stages within a clock tick, or a clock that went backwards onto an old payload). Returns path and name.
fn create_payload_dir(
    out: &Path,
    mut secs: u64,
    mut nanos: u32,
) -> Result<(PathBuf, OsString), PublishError> {
    // A bound only so a pathological directory cannot loop forever; never reached in practice.
    const MAX_ATTEMPTS: u32 = 10_000;
    for _ in 0..MAX_ATTEMPTS {
        let name = OsString::from(format!("..{}", format_timestamp(secs, nanos)));
        let path = out.join(&name);
        match DirBuilder::new().mode(DIR_MODE).create(&path) {
            Ok(()) => {
                set_dir_mode(&path)?;
                return Ok((path, name));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                nanos += 1;
                if nanos == 1_000_000_000 {
                    nanos = 0;
                    secs += 1;
                }
            }
            Err(e) => return Err(io_err("creating payload directory", &path)(e)),
        }
    }
    Err(io_err("creating payload directory", out)(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "every candidate timestamp name is taken",
    )))
}

/// `YYYY_MM_DD_HH_MM_SS.nnnnnnnnn` in UTC, the kubelet's payload naming with full nanoseconds.
fn format_timestamp(secs: u64, nanos: u32) -> String {
    let days = secs / 86_400;
    let of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}_{month:02}_{day:02}_{:02}_{:02}_{:02}.{nanos:09}",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    const TIMEOUT: Duration = Duration::from_secs(10);
    /// Tells the crash helper test which `<out>` to publish into; it does nothing without it.
    const CRASH_OUT_ENV: &str = "PUBLISH_TEST_CRASH_OUT";
    /// Tells the umask helper test to run.
    const UMASK_CHILD_ENV: &str = "PUBLISH_TEST_UMASK_CHILD";
    /// SIGABRT on Linux, what std::process::abort() raises.
    const SIGABRT: i32 = 6;

    type Tree = BTreeMap<String, String>;

    fn tree(entries: &[(&str, &str)]) -> Tree {
        entries
            .iter()
            .map(|(path, contents)| (path.to_string(), contents.to_string()))
            .collect()
    }

    fn tree_a() -> Tree {
        tree(&[
            ("index.json", "{\"tree\":\"A\"}"),
            (
                "vol-a/capi-operator-manifests/default/metadata.yaml",
                "name: a",
            ),
            (
                "vol-a/capi-operator-manifests/default/manifests.yaml",
                "kind: A",
            ),
            (
                "vol-common/capi-operator-manifests/default/manifests.yaml",
                "common A",
            ),
        ])
    }

    fn tree_b() -> Tree {
        tree(&[
            ("index.json", "{\"tree\":\"B\"}"),
            (
                "vol-b/capi-operator-manifests/default/metadata.yaml",
                "name: b",
            ),
            (
                "vol-b/capi-operator-manifests/other/manifests.yaml",
                "kind: B",
            ),
            (
                "vol-common/capi-operator-manifests/default/manifests.yaml",
                "common B",
            ),
        ])
    }

    fn tree_c() -> Tree {
        tree(&[
            ("index.json", "{\"tree\":\"C\"}"),
            (
                "vol-c/capi-operator-manifests/default/manifests.yaml",
                "kind: C",
            ),
            (
                "vol-common/capi-operator-manifests/default/manifests.yaml",
                "common C",
            ),
        ])
    }

    /// Writes `tree` into a staged dir, calling the caller's "after-write" fail point like the real caller.
    fn stage_tree(publisher: &mut Publisher, tree: &Tree) -> PathBuf {
        let staged = publisher.stage().unwrap();
        for (path, contents) in tree {
            write_file(&staged, path, contents.as_bytes()).unwrap();
        }
        failpoint("after-write");
        staged
    }

    fn publish(out: &Path, tree: &Tree) -> PathBuf {
        let mut publisher = Publisher::open(out, TIMEOUT).unwrap();
        let staged = stage_tree(&mut publisher, tree);
        publisher.commit(&staged).unwrap()
    }

    /// What a reader sees through the visible links: every file under every link into `..data/` that
    /// resolves. Dangling links read as absent; entries the tool did not create are not part of the tree.
    fn visible_tree(out: &Path) -> Tree {
        let mut tree = Tree::new();
        for entry in fs::read_dir(out).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            if name.starts_with("..") || !entry.file_type().unwrap().is_symlink() {
                continue;
            }
            let target = fs::read_link(entry.path()).unwrap();
            if !target.starts_with(DATA_LINK) {
                continue;
            }
            match fs::metadata(entry.path()) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => panic!("{}: {e}", entry.path().display()),
                Ok(_) => collect_files(&entry.path(), &name, &mut tree),
            }
        }
        tree
    }

    fn collect_files(path: &Path, rel: &str, tree: &mut Tree) {
        if fs::metadata(path).unwrap().is_dir() {
            for entry in fs::read_dir(path).unwrap() {
                let entry = entry.unwrap();
                let name = entry.file_name().into_string().unwrap();
                collect_files(&entry.path(), &format!("{rel}/{name}"), tree);
            }
        } else {
            tree.insert(rel.to_string(), fs::read_to_string(path).unwrap());
        }
    }

    fn entry_names(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    fn top_level_names(tree: &Tree) -> BTreeSet<String> {
        tree.keys()
            .map(|path| path.split('/').next().unwrap().to_string())
            .collect()
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// An `<out>` holding things the tool did not create, which must survive every run.
    fn out_with_foreign_entries(dir: &Path) -> PathBuf {
        let out = dir.join("out");
        fs::create_dir_all(out.join("lost+found")).unwrap();
        fs::write(out.join("lost+found/old"), "fsck").unwrap();
        fs::write(out.join("keep.txt"), "mine").unwrap();
        symlink("keep.txt", out.join("my-link")).unwrap();
        out
    }

    fn assert_foreign_entries_intact(out: &Path) {
        assert_eq!(
            fs::read_to_string(out.join("lost+found/old")).unwrap(),
            "fsck"
        );
        assert_eq!(fs::read_to_string(out.join("keep.txt")).unwrap(), "mine");
        assert_eq!(
            fs::read_link(out.join("my-link")).unwrap(),
            Path::new("keep.txt")
        );
    }

    /// `<out>` holds exactly the published tree's links, the tool's own entries and the foreign ones.
    fn assert_exact_layout(out: &Path, tree: &Tree) {
        let current = fs::read_link(out.join(DATA_LINK)).unwrap();
        let mut expected = top_level_names(tree);
        expected
            .extend(["..data", "..lock", "keep.txt", "lost+found", "my-link"].map(String::from));
        expected.insert(current.to_str().unwrap().to_string());
        assert_eq!(entry_names(out), expected);
        assert_eq!(&visible_tree(out), tree);
        assert_foreign_entries_intact(out);
    }

    #[test]
    fn first_publish_creates_layout_with_relative_links() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("not/yet/there");
        let published = publish(&out, &tree_a());

        let name = published.file_name().unwrap();
        assert!(name.to_str().unwrap().starts_with("..20"));
        assert_eq!(published, out.join(name));
        assert_eq!(fs::read_link(out.join("..data")).unwrap(), Path::new(name));
        assert_eq!(
            fs::read_link(out.join("index.json")).unwrap(),
            Path::new("..data/index.json")
        );
        assert_eq!(
            fs::read_link(out.join("vol-a")).unwrap(),
            Path::new("..data/vol-a")
        );
        assert_eq!(
            fs::read_link(out.join("vol-common")).unwrap(),
            Path::new("..data/vol-common")
        );
        assert!(fs::symlink_metadata(out.join("..lock")).unwrap().is_file());
        let mut expected = top_level_names(&tree_a());
        expected.extend(["..data", "..lock"].map(String::from));
        expected.insert(name.to_str().unwrap().to_string());
        assert_eq!(entry_names(&out), expected);
        assert_eq!(visible_tree(&out), tree_a());
        assert_eq!(
            read_current_index(&out).unwrap(),
            tree_a()["index.json"].as_bytes()
        );

        let publisher = Publisher::open(&out, TIMEOUT).unwrap();
        assert_eq!(publisher.current(), Some(published));
    }

    #[test]
    fn second_publish_swaps_and_keeps_foreign_entries() {
        let dir = tempfile::tempdir().unwrap();
        let out = out_with_foreign_entries(dir.path());
        let first = publish(&out, &tree_a());
        assert_exact_layout(&out, &tree_a());

        let second = publish(&out, &tree_b());
        assert_ne!(first, second);
        assert!(!first.exists(), "previous payload removed");
        assert!(!out.join("vol-a").exists() && fs::symlink_metadata(out.join("vol-a")).is_err());
        assert_eq!(
            fs::read_link(out.join("vol-b")).unwrap(),
            Path::new("..data/vol-b")
        );
        assert_exact_layout(&out, &tree_b());

        // Publishing the same content again still swaps to a fresh payload.
        let third = publish(&out, &tree_b());
        assert_ne!(second, third);
        assert!(!second.exists());
        assert_exact_layout(&out, &tree_b());
    }

    #[test]
    fn open_removes_stale_payloads_only() {
        let dir = tempfile::tempdir().unwrap();
        let out = out_with_foreign_entries(dir.path());
        let current = publish(&out, &tree_a());

        let stale = out.join("..2020_01_01_00_00_00.000000000");
        fs::create_dir_all(stale.join("vol/sub")).unwrap();
        fs::write(stale.join("vol/sub/file"), "x").unwrap();
        symlink("..2020_01_01_00_00_00.000000000", out.join("..data_tmp")).unwrap();
        fs::write(out.join("..notes"), "a file, not a dir").unwrap();
        fs::create_dir(out.join(".hidden")).unwrap();
        symlink("lost+found", out.join("..dir-link")).unwrap();

        let publisher = Publisher::open(&out, TIMEOUT).unwrap();
        assert!(!stale.exists());
        assert!(fs::symlink_metadata(out.join("..data_tmp")).is_err());
        assert_eq!(publisher.current(), Some(current.clone()));
        assert!(current.is_dir());
        assert!(out.join("..notes").is_file());
        assert!(out.join(".hidden").is_dir());
        assert!(
            fs::symlink_metadata(out.join("..dir-link"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(visible_tree(&out), tree_a());
        assert_foreign_entries_intact(&out);
    }

    #[test]
    fn second_open_times_out_while_first_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let first = Publisher::open(&out, TIMEOUT).unwrap();

        let wait = Duration::from_millis(200);
        match Publisher::open(&out, wait) {
            Err(PublishError::LockTimeout { path, waited }) => {
                assert_eq!(path, out.join("..lock"));
                assert!(waited >= wait, "{waited:?}");
            }
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("second publisher got the lock"),
        }
        match Publisher::open(&out, Duration::ZERO) {
            Err(PublishError::LockTimeout { .. }) => {}
            _ => panic!("expected LockTimeout with a zero timeout"),
        }

        drop(first);
        Publisher::open(&out, Duration::ZERO).unwrap();
    }

    #[test]
    fn write_file_rejects_bad_paths() {
        let dir = tempfile::tempdir().unwrap();
        for rel in [
            "../x", "/x", "", "a/../x", "a//x", "a/./x", "./x", "a/", "..", "a/\0",
        ] {
            match write_file(dir.path(), rel, b"no") {
                Err(PublishError::InvalidPath { rel: got, .. }) => assert_eq!(got, rel),
                other => panic!("{rel:?} accepted or wrong error: {other:?}"),
            }
            assert!(matches!(
                make_dir(dir.path(), rel),
                Err(PublishError::InvalidPath { .. })
            ));
        }
        assert!(
            fs::read_dir(dir.path()).unwrap().next().is_none(),
            "nothing written"
        );
    }

    #[test]
    fn write_file_refuses_existing_files_and_symlinked_parents() {
        let dir = tempfile::tempdir().unwrap();
        write_file(dir.path(), "a/b.yaml", b"one").unwrap();
        match write_file(dir.path(), "a/b.yaml", b"two") {
            Err(PublishError::Io { source, path, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::AlreadyExists);
                assert_eq!(path, dir.path().join("a/b.yaml"));
            }
            other => panic!("overwrote an existing file: {other:?}"),
        }
        assert_eq!(fs::read(dir.path().join("a/b.yaml")).unwrap(), b"one");

        // A parent that is a file, or a symlink (which could lead out of the tree), is refused.
        assert!(write_file(dir.path(), "a/b.yaml/c", b"x").is_err());
        let elsewhere = tempfile::tempdir().unwrap();
        symlink(elsewhere.path(), dir.path().join("link")).unwrap();
        assert!(write_file(dir.path(), "link/escape", b"x").is_err());
        assert!(make_dir(dir.path(), "link/escape").is_err());
        assert!(fs::read_dir(elsewhere.path()).unwrap().next().is_none());

        // make_dir accepts existing directories.
        make_dir(dir.path(), "a").unwrap();
        make_dir(dir.path(), "a/new/deeper").unwrap();
        make_dir(dir.path(), "a/new/deeper").unwrap();
    }

    #[test]
    fn modes_are_0644_and_0755() {
        let dir = tempfile::tempdir().unwrap();
        write_file(
            dir.path(),
            "vol/capi-operator-manifests/p/manifests.yaml",
            b"m",
        )
        .unwrap();
        make_dir(dir.path(), "vol/empty/dir").unwrap();
        assert_eq!(
            mode(
                &dir.path()
                    .join("vol/capi-operator-manifests/p/manifests.yaml")
            ),
            0o644
        );
        for d in [
            "vol",
            "vol/capi-operator-manifests",
            "vol/capi-operator-manifests/p",
            "vol/empty",
            "vol/empty/dir",
        ] {
            assert_eq!(mode(&dir.path().join(d)), 0o755, "{d}");
        }
    }

    /// Runs [`umask_child`] under umask 077, which would give 0600/0700 without the explicit chmods.
    #[test]
    fn modes_do_not_depend_on_umask() {
        let output = Command::new("sh")
            .arg("-c")
            .arg(r#"umask 077 && exec "$0" --exact "$1" --ignored --nocapture --test-threads=1"#)
            .arg(std::env::current_exe().unwrap())
            .arg(test_name("umask_child"))
            .env(UMASK_CHILD_ENV, "1")
            .output()
            .unwrap();
        // Output captured rather than inherited: the child's own test summary would otherwise interleave
        // with this run's.
        assert!(
            output.status.success(),
            "umask child failed: {}\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    #[ignore = "helper run by modes_do_not_depend_on_umask in a child process"]
    fn umask_child() {
        if std::env::var_os(UMASK_CHILD_ENV).is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // Proves the umask is in effect: a plain create gets 0600.
        fs::write(dir.path().join("control"), "c").unwrap();
        assert_eq!(mode(&dir.path().join("control")), 0o600);

        let out = dir.path().join("out");
        let mut publisher = Publisher::open(&out, TIMEOUT).unwrap();
        let staged = publisher.stage().unwrap();
        write_file(
            &staged,
            "vol/capi-operator-manifests/p/manifests.yaml",
            b"m",
        )
        .unwrap();
        make_dir(&staged, "vol/empty").unwrap();
        write_file(&staged, "index.json", b"{}").unwrap();
        let published = publisher.commit(&staged).unwrap();
        assert_eq!(mode(&published), 0o755);
        assert_eq!(mode(&published.join("index.json")), 0o644);
        assert_eq!(
            mode(&published.join("vol/capi-operator-manifests/p/manifests.yaml")),
            0o644
        );
        for d in [
            "vol",
            "vol/capi-operator-manifests",
            "vol/capi-operator-manifests/p",
            "vol/empty",
        ] {
            assert_eq!(mode(&published.join(d)), 0o755, "{d}");
        }
    }

    #[test]
    fn conflicting_foreign_entry_fails_commit_with_old_tree_intact() {
        let dir = tempfile::tempdir().unwrap();
        let out = out_with_foreign_entries(dir.path());
        let first = publish(&out, &tree_a());

        let mut conflicting = tree_b();
        conflicting.insert("keep.txt".into(), "payload wants this name".into());
        let mut publisher = Publisher::open(&out, TIMEOUT).unwrap();
        let staged = stage_tree(&mut publisher, &conflicting);
        match publisher.commit(&staged) {
            Err(PublishError::Foreign { path, .. }) => assert_eq!(path, out.join("keep.txt")),
            other => panic!("expected a conflict: {other:?}"),
        }
        assert!(!staged.exists(), "failed payload cleaned up");
        assert_eq!(
            fs::read_link(out.join("..data")).unwrap(),
            first.file_name().unwrap()
        );
        assert_exact_layout(&out, &tree_a());

        // A payload name starting with ".." is refused as well.
        let mut publisher = Publisher::open(&out, TIMEOUT).unwrap();
        let staged = publisher.stage().unwrap();
        write_file(&staged, "..data", b"x").unwrap();
        assert!(matches!(
            publisher.commit(&staged),
            Err(PublishError::InvalidPath { .. })
        ));
        assert_exact_layout(&out, &tree_a());
    }

    #[test]
    fn commit_accepts_only_staged_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();

        let publisher = Publisher::open(&out, TIMEOUT).unwrap();
        assert!(matches!(
            publisher.commit(&elsewhere),
            Err(PublishError::NotStaged { .. })
        ));
        let publisher = Publisher::open(&out, TIMEOUT).unwrap();
        let not_ours = out.join("..2030_01_01_00_00_00.000000000");
        fs::create_dir_all(&not_ours).unwrap();
        assert!(matches!(
            publisher.commit(&not_ours),
            Err(PublishError::NotStaged { .. })
        ));
        assert!(fs::symlink_metadata(out.join("..data")).is_err());
    }

    #[test]
    fn dropping_an_uncommitted_publisher_removes_its_staged_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let published = publish(&out, &tree_a());

        let mut publisher = Publisher::open(&out, TIMEOUT).unwrap();
        let one = stage_tree(&mut publisher, &tree_b());
        let two = publisher.stage().unwrap();
        assert_ne!(one, two);
        drop(publisher);
        assert!(!one.exists() && !two.exists());
        assert!(published.is_dir());
        assert_eq!(visible_tree(&out), tree_a());
    }

    #[test]
    fn commit_removes_other_staged_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut publisher = Publisher::open(&out, TIMEOUT).unwrap();
        let abandoned = stage_tree(&mut publisher, &tree_a());
        let staged = stage_tree(&mut publisher, &tree_b());
        let published = publisher.commit(&staged).unwrap();
        assert!(!abandoned.exists());
        assert!(published.is_dir());
        assert_eq!(visible_tree(&out), tree_b());
    }

    #[test]
    fn read_current_index_follows_data_link() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        assert_eq!(read_current_index(&out), None);
        publish(&out, &tree_a());
        assert_eq!(read_current_index(&out).unwrap(), b"{\"tree\":\"A\"}");
        publish(&out, &tree_c());
        assert_eq!(read_current_index(&out).unwrap(), b"{\"tree\":\"C\"}");
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(format_timestamp(0, 0), "1970_01_01_00_00_00.000000000");
        assert_eq!(
            format_timestamp(1_795_514_400, 123_456_789),
            "2026_11_24_10_00_00.123456789"
        );
        assert_eq!(
            format_timestamp(951_868_799, 999_999_999),
            "2000_02_29_23_59_59.999999999"
        );
        assert_eq!(
            format_timestamp(946_643_696, 7),
            "1999_12_31_12_34_56.000000007"
        );
        assert_eq!(
            format_timestamp(4_107_542_400, 0),
            "2100_03_01_00_00_00.000000000"
        );
        // 2100 is not a leap year: the day before 2100-03-01 is 2100-02-28.
        assert_eq!(
            format_timestamp(4_107_542_400 - 1, 0),
            "2100_02_28_23_59_59.000000000"
        );
    }

    #[test]
    fn payload_names_bump_when_taken() {
        let dir = tempfile::tempdir().unwrap();
        let secs = 1_795_514_400;
        let (first, _) = create_payload_dir(dir.path(), secs, 999_999_998).unwrap();
        let (second, _) = create_payload_dir(dir.path(), secs, 999_999_998).unwrap();
        let (third, name) = create_payload_dir(dir.path(), secs, 999_999_998).unwrap();
        assert!(first.ends_with("..2026_11_24_10_00_00.999999998"));
        assert!(second.ends_with("..2026_11_24_10_00_00.999999999"));
        assert!(third.ends_with("..2026_11_24_10_00_01.000000000"));
        assert_eq!(name, "..2026_11_24_10_00_01.000000000");
        assert_eq!(mode(&third), 0o755);
    }

    const CRASH_STEPS: [&str; 6] = [
        "after-write",
        "after-fsync",
        "after-link",
        "after-rename",
        "after-visible",
        "after-cleanup",
    ];

    /// For every fail point: publish A, let a child process publish B and abort at the step, check the
    /// visible tree is exactly A or exactly B (which one the step implies), then publish C normally and
    /// check it is exactly C with nothing of A or B left behind.
    #[test]
    fn crash_at_every_step_leaves_old_or_new_tree_and_recovers() {
        if !cfg!(debug_assertions) {
            eprintln!("skipped: fail points are compiled into debug builds only");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        for (i, step) in CRASH_STEPS.into_iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let out = out_with_foreign_entries(dir.path());
            publish(&out, &tree_a());

            let output = Command::new(&exe)
                .args([
                    "--exact",
                    &test_name("crash_child"),
                    "--ignored",
                    "--nocapture",
                ])
                .args(["--test-threads=1"])
                .env(FAILPOINT_ENV, step)
                .env(CRASH_OUT_ENV, &out)
                .output()
                .unwrap();
            assert_eq!(
                output.status.signal(),
                Some(SIGABRT),
                "child did not abort at {step}: {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );

            let seen = visible_tree(&out);
            let swapped = i
                >= CRASH_STEPS
                    .iter()
                    .position(|s| *s == "after-rename")
                    .unwrap();
            let expected = if swapped { tree_b() } else { tree_a() };
            assert!(
                seen == tree_a() || seen == tree_b(),
                "{step}: mixed tree {seen:#?}"
            );
            assert_eq!(seen, expected, "{step}");
            assert_foreign_entries_intact(&out);

            publish(&out, &tree_c());
            assert_exact_layout(&out, &tree_c());
            assert!(fs::symlink_metadata(out.join("..data_tmp")).is_err());
        }
    }

    #[test]
    #[ignore = "helper run by crash_at_every_step_leaves_old_or_new_tree_and_recovers in a child process"]
    fn crash_child() {
        let Some(out) = std::env::var_os(CRASH_OUT_ENV) else {
            return;
        };
        publish(Path::new(&out), &tree_b());
    }

    /// The libtest name of a test in this module, whatever crate this module is compiled into.
    fn test_name(function: &str) -> String {
        let module = module_path!();
        let within_crate = module.split_once("::").map_or(module, |(_, rest)| rest);
        format!("{within_crate}::{function}")
    }
}
