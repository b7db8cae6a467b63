//! The hostile input corpus, end to end: each fixture is built here, pushed to a real registry
//! (or, where the registry refuses to store it, served by the proxy in front of it), and pulled
//! beside a good image into a tree published before. Each must end as the rules say: the image
//! fails with an error naming the image, the registry and the cause, the published tree stays
//! byte for byte as it was, and nothing appears outside it; or, for what is harmless outside the
//! subtree, the image is pulled and the harm is not.

use crate::common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{Value, json};
use tar::{EntryType, Header};

const METADATA: &str = "name: aws\nattributes:\n  type: infrastructure\n  version: v1.0.0\nocpPlatform: AWS\ninstallOrder: 20\n";
const GOOD: &str = "kind: ConfigMap\nmetadata:\n  name: good\n";
const DIR: &str = MANIFESTS_DIR;

fn provider(manifests: &str) -> Layer {
    Layer::gzip(&provider_layer(&[("default", METADATA, manifests)]))
}

/// A registry behind the fault proxy (which serves what the registry will not store), a good
/// image published into `sandbox/out`, and `sandbox/canary`, where absolute names in the
/// fixtures point.
struct Corpus {
    registry: Registry,
    proxy: FaultProxy,
    sandbox: tempfile::TempDir,
    good: String,
}

impl Corpus {
    fn new() -> Corpus {
        let registry = Registry::start(RegistryOpts::default());
        let proxy = FaultProxy::start(registry.pki(), &registry.url(""));
        let sandbox = tempfile::tempdir().unwrap();
        std::fs::create_dir(sandbox.path().join("canary")).unwrap();
        registry.push_image("p/good", Some("v1"), &Image::new(vec![provider(GOOD)]));
        let good = format!("{}/p/good:v1", proxy.host());
        let corpus = Corpus {
            registry,
            proxy,
            sandbox,
            good,
        };
        corpus
            .extract()
            .image("good", &corpus.good)
            .run(&corpus.out())
            .assert_code(0);
        corpus
    }

    fn out(&self) -> PathBuf {
        self.sandbox.path().join("out")
    }

    fn canary(&self) -> PathBuf {
        self.sandbox.path().join("canary")
    }

    fn reference(&self, repo: &str) -> String {
        format!("{}/{repo}:v1", self.proxy.host())
    }

    fn extract(&self) -> Extract {
        Extract::new().arg("--ca-file").arg(self.registry.ca_pem())
    }

    /// Pushes `hostile/<name>:v1`: a good provider layer, then `layer`.
    fn push_layer(&self, name: &str, layer: Layer) -> String {
        let repo = format!("hostile/{name}");
        self.registry.push_image(
            &repo,
            Some("v1"),
            &Image::new(vec![provider("kind: List\n"), layer]),
        );
        repo
    }

    /// Pulls `reference` beside the good image into the published tree; it must fail naming the
    /// image, the registry and every part of `cause`, and leave the tree and the sandbox alone.
    fn assert_refused(&self, case: &str, reference: &str, cause: &[&str]) {
        let before = snapshot(&self.out());
        let messages = tempfile::tempdir().unwrap();
        let termination = messages.path().join("termination-log");
        let run = self
            .extract()
            .image("good", &self.good)
            .image("hostile", reference)
            .arg("--termination-message-path")
            .arg(&termination)
            .run(&self.out());
        assert_eq!(run.code, Some(1), "{case}: {run}");
        let message = std::fs::read_to_string(&termination).unwrap();
        let line = message
            .lines()
            .find(|l| l.starts_with(&format!("image {reference} ")))
            .unwrap_or_else(|| panic!("{case}: the image is not named: {message}"));
        assert!(line.contains(&self.proxy.host()), "{case}: {line}");
        for part in cause {
            assert!(line.contains(part), "{case}: {part:?} not in {line}");
        }
        assert_eq!(snapshot(&self.out()), before, "{case}: the tree changed");
        self.assert_nothing_outside(case);
    }

