//! Cluster reads: through the real kube client against a fake API server speaking the Kubernetes
//! wire format, and from `--cluster-dir` dumps (`oc get -o yaml|json` files, multi-document
//! files, must-gather trees). Each API test also checks the exact set of requests made, which is
//! what the ServiceAccount's RBAC has to allow.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{
    ApiRequest, ApiServer, Extract, Fault, Image, Layer, Pki, Registry, RegistryOpts, Run,
    index_image, provider_layer, read_index,
};
use provider_images::cluster::{self, CaBundle, ClusterConfig, ClusterError, ClusterSource};
use provider_images::error::ExitStatus;
use provider_images::plan::mirrors::{MirrorKind, SourcePolicy};
use provider_images::transport::proxy::Proxies;
use serde_json::{Value, json};

const PULL_SECRET_JSON: &str = r#"{"auths":{"mirror.local:5000":{"auth":"dXNlcjpwYXNz"}}}"#;

// ---------------------------------------------------------------------------------------------
// Helpers

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("test runtime")
}

fn read(source: ClusterSource) -> Result<ClusterConfig, ClusterError> {
    runtime().block_on(cluster::read(&source))
}

fn read_api(api: &ApiServer) -> Result<ClusterConfig, ClusterError> {
    read(ClusterSource::Api {
        kubeconfig: Some(api.kubeconfig()),
    })
}

fn read_dir(dir: &Path) -> Result<ClusterConfig, ClusterError> {
    read(ClusterSource::Dir(dir.to_path_buf()))
}

fn pem(pki: &Pki) -> String {
    std::fs::read_to_string(pki.ca_pem()).expect("read CA PEM")
}

fn idms(name: &str, entries: Value) -> Value {
    json!({
        "apiVersion": "config.openshift.io/v1", "kind": "ImageDigestMirrorSet",
        "metadata": {"name": name, "resourceVersion": "7", "uid": format!("uid-{name}")},
        "spec": {"imageDigestMirrors": entries}
    })
}

fn itms(name: &str, entries: Value) -> Value {
    json!({
        "apiVersion": "config.openshift.io/v1", "kind": "ImageTagMirrorSet",
        "metadata": {"name": name},
        "spec": {"imageTagMirrors": entries}
    })
}

fn icsp(name: &str, entries: Value) -> Value {
    json!({
        "apiVersion": "operator.openshift.io/v1alpha1", "kind": "ImageContentSourcePolicy",
        "metadata": {"name": name},
        "spec": {"repositoryDigestMirrors": entries}
    })
}

fn image(spec: Value) -> Value {
    json!({
        "apiVersion": "config.openshift.io/v1", "kind": "Image",
        "metadata": {"name": "cluster"},
        "spec": spec,
        "status": {"internalRegistryHostname": "image-registry.openshift-image-registry.svc:5000"}
    })
}

fn config_map(namespace: &str, name: &str, data: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data
    })
}

fn pull_secret(encoded: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "pull-secret", "namespace": "openshift-config"},
        "data": {".dockerconfigjson": encoded}
    })
}

/// The namespace whose ImagePolicies are read (the binary's default `--namespace`).
const POLICY_NAMESPACE: &str = cluster::DEFAULT_NAMESPACE;

/// A ClusterImagePolicy (`namespace` None) or an ImagePolicy at `version`, with a PublicKey root
/// whose keyData is `key_pem` (not parsed when read).
fn image_policy(
    version: &str,
    namespace: Option<&str>,
    name: &str,
    scopes: &[&str],
    key_pem: &str,
) -> Value {
    let (kind, metadata) = match namespace {
        Some(ns) => ("ImagePolicy", json!({"name": name, "namespace": ns})),
        None => ("ClusterImagePolicy", json!({"name": name})),
    };
    json!({
        "apiVersion": format!("config.openshift.io/{version}"), "kind": kind,
        "metadata": metadata,
        "spec": {"scopes": scopes, "policy": {
            "rootOfTrust": {"policyType": "PublicKey",
                            "publicKey": {"keyData": BASE64.encode(key_pem)}},
            "signedIdentity": {"matchPolicy": "MatchRepository"}}}
    })
}

/// The objects read, as `Kind name` / `Kind namespace/name`, with their scopes.
fn policies_of(config: &ClusterConfig) -> Vec<(String, Vec<String>)> {
    config
        .image_policies
        .iter()
        .map(|p| (p.object.to_string(), p.spec.scopes.clone()))
        .collect()
}

/// The policy lists a read with `policy_namespace` makes at `version`.
fn policy_requests(version: &str) -> Vec<ApiRequest> {
    vec![
        ApiRequest::new(
            "list",
            "config.openshift.io",
            version,
            "clusterimagepolicies",
            None,
            None,
        ),
        ApiRequest::new(
            "list",
            "config.openshift.io",
            version,
            "imagepolicies",
            Some(POLICY_NAMESPACE),
            None,
        ),
    ]
}

fn read_api_with_policy(api: &ApiServer) -> Result<ClusterConfig, ClusterError> {
    let extras = cluster::Extras {
        policy_namespace: Some(POLICY_NAMESPACE.into()),
        ..cluster::Extras::default()
    };
    runtime().block_on(cluster::read_with_extras(
        &ClusterSource::Api {
            kubeconfig: Some(api.kubeconfig()),
        },
        &Proxies::none(),
        cluster::DEFAULT_CALL_TIMEOUT,
        &extras,
    ))
}

fn mirrors_of(config: &ClusterConfig) -> Vec<(MirrorKind, String, Vec<Rule>)> {
    config
        .mirror_objects
        .iter()
        .map(|o| {
            let rules = o
                .rules
                .iter()
                .map(|r| Rule(r.source.clone(), r.mirrors.clone(), r.policy))
                .collect();
            (o.kind, o.name.clone(), rules)
        })
        .collect()
}

/// A mirror rule as a comparable tuple: source, mirrors, policy.
#[derive(Debug, PartialEq, Eq)]
struct Rule(String, Vec<String>, Option<SourcePolicy>);

fn rule(source: &str, mirrors: &[&str], policy: Option<SourcePolicy>) -> Rule {
    Rule(
        source.into(),
        mirrors.iter().map(|m| m.to_string()).collect(),
        policy,
    )
}

fn bundle(namespace: &str, config_map: &str, key: &str, pem: &str) -> CaBundle {
    CaBundle {
        namespace: namespace.into(),
        config_map: config_map.into(),
        key: key.into(),
        pem: pem.as_bytes().to_vec(),
    }
}

/// The requests every API read makes, whatever the cluster holds.
fn base_requests() -> Vec<ApiRequest> {
    vec![
        ApiRequest::new(
            "list",
            "config.openshift.io",
            "v1",
            "imagedigestmirrorsets",
            None,
            None,
        ),
        ApiRequest::new(
            "list",
            "config.openshift.io",
            "v1",
            "imagetagmirrorsets",
            None,
            None,
        ),
        ApiRequest::new(
            "list",
            "operator.openshift.io",
            "v1alpha1",
            "imagecontentsourcepolicies",
            None,
            None,
        ),
        ApiRequest::new(
            "get",
            "config.openshift.io",
            "v1",
            "images",
            None,
            Some("cluster"),
        ),
        ApiRequest::new(
            "get",
            "",
            "v1",
            "configmaps",
            Some("openshift-config-managed"),
            Some("trusted-ca-bundle"),
        ),
        ApiRequest::new(
            "get",
            "",
            "v1",
            "configmaps",
            Some("openshift-config"),
            Some("user-ca-bundle"),
        ),
        ApiRequest::new(
            "get",
            "",
            "v1",
            "secrets",
            Some("openshift-config"),
            Some("pull-secret"),
        ),
    ]
}

