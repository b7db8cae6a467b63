//! What a run asks the registry for, counted in the registry's access log: a cold run fetches each
//! unique blob (layers and configs) once; a warm run with refs pinned by digest asks nothing; with tag
//! refs, one manifest per image; an image that changed is pulled again, and only it.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::*;

const METADATA: &str =
    "name: p\nattributes:\n  type: infrastructure\n  version: v1.0.0\ninstallOrder: 20\n";

fn basic_registry() -> Registry {
    Registry::start(RegistryOpts::default().basic_auth("puller", "pw-requests"))
}

/// A base layer with content outside the subtree, shared by every image.
fn base_layer() -> Layer {
    Layer::gzip(
        &TarBuilder::new()
            .dir("usr/")
            .file("usr/bin/manager", &vec![7u8; 256 << 10])
            .finish(),
    )
}

fn provider(content: &str) -> Layer {
    Layer::gzip(&provider_layer(&[("default", METADATA, content)]))
}

fn manifests_of(name: &str) -> String {
    format!("kind: ConfigMap\nmetadata:\n  name: {name}\n")
}

/// Pushes `p/<name>:v1` for each name, all on one base layer; returns each image.
fn push_images(registry: &Registry, names: &[&str]) -> BTreeMap<String, PushedImage> {
    names
        .iter()
        .map(|name| {
            let image = Image::new(vec![base_layer(), provider(&manifests_of(name))]);
            let pushed = registry.push_image(&format!("p/{name}"), Some("v1"), &image);
            (name.to_string(), pushed)
        })
        .collect()
}

fn blobs_of(image: &PushedImage) -> BTreeSet<String> {
    let mut blobs: BTreeSet<String> = image.layer_digests.iter().cloned().collect();
    blobs.insert(image.config_digest.clone());
    blobs
}

/// The requests made since `before` of them were counted.
fn new_requests(registry: &Registry, before: usize) -> Vec<Access> {
    registry.requests_by_us().split_off(before)
}

/// Blob digest → how many GETs were answered 200; panics on any other blob request but the 401 of a
/// registry's challenge (the first request of a run is sent before the challenge is known).
fn blob_fetches(requests: &[Access]) -> BTreeMap<String, usize> {
    let mut fetches = BTreeMap::new();
    for access in requests.iter().filter(|a| a.is_blob() && a.status != 401) {
        assert!(
            access.method == "GET" && access.status == 200,
            "unexpected blob request {access:?}"
        );
        *fetches
            .entry(access.object("blobs").unwrap().to_string())
            .or_default() += 1;
    }
    fetches
}

/// Manifest requests answered 200, as `<path>`; panics on an answer other than 200 or the 401 of a
/// registry's first challenge.
fn manifest_fetches(requests: &[Access]) -> Vec<String> {
    let mut fetches = Vec::new();
    for access in requests {
        match (access.is_manifest(), access.status) {
            (true, 200) => fetches.push(access.path.clone()),
            // Basic auth: the first request of a run, sent before the challenge is known.
            (true, 401) => {}
            (false, _) if access.is_blob() => {}
            _ => panic!("unexpected request {access:?}"),
        }
    }
    fetches.sort();
    fetches
}

fn data_target(out: &Path) -> PathBuf {
    std::fs::read_link(out.join("..data")).expect("..data is published")
}

fn assert_warm(run: &RunOutput) {
    run.assert_code(0);
    assert!(
        run.stderr.contains("warm run"),
        "the run says it was warm:\n{}",
        run.stderr
    );
}

fn assert_content(out: &Path, reference: &str, content: &str) {
    let index = read_index(out);
    let entry = index_image(&index, reference);
    assert_eq!(
        read_subtree_file(out, entry, "default/manifests.yaml"),
        content.as_bytes(),
        "{reference}"
    );
}

