//! `provider-images extract` at the edges of the registry protocol: blobs redirected to another
//! origin, `--insecure-registry`, signals and the run's timeout, the size limits, and manifests a
//! registry should never have served. Real registries (docker-registry) where they can play the
//! part, fake endpoints where they cannot. Expected values come from the fixtures' bytes, never
//! from the output.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const METADATA: &str = "name: aws\nattributes:\n  type: infrastructure\n  version: v1.0.0\nocpPlatform: AWS\ninstallOrder: 20\n";
const MANIFESTS: &str =
    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: capa\nspec:\n  replicas: 1\n";

/// The query of a pre-signed object-storage URL; its signature is a credential.
const SIGNATURE: &str = "SECRET-SIG";

fn provider(manifests: &str) -> Layer {
    Layer::gzip(&provider_layer(&[("default", METADATA, manifests)]))
}

/// A layer with content outside the subtree, so an image has more than one layer blob.
fn base_layer() -> Layer {
    Layer::gzip(
        &TarBuilder::new()
            .dir("usr/")
            .file("usr/bin/manager", &[7u8; 4096])
            .finish(),
    )
}

/// `default/manifests.yaml` of the one image `reference`, as published in `out`.
fn published_manifests(out: &Path, reference: &str) -> Vec<u8> {
    let index = read_index(out);
    read_subtree_file(
        out,
        index_image(&index, reference),
        "default/manifests.yaml",
    )
}