fn with_additional_ca(name: &str) -> Vec<ApiRequest> {
    let mut requests = base_requests();
    requests.push(ApiRequest::new(
        "get",
        "",
        "v1",
        "configmaps",
        Some("openshift-config"),
        Some(name),
    ));
    requests
}

fn sorted(mut requests: Vec<ApiRequest>) -> Vec<ApiRequest> {
    requests.sort();
    requests
}

const TRUSTED_MISSING: &str =
    "ConfigMap openshift-config-managed/trusted-ca-bundle: not found; no CAs from it";
const USER_MISSING: &str = "ConfigMap openshift-config/user-ca-bundle: not found; no CAs from it";
const IMAGE_MISSING: &str =
    "images.config.openshift.io/cluster: not found; no registry sources and no additionalTrustedCA";
const SECRET_MISSING: &str =
    "Secret openshift-config/pull-secret: not found; no pull secret from the cluster";

fn api_error(result: Result<ClusterConfig, ClusterError>) -> (&'static str, String, String) {
    match result {
        Err(ClusterError::Api {
            verb,
            resource,
            cause,
        }) => (verb, resource, cause),
        other => panic!("expected an API error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Through the API

#[test]
fn api_idms_and_icsp_are_read_merged_and_sorted() {
    let api = ApiServer::start();
    api.serve_openshift();
    api.put(idms(
        "b-release",
        json!([
            {"source": "quay.io/openshift-release-dev/ocp-release",
             "mirrors": ["mirror.local:5000/ocp4/openshift4", "backup.local/ocp4"],
             "mirrorSourcePolicy": "NeverContactSource"},
            {"source": "*.redhat.io", "mirrors": ["mirror.local/redhat"],
             "mirrorSourcePolicy": "AllowContactingSource"}
        ]),
    ));
    api.put(idms(
        "a-extra",
        json!([{"source": "registry.example.com:5000", "mirrors": ["mirror.local/reg5000"]}]),
    ));
    api.put(icsp(
        "legacy",
        json!([{"source": "quay.io/x", "mirrors": ["a-icsp.local/x"]}]),
    ));
    api.put(image(json!({
        "registrySources": {"insecureRegistries": ["insecure.local:5000"],
                            "blockedRegistries": ["blocked.local"],
                            "allowedRegistries": ["quay.io", "mirror.local:5000"]}
    })));
    api.put(pull_secret(&BASE64.encode(PULL_SECRET_JSON)));

    let config = read_api(&api).expect("read");
    assert_eq!(
        mirrors_of(&config),
        vec![
            (
                MirrorKind::ImageDigestMirrorSet,
                "a-extra".into(),
                vec![rule(
                    "registry.example.com:5000",
                    &["mirror.local/reg5000"],
                    None
                )]
            ),
            (
                MirrorKind::ImageDigestMirrorSet,
                "b-release".into(),
                vec![
                    rule(
                        "quay.io/openshift-release-dev/ocp-release",
                        &["mirror.local:5000/ocp4/openshift4", "backup.local/ocp4"],
                        Some(SourcePolicy::NeverContactSource)
                    ),
                    rule(
                        "*.redhat.io",
                        &["mirror.local/redhat"],
                        Some(SourcePolicy::AllowContactingSource)
                    ),
                ]
            ),
            (
                MirrorKind::ImageContentSourcePolicy,
                "legacy".into(),
                vec![rule("quay.io/x", &["a-icsp.local/x"], None)]
            ),
        ]
    );
    assert_eq!(config.registry_sources.insecure, ["insecure.local:5000"]);
    assert_eq!(config.registry_sources.blocked, ["blocked.local"]);
    assert_eq!(
        config.registry_sources.allowed,
        ["quay.io", "mirror.local:5000"]
    );
    assert_eq!(config.additional_trusted_ca, None);
    assert!(config.ca_bundles.is_empty());
    let secret = config.pull_secret.as_ref().expect("pull secret");
    assert_eq!(secret.origin, "Secret openshift-config/pull-secret");
    assert_eq!(secret.dockerconfigjson, PULL_SECRET_JSON.as_bytes());
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("dXNlcjpwYXNz"),
        "Debug leaks the pull secret: {debug}"
    );
    assert_eq!(config.notes, [TRUSTED_MISSING, USER_MISSING]);
    assert_eq!(api.sorted_requests(), sorted(base_requests()));
}

#[test]
fn api_icsp_crd_missing_is_skipped_with_a_note() {
    let api = ApiServer::start();
    api.serve_idms();
    api.serve_itms();
    api.serve_image();
    api.put(idms(
        "release",
        json!([{"source": "quay.io/ocp", "mirrors": ["m.local/ocp"]}]),
    ));
    api.put(itms(
        "tags",
        json!([{"source": "docker.io/library", "mirrors": ["mirror.local/dockerhub"],
                "mirrorSourcePolicy": "NeverContactSource"}]),
    ));

    let config = read_api(&api).expect("read");
    assert_eq!(
        mirrors_of(&config),
        vec![
            (
                MirrorKind::ImageDigestMirrorSet,
                "release".into(),
                vec![rule("quay.io/ocp", &["m.local/ocp"], None)]
            ),
            (
                MirrorKind::ImageTagMirrorSet,
                "tags".into(),
                vec![rule(
                    "docker.io/library",
                    &["mirror.local/dockerhub"],
                    Some(SourcePolicy::NeverContactSource)
                )]
            ),
        ]
    );
    assert_eq!(
        config.notes,
        [
            "imagecontentsourcepolicies.operator.openshift.io: not served by the cluster (CRD not installed); skipped",
            IMAGE_MISSING,
            TRUSTED_MISSING,
            USER_MISSING,
            SECRET_MISSING,
        ]
    );
    assert_eq!(api.sorted_requests(), sorted(base_requests()));
}

#[test]
fn api_nothing_installed_or_present_reads_as_empty() {
    let api = ApiServer::start();
    let config = read_api(&api).expect("read");
    assert!(config.mirror_objects.is_empty());
    assert!(config.registry_sources.allowed.is_empty());
    assert!(config.registry_sources.blocked.is_empty());
    assert!(config.registry_sources.insecure.is_empty());
    assert_eq!(config.additional_trusted_ca, None);
    assert!(config.ca_bundles.is_empty());
    assert!(config.pull_secret.is_none());
    assert_eq!(
        config.notes,
        [
            "imagedigestmirrorsets.config.openshift.io: not served by the cluster (CRD not installed); skipped",
            "imagetagmirrorsets.config.openshift.io: not served by the cluster (CRD not installed); skipped",
            "imagecontentsourcepolicies.operator.openshift.io: not served by the cluster (CRD not installed); skipped",
            IMAGE_MISSING,
            TRUSTED_MISSING,
            USER_MISSING,
            SECRET_MISSING,
        ]
    );
    assert_eq!(api.sorted_requests(), sorted(base_requests()));
}

/// A connected run against a cluster with nothing installed (every read 404s with a Status, no
/// CRDs) pulls as if the cluster were empty, exit 0 (design: missing optional things are not
/// errors; issue item 6). The binary, through KUBECONFIG, not only the reader.
#[test]
fn api_nothing_installed_extract_pulls_plainly_and_exits_0() {
    let registry = Registry::start(RegistryOpts::default());
    registry.push_image(
        "p/plain",
        Some("v1"),
        &Image::new(vec![Layer::gzip(&provider_layer(&[(
            "default",
            "name: aws\n",
            "kind: Deployment\n",
        )]))]),
    );
    let reference = format!("{}/p/plain:v1", registry.host());
    let api = ApiServer::start();
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .kubeconfig(&api.kubeconfig())
        .trust(&registry)
        .image("plain", &reference)
        .run(out.path());
    run.assert_code(0);
    let index = read_index(out.path());
    assert_eq!(
        index_image(&index, &reference)["source"]
            .as_str()
            .unwrap()
            .split('@')
            .next(),
        Some(format!("{}/p/plain", registry.host()).as_str())
    );
    for note in [TRUSTED_MISSING, USER_MISSING, IMAGE_MISSING, SECRET_MISSING] {
        assert!(
            run.stderr.contains(note),
            "no note {note:?}:\n{}",
            run.stderr
        );
    }
    // The signature policy is asked for at v1, then v1alpha1 (signature-policy §1).
    let mut expected = base_requests();
    expected.extend(policy_requests("v1"));
    expected.extend(policy_requests("v1alpha1"));
    assert_eq!(api.sorted_requests(), sorted(expected));
}

/// Any answer but a 404 on any cluster read (403, 500, or no answer within the call timeout)
/// fails the read with an API error naming that read, exit 3 (design: exit codes; issue item 6).
/// The image names an additionalTrustedCA map so that its read is one of the rows; the cluster
/// proxy and both images ConfigMaps (issue 15 items 2 and 3) are read too, the first ConfigMap
/// being absent so that the second is asked for.
#[test]
fn api_any_read_failing_otherwise_than_404_is_an_api_error_naming_it() {
    const CALL_TIMEOUT: Duration = Duration::from_millis(300);
    let reads = [
        (
            "/apis/config.openshift.io/v1/imagedigestmirrorsets",
            "list",
            "imagedigestmirrorsets.config.openshift.io",
        ),
        (
            "/apis/config.openshift.io/v1/imagetagmirrorsets",
            "list",
            "imagetagmirrorsets.config.openshift.io",
        ),
        (
            "/apis/operator.openshift.io/v1alpha1/imagecontentsourcepolicies",
            "list",
            "imagecontentsourcepolicies.operator.openshift.io",
        ),
        (
            "/apis/config.openshift.io/v1/images/cluster",
            "get",
            "images.config.openshift.io/cluster",
        ),
        (
            "/api/v1/namespaces/openshift-config-managed/configmaps/trusted-ca-bundle",
            "get",
            "ConfigMap openshift-config-managed/trusted-ca-bundle",
        ),
        (
            "/api/v1/namespaces/openshift-config/configmaps/user-ca-bundle",
            "get",
            "ConfigMap openshift-config/user-ca-bundle",
        ),
        (
            "/api/v1/namespaces/openshift-config/configmaps/registry-cas",
            "get",
            "ConfigMap openshift-config/registry-cas",
        ),
        (
            "/api/v1/namespaces/openshift-config/secrets/pull-secret",
            "get",
            "Secret openshift-config/pull-secret",
        ),
        (
            "/apis/config.openshift.io/v1/proxies/cluster",
            "get",
            "proxies.config.openshift.io/cluster",
        ),
        (
            "/api/v1/namespaces/openshift-cluster-api-operator/configmaps/cluster-capi-operator-images",
            "get",
            "ConfigMap openshift-cluster-api-operator/cluster-capi-operator-images",
        ),
        (
            "/api/v1/namespaces/openshift-cluster-api-operator/configmaps/capi-installer-images",
            "get",
            "ConfigMap openshift-cluster-api-operator/capi-installer-images",
        ),
        // Issue 16 item 1 (signature-policy §1).
        (
            "/apis/config.openshift.io/v1/clusterimagepolicies",
            "list",
            "clusterimagepolicies.config.openshift.io",
        ),
        (
            "/apis/config.openshift.io/v1/namespaces/openshift-cluster-api-operator/imagepolicies",
            "list",
            "imagepolicies.config.openshift.io in namespace openshift-cluster-api-operator",
        ),
    ];
    let extras = cluster::Extras {
        image_list_namespace: Some(cluster::DEFAULT_NAMESPACE.into()),
        cluster_proxy: cluster::ClusterProxyRead::Always,
        policy_namespace: Some(cluster::DEFAULT_NAMESPACE.into()),
    };
    let faults = [
        (Fault::Forbidden, "HTTP 403 Forbidden: "),
        (Fault::Internal, "HTTP 500 InternalError: "),
        // Longer than the call timeout; the answer never matters.
        (Fault::Delay(Duration::from_secs(2)), "timed out"),
    ];
    let mut wrong = Vec::new();
    for (path, verb, resource) in reads {
        for (fault, cause_start) in &faults {
            let api = ApiServer::start();
            api.serve_openshift();
            api.serve_image_policies("v1");
            api.put(image(
                json!({"additionalTrustedCA": {"name": "registry-cas"}}),
            ));
            api.fail(path, fault.clone());
            let source = ClusterSource::Api {
                kubeconfig: Some(api.kubeconfig()),
            };
            let result = runtime().block_on(cluster::read_with_extras(
                &source,
                &Proxies::none(),
                CALL_TIMEOUT,
                &extras,
            ));
            match result {
                Err(error @ ClusterError::Api { .. })
                    if error.exit_code() == 3
                        && matches!(&error, ClusterError::Api { verb: v, resource: r, cause }
                            if *v == verb && r == resource && cause.starts_with(cause_start)) => {}
                other => wrong.push(format!("{path} {fault:?}: {other:?}")),
            }
            if matches!(fault, Fault::Delay(_)) {
                // Its server waits out the delayed answer when dropped: not this test's time.
                std::thread::spawn(move || drop(api));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "rows that did not fail as expected:\n{}",
        wrong.join("\n")
    );

    // The binary maps that error to exit 3 and names the read.
    let api = ApiServer::start();
    api.serve_openshift();
    api.fail(
        "/api/v1/namespaces/openshift-config/secrets/pull-secret",
        Fault::Internal,
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
        run.stderr
            .contains("get Secret openshift-config/pull-secret: HTTP 500 InternalError"),
        "{}",
        run.stderr
    );
}

#[test]
fn api_forbidden_list_is_an_api_error_with_exit_3() {
    let api = ApiServer::start();
    api.serve_openshift();
    api.fail(
        "/apis/config.openshift.io/v1/imagedigestmirrorsets",
        Fault::Forbidden,
    );
    let result = read_api(&api);
    let error = result.as_ref().expect_err("403 must fail the read");
    assert_eq!(error.exit_code(), 3);
    assert_eq!(
        error.to_string(),
        "cluster API: list imagedigestmirrorsets.config.openshift.io: HTTP 403 Forbidden: \
         imagedigestmirrorsets.config.openshift.io is forbidden: User \
         \"system:serviceaccount:openshift-cluster-api:provider-images\" cannot list resource \
         \"imagedigestmirrorsets\" in API group \"config.openshift.io\" at the cluster scope"
    );
    let (verb, resource, _) = api_error(result);
    assert_eq!(
        (verb, resource.as_str()),
        ("list", "imagedigestmirrorsets.config.openshift.io")
    );
    // Everything independent went out together; nothing was read after the failure.
    assert_eq!(api.sorted_requests(), sorted(base_requests()));
}

#[test]
fn api_server_error_on_trusted_ca_bundle_is_an_api_error() {
    let api = ApiServer::start();
    api.serve_openshift();
    api.fail(
        "/api/v1/namespaces/openshift-config-managed/configmaps/trusted-ca-bundle",
        Fault::Internal,
    );
    let (verb, resource, cause) = api_error(read_api(&api));
    assert_eq!(verb, "get");
    assert_eq!(
        resource,
        "ConfigMap openshift-config-managed/trusted-ca-bundle"
    );
    assert_eq!(
        cause,
        "HTTP 500 InternalError: Internal error occurred: etcdserver: request timed out"
    );
}

#[test]
fn api_wrong_token_is_an_api_error() {
    let api = ApiServer::start();
    api.serve_openshift();
    let result = read(ClusterSource::Api {
        kubeconfig: Some(api.kubeconfig_with_token("expired")),
    });
    let (verb, resource, cause) = api_error(result);
    // The first failure in the fixed order is reported, whichever answer came first.
    assert_eq!(
        (verb, resource.as_str(), cause.as_str()),
        (
            "list",
            "imagedigestmirrorsets.config.openshift.io",
            "HTTP 401 Unauthorized: Unauthorized"
        )
    );
}

#[test]
fn api_server_certificate_from_another_ca_is_refused() {
    let api = ApiServer::start();
    api.serve_openshift();
    let other = Pki::new();
    let result = read(ClusterSource::Api {
        kubeconfig: Some(api.kubeconfig_trusting(&other.ca_pem())),
    });
    let (verb, resource, cause) = api_error(result);
    assert_eq!(
        (verb, resource.as_str()),
        ("list", "imagedigestmirrorsets.config.openshift.io")
    );
    assert!(cause.contains("UnknownIssuer"), "{cause}");
    assert!(api.requests().is_empty(), "{:?}", api.requests());
}

#[test]
fn api_call_timeout_is_an_api_error() {
    let api = ApiServer::start();
    api.serve_openshift();
    api.fail(
        "/apis/config.openshift.io/v1/images/cluster",
        Fault::Delay(Duration::from_secs(2)),
    );
    let source = ClusterSource::Api {
        kubeconfig: Some(api.kubeconfig()),
    };
    let result = runtime().block_on(cluster::read_with_timeout(
        &source,
        Duration::from_millis(300),
    ));
    let (verb, resource, cause) = api_error(result);
    assert_eq!(
        (verb, resource.as_str(), cause.as_str()),
        ("get", "images.config.openshift.io/cluster", "timed out")
    );
}

#[test]
fn api_missing_kubeconfig_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-kubeconfig");
    let error = read(ClusterSource::Api {
        kubeconfig: Some(path.clone()),
    })
    .expect_err("no kubeconfig");
    assert!(matches!(error, ClusterError::Config(_)), "{error:?}");
    assert_eq!(error.exit_code(), 3);
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
}

#[test]
fn api_cas_from_each_source() {
    let (ca1, ca2, ca3) = (Pki::new(), Pki::new(), Pki::new());
    let (pem1, pem2, pem3) = (pem(&ca1), pem(&ca2), pem(&ca3));
    let api = ApiServer::start();
    api.serve_openshift();
    api.put(image(
        json!({"additionalTrustedCA": {"name": "registry-cas"}}),
    ));
    api.put(config_map(
        "openshift-config-managed",
        "trusted-ca-bundle",
        json!({"ca-bundle.crt": pem1}),
    ));
    api.put(config_map(
        "openshift-config",
        "user-ca-bundle",
        json!({"ca-bundle.crt": pem2}),
    ));
    let mut registry_cas = config_map(
        "openshift-config",
        "registry-cas",
        json!({"mirror.local..5000": pem3}),
    );
    registry_cas["binaryData"] = json!({"other.local": BASE64.encode(&pem1)});
    api.put(registry_cas);
    // Present but not read: only the three CA maps matter.
    api.put(config_map(
        "openshift-config",
        "unrelated",
        json!({"ca.crt": pem3}),
    ));

    let config = read_api(&api).expect("read");
    assert_eq!(
        config.additional_trusted_ca.as_deref(),
        Some("registry-cas")
    );
    assert_eq!(
        config.ca_bundles,
        [
            bundle(
                "openshift-config-managed",
                "trusted-ca-bundle",
                "ca-bundle.crt",
                &pem1
            ),
            bundle("openshift-config", "user-ca-bundle", "ca-bundle.crt", &pem2),
            bundle(
                "openshift-config",
                "registry-cas",
                "mirror.local..5000",
                &pem3
            ),
            bundle("openshift-config", "registry-cas", "other.local", &pem1),
        ]
    );
    assert_eq!(config.ca_bundles[2].registry_host(), "mirror.local:5000");
    assert_eq!(config.notes, [SECRET_MISSING]);
    assert_eq!(
        api.sorted_requests(),
        sorted(with_additional_ca("registry-cas"))
    );
}

#[test]
fn api_mixed_valid_and_invalid_pem() {
    let (ca1, ca2) = (Pki::new(), Pki::new());
    let (pem1, pem2) = (pem(&ca1), pem(&ca2));
    let garbage =
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
    let api = ApiServer::start();
    api.serve_openshift();
    api.put(config_map(
        "openshift-config",
        "user-ca-bundle",
        json!({
            "ca-bundle.crt": format!("# first\n{pem1}{garbage}# second\n{pem2}"),
            "broken.crt": garbage,
        }),
    ));

    let config = read_api(&api).expect("read");
    assert_eq!(
        config.ca_bundles,
        [bundle(
            "openshift-config",
            "user-ca-bundle",
            "ca-bundle.crt",
            &format!("{pem1}{pem2}")
        )]
    );
    assert_eq!(
        config.notes,
        [
            IMAGE_MISSING,
            TRUSTED_MISSING,
            "ConfigMap openshift-config/user-ca-bundle key broken.crt: no valid PEM certificate (1 block(s) skipped); ignored",
            "ConfigMap openshift-config/user-ca-bundle key ca-bundle.crt: skipped 1 PEM block(s) that are not valid certificates; kept 2",
            SECRET_MISSING,
        ]
    );
}

#[test]
fn api_image_config_without_additional_trusted_ca_reads_no_third_config_map() {
    let api = ApiServer::start();
    api.serve_openshift();
    api.put(image(
        json!({"registrySources": {"blockedRegistries": ["blocked.local"]}}),
    ));
    let config = read_api(&api).expect("read");
    assert_eq!(config.additional_trusted_ca, None);
    assert_eq!(config.registry_sources.blocked, ["blocked.local"]);
    assert_eq!(
        config.notes,
        [TRUSTED_MISSING, USER_MISSING, SECRET_MISSING]
    );
    assert_eq!(api.sorted_requests(), sorted(base_requests()));
}

#[test]
fn api_additional_trusted_ca_naming_a_missing_config_map() {
    let api = ApiServer::start();
    api.serve_openshift();
    api.put(image(
        json!({"additionalTrustedCA": {"name": "registry-cas"}}),
    ));
    let config = read_api(&api).expect("read");
    assert_eq!(
        config.additional_trusted_ca.as_deref(),
        Some("registry-cas")
    );
    assert!(config.ca_bundles.is_empty());
    assert_eq!(
        config.notes,
        [
            TRUSTED_MISSING,
            USER_MISSING,
            "ConfigMap openshift-config/registry-cas (named by image.config additionalTrustedCA): not found; no CAs from it",
            SECRET_MISSING,
        ]
    );
    assert_eq!(
        api.sorted_requests(),
        sorted(with_additional_ca("registry-cas"))
    );
}

#[test]
fn api_additional_trusted_ca_naming_user_ca_bundle_is_read_once() {
    let ca = Pki::new();
    let api = ApiServer::start();
    api.serve_openshift();
    api.put(image(
        json!({"additionalTrustedCA": {"name": "user-ca-bundle"}}),
    ));
    api.put(config_map(
        "openshift-config",
        "user-ca-bundle",
        json!({"ca-bundle.crt": pem(&ca)}),
    ));
    let config = read_api(&api).expect("read");
    assert_eq!(config.ca_bundles.len(), 1);
    assert_eq!(api.sorted_requests(), sorted(base_requests()));
}

#[test]
fn no_cluster_reads_nothing() {
    let config = read(ClusterSource::None).expect("read");
    assert!(config.mirror_objects.is_empty() && config.ca_bundles.is_empty());
    assert!(config.pull_secret.is_none());
    assert_eq!(config.notes, ["cluster reads disabled (--no-cluster)"]);
}

// ---------------------------------------------------------------------------------------------
// From --cluster-dir

fn write(dir: &Path, relative: &str, content: &str) -> PathBuf {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, content).unwrap();
    path
}

/// `text` as a YAML block scalar body indented by `indent` spaces.
fn indent(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

#[test]
fn dir_oc_get_yaml_files() {
    let ca = Pki::new();
    let ca_pem = pem(&ca);
    let dir = tempfile::tempdir().unwrap();
    // `oc get idms -o yaml`: a List whose items carry their own apiVersion and kind.
    write(
        dir.path(),
        "idms.yaml",
        "apiVersion: v1
items:
- apiVersion: config.openshift.io/v1
  kind: ImageDigestMirrorSet
  metadata:
    creationTimestamp: \"2025-01-01T00:00:00Z\"
    generation: 1
    name: release
    resourceVersion: \"12345\"
    uid: 0b4c7b9e-0000-0000-0000-000000000000
  spec:
    imageDigestMirrors:
    - mirrors:
      - mirror.local:5000/ocp4/openshift4
      source: quay.io/openshift-release-dev/ocp-release
    - mirrors:
      - mirror.local:5000/ocp4/openshift4
      mirrorSourcePolicy: NeverContactSource
      source: quay.io/openshift-release-dev/ocp-v4.0-art-dev
- apiVersion: config.openshift.io/v1
  kind: ImageDigestMirrorSet
  metadata:
    name: capi
  spec:
    imageDigestMirrors:
    - mirrors: [mirror.local:5000/capi]
      source: quay.io/openshift/capi
kind: List
metadata:
  resourceVersion: \"\"
",
    );
    // `oc get image.config cluster -o yaml`: a single object.
    write(
        dir.path(),
        "image.yaml",
        "apiVersion: config.openshift.io/v1
kind: Image
metadata:
  name: cluster
spec:
  additionalTrustedCA:
    name: registry-cas
  registrySources:
    insecureRegistries:
    - insecure.local:5000
status:
  internalRegistryHostname: image-registry.openshift-image-registry.svc:5000
",
    );
    write(
        dir.path(),
        "registry-cas.yml",
        &format!(
            "apiVersion: v1
kind: ConfigMap
metadata:
  name: registry-cas
  namespace: openshift-config
data:
  mirror.local..5000: |
{}",
            indent(&ca_pem, 4)
        ),
    );
    write(
        dir.path(),
        "pull-secret.yaml",
        &format!(
            "apiVersion: v1
kind: Secret
type: kubernetes.io/dockerconfigjson
metadata:
  name: pull-secret
  namespace: openshift-config
data:
  .dockerconfigjson: {}
",
            BASE64.encode(PULL_SECRET_JSON)
        ),
    );
    // Not Kubernetes objects, or not ones we read: ignored.
    write(dir.path(), "notes.txt", "not yaml: [");
    write(dir.path(), "values.yaml", "replicas: 3\nimage: foo\n");
    write(
        dir.path(),
        "other-ns.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: user-ca-bundle, namespace: default}}\ndata:\n  ca-bundle.crt: |\n{}",
            indent(&ca_pem, 4)
        ),
    );

    let config = read_dir(dir.path()).expect("read");
    assert_eq!(
        mirrors_of(&config),
        vec![
            (
                MirrorKind::ImageDigestMirrorSet,
                "capi".into(),
                vec![rule(
                    "quay.io/openshift/capi",
                    &["mirror.local:5000/capi"],
                    None
                )]
            ),
            (
                MirrorKind::ImageDigestMirrorSet,
                "release".into(),
                vec![
                    rule(
                        "quay.io/openshift-release-dev/ocp-release",
                        &["mirror.local:5000/ocp4/openshift4"],
                        None
                    ),
                    rule(
                        "quay.io/openshift-release-dev/ocp-v4.0-art-dev",
                        &["mirror.local:5000/ocp4/openshift4"],
                        Some(SourcePolicy::NeverContactSource)
                    ),
                ]
            ),
        ]
    );
    assert_eq!(config.registry_sources.insecure, ["insecure.local:5000"]);
    assert_eq!(
        config.additional_trusted_ca.as_deref(),
        Some("registry-cas")
    );
    assert_eq!(
        config.ca_bundles,
        [bundle(
            "openshift-config",
            "registry-cas",
            "mirror.local..5000",
            &ca_pem
        )]
    );
    let secret = config.pull_secret.as_ref().expect("pull secret");
    assert_eq!(
        secret.origin,
        dir.path().join("pull-secret.yaml").display().to_string()
    );
    assert_eq!(secret.dockerconfigjson, PULL_SECRET_JSON.as_bytes());
    assert_eq!(config.notes, [TRUSTED_MISSING, USER_MISSING]);
}

#[test]
fn dir_multi_document_yaml_and_json() {
    let ca = Pki::new();
    let ca_pem = pem(&ca);
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "mirrors/all.yaml",
        "---
apiVersion: operator.openshift.io/v1alpha1
kind: ImageContentSourcePolicy
metadata:
  name: legacy
spec:
  repositoryDigestMirrors:
  - source: quay.io/x
    mirrors:
    - a-icsp.local/x
---
# an empty document, as editors leave them
---
apiVersion: config.openshift.io/v1
kind: ImageTagMirrorSet
metadata:
  name: tags
spec:
  imageTagMirrors:
  - source: docker.io/library
    mirrors: [mirror.local/dockerhub]
    mirrorSourcePolicy: AllowContactingSource
...
",
    );
    // `oc get idms -o json`, and a JSON file with two concatenated objects.
    write(
        dir.path(),
        "idms.json",
        &serde_json::to_string_pretty(&json!({
            "apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
            "items": [idms("release", json!([{"source": "quay.io/ocp", "mirrors": ["m.local/ocp"]}]))]
        }))
        .unwrap(),
    );
    write(
        dir.path(),
        "config/cas.json",
        &format!(
            "{}\n{}",
            config_map(
                "openshift-config-managed",
                "trusted-ca-bundle",
                json!({"ca-bundle.crt": ca_pem})
            ),
            config_map(
                "openshift-config",
                "user-ca-bundle",
                json!({"ca-bundle.crt": ca_pem})
            )
        ),
    );
    write(
        dir.path(),
        "config/pull-secret.json",
        &pull_secret(&BASE64.encode(PULL_SECRET_JSON)).to_string(),
    );

    let config = read_dir(dir.path()).expect("read");
    assert_eq!(
        mirrors_of(&config),
        vec![
            (
                MirrorKind::ImageDigestMirrorSet,
                "release".into(),
                vec![rule("quay.io/ocp", &["m.local/ocp"], None)]
            ),
            (
                MirrorKind::ImageTagMirrorSet,
                "tags".into(),
                vec![rule(
                    "docker.io/library",
                    &["mirror.local/dockerhub"],
                    Some(SourcePolicy::AllowContactingSource)
                )]
            ),
            (
                MirrorKind::ImageContentSourcePolicy,
                "legacy".into(),
                vec![rule("quay.io/x", &["a-icsp.local/x"], None)]
            ),
        ]
    );
    assert_eq!(
        config.ca_bundles,
        [
            bundle(
                "openshift-config-managed",
                "trusted-ca-bundle",
                "ca-bundle.crt",
                &ca_pem
            ),
            bundle(
                "openshift-config",
                "user-ca-bundle",
                "ca-bundle.crt",
                &ca_pem
            ),
        ]
    );
    assert_eq!(
        config.pull_secret.as_ref().map(|s| s.origin.clone()),
        Some(
            dir.path()
                .join("config/pull-secret.json")
                .display()
                .to_string()
        )
    );
    assert_eq!(config.notes, [IMAGE_MISSING]);
}

#[test]
fn dir_must_gather_tree() {
    let (ca1, ca2, ca3) = (Pki::new(), Pki::new(), Pki::new());
    let (pem1, pem2, pem3) = (pem(&ca1), pem(&ca2), pem(&ca3));
    let dir = tempfile::tempdir().unwrap();
    let root = "must-gather.local.5231/quay-io-openshift-release-dev-ocp-v4-0-art-dev-sha256-0123";
    let at = |relative: &str| format!("{root}/{relative}");
    write(
        dir.path(),
        &at("timestamp"),
        "2025-01-01 00:00:00 +0000 UTC\n",
    );
    write(dir.path(), &at("event-filter.html"), "<html></html>");
    write(
        dir.path(),
        &at("cluster-scoped-resources/config.openshift.io/imagedigestmirrorsets/x.yaml"),
        "apiVersion: config.openshift.io/v1
kind: ImageDigestMirrorSet
metadata:
  name: x
spec:
  imageDigestMirrors:
  - mirrors:
    - mirror.local:5000/ocp4/openshift4
    source: quay.io/openshift-release-dev/ocp-release
",
    );
    write(
        dir.path(),
        &at("cluster-scoped-resources/operator.openshift.io/imagecontentsourcepolicies/y.yaml"),
        "apiVersion: operator.openshift.io/v1alpha1
kind: ImageContentSourcePolicy
metadata:
  name: y
spec:
  repositoryDigestMirrors:
  - mirrors:
    - mirror.local:5000/ocp4/openshift4
    source: quay.io/openshift-release-dev/ocp-v4.0-art-dev
",
    );
    write(
        dir.path(),
        &at("cluster-scoped-resources/config.openshift.io/images.yaml"),
        "apiVersion: config.openshift.io/v1
items:
- apiVersion: config.openshift.io/v1
  kind: Image
  metadata:
    name: cluster
  spec:
    additionalTrustedCA:
      name: registry-cas
    registrySources:
      allowedRegistries: [quay.io, mirror.local:5000]
kind: ImageList
metadata:
  resourceVersion: \"1\"
",
    );
    // A typed list as the API returns it: items without apiVersion and kind.
    write(
        dir.path(),
        &at("namespaces/openshift-config/core/configmaps.yaml"),
        &format!(
            "apiVersion: v1
items:
- data:
    ca-bundle.crt: |
{user}  metadata:
    name: user-ca-bundle
    namespace: openshift-config
- data:
    mirror.local..5000: |
{reg}  metadata:
    name: registry-cas
    namespace: openshift-config
- data:
    ca.crt: |
{other}  metadata:
    name: admin-kubeconfig-client-ca
    namespace: openshift-config
kind: ConfigMapList
metadata:
  resourceVersion: \"1\"
",
            user = indent(&pem1, 6),
            reg = indent(&pem2, 6),
            other = indent(&pem3, 6)
        ),
    );
    write(
        dir.path(),
        &at("namespaces/openshift-config-managed/core/configmaps.yaml"),
        &format!(
            "apiVersion: v1
items:
- data:
    ca-bundle.crt: |
{trusted}  metadata:
    name: trusted-ca-bundle
    namespace: openshift-config-managed
kind: ConfigMapList
metadata: {{}}
",
            trusted = indent(&pem3, 6)
        ),
    );
    // must-gather redacts Secret data.
    let secrets = write(
        dir.path(),
        &at("namespaces/openshift-config/core/secrets.yaml"),
        "apiVersion: v1
items:
- data:
    .dockerconfigjson: \"\"
  metadata:
    name: pull-secret
    namespace: openshift-config
  type: kubernetes.io/dockerconfigjson
kind: SecretList
metadata: {}
",
    );
    write(
        dir.path(),
        &at("namespaces/openshift-config/pods/p/p/p/logs/current.log"),
        "log line: {\n",
    );
    write(
        dir.path(),
        &at("namespaces/openshift-config/core/events.yaml"),
        "apiVersion: v1\nitems: []\nkind: EventList\nmetadata: {}\n",
    );

    let config = read_dir(dir.path()).expect("read");
    assert_eq!(
        mirrors_of(&config),
        vec![
            (
                MirrorKind::ImageDigestMirrorSet,
                "x".into(),
                vec![rule(
                    "quay.io/openshift-release-dev/ocp-release",
                    &["mirror.local:5000/ocp4/openshift4"],
                    None
                )]
            ),
            (
                MirrorKind::ImageContentSourcePolicy,
                "y".into(),
                vec![rule(
                    "quay.io/openshift-release-dev/ocp-v4.0-art-dev",
                    &["mirror.local:5000/ocp4/openshift4"],
                    None
                )]
            ),
        ]
    );
    assert_eq!(
        config.registry_sources.allowed,
        ["quay.io", "mirror.local:5000"]
    );
    assert_eq!(
        config.ca_bundles,
        [
            bundle(
                "openshift-config-managed",
                "trusted-ca-bundle",
                "ca-bundle.crt",
                &pem3
            ),
            bundle("openshift-config", "user-ca-bundle", "ca-bundle.crt", &pem1),
            bundle(
                "openshift-config",
                "registry-cas",
                "mirror.local..5000",
                &pem2
            ),
        ]
    );
    assert!(config.pull_secret.is_none());
    assert_eq!(
        config.notes,
        [format!(
            "{}: .dockerconfigjson is missing, empty or not a base64-encoded JSON object \
             (redacted?); treated as absent",
            secrets.display()
        )]
    );
}

#[test]
fn dir_redacted_placeholder_secret_is_absent_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: pull-secret, namespace: openshift-config}\n\
         data:\n  .dockerconfigjson: REDACTED\n",
    );
    let config = read_dir(dir.path()).expect("read");
    assert!(config.pull_secret.is_none());
    assert_eq!(
        config.notes.last().unwrap(),
        &format!(
            "{}: .dockerconfigjson is missing, empty or not a base64-encoded JSON object \
             (redacted?); treated as absent",
            path.display()
        )
    );
}

