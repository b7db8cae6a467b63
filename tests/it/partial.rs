//! Partial pulls end to end against a real registry: the same image pushed with gzip layers, as
//! zstd:chunked (written by skopeo) and as eStargz (written here, as stargz-snapshotter's docs
//! lay it out) must publish byte-identical trees, the partial path must really be taken (a few
//! small requests per layer, counted in the registry's access log), and every reason to fall back
//! must lead to the full pull, never to a tree built from something unverified.

use crate::common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const DEFAULT_METADATA: &str = "name: aws\nattributes:\n  type: infrastructure\n  version: v1.0.0\nocpPlatform: AWS\nselfImageRef: PLACEHOLDER\ninstallOrder: 20\n";
const DEFAULT_MANIFESTS: &str =
    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: capa\nspec:\n  image: PLACEHOLDER\n";
const TP_METADATA: &str = "name: aws\nattributes:\n  type: infrastructure\n  version: v1.1.0\nocpPlatform: AWS\ninstallOrder: 20\n";
const TP_MANIFESTS: &str = "kind: ConfigMap\nmetadata:\n  name: techpreview\n";
const M: &str = MANIFESTS_DIR;

const CHUNKED_CHECKSUM: &str = "io.containers.zstd-chunked.manifest-checksum";
const CHUNKED_POSITION: &str = "io.containers.zstd-chunked.manifest-position";
const ESTARGZ_TOC: &str = "containerd.io/snapshot/stargz/toc.digest";

/// `len` bytes that do not compress: a sha256 chain from `seed`.
fn noise(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest(seed.as_bytes());
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    out.truncate(len);
    out
}

/// The fixture's layers, lowest first, as plain tars: a base with a large binary and a profile
/// to be removed; a provider layer whose two profiles sit on either side of a large file, with an
/// opaque marker; an upper layer with whiteouts and one more file (and enough else to be pulled
/// partially: smaller layers are fetched whole).
fn fixture_tars() -> Vec<Vec<u8>> {
    let base = TarBuilder::new()
        .dir("usr/")
        .dir("usr/bin/")
        .file("usr/bin/manager", &noise("manager", 2 << 20))
        .dir(&format!("{M}/"))
        .dir(&format!("{M}/old/"))
        .file(
            &format!("{M}/old/metadata.yaml"),
            DEFAULT_METADATA.as_bytes(),
        )
        .file(&format!("{M}/old/manifests.yaml"), b"kind: Old\n")
        .dir(&format!("{M}/default/"))
        .file(
            &format!("{M}/default/extra.yaml"),
            b"hidden by the opaque marker\n",
        )
        .finish();
    let provider = TarBuilder::new()
        .dir("etc/")
        .file("etc/os-release", b"ID=fixture\n")
        .dir(&format!("{M}/"))
        .dir(&format!("{M}/default/"))
        .opaque(&format!("{M}/default"))
        .file(
            &format!("{M}/default/metadata.yaml"),
            DEFAULT_METADATA.as_bytes(),
        )
        .file(
            &format!("{M}/default/manifests.yaml"),
            DEFAULT_MANIFESTS.as_bytes(),
        )
        .dir("usr/")
        .dir("usr/share/")
        .file("usr/share/big", &noise("big", 300 << 10))
        .dir(&format!("{M}/techpreview/"))
        .file(
            &format!("{M}/techpreview/metadata.yaml"),
            TP_METADATA.as_bytes(),
        )
        .file(
            &format!("{M}/techpreview/manifests.yaml"),
            TP_MANIFESTS.as_bytes(),
        )
        .finish();
    let upper = TarBuilder::new()
        .dir(&format!("{M}/"))
        .whiteout(&format!("{M}/old"))
        .dir(&format!("{M}/techpreview/"))
        .file(&format!("{M}/techpreview/notes.txt"), b"notes\n")
        .dir("etc/")
        .whiteout("etc/os-release")
        .file("etc/padding", &noise("padding", 40 << 10))
        .finish();
    vec![base, provider, upper]
}

/// What every variant of the fixture must publish.
fn expected_tree() -> BTreeMap<String, Option<Vec<u8>>> {
    let file = |path: &str, data: &str| (path.to_owned(), Some(data.as_bytes().to_vec()));
    let dir = |path: &str| (path.to_owned(), None);
    BTreeMap::from([
        dir("default"),
        file("default/manifests.yaml", DEFAULT_MANIFESTS),
        file("default/metadata.yaml", DEFAULT_METADATA),
        dir("techpreview"),
        file("techpreview/manifests.yaml", TP_MANIFESTS),
        file("techpreview/metadata.yaml", TP_METADATA),
        file("techpreview/notes.txt", "notes\n"),
    ])
}

