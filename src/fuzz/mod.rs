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
use crate::plan::mirrors::{MirrorKind, MirrorObject, MirrorTable, RegistrySources, SourcePolicy};
use crate::policy::keys::PublicKey;
use crate::policy::rekor::{self, Signer};
use crate::policy::spec::ImagePolicySpec;
use crate::policy::{
    Attachment, PolicyObject, PolicyResource, RenderedPolicy, check_scope, payload,
};
use crate::reference::Reference;
use crate::registry::byteranges;
use crate::registry::{Descriptor, auth, parse_manifest};
use crate::transport::retry::parse_retry_after;

/// The names of every target, as the fuzz binaries and `tests/corpus/<target>/` spell them.
pub const TARGETS: [&str; 14] = [
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
    "signature_payload",
    "rekor_set",
    "policy_render",
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
        "signature_payload" => signature_payload,
        "rekor_set" => rekor_set,
        "policy_render" => policy_render,
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

/// A cosign simple-signing payload (signature-policy §3 step 6). An accepted payload's reference
/// and digest are the ones the input's JSON holds, and the payload written back from them with
/// the input's type parses to the same fields.
pub fn signature_payload(data: &[u8]) {
    let Ok(parsed) = payload::parse(data) else {
        return;
    };
    // Only the critical fields are read back: serde_json, like Go's decoder, skips what it
    // ignores without checking its UTF-8 or its numbers' range, so the rest need not be valid
    // as a `Value`.
    #[derive(serde::Deserialize)]
    struct Written {
        critical: WrittenCritical,
    }
    #[derive(serde::Deserialize)]
    struct WrittenCritical {
        identity: BTreeMap<String, String>,
        image: BTreeMap<String, String>,
        #[serde(rename = "type")]
        kind: String,
    }
    let input: Written = serde_json::from_slice(data).expect("an accepted payload is JSON");
    let critical = &input.critical;
    assert_eq!(
        critical.identity.get("docker-reference"),
        Some(&parsed.docker_reference)
    );
    assert_eq!(
        critical.image.get("docker-manifest-digest"),
        Some(&parsed.manifest_digest)
    );
    let written = serde_json::json!({
        "critical": {
            "identity": {"docker-reference": parsed.docker_reference},
            "image": {"docker-manifest-digest": parsed.manifest_digest},
            "type": critical.kind,
        },
        "optional": null,
    });
    let again = payload::parse(written.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{written} does not parse again: {e}"));
    assert_eq!(again, parsed);
}

/// The signature and payload the `rekor_set` target's SETs must name.
pub const REKOR_SIGNATURE: &[u8] = b"fuzz signature";
pub const REKOR_PAYLOAD: &[u8] = b"fuzz payload";
/// The signer a `rekor_set` body names: this P-256 key (made for the target, public only)…
pub const REKOR_SIGNER_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEvQvuID+sEW48mh1Gjomk1M4QNWIq
d/Eu4YPRpbmYQUEhzI/cosGemGxDTVD8aE858oS+AchQ1qkuKCFHRjt7FA==
-----END PUBLIC KEY-----
";
/// …or, as a Fulcio leaf, these bytes (compared, never parsed as a certificate).
pub const REKOR_SIGNER_CERTIFICATE: &[u8] = b"fuzz certificate";
const REKOR_TIME: i64 = 1_700_000_000;

/// The Rekor key of this process: a fresh P-256 pair, so that no input is signed by it unless
/// the target signs it.
fn rekor_key() -> &'static (ring::signature::EcdsaKeyPair, PublicKey) {
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
    static KEY: std::sync::OnceLock<(EcdsaKeyPair, PublicKey)> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .expect("a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .expect("its own PKCS#8");
        // SubjectPublicKeyInfo of a P-256 key: fixed prefix, then the uncompressed point.
        let mut spki =
            hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").expect("hex");
        spki.extend_from_slice(pair.public_key().as_ref());
        let key = PublicKey::from_spki(&spki).expect("a P-256 SPKI");
        (pair, key)
    })
}