#[test]
fn a_cold_run_fetches_each_blob_once_and_a_warm_run_by_digest_asks_nothing() {
    let registry = basic_registry();
    let images = push_images(&registry, &["one", "two", "three"]);
    // The same image under a second name: its manifest, config and layers are the same blobs.
    let copy = registry.push_image(
        "p/one-copy",
        None,
        &Image::new(vec![base_layer(), provider(&manifests_of("one"))]),
    );
    assert_eq!(copy.manifest_digest, images["one"].manifest_digest);
    let pinned = |repo: &str, image: &PushedImage| {
        format!("{}/{repo}@{}", registry.host(), image.manifest_digest)
    };
    let mut extract = Extract::new().registry(&registry);
    for (name, image) in &images {
        extract = extract.image(name, &pinned(&format!("p/{name}"), image));
    }
    extract = extract.image("one-copy", &pinned("p/one-copy", &copy));
    let out = tempfile::tempdir().unwrap();

    extract.run(out.path()).assert_code(0);
    let cold = registry.requests_by_us();
    // Four images start at once; the first request's 401 teaches the challenge to all of them.
    let challenged = cold.iter().filter(|access| access.status == 401).count();
    assert_eq!(challenged, 1, "{cold:#?}");
    let expected: BTreeMap<String, usize> = images
        .values()
        .flat_map(blobs_of)
        .map(|digest| (digest, 1))
        .collect();
    assert_eq!(
        expected.len(),
        1 + 3 + 3,
        "one base, three configs, three provider layers"
    );
    assert_eq!(blob_fetches(&cold), expected, "{cold:#?}");
    let manifests: BTreeSet<String> = manifest_fetches(&cold)
        .into_iter()
        .map(|path| path.rsplit_once('/').unwrap().1.to_string())
        .collect();
    let digests: BTreeSet<String> = images
        .values()
        .map(|image| image.manifest_digest.clone())
        .collect();
    assert_eq!(
        manifests, digests,
        "each manifest once, by digest: {cold:#?}"
    );
    assert_eq!(manifest_fetches(&cold).len(), 3, "{cold:#?}");

    let published = data_target(out.path());
    let warm = extract.run(out.path());
    assert_warm(&warm);
    assert_eq!(
        new_requests(&registry, cold.len()),
        [],
        "a warm run by digest makes no request"
    );
    assert_eq!(data_target(out.path()), published, "nothing is rewritten");
    assert_content(
        out.path(),
        &pinned("p/two", &images["two"]),
        &manifests_of("two"),
    );

    // A file changed on disk: that image is pulled again (and only it); the tree is republished.
    let index = read_index(out.path());
    let two = index_image(&index, &pinned("p/two", &images["two"]));
    let file = out
        .path()
        .join(two["volume"].as_str().unwrap())
        .join("capi-operator-manifests/default/manifests.yaml");
    std::fs::write(&file, "tampered\n").unwrap();
    let before = registry.requests_by_us().len();
    let repaired = extract.run(out.path());
    repaired.assert_code(0);
    assert!(!repaired.stderr.contains("warm run"), "{}", repaired.stderr);
    let again = new_requests(&registry, before);
    let expected: BTreeMap<String, usize> = blobs_of(&images["two"])
        .into_iter()
        .map(|d| (d, 1))
        .collect();
    assert_eq!(blob_fetches(&again), expected, "{again:#?}");
    assert_eq!(manifest_fetches(&again).len(), 1, "{again:#?}");
    assert_ne!(data_target(out.path()), published);
    assert_content(
        out.path(),
        &pinned("p/two", &images["two"]),
        &manifests_of("two"),
    );
    assert_content(
        out.path(),
        &pinned("p/one", &images["one"]),
        &manifests_of("one"),
    );

    // And the repaired tree is warm again.
    let before = registry.requests_by_us().len();
    assert_warm(&extract.run(out.path()));
    assert_eq!(new_requests(&registry, before), []);
}

