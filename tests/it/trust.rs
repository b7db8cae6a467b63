//! Certificate trust end to end, against real registries: a self-signed mirror certificate placed in
//! the bundle is checked for its validity period, and a CA that only the image.config
//! `additionalTrustedCA` ConfigMap carries is used in the TLS handshake.

use crate::common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};

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

/// image.config/cluster, naming `additional_ca` (or nothing) in `spec.additionalTrustedCA`.
fn image_config(additional_ca: Option<&str>) -> Value {
    let spec = match additional_ca {
        Some(name) => json!({"additionalTrustedCA": {"name": name}}),
        None => json!({}),
    };
    json!({"apiVersion": "config.openshift.io/v1", "kind": "Image",
           "metadata": {"name": "cluster"}, "spec": spec})
}

/// The ConfigMap openshift-config/registry-cas, holding `registry`'s CA under its own
/// `host..port` key, as the node reads it (mirror-semantics §4).
fn registry_cas(registry: &Registry) -> Value {
    let pem = std::fs::read_to_string(registry.ca_pem()).unwrap();
    let key = registry.host().replace(':', "..");
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "registry-cas", "namespace": "openshift-config"},
           "data": {key: pem}})
}

/// Writes `objects` into `dir` as `oc get … -o yaml` would: a `List`.
fn write_dump(dir: &Path, objects: Vec<Value>) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects,
                      "metadata": {"resourceVersion": ""}});
    std::fs::write(
        dir.join("objects.yaml"),
        serde_yaml_ng::to_string(&list).unwrap(),
    )
    .unwrap();
}

/// A registry whose CA only the additionalTrustedCA ConfigMap carries: a `--cluster-dir` extract
/// trusts it when image.config names the ConfigMap, and fails with UnknownIssuer when it does not
/// (mirror-semantics §4; issue item 6).
#[test]
fn a_ca_only_in_the_additional_trusted_ca_config_map_is_trusted_when_image_config_names_it() {
    let (registry, reference) = registry_with_image(&Pki::new());
    let out = tempfile::tempdir().unwrap();

    let named = tempfile::tempdir().unwrap();
    write_dump(
        named.path(),
        vec![image_config(Some("registry-cas")), registry_cas(&registry)],
    );
    Extract::new()
        .cluster_dir(named.path())
        .image("capi", &reference)
        .run(&out.path().join("named"))
        .assert_code(0);
    assert_eq!(
        published_manifests(&out.path().join("named"), &reference),
        MANIFESTS.as_bytes()
    );

    let unnamed = tempfile::tempdir().unwrap();
    write_dump(
        unnamed.path(),
        vec![image_config(None), registry_cas(&registry)],
    );
    let run = Extract::new()
        .cluster_dir(unnamed.path())
        .image("capi", &reference)
        .run(&out.path().join("unnamed"));
    run.assert_code(1);
    assert!(
        run.stderr.contains(&registry.host()) && run.stderr.contains("UnknownIssuer"),
        "{}",
        run.stderr
    );
}

/// The same through the API server: the additionalTrustedCA ConfigMap read with the kube client
/// is used in the handshake (mirror-semantics §4; issue item 6).
#[test]
fn a_ca_only_in_the_additional_trusted_ca_config_map_is_trusted_through_the_api() {
    let (registry, reference) = registry_with_image(&Pki::new());
    let api = ApiServer::start();
    api.serve_image();
    api.put(image_config(Some("registry-cas")));
    api.put(registry_cas(&registry));
    let out = tempfile::tempdir().unwrap();
    Extract::new()
        .kubeconfig(&api.kubeconfig())
        .image("capi", &reference)
        .run(out.path())
        .assert_code(0);
    assert_eq!(
        published_manifests(out.path(), &reference),
        MANIFESTS.as_bytes()
    );
    assert!(
        api.requests()
            .iter()
            .any(|r| r.resource == "configmaps" && r.name.as_deref() == Some("registry-cas")),
        "{:?}",
        api.requests()
    );
}
