//! The disconnected flow end to end: mirrors, CAs and the pull secret come from the cluster (a dump
//! directory or the API), references name the unreachable source registry by digest, and the images are
//! pulled from a TLS mirror whose CA only the cluster's ConfigMaps carry.

use crate::common;

use std::path::Path;

use base64::Engine;
use common::*;
use serde_json::{Value, json};

const METADATA: &str = "name: aws\nattributes:\n  type: infrastructure\n  version: v1.0.0\nocpPlatform: AWS\ninstallOrder: 20\n";
const MANIFESTS: &str = "kind: Deployment\nmetadata:\n  name: capa-controller-manager\n";
/// Nothing listens on port 1: a registry there refuses at once, as an unreachable one would.
const DEAD: &str = "127.0.0.1:1";

fn mirror() -> Registry {
    Registry::start(RegistryOpts::default().basic_auth("mirror-user", "pw-SECRET-mirror"))
}

fn push_provider(registry: &Registry, repo: &str) -> PushedImage {
    registry.push_image(
        repo,
        Some("v1"),
        &Image::new(vec![Layer::gzip(&provider_layer(&[(
            "default", METADATA, MANIFESTS,
        )]))]),
    )
}

fn idms(name: &str, source: &str, mirrors: &[String], never_contact: bool) -> Value {
    let mut rule = json!({"source": source, "mirrors": mirrors});
    if never_contact {
        rule["mirrorSourcePolicy"] = json!("NeverContactSource");
    }
    json!({"apiVersion": "config.openshift.io/v1", "kind": "ImageDigestMirrorSet",
           "metadata": {"name": name}, "spec": {"imageDigestMirrors": [rule]}})
}

fn trusted_ca_bundle(registry: &Registry) -> Value {
    let pem = std::fs::read_to_string(registry.ca_pem()).unwrap();
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "trusted-ca-bundle", "namespace": "openshift-config-managed"},
           "data": {"ca-bundle.crt": pem}})
}

fn pull_secret(registry: &Registry) -> Value {
    let encoded = base64::engine::general_purpose::STANDARD.encode(registry.docker_config_json());
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
           "metadata": {"name": "pull-secret", "namespace": "openshift-config"},
           "data": {".dockerconfigjson": encoded}})
}

/// Writes objects as `oc get <kind> -o yaml` would: each file a `List`.
fn write_dump(dir: &Path, files: &[(&str, Vec<Value>)]) {
    for (file, items) in files {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}});
        std::fs::write(dir.join(file), serde_yaml_ng::to_string(&list).unwrap()).unwrap();
    }
}

#[test]
fn a_digest_ref_of_an_unreachable_source_is_pulled_from_the_second_mirror() {
    let registry = mirror();
    let image = push_provider(&registry, "ocp/capi-aws");
    let dump = tempfile::tempdir().unwrap();
    write_dump(
        dump.path(),
        &[
            (
                "idms.yaml",
                vec![idms(
                    "release",
                    "quay.io/openshift",
                    &[format!("{DEAD}/ocp"), format!("{}/ocp", registry.host())],
                    false,
                )],
            ),
            ("configmaps.yaml", vec![trusted_ca_bundle(&registry)]),
            ("secrets.yaml", vec![pull_secret(&registry)]),
        ],
    );
    let reference = format!("quay.io/openshift/capi-aws@{}", image.manifest_digest);
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .cluster_dir(dump.path())
        .image("aws-cluster-api-controllers", &reference)
        .run(out.path());
    run.assert_code(0);
    let index = read_index(out.path());
    let entry = index_image(&index, &reference);
    assert_eq!(
        entry["source"],
        format!("{}/ocp/capi-aws@{}", registry.host(), image.manifest_digest)
    );
    assert_eq!(entry["digest"], image.manifest_digest.as_str());
    assert!(
        entry["volume"].as_str().unwrap().starts_with("capi-aws-"),
        "named after the ref as written"
    );
    assert_eq!(
        read_subtree_file(out.path(), entry, "default/manifests.yaml"),
        MANIFESTS.as_bytes()
    );
    assert!(
        run.stderr.contains("pull source failed")
            && run.stderr.contains(&format!("{DEAD}/ocp/capi-aws@")),
        "the dead mirror was tried first: {}",
        run.stderr
    );
    assert!(!run.stderr.contains("pw-SECRET"), "the pull secret leaked");
}