#[test]
fn dir_unparsable_file_is_a_dump_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a-good.yaml",
        "apiVersion: v1\nkind: List\nitems: []\n",
    );
    let bad = write(
        dir.path(),
        "b-bad.yaml",
        "apiVersion: v1\nkind: [unclosed\n",
    );
    let error = read_dir(dir.path()).expect_err("unparsable");
    assert_eq!(error.exit_code(), 2);
    match &error {
        ClusterError::Dump { path, cause } => {
            assert_eq!(path, &bad);
            assert!(cause.starts_with("not valid YAML: "), "{cause}");
        }
        other => panic!("expected a dump error, got {other:?}"),
    }
    assert!(
        error.to_string().contains(&bad.display().to_string()),
        "{error}"
    );

    let json_dir = tempfile::tempdir().unwrap();
    let bad = write(json_dir.path(), "x.json", "{\"kind\": ");
    match read_dir(json_dir.path()) {
        Err(ClusterError::Dump { path, cause }) => {
            assert_eq!(path, bad);
            assert!(cause.starts_with("not valid JSON: "), "{cause}");
        }
        other => panic!("expected a dump error, got {other:?}"),
    }
}

#[test]
fn dir_duplicate_singleton_is_an_error_naming_both_files() {
    let ca = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let object = config_map(
        "openshift-config",
        "user-ca-bundle",
        json!({"ca-bundle.crt": pem(&ca)}),
    );
    let first = write(dir.path(), "a/user-ca-bundle.json", &object.to_string());
    let second = write(dir.path(), "b/cms.json", &object.to_string());
    match read_dir(dir.path()) {
        Err(ClusterError::Dump { path, cause }) => {
            assert_eq!(path, first);
            assert_eq!(
                cause,
                format!(
                    "ConfigMap openshift-config/user-ca-bundle is also in {}; keep one copy",
                    second.display()
                )
            );
        }
        other => panic!("expected a dump error, got {other:?}"),
    }
}

