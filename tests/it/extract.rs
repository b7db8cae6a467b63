//! `provider-images extract` end to end against a real registry (docker-registry with TLS from a CA made
//! at test time). Expected contents are the bytes the fixtures put into the images, never the output.

use crate::common;

use std::os::unix::fs::PermissionsExt;

use common::*;

const AWS_METADATA: &str = "name: aws\nattributes:\n  type: infrastructure\n  version: v1.0.0\nocpPlatform: AWS\nselfImageRef: PLACEHOLDER\ninstallOrder: 20\n";
const AWS_MANIFESTS: &str =
    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: capa\nspec:\n  image: PLACEHOLDER\n";
const GCP_METADATA: &str = "name: gcp\nattributes:\n  type: infrastructure\n  version: v2.0.0\nocpPlatform: GCP\ninstallOrder: 20\n";

fn basic_registry() -> Registry {
    Registry::start(RegistryOpts::default().basic_auth("puller", "pw-SECRET-basic"))
}

/// A base layer with content outside the subtree, shared by images.
fn base_layer() -> Layer {
    Layer::gzip(
        &TarBuilder::new()
            .dir("usr/")
            .dir("usr/bin/")
            .file("usr/bin/manager", &vec![7u8; 256 << 10])
            .finish(),
    )
}

fn provider(profiles: &[(&str, &str, &str)]) -> Layer {
    Layer::gzip(&provider_layer(profiles))
}

#[test]
fn publishes_two_images_with_a_shared_base_layer_byte_for_byte() {
    let registry = basic_registry();
    let gcp_manifests = [
        "kind: ConfigMap\nmetadata:\n  name: capg-default\n",
        "kind: ConfigMap\nmetadata:\n  name: capg-tp\n",
    ];
    let aws = registry.push_image(
        "openshift/capi-aws",
        Some("v1"),
        &Image::new(vec![
            base_layer(),
            provider(&[("default", AWS_METADATA, AWS_MANIFESTS)]),
        ]),
    );
    registry.push_image(
        "openshift/capi-gcp",
        Some("v1"),
        &Image::new(vec![
            base_layer(),
            provider(&[
                ("default", GCP_METADATA, gcp_manifests[0]),
                ("techpreview", GCP_METADATA, gcp_manifests[1]),
            ]),
        ]),
    );
    let aws_ref = format!(
        "{}/openshift/capi-aws@{}",
        registry.host(),
        aws.manifest_digest
    );
    let gcp_ref = format!("{}/openshift/capi-gcp:v1", registry.host());
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .registry(&registry)
        .image("aws-cluster-api-controllers", &aws_ref)
        .image("aws-again", &aws_ref)
        .image("gcp-cluster-api-controllers", &gcp_ref)
        .run(out.path());
    run.assert_code(0);

    let index = read_index(out.path());
    assert_eq!(index["generator"], "provider-images 0.1.0");
    let images = index["images"].as_array().unwrap();
    assert_eq!(
        images.len(),
        2,
        "duplicate refs are pulled and listed once: {index:#}"
    );
    assert!(
        images[0]["ref"].as_str() < images[1]["ref"].as_str(),
        "sorted by ref"
    );

    let aws_entry = index_image(&index, &aws_ref);
    assert_eq!(
        aws_entry["names"],
        serde_json::json!(["aws-again", "aws-cluster-api-controllers"])
    );
    assert_eq!(aws_entry["digest"], aws.manifest_digest.as_str());
    assert_eq!(
        aws_entry["source"],
        format!(
            "{}/openshift/capi-aws@{}",
            registry.host(),
            aws.manifest_digest
        )
    );
    assert!(aws_entry.get("indexDigest").is_none());
    let profile = &aws_entry["profiles"][0];
    assert_eq!(profile["profile"], "default");
    assert_eq!(profile["metadata"]["name"], "aws");
    assert_eq!(profile["metadata"]["ocpPlatform"], "AWS");
    assert_eq!(profile["metadata"]["installOrder"], 20);
    assert_eq!(profile["metadata"]["selfImageRef"], "PLACEHOLDER");
    assert_eq!(profile["contentID"], sha256_hex(AWS_MANIFESTS.as_bytes()));
    assert_eq!(
        profile["files"]["metadata.yaml"],
        sha256_hex(AWS_METADATA.as_bytes())
    );
    // Nothing is substituted: the bytes are the image's.
    assert_eq!(
        read_subtree_file(out.path(), aws_entry, "default/manifests.yaml"),
        AWS_MANIFESTS.as_bytes()
    );
    assert_eq!(
        read_subtree_file(out.path(), aws_entry, "default/metadata.yaml"),
        AWS_METADATA.as_bytes()
    );
    let volume = aws_entry["volume"].as_str().unwrap();
    assert!(
        volume.starts_with("capi-aws-") && volume.len() == "capi-aws-".len() + 8,
        "{volume}"
    );
    assert_eq!(
        profile["manifestsPath"],
        format!("{volume}/capi-operator-manifests/default/manifests.yaml")
    );

    let gcp_entry = index_image(&index, &gcp_ref);
    assert!(
        gcp_entry["volume"]
            .as_str()
            .unwrap()
            .starts_with("capi-gcp-v1-"),
        "a :tag stays in the volume name"
    );
    let names: Vec<&str> = gcp_entry["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["profile"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "techpreview"]);
    assert_eq!(
        read_subtree_file(out.path(), gcp_entry, "techpreview/manifests.yaml"),
        gcp_manifests[1].as_bytes()
    );
    assert_eq!(
        gcp_entry["profiles"][1]["contentID"],
        sha256_hex(gcp_manifests[1].as_bytes())
    );

    // Visible entries are relative links through ..data; modes are fixed whatever the image says.
    assert_eq!(
        std::fs::read_link(out.path().join("index.json")).unwrap(),
        std::path::Path::new("..data/index.json")
    );
    assert_eq!(
        std::fs::read_link(out.path().join(volume)).unwrap(),
        std::path::Path::new("..data").join(volume)
    );
    let file = out
        .path()
        .join(volume)
        .join("capi-operator-manifests/default/manifests.yaml");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777,
        0o644
    );
    let dir = out
        .path()
        .join(volume)
        .join("capi-operator-manifests/default");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert!(
        !out.path().join(volume).join("usr").exists(),
        "only the subtree is published"
    );
}

