//! The merged subtree: contributions applied lowest layer first, as an image volume shows them.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use super::contribution::{Action, Contribution, Hidden};
use super::{LayerError, Limits, MAX_ENTRIES, SUBTREE, shown};

/// The merged subtree: relative paths under `capi-operator-manifests/` ("" is the subtree root
/// itself).
#[derive(Debug, Default, Clone)]
pub struct Subtree {
    /// Keyed by relative path, "" being the root. Every node but the root has a directory as
    /// parent, so removing a path's prefix range removes exactly what lies below it.
    nodes: BTreeMap<String, Stored>,
    total: u64,
}

#[derive(Debug, Clone)]
enum Stored {
    Dir,
    File(Arc<[u8]>),
}

/// A node of the merged subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Node<'a> {
    Dir,
    File(&'a [u8]),
}

impl Subtree {
    pub fn new() -> Subtree {
        Subtree::default()
    }

    /// Applies the next layer (in manifest order, lowest first): first everything its whiteouts
    /// hide, then its entries in stream order. On error the subtree is left half-applied; the
    /// caller drops it.
    pub fn apply(&mut self, layer: &Contribution, limits: &Limits) -> Result<(), LayerError> {
        for hidden in layer.hidden() {
            match hidden {
                Hidden::Path(path) => {
                    self.remove_below(path);
                    if let Some(Stored::File(content)) = self.nodes.remove(path.as_str()) {
                        self.total -= content.len() as u64;
                    }
                }
                Hidden::Contents(path) => self.remove_below(path),
            }
        }
        for step in layer.steps() {
            match &step.action {
                Action::Dir => self.put_dir(&step.path),
                Action::File(content) => self.put_file(&step.path, content.clone()),
                Action::Hardlink { target } => {
                    let Some(Stored::File(content)) = self.nodes.get(target.as_str()) else {
                        return Err(LayerError::Hardlink {
                            path: in_image(&step.path),
                            target: in_image(target),
                            reason: "is not an earlier regular file under capi-operator-manifests/",
                        });
                    };
                    self.put_file(&step.path, content.clone());
                }
            }
            if self.nodes.len() > MAX_ENTRIES {
                return Err(LayerError::TooManyEntries {
                    path: in_image(&step.path),
                    limit: MAX_ENTRIES,
                });
            }
        }
        if self.total > limits.max_image_size {
            return Err(LayerError::ImageTooLarge {
                total: self.total,
                limit: limits.max_image_size,
            });
        }
        Ok(())
    }

    /// The subtree holding these files (paths relative to the subtree root) and their parent
    /// directories: a published tree read back, whose files were checked against index.json.
    pub(crate) fn from_files(files: impl IntoIterator<Item = (String, Vec<u8>)>) -> Subtree {
        let mut subtree = Subtree::new();
        subtree.put_dir("");
        for (path, content) in files {
            subtree.put_file(&path, content.into());
        }
        subtree
    }

    /// True when `capi-operator-manifests` exists in the merged image as a directory.
    pub(crate) fn exists(&self) -> bool {
        self.is_dir("")
    }

    /// Every node under the root, sorted by path (byte order, so a directory comes before what it
    /// holds; paths use '/', no leading '/', root itself not listed).
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&str, Node<'_>)> {
        self.nodes
            .iter()
            .filter(|(path, _)| !path.is_empty())
            .map(|(path, stored)| (path.as_str(), stored.as_node()))
    }

    pub(crate) fn file(&self, path: &str) -> Option<&[u8]> {
        match self.nodes.get(path)? {
            Stored::File(content) => Some(content),
            Stored::Dir => None,
        }
    }

    pub(crate) fn is_dir(&self, path: &str) -> bool {
        matches!(self.nodes.get(path), Some(Stored::Dir))
    }

    /// Names of the direct children of directory `path` ("" = root), sorted.
    pub(crate) fn children(&self, path: &str) -> Vec<&str> {
        if !self.is_dir(path) {
            return Vec::new();
        }
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        self.nodes
            .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
            .map_while(|(key, _)| key.strip_prefix(&prefix))
            .filter(|name| !name.is_empty() && !name.contains('/'))
            .collect()
    }

    #[cfg(test)]
    /// Sum of file sizes in the merged subtree.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.total
    }

    /// Removes everything strictly below `path`.
    fn remove_below(&mut self, path: &str) {
        let below = if path.is_empty() {
            let root = self.nodes.remove("");
            let below = std::mem::take(&mut self.nodes);
            if let Some(root) = root {
                self.nodes.insert(String::new(), root);
            }
            below
        } else {
            // '0' follows '/' in ASCII: [path/, path0) is exactly the keys below `path`.
            let mut below = self.nodes.split_off(&format!("{path}/"));
            let mut after = below.split_off(&format!("{path}0"));
            self.nodes.append(&mut after);
            below
        };
        self.total -= below.values().map(Stored::len).sum::<u64>();
    }

    /// Makes every ancestor of `path` a directory, replacing files, as an extractor creating
    /// `a/b/c` without entries for `a` and `a/b` would.
    fn put_parents(&mut self, path: &str) {
        if path.is_empty() {
            return;
        }
        let parents = std::iter::once("").chain(path.match_indices('/').map(|(i, _)| &path[..i]));
        for parent in parents {
            match self.nodes.get(parent) {
                Some(Stored::Dir) => {}
                Some(Stored::File(content)) => {
                    self.total -= content.len() as u64;
                    self.nodes.insert(parent.to_owned(), Stored::Dir);
                }
                None => {
                    self.nodes.insert(parent.to_owned(), Stored::Dir);
                }
            }
        }
    }

    fn put_dir(&mut self, path: &str) {
        self.put_parents(path);
        if let Some(Stored::File(content)) = self.nodes.insert(path.to_owned(), Stored::Dir) {
            self.total -= content.len() as u64;
        }
    }

    fn put_file(&mut self, path: &str, content: Arc<[u8]>) {
        self.put_parents(path);
        self.remove_below(path);
        self.total += content.len() as u64;
        if let Some(Stored::File(old)) = self.nodes.insert(path.to_owned(), Stored::File(content)) {
            self.total -= old.len() as u64;
        }
    }
}