#[test]
fn a_warm_run_by_tag_asks_one_manifest_per_image_and_pulls_a_moved_tag_again() {
    let registry = basic_registry();
    let names = ["one", "two", "three"];
    push_images(&registry, &names);
    let tagged = |name: &str| format!("{}/p/{name}:v1", registry.host());
    let mut extract = Extract::new().registry(&registry);
    for name in names {
        extract = extract.image(name, &tagged(name));
    }
    let out = tempfile::tempdir().unwrap();
    extract.run(out.path()).assert_code(0);
    let published = data_target(out.path());

    let before = registry.requests_by_us().len();
    assert_warm(&extract.run(out.path()));
    let warm = new_requests(&registry, before);
    assert_eq!(blob_fetches(&warm), BTreeMap::new(), "{warm:#?}");
    let mut expected = expected_tags(&names);
    expected.sort();
    assert_eq!(manifest_fetches(&warm), expected, "one manifest per image");
    assert_eq!(data_target(out.path()), published, "nothing is rewritten");

    // The tag moves: that image is pulled again, the others are taken from the tree.
    let moved = registry.push_image(
        "p/two",
        Some("v1"),
        &Image::new(vec![base_layer(), provider("version: two-moved\n")]),
    );
    let before = registry.requests_by_us().len();
    extract.run(out.path()).assert_code(0);
    let after = new_requests(&registry, before);
    let expected: BTreeMap<String, usize> = blobs_of(&moved).into_iter().map(|d| (d, 1)).collect();
    assert_eq!(blob_fetches(&after), expected, "{after:#?}");
    let mut manifests = expected_tags(&names);
    manifests.push("/v2/p/two/manifests/v1".to_string());
    manifests.sort();
    assert_eq!(manifest_fetches(&after), manifests, "{after:#?}");
    let index = read_index(out.path());
    assert_eq!(
        index_image(&index, &tagged("two"))["digest"],
        moved.manifest_digest.as_str()
    );
    assert_content(out.path(), &tagged("two"), "version: two-moved\n");
    assert_content(out.path(), &tagged("three"), &manifests_of("three"));
}

fn expected_tags(names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|name| format!("/v2/p/{name}/manifests/v1"))
        .collect()
}

#[test]
fn with_a_cache_dir_a_new_image_fetches_only_what_is_new() {
    let registry = basic_registry();
    let images = push_images(&registry, &["one", "two", "three"]);
    let pinned = |name: &str| {
        format!(
            "{}/p/{name}@{}",
            registry.host(),
            images[name].manifest_digest
        )
    };
    let cache = tempfile::tempdir().unwrap();
    let extract = |names: &[&str]| {
        let mut extract = Extract::new()
            .registry(&registry)
            .arg("--cache-dir")
            .arg(cache.path());
        for name in names {
            extract = extract.image(name, &pinned(name));
        }
        extract
    };
    let first = tempfile::tempdir().unwrap();
    extract(&["one", "two"]).run(first.path()).assert_code(0);

    // A new output directory, so nothing comes from a published tree: only from the cache.
    let second = tempfile::tempdir().unwrap();
    let before = registry.requests_by_us().len();
    extract(&["one", "two", "three"])
        .run(second.path())
        .assert_code(0);
    let requests = new_requests(&registry, before);
    let three = &images["three"];
    let new: BTreeMap<String, usize> = [&three.config_digest, &three.layer_digests[1]]
        .into_iter()
        .map(|digest| (digest.clone(), 1))
        .collect();
    assert_eq!(blob_fetches(&requests), new, "{requests:#?}");
    assert_eq!(
        manifest_fetches(&requests),
        [format!("/v2/p/three/manifests/{}", three.manifest_digest)],
        "{requests:#?}"
    );
    for name in ["one", "two", "three"] {
        assert_content(second.path(), &pinned(name), &manifests_of(name));
    }

    // A damaged entry is read as missing: that layer is fetched again, and the entry replaced.
    let base = &images["one"].layer_digests[0];
    let entry = cache
        .path()
        .join("layers/sha256")
        .join(base.strip_prefix("sha256:").unwrap());
    let mut bytes = std::fs::read(&entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&entry, &bytes).unwrap();
    let third = tempfile::tempdir().unwrap();
    let before = registry.requests_by_us().len();
    extract(&["one"]).run(third.path()).assert_code(0);
    let requests = new_requests(&registry, before);
    assert_eq!(
        blob_fetches(&requests),
        BTreeMap::from([(base.clone(), 1)]),
        "{requests:#?}"
    );
    assert_ne!(
        std::fs::read(&entry).unwrap(),
        bytes,
        "the entry is replaced"
    );
    assert_content(third.path(), &pinned("one"), &manifests_of("one"));
}