/// Where distribution's filesystem driver keeps blob `digest`, as a path inside the driver:
/// what the redirect middleware appends to its base URL.
fn storage_path(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    format!("/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2])
}

#[test]
fn redirected_blobs_come_from_the_other_origin_without_authorization() {
    let registry = Registry::start(
        RegistryOpts::default()
            .basic_auth("puller", "pw-SECRET-redirect")
            .redirect_blobs(),
    );
    let image = registry.push_image(
        "p/redirected",
        Some("v1"),
        &Image::new(vec![base_layer(), provider(MANIFESTS)]),
    );
    let reference = format!("{}/p/redirected:v1", registry.host());
    let out = tempfile::tempdir().unwrap();
    Extract::new()
        .registry(&registry)
        .image("redirected", &reference)
        .run(out.path())
        .assert_code(0);
    assert_eq!(
        published_manifests(out.path(), &reference),
        MANIFESTS.as_bytes()
    );

    let store = registry.blob_store().expect("blobs are redirected");
    let requests = store.requests();
    for digest in image.layer_digests.iter().chain([&image.config_digest]) {
        assert!(
            requests
                .iter()
                .any(|r| r.method == "GET" && r.path() == storage_path(digest)),
            "the store served {digest}: {requests:#?}"
        );
    }
    for request in &requests {
        assert!(
            request.headers.get("authorization").is_none(),
            "the registry's credentials went to another origin: {request:#?}"
        );
    }
}

#[test]
fn a_signed_redirect_url_never_reaches_the_log() {
    let pki = Pki::new();
    let image = Image::new(vec![base_layer(), provider(MANIFESTS)]);
    let built = image.build();
    let blobs: Vec<&[u8]> = std::iter::once(built.config.as_slice())
        .chain(image.layers.iter().map(|l| l.bytes.as_slice()))
        .collect();
    // The store serves every blob under /bucket/ and refuses it under /expired/, as object
    // storage answers a URL whose signature has expired.
    let store = blobs
        .iter()
        .fold(FakeRoutes::new(), |routes, blob| {
            let digest = sha256_digest(blob);
            routes
                .route(&format!("/bucket/{digest}"), Response::new(200).body(*blob))
                .route(
                    &format!("/expired/{digest}"),
                    Response::new(403).body("<Error><Code>AccessDenied</Code></Error>"),
                )
        })
        .start(&pki);
    let signed = |prefix: &str, digest: &str| {
        store.url(&format!(
            "/{prefix}/{digest}?X-Amz-Expires=300&X-Amz-Signature={SIGNATURE}"
        ))
    };
    let mut routes = FakeRoutes::new().registry();
    for (repo, prefix) in [("p/signed", "bucket"), ("p/expired", "expired")] {
        routes = routes.manifest(repo, "v1", OCI_MANIFEST, &built.manifest);
        for blob in &blobs {
            let digest = sha256_digest(blob);
            routes = routes.redirect_blob(repo, &digest, &signed(prefix, &digest));
        }
    }
    let registry = routes.start(&pki);

    let reference = format!("{}/p/signed:v1", registry.host());
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .arg("--ca-file")
        .arg(pki.ca_pem())
        .image("signed", &reference)
        .env("RUST_LOG", "trace")
        .run(out.path());
    run.assert_code(0);
    assert!(run.stderr.contains("TRACE"), "trace logging was on");
    assert_eq!(
        published_manifests(out.path(), &reference),
        MANIFESTS.as_bytes()
    );
    let fetched: Vec<SeenRequest> = store.requests();
    assert_eq!(fetched.len(), blobs.len(), "{fetched:#?}");
    assert!(
        fetched.iter().all(|r| r
            .path_and_query
            .contains(&format!("X-Amz-Signature={SIGNATURE}"))),
        "the signed URLs were followed as given: {fetched:#?}"
    );
    assert!(
        !run.stderr.contains(SIGNATURE),
        "a URL signature leaked into the log"
    );

    // A refused signed URL is an error, and errors name URLs: still without the signature.
    let reference = format!("{}/p/expired:v1", registry.host());
    let termination = out.path().join("termination-log");
    let run = Extract::new()
        .arg("--ca-file")
        .arg(pki.ca_pem())
        .arg("--termination-message-path")
        .arg(&termination)
        .image("expired", &reference)
        .env("RUST_LOG", "trace")
        .run(&out.path().join("tree"));
    run.assert_code(1);
    assert!(run.stderr.contains("403"), "{}", run.stderr);
    assert!(run.stderr.contains(&registry.host()), "{}", run.stderr);
    let message = std::fs::read_to_string(&termination).unwrap();
    assert!(message.contains("p/expired:v1"), "{message}");
    assert!(
        !run.stderr.contains(SIGNATURE) && !message.contains(SIGNATURE),
        "a URL signature leaked into an error"
    );
}

#[test]
fn a_plain_http_registry_is_used_only_when_named_insecure() {
    let registry = Registry::start(RegistryOpts::default().plain_http());
    registry.push_image(
        "p/plain",
        Some("v1"),
        &Image::new(vec![provider(MANIFESTS)]),
    );
    let reference = format!("{}/p/plain:v1", registry.host());
    let out = tempfile::tempdir().unwrap();

    let run = Extract::new()
        .image("plain", &reference)
        .run(&out.path().join("refused"));
    run.assert_code(1);
    assert!(
        run.stderr
            .contains(&format!("cannot connect to {}", registry.host())),
        "{}",
        run.stderr
    );
    assert!(!out.path().join("refused/index.json").exists());

    Extract::new()
        .image("plain", &reference)
        .arg("--insecure-registry")
        .arg(registry.host())
        .run(&out.path().join("allowed"))
        .assert_code(0);
    assert_eq!(
        published_manifests(&out.path().join("allowed"), &reference),
        MANIFESTS.as_bytes()
    );
}

#[test]
fn an_unknown_ca_is_accepted_only_for_an_insecure_registry() {
    let registry = Registry::start(RegistryOpts::default().basic_auth("puller", "pw"));
    registry.push_image(
        "p/selfsigned",
        Some("v1"),
        &Image::new(vec![provider(MANIFESTS)]),
    );
    let reference = format!("{}/p/selfsigned:v1", registry.host());
    let out = tempfile::tempdir().unwrap();

    // The CA is never given: only the credentials.
    let run = Extract::new()
        .credentials(&registry)
        .image("selfsigned", &reference)
        .run(&out.path().join("refused"));
    run.assert_code(1);
    assert!(
        run.stderr.contains(&registry.host()) && run.stderr.contains("UnknownIssuer"),
        "{}",
        run.stderr
    );

    Extract::new()
        .credentials(&registry)
        .image("selfsigned", &reference)
        .arg("--insecure-registry")
        .arg(registry.host())
        .run(&out.path().join("allowed"))
        .assert_code(0);
    assert_eq!(
        published_manifests(&out.path().join("allowed"), &reference),
        MANIFESTS.as_bytes()
    );
}

#[test]
fn insecure_registry_for_one_port_does_not_weaken_another() {
    // Two registries on 127.0.0.1, each with a CA of its own that the run does not trust.
    let insecure = Registry::start(RegistryOpts::default());
    let other = Registry::start(RegistryOpts::default());
    for registry in [&insecure, &other] {
        registry.push_image("p/x", Some("v1"), &Image::new(vec![provider(MANIFESTS)]));
    }
    let insecure_ref = format!("{}/p/x:v1", insecure.host());
    let other_ref = format!("{}/p/x:v1", other.host());
    let out = tempfile::tempdir().unwrap();
    let termination = out.path().join("termination-log");
    let run = Extract::new()
        .image("insecure", &insecure_ref)
        .image("other", &other_ref)
        .arg("--insecure-registry")
        .arg(insecure.host())
        .arg("--termination-message-path")
        .arg(&termination)
        .run(&out.path().join("tree"));
    run.assert_code(1);
    let message = std::fs::read_to_string(&termination).unwrap();
    assert!(message.starts_with("1 of 2 images failed"), "{message}");
    let failure = message
        .lines()
        .find(|line| line.starts_with(&format!("image {other_ref} ")))
        .unwrap_or_else(|| panic!("{other_ref} is reported: {message}"));
    assert!(
        failure.contains(&other.host()) && failure.contains("UnknownIssuer"),
        "{failure}"
    );
    assert!(!message.contains(&insecure_ref), "{message}");
    assert!(!out.path().join("tree/index.json").exists());
}

/// Starts an extract of one image on a registry that never answers, waits until it connected,
/// sends `signal` and returns how it ended, and the output directory.
fn interrupt_a_hanging_pull(signal: &str) -> (RunOutput, tempfile::TempDir) {
    let hanging = HangingServer::start();
    let out = tempfile::tempdir().unwrap();
    let extract = Extract::new().image("hang", &format!("{}/p/hang:v1", hanging.host()));
    let running = extract.command(&out.path().join("tree")).spawn();
    hanging.wait_for_connection(Duration::from_secs(20));
    let sent = Instant::now();
    running.signal(signal);
    let run = running.wait(Duration::from_secs(20));
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "took {:?} to stop after SIG{signal}",
        sent.elapsed()
    );
    (run, out)
}

