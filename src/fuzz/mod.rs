//! Fuzz targets: one function per kind of input the binary reads from someone else, shared by the
//! afl.rs binaries (`fuzz/`) and the corpus replay tests (`tests/it/fuzz_corpus.rs`). Each takes
//! arbitrary bytes, must never panic on them, and asserts the invariants its input kind promises
//! (a panic here is a finding). Where one target covers several parsers, the first byte picks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use crate::cluster::objects::{self, Known};
use crate::cluster::{ClusterConfig, dump, pem};
use crate::extract::partial;
use crate::layers::{self, Compression, Limits, Subtree};
use crate::plan::keychain::Keychain;
use crate::plan::mirrors::scope::{covered_len, covers_any_port};
use crate::plan::mirrors::{MirrorKind, MirrorObject, MirrorTable, SourcePolicy};
use crate::reference::Reference;
use crate::registry::byteranges;
use crate::registry::{Descriptor, auth, parse_manifest};
use crate::transport::retry::parse_retry_after;

/// The names of every target, as the fuzz binaries and `tests/corpus/<target>/` spell them.
pub const TARGETS: [&str; 11] = [
    "reference",
    "images",
    "pull_secret",
    "headers",
    "manifest",
    "layer",
    "toc",
    "byteranges",
    "cluster_dump",
    "mirrors",
    "pem",
];

/// Runs the target called `name` on `data`; false when there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    let target: fn(&[u8]) = match name {
        "reference" => reference,
        "images" => images,
        "pull_secret" => pull_secret,
        "headers" => headers,
        "manifest" => manifest,
        "layer" => layer,
        "toc" => toc,
        "byteranges" => byteranges,
        "cluster_dump" => cluster_dump,
        "mirrors" => mirrors,
        "pem" => pem,
        _ => return false,
    };
    target(data);
    true
}

/// Small limits, so that memory stays bounded whatever the input claims.
const LIMITS: Limits = Limits {
    max_file_size: 64 << 10,
    max_image_size: 256 << 10,
};

/// A reference as images.json and mirror rules write it. A parsed reference prints to text that
/// parses back to the same reference (mirror-semantics: references are compared normalised).
pub fn reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(reference) = Reference::parse(text) {
        let printed = reference.to_string();
        let again = Reference::parse(&printed).unwrap_or_else(|e| {
            panic!("{text:?} prints as {printed:?}, which does not parse: {e}")
        });
        assert_eq!(again, reference, "{text:?} does not re-parse to itself");
    }
}

/// images.json (selector even), or the ConfigMap / ConfigMap-volume form: a `{key: reference}`
/// object, the in-memory form of a directory of key files (selector odd).
pub fn images(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        if let Ok(entries) = crate::images::parse_images_json(body, "images.json") {
            check_sorted_unique(entries.iter().map(|e| e.reference_text.as_str()));
        }
        return;
    }
    let Ok(pairs) = serde_json::from_slice::<BTreeMap<String, String>>(body) else {
        return;
    };
    if let Ok(entries) = crate::images::from_named_references(pairs, "volume") {
        check_sorted_unique(entries.iter().map(|e| e.reference_text.as_str()));
    }
}

fn check_sorted_unique<'a>(texts: impl Iterator<Item = &'a str>) {
    let texts: Vec<&str> = texts.collect();
    assert!(
        texts.windows(2).all(|w| w[0] < w[1]),
        "entries not sorted and merged: {texts:?}"
    );
}

/// A pull secret: the `.dockerconfigjson` document or a Secret manifest holding one, and the
/// Secret object as the cluster or a dump gives it.
pub fn pull_secret(data: &[u8]) {
    if let Ok(keychain) = Keychain::parse(data, "fuzz") {
        let _ = keychain.lookup("quay.io", "openshift/capi");
        let _ = keychain.entry("registry.example.com:5000", "a/b");
    }
    if let Ok(object) = serde_json::from_slice::<Value>(data) {
        let mut config = ClusterConfig::default();
        if let Ok(Some(secret)) = objects::pull_secret("fuzz", &object, &mut config) {
            let _ = Keychain::parse(&secret.dockerconfigjson, "fuzz");
        }
    }
}

/// Header values a registry controls: WWW-Authenticate challenges and Retry-After.
pub fn headers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = auth::parse_challenge(text);
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let _ = parse_retry_after(text, now);
}

const MANIFEST_TYPES: [&str; 6] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/json",
    "",
];

/// A manifest or index body under each content type a registry may send (parse_manifest applies
/// the size limit).
pub fn manifest(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let _ = parse_manifest(
        body,
        MANIFEST_TYPES[selector as usize % MANIFEST_TYPES.len()],
    );
}