/// A relative path as the image names it, for messages.
fn in_image(path: &str) -> String {
    match path {
        "" => SUBTREE.to_owned(),
        _ => shown(format!("{SUBTREE}/{path}").as_bytes()),
    }
}

impl Stored {
    fn len(&self) -> u64 {
        match self {
            Stored::Dir => 0,
            Stored::File(content) => content.len() as u64,
        }
    }

    fn as_node(&self) -> Node<'_> {
        match self {
            Stored::Dir => Node::Dir,
            Stored::File(content) => Node::File(content),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::contribution::Step;
    use crate::layers::testutil::*;

    const M: &str = "capi-operator-manifests";

    fn tar(build: impl FnOnce(&mut TarWriter)) -> Vec<u8> {
        let mut writer = TarWriter::new();
        build(&mut writer);
        writer.finish()
    }

    fn merged(tars: &[Vec<u8>]) -> Vec<String> {
        listing(&merge(tars).unwrap())
    }

    #[test]
    fn the_upper_layer_wins() {
        let lower = tar(|t| {
            t.file(&format!("{M}/aws/metadata.yaml"), b"name: aws-old");
            t.file(
                &format!("{M}/aws/manifests.yaml"),
                b"content: from-lower-layer",
            );
        });
        let upper = tar(|t| {
            t.file(
                &format!("{M}/aws/manifests.yaml"),
                b"content: from-higher-layer",
            )
        });
        assert_eq!(
            merged(&[lower, upper]),
            [
                "aws/",
                "aws/manifests.yaml=content: from-higher-layer",
                "aws/metadata.yaml=name: aws-old"
            ]
        );
    }

    #[test]
    fn a_directory_replaces_a_file_and_back() {
        let file = tar(|t| t.file(&format!("{M}/p/x"), b"file"));
        let dir = tar(|t| {
            t.dir(&format!("{M}/p/x/"));
            t.file(&format!("{M}/p/x/y"), b"below");
        });
        let subtree = merge(&[file.clone(), dir.clone()]).unwrap();
        assert_eq!(listing(&subtree), ["p/", "p/x/", "p/x/y=below"]);
        assert_eq!(subtree.total_bytes(), 5);
        let subtree = merge(&[dir, file]).unwrap();
        assert_eq!(listing(&subtree), ["p/", "p/x=file"]);
        assert_eq!(subtree.total_bytes(), 4);
    }

    #[test]
    fn implicit_parents_are_directories_replacing_files() {
        let deep = tar(|t| t.file(&format!("{M}/a/b/c"), b"c"));
        let subtree = merge(std::slice::from_ref(&deep)).unwrap();
        assert!(subtree.exists());
        assert_eq!(listing(&subtree), ["a/", "a/b/", "a/b/c=c"]);
        let files = tar(|t| {
            t.file(&format!("{M}/a"), b"was a file");
            t.file(&format!("{M}/x"), b"x");
        });
        let subtree = merge(&[files, deep]).unwrap();
        assert_eq!(listing(&subtree), ["a/", "a/b/", "a/b/c=c", "x=x"]);
        assert_eq!(subtree.total_bytes(), 2);
    }

    #[test]
    fn the_root_as_a_file() {
        let file = tar(|t| t.file(M, b"not a directory"));
        let subtree = merge(&[profile(), file.clone()]).unwrap();
        assert!(!subtree.exists());
        assert_eq!(listing(&subtree), Vec::<String>::new());
        assert_eq!(subtree.file(""), Some(&b"not a directory"[..]));
        assert_eq!(subtree.total_bytes(), 15);
        let dir = tar(|t| t.dir(&format!("{M}/")));
        let subtree = merge(&[file, dir]).unwrap();
        assert!(subtree.exists());
        assert_eq!(listing(&subtree), Vec::<String>::new());
        assert_eq!(subtree.total_bytes(), 0);
    }

    #[test]
    fn an_image_without_the_subtree() {
        let subtree = merge(&[tar(|t| t.file("etc/hostname", b"x"))]).unwrap();
        assert!(!subtree.exists());
        assert!(!subtree.is_dir(""));
        assert_eq!(subtree.children(""), Vec::<&str>::new());
        assert_eq!(subtree.entries().count(), 0);
        assert_eq!(Subtree::new().total_bytes(), 0);
    }

    fn profile() -> Vec<u8> {
        tar(|t| {
            t.file(&format!("{M}/p/metadata.yaml"), b"meta");
            t.file(&format!("{M}/p/manifests.yaml"), b"manifests");
        })
    }

    #[test]
    fn accessors() {
        let layer = tar(|t| {
            t.file(&format!("{M}/a/x.yaml"), b"x");
            t.file(&format!("{M}/a-b/y.yaml"), b"yy");
            t.file(&format!("{M}/a.c"), b"zzz");
            t.file(&format!("{M}/a/sub/z"), b"");
        });
        let subtree = merge(&[layer]).unwrap();
        assert!(subtree.exists());
        assert_eq!(subtree.children(""), ["a", "a-b", "a.c"]);
        assert_eq!(subtree.children("a"), ["sub", "x.yaml"]);
        assert_eq!(subtree.children("a/sub"), ["z"]);
        assert_eq!(subtree.children("a.c"), Vec::<&str>::new());
        assert_eq!(subtree.children("missing"), Vec::<&str>::new());
        assert!(subtree.is_dir("a") && subtree.is_dir("a/sub") && !subtree.is_dir("a.c"));
        assert_eq!(subtree.file("a-b/y.yaml"), Some(&b"yy"[..]));
        assert_eq!(subtree.file("a"), None);
        assert_eq!(subtree.file("a/nope"), None);
        assert_eq!(subtree.total_bytes(), 6);
        let entries: Vec<_> = subtree.entries().collect();
        assert_eq!(
            entries,
            [
                ("a", Node::Dir),
                ("a-b", Node::Dir),
                ("a-b/y.yaml", Node::File(b"yy")),
                ("a.c", Node::File(b"zzz")),
                ("a/sub", Node::Dir),
                ("a/sub/z", Node::File(b"")),
                ("a/x.yaml", Node::File(b"x")),
            ]
        );
    }

    #[test]
    fn opaque_and_removed_paths_update_the_total() {
        let upper = tar(|t| t.file(&format!("{M}/p/.wh..wh..opq"), b""));
        let subtree = merge(&[profile(), upper]).unwrap();
        assert_eq!(listing(&subtree), ["p/"]);
        assert_eq!(subtree.total_bytes(), 0);
        let upper = tar(|t| t.file(&format!("{M}/p/.wh.manifests.yaml"), b""));
        assert_eq!(merge(&[profile(), upper]).unwrap().total_bytes(), 4);
    }

    #[test]
    fn merged_size_limit() {
        let chunk = vec![b'x'; LIMITS.max_file_size as usize];
        let three = |dir: &str| {
            tar(|t| {
                for i in 0..3 {
                    t.file(&format!("{M}/{dir}/{i}"), &chunk);
                }
            })
        };
        // The same paths twice: replaced, not added up.
        assert_eq!(
            merge(&[three("p"), three("p")]).unwrap().total_bytes(),
            3 << 20
        );
        let err = merge(&[three("p"), three("q")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "capi-operator-manifests/ of the merged layers holds 6291456 bytes, over --max-image-size (4194304 bytes)"
        );
        // A hardlink's copy counts too.
        let links = tar(|t| {
            for i in 0..2 {
                t.hardlink(&format!("{M}/q/{i}"), &format!("{M}/p/{i}"));
            }
        });
        assert!(matches!(
            merge(&[three("p"), links]),
            Err(LayerError::ImageTooLarge {
                total: 5242880,
                limit: 4194304
            })
        ));
    }

    #[test]
    fn merged_entry_cap() {
        let dirs = |prefix: &str| {
            let steps = (0..MAX_ENTRIES / 2 + 1)
                .map(|i| Step {
                    path: format!("{prefix}{i}"),
                    action: Action::Dir,
                })
                .collect();
            Contribution::from_parts(Vec::new(), steps)
        };
        let mut subtree = Subtree::new();
        subtree.apply(&dirs("a"), &LIMITS).unwrap();
        let err = subtree.apply(&dirs("b"), &LIMITS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "capi-operator-manifests/b49998: more than 100000 entries under capi-operator-manifests/"
        );
    }
}
