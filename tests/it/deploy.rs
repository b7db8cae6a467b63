//! `deploy/`: every file parses into the k8s-openapi types of its kind (and back to the same
//! document, so a misspelt field cannot hide), kustomization.yaml lists every file, the workloads'
//! command lines are ones the binary accepts, and the RBAC matches the binary's cluster reads both
//! ways: the reads are made for real (kube against the in-test API server, with every resource
//! served and every object present) and each recorded request must be allowed for every
//! ServiceAccount a workload runs as, while every rule must allow some request.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use base64::Engine;
use clap::Parser;
use common::{ApiRequest, ApiServer, Pki};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, PodSpec, ServiceAccount, Volume,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};
use provider_images::cli::{Cli, Command};
use provider_images::cluster::{self, ClusterSource};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Where the initContainer and the Job publish, and where the operator reads.
const OUTPUT: &str = "/var/lib/provider-manifests";

// Facts of the operator this is built for (openshift/cluster-capi-operator d87b55475,
// manifests/0000_30_cluster-api-installer_*), written here as facts, not read back from deploy/.
const OPERATOR_NAMESPACE: &str = "openshift-cluster-api-operator";
const OPERATOR_DEPLOYMENT: &str = "capi-operator";
const OPERATOR_CONTAINER: &str = "capi-operator";
const OPERATOR_SERVICE_ACCOUNT: &str = "capi-operator";
const IMAGES_CONFIG_MAP: &str = "cluster-capi-operator-images";
const IMAGES_KEY: &str = "images.json";
/// The operator's volume for that ConfigMap, and where its container mounts it.
const IMAGES_VOLUME: &str = "images";
const IMAGES_MOUNT: &str = "/etc/cluster-api-config-images";
/// Where the operator at that commit writes its own pulls (`PROVIDER_IMAGE_DIR`'s default).
const OPERATOR_PULL_DIR: &str = "/var/lib/provider-images";
/// The additionalTrustedCA ConfigMap of the test cluster: a name the admin chose, which appears
/// nowhere in deploy/.
const ADDITIONAL_CA: &str = "registry-cas-chosen-by-the-admin";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every object of deploy/, by kind.
#[derive(Default)]
struct Deploy {
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    deployments: Vec<Deployment>,
    jobs: Vec<Job>,
    claims: Vec<PersistentVolumeClaim>,
}

/// A document as the typed value, which must serialize back to the same document.
fn typed<T: DeserializeOwned + serde::Serialize>(file: &str, document: &Value) -> T {
    let value: T = serde_json::from_value(document.clone())
        .unwrap_or_else(|e| panic!("{file}: not a valid {}: {e}", document["kind"]));
    let back = serde_json::to_value(&value).unwrap();
    let mut differences = Vec::new();
    differ("", document, &back, &mut differences);
    assert!(
        differences.is_empty(),
        "{file}: the {} type reads this differently (a misspelt or unknown field?):\n{}",
        document["kind"],
        differences.join("\n")
    );
    value
}

/// The paths where `written` and `read` (the typed value serialized again) differ.
fn differ(path: &str, written: &Value, read: &Value, out: &mut Vec<String>) {
    match (written, read) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let null = Value::Null;
                let (x, y) = (a.get(key).unwrap_or(&null), b.get(key).unwrap_or(&null));
                differ(&format!("{path}.{key}"), x, y, out);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differ(&format!("{path}[{i}]"), x, y, out);
            }
        }
        _ if written != read => out.push(format!("  {path}: written {written}, read {read}")),
        _ => {}
    }
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
        })
        .filter(|document| !document.is_null())
        .collect()
}