#[test]
fn a_multi_arch_index_yields_the_requested_platform() {
    let registry = basic_registry();
    let repo = "openshift/capi-multi";
    let mut entries = Vec::new();
    for arch in ["amd64", "arm64"] {
        let manifests = format!("arch: {arch}\n");
        let image = Image::new(vec![provider(&[("default", AWS_METADATA, &manifests)])])
            .platform(Platform::parse(&format!("linux/{arch}")));
        entries.push(registry.push_image(repo, None, &image));
    }
    for format in [ManifestFormat::Oci, ManifestFormat::Docker] {
        let index = registry.push_index(
            repo,
            Some("multi"),
            &entries
                .iter()
                .map(PushedImage::index_entry)
                .collect::<Vec<_>>(),
            format,
        );
        let reference = format!("{}/{repo}@{}", registry.host(), index.digest);
        let out = tempfile::tempdir().unwrap();
        Extract::new()
            .registry(&registry)
            .image("multi", &reference)
            .arg("--platform")
            .arg("linux/arm64")
            .run(out.path())
            .assert_code(0);
        let index_json = read_index(out.path());
        let entry = index_image(&index_json, &reference);
        assert_eq!(index_json["platform"], "linux/arm64");
        assert_eq!(entry["indexDigest"], index.digest.as_str(), "{format:?}");
        assert_eq!(
            entry["digest"],
            entries[1].manifest_digest.as_str(),
            "{format:?}"
        );
        assert_eq!(
            read_subtree_file(out.path(), entry, "default/manifests.yaml"),
            b"arch: arm64\n"
        );
    }

    let reference = format!("{}/{repo}:multi", registry.host());
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .registry(&registry)
        .image("multi", &reference)
        .arg("--platform")
        .arg("linux/s390x")
        .run(out.path());
    run.assert_code(1);
    assert!(
        run.stderr.contains("no manifest for linux/s390x")
            && run.stderr.contains("linux/amd64, linux/arm64"),
        "{}",
        run.stderr
    );
    assert!(
        !out.path().join("index.json").exists(),
        "nothing is published"
    );
}

