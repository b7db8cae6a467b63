//! Reading images.json (the operator's images ConfigMap, `{"component-name": "image-ref", ...}`),
//! or a ConfigMap's keys as component names with one reference each (the operator's newer
//! `capi-installer-images`), from a file, a mounted ConfigMap volume or the cluster; and naming
//! each image's volume the way the operator does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::reference::{Reference, ReferenceError};
use crate::registry::sha256_hex;

/// One distinct image to pull, with every component name that lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// The reference exactly as written in images.json; the volume name and index.json use it.
    pub(crate) reference_text: String,
    pub(crate) reference: Reference,
    /// Every key listing this reference, sorted.
    pub(crate) names: Vec<String>,
    /// [`volume_name`] of `reference_text`.
    pub(crate) volume: String,
}

/// Why images.json was refused. Each message names the file; the cause is also the
/// [`source`](std::error::Error::source) so callers can inspect it.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error("cannot read images file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not valid JSON: {source}")]
    Json {
        file: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(r#"{file}: expected a flat JSON object {{"component-name": "image-ref", ...}}, found {found}"#)]
    NotAnObject { file: String, found: &'static str },
    #[error("{file}: entry {key:?}: expected an image reference string, found {found}")]
    NotAString {
        file: String,
        key: String,
        found: &'static str,
    },
    /// The value as written is `source.input`, and the reference error's message quotes it.
    #[error("{file}: entry {key:?}: {source}")]
    InvalidReference {
        file: String,
        key: String,
        #[source]
        source: ReferenceError,
    },
    /// A directory given as `--images-json` holding something a ConfigMap volume does not.
    #[error("{}: {why} (expected a ConfigMap volume: images.json, or one file per key)", path.display())]
    NotAConfigMapVolume { path: PathBuf, why: String },
}

/// Parses and validates every entry before anything is pulled; duplicate refs (same text as
/// written) collapse into one ImageEntry with all their keys in `names`; result sorted by
/// reference_text.
///
/// `source` names the file in errors. An empty object is valid and yields no images. When the
/// JSON repeats a key, the last value wins, as with the operator's Go `encoding/json` decoding.
pub(crate) fn parse_images_json(
    bytes: &[u8],
    source: &str,
) -> Result<Vec<ImageEntry>, ImagesError> {
    let file = || source.to_string();
    let value: Value = serde_json::from_slice(bytes).map_err(|e| ImagesError::Json {
        file: file(),
        source: e,
    })?;
    let Value::Object(object) = value else {
        return Err(ImagesError::NotAnObject {
            file: file(),
            found: json_type(&value),
        });
    };
    entries_of(object, source)
}

/// Entries from `{component-name: reference}` pairs: the keys of a ConfigMap such as
/// `capi-installer-images`, or the files of its volume. Values are used as written, as the
/// operator uses them; validated, merged and sorted as [`parse_images_json`] does.
pub fn from_named_references(
    pairs: BTreeMap<String, String>,
    source: &str,
) -> Result<Vec<ImageEntry>, ImagesError> {
    let object = pairs
        .into_iter()
        .map(|(key, value)| (key, Value::String(value)))
        .collect();
    entries_of(object, source)
}

fn entries_of(
    object: serde_json::Map<String, Value>,
    source: &str,
) -> Result<Vec<ImageEntry>, ImagesError> {
    let file = || source.to_string();
    // Keyed by the text as written: two spellings of one image (`busybox`,
    // `docker.io/library/busybox`) are distinct volumes for the operator, so stay distinct here.
    let mut by_text: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Sorted by key, whatever order the map iterates in, so that each `names` list comes out
    // sorted and the error reported for a file with several bad entries is always the same one.
    let mut entries: Vec<(String, Value)> = object.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, value) in entries {
        let Value::String(text) = value else {
            return Err(ImagesError::NotAString {
                file: file(),
                found: json_type(&value),
                key,
            });
        };
        by_text.entry(text).or_default().push(key);
    }

    by_text
        .into_iter()
        .map(|(text, names)| {
            let reference = Reference::parse(&text).map_err(|e| ImagesError::InvalidReference {
                file: file(),
                // Several keys may list the same bad value; the first (sorted) one is named.
                key: names.first().cloned().unwrap_or_default(),
                source: e,
            })?;
            Ok(ImageEntry {
                volume: volume_name(&text),
                reference_text: text,
                reference,
                names,
            })
        })
        .collect()
}

/// Entries for references given on a command line (no images.json names), deduplicated and sorted.
pub(crate) fn from_references(texts: &[String]) -> Result<Vec<ImageEntry>, ReferenceError> {
    let unique: std::collections::BTreeSet<&String> = texts.iter().collect();
    unique
        .into_iter()
        .map(|text| {
            Ok(ImageEntry {
                volume: volume_name(text),
                reference: Reference::parse(text)?,
                reference_text: text.clone(),
                names: Vec::new(),
            })
        })
        .collect()
}

/// Reads and parses images.json at `path`; see [`parse_images_json`].
pub(crate) fn read_images_json(path: &Path) -> Result<Vec<ImageEntry>, ImagesError> {
    let bytes = std::fs::read(path).map_err(|e| ImagesError::Read {
        path: path.to_path_buf(),
        source: e,
    })?;
    parse_images_json(&bytes, &path.display().to_string())
}

/// `--images-json`: a file is images.json; a directory is a ConfigMap as the kubelet mounts it:
/// its `images.json`, or else one file per key holding one reference.
pub fn read_images_path(path: &Path) -> Result<Vec<ImageEntry>, ImagesError> {
    let read_error = |source| ImagesError::Read {
        path: path.to_path_buf(),
        source,
    };
    if !std::fs::metadata(path).map_err(read_error)?.is_dir() {
        return read_images_json(path);
    }
    let images_json = path.join("images.json");
    if images_json.exists() {
        return read_images_json(&images_json);
    }
    read_key_files(path).and_then(|pairs| from_named_references(pairs, &path.display().to_string()))
}

/// The keys of a mounted ConfigMap and their values. The kubelet writes the data into a
/// `..<timestamp>` directory, points `..data` at it and links each key through `..data`, so
/// `..` entries are its machinery, and keys are followed through their links.
fn read_key_files(dir: &Path) -> Result<BTreeMap<String, String>, ImagesError> {
    let read_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImagesError::Read { path, source }
    };
    let mut pairs = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(read_error(dir))? {
        let path = entry.map_err(read_error(dir))?.path();
        let Some(key) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            return Err(ImagesError::NotAConfigMapVolume {
                path,
                why: "a file name that is not UTF-8".into(),
            });
        };
        if key.starts_with("..") {
            continue;
        }
        if !std::fs::metadata(&path)
            .map_err(read_error(&path))?
            .is_file()
        {
            return Err(ImagesError::NotAConfigMapVolume {
                path,
                why: "not a file".into(),
            });
        }
        let bytes = std::fs::read(&path).map_err(read_error(&path))?;
        let value = String::from_utf8(bytes).map_err(|_| ImagesError::NotAConfigMapVolume {
            path: path.clone(),
            why: "not UTF-8 text".into(),
        })?;
        pairs.insert(key, value);
    }
    Ok(pairs)
}