/// A layer as pushed, with its descriptor as the manifest will carry it.
#[derive(Clone)]
struct Blob {
    bytes: Vec<u8>,
    descriptor: Value,
}

impl Blob {
    fn new(bytes: Vec<u8>, media_type: &str, annotations: Option<Value>) -> Blob {
        let mut descriptor = json!({
            "mediaType": media_type,
            "digest": sha256_digest(&bytes),
            "size": bytes.len(),
        });
        if let Some(annotations) = annotations {
            descriptor["annotations"] = annotations;
        }
        Blob { bytes, descriptor }
    }

    fn digest(&self) -> String {
        self.descriptor["digest"].as_str().unwrap().to_owned()
    }

    fn annotation(&self, key: &str) -> &str {
        self.descriptor["annotations"][key].as_str().unwrap()
    }
}

/// Pushes an image of `layers` (their descriptors as given, annotations and all) under `tag`;
/// returns the reference by tag.
fn push(registry: &Registry, repo: &str, layers: &[Blob]) -> String {
    let mut diff_ids = Vec::new();
    for layer in layers {
        registry.push_blob(repo, &layer.bytes);
        diff_ids.push(sha256_digest(&uncompressed(layer)));
    }
    let platform = Platform::host();
    let config = serde_json::to_vec(&json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    }))
    .unwrap();
    let config_ref = registry.push_blob(repo, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_ref.digest, "size": config_ref.size},
        "layers": layers.iter().map(|l| l.descriptor.clone()).collect::<Vec<_>>(),
    }))
    .unwrap();
    registry.push_manifest(repo, "v1", OCI_MANIFEST, &manifest);
    format!("{}/{repo}:v1", registry.host())
}

fn uncompressed(layer: &Blob) -> Vec<u8> {
    let mut out = Vec::new();
    match layer.descriptor["mediaType"].as_str().unwrap() {
        OCI_LAYER_GZIP => {
            flate2::read::MultiGzDecoder::new(&layer.bytes[..])
                .read_to_end(&mut out)
                .unwrap();
        }
        OCI_LAYER_ZSTD => {
            zstd::stream::read::Decoder::new(&layer.bytes[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
        }
        other => panic!("no decoder for {other}"),
    }
    out
}

fn gzip_layers(tars: &[Vec<u8>]) -> Vec<Blob> {
    tars.iter()
        .map(|tar| Blob::new(gzip(tar), OCI_LAYER_GZIP, None))
        .collect()
}

/// The layers converted to zstd:chunked by skopeo (containers/image), through OCI layouts.
fn zstd_chunked_layers(tars: &[Vec<u8>]) -> Vec<Blob> {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir_all(source.join("blobs/sha256")).unwrap();
    let put = |bytes: &[u8]| {
        let digest = sha256_digest(bytes);
        std::fs::write(
            source.join("blobs/sha256").join(&digest["sha256:".len()..]),
            bytes,
        )
        .unwrap();
        json!({"digest": digest, "size": bytes.len()})
    };
    let mut layers = Vec::new();
    for tar in tars {
        let mut descriptor = put(tar);
        descriptor["mediaType"] = json!(OCI_LAYER_TAR);
        layers.push(descriptor);
    }
    let diff_ids: Vec<&Value> = layers.iter().map(|l| &l["digest"]).collect();
    let mut config = put(&serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {},
    }))
    .unwrap());
    config["mediaType"] = json!(OCI_CONFIG);
    let mut manifest = put(&serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers,
    }))
    .unwrap());
    manifest["mediaType"] = json!(OCI_MANIFEST);
    manifest["annotations"] = json!({"org.opencontainers.image.ref.name": "v1"});
    std::fs::write(
        source.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        source.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [manifest]})).unwrap(),
    )
    .unwrap();
    let target = dir.path().join("target");
    Run::program("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--dest-compress-format",
            "zstd:chunked",
        ])
        .arg(format!("oci:{}:v1", source.display()))
        .arg(format!("oci:{}:v1", target.display()))
        .run()
        .assert_code(0);
    let blob = |digest: &str| {
        std::fs::read(target.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap()
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(target.join("index.json")).unwrap()).unwrap();
    let manifest: Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|descriptor| {
            assert_eq!(descriptor["mediaType"], OCI_LAYER_ZSTD);
            assert!(
                descriptor["annotations"][CHUNKED_CHECKSUM].is_string(),
                "skopeo wrote no zstd:chunked annotations: {descriptor}"
            );
            Blob {
                bytes: blob(descriptor["digest"].as_str().unwrap()),
                descriptor: descriptor.clone(),
            }
        })
        .collect()
}