#[test]
fn sigterm_exits_143_and_publishes_nothing() {
    let (run, out) = interrupt_a_hanging_pull("TERM");
    run.assert_code(143);
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
    assert!(!out.path().join("tree/index.json").exists());
}

#[test]
fn sigint_exits_130_and_publishes_nothing() {
    let (run, out) = interrupt_a_hanging_pull("INT");
    run.assert_code(130);
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
    assert!(!out.path().join("tree/index.json").exists());
}

#[test]
fn the_run_timeout_ends_a_hanging_pull() {
    let hanging = HangingServer::start();
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let extract = Extract::new()
        .image("hang", &format!("{}/p/hang:v1", hanging.host()))
        .arg("--timeout")
        .arg("2s");
    let run = extract
        .command(&out.path().join("tree"))
        .timeout(Duration::from_secs(30))
        .run();
    let elapsed = started.elapsed();
    run.assert_code(1);
    assert!(hanging.accepted() > 0, "the run reached the registry");
    assert!(
        run.stderr.contains("timed out after 2s (--timeout)"),
        "{}",
        run.stderr
    );
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(8),
        "ended after {elapsed:?}"
    );
    assert!(!out.path().join("tree/index.json").exists());
}

#[test]
fn a_file_over_max_file_size_fails_naming_the_path_and_the_limit() {
    let registry = Registry::start(RegistryOpts::default());
    let manifests = format!("# {}\n", "x".repeat(2045));
    assert_eq!(manifests.len(), 2048);
    registry.push_image("p/big", Some("v1"), &Image::new(vec![provider(&manifests)]));
    let reference = format!("{}/p/big:v1", registry.host());
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .registry(&registry)
        .image("big", &reference)
        .arg("--max-file-size")
        .arg("1KiB")
        .run(&out.path().join("refused"));
    run.assert_code(1);
    assert!(
        run.stderr.contains(&format!(
            "{MANIFESTS_DIR}/default/manifests.yaml: file exceeds --max-file-size (1024 bytes)"
        )),
        "{}",
        run.stderr
    );
    assert!(!out.path().join("refused/index.json").exists());

    // A file exactly at the limit fits.
    Extract::new()
        .registry(&registry)
        .image("big", &reference)
        .arg("--max-file-size")
        .arg("2KiB")
        .run(&out.path().join("allowed"))
        .assert_code(0);
    assert_eq!(
        published_manifests(&out.path().join("allowed"), &reference),
        manifests.as_bytes()
    );
}