#[test]
fn dir_duplicate_of_an_unused_config_map_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let object = config_map("openshift-config", "unrelated", json!({"x": "y"}));
    write(dir.path(), "a.json", &object.to_string());
    write(dir.path(), "b.json", &object.to_string());
    let config = read_dir(dir.path()).expect("read");
    assert!(config.ca_bundles.is_empty());
}

#[test]
fn dir_malformed_mirror_object_is_a_dump_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "idms.yaml",
        "apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata: {name: x}\n\
         spec:\n  imageDigestMirrors:\n  - source: quay.io/x\n    mirrors: [m.local/x]\n    \
         mirrorSourcePolicy: Sometimes\n",
    );
    match read_dir(dir.path()) {
        Err(ClusterError::Dump { path: p, cause }) => {
            assert_eq!(p, path);
            assert!(
                cause.starts_with("ImageDigestMirrorSet: unknown variant `Sometimes`"),
                "{cause}"
            );
        }
        other => panic!("expected a dump error, got {other:?}"),
    }
}

#[test]
fn dir_hidden_entries_are_skipped() {
    // A ConfigMap volume: the visible file is a link into `..data`, which must not be read as
    // a second copy.
    let dir = tempfile::tempdir().unwrap();
    let object = config_map("openshift-config", "user-ca-bundle", json!({"k": "v"}));
    write(dir.path(), "..2025_01_01/cm.json", &object.to_string());
    std::os::unix::fs::symlink("..2025_01_01", dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/cm.json", dir.path().join("cm.json")).unwrap();
    write(dir.path(), ".hidden.yaml", "not: [valid");
    let config = read_dir(dir.path()).expect("read");
    // Found exactly once (its only key holds no certificate, hence the note).
    assert_eq!(
        config.notes,
        [
            IMAGE_MISSING,
            TRUSTED_MISSING,
            "ConfigMap openshift-config/user-ca-bundle key k: no valid PEM certificate (0 block(s) skipped); ignored",
            SECRET_MISSING,
        ]
    );
}

#[test]
fn dir_that_does_not_exist_is_a_dump_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    match read_dir(&missing) {
        Err(ClusterError::Dump { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected a dump error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Signature policy (issue 16 item 1)

/// signature-policy §1: every ClusterImagePolicy (cluster-scoped) and the ImagePolicies of the
/// namespace only, from `config.openshift.io/v1`, one list each (what the RBAC grants).
#[test]
fn api_signature_policies_cluster_wide_and_of_the_namespace_only() {
    let api = ApiServer::start();
    api.serve_openshift();
    api.serve_image_policies("v1");
    api.put(image_policy(
        "v1",
        None,
        "openshift",
        &["quay.io/openshift-release-dev"],
        "k",
    ));
    api.put(image_policy(
        "v1",
        None,
        "extra",
        &["mirror.local/a", "*.example.com"],
        "k",
    ));
    api.put(image_policy(
        "v1",
        Some(POLICY_NAMESPACE),
        "mine",
        &["own.io/x"],
        "k",
    ));
    api.put(image_policy(
        "v1",
        Some("elsewhere"),
        "theirs",
        &["their.io"],
        "k",
    ));

    let config = read_api_with_policy(&api).expect("read");
    assert_eq!(
        policies_of(&config),
        [
            (
                "ClusterImagePolicy extra".to_string(),
                vec!["mirror.local/a".to_string(), "*.example.com".to_string()]
            ),
            (
                "ClusterImagePolicy openshift".to_string(),
                vec!["quay.io/openshift-release-dev".to_string()]
            ),
            (
                format!("ImagePolicy {POLICY_NAMESPACE}/mine"),
                vec!["own.io/x".to_string()]
            ),
        ]
    );
    let mut expected = base_requests();
    expected.extend(policy_requests("v1"));
    assert_eq!(api.sorted_requests(), sorted(expected));
}

/// signature-policy §1: 4.16–4.19 serve the kinds as v1alpha1 only (same fields): v1 answers
/// 404, the read falls back to v1alpha1 for each kind.
#[test]
fn api_signature_policies_fall_back_to_v1alpha1() {
    let api = ApiServer::start();
    api.serve_openshift();
    api.serve_image_policies("v1alpha1");
    api.put(image_policy("v1alpha1", None, "old", &["quay.io/x"], "k"));
    api.put(image_policy(
        "v1alpha1",
        Some(POLICY_NAMESPACE),
        "ns",
        &["own.io"],
        "k",
    ));

    let config = read_api_with_policy(&api).expect("read");
    assert_eq!(
        policies_of(&config),
        [
            (
                "ClusterImagePolicy old".to_string(),
                vec!["quay.io/x".to_string()]
            ),
            (
                format!("ImagePolicy {POLICY_NAMESPACE}/ns"),
                vec!["own.io".to_string()]
            ),
        ]
    );
    let mut expected = base_requests();
    expected.extend(policy_requests("v1"));
    expected.extend(policy_requests("v1alpha1"));
    assert_eq!(api.sorted_requests(), sorted(expected));
}

/// signature-policy §1: neither version served (≤ 4.15, or the gate off) is no policy, with a
/// note per kind; not an error.
#[test]
fn api_signature_policy_crds_missing_is_no_policy_with_a_note() {
    let api = ApiServer::start();
    api.serve_openshift();
    let config = read_api_with_policy(&api).expect("read");
    assert!(config.image_policies.is_empty());
    for note in [
        "clusterimagepolicies.config.openshift.io: not served by the cluster (neither v1 nor \
         v1alpha1; CRD not installed); no signature policy from it"
            .to_string(),
        format!(
            "imagepolicies.config.openshift.io in namespace {POLICY_NAMESPACE}: not served by the \
             cluster (neither v1 nor v1alpha1; CRD not installed); no signature policy from it"
        ),
    ] {
        assert!(
            config.notes.contains(&note),
            "{note:?} in {:?}",
            config.notes
        );
    }
    let mut expected = base_requests();
    expected.extend(policy_requests("v1"));
    expected.extend(policy_requests("v1alpha1"));
    assert_eq!(api.sorted_requests(), sorted(expected));
}

/// signature-policy §1 + design exit codes: v1 absent, v1alpha1 refused (403) is an API error
/// naming the v1alpha1 read, exit 3; never "no policy".
#[test]
fn api_signature_policy_v1alpha1_refused_is_an_api_error() {
    let api = ApiServer::start();
    api.serve_openshift();
    api.serve_image_policies("v1alpha1");
    api.fail(
        "/apis/config.openshift.io/v1alpha1/clusterimagepolicies",
        Fault::Forbidden,
    );
    let error = read_api_with_policy(&api).expect_err("403 must fail the read");
    assert_eq!(error.exit_code(), 3);
    let (verb, resource, cause) = api_error(Err(error));
    assert_eq!(
        (verb, resource.as_str()),
        ("list", "clusterimagepolicies.v1alpha1.config.openshift.io")
    );
    assert!(cause.starts_with("HTTP 403 Forbidden: "), "{cause}");
}

/// signature-policy §1: a spec the API would not hold (no policy) fails the read naming the
/// object, exit 3, rather than dropping a policy.
#[test]
fn api_malformed_signature_policy_is_an_api_error_naming_it() {
    let api = ApiServer::start();
    api.serve_openshift();
    api.serve_image_policies("v1");
    api.put(
        json!({"apiVersion": "config.openshift.io/v1", "kind": "ClusterImagePolicy",
                   "metadata": {"name": "broken"}, "spec": {"scopes": ["quay.io"]}}),
    );
    let (verb, resource, cause) = api_error(read_api_with_policy(&api));
    assert_eq!(
        (verb, resource.as_str()),
        ("list", "clusterimagepolicies.config.openshift.io")
    );
    assert!(
        cause.starts_with("malformed object: ClusterImagePolicy broken: "),
        "{cause}"
    );
    assert!(cause.contains("policy"), "{cause}");
}

// ---------------------------------------------------------------------------------------------
// `resolve` names the signature policy (issue 16 item 7)

/// A real public key (P-256), so that the rendered requirement parses.
fn public_key_pem() -> String {
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(Pki::new().key_pem())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The lines `resolve` printed for `reference`, up to the blank line after them.
fn resolved_block<'a>(stdout: &'a str, reference: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .skip_while(|line| *line != reference)
        .take_while(|line| !line.is_empty())
        .collect()
}

const RELEASE: &str = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:\
                       0000000000000000000000000000000000000000000000000000000000000000";
const OWN: &str = "own.io/capi/aws:v1";
const THEIRS: &str = "their.io/x:v1";
const UNSCOPED: &str = "docker.io/library/busybox:1";

/// A dump with the default `openshift` ClusterImagePolicy (no signedIdentity), an ImagePolicy
/// in the default namespace (and one of its scopes covered by the CIP), one in another.
fn policy_dump(dir: &Path) {
    let key = public_key_pem();
    let mut release = image_policy(
        "v1",
        None,
        "openshift",
        &["quay.io/openshift-release-dev"],
        &key,
    );
    release["spec"]["policy"]
        .as_object_mut()
        .unwrap()
        .remove("signedIdentity");
    write(dir, "cip.json", &release.to_string());
    let mine = image_policy(
        "v1",
        Some(POLICY_NAMESPACE),
        "mine",
        &[
            "own.io/capi",
            "quay.io/openshift-release-dev/ocp-v4.0-art-dev",
        ],
        &key,
    );
    write(dir, "mine.json", &mine.to_string());
    let theirs = image_policy("v1alpha1", Some("elsewhere"), "theirs", &["their.io"], &key);
    write(dir, "theirs.json", &theirs.to_string());
}

/// signature-policy §3 lookup and §2.4: per reference, the scope and every requirement
/// (object, root of trust, match policy) of the ClusterImagePolicy or of the `--namespace`
/// ImagePolicy that applies; another namespace's ImagePolicy does not apply; a dropped
/// ImagePolicy scope is noted. Text and JSON.
#[test]
fn resolve_names_the_signature_policy_that_applies() {
    let dump = tempfile::tempdir().unwrap();
    policy_dump(dump.path());
    let text = Run::new()
        .args(["resolve", "--cluster-dir"])
        .arg(dump.path())
        .args([RELEASE, OWN, THEIRS, UNSCOPED])
        .run();
    text.assert_code(0);
    let out = &text.stdout;
    let has = |reference: &str, lines: &[&str]| {
        let block = resolved_block(out, reference);
        for line in lines {
            assert!(block.contains(line), "{line:?} not in {block:#?}\n{out}");
        }
    };
    has(
        RELEASE,
        &[
            "  signature policy: scope quay.io/openshift-release-dev, all required:",
            "       ClusterImagePolicy openshift: PublicKey, MatchRepoDigestOrExact",
        ],
    );
    has(
        OWN,
        &[
            "  signature policy: scope own.io/capi, all required:",
            "       ImagePolicy openshift-cluster-api-operator/mine: PublicKey, MatchRepository",
        ],
    );
    has(THEIRS, &["  no signature policy applies"]);
    has(UNSCOPED, &["  no signature policy applies"]);
    let dropped = "note: ImagePolicy openshift-cluster-api-operator/mine scope \
                   quay.io/openshift-release-dev/ocp-v4.0-art-dev ignored: ClusterImagePolicy \
                   scope quay.io/openshift-release-dev covers it (the MCO marks it Pending)";
    assert!(out.lines().any(|l| l == dropped), "{dropped:?} in\n{out}");

    let json = Run::new()
        .args(["resolve", "--format", "json", "--cluster-dir"])
        .arg(dump.path())
        .args([RELEASE, OWN, THEIRS])
        .run();
    json.assert_code(0);
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    let policy_of = |reference: &str| {
        let images = report["images"].as_array().unwrap();
        let image = images.iter().find(|i| i["ref"] == reference).unwrap();
        image["signaturePolicy"].clone()
    };
    assert_eq!(
        policy_of(RELEASE),
        json!({"status": "applies", "scope": "quay.io/openshift-release-dev", "requirements": [
            {"object": "ClusterImagePolicy openshift", "rootOfTrust": "PublicKey",
             "matchPolicy": "MatchRepoDigestOrExact"}]})
    );
    assert_eq!(
        policy_of(OWN)["requirements"][0]["object"],
        "ImagePolicy openshift-cluster-api-operator/mine"
    );
    assert_eq!(policy_of(THEIRS), json!({"status": "none"}));

    // Under `--namespace elsewhere`, that namespace's ImagePolicy applies instead.
    let other = Run::new()
        .args(["resolve", "--namespace", "elsewhere", "--cluster-dir"])
        .arg(dump.path())
        .args([OWN, THEIRS])
        .run();
    other.assert_code(0);
    assert!(
        resolved_block(&other.stdout, OWN).contains(&"  no signature policy applies"),
        "{}",
        other.stdout
    );
    assert!(
        resolved_block(&other.stdout, THEIRS)
            .contains(&"       ImagePolicy elsewhere/theirs: PublicKey, MatchRepository"),
        "{}",
        other.stdout
    );
}

/// signature-policy §2.3 through the binary: a ClusterImagePolicy scope outside
/// allowedRegistries makes `resolve` show the requirement that rejects every image under it.
#[test]
fn resolve_shows_a_scope_the_mco_refuses_to_render() {
    let dump = tempfile::tempdir().unwrap();
    policy_dump(dump.path());
    let image_config = image(json!({"registrySources": {"allowedRegistries": ["own.io"]}}));
    write(dump.path(), "image.json", &image_config.to_string());
    let run = Run::new()
        .args(["resolve", "--cluster-dir"])
        .arg(dump.path())
        .arg(RELEASE)
        .run();
    run.assert_code(0);
    let block = resolved_block(&run.stdout, RELEASE);
    let refused = "       ClusterImagePolicy openshift: rejects every image: the policy cannot \
                   be evaluated";
    let line = block
        .iter()
        .find(|line| line.starts_with("       ClusterImagePolicy openshift: rejects"))
        .unwrap_or_else(|| panic!("no refusal in {block:#?}"));
    assert!(
        line.contains(
            "the MCO refuses to render scope quay.io/openshift-release-dev of ClusterImagePolicy \
             openshift: it is not nested in any allowedRegistries entry (own.io)"
        ) && line.contains("the node keeps its previous policy"),
        "{line} (wanted like {refused})"
    );
}

/// Issue 16 item 1: with `--no-cluster` nothing says what the node would check.
#[test]
fn resolve_without_cluster_says_the_signature_policy_is_unknown() {
    let text = Run::new().args(["resolve", "--no-cluster", OWN]).run();
    text.assert_code(0);
    assert!(
        resolved_block(&text.stdout, OWN).contains(&"  signature policy unknown (no cluster read)"),
        "{}",
        text.stdout
    );
    let json = Run::new()
        .args(["resolve", "--no-cluster", "--format", "json", OWN])
        .run();
    json.assert_code(0);
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        report["images"][0]["signaturePolicy"],
        json!({"status": "unknown"})
    );
}