/// An eStargz layer of the entries of `tar`: a gzip member starts at each chunk of file data
/// (`subtree_chunk` bytes at most under the subtree, 1 MiB elsewhere), headers and padding run on
/// in the member before them, then the TOC member (its JSON as `edit` leaves it) and the footer.
/// With `pack`, a chunk under the subtree goes on in the member of the data before it (at its
/// `innerOffset`) rather than starting one.
fn estargz_layer(
    tar: &[u8],
    subtree_chunk: usize,
    pack: bool,
    edit: impl FnOnce(&mut Value),
) -> Blob {
    fn gz(data: &[u8]) -> Vec<u8> {
        gzip(data)
    }
    let mut blob = Vec::new();
    let mut member = Vec::new();
    // Where the member under way starts, when it was started for data.
    let mut data_member: Option<usize> = None;
    let mut toc = Vec::new();
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        member.extend_from_slice(header.as_bytes());
        let kind = match header.entry_type() {
            tar::EntryType::Regular => "reg",
            tar::EntryType::Directory => "dir",
            tar::EntryType::Symlink => "symlink",
            tar::EntryType::Link => "hardlink",
            other => panic!("no TOC type for {other:?}"),
        };
        let mut item = json!({"name": name, "type": kind, "mode": 0o644});
        if let Ok(Some(link)) = header.link_name() {
            item["linkName"] = json!(link.to_string_lossy());
        }
        if data.is_empty() {
            toc.push(item);
            continue;
        }
        item["size"] = json!(data.len());
        item["digest"] = json!(sha256_digest(&data));
        let chunk_size = if name.starts_with(M) {
            subtree_chunk
        } else {
            1 << 20
        };
        let chunks: Vec<&[u8]> = data.chunks(chunk_size).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut piece = if i == 0 {
                item.clone()
            } else {
                json!({"name": name, "type": "chunk", "chunkOffset": i * chunk_size})
            };
            match data_member {
                Some(start) if pack && name.starts_with(M) => {
                    piece["offset"] = json!(start);
                    piece["innerOffset"] = json!(member.len());
                }
                _ => {
                    blob.extend(gz(&member));
                    member.clear();
                    data_member = Some(blob.len());
                    piece["offset"] = json!(blob.len());
                }
            }
            piece["chunkDigest"] = json!(sha256_digest(chunk));
            if chunks.len() > 1 && i + 1 < chunks.len() {
                piece["chunkSize"] = json!(chunk.len());
            }
            toc.push(piece);
            member.extend_from_slice(chunk);
        }
        member.resize(member.len() + (512 - data.len() % 512) % 512, 0);
    }
    blob.extend(gz(&member));
    let toc_offset = blob.len();
    let mut toc = json!({"version": 1, "entries": toc});
    edit(&mut toc);
    let toc_json = serde_json::to_vec_pretty(&toc).unwrap();
    let toc_tar = TarBuilder::new()
        .file("stargz.index.json", &toc_json)
        .finish();
    blob.extend(gz(&toc_tar));
    blob.extend(estargz_footer(toc_offset as u64));
    Blob::new(
        blob,
        OCI_LAYER_GZIP,
        Some(json!({ESTARGZ_TOC: sha256_digest(&toc_json)})),
    )
}