#[test]
fn max_image_size_counts_each_layer_and_the_merged_subtree() {
    let registry = Registry::start(RegistryOpts::default());
    let manifests = format!("# {}\n", "y".repeat(597));
    let profile = |name| (name, METADATA, manifests.as_str());
    let per_profile = METADATA.len() + manifests.len();
    assert!(per_profile < 1024 && 2 * per_profile > 1024);
    // Both profiles in one layer: that layer alone is over the limit.
    registry.push_image(
        "p/wide",
        Some("v1"),
        &Image::new(vec![Layer::gzip(&provider_layer(&[
            profile("a"),
            profile("b"),
        ]))]),
    );
    // One profile per layer: each layer fits, the merged subtree does not.
    registry.push_image(
        "p/stacked",
        Some("v1"),
        &Image::new(vec![
            Layer::gzip(&provider_layer(&[profile("a")])),
            Layer::gzip(&provider_layer(&[profile("b")])),
        ]),
    );
    let out = tempfile::tempdir().unwrap();
    let run = |repo: &str, limit: &str| {
        Extract::new()
            .registry(&registry)
            .image("sized", &format!("{}/{repo}:v1", registry.host()))
            .arg("--max-image-size")
            .arg(limit)
            .run(
                &out.path()
                    .join(format!("{}-{limit}", repo.replace('/', "-"))),
            )
    };

    let wide = run("p/wide", "1KiB");
    wide.assert_code(1);
    assert!(
        wide.stderr.contains(&format!(
            "{MANIFESTS_DIR}/b/manifests.yaml: the layer's files under {MANIFESTS_DIR}/ exceed --max-image-size (1024 bytes)"
        )),
        "{}",
        wide.stderr
    );

    let stacked = run("p/stacked", "1KiB");
    stacked.assert_code(1);
    assert!(
        stacked.stderr.contains(&format!(
            "{MANIFESTS_DIR}/ of the merged layers holds {} bytes, over --max-image-size (1024 bytes)",
            2 * per_profile
        )),
        "{}",
        stacked.stderr
    );

    // Exactly at the limit fits, in either shape.
    let exact = (2 * per_profile).to_string();
    run("p/wide", &exact).assert_code(0);
    run("p/stacked", &exact).assert_code(0);
}

#[test]
fn a_manifest_that_does_not_match_its_digest_is_refused() {
    let pki = Pki::new();
    let asked = Image::new(vec![provider("asked: true\n")]).build();
    let served = Image::new(vec![provider("served: true\n")]).build();
    let asked_digest = sha256_digest(&asked.manifest);
    let served_digest = sha256_digest(&served.manifest);
    let registry = FakeRoutes::new()
        .registry()
        .manifest("p/swapped", &asked_digest, OCI_MANIFEST, &served.manifest)
        .blob("p/swapped", &served.config)
        .start(&pki);
    let reference = format!("{}/p/swapped@{asked_digest}", registry.host());
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .arg("--ca-file")
        .arg(pki.ca_pem())
        .image("swapped", &reference)
        .run(out.path());
    run.assert_code(1);
    assert!(
        run.stderr.contains(&format!(
            "from {} has digest {served_digest}, expected {asked_digest}",
            registry.host()
        )),
        "{}",
        run.stderr
    );
    let blobs: Vec<SeenRequest> = registry
        .requests()
        .into_iter()
        .filter(|r| r.path().contains("/blobs/"))
        .collect();
    assert!(blobs.is_empty(), "nothing of it was used: {blobs:#?}");
    assert!(!out.path().join("index.json").exists());
}

#[test]
fn a_schema1_manifest_is_refused() {
    let pki = Pki::new();
    let schema1 = json!({
        "schemaVersion": 1,
        "name": "p/old",
        "tag": "v1",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": sha256_digest(b"layer")}],
        "history": [{"v1Compatibility": "{}"}],
        "signatures": [],
    });
    let registry = FakeRoutes::new()
        .registry()
        .manifest(
            "p/old",
            "v1",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            &serde_json::to_vec_pretty(&schema1).unwrap(),
        )
        .start(&pki);
    let reference = format!("{}/p/old:v1", registry.host());
    let run = Extract::new()
        .arg("--ca-file")
        .arg(pki.ca_pem())
        .image("old", &reference)
        .run(tempfile::tempdir().unwrap().path());
    run.assert_code(1);
    assert!(
        run.stderr.contains(&format!(
            "(from {host}/p/old:v1): manifest p/old:v1 from {host}: Docker schema 1 manifests are not supported",
            host = registry.host()
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn an_artifact_is_not_an_image() {
    const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
    let registry = Registry::start(RegistryOpts::default());
    // Everything an image has, provider manifests included, but the config says artifact.
    let layer = provider(MANIFESTS);
    let config = registry.push_blob("p/artifact", b"{}");
    let blob = registry.push_blob("p/artifact", &layer.bytes);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.provider",
        "config": {"mediaType": EMPTY_CONFIG, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": layer.media_type, "digest": blob.digest, "size": blob.size}],
    });
    registry.push_manifest(
        "p/artifact",
        "v1",
        OCI_MANIFEST,
        &serde_json::to_vec(&manifest).unwrap(),
    );
    let reference = format!("{}/p/artifact:v1", registry.host());
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .registry(&registry)
        .image("artifact", &reference)
        .run(out.path());
    run.assert_code(1);
    assert!(
        run.stderr.contains(&format!(
            "config media type \\\"{EMPTY_CONFIG}\\\" is not an image config, so this is not an image"
        )),
        "{}",
        run.stderr
    );
    assert!(!out.path().join("index.json").exists());
}