/// A layer blob (the first byte picks no compression, gzip or zstd) through the tar walk, then
/// applied twice onto one subtree. No path the layer names, and no path of the merged subtree,
/// leaves the subtree (a link target included: links are resolved to files or refused).
pub fn layer(data: &[u8]) {
    let Some((&selector, blob)) = data.split_first() else {
        return;
    };
    let compression =
        [Compression::None, Compression::Gzip, Compression::Zstd][selector as usize % 3];
    let Ok(contribution) = layers::contribution(blob, compression, blob.len() as u64, &LIMITS)
    else {
        return;
    };
    for path in contribution.named_paths() {
        check_inside(path);
    }
    let mut subtree = Subtree::new();
    for _ in 0..2 {
        if subtree.apply(&contribution, &LIMITS).is_err() {
            return;
        }
        let mut total = 0;
        for (path, node) in subtree.entries() {
            check_inside(path);
            if let layers::Node::File(content) = node {
                total += content.len() as u64;
            }
        }
        assert!(total <= LIMITS.max_image_size, "{total} bytes kept");
    }
}

/// A path relative to the subtree root that stays inside it: no absolute path, no `.`, `..` or
/// empty component, no NUL.
fn check_inside(path: &str) {
    if path.is_empty() {
        return;
    }
    assert!(
        !path.starts_with('/')
            && !path.contains('\0')
            && path.split('/').all(|c| !matches!(c, "" | "." | "..")),
        "path {path:?} leaves the subtree"
    );
}

/// A verified TOC's JSON (first byte: even eStargz, odd zstd:chunked) through every check made
/// before a partial pull fetches anything.
pub fn toc(data: &[u8]) {
    let Some((&selector, json)) = data.split_first() else {
        return;
    };
    let layer: Descriptor = serde_json::from_value(serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
        "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "size": 1 << 20,
    }))
    .expect("a valid descriptor");
    let _ = partial::check_toc(json, selector % 2 == 0, &layer, &LIMITS);
}

/// The ranges the byteranges target asks for, of a blob of [`BLOB_SIZE`] bytes.
const RANGES: [std::ops::Range<u64>; 3] = [0..10, 20..30, 100..200];
const BLOB_SIZE: u64 = 1000;

/// A 206 answer: the first line is the Content-Type, the second the Content-Range header, the rest
/// the body (one range, or `multipart/byteranges`). An accepted answer gives each range asked
/// exactly its length; a Content-Range accepted as the answer to a resume from the start of
/// each range asked is exactly the rest of the blob from there.
pub fn byteranges(data: &[u8]) {
    let mut lines = data.splitn(3, |&b| b == b'\n');
    let (Some(content_type), Some(range), body) = (lines.next(), lines.next(), lines.next()) else {
        return;
    };
    let (Ok(content_type), Ok(range)) = (
        std::str::from_utf8(content_type),
        std::str::from_utf8(range),
    ) else {
        return;
    };
    let body = bytes::Bytes::copy_from_slice(body.unwrap_or_default());
    if let Some(parsed) = byteranges::content_range(range) {
        assert!(parsed.first <= parsed.last, "{range:?}");
        let _ = parsed.len();
    }
    for from in RANGES.iter().map(|r| r.start) {
        if let Ok(answered) = byteranges::resume(range, true, from, BLOB_SIZE) {
            assert_eq!(
                (answered.first, answered.last),
                (from, BLOB_SIZE - 1),
                "{range:?}"
            );
            assert!(
                answered.complete.is_none_or(|c| c == BLOB_SIZE),
                "{range:?}"
            );
        }
        assert!(byteranges::resume(range, false, from, BLOB_SIZE).is_err());
    }
    if let Ok(parts) = byteranges::answer(&RANGES, BLOB_SIZE, content_type, range, body) {
        assert_eq!(parts.len(), RANGES.len());
        for (part, asked) in parts.iter().zip(&RANGES) {
            assert_eq!(part.len() as u64, asked.end - asked.start);
        }
    }
}

/// One cluster dump file (first byte: even YAML, odd JSON): single objects, Lists, several
/// documents, the operator's image list included.
pub fn cluster_dump(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let path = Path::new(if selector % 2 == 0 {
        "dump.yaml"
    } else {
        "dump.json"
    });
    if let Ok(config) = dump::read_file_bytes(path, body, Some("openshift-cluster-api-operator"))
        && let Some(list) = config.image_list
    {
        let _ = list.entries();
    }
}