fn estargz_footer(toc_offset: u64) -> Vec<u8> {
    let mut footer = vec![
        0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 26, 0, b'S', b'G', 22, 0,
    ];
    footer.extend(format!("{toc_offset:016x}STARGZ").as_bytes());
    // An empty stored deflate block, then CRC-32 and size, both zero.
    footer.extend([0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
    footer
}

fn estargz_layers(tars: &[Vec<u8>], subtree_chunk: usize, pack: bool) -> Vec<Blob> {
    tars.iter()
        .map(|tar| estargz_layer(tar, subtree_chunk, pack, |_| {}))
        .collect()
}

/// A zstd:chunked layer with its TOC replaced by `edit(toc)`, and its annotations made to match:
/// as a registry (or whoever built the image) could serve it.
fn edit_zstd_chunked_toc(layer: &Blob, edit: impl FnOnce(&mut Value)) -> Blob {
    let position = layer.annotation(CHUNKED_POSITION).to_owned();
    let fields: Vec<usize> = position.split(':').map(|f| f.parse().unwrap()).collect();
    let (offset, length) = (fields[0], fields[1]);
    let json = zstd::decode_all(&layer.bytes[offset..offset + length]).unwrap();
    let mut toc: Value = serde_json::from_slice(&json).unwrap();
    edit(&mut toc);
    let json = serde_json::to_vec(&toc).unwrap();
    let compressed = zstd::encode_all(&json[..], 3).unwrap();
    // The skippable frame holding the TOC, then the footer's skippable frame as it was.
    let mut bytes = layer.bytes[..offset - 8].to_vec();
    bytes.extend([0x50, 0x2a, 0x4d, 0x18]);
    bytes.extend((compressed.len() as u32).to_le_bytes());
    let new_offset = bytes.len();
    bytes.extend(&compressed);
    bytes.extend(&layer.bytes[offset + length..]);
    let annotations = json!({
        CHUNKED_CHECKSUM: sha256_digest(&compressed),
        CHUNKED_POSITION: format!("{new_offset}:{}:{}:1", compressed.len(), json.len()),
    });
    Blob::new(bytes, OCI_LAYER_ZSTD, Some(annotations))
}

/// The published subtree of an image: relative path → file contents, None for a directory.
fn published_tree(out: &Path, reference: &str) -> BTreeMap<String, Option<Vec<u8>>> {
    let index = read_index(out);
    let volume = index_image(&index, reference)["volume"]
        .as_str()
        .unwrap()
        .to_owned();
    let root = out.join(volume).join(M);
    let mut tree = BTreeMap::new();
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                tree.insert(relative, None);
                pending.push(path);
            } else {
                tree.insert(relative, Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    tree
}

/// The JSON log lines of a run with this message.
fn log_lines(run: &RunOutput, message: &str) -> Vec<Value> {
    run.stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == message)
        .collect()
}

/// Blob GETs of the binary in the registry's access log: (digest, status, bytes sent).
fn blob_gets(registry: &Registry) -> Vec<(String, u16, u64)> {
    registry
        .log()
        .lines()
        .filter(|line| line.contains("provider-images/") && line.contains("\"GET /v2/"))
        .filter_map(|line| {
            let (_, rest) = line.split_once("/blobs/")?;
            let (digest, rest) = rest.split_once(' ')?;
            let (_, rest) = rest.split_once("\" ")?;
            let mut fields = rest.split_whitespace();
            let status = fields.next()?.parse().ok()?;
            let bytes = fields.next()?.parse().unwrap_or(0);
            Some((digest.to_owned(), status, bytes))
        })
        .collect()
}

fn basic_registry() -> Registry {
    Registry::start(RegistryOpts::default().basic_auth("puller", "pw-SECRET-partial"))
}

fn extract(registry: &Registry, refs: &[&str], extra: &[&str]) -> (tempfile::TempDir, RunOutput) {
    let out = tempfile::tempdir().unwrap();
    let mut extract = Extract::new().registry(registry);
    for (i, reference) in refs.iter().enumerate() {
        extract = extract.image(&format!("image-{i}"), reference);
    }
    for arg in extra {
        extract = extract.arg(arg);
    }
    let run = extract.run(out.path());
    (out, run)
}

#[test]
fn zstd_chunked_estargz_and_gzip_publish_the_same_tree() {
    let registry = basic_registry();
    let tars = fixture_tars();
    let gzip_ref = push(&registry, "p/gzip", &gzip_layers(&tars));
    let chunked = zstd_chunked_layers(&tars);
    let chunked_ref = push(&registry, "p/chunked", &chunked);
    let estargz_ref = push(
        &registry,
        "p/estargz",
        &estargz_layers(&tars, 4 << 20, false),
    );
    // Files under the subtree in chunks of 40 bytes: several gzip members each.
    let chunks_ref = push(&registry, "p/chunks", &estargz_layers(&tars, 40, false));
    // And chunks sharing members, found by their innerOffset.
    let packed_ref = push(&registry, "p/packed", &estargz_layers(&tars, 40, true));
    let refs = [
        gzip_ref.as_str(),
        &chunked_ref,
        &estargz_ref,
        &chunks_ref,
        &packed_ref,
    ];

    let (partial, run) = extract(&registry, &refs, &[]);
    run.assert_code(0);
    assert_eq!(
        log_lines(&run, "layer pulled partially").len(),
        10,
        "three zstd:chunked layers and seven eStargz ones (the eStargz images share the top one):\n{}",
        run.stderr
    );
    // The gzip image's three layers never could have been partial: the summary counts them, and
    // no line of their own says so at info (issue 9 item 4).
    assert!(
        log_lines(&run, "pulling the layer whole").is_empty(),
        "{}",
        run.stderr
    );
    let summary = log_lines(&run, "layer bytes fetched");
    assert_eq!(summary.len(), 1, "{}", run.stderr);
    assert_eq!(summary[0]["full_layers"], 3, "{}", run.stderr);
    let ranges_before = blob_gets(&registry).iter().filter(|g| g.1 == 206).count();
    let (full, run) = extract(&registry, &refs, &["--no-partial"]);
    run.assert_code(0);
    assert!(log_lines(&run, "layer pulled partially").is_empty());
    let gets = blob_gets(&registry);
    assert_eq!(
        gets.iter().filter(|g| g.1 == 206).count(),
        ranges_before,
        "--no-partial: no Range request: {gets:?}"
    );

    for reference in refs {
        assert_eq!(
            published_tree(partial.path(), reference),
            expected_tree(),
            "{reference}"
        );
        assert_eq!(
            published_tree(full.path(), reference),
            expected_tree(),
            "{reference}"
        );
    }
    let profiles = |out: &Path, reference: &str| {
        let mut profiles = index_image(&read_index(out), reference)["profiles"].clone();
        for profile in profiles.as_array_mut().unwrap() {
            profile.as_object_mut().unwrap().remove("manifestsPath");
        }
        profiles
    };
    let expected = profiles(full.path(), &gzip_ref);
    assert_eq!(expected.as_array().unwrap().len(), 2);
    for reference in refs {
        assert_eq!(profiles(partial.path(), reference), expected, "{reference}");
    }
}

/// The run's summary line: (fetched bytes, layer bytes, blob requests).
fn summary(run: &RunOutput) -> (u64, u64, u64) {
    let lines = log_lines(run, "layer bytes fetched");
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    let field = |name: &str| lines[0][name].as_u64().unwrap();
    (
        field("fetched_bytes"),
        field("layer_bytes"),
        field("blob_requests"),
    )
}

#[test]
fn a_partial_pull_is_a_few_small_range_requests_per_layer() {
    let tars = fixture_tars();
    for (format, layers) in [
        ("zstd:chunked", zstd_chunked_layers(&tars)),
        ("estargz", estargz_layers(&tars, 4 << 20, false)),
    ] {
        let registry = basic_registry();
        let reference = push(&registry, "p/app", &layers);
        let (out, run) = extract(&registry, &[&reference], &[]);
        run.assert_code(0);
        assert_eq!(published_tree(out.path(), &reference), expected_tree());
        let digests: Vec<String> = layers.iter().map(Blob::digest).collect();
        let gets: Vec<_> = blob_gets(&registry)
            .into_iter()
            .filter(|g| digests.contains(&g.0))
            .collect();
        let layer_bytes: u64 = layers.iter().map(|l| l.bytes.len() as u64).sum();
        let mut fetched = 0;
        for layer in &layers {
            let of_layer: Vec<_> = gets.iter().filter(|g| g.0 == layer.digest()).collect();
            assert!(
                !of_layer.is_empty() && of_layer.len() <= 2,
                "{format}: the TOC, then at most one request for the data: {of_layer:?}"
            );
            assert!(
                of_layer.iter().all(|g| g.1 == 206),
                "{format}: no request fetches a whole layer: {of_layer:?}"
            );
            fetched += of_layer.iter().map(|g| g.2).sum::<u64>();
        }
        assert!(
            fetched * 20 < layer_bytes,
            "{format}: {fetched} of {layer_bytes} bytes fetched"
        );
        let (logged_fetched, logged_layer_bytes, requests) = summary(&run);
        assert_eq!(logged_layer_bytes, layer_bytes, "{format}");
        assert!(
            logged_fetched <= fetched,
            "{format}: {logged_fetched} > {fetched}"
        );
        assert_eq!(
            requests,
            gets.len() as u64,
            "{format}: the summary counts every blob request"
        );
        eprintln!(
            "{format}: {} requests, {fetched} of {layer_bytes} bytes ({:.2}%)",
            gets.len(),
            fetched as f64 * 100.0 / layer_bytes as f64
        );
    }
}

/// The one log line about pulling `layer`: partially, whole, or refused and then whole.
fn layer_line(run: &RunOutput, layer: &Blob) -> Value {
    let lines: Vec<Value> = [
        "layer pulled partially",
        "pulling the layer whole",
        "partial pull refused; pulling the layer whole",
    ]
    .iter()
    .flat_map(|message| log_lines(run, message))
    .filter(|line| line["layer"] == layer.digest().as_str())
    .collect();
    assert_eq!(lines.len(), 1, "one line per layer:\n{}", run.stderr);
    lines.into_iter().next().unwrap()
}

/// Pushes the fixture with its provider layer replaced by `provider`, runs `extract` and checks
/// that the published tree is still the fixture's; returns the log line about `provider`.
fn fallback_of(mut layers: Vec<Blob>, provider: Blob) -> Value {
    let registry = basic_registry();
    layers[1] = provider.clone();
    let reference = push(&registry, "p/app", &layers);
    let (out, run) = extract(&registry, &[&reference], &[]);
    run.assert_code(0);
    assert_eq!(published_tree(out.path(), &reference), expected_tree());
    for other in [&layers[0], &layers[2]] {
        assert_eq!(layer_line(&run, other)["message"], "layer pulled partially");
    }
    let line = layer_line(&run, &provider);
    // The full pull of the layer did happen, after the partial attempt.
    let gets = blob_gets(&registry);
    assert!(
        gets.iter().any(|g| g.0 == provider.digest() && g.1 == 200),
        "{gets:?}"
    );
    line
}

fn assert_fallback(line: &Value, message: &str, reason: &str) {
    assert_eq!(line["message"], message, "{line}");
    let text = line["reason"].as_str().unwrap();
    assert!(text.contains(reason), "{reason:?} not in {text:?}");
}

const REFUSED: &str = "partial pull refused; pulling the layer whole";
const WHOLE: &str = "pulling the layer whole";

fn entry_named<'a>(toc: &'a mut Value, suffix: &str) -> &'a mut Value {
    toc["entries"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e["name"].as_str().unwrap().ends_with(suffix))
        .unwrap_or_else(|| panic!("no TOC entry for {suffix}"))
}