#[test]
fn docker_v2s2_zstd_and_multi_member_gzip_layers() {
    let registry = basic_registry();
    let tar =
        |name: &str| provider_layer(&[("default", AWS_METADATA, &format!("image: {name}\n"))]);
    let docker = registry.push_image(
        "p/docker",
        Some("v1"),
        &Image::new(vec![base_layer(), Layer::gzip(&tar("docker"))]).format(ManifestFormat::Docker),
    );
    assert_eq!(docker.media_type, DOCKER_MANIFEST);
    registry.push_image(
        "p/zstd",
        Some("v1"),
        &Image::new(vec![Layer::zstd(&tar("zstd"))]),
    );
    let pigz = tar("pigz");
    // metadata.yaml and manifests.yaml end up in the second gzip member.
    registry.push_image(
        "p/pigz",
        Some("v1"),
        &Image::new(vec![Layer::gzip_multi_member(&pigz, 1024)]),
    );
    registry.push_image(
        "p/plain",
        Some("v1"),
        &Image::new(vec![Layer::uncompressed(&tar("plain"))]),
    );
    let out = tempfile::tempdir().unwrap();
    let mut extract = Extract::new().registry(&registry);
    for name in ["docker", "zstd", "pigz", "plain"] {
        extract = extract.image(name, &format!("{}/p/{name}:v1", registry.host()));
    }
    extract.run(out.path()).assert_code(0);
    let index = read_index(out.path());
    for name in ["docker", "zstd", "pigz", "plain"] {
        let entry = index_image(&index, &format!("{}/p/{name}:v1", registry.host()));
        let expected = format!("image: {name}\n");
        assert_eq!(
            read_subtree_file(out.path(), entry, "default/manifests.yaml"),
            expected.as_bytes()
        );
        assert_eq!(
            entry["profiles"][0]["contentID"],
            sha256_hex(expected.as_bytes())
        );
    }
}

#[test]
fn a_tampered_blob_fails_the_run_and_the_previous_tree_stays() {
    let registry = basic_registry();
    // An uncompressed layer: a byte flipped past the tar's end-of-archive marker changes nothing a tar
    // reader sees, so only a client that reads the blob to its end and checks the digest notices.
    let tar = provider_layer(&[("default", AWS_METADATA, AWS_MANIFESTS)]);
    let image = registry.push_image(
        "p/tamper",
        Some("v1"),
        &Image::new(vec![base_layer(), Layer::uncompressed(&tar)]),
    );
    let reference = format!("{}/p/tamper:v1", registry.host());
    let out = tempfile::tempdir().unwrap();
    Extract::new()
        .registry(&registry)
        .image("tamper", &reference)
        .run(out.path())
        .assert_code(0);
    let before = std::fs::read(out.path().join("index.json")).unwrap();

    let layer = &image.layer_digests[1];
    let path = registry.blob_data_path(layer);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    // The published tree already holds the tag's image, so a run would not pull it again; the same
    // image by digest is new to the tree and is pulled.
    let pinned = format!("{}/p/tamper@{}", registry.host(), image.manifest_digest);
    let run = Extract::new()
        .registry(&registry)
        .image("tamper", &reference)
        .image("tamper-pinned", &pinned)
        .run(out.path());
    run.assert_code(1);
    assert!(
        run.stderr.contains(&format!(
            "blob {layer} from {} has digest sha256:",
            registry.host()
        )),
        "the error names the digest and the registry: {}",
        run.stderr
    );
    assert_eq!(
        std::fs::read(out.path().join("index.json")).unwrap(),
        before,
        "the old tree is intact"
    );
}