/// The operator's image-volume name: last path segment of the ref *as written* before '@' (a
/// ":tag" stays part of it), lowercased, every char outside [a-z0-9-] → '-', then '-' and the
/// first 8 hex chars of sha256(ref as written); prefixed "img-" when the result would not start
/// with [a-z0-9].
///
/// The hash keeps names of different refs with the same last segment (`a/x:v1`, `b/x:v1`)
/// apart. References reaching here have been validated and are ASCII; any other character
/// would become '-' too.
pub(crate) fn volume_name(reference_text: &str) -> String {
    let before_digest = reference_text
        .split_once('@')
        .map_or(reference_text, |(name, _)| name);
    let segment = before_digest
        .rsplit_once('/')
        .map_or(before_digest, |(_, last)| last);
    let mut name: String = segment
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let hash = sha256_hex(reference_text.as_bytes());
    name.push('-');
    name.push_str(&hash[..8]);
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        name.insert_str(0, "img-");
    }
    name
}

/// How a JSON value's type is named in error messages.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Usage errors (bad images.json): exit 2.
impl crate::error::ExitStatus for ImagesError {
    fn exit_code(&self) -> u8 {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`, a DNS label's shape (length is not part of the rule).
    fn is_dns_label(s: &str) -> bool {
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        s.starts_with(ok) && s.ends_with(ok) && s.chars().all(|c| ok(c) || c == '-')
    }

    #[test]
    fn volume_name_matches_hashes_computed_outside_rust() {
        // Expected hashes from `printf %s REF | sha256sum`.
        assert_eq!(
            volume_name("quay.io/openshift/capi-aws:v1"),
            "capi-aws-v1-29ace21c"
        );
        assert_eq!(
            volume_name("registry.example.com/My.Provider_AWS@sha256:abc123"),
            "my-provider-aws-2987a5ef"
        );
        assert_eq!(volume_name("quay.io/ns/_odd:v1"), "img--odd-v1-a8daece4");
    }

    #[test]
    fn volume_names_are_dns_label_shaped_stable_and_distinct() {
        let refs = [
            "registry.example.com/My.Provider_AWS@sha256:abc123",
            "quay.io/openshift/capi-aws:v1",
            "quay.io/openshift/capi-aws:v2",
            "quay.io/other/capi-aws:v1",
            "busybox",
            "localhost:5000/x",
            "[::1]:5000/x:y",
            "quay.io/ns/_odd:v1",
            "quay.io/ns/.odd",
            "",
        ];
        for r in refs {
            let name = volume_name(r);
            assert!(is_dns_label(&name), "{r:?} → {name:?}");
            assert_eq!(name, volume_name(r), "same ref, same name");
        }
        let mut names: Vec<String> = refs.iter().map(|r| volume_name(r)).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), refs.len(), "different refs, different names");
        // The digest is not part of the readable prefix, a tag is; hashes still differ.
        assert!(volume_name(&format!("quay.io/a/b@{D}")).starts_with("b-"));
        assert!(volume_name(&format!("quay.io/a/b:v1@{D}")).starts_with("b-v1-"));
        assert!(volume_name("quay.io/ns/_odd:v1").starts_with("img-"));
    }

    #[test]
    fn duplicates_collapse_and_results_are_sorted() {
        let json = format!(
            r#"{{"zeta": "quay.io/a/z:v1", "alpha": "quay.io/a/z:v1", "mid": "busybox",
                "digested": "quay.io/a/z:v1@{D}", "hub": "docker.io/library/busybox"}}"#
        );
        let entries = parse_images_json(json.as_bytes(), "images.json").unwrap();
        let texts: Vec<&str> = entries.iter().map(|e| e.reference_text.as_str()).collect();
        let digested = format!("quay.io/a/z:v1@{D}");
        assert_eq!(
            texts,
            [
                "busybox",
                "docker.io/library/busybox",
                "quay.io/a/z:v1",
                &digested
            ]
        );
        let z = &entries[2];
        assert_eq!(z.names, ["alpha", "zeta"]);
        assert_eq!(z.reference, Reference::parse("quay.io/a/z:v1").unwrap());
        assert_eq!(z.volume, volume_name("quay.io/a/z:v1"));
        // Same image, different spelling: separate entries, because the operator's volume
        // names differ.
        assert_eq!(entries[0].reference, entries[1].reference);
        assert_ne!(entries[0].volume, entries[1].volume);
        // Tag and digest together are accepted; the digest is what gets pulled.
        assert_eq!(entries[3].reference.object(), D);
        assert_eq!(entries[3].reference.tag.as_deref(), Some("v1"));
    }

    #[test]
    fn empty_object_is_zero_images() {
        assert!(parse_images_json(b"{}", "images.json").unwrap().is_empty());
        assert!(
            parse_images_json(b" \n{ }\n", "images.json")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn invalid_reference_names_key_and_value() {
        let json = br#"{"good": "quay.io/a/b:v1", "aws": "quay.io/Foo/bar:v1"}"#;
        let err = parse_images_json(json, "/etc/images/images.json").unwrap_err();
        let ImagesError::InvalidReference { file, key, source } = &err else {
            panic!("unexpected error {err:?}");
        };
        assert_eq!(file, "/etc/images/images.json");
        assert_eq!(key, "aws");
        assert_eq!(source.input, "quay.io/Foo/bar:v1");
        assert_eq!(
            err.to_string(),
            r#"/etc/images/images.json: entry "aws": invalid image reference "quay.io/Foo/bar:v1": repository name must be lowercase"#
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn invalid_reference_listed_twice_names_the_first_key() {
        let json =
            br#"{"b": "not a valid image reference!!!", "a": "not a valid image reference!!!"}"#;
        let err = parse_images_json(json, "images.json").unwrap_err();
        assert!(
            matches!(&err, ImagesError::InvalidReference { key, .. } if key == "a"),
            "{err}"
        );
    }

    #[test]
    fn shape_errors_name_the_file_and_cause() {
        let not_object = parse_images_json(br#"["quay.io/a/b:v1"]"#, "images.json").unwrap_err();
        assert!(matches!(
            not_object,
            ImagesError::NotAnObject {
                found: "an array",
                ..
            }
        ));
        assert!(not_object.to_string().starts_with("images.json: expected"));

        let scalar = parse_images_json(br#""quay.io/a/b:v1""#, "images.json").unwrap_err();
        assert!(matches!(
            scalar,
            ImagesError::NotAnObject {
                found: "a string",
                ..
            }
        ));

        for (json, found) in [
            (r#"{"a": 1}"#, "a number"),
            (r#"{"a": null}"#, "null"),
            (r#"{"a": ["quay.io/a/b"]}"#, "an array"),
            (r#"{"a": {"image": "quay.io/a/b"}}"#, "an object"),
            (r#"{"a": true}"#, "a boolean"),
        ] {
            let err = parse_images_json(json.as_bytes(), "images.json").unwrap_err();
            assert!(
                matches!(&err, ImagesError::NotAString { key, found: f, .. } if key == "a" && *f == found),
                "{json}: {err:?}"
            );
            assert!(err.to_string().contains(r#"entry "a""#), "{err}");
        }

        for json in [
            &b"{"[..],
            b"",
            b"{\"a\": \"b\",}",
            b"not json",
            b"{\"a\": \"b\"} x",
        ] {
            let err = parse_images_json(json, "images.json").unwrap_err();
            assert!(matches!(err, ImagesError::Json { .. }), "{err:?}");
            assert!(err.to_string().starts_with("images.json: not valid JSON: "));
        }
    }

    #[test]
    fn empty_reference_is_invalid() {
        let err = parse_images_json(br#"{"a": ""}"#, "images.json").unwrap_err();
        assert!(matches!(err, ImagesError::InvalidReference { .. }), "{err}");
    }

    #[test]
    fn read_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let err = read_images_json(&missing).unwrap_err();
        assert!(matches!(err, ImagesError::Read { .. }));
        assert!(err.to_string().contains(&missing.display().to_string()));

        let present = dir.path().join("images.json");
        std::fs::write(&present, br#"{"aws": "quay.io/openshift/capi-aws:v1"}"#).unwrap();
        let entries = read_images_json(&present).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].volume, "capi-aws-v1-29ace21c");

        std::fs::write(&present, b"[]").unwrap();
        let err = read_images_json(&present).unwrap_err();
        assert!(err.to_string().starts_with(&present.display().to_string()));
    }
    /// A ConfigMap volume as the kubelet writes it: keys are links through `..data` to a
    /// `..<timestamp>` directory.
    fn config_map_volume(keys: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("..2024_05_01_10_00_00.123456789");
        std::fs::create_dir(&data).unwrap();
        for (key, value) in keys {
            std::fs::write(data.join(key), value).unwrap();
            std::os::unix::fs::symlink(format!("..data/{key}"), dir.path().join(key)).unwrap();
        }
        std::os::unix::fs::symlink(data.file_name().unwrap(), dir.path().join("..data")).unwrap();
        dir
    }

    /// Issue 15 item 3: `--images-json DIR` reads a mounted ConfigMap: its images.json key.
    #[test]
    fn a_mounted_config_map_with_images_json_is_read_through_its_links() {
        let volume = config_map_volume(&[
            ("images.json", r#"{"aws": "quay.io/openshift/capi-aws:v1"}"#),
            ("other", "not read: images.json is there"),
        ]);
        let entries = read_images_path(volume.path()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].names, ["aws"]);
        assert_eq!(entries[0].volume, "capi-aws-v1-29ace21c");
    }

    /// Issue 15 item 3: without images.json, each key of the mounted ConfigMap is a component
    /// and its file one reference (capi-installer-images); `..data` and `..<timestamp>` are skipped.
    #[test]
    fn a_mounted_config_map_of_one_reference_per_key() {
        let volume = config_map_volume(&[
            ("aws", "quay.io/openshift/capi-aws:v1"),
            ("gcp", "quay.io/openshift/capi-gcp:v1"),
            ("aws-again", "quay.io/openshift/capi-aws:v1"),
        ]);
        let entries = read_images_path(volume.path()).unwrap();
        let seen: Vec<(&str, &[String])> = entries
            .iter()
            .map(|e| (e.reference_text.as_str(), e.names.as_slice()))
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "quay.io/openshift/capi-aws:v1",
                    &["aws".to_string(), "aws-again".to_string()][..]
                ),
                ("quay.io/openshift/capi-gcp:v1", &["gcp".to_string()][..]),
            ]
        );
    }

    /// Issue 15 item 3: errors name the directory and the key; a value is used as written.
    #[test]
    fn a_bad_key_file_is_named() {
        let volume = config_map_volume(&[("aws", "quay.io/openshift/capi-aws:v1\n")]);
        let err = read_images_path(volume.path()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ImagesError::InvalidReference { ref key, .. } if key == "aws"));
        assert!(
            text.starts_with(&volume.path().display().to_string()),
            "{text}"
        );

        let nested = tempfile::tempdir().unwrap();
        std::fs::create_dir(nested.path().join("sub")).unwrap();
        let err = read_images_path(nested.path()).unwrap_err();
        assert!(
            matches!(err, ImagesError::NotAConfigMapVolume { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("sub"), "{err}");

        let empty = tempfile::tempdir().unwrap();
        assert!(read_images_path(empty.path()).unwrap().is_empty());
    }
}