fn load() -> Deploy {
    let mut files: Vec<String> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let mut deploy = Deploy::default();
    let mut resources = None;
    for file in &files {
        let path = deploy_dir().join(file);
        let documents = documents(&path);
        assert!(!documents.is_empty(), "{file}: empty");
        if file == "kustomization.yaml" {
            assert_eq!(documents.len(), 1);
            assert_eq!(documents[0]["kind"], "Kustomization");
            let listed: Vec<String> =
                serde_json::from_value(documents[0]["resources"].clone()).unwrap();
            resources = Some(listed);
            continue;
        }
        for document in &documents {
            let kind = document["kind"].as_str().expect("kind");
            assert_eq!(
                *file,
                format!("{}.yaml", kind.to_lowercase()),
                "one object kind a file, named after it"
            );
            match kind {
                "ServiceAccount" => deploy.service_accounts.push(typed(file, document)),
                "ClusterRole" => deploy.cluster_roles.push(typed(file, document)),
                "ClusterRoleBinding" => deploy.cluster_role_bindings.push(typed(file, document)),
                "Role" => deploy.roles.push(typed(file, document)),
                "RoleBinding" => deploy.role_bindings.push(typed(file, document)),
                "Deployment" => deploy.deployments.push(typed(file, document)),
                "Job" => deploy.jobs.push(typed(file, document)),
                "PersistentVolumeClaim" => deploy.claims.push(typed(file, document)),
                other => panic!("{file}: no check for kind {other}; add one"),
            }
        }
    }
    let mut listed = resources.expect("deploy/kustomization.yaml");
    listed.sort();
    let others: Vec<String> = files
        .into_iter()
        .filter(|f| f != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, others,
        "kustomization.yaml lists exactly the other files"
    );
    deploy
}

// ---------------------------------------------------------------------------------------------
// RBAC, evaluated as the apiserver's RBAC authorizer does.

/// One rule as granted to a subject: cluster-wide (ClusterRoleBinding) or in one namespace
/// (RoleBinding).
struct Grant {
    namespace: Option<String>,
    rule: PolicyRule,
    origin: String,
}

fn names(list: &Option<Vec<String>>) -> Vec<String> {
    list.clone().unwrap_or_default()
}

fn binds(
    subjects: &Option<Vec<Subject>>,
    binding_namespace: Option<&str>,
    sa: &(String, String),
) -> bool {
    subjects.iter().flatten().any(|s| {
        s.kind == "ServiceAccount"
            && s.name == sa.1
            && s.namespace.as_deref().or(binding_namespace) == Some(sa.0.as_str())
    })
}

fn cluster_role<'a>(deploy: &'a Deploy, name: &str) -> &'a ClusterRole {
    deploy
        .cluster_roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("ClusterRole {name} is not in deploy/"))
}

/// Every rule the ServiceAccount `(namespace, name)` holds through deploy/'s bindings.
fn grants(deploy: &Deploy, sa: &(String, String)) -> Vec<Grant> {
    let mut grants = Vec::new();
    for binding in &deploy.cluster_role_bindings {
        if !binds(&binding.subjects, None, sa) {
            continue;
        }
        assert_eq!(binding.role_ref.kind, "ClusterRole");
        let role = cluster_role(deploy, &binding.role_ref.name);
        for rule in role.rules.iter().flatten() {
            grants.push(Grant {
                namespace: None,
                rule: rule.clone(),
                origin: format!("ClusterRole {}", binding.role_ref.name),
            });
        }
    }
    for binding in &deploy.role_bindings {
        let namespace = binding
            .metadata
            .namespace
            .clone()
            .expect("RoleBinding namespace");
        if !binds(&binding.subjects, Some(&namespace), sa) {
            continue;
        }
        let rules = match binding.role_ref.kind.as_str() {
            "ClusterRole" => cluster_role(deploy, &binding.role_ref.name).rules.clone(),
            "Role" => deploy
                .roles
                .iter()
                .find(|r| {
                    r.metadata.name.as_deref() == Some(binding.role_ref.name.as_str())
                        && r.metadata.namespace.as_deref() == Some(namespace.as_str())
                })
                .unwrap_or_else(|| {
                    panic!(
                        "Role {namespace}/{} is not in deploy/",
                        binding.role_ref.name
                    )
                })
                .rules
                .clone(),
            other => panic!("roleRef kind {other}"),
        };
        for rule in rules.into_iter().flatten() {
            grants.push(Grant {
                namespace: Some(namespace.clone()),
                rule,
                origin: format!(
                    "{} {namespace}/{}",
                    binding.role_ref.kind, binding.role_ref.name
                ),
            });
        }
    }
    grants
}

/// The smallest unit a rule grants: a verb on a resource of a group, for one name or any
/// (`None`), in one namespace or everywhere (`None`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Atom {
    namespace: Option<String>,
    verb: String,
    group: String,
    resource: String,
    name: Option<String>,
}