/// Mirror objects and image.config as the cluster gives them, then references planned through
/// the table: `{"objects": [IDMS|ITMS|ICSP…], "image": image.config, "references": [...]}`.
///
/// Invariant (mirror-semantics §3–§5, vectors 21, 39): a pull source the table leaves
/// contactable is covered by no `blockedRegistries` scope, is allowed by `allowedRegistries`
/// when that is set, and is under no NeverContactSource rule unless a rule at least as specific
/// that does not block covers it.
pub fn mirrors(data: &[u8]) {
    let Ok(Value::Object(input)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let mut mirror_objects = Vec::new();
    for object in input
        .get("objects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let field = |name: &str| object.get(name).and_then(Value::as_str).unwrap_or("");
        if let Some(Known::Mirror(kind)) = Known::classify(field("apiVersion"), field("kind"))
            && let Ok(mirror) = objects::mirror_object(kind, object)
        {
            mirror_objects.push(mirror);
        }
    }
    let sources = match input.get("image").map(objects::image_config) {
        Some(Ok((_, sources))) => sources,
        Some(Err(_)) => return,
        None => Default::default(),
    };
    let table = MirrorTable::new(&mirror_objects, &sources);
    let _ = table.warnings();
    let policies = Policies::of(&mirror_objects);
    let references = input.get("references").and_then(Value::as_array);
    for text in references.into_iter().flatten().filter_map(Value::as_str) {
        let Ok(image) = Reference::parse(text) else {
            continue;
        };
        let _ = table.departures(&image);
        let Ok(pulls) = table.pull_sources(&image) else {
            continue;
        };
        for pull in pulls.iter().filter(|p| p.blocked.is_none()) {
            let physical = &pull.reference;
            if let Some(scope) = sources
                .blocked
                .iter()
                .find(|s| covers_any_port(s, physical))
            {
                panic!("{physical} is contactable under blockedRegistries {scope}");
            }
            assert!(
                sources.allowed.is_empty()
                    || sources
                        .allowed
                        .iter()
                        .any(|s| covered_len(s, &image).is_some()),
                "{image} is not in allowedRegistries yet {physical} is contactable"
            );
            if let Some(never) = policies.unshadowed_never(physical) {
                panic!("{physical} is contactable under NeverContactSource {never}");
            }
        }
    }
}

/// The rule sources of the mirror objects by what they say about contacting the source, worked
/// out on their own from the objects (not from the table under test).
struct Policies {
    /// Sources of NeverContactSource rules with a real mirror, and of conflicting policies.
    blocking: BTreeSet<String>,
    /// Sources of rules with a real mirror that do not block.
    open: BTreeSet<String>,
}

impl Policies {
    fn of(mirror_objects: &[MirrorObject]) -> Policies {
        let mut never = BTreeSet::new();
        let mut allow = BTreeSet::new();
        let mut never_kept = BTreeSet::new();
        let mut kept = BTreeSet::new();
        for object in mirror_objects {
            for rule in &object.rules {
                let never_contact = object.kind != MirrorKind::ImageContentSourcePolicy
                    && rule.policy == Some(SourcePolicy::NeverContactSource);
                let source = rule.source.clone();
                let real_mirror = rule.mirrors.iter().any(|m| *m != rule.source);
                if never_contact {
                    never.insert(source.clone());
                } else {
                    allow.insert(source.clone());
                }
                if real_mirror {
                    if never_contact {
                        never_kept.insert(source.clone());
                    }
                    kept.insert(source);
                }
            }
        }
        let blocking: BTreeSet<String> = never_kept
            .into_iter()
            .chain(never.intersection(&allow).cloned())
            .collect();
        let open = kept.difference(&blocking).cloned().collect();
        Policies { blocking, open }
    }

    /// A blocking source that covers `physical` (on any port of its host) and that no open
    /// source at least as long covers as well.
    fn unshadowed_never(&self, physical: &Reference) -> Option<&str> {
        self.blocking
            .iter()
            .filter(|never| covers_any_port(never, physical))
            .find(|never| {
                !self
                    .open
                    .iter()
                    .any(|open| open.len() >= never.len() && covered_len(open, physical).is_some())
            })
            .map(String::as_str)
    }
}

/// A PEM bundle as a CA ConfigMap holds it. What is kept re-scans to the same certificates.
pub fn pem(data: &[u8]) {
    let scan = pem::scan(data);
    let again = pem::scan(&scan.pem);
    assert_eq!(again.certificates, scan.certificates);
    assert_eq!(again.skipped, 0);
    assert_eq!(again.pem, scan.pem);
}