#[test]
fn a_registry_that_ignores_range_gets_the_full_pull() {
    let registry = Registry::start(
        RegistryOpts::default()
            .basic_auth("puller", "pw-SECRET-partial")
            .redirect_blobs(),
    );
    let layers = zstd_chunked_layers(&fixture_tars());
    let reference = push(&registry, "p/app", &layers);
    let (out, run) = extract(&registry, &[&reference], &[]);
    run.assert_code(0);
    assert_eq!(published_tree(out.path(), &reference), expected_tree());
    for layer in &layers {
        assert_fallback(
            &layer_line(&run, layer),
            WHOLE,
            "did not serve the ranges asked",
        );
        assert!(
            layer_line(&run, layer)["reason"]
                .as_str()
                .unwrap()
                .contains("answered 200 OK"),
            "{}",
            run.stderr
        );
    }
    // The object store behind the redirect saw the Range header, and ignored it.
    let store = registry.blob_store().unwrap().requests();
    let ranged = store
        .iter()
        .filter(|r| r.headers.contains_key("range"))
        .count();
    assert_eq!(ranged, layers.len(), "{store:?}");
}

#[test]
fn a_toc_that_does_not_match_its_annotation_is_never_used() {
    let tars = fixture_tars();
    let chunked = zstd_chunked_layers(&tars);
    let provider = &chunked[1];

    let mut other_checksum = provider.clone();
    other_checksum.descriptor["annotations"][CHUNKED_CHECKSUM] = json!(sha256_digest(b"other"));
    let line = fallback_of(chunked.clone(), other_checksum);
    assert_fallback(&line, REFUSED, "the annotation says sha256:");

    // Garbled TOC bytes, with annotations that vouch for them: unreadable.
    let mut garbled = provider.clone();
    let position = provider.annotation(CHUNKED_POSITION).to_owned();
    let fields: Vec<usize> = position.split(':').map(|f| f.parse().unwrap()).collect();
    for byte in &mut garbled.bytes[fields[0] + 4..fields[0] + fields[1]] {
        *byte ^= 0x5a;
    }
    let toc = garbled.bytes[fields[0]..fields[0] + fields[1]].to_vec();
    let garbled = Blob::new(
        garbled.bytes,
        OCI_LAYER_ZSTD,
        Some(json!({CHUNKED_CHECKSUM: sha256_digest(&toc), CHUNKED_POSITION: position})),
    );
    assert_fallback(
        &fallback_of(chunked.clone(), garbled),
        WHOLE,
        "zstd:chunked TOC: ",
    );

    let version = edit_zstd_chunked_toc(provider, |toc| toc["version"] = json!(7));
    assert_fallback(
        &fallback_of(chunked.clone(), version),
        WHOLE,
        "version 7 is not known",
    );

    let estargz = estargz_layers(&tars, 4 << 20, false);
    let mut other_digest = estargz[1].clone();
    other_digest.descriptor["annotations"][ESTARGZ_TOC] = json!(sha256_digest(b"other"));
    assert_fallback(
        &fallback_of(estargz.clone(), other_digest),
        REFUSED,
        "the annotation says sha256:",
    );
    let not_a_toc = estargz_layer(&tars[1], 4 << 20, false, |toc| {
        toc["entries"] = json!("none")
    });
    assert_fallback(
        &fallback_of(estargz, not_a_toc),
        WHOLE,
        "eStargz TOC: invalid type",
    );
}