fn atoms(grant: &Grant) -> Vec<Atom> {
    let rule = &grant.rule;
    assert!(
        rule.non_resource_urls.is_none(),
        "{}: nonResourceURLs are never read",
        grant.origin
    );
    let resource_names: Vec<Option<String>> = match names(&rule.resource_names) {
        list if list.is_empty() => vec![None],
        list => list.into_iter().map(Some).collect(),
    };
    let mut atoms = Vec::new();
    for verb in &rule.verbs {
        for group in names(&rule.api_groups) {
            for resource in names(&rule.resources) {
                for name in &resource_names {
                    atoms.push(Atom {
                        namespace: grant.namespace.clone(),
                        verb: verb.clone(),
                        group: group.clone(),
                        resource: resource.clone(),
                        name: name.clone(),
                    });
                }
            }
        }
    }
    atoms
}

fn matches(pattern: &str, value: &str) -> bool {
    pattern == "*" || pattern == value
}

/// Whether the atom allows the request, as the RBAC authorizer decides: a namespaced grant
/// allows only requests in its namespace; resourceNames allow only requests naming one of them
/// (never a list).
fn allows(atom: &Atom, request: &ApiRequest) -> bool {
    let namespace_ok = match &atom.namespace {
        None => true,
        Some(ns) => request.namespace.as_deref() == Some(ns.as_str()),
    };
    let name_ok = match &atom.name {
        None => true,
        Some(name) => request.name.as_deref() == Some(name.as_str()),
    };
    namespace_ok
        && name_ok
        && matches(&atom.verb, &request.verb)
        && matches(&atom.group, &request.group)
        && matches(&atom.resource, &request.resource)
}

fn describe(request: &ApiRequest) -> String {
    format!(
        "{} {}/{} {} ns={} name={}",
        request.verb,
        request.group,
        request.version,
        request.resource,
        request.namespace.as_deref().unwrap_or("-"),
        request.name.as_deref().unwrap_or("-")
    )
}

// ---------------------------------------------------------------------------------------------
// The cluster reads, made for real.

fn pem() -> String {
    std::fs::read_to_string(Pki::new().ca_pem()).unwrap()
}