    fn assert_nothing_outside(&self, case: &str) {
        let mut entries: Vec<String> = std::fs::read_dir(self.sandbox.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        assert_eq!(entries, ["canary", "out"], "{case}");
        assert_eq!(
            std::fs::read_dir(self.canary()).unwrap().count(),
            0,
            "{case}: something was written outside the tree"
        );
    }
}

/// A tar entry named `name` byte for byte (longer than the 100-byte field: through a GNU long
/// name, as the tar crate writes it).
fn entry(tar: TarBuilder, name: &str, kind: EntryType, data: &[u8]) -> TarBuilder {
    if name.len() <= 100 {
        tar.raw_name(name.as_bytes(), kind, data)
    } else {
        tar.pax(&[("path", name.as_bytes())])
            .raw_name(b"placeholder", kind, data)
    }
}

/// `size` bytes of zeros in `DIR/default/manifests.yaml`, compressed by `tool` (`gzip -1`,
/// `zstd -1`) as it streams: a bomb of a few hundred KiB, built without holding it inflated.
fn bomb(tool: &str, size: u64) -> Vec<u8> {
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Regular);
    header
        .set_path(format!("{DIR}/default/manifests.yaml"))
        .unwrap();
    header.set_mode(0o644);
    header.set_size(size);
    header.set_cksum();
    let mut child = Command::new(tool)
        .args([if tool == "gzip" { "-9" } else { "-3" }, "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        stdin.write_all(header.as_bytes()).unwrap();
        let zeros = vec![0u8; 1 << 20];
        // The data, then the two zero blocks that end the archive (size is block-aligned).
        let mut left = size + 1024;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            stdin.write_all(&zeros[..n]).unwrap();
            left -= n as u64;
        }
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(output.status.success(), "{tool} failed");
    output.stdout
}

/// A layer of these bytes under this media type. Its DiffID is a stand-in: the binary does
/// not read DiffIDs, and a bomb's would take hashing all it inflates to.
fn layer(bytes: Vec<u8>, media_type: &str) -> Layer {
    Layer {
        diff_id: sha256_digest(&bytes),
        bytes,
        media_type: media_type.to_owned(),
    }
}

#[test]
fn hostile_layers_fail_the_image_and_touch_nothing() {
    let corpus = Corpus::new();
    let canary = corpus.canary().display().to_string();
    let profile = format!("{DIR}/default");
    let mut cases: Vec<(&str, Layer, Vec<String>)> = Vec::new();
    let mut case = |name, layer, cause: &[&str]| {
        cases.push((name, layer, cause.iter().map(|c| c.to_string()).collect()));
    };
    let gz = |tar: TarBuilder| Layer::gzip(&tar.finish());

    // Names that leave the image root, anywhere in the layer.
    for (name, path) in [
        ("dotdot", "../evil".to_string()),
        ("dotdot-inside", format!("{DIR}/../../evil")),
        ("absolute", format!("{canary}/evil")),
        ("whiteout-dotdot", format!("{DIR}/.wh..")),
    ] {
        case(
            name,
            gz(entry(TarBuilder::new(), &path, EntryType::Regular, b"x")),
            &["hostile layer", path.as_str()],
        );
    }
    case(
        "pax-path-escape",
        gz(TarBuilder::new()
            .pax(&[("path", b"../../evil")])
            .file(&format!("{profile}/ok.yaml"), b"x")),
        &["hostile layer", "../../evil"],
    );
    // Links out of the subtree, and writing through them.
    case(
        "symlink-escape",
        gz(TarBuilder::new()
            .dir(&format!("{DIR}/"))
            .symlink(&profile, &canary)),
        &["symlinks are not allowed", profile.as_str()],
    );
    case(
        "symlink-write-through",
        gz(TarBuilder::new()
            .symlink(DIR, &canary)
            .file(&format!("{DIR}/default/metadata.yaml"), METADATA.as_bytes())
            .file(&format!("{DIR}/default/manifests.yaml"), b"through")),
        &["symlinks are not allowed", DIR],
    );
    case(
        "hardlink-dotdot",
        gz(TarBuilder::new()
            .file("etc/passwd", b"root:x:0:0")
            .hardlink(&format!("{profile}/manifests.yaml"), "../../etc/passwd")),
        &["hostile layer", "../../etc/passwd"],
    );
    case(
        "hardlink-absolute",
        gz(TarBuilder::new().hardlink(&format!("{profile}/manifests.yaml"), "/etc/passwd")),
        &["hostile layer", "/etc/passwd"],
    );
    case(
        "hardlink-outside-subtree",
        gz(TarBuilder::new()
            .file("etc/passwd", b"root:x:0:0")
            .hardlink(&format!("{profile}/manifests.yaml"), "etc/passwd")),
        &["hardlink to", "etc/passwd"],
    );
    // Nodes that are not files.
    case(
        "device",
        gz(TarBuilder::new().char_device(&format!("{profile}/null"), 1, 3)),
        &["are not allowed", "null"],
    );
    case(
        "fifo",
        gz(TarBuilder::new().fifo(&format!("{profile}/pipe"))),
        &["are not allowed", "pipe"],
    );
    case(
        "sparse",
        gz(entry(
            TarBuilder::new(),
            &format!("{profile}/sparse.yaml"),
            EntryType::GNUSparse,
            b"",
        )),
        &["are not allowed", "sparse.yaml"],
    );
    // Headers and streams built to exhaust or confuse.
    case(
        "pax-huge",
        gz(TarBuilder::new()
            .pax(&[("comment", &vec![b'a'; 2 << 20])])
            .file(&format!("{profile}/x.yaml"), b"x")),
        &["exceeds the 1048576-byte cap"],
    );
    let mut truncated = gzip(&provider_layer(&[("default", METADATA, GOOD)]));
    truncated.truncate(truncated.len() - 100);
    case(
        "truncated-gzip",
        layer(truncated, OCI_LAYER_GZIP),
        &["gzip layer"],
    );
    let mut truncated = zstd(&provider_layer(&[("default", METADATA, GOOD)]));
    truncated.truncate(truncated.len() - 10);
    case(
        "truncated-zstd",
        layer(truncated, OCI_LAYER_ZSTD),
        &["zstd layer"],
    );
    // Junk after the last gzip member (the digest is over it all): a stream, not a layer.
    let mut junk = gzip(&provider_layer(&[("default", METADATA, GOOD)]));
    junk.extend_from_slice(b"not gzip at all");
    case(
        "junk-after-the-gzip-stream",
        layer(junk, OCI_LAYER_GZIP),
        &["reading the gzip layer stream"],
    );
    case(
        "gzip-labelled-zstd",
        layer(gzip(&provider_layer(&[])), OCI_LAYER_ZSTD),
        &["zstd layer does not start with zstd magic"],
    );
    for (name, tool, media_type) in [
        ("gzip-bomb", "gzip", OCI_LAYER_GZIP),
        ("zstd-bomb", "zstd", OCI_LAYER_ZSTD),
    ] {
        let bytes = bomb(tool, 256 << 20);
        assert!(bytes.len() < 1 << 20, "{name}: {} bytes", bytes.len());
        case(
            name,
            layer(bytes, media_type),
            &["manifests.yaml: file exceeds --max-file-size"],
        );
    }

    for (name, layer, cause) in cases {
        let repo = corpus.push_layer(name, layer);
        let cause: Vec<&str> = cause.iter().map(String::as_str).collect();
        corpus.assert_refused(name, &corpus.reference(&repo), &cause);
    }
}

/// An OCI manifest over `config` and `layers` (descriptors as JSON), with `extra` fields merged.
fn manifest(config: &Value, layers: &[Value], extra: Value) -> Vec<u8> {
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": layers,
    });
    if let (Some(target), Value::Object(extra)) = (manifest.as_object_mut(), extra) {
        target.extend(extra);
    }
    serde_json::to_vec(&manifest).unwrap()
}