#[test]
fn when_every_source_fails_each_is_listed_with_its_cause() {
    let dump = tempfile::tempdir().unwrap();
    write_dump(
        dump.path(),
        &[(
            "idms.yaml",
            vec![idms(
                "blocked",
                "127.0.0.1:2/ocp",
                &[format!("{DEAD}/ocp")],
                true,
            )],
        )],
    );
    let digest = format!("sha256:{}", "a".repeat(64));
    let reference = format!("127.0.0.1:2/ocp/capi@{digest}");
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .cluster_dir(dump.path())
        .image("capi", &reference)
        .run(out.path());
    run.assert_code(1);
    assert!(
        run.stderr.contains("every pull source failed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "{DEAD}/ocp/capi@{digest}: cannot connect to {DEAD}"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "{reference}: not contacted: NeverContactSource in ImageDigestMirrorSet/blocked"
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn mirrors_cas_and_the_pull_secret_come_from_the_cluster_api() {
    let registry = mirror();
    let image = push_provider(&registry, "ocp/capi-gcp");
    let api = ApiServer::start();
    api.serve_idms();
    api.serve_image();
    api.put(idms(
        "release",
        "quay.io/openshift",
        &[format!("{}/ocp", registry.host())],
        false,
    ));
    api.put(trusted_ca_bundle(&registry));
    api.put(pull_secret(&registry));
    let reference = format!("quay.io/openshift/capi-gcp@{}", image.manifest_digest);
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .kubeconfig(&api.kubeconfig())
        .image("gcp", &reference)
        .run(out.path());
    run.assert_code(0);
    let index = read_index(out.path());
    let entry = index_image(&index, &reference);
    assert_eq!(
        entry["source"],
        format!("{}/ocp/capi-gcp@{}", registry.host(), image.manifest_digest)
    );
    let resources: Vec<String> = api
        .sorted_requests()
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
    assert!(
        resources
            .iter()
            .any(|r| r.contains("imagedigestmirrorsets")),
        "{resources:?}"
    );
    assert!(
        resources.iter().any(|r| r.contains("pull-secret")),
        "{resources:?}"
    );
}

#[test]
fn an_api_error_other_than_a_missing_crd_exits_3_naming_the_resource() {
    let api = ApiServer::start();
    api.serve_idms();
    api.fail(
        "/apis/config.openshift.io/v1/imagedigestmirrorsets",
        Fault::Forbidden,
    );
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .kubeconfig(&api.kubeconfig())
        .image(
            "x",
            &format!("quay.io/openshift/x@sha256:{}", "b".repeat(64)),
        )
        .run(out.path());
    run.assert_code(3);
    assert!(
        run.stderr.contains("imagedigestmirrorsets"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("403"), "{}", run.stderr);
}

#[test]
fn resolve_explains_the_plan_in_text_and_json() {
    let registry = mirror();
    let dump = tempfile::tempdir().unwrap();
    write_dump(
        dump.path(),
        &[
            (
                "idms.yaml",
                vec![idms(
                    "release",
                    "quay.io/openshift",
                    &[format!("{}/ocp", registry.host())],
                    true,
                )],
            ),
            ("configmaps.yaml", vec![trusted_ca_bundle(&registry)]),
            ("secrets.yaml", vec![pull_secret(&registry)]),
        ],
    );
    let digest = format!("sha256:{}", "c".repeat(64));
    let reference = format!("quay.io/openshift/capi-aws@{digest}");
    let text = Run::new()
        .args(["resolve", "--cluster-dir"])
        .arg(dump.path())
        .arg(&reference)
        .run();
    text.assert_code(0);
    let expected_lines = [
        reference.clone(),
        format!("  1. {}/ocp/capi-aws@{digest}", registry.host()),
        "       mirror of quay.io/openshift, from ImageDigestMirrorSet/release".to_string(),
        format!("       credentials: {}", registry.host()),
        format!("  2. {reference}  [BLOCKED]"),
        "       not contacted: NeverContactSource in ImageDigestMirrorSet/release".to_string(),
        "  ConfigMap openshift-config-managed/trusted-ca-bundle key ca-bundle.crt: 1 certificate"
            .to_string(),
        format!(
            "pull secret: {}",
            dump.path().join("secrets.yaml").display()
        ),
    ];
    for line in expected_lines {
        assert!(
            text.stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{}",
            text.stdout
        );
    }
    let json = Run::new()
        .args(["resolve", "--format", "json", "--cluster-dir"])
        .arg(dump.path())
        .arg(&reference)
        .run();
    json.assert_code(0);
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    let sources = report["images"][0]["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0]["kind"], "mirror");
    assert_eq!(
        sources[0]["objects"],
        json!(["ImageDigestMirrorSet/release"])
    );
    assert_eq!(
        sources[1]["blocked"],
        "NeverContactSource in ImageDigestMirrorSet/release"
    );
    assert_eq!(report["trust"][0]["certificates"], 1);
}