/// A cluster where every resource the binary reads is served and every object it reads exists,
/// including an Image naming an additionalTrustedCA ConfigMap: the widest set of reads it makes.
fn recorded_requests() -> Vec<ApiRequest> {
    let api = ApiServer::start();
    api.serve_openshift();
    let rule = json!([{"source": "quay.io/openshift", "mirrors": ["mirror.local:5000/ocp4"]}]);
    api.put(
        json!({"apiVersion": "config.openshift.io/v1", "kind": "ImageDigestMirrorSet",
                   "metadata": {"name": "digests"}, "spec": {"imageDigestMirrors": rule}}),
    );
    api.put(
        json!({"apiVersion": "config.openshift.io/v1", "kind": "ImageTagMirrorSet",
                   "metadata": {"name": "tags"}, "spec": {"imageTagMirrors": rule}}),
    );
    api.put(
        json!({"apiVersion": "operator.openshift.io/v1alpha1", "kind": "ImageContentSourcePolicy",
                   "metadata": {"name": "legacy"}, "spec": {"repositoryDigestMirrors": rule}}),
    );
    api.put(
        json!({"apiVersion": "config.openshift.io/v1", "kind": "Image",
                   "metadata": {"name": "cluster"},
                   "spec": {"additionalTrustedCA": {"name": ADDITIONAL_CA}}}),
    );
    let pem = pem();
    for (namespace, name, key) in [
        (
            "openshift-config-managed",
            "trusted-ca-bundle",
            "ca-bundle.crt",
        ),
        ("openshift-config", "user-ca-bundle", "ca-bundle.crt"),
        ("openshift-config", ADDITIONAL_CA, "mirror.local..5000"),
    ] {
        api.put(json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": name, "namespace": namespace},
                       "data": {key: pem}}));
    }
    let secret = base64::engine::general_purpose::STANDARD
        .encode(r#"{"auths":{"mirror.local:5000":{"auth":"dTpw"}}}"#);
    api.put(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                   "metadata": {"name": "pull-secret", "namespace": "openshift-config"},
                   "data": {".dockerconfigjson": secret}}),
    );

    // The cluster proxy (read in-cluster; the kubeconfig here stands in for the ServiceAccount),
    // and the image list from its second ConfigMap, so that the first is asked for too.
    api.put(
        json!({"apiVersion": "config.openshift.io/v1", "kind": "Proxy",
                   "metadata": {"name": "cluster"}, "status": {"httpsProxy": "http://proxy.lab:3128"}}),
    );
    api.put(json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "capi-installer-images", "namespace": OPERATOR_NAMESPACE},
                   "data": {"aws": "quay.io/openshift/capi-aws:v1"}}));
    // The signature policy (issue 16): every ClusterImagePolicy, the namespace's ImagePolicies.
    api.serve_image_policies("v1");
    let policy = json!({"scopes": ["quay.io/openshift"], "policy": {"rootOfTrust": {
        "policyType": "PublicKey", "publicKey": {"keyData": "a2V5"}}}});
    api.put(
        json!({"apiVersion": "config.openshift.io/v1", "kind": "ClusterImagePolicy",
                   "metadata": {"name": "openshift"}, "spec": policy}),
    );
    api.put(
        json!({"apiVersion": "config.openshift.io/v1", "kind": "ImagePolicy",
                   "metadata": {"name": "operator", "namespace": OPERATOR_NAMESPACE},
                   "spec": policy}),
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let extras = cluster::Extras {
        image_list_namespace: Some(OPERATOR_NAMESPACE.into()),
        cluster_proxy: cluster::ClusterProxyRead::Always,
        policy_namespace: Some(OPERATOR_NAMESPACE.into()),
    };
    let config = runtime
        .block_on(cluster::read_with_extras(
            &ClusterSource::Api {
                kubeconfig: Some(api.kubeconfig()),
            },
            &provider_images::transport::proxy::Proxies::none(),
            cluster::DEFAULT_CALL_TIMEOUT,
            &extras,
        ))
        .expect("cluster read");
    // Everything was found, so every read the binary can make was made.
    assert_eq!(config.mirror_objects.len(), 3, "{:?}", config.notes);
    assert_eq!(config.ca_bundles.len(), 3, "{:?}", config.notes);
    assert!(config.pull_secret.is_some());
    assert!(config.cluster_proxy.is_some());
    assert!(config.image_list.is_some());
    assert_eq!(config.image_policies.len(), 2, "{:?}", config.notes);
    assert_eq!(
        config.notes,
        [format!(
            "ConfigMap {OPERATOR_NAMESPACE}/{IMAGES_CONFIG_MAP}: not found; trying \
             ConfigMap {OPERATOR_NAMESPACE}/capi-installer-images"
        )]
    );
    api.sorted_requests()
}

/// The ServiceAccounts the workloads in deploy/ run as, as (namespace, name).
fn workload_accounts(deploy: &Deploy) -> BTreeSet<(String, String)> {
    let mut accounts = BTreeSet::new();
    let pods = deploy
        .deployments
        .iter()
        .map(|d| {
            (
                &d.metadata,
                d.spec.as_ref().unwrap().template.spec.as_ref().unwrap(),
            )
        })
        .chain(deploy.jobs.iter().map(|j| {
            (
                &j.metadata,
                j.spec.as_ref().unwrap().template.spec.as_ref().unwrap(),
            )
        }));
    for (metadata, pod) in pods {
        let namespace = metadata.namespace.clone().expect("workload namespace");
        let account = pod
            .service_account_name
            .clone()
            .unwrap_or_else(|| panic!("{:?}: set serviceAccountName", metadata.name));
        accounts.insert((namespace, account));
    }
    accounts
}