#[test]
fn file_data_that_does_not_match_the_toc_is_never_used() {
    let tars = fixture_tars();
    let evil = sha256_digest(b"evil");
    let chunked = zstd_chunked_layers(&tars);
    let lying = edit_zstd_chunked_toc(&chunked[1], |toc| {
        entry_named(toc, "default/manifests.yaml")["digest"] = json!(evil);
    });
    let line = fallback_of(chunked, lying);
    assert_fallback(
        &line,
        REFUSED,
        &format!(
            "data has digest {}",
            sha256_digest(DEFAULT_MANIFESTS.as_bytes())
        ),
    );
    assert_fallback(&line, REFUSED, &format!("the TOC says {evil}"));

    let estargz = estargz_layers(&tars, 4 << 20, false);
    let lying = estargz_layer(&tars[1], 4 << 20, false, |toc| {
        entry_named(toc, "techpreview/metadata.yaml")["chunkDigest"] = json!(evil);
    });
    assert_fallback(
        &fallback_of(estargz, lying),
        REFUSED,
        &format!("the TOC says {evil}"),
    );
}

#[test]
fn toc_entries_the_layer_rules_refuse_are_judged_by_the_tar() {
    let tars = fixture_tars();
    let chunked = zstd_chunked_layers(&tars);
    let symlink = edit_zstd_chunked_toc(&chunked[1], |toc| {
        let entry = entry_named(toc, "techpreview/manifests.yaml");
        entry["type"] = json!("symlink");
        entry["linkName"] = json!("/etc/passwd");
    });
    // The tar has a regular file there: the full pull publishes it.
    assert_fallback(
        &fallback_of(chunked, symlink),
        WHOLE,
        "the TOC's entries are refused: capi-operator-manifests/techpreview/manifests.yaml: symlinks are not allowed",
    );
}