/// The Rekor SET of `dev.sigstore.cosign/bundle` (signature-policy §3 "Rekor SET"). The first
/// byte picks: even, the rest is a whole SET, which never verifies (no input holds a signature
/// by this process's Rekor key); odd, the rest is the `hashedrekord` body, put in a SET the
/// target signs, which verifies only when the body names exactly the expected signature,
/// payload hash and signer (bit 1: a key, else a certificate). Whatever the input, its
/// canonical JSON (RFC 8785) re-parsed canonicalizes to the same bytes.
pub fn rekor_set(data: &[u8]) {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if let Ok(value) = serde_json::from_slice::<Value>(rest) {
        let mut canonical = Vec::new();
        if rekor::canonicalize(&value, &mut canonical).is_ok() {
            let again: Value = serde_json::from_slice(&canonical)
                .unwrap_or_else(|e| panic!("canonical output is not JSON: {e}"));
            let mut twice = Vec::new();
            rekor::canonicalize(&again, &mut twice).expect("canonical output canonicalizes");
            assert_eq!(canonical, twice, "canonical JSON is not idempotent");
        }
    }
    let (pair, rekor_key) = rekor_key();
    let signer_key = PublicKey::from_pem(REKOR_SIGNER_KEY.as_bytes()).expect("the signer key");
    let signer = if selector & 2 == 0 {
        Signer::Key(&signer_key)
    } else {
        Signer::Certificate(REKOR_SIGNER_CERTIFICATE)
    };
    let keys = std::slice::from_ref(rekor_key);
    if selector % 2 == 0 {
        let verified = rekor::verify(rest, keys, REKOR_SIGNATURE, REKOR_PAYLOAD, signer);
        assert!(
            verified.is_err(),
            "a SET not signed by the Rekor key verifies"
        );
        return;
    }
    let set_payload = serde_json::json!({
        "body": STANDARD.encode(rest),
        "integratedTime": REKOR_TIME,
        "logIndex": 1,
        "logID": "fuzz",
    });
    let mut canonical = Vec::new();
    rekor::canonicalize(&set_payload, &mut canonical).expect("an integer-only payload");
    let set_signature = pair
        .sign(&ring::rand::SystemRandom::new(), &canonical)
        .expect("ECDSA signing");
    let set = serde_json::json!({
        "SignedEntryTimestamp": STANDARD.encode(set_signature.as_ref()),
        "Payload": set_payload,
    });
    let set = set.to_string();
    let verified = rekor::verify(set.as_bytes(), keys, REKOR_SIGNATURE, REKOR_PAYLOAD, signer);
    if let Ok(time) = verified {
        assert_eq!(time, REKOR_TIME);
        let body: Value = serde_json::from_slice(rest).expect("an accepted body is JSON");
        let spec = &body["spec"];
        let named = spec["signature"]["content"]
            .as_str()
            .and_then(|s| STANDARD.decode(s).ok());
        assert_eq!(named.as_deref(), Some(REKOR_SIGNATURE), "{body}");
        assert_eq!(spec["data"]["hash"]["algorithm"], "sha256", "{body}");
        let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(REKOR_PAYLOAD));
        assert_eq!(spec["data"]["hash"]["value"], hash.as_str(), "{body}");
    }
}

/// References looked up whatever the input.
const POLICY_REFERENCES: [&str; 3] = [
    "quay.io/openshift/capi-aws:v1",
    "registry.example.com:5000/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "busybox",
];

