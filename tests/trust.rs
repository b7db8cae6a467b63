//! Certificate trust end to end, against real registries: a self-signed mirror certificate placed in
//! the bundle is checked for its validity period.

mod common;

use std::path::Path;

use common::*;

const METADATA: &str = "name: aws\nattributes:\n  type: infrastructure\n  version: v1.0.0\nocpPlatform: AWS\ninstallOrder: 20\n";
const MANIFESTS: &str = "kind: Deployment\nmetadata:\n  name: capa-controller-manager\n";

/// Starts an anonymous registry with `pki` and pushes one provider image; returns it and its ref.
fn registry_with_image(pki: &Pki) -> (Registry, String) {
    let registry = Registry::start(RegistryOpts::default().pki(pki));
    registry.push_image(
        "p/capi",
        Some("v1"),
        &Image::new(vec![Layer::gzip(&provider_layer(&[(
            "default", METADATA, MANIFESTS,
        )]))]),
    );
    let reference = format!("{}/p/capi:v1", registry.host());
    (registry, reference)
}

fn published_manifests(out: &Path, reference: &str) -> Vec<u8> {
    let index = read_index(out);
    read_subtree_file(
        out,
        index_image(&index, reference),
        "default/manifests.yaml",
    )
}

/// A lab mirror serving a self-signed certificate, trusted with `--ca-file`, that expired in 2021:
/// refused, naming the registry and saying "expired", as Go's crypto/x509 and CRI-O refuse it.
/// The same certificate with a validity period spanning today is accepted, so expiry is the cause.
/// (Issue item 3; README "How mirrors, CAs and credentials are chosen", CAs.)
#[test]
fn an_expired_self_signed_mirror_certificate_in_the_bundle_is_refused() {
    let expired = Pki::self_signed_dated("20200101000000Z", "20210101000000Z");
    let (registry, reference) = registry_with_image(&expired);
    let out = tempfile::tempdir().unwrap();
    let termination = out.path().join("termination-log");
    let run = Extract::new()
        .trust(&registry)
        .image("lab", &reference)
        .arg("--termination-message-path")
        .arg(&termination)
        .run(&out.path().join("expired"));
    run.assert_code(1);
    let message = std::fs::read_to_string(&termination).unwrap();
    let failure = message
        .lines()
        .find(|line| line.starts_with(&format!("image {reference} ")))
        .unwrap_or_else(|| panic!("{reference} is reported: {message}"));
    assert!(
        failure.contains(&registry.host()) && failure.contains("expired"),
        "{failure}"
    );
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(&registry.host()) && last.contains("expired"),
        "the final error line: {last}"
    );
    assert!(!out.path().join("expired/index.json").exists());

    let valid = Pki::self_signed_dated("20200101000000Z", "20991231000000Z");
    let (registry, reference) = registry_with_image(&valid);
    let run = Extract::new()
        .trust(&registry)
        .image("lab", &reference)
        .run(&out.path().join("valid"));
    run.assert_code(0);
    assert_eq!(
        published_manifests(&out.path().join("valid"), &reference),
        MANIFESTS.as_bytes()
    );
}