#[test]
fn a_tampered_range_fails_the_image_and_nothing_is_published() {
    let registry = basic_registry();
    let layers = zstd_chunked_layers(&fixture_tars());
    let reference = push(&registry, "p/app", &layers);
    let provider = &layers[1];
    // Flip bytes inside the frames of default/manifests.yaml, as served from the registry's disk.
    let position = provider.annotation(CHUNKED_POSITION);
    let fields: Vec<usize> = position.split(':').map(|f| f.parse().unwrap()).collect();
    let toc: Value = serde_json::from_slice(
        &zstd::decode_all(&provider.bytes[fields[0]..fields[0] + fields[1]]).unwrap(),
    )
    .unwrap();
    let entry = toc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["name"]
                .as_str()
                .unwrap()
                .ends_with("default/manifests.yaml")
        })
        .unwrap();
    let (start, end) = (
        entry["offset"].as_u64().unwrap() as usize,
        entry["endOffset"].as_u64().unwrap() as usize,
    );
    let mut served = provider.bytes.clone();
    served[(start + end) / 2] ^= 0xff;
    std::fs::write(registry.blob_data_path(&provider.digest()), served).unwrap();

    let (out, run) = extract(&registry, &[&reference], &[]);
    run.assert_code(1);
    let line = layer_line(&run, provider);
    assert_eq!(line["message"], REFUSED, "{line}");
    assert!(
        log_lines(&run, "image failed")
            .iter()
            .any(|l| l["error"].as_str().unwrap().contains(&provider.digest())),
        "the full pull then refuses the layer:\n{}",
        run.stderr
    );
    assert!(!out.path().join("index.json").exists(), "nothing published");
}