#[test]
fn rbac_allows_every_cluster_read_and_nothing_else() {
    let deploy = load();
    let requests = recorded_requests();
    assert!(
        requests
            .iter()
            .any(|r| r.resource == "configmaps" && r.name.as_deref() == Some(ADDITIONAL_CA)),
        "the additionalTrustedCA ConfigMap was read: {requests:#?}"
    );
    // role.yaml grants `get` on any ConfigMap of openshift-config because the additionalTrustedCA
    // name is not fixed; the binary must use that for these two and nothing else.
    for request in &requests {
        if request.resource == "configmaps"
            && request.namespace.as_deref() == Some("openshift-config")
        {
            let name = request.name.as_deref();
            assert!(
                name == Some("user-ca-bundle") || name == Some(ADDITIONAL_CA),
                "an openshift-config ConfigMap other than user-ca-bundle and the \
                 additionalTrustedCA one: {}",
                describe(request)
            );
        }
    }
    for file in std::fs::read_dir(deploy_dir()).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        assert!(
            !text.contains(ADDITIONAL_CA),
            "the test's name leaked into deploy/"
        );
    }

    let accounts = workload_accounts(&deploy);
    assert!(
        accounts.contains(&(
            OPERATOR_NAMESPACE.to_string(),
            "provider-images".to_string()
        )),
        "{accounts:?}"
    );
    for account in &deploy.service_accounts {
        let key = (
            account.metadata.namespace.clone().unwrap(),
            account.metadata.name.clone().unwrap(),
        );
        assert!(
            accounts.contains(&key),
            "ServiceAccount {key:?} is used by no workload"
        );
    }

    let mut problems = Vec::new();
    for account in &accounts {
        let atoms: Vec<(Atom, String)> = grants(&deploy, account)
            .iter()
            .flat_map(|grant| atoms(grant).into_iter().map(|a| (a, grant.origin.clone())))
            .collect();
        for request in &requests {
            if !atoms.iter().any(|(atom, _)| allows(atom, request)) {
                problems.push(format!(
                    "{account:?}: no rule allows the read {}",
                    describe(request)
                ));
            }
        }
        for (atom, origin) in &atoms {
            if !requests.iter().any(|request| allows(atom, request)) {
                problems.push(format!("{account:?}: {origin}: unused: {atom:?}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_evaluator_refuses_what_rbac_refuses() {
    // Guards the test above against an evaluator that allows too much.
    let atom = |namespace: Option<&str>, name: Option<&str>| Atom {
        namespace: namespace.map(Into::into),
        verb: "get".into(),
        group: "".into(),
        resource: "configmaps".into(),
        name: name.map(Into::into),
    };
    let get = |namespace: Option<&str>, name: Option<&str>| {
        ApiRequest::new("get", "", "v1", "configmaps", namespace, name)
    };
    let named = atom(Some("openshift-config"), Some("user-ca-bundle"));
    assert!(allows(
        &named,
        &get(Some("openshift-config"), Some("user-ca-bundle"))
    ));
    assert!(!allows(
        &named,
        &get(Some("openshift-config"), Some("other"))
    ));
    assert!(!allows(
        &named,
        &get(Some("default"), Some("user-ca-bundle"))
    ));
    assert!(!allows(&named, &get(None, Some("user-ca-bundle"))));
    let list = ApiRequest::new(
        "list",
        "",
        "v1",
        "configmaps",
        Some("openshift-config"),
        None,
    );
    assert!(!allows(&named, &list), "resourceNames never allow a list");
    assert!(
        !allows(&atom(Some("openshift-config"), None), &list),
        "get is not list"
    );
    assert!(allows(&atom(None, None), &get(Some("anywhere"), Some("x"))));
    let secret = ApiRequest::new(
        "get",
        "",
        "v1",
        "secrets",
        Some("openshift-config"),
        Some("x"),
    );
    assert!(!allows(&atom(None, None), &secret));
    let other_group = ApiRequest::new("get", "other.io", "v1", "configmaps", None, Some("x"));
    assert!(!allows(&atom(None, None), &other_group));
}

// ---------------------------------------------------------------------------------------------
// The workloads.

fn container<'a>(containers: &'a [Container], name: &str) -> &'a Container {
    containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn volume<'a>(pod: &'a PodSpec, name: &str) -> &'a Volume {
    pod.volumes
        .iter()
        .flatten()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

/// The mount of `path` in `container`: (volume name, read-only).
fn mount(container: &Container, path: &str) -> (String, bool) {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == path)
        .unwrap_or_else(|| panic!("{}: nothing mounted at {path}", container.name));
    (mount.name.clone(), mount.read_only == Some(true))
}

/// Restricted (the Pod Security Standard): non-root, no privilege escalation, no capabilities,
/// RuntimeDefault seccomp; and a read-only root filesystem.
fn assert_restricted(pod: &PodSpec, container: &Container) {
    let pod_context = pod.security_context.clone().unwrap_or_default();
    let context = container.security_context.clone().unwrap_or_default();
    let name = &container.name;
    assert!(
        context.run_as_non_root.or(pod_context.run_as_non_root) == Some(true),
        "{name}: runAsNonRoot"
    );
    assert_eq!(context.allow_privilege_escalation, Some(false), "{name}");
    assert_eq!(context.read_only_root_filesystem, Some(true), "{name}");
    let drop = context
        .capabilities
        .and_then(|c| c.drop)
        .unwrap_or_default();
    assert_eq!(drop, ["ALL"], "{name}: drop ALL");
    let seccomp = context
        .seccomp_profile
        .or(pod_context.seccomp_profile)
        .map(|p| p.type_);
    assert_eq!(seccomp.as_deref(), Some("RuntimeDefault"), "{name}");
    assert_eq!(
        container.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError"),
        "{name}"
    );
}

/// The provider-images container: a command line the binary accepts, images.json from the
/// operator's images ConfigMap (mounted, or read from the API in the operator's namespace), the
/// output at OUTPUT (writable), memory bounded.
fn assert_provider_images(pod: &PodSpec, container: &Container) -> String {
    assert_restricted(pod, container);
    let args = container.args.clone().expect("args");
    let cli = Cli::try_parse_from(std::iter::once("provider-images".to_string()).chain(args))
        .unwrap_or_else(|e| panic!("{}: the binary refuses its args: {e}", container.name));
    let Command::Extract(extract) = cli.command else {
        panic!("extract expected")
    };
    assert_eq!(extract.output, Path::new(OUTPUT));
    assert_eq!(extract.common.namespace, OPERATOR_NAMESPACE);
    match &extract.images_json {
        Some(images_json) => assert_mounted_images_json(pod, container, images_json),
        None => assert!(
            extract.common.cluster_dir.is_none() && !extract.common.no_cluster,
            "{}: the image list is read from the API",
            container.name
        ),
    }

    let (output_volume, read_only) = mount(container, OUTPUT);
    assert!(!read_only, "provider-images writes {OUTPUT}");

    let resources = container.resources.clone().expect("resources");
    let memory = |list: Option<
        BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| {
        list.and_then(|l| l.get("memory").cloned())
            .map(|q| q.0)
            .unwrap_or_else(|| panic!("{}: memory request and limit", container.name))
    };
    memory(resources.requests);
    memory(resources.limits);
    output_volume
}

/// images.json is the operator's images ConfigMap's key, mounted read-only.
fn assert_mounted_images_json(pod: &PodSpec, container: &Container, images_json: &Path) {
    let images_dir = images_json.parent().unwrap().to_str().unwrap();
    let (images_volume, read_only) = mount(container, images_dir);
    assert!(read_only);
    let config_map = volume(pod, &images_volume)
        .config_map
        .as_ref()
        .expect("images.json from a ConfigMap");
    assert_eq!(config_map.name, IMAGES_CONFIG_MAP);
    let file = images_json.file_name().unwrap().to_str().unwrap();
    // Without items every key is a file of its name.
    let mounted_as = match &config_map.items {
        None => Some(IMAGES_KEY),
        Some(items) => items
            .iter()
            .find(|item| item.key == IMAGES_KEY)
            .map(|item| item.path.as_str()),
    };
    assert_eq!(mounted_as, Some(file), "key {IMAGES_KEY} mounted as {file}");
}

#[test]
fn the_operator_runs_provider_images_as_an_init_container() {
    let deploy = load();
    assert_eq!(deploy.deployments.len(), 1);
    let pod = deploy.deployments[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let init = container(
        pod.init_containers.as_deref().unwrap_or_default(),
        "provider-images",
    );
    let output = assert_provider_images(pod, init);
    assert!(
        volume(pod, &output).empty_dir.is_some(),
        "the initContainer writes an emptyDir"
    );
    assert_eq!(pod.containers.len(), 1, "one operator container");
    let operator = &pod.containers[0];
    assert_restricted(pod, operator);
    assert_eq!(
        mount(operator, OUTPUT),
        (output, true),
        "the operator reads the same volume, read-only"
    );
}

#[test]
fn the_job_re_extracts_into_a_claim_with_the_service_account() {
    let deploy = load();
    assert_eq!(deploy.jobs.len(), 1);
    let job = &deploy.jobs[0];
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let account = pod.service_account_name.as_deref();
    assert!(
        deploy
            .service_accounts
            .iter()
            .any(|sa| sa.metadata.name.as_deref() == account
                && sa.metadata.namespace == job.metadata.namespace),
        "the Job runs as deploy/'s ServiceAccount"
    );
    let output = assert_provider_images(pod, container(&pod.containers, "provider-images"));
    let claim = volume(pod, &output)
        .persistent_volume_claim
        .as_ref()
        .expect("the Job writes a PersistentVolumeClaim");
    assert!(
        deploy.claims.iter().any(
            |c| c.metadata.name.as_deref() == Some(claim.claim_name.as_str())
                && c.metadata.namespace == job.metadata.namespace
        ),
        "the claim {} is in deploy/",
        claim.claim_name
    );
}

/// deploy/ names the operator as it ships (issue 9 item 1): its Deployment, namespace and
/// ServiceAccount, its existing images volume (no second one for the same ConfigMap), an output
/// the operator does not write itself, the cluster proxy injected into the initContainer, and the
/// Job, its claim and its ServiceAccount beside the operator.
#[test]
fn deploy_names_the_operator_as_it_ships() {
    let deploy = load();
    let deployment = &deploy.deployments[0];
    assert_eq!(
        deployment.metadata.name.as_deref(),
        Some(OPERATOR_DEPLOYMENT)
    );
    assert_eq!(
        deployment.metadata.namespace.as_deref(),
        Some(OPERATOR_NAMESPACE)
    );
    let injected = deployment
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("config.openshift.io/inject-proxy"))
        .expect("the cluster proxy is injected");
    let pod = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let mut named: Vec<&str> = injected.split(',').map(str::trim).collect();
    named.sort();
    assert_eq!(named, [OPERATOR_CONTAINER, "provider-images"]);
    // The CVO fails the Deployment if a container it is told to inject into does not exist.
    container(&pod.containers, OPERATOR_CONTAINER);
    container(
        pod.init_containers.as_deref().unwrap_or_default(),
        "provider-images",
    );
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some(OPERATOR_SERVICE_ACCOUNT)
    );

    let images = volume(pod, IMAGES_VOLUME);
    assert_eq!(
        images.config_map.as_ref().map(|c| c.name.as_str()),
        Some(IMAGES_CONFIG_MAP)
    );
    let volumes_of_the_config_map = pod
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.config_map.as_ref().map(|c| c.name.as_str()) == Some(IMAGES_CONFIG_MAP))
        .count();
    assert_eq!(volumes_of_the_config_map, 1, "no second images volume");
    let operator = container(&pod.containers, OPERATOR_CONTAINER);
    assert_eq!(
        mount(operator, IMAGES_MOUNT),
        (IMAGES_VOLUME.to_string(), true)
    );
    let init = container(
        pod.init_containers.as_deref().unwrap_or_default(),
        "provider-images",
    );
    assert_eq!(mount(init, IMAGES_MOUNT), (IMAGES_VOLUME.to_string(), true));
    let args = init.args.clone().unwrap();
    let images_json = format!("{IMAGES_MOUNT}/{IMAGES_KEY}");
    assert!(
        args.windows(2)
            .any(|pair| pair[0] == "--images-json" && pair[1] == images_json),
        "{args:?}"
    );
    for container in pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
    {
        assert!(
            container
                .volume_mounts
                .iter()
                .flatten()
                .all(|m| m.mount_path != OPERATOR_PULL_DIR),
            "{}: nothing mounted where the operator writes its own pulls",
            container.name
        );
    }

    let binding_subjects: BTreeSet<(String, String)> = deploy
        .cluster_role_bindings
        .iter()
        .flat_map(|b| b.subjects.iter().flatten())
        .chain(
            deploy
                .role_bindings
                .iter()
                .flat_map(|b| b.subjects.iter().flatten()),
        )
        .map(|s| (s.namespace.clone().unwrap_or_default(), s.name.clone()))
        .collect();
    assert!(binding_subjects.contains(&(
        OPERATOR_NAMESPACE.to_string(),
        OPERATOR_SERVICE_ACCOUNT.to_string()
    )));
    for (namespace, _) in &binding_subjects {
        assert_eq!(namespace, OPERATOR_NAMESPACE);
    }
    let job = &deploy.jobs[0];
    assert_eq!(job.metadata.namespace.as_deref(), Some(OPERATOR_NAMESPACE));
    for claim in &deploy.claims {
        assert_eq!(
            claim.metadata.namespace.as_deref(),
            Some(OPERATOR_NAMESPACE)
        );
    }
    for account in &deploy.service_accounts {
        assert_eq!(
            account.metadata.namespace.as_deref(),
            Some(OPERATOR_NAMESPACE)
        );
    }
}