/// Policy objects, attachments and references as one JSON array of objects: `{"kind":
/// "ClusterImagePolicy"|"ImagePolicy", "namespace", "name", "spec"}`, `{"kind": "Attachment",
/// "mediaType", "payload" (text), "annotations"}`, `{"kind": "Reference", "reference"}`,
/// `{"kind": "Manifest", "manifest" (text)}` (the image's manifest, `{}` without one),
/// `{"kind": "RegistrySources", "allowed": [..], "blocked": [..]}` (image.config's, §2.3). The
/// policies are rendered for the first ImagePolicy's namespace.
///
/// Invariants (signature-policy §2.2, §2.4, §3): a reference written as a rendered scope, or
/// under one, finds a scope (never the accept-anything default); and a requirement whose spec
/// failed to build rejects every image under its scope.
pub fn policy_render(data: &[u8]) {
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let text = |item: &Value, name: &str| item[name].as_str().unwrap_or_default().to_string();
    let (mut policies, mut attachments) = (Vec::new(), Vec::new());
    let mut references: Vec<String> = POLICY_REFERENCES.map(String::from).to_vec();
    let mut manifest = "{}".to_string();
    let mut sources = RegistrySources::default();
    let strings = |item: &Value, name: &str| -> Vec<String> {
        serde_json::from_value(item[name].clone()).unwrap_or_default()
    };
    for item in &items {
        let object = match item["kind"].as_str() {
            Some("ClusterImagePolicy") => PolicyObject::ClusterImagePolicy {
                name: text(item, "name"),
            },
            Some("ImagePolicy") => PolicyObject::ImagePolicy {
                namespace: text(item, "namespace"),
                name: text(item, "name"),
            },
            Some("Attachment") => {
                let annotations = serde_json::from_value(item["annotations"].clone());
                attachments.push(Attachment {
                    media_type: text(item, "mediaType"),
                    payload: text(item, "payload").into_bytes(),
                    annotations: annotations.unwrap_or_default(),
                });
                continue;
            }
            Some("Reference") => {
                references.push(text(item, "reference"));
                continue;
            }
            Some("Manifest") => {
                manifest = text(item, "manifest");
                continue;
            }
            Some("RegistrySources") => {
                sources.allowed = strings(item, "allowed");
                sources.blocked = strings(item, "blocked");
                continue;
            }
            _ => continue,
        };
        let Ok(spec) = serde_json::from_value::<ImagePolicySpec>(item["spec"].clone()) else {
            continue;
        };
        policies.push(PolicyResource { object, spec });
    }
    let namespace = policies
        .iter()
        .find_map(|r| match &r.object {
            PolicyObject::ImagePolicy { namespace, .. } => Some(namespace.clone()),
            PolicyObject::ClusterImagePolicy { .. } => None,
        })
        .unwrap_or_default();
    let rendered = RenderedPolicy::render(&policies, &namespace, &sources);

    let in_namespace = |r: &&PolicyResource| match &r.object {
        PolicyObject::ImagePolicy { namespace: ns, .. } => *ns == namespace,
        PolicyObject::ClusterImagePolicy { .. } => true,
    };
    let scopes = policies
        .iter()
        .filter(in_namespace)
        .flat_map(|r| &r.spec.scopes);
    for scope in scopes {
        for (text, image) in inside(scope) {
            assert!(
                rendered.lookup(&image).is_some(),
                "{text} is under the scope {scope:?} yet finds no scope"
            );
        }
    }

    for text in &references {
        let Ok(image) = Reference::parse(text) else {
            continue;
        };
        let Some((scope, requirements)) = rendered.lookup(&image) else {
            continue;
        };
        let checked = check_scope(
            scope,
            requirements,
            &image,
            manifest.as_bytes(),
            &attachments,
        );
        if requirements.iter().any(|r| r.requirement.is_err()) {
            assert!(
                checked.is_err(),
                "{image} accepted under {scope} with a requirement that failed to build"
            );
        }
    }
}

/// References a scope names: the scope itself when it is a reference written the normalised way
/// (tag or digest, not both: the node refuses both), and a repository under it.
fn inside(scope: &str) -> Vec<(String, Reference)> {
    let mut texts = Vec::new();
    match scope.strip_prefix("*.") {
        Some(domain) if !domain.contains([':', '/']) => texts.push(format!("fuzz.{domain}/x:1")),
        Some(_) => {}
        None => {
            texts.push(scope.to_string());
            texts.push(format!("{scope}/x:1"));
        }
    }
    texts
        .into_iter()
        .filter_map(|text| {
            let image = Reference::parse(&text).ok()?;
            let written_so = image.to_string() == text;
            let both = image.tag.is_some() && image.digest.is_some();
            (written_so && !both).then_some((text, image))
        })
        .collect()
}