fn served(media_type: &str, body: &[u8]) -> Response {
    Response::new(200)
        .header("content-type", media_type)
        .body(body.to_vec())
}

#[test]
fn hostile_documents_fail_the_image_and_touch_nothing() {
    let corpus = Corpus::new();
    // A real image whose config and layer the served documents point at.
    let pushed = corpus.registry.push_image(
        "hostile/docs",
        Some("base"),
        &Image::new(vec![provider("kind: List\n")]),
    );
    let built: Value = serde_json::from_slice(&pushed.manifest_bytes).unwrap();
    let (config, layer) = (&built["config"], &built["layers"][0]);
    let path = |reference: &str| format!("/v2/hostile/docs/manifests/{reference}");
    let reference = |object: &str| format!("{}/hostile/docs:{object}", corpus.proxy.host());

    // Over 4 MiB, padded with an annotation: the registry refuses to store it.
    let huge = manifest(
        config,
        std::slice::from_ref(layer),
        json!({"annotations": {"pad": "x".repeat(5 << 20)}}),
    );
    corpus
        .proxy
        .serve(&path("huge"), served(OCI_MANIFEST, &huge));
    corpus.assert_refused(
        "manifest-over-4MiB",
        &reference("huge"),
        &["response body exceeds 4194304 bytes"],
    );

    corpus.proxy.serve(
        &path("html"),
        served(OCI_MANIFEST, b"<html><body>Bad gateway</body></html>"),
    );
    corpus.assert_refused(
        "manifest-not-json",
        &reference("html"),
        &["not a JSON manifest"],
    );

    let schema1 = json!({
        "schemaVersion": 1, "name": "hostile/docs", "tag": "old", "architecture": "amd64",
        "fsLayers": [{"blobSum": layer["digest"]}], "history": [{"v1Compatibility": "{}"}],
    });
    corpus.proxy.serve(
        &path("old"),
        served(
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            &serde_json::to_vec(&schema1).unwrap(),
        ),
    );
    corpus.assert_refused(
        "schema1",
        &reference("old"),
        &["Docker schema 1 manifests are not supported"],
    );

    let ambiguous = manifest(
        config,
        std::slice::from_ref(layer),
        json!({"manifests": []}),
    );
    corpus
        .proxy
        .serve(&path("ambiguous"), served(OCI_MANIFEST, &ambiguous));
    corpus.assert_refused(
        "image-and-index",
        &reference("ambiguous"),
        &["document has both layers and manifests"],
    );

    // Three indexes deep: index → index → index → the image.
    let mut child = json!({
        "mediaType": OCI_MANIFEST,
        "digest": pushed.manifest_digest,
        "size": pushed.manifest_bytes.len(),
        "platform": {"os": "linux", "architecture": Platform::host().architecture},
    });
    let mut top = Vec::new();
    for _ in 0..3 {
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child],
        }))
        .unwrap();
        let digest = sha256_digest(&index);
        corpus
            .proxy
            .serve(&path(&digest), served(OCI_INDEX, &index));
        child = json!({
            "mediaType": OCI_INDEX, "digest": digest, "size": index.len(),
            "platform": {"os": "linux", "architecture": Platform::host().architecture},
        });
        top = index;
    }
    corpus.proxy.serve(&path("nested"), served(OCI_INDEX, &top));
    corpus.assert_refused(
        "index-nested-3-deep",
        &reference("nested"),
        &["indexes nested deeper than 2 levels"],
    );

    // The layer one byte longer than the blob: the registry's Content-Length says otherwise.
    let mut longer = layer.clone();
    longer["size"] = json!(layer["size"].as_u64().unwrap() + 1);
    corpus.proxy.serve(
        &path("size"),
        served(OCI_MANIFEST, &manifest(config, &[longer], json!({}))),
    );
    corpus.assert_refused(
        "blob-wrong-size",
        &reference("size"),
        &[
            layer["digest"].as_str().unwrap(),
            "(Content-Length)",
            "gave up after 5 tries",
        ],
    );

    // Asked by digest, answered with another document.
    let asked = sha256_digest(b"another manifest");
    corpus
        .proxy
        .serve(&path(&asked), served(OCI_MANIFEST, &pushed.manifest_bytes));
    corpus.assert_refused(
        "manifest-digest-mismatch",
        &format!("{}/hostile/docs@{asked}", corpus.proxy.host()),
        &[&format!("expected {asked}")],
    );

    // An artifact: everything an image has but an empty config (the registry stores this one).
    let empty = corpus.registry.push_blob("hostile/docs", b"{}");
    let artifact = manifest(
        &json!({"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.digest, "size": empty.size}),
        std::slice::from_ref(layer),
        json!({"artifactType": "application/vnd.example.provider"}),
    );
    corpus
        .registry
        .push_manifest("hostile/docs", "artifact", OCI_MANIFEST, &artifact);
    corpus.assert_refused(
        "artifact",
        &reference("artifact"),
        &["is not an image config, so this is not an image"],
    );
}

#[test]
fn what_is_harmless_outside_the_subtree_is_ignored_and_modes_are_not_kept() {
    let corpus = Corpus::new();
    let canary = corpus.canary().display().to_string();
    let profile = format!("{DIR}/default");
    // Outside the subtree: a symlink out, a hardlink, a device, a fifo, setuid; all read past.
    // (A hardlink *target* that leaves the root is hostile anywhere: see the other corpus.)
    let outside = TarBuilder::new()
        .symlink("etc/escape", &canary)
        .file("etc/shadow", b"root:*:0:0")
        .hardlink("etc/shadow-link", "etc/shadow")
        .char_device("dev/null", 1, 3)
        .fifo("run/pipe")
        .file_mode("usr/bin/su", b"#!/bin/sh\n", 0o4755)
        .finish();
    // Inside: setuid, root-owned, with a capability xattr; a duplicate entry (the later wins).
    let inside = TarBuilder::new()
        .dir(&format!("{DIR}/"))
        .dir(&format!("{profile}/"))
        .file(&format!("{profile}/metadata.yaml"), METADATA.as_bytes())
        .file(&format!("{profile}/manifests.yaml"), b"first: A\n")
        .pax(&[("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02")])
        .file_mode(&format!("{profile}/manifests.yaml"), b"second: B\n", 0o4755)
        .finish();
    corpus.registry.push_image(
        "harmless/x",
        Some("v1"),
        &Image::new(vec![Layer::gzip(&outside), Layer::gzip(&inside)]),
    );
    // A layer that names foreign URLs it must never be fetched from: the registry has it. The
    // registry will not store a manifest with URLs, so the proxy serves it.
    let urls = FakeRoutes::new().start(corpus.registry.pki());
    let pushed = corpus.registry.push_image(
        "harmless/foreign",
        Some("base"),
        &Image::new(vec![provider("foreign: false\n")]),
    );
    let mut built: Value = serde_json::from_slice(&pushed.manifest_bytes).unwrap();
    built["layers"][0]["urls"] = json!([urls.url("/layer.tar.gz")]);
    built["layers"][0]["mediaType"] =
        json!("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip");
    corpus.proxy.serve(
        "/v2/harmless/foreign/manifests/v1",
        served(OCI_MANIFEST, &serde_json::to_vec(&built).unwrap()),
    );

    let out = corpus.out();
    let x = corpus.reference("harmless/x");
    let foreign = corpus.reference("harmless/foreign");
    corpus
        .extract()
        .image("x", &x)
        .image("foreign", &foreign)
        .run(&out)
        .assert_code(0);
    corpus.assert_nothing_outside("harmless");
    let index = read_index(&out);
    let image = index_image(&index, &x);
    assert_eq!(
        read_subtree_file(&out, image, "default/manifests.yaml"),
        b"second: B\n"
    );
    let volume = image["volume"].as_str().unwrap();
    let published = out.join(volume).join(DIR).join("default/manifests.yaml");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&published).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644, "{mode:o}");
    assert!(
        Command::new("getfattr")
            .arg("-d")
            .arg(&published)
            .output()
            .map(|o| o.stdout.is_empty())
            .unwrap_or(true),
        "no xattr"
    );
    assert_eq!(
        read_subtree_file(
            &out,
            index_image(&index, &foreign),
            "default/manifests.yaml"
        ),
        b"foreign: false\n"
    );
    assert!(urls.requests().is_empty(), "a foreign URL was contacted");
}