#[test]
fn missing_credentials_are_named_with_the_401() {
    let registry = basic_registry();
    registry.push_image(
        "p/locked",
        Some("v1"),
        &Image::new(vec![provider(&[("default", AWS_METADATA, AWS_MANIFESTS)])]),
    );
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .trust(&registry)
        .image("locked", &format!("{}/p/locked:v1", registry.host()))
        .run(out.path());
    run.assert_code(1);
    assert!(run.stderr.contains("401"), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "no credentials for {} in the pull secret",
            registry.host()
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn bearer_tokens_are_fetched_once_per_scope_and_never_logged() {
    let registry = Registry::start(RegistryOpts::default().token_auth("robot", "pw-SECRET-token"));
    for tag in ["a", "b"] {
        registry.push_image(
            "p/tokened",
            Some(tag),
            &Image::new(vec![provider(&[(
                "default",
                AWS_METADATA,
                &format!("tag: {tag}\n"),
            )])]),
        );
    }
    let tokens = registry.token_server().expect("token auth");
    tokens.clear_requests();
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .registry(&registry)
        .image("a", &format!("{}/p/tokened:a", registry.host()))
        .image("b", &format!("{}/p/tokened:b", registry.host()))
        .arg("--concurrency")
        .arg("1")
        .env("RUST_LOG", "trace")
        .run(out.path());
    run.assert_code(0);
    let requests = tokens.requests();
    assert_eq!(requests.len(), 1, "one token for one scope: {requests:?}");
    assert!(requests[0].authorization, "credentials went to the realm");
    assert!(
        requests[0]
            .path_and_query
            .contains("scope=repository%3Ap%2Ftokened%3Apull"),
        "{requests:?}"
    );
    assert!(
        !run.stderr.contains("pw-SECRET"),
        "the password leaked into the log"
    );
    assert!(!run.stderr.contains("eyJ"), "a token leaked into the log");
    let index = read_index(out.path());
    let entry = index_image(&index, &format!("{}/p/tokened:b", registry.host()));
    assert_eq!(
        read_subtree_file(out.path(), entry, "default/manifests.yaml"),
        b"tag: b\n"
    );
}

#[test]
fn basic_credentials_never_reach_the_log() {
    let registry = basic_registry();
    registry.push_image(
        "p/quiet",
        Some("v1"),
        &Image::new(vec![provider(&[("default", AWS_METADATA, AWS_MANIFESTS)])]),
    );
    let run = Extract::new()
        .registry(&registry)
        .image("quiet", &format!("{}/p/quiet:v1", registry.host()))
        .env("RUST_LOG", "trace")
        .run(tempfile::tempdir().unwrap().path());
    run.assert_code(0);
    assert!(
        run.stderr.contains("TRACE") || run.stderr.contains("\"level\":\"TRACE\""),
        "trace logging was on"
    );
    let basic = base64_of("puller:pw-SECRET-basic");
    assert!(
        !run.stderr.contains("pw-SECRET") && !run.stderr.contains(&basic),
        "a credential leaked"
    );
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn an_unknown_ca_is_a_tls_error_naming_the_registry() {
    let registry = basic_registry();
    registry.push_image(
        "p/x",
        Some("v1"),
        &Image::new(vec![provider(&[("default", AWS_METADATA, AWS_MANIFESTS)])]),
    );
    let run = Extract::new()
        .credentials(&registry)
        .image("x", &format!("{}/p/x:v1", registry.host()))
        .run(tempfile::tempdir().unwrap().path());
    run.assert_code(1);
    assert!(run.stderr.contains(&registry.host()), "{}", run.stderr);
    assert!(run.stderr.contains("UnknownIssuer"), "{}", run.stderr);
}

#[test]
fn an_image_without_manifests_is_listed_with_no_profiles() {
    let registry = basic_registry();
    registry.push_image("p/plain", Some("v1"), &Image::new(vec![base_layer()]));
    let reference = format!("{}/p/plain:v1", registry.host());
    let out = tempfile::tempdir().unwrap();
    Extract::new()
        .registry(&registry)
        .image("kube-rbac-proxy", &reference)
        .run(out.path())
        .assert_code(0);
    let index = read_index(out.path());
    let entry = index_image(&index, &reference);
    assert_eq!(entry["profiles"], serde_json::json!([]));
    let volume = out.path().join(entry["volume"].as_str().unwrap());
    assert!(
        volume.is_dir() && std::fs::read_dir(&volume).unwrap().next().is_none(),
        "an empty volume"
    );
}

#[test]
fn every_failing_image_is_reported_and_nothing_is_published() {
    let registry = basic_registry();
    registry.push_image(
        "p/good",
        Some("v1"),
        &Image::new(vec![provider(&[("default", AWS_METADATA, AWS_MANIFESTS)])]),
    );
    registry.push_image(
        "p/incomplete",
        Some("v1"),
        &Image::new(vec![Layer::gzip(
            &TarBuilder::new()
                .file("capi-operator-manifests/p/manifests.yaml", b"a: 1\n")
                .finish(),
        )]),
    );
    let out = tempfile::tempdir().unwrap();
    let termination = out.path().join("termination-log");
    let output = out.path().join("tree");
    let run = Extract::new()
        .registry(&registry)
        .image("good", &format!("{}/p/good:v1", registry.host()))
        .image("absent", &format!("{}/p/absent:v1", registry.host()))
        .image(
            "incomplete",
            &format!("{}/p/incomplete:v1", registry.host()),
        )
        .arg("--termination-message-path")
        .arg(&termination)
        .run(&output);
    run.assert_code(1);
    assert!(
        run.stderr.contains("MANIFEST_UNKNOWN") || run.stderr.contains("NAME_UNKNOWN"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("profile p: missing metadata.yaml"),
        "{}",
        run.stderr
    );
    let message = std::fs::read_to_string(&termination).unwrap();
    assert!(message.starts_with("2 of 3 images failed"), "{message}");
    assert!(
        message.contains("p/absent:v1") && message.contains("p/incomplete:v1"),
        "{message}"
    );
    assert!(message.len() <= 4096);
    assert!(!output.join("index.json").exists(), "nothing is published");
}

#[test]
fn invalid_references_exit_2_naming_the_key_and_value_before_any_pull() {
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .image("good", "quay.io/openshift/capi-aws:v1")
        .image("broken", "not a valid image reference!!!")
        .run(out.path());
    run.assert_code(2);
    assert!(
        run.stderr.contains("broken") && run.stderr.contains("not a valid image reference!!!"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("pulling"),
        "nothing is pulled: {}",
        run.stderr
    );
}

#[test]
fn hostile_layers_fail_the_image_naming_the_path() {
    let registry = basic_registry();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "escape",
            TarBuilder::new()
                .raw_name(b"../evil", tar::EntryType::Regular, b"x")
                .finish(),
            "../evil",
        ),
        (
            "symlink",
            TarBuilder::new()
                .dir("capi-operator-manifests/")
                .symlink("capi-operator-manifests/default", "/etc")
                .finish(),
            "capi-operator-manifests/default",
        ),
        (
            "device",
            TarBuilder::new()
                .char_device("capi-operator-manifests/null", 1, 3)
                .finish(),
            "capi-operator-manifests/null",
        ),
    ];
    for (name, tar, path) in cases {
        registry.push_image(
            &format!("p/{name}"),
            Some("v1"),
            &Image::new(vec![Layer::gzip(&tar)]),
        );
        let out = tempfile::tempdir().unwrap();
        let run = Extract::new()
            .registry(&registry)
            .image(name, &format!("{}/p/{name}:v1", registry.host()))
            .run(&out.path().join("tree"));
        run.assert_code(1);
        assert!(run.stderr.contains(path), "{name}: {}", run.stderr);
        assert!(!out.path().join("evil").exists() && !out.path().join("tree/index.json").exists());
    }
}

#[test]
fn a_crash_mid_publish_leaves_a_whole_tree_and_the_next_run_succeeds() {
    let registry = basic_registry();
    let reference = format!("{}/p/crash:v1", registry.host());
    let push = |content: &str| {
        registry.push_image(
            "p/crash",
            Some("v1"),
            &Image::new(vec![provider(&[("default", AWS_METADATA, content)])]),
        );
    };
    push("version: old\n");
    let out = tempfile::tempdir().unwrap();
    let extract = Extract::new()
        .registry(&registry)
        .image("crash", &reference);
    extract.run(out.path()).assert_code(0);
    let mut old = "version: old\n".to_string();
    for step in [
        "after-write",
        "after-fsync",
        "after-link",
        "after-rename",
        "after-visible",
        "after-cleanup",
    ] {
        // New content for every step: a run whose tree is already current publishes nothing.
        let new = format!("version: {step}\n");
        push(&new);
        let run = Extract::new()
            .registry(&registry)
            .image("crash", &reference)
            .env("PROVIDER_IMAGES_FAILPOINT", step)
            .run(out.path());
        assert_ne!(
            run.code,
            Some(0),
            "{step}: the fail point aborts the process"
        );
        let index = read_index(out.path());
        let entry = index_image(&index, &reference);
        let content = read_subtree_file(out.path(), entry, "default/manifests.yaml");
        assert_eq!(
            sha256_hex(&content),
            entry["profiles"][0]["contentID"].as_str().unwrap(),
            "{step}: the visible tree is one whole tree"
        );
        assert!(
            content == old.as_bytes() || content == new.as_bytes(),
            "{step}"
        );
        old = String::from_utf8(content).unwrap();
    }
    extract.run(out.path()).assert_code(0);
    let index = read_index(out.path());
    assert_eq!(
        read_subtree_file(
            out.path(),
            index_image(&index, &reference),
            "default/manifests.yaml"
        ),
        b"version: after-cleanup\n"
    );
    let leftovers: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("..") && name != "..data" && name != "..lock")
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "only the current payload remains: {leftovers:?}"
    );
}

#[test]
fn a_self_signed_mirror_certificate_in_the_bundle_is_trusted_for_its_own_names() {
    let pki = Pki::self_signed();
    let registry = Registry::start(RegistryOpts::default().basic_auth("puller", "pw").pki(&pki));
    registry.push_image(
        "p/lab",
        Some("v1"),
        &Image::new(vec![provider(&[("default", AWS_METADATA, AWS_MANIFESTS)])]),
    );
    let out = tempfile::tempdir().unwrap();
    Extract::new()
        .registry(&registry)
        .image("lab", &format!("{}/p/lab:v1", registry.host()))
        .run(out.path())
        .assert_code(0);
    let index = read_index(out.path());
    let entry = index_image(&index, &format!("{}/p/lab:v1", registry.host()));
    assert_eq!(
        read_subtree_file(out.path(), entry, "default/manifests.yaml"),
        AWS_MANIFESTS.as_bytes()
    );
}

#[test]
fn a_layer_shared_by_images_is_fetched_once_per_run() {
    let registry = basic_registry();
    let base = base_layer();
    let mut extract = Extract::new().registry(&registry);
    let mut shared = None;
    for name in ["one", "two", "three"] {
        let image = registry.push_image(
            &format!("p/{name}"),
            Some("v1"),
            &Image::new(vec![
                base.clone(),
                provider(&[("default", AWS_METADATA, &format!("image: {name}\n"))]),
            ]),
        );
        shared = Some(image.layer_digests[0].clone());
        extract = extract.image(name, &format!("{}/p/{name}:v1", registry.host()));
    }
    let out = tempfile::tempdir().unwrap();
    extract.run(out.path()).assert_code(0);
    let shared = shared.unwrap();
    let log = registry.log();
    let fetches = log
        .lines()
        .filter(|line| {
            line.contains("provider-images/")
                && line.contains(&format!("/blobs/{shared} "))
                && line.contains("\"GET ")
        })
        .count();
    assert_eq!(fetches, 1, "the shared base layer is fetched once:\n{log}");
    let index = read_index(out.path());
    for name in ["one", "two", "three"] {
        let entry = index_image(&index, &format!("{}/p/{name}:v1", registry.host()));
        assert_eq!(
            read_subtree_file(out.path(), entry, "default/manifests.yaml"),
            format!("image: {name}\n").as_bytes()
        );
    }
}

#[test]
fn an_identity_token_is_exchanged_at_the_realm_for_access_tokens() {
    let registry = Registry::start(RegistryOpts::default().token_auth("robot", "pw-SECRET-token"));
    registry.push_image(
        "p/oauth",
        Some("v1"),
        &Image::new(vec![provider(&[("default", AWS_METADATA, AWS_MANIFESTS)])]),
    );
    let tokens = registry.token_server().expect("token auth");
    tokens.clear_requests();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("pull-secret.json");
    let config = serde_json::json!({"auths": {registry.host(): {
        "auth": base64_of("<token>:"),
        "identitytoken": tokens.identity_token(),
    }}});
    std::fs::write(&secret, config.to_string()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .trust(&registry)
        .arg("--pull-secret")
        .arg(&secret)
        .image("oauth", &format!("{}/p/oauth:v1", registry.host()))
        .env("RUST_LOG", "trace")
        .run(out.path());
    run.assert_code(0);
    let requests = tokens.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        requests[0].path_and_query, "/token",
        "a POST grant, nothing in the query"
    );
    assert!(
        !requests[0].authorization,
        "no Basic credentials with a refresh token"
    );
    assert_eq!(requests[0].scopes, ["repository:p/oauth:pull"]);
    assert!(
        !run.stderr.contains(&tokens.identity_token()),
        "the identity token leaked"
    );
}

/// A text log written to a file or pipe has no colour codes (issue 9 item 4): colours are for a
/// terminal only.
#[test]
fn a_text_log_that_is_not_a_terminal_has_no_colour_codes() {
    let run = Run::new()
        .args(["resolve", "--no-cluster", "--log-format", "text"])
        .arg(format!("quay.io/openshift/x@sha256:{}", "c".repeat(64)))
        .env("RUST_LOG", "debug")
        .run();
    run.assert_code(0);
    assert!(!run.stderr.is_empty(), "the run logs");
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
}
