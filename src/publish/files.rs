//! The staged tree's files and directories: fixed modes whatever the umask, one spelling per path, no
//! symlink followed, and fsync before the swap. Knows nothing of the payload's layout.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::debug;

use super::{PublishError, io_err};

/// Modes from the design: readable by the operator under any UID, whatever the image or umask says.
pub(super) const DIR_MODE: u32 = 0o755;
pub(super) const FILE_MODE: u32 = 0o644;

/// Writes `contents` to `dir/rel`, creating parent directories with mode 0755; the file gets mode 0644
/// whatever the umask. `rel` uses '/', with no `..` component and no leading '/'. An existing file is an
/// error (the staged tree is fresh, so a second write to one path is a caller bug).
///
/// Empty and `.` components (`a//b`, `a/./b`, `a/`) are rejected too: every accepted `rel` names exactly one
/// path, so two spellings cannot reach the same file. No component may be an existing symlink.
pub(crate) fn write_file(dir: &Path, rel: &str, contents: &[u8]) -> Result<(), PublishError> {
    let components = split_rel(dir, rel)?;
    let (file_name, parents) = components
        .split_last()
        .expect("split_rel returns at least one component");
    let parent = make_dirs(dir, parents)?;
    let path = parent.join(file_name);
    // create_new (O_EXCL) also refuses to follow a symlink sitting at the final component.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(io_err("creating file", &path))?;
    file.write_all(contents)
        .map_err(io_err("writing file", &path))?;
    // The mode passed to open() is filtered through the umask; set it explicitly.
    file.set_permissions(Permissions::from_mode(FILE_MODE))
        .map_err(io_err("setting permissions of", &path))?;
    Ok(())
}

/// Creates `dir/rel` and any missing parents with mode 0755 (regardless of umask); existing directories are
/// fine. `rel` follows the rules of [`write_file`].
pub(crate) fn make_dir(dir: &Path, rel: &str) -> Result<(), PublishError> {
    let components = split_rel(dir, rel)?;
    make_dirs(dir, &components).map(|_| ())
}

/// Validates a caller's relative path and splits it into its components.
pub(super) fn split_rel<'a>(dir: &Path, rel: &'a str) -> Result<Vec<&'a str>, PublishError> {
    let invalid = |reason| PublishError::InvalidPath {
        dir: dir.to_path_buf(),
        rel: rel.to_string(),
        reason,
    };
    if rel.is_empty() {
        return Err(invalid("empty path"));
    }
    if rel.starts_with('/') {
        return Err(invalid("absolute path"));
    }
    if rel.contains('\0') {
        return Err(invalid("NUL byte in path"));
    }
    let components: Vec<&str> = rel.split('/').collect();
    for component in &components {
        match *component {
            "" => return Err(invalid("empty path component")),
            "." | ".." => return Err(invalid("\".\" or \"..\" path component")),
            _ => {}
        }
    }
    Ok(components)
}

/// Creates `dir/<components...>` one level at a time with mode 0755; existing real directories are
/// accepted, anything else (a file, a symlink that could lead outside `dir`) is an error. Returns the path.
pub(super) fn make_dirs(dir: &Path, components: &[&str]) -> Result<PathBuf, PublishError> {
    let mut path = dir.to_path_buf();
    for component in components {
        path.push(component);
        match DirBuilder::new().mode(DIR_MODE).create(&path) {
            Ok(()) => set_dir_mode(&path)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let meta = fs::symlink_metadata(&path).map_err(io_err("inspecting", &path))?;
                if !meta.is_dir() {
                    return Err(io_err("creating directory", &path)(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "exists and is not a directory",
                    )));
                }
            }
            Err(e) => return Err(io_err("creating directory", &path)(e)),
        }
    }
    Ok(path)
}

/// mkdir's mode is filtered through the umask; set 0755 explicitly.
pub(super) fn set_dir_mode(path: &Path) -> Result<(), PublishError> {
    fs::set_permissions(path, Permissions::from_mode(DIR_MODE))
        .map_err(io_err("setting permissions of", path))
}

pub(super) fn remove_file_if_exists(path: &Path) -> Result<(), PublishError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", path)(e)),
    }
}

/// fsyncs every regular file and directory under `root` and `root` itself, so the payload is on disk before
/// `..data` can point at it. Iterative, so a deep tree cannot exhaust the stack. Symlinks are not followed;
/// their directory's fsync covers them.
pub(super) fn sync_tree(root: &Path) -> Result<(), PublishError> {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).map_err(io_err("reading directory", &dir))? {
            let entry = entry.map_err(io_err("reading directory", &dir))?;
            let path = entry.path();
            let file_type = entry.file_type().map_err(io_err("inspecting", &path))?;
            if file_type.is_dir() {
                dirs.push(path);
            } else if file_type.is_file() {
                File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err("syncing file", &path))?;
            }
        }
        sync_dir(&dir)?;
    }
    Ok(())
}

/// fsyncs a directory so the entries created, renamed or removed in it are durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), PublishError> {
    match File::open(dir).and_then(|f| f.sync_all()) {
        Ok(()) => Ok(()),
        // Some network filesystems cannot fsync a directory (EINVAL); there is nothing stronger to do there,
        // and refusing to publish would make the tool unusable on such volumes.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
            ) =>
        {
            debug!(dir = %dir.display(), error = %e, "directory fsync not supported; skipped");
            Ok(())
        }
        Err(e) => Err(io_err("syncing directory", dir)(e)),
    }
}