#[test]
fn a_file_over_the_limits_is_judged_by_the_full_pull() {
    let registry = basic_registry();
    let reference = push(&registry, "p/app", &zstd_chunked_layers(&fixture_tars()));
    let (out, run) = extract(&registry, &[&reference], &["--max-file-size", "100"]);
    run.assert_code(1);
    assert!(
        log_lines(&run, WHOLE).iter().any(|l| l["reason"]
            .as_str()
            .unwrap()
            .contains("over --max-file-size")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("file exceeds --max-file-size (100 bytes)"),
        "{}",
        run.stderr
    );
    assert!(!out.path().join("index.json").exists());
}

#[test]
fn a_small_layer_is_fetched_whole() {
    let registry = basic_registry();
    let tars = fixture_tars();
    let small = TarBuilder::new()
        .dir(&format!("{M}/"))
        .dir(&format!("{M}/techpreview/"))
        .file(&format!("{M}/techpreview/notes.txt"), b"notes\n")
        .finish();
    let mut layers = zstd_chunked_layers(&[tars[0].clone(), tars[1].clone(), small]);
    let top = layers.pop().unwrap();
    assert!(top.bytes.len() < 32 << 10);
    layers.push(top.clone());
    let reference = push(&registry, "p/app", &layers);
    let (out, run) = extract(&registry, &[&reference], &[]);
    run.assert_code(0);
    let mut expected = expected_tree();
    expected.extend([
        ("old".to_owned(), None),
        (
            "old/metadata.yaml".to_owned(),
            Some(DEFAULT_METADATA.as_bytes().to_vec()),
        ),
        (
            "old/manifests.yaml".to_owned(),
            Some(b"kind: Old\n".to_vec()),
        ),
    ]);
    assert_eq!(published_tree(out.path(), &reference), expected);
    assert_fallback(
        &layer_line(&run, &top),
        WHOLE,
        "a layer under 32768 bytes is fetched whole",
    );
    let gets: Vec<_> = blob_gets(&registry)
        .into_iter()
        .filter(|g| g.0 == top.digest())
        .collect();
    assert_eq!(gets.len(), 1, "one request: {gets:?}");
}

#[test]
fn a_large_estargz_toc_takes_one_more_request() {
    let registry = basic_registry();
    let mut tars = fixture_tars();
    // Many files with names that do not compress: a TOC far larger than the blob's tail.
    let mut provider = TarBuilder::new();
    for i in 0..1500 {
        let name = hex::encode(noise(&format!("name-{i}"), 32));
        provider = provider.file(&format!("usr/share/many/{name}"), b"x");
    }
    let many = provider.finish();
    tars[1] = [&many[..many.len() - 1024], &tars[1][..]].concat();
    let layers = estargz_layers(&tars, 4 << 20, false);
    let reference = push(&registry, "p/app", &layers);
    let (out, run) = extract(&registry, &[&reference], &[]);
    run.assert_code(0);
    assert_eq!(published_tree(out.path(), &reference), expected_tree());
    assert_eq!(
        layer_line(&run, &layers[1])["message"],
        "layer pulled partially"
    );
    let gets: Vec<_> = blob_gets(&registry)
        .into_iter()
        .filter(|g| g.0 == layers[1].digest())
        .collect();
    assert_eq!(
        gets.iter().map(|g| g.1).collect::<Vec<_>>(),
        [206, 206, 206],
        "the tail, the rest of the TOC, the data: {gets:?}"
    );
    assert!(gets[1].2 > 16 << 10, "{gets:?}");
}

#[test]
fn the_newer_zstd_chunked_annotation_keys_are_read() {
    // containers/storage writes io.github.containers.… since it moved there; the blobs are alike.
    let registry = basic_registry();
    let layers: Vec<Blob> = zstd_chunked_layers(&fixture_tars())
        .into_iter()
        .map(|mut layer| {
            let annotations = layer.descriptor["annotations"].as_object_mut().unwrap();
            for key in [CHUNKED_CHECKSUM, CHUNKED_POSITION] {
                let value = annotations.remove(key).unwrap();
                annotations.insert(key.replacen("io.", "io.github.", 1), value);
            }
            layer
        })
        .collect();
    let reference = push(&registry, "p/app", &layers);
    let (out, run) = extract(&registry, &[&reference], &[]);
    run.assert_code(0);
    assert_eq!(published_tree(out.path(), &reference), expected_tree());
    for layer in &layers {
        assert_eq!(layer_line(&run, layer)["format"], "zstd:chunked");
    }
}
