//! Tar names: lexical cleaning, where a name falls relative to the subtree, and whiteout markers.

use super::{LayerError, MAX_PATH_LEN, SUBTREE, shown};

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// Splits a tar name into its components, cleaned lexically (`.` and empty components dropped,
/// `x/..` folded) against the image root. The empty list is the image root itself. Refuses, with
/// the reason, names a runtime would have to re-root or refuse: we never guess what was meant.
pub(super) fn clean(name: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    if name.contains(&0) {
        return Err("contains a NUL byte");
    }
    if name.first() == Some(&b'/') {
        return Err("is an absolute path");
    }
    let mut components = Vec::new();
    for component in name.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                if components.pop().is_none() {
                    return Err("escapes the image root");
                }
            }
            _ => components.push(component),
        }
    }
    Ok(components)
}

/// The cleaned name, or the hostile-layer error naming the raw one.
pub(super) fn clean_or_hostile(name: &[u8]) -> Result<Vec<&[u8]>, LayerError> {
    clean(name).map_err(|reason| LayerError::Hostile {
        path: shown(name),
        reason: reason.to_owned(),
    })
}

/// The components below the subtree root when `components` is the root or inside it.
pub(super) fn in_subtree<'c, 'a>(components: &'c [&'a [u8]]) -> Option<&'c [&'a [u8]]> {
    match components.split_first() {
        Some((first, rest)) if *first == SUBTREE.as_bytes() => Some(rest),
        _ => None,
    }
}

/// The path of a node relative to the subtree root, as `Subtree` stores it ("" is the root).
/// `raw` is the tar name, for the error.
pub(super) fn relative(below: &[&[u8]], raw: &[u8]) -> Result<String, LayerError> {
    let joined = below.join(&b'/');
    if joined.len() + SUBTREE.len() + 1 > MAX_PATH_LEN {
        return Err(LayerError::BadName {
            path: shown(raw),
            reason: format!("name is longer than {MAX_PATH_LEN} bytes"),
        });
    }
    String::from_utf8(joined).map_err(|_| LayerError::BadName {
        path: shown(raw),
        reason: "name is not valid UTF-8".to_owned(),
    })
}

/// What a whiteout entry asks for (OCI image-spec, layer.md "Whiteouts").
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Marker<'a> {
    /// `.wh.<name>`: hide this path, and all below it, of the lower layers.
    Remove(Vec<&'a [u8]>),
    /// `.wh..wh..opq`: hide the lower layers' contents of the parent directory.
    Opaque,
    /// Any other `.wh..wh.` name: AUFS bookkeeping, meaningless in an image.
    Meta,
}

/// The whiteout that a cleaned name is, if any. `.wh.`, `.wh..` and `.wh...` would name the
/// directory itself or its parent, so they are refused rather than obeyed.
pub(super) fn whiteout<'a>(components: &[&'a [u8]]) -> Result<Option<Marker<'a>>, &'static str> {
    let Some((base, parent)) = components.split_last() else {
        return Ok(None);
    };
    let Some(hidden) = base.strip_prefix(WHITEOUT) else {
        return Ok(None);
    };
    if *base == OPAQUE {
        return Ok(Some(Marker::Opaque));
    }
    if hidden.starts_with(WHITEOUT) {
        return Ok(Some(Marker::Meta));
    }
    if matches!(hidden, b"" | b"." | b"..") {
        return Err("is a whiteout of no name, of its directory or of its parent");
    }
    let mut target = parent.to_vec();
    target.push(hidden);
    Ok(Some(Marker::Remove(target)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cleaned(name: &str) -> Result<String, &'static str> {
        clean(name.as_bytes()).map(|c| String::from_utf8(c.join(&b'/')).unwrap())
    }

    #[test]
    fn cleaning_folds_dots_and_slashes() {
        assert_eq!(
            cleaned("./capi-operator-manifests/p/x"),
            Ok("capi-operator-manifests/p/x".into())
        );
        assert_eq!(cleaned("a/./b"), Ok("a/b".into()));
        assert_eq!(cleaned("a//b/"), Ok("a/b".into()));
        assert_eq!(cleaned("a/x/../b"), Ok("a/b".into()));
        assert_eq!(cleaned("a/.."), Ok("".into()));
        assert_eq!(cleaned("./"), Ok("".into()));
        assert_eq!(cleaned(""), Ok("".into()));
        assert_eq!(cleaned("..\\evil"), Ok("..\\evil".into()));
    }

    #[test]
    fn cleaning_refuses_escapes() {
        assert_eq!(cleaned("../evil"), Err("escapes the image root"));
        assert_eq!(cleaned("a/../../evil"), Err("escapes the image root"));
        assert_eq!(cleaned("./.."), Err("escapes the image root"));
        assert_eq!(cleaned("/etc/evil"), Err("is an absolute path"));
        assert_eq!(cleaned("//etc"), Err("is an absolute path"));
        assert_eq!(cleaned("a\0b"), Err("contains a NUL byte"));
    }

    #[test]
    fn subtree_membership_is_by_first_component() {
        let c = clean(b"capi-operator-manifests/p/x").unwrap();
        assert_eq!(in_subtree(&c), Some(&[&b"p"[..], &b"x"[..]][..]));
        let root = clean(b"capi-operator-manifests/").unwrap();
        assert_eq!(in_subtree(&root), Some(&[][..]));
        assert_eq!(
            in_subtree(&clean(b"capi-operator-manifests-x/p").unwrap()),
            None
        );
        assert_eq!(
            in_subtree(&clean(b"etc/capi-operator-manifests").unwrap()),
            None
        );
        assert_eq!(in_subtree(&[]), None);
    }

    #[test]
    fn relative_paths_must_be_utf8_and_short() {
        assert_eq!(relative(&[b"p", b"x.yaml"], b"raw").unwrap(), "p/x.yaml");
        assert_eq!(relative(&[], b"raw").unwrap(), "");
        let err = relative(&[b"\xff"], b"capi-operator-manifests/\xff").unwrap_err();
        assert_eq!(
            err.to_string(),
            "capi-operator-manifests/\u{fffd}: name is not valid UTF-8"
        );
        let long = vec![b'a'; MAX_PATH_LEN];
        let err = relative(&[&long], b"long").unwrap_err();
        assert_eq!(err.to_string(), "long: name is longer than 4096 bytes");
    }

    #[test]
    fn whiteout_markers() {
        let marker =
            |name: &str| whiteout(&clean(name.as_bytes()).unwrap()).map(|m| format!("{m:?}"));
        assert_eq!(marker("a/b"), Ok("None".into()));
        assert_eq!(
            marker("a/.wh.b"),
            Ok(format!("{:?}", Some(Marker::Remove(vec![b"a", b"b"]))))
        );
        assert_eq!(
            marker(".wh.x"),
            Ok(format!("{:?}", Some(Marker::Remove(vec![b"x"]))))
        );
        assert_eq!(marker("a/.wh..wh..opq"), Ok("Some(Opaque)".into()));
        assert_eq!(marker("a/.wh..wh.plnk"), Ok("Some(Meta)".into()));
        for hostile in ["a/.wh.", "a/.wh..", "a/.wh...", ".wh.."] {
            assert!(marker(hostile).is_err(), "{hostile}");
        }
    }
}
