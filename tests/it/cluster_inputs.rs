//! Inputs read from the cluster beside the mirrors, CAs and pull secret (issue 15 items 2 and 3):
//! the cluster proxy (`proxy.config.openshift.io/cluster`, only in-cluster and never from a dump
//! or through a kubeconfig) and the operator's image list (ConfigMap
//! `cluster-capi-operator-images` key `images.json`, else `capi-installer-images`, in
//! `--namespace`), through the fake API server and from `--cluster-dir` dumps.
//!
//! kube builds its in-cluster configuration from fixed paths under
//! `/var/run/secrets/kubernetes.io/serviceaccount/` (the CA and the namespace file), so an
//! in-cluster run cannot be faked on loopback: the in-cluster decision is unit-tested in
//! `src/cluster/proxy.rs`, and the proxy read itself is tested here with
//! `ClusterProxyRead::Always` against the test API server.

use std::path::Path;

use crate::common::{self, ApiRequest, ApiServer, Fault, Run, RunOutput};
use provider_images::cluster::{
    self, ClusterConfig, ClusterError, ClusterProxy, ClusterProxyRead, ClusterSource, Extras,
    ImageListContents,
};
use provider_images::transport::proxy::Proxies;
use serde_json::{Value, json};

const NAMESPACE: &str = "openshift-cluster-api-operator";
const AWS: &str = "quay.io/openshift/capi-aws:v1";
const GCP: &str = "quay.io/openshift/capi-gcp:v1";

fn config_map(namespace: &str, name: &str, data: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data
    })
}

fn images_config_map(namespace: &str, images: Value) -> Value {
    config_map(
        namespace,
        "cluster-capi-operator-images",
        json!({"images.json": images.to_string()}),
    )
}

fn installer_config_map(namespace: &str, refs: Value) -> Value {
    config_map(namespace, "capi-installer-images", refs)
}

fn proxy_object() -> Value {
    json!({
        "apiVersion": "config.openshift.io/v1", "kind": "Proxy",
        "metadata": {"name": "cluster"},
        "spec": {"httpsProxy": "http://proxy.lab:3128"},
        "status": {
            "httpProxy": "http://user:secret@proxy.lab:3128",
            "httpsProxy": "http://user:secret@proxy.lab:3128",
            "noProxy": ".cluster.local,.svc"
        }
    })
}

fn read_api(api: &ApiServer, extras: &Extras) -> Result<ClusterConfig, ClusterError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(cluster::read_with_extras(
        &ClusterSource::Api {
            kubeconfig: Some(api.kubeconfig()),
        },
        &Proxies::none(),
        cluster::DEFAULT_CALL_TIMEOUT,
        extras,
    ))
}

fn proxy_reads(api: &ApiServer) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.resource == "proxies")
        .count()
}

fn config_map_reads(api: &ApiServer) -> Vec<ApiRequest> {
    api.sorted_requests()
        .into_iter()
        .filter(|r| {
            r.resource == "configmaps"
                && matches!(
                    r.name.as_deref(),
                    Some("cluster-capi-operator-images" | "capi-installer-images")
                )
        })
        .collect()
}

fn get_config_map(namespace: &str, name: &str) -> ApiRequest {
    ApiRequest::new("get", "", "v1", "configmaps", Some(namespace), Some(name))
}

/// `provider-images resolve` through the API server's kubeconfig, with `args`.
fn resolve_api(api: &ApiServer, args: &[&str]) -> RunOutput {
    Run::new()
        .arg("resolve")
        .args(args)
        .env("KUBECONFIG", api.kubeconfig())
        .run()
}

/// The refs and names `resolve` printed: its lines `REF  (name, name)`.
fn resolved(run: &RunOutput) -> Vec<String> {
    run.stdout
        .lines()
        .filter(|line| line.starts_with("quay.io/"))
        .map(str::to_string)
        .collect()
}

fn proxy_from(run: &RunOutput) -> &str {
    run.stdout
        .lines()
        .find_map(|line| line.strip_prefix("proxy from: "))
        .unwrap_or_else(|| panic!("no 'proxy from' line\n{run}"))
}

fn write(dir: &Path, name: &str, object: &Value) {
    std::fs::write(
        dir.join(name),
        serde_yaml_ng::to_string(object).expect("YAML"),
    )
    .unwrap();
}

// ---------------------------------------------------------------------------------------------
// The cluster proxy (issue 15 item 2)

/// Issue 15 item 2: the Proxy object's status (not its spec) is what is read; a missing object or
/// CRD means no proxy, with a note; the credentials in it never show.
#[test]
fn api_cluster_proxy_is_its_status_and_absent_means_none() {
    let always = Extras {
        cluster_proxy: ClusterProxyRead::Always,
        ..Extras::default()
    };
    let api = ApiServer::start();
    api.serve_openshift();
    api.put(proxy_object());
    let config = read_api(&api, &always).unwrap();
    let proxy = config.cluster_proxy.expect("the proxy object was read");
    assert_eq!(
        proxy,
        ClusterProxy {
            http_proxy: Some("http://user:secret@proxy.lab:3128".into()),
            https_proxy: Some("http://user:secret@proxy.lab:3128".into()),
            no_proxy: Some(".cluster.local,.svc".into()),
        }
    );
    assert!(!format!("{proxy:?}").contains("secret"));
    assert!(api.requests().contains(&ApiRequest::new(
        "get",
        "config.openshift.io",
        "v1",
        "proxies",
        None,
        Some("cluster")
    )));

    // The object absent, then the CRD not installed: no proxy, not an error.
    let api = ApiServer::start();
    api.serve_openshift();
    let config = read_api(&api, &always).unwrap();
    assert_eq!(config.cluster_proxy, None);
    assert!(
        config
            .notes
            .iter()
            .any(|n| n == "proxies.config.openshift.io/cluster: not found; no cluster proxy"),
        "{:?}",
        config.notes
    );
    let api = ApiServer::start();
    let config = read_api(&api, &always).unwrap();
    assert_eq!(config.cluster_proxy, None);
    assert_eq!(proxy_reads(&api), 1);
}

/// Issue 15 item 2: a kubeconfig client is not in-cluster, so `InCluster` (what the binary asks
/// for) never reads the object; the binary through a kubeconfig neither, and `resolve` says where
/// the proxy came from.
#[test]
fn through_a_kubeconfig_the_cluster_proxy_is_never_read() {
    let api = ApiServer::start();
    api.serve_openshift();
    api.put(proxy_object());
    let in_cluster = Extras {
        cluster_proxy: ClusterProxyRead::InCluster,
        ..Extras::default()
    };
    let config = read_api(&api, &in_cluster).unwrap();
    assert_eq!(config.cluster_proxy, None);
    assert_eq!(proxy_reads(&api), 0);

    let run = resolve_api(&api, &[AWS]);
    run.assert_code(0);
    assert_eq!(proxy_reads(&api), 0, "{run}");
    assert!(proxy_from(&run).starts_with("none given"), "{run}");
    assert!(run.stdout.contains("proxy: none (direct)"), "{run}");

    let run = Run::new()
        .args(["resolve", AWS, "--format", "json"])
        .env("KUBECONFIG", api.kubeconfig())
        .env("HTTPS_PROXY", "http://env-proxy.lab:8080")
        .run();
    run.assert_code(0);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        report["proxyFrom"],
        "the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY)"
    );
    assert_eq!(proxy_reads(&api), 0);
}

/// Issue 15 items 2 and 3 ("the dump path reads both ConfigMaps but never the proxy"): a dump
/// holding a Proxy object gives no proxy; its images ConfigMaps give the list, the first one
/// winning over the second.
#[test]
fn dump_gives_the_image_list_but_never_the_proxy() {
    let dump = tempfile::tempdir().unwrap();
    write(dump.path(), "proxy.yaml", &proxy_object());
    write(
        dump.path(),
        "installer.yaml",
        &installer_config_map(NAMESPACE, json!({"aws": AWS, "gcp": GCP})),
    );
    // The same ConfigMap in another namespace is not the operator's.
    write(
        dump.path(),
        "elsewhere.yaml",
        &images_config_map("default", json!({"other": "quay.io/x/y:v1"})),
    );
    let resolve = |dir: &Path| Run::new().args(["resolve", "--cluster-dir"]).arg(dir).run();
    let run = resolve(dump.path());
    run.assert_code(0);
    assert_eq!(
        resolved(&run),
        [format!("{AWS}  (aws)"), format!("{GCP}  (gcp)")]
    );
    assert!(proxy_from(&run).starts_with("none given"), "{run}");
    assert!(!run.stdout.contains("proxy.lab"), "{run}");
    assert!(
        run.stdout.contains(
            "note: ConfigMap openshift-cluster-api-operator/cluster-capi-operator-images: not \
             found; trying ConfigMap openshift-cluster-api-operator/capi-installer-images"
        ),
        "{run}"
    );

    write(
        dump.path(),
        "images.yaml",
        &images_config_map(NAMESPACE, json!({"aws-cluster-api-controllers": AWS})),
    );
    let run = resolve(dump.path());
    run.assert_code(0);
    assert_eq!(
        resolved(&run),
        [format!("{AWS}  (aws-cluster-api-controllers)")]
    );

    // The library says the same: which ConfigMap, no proxy even when asked for always.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = runtime
        .block_on(cluster::read_with_extras(
            &ClusterSource::Dir(dump.path().to_path_buf()),
            &Proxies::none(),
            cluster::DEFAULT_CALL_TIMEOUT,
            &Extras {
                image_list_namespace: Some(NAMESPACE.into()),
                cluster_proxy: ClusterProxyRead::Always,
                ..Extras::default()
            },
        ))
        .unwrap();
    assert_eq!(config.cluster_proxy, None);
    let list = config.image_list.unwrap();
    assert!(
        list.origin.starts_with(
            "ConfigMap openshift-cluster-api-operator/cluster-capi-operator-images key images.json (in "
        ),
        "{}",
        list.origin
    );
    assert!(matches!(list.contents, ImageListContents::ImagesJson(_)));
}

// ---------------------------------------------------------------------------------------------
// The image list (issue 15 item 3)

/// Issue 15 item 3: without --images-json or references, `resolve` reads key images.json of
/// cluster-capi-operator-images in openshift-cluster-api-operator (not the kubeconfig context's
/// namespace, `default` here), and only that ConfigMap when it exists.
#[test]
fn api_image_list_from_cluster_capi_operator_images() {
    let api = ApiServer::start();
    api.serve_openshift();
    api.put(images_config_map(
        NAMESPACE,
        json!({"aws-cluster-api-controllers": AWS, "aws-again": AWS, "gcp": GCP}),
    ));
    api.put(images_config_map(
        "default",
        json!({"wrong": "quay.io/x/y:v1"}),
    ));
    api.put(installer_config_map(
        NAMESPACE,
        json!({"never": "quay.io/x/z:v1"}),
    ));
    let run = resolve_api(&api, &[]);
    run.assert_code(0);
    assert_eq!(
        resolved(&run),
        [
            format!("{AWS}  (aws-again, aws-cluster-api-controllers)"),
            format!("{GCP}  (gcp)")
        ]
    );
    assert_eq!(
        config_map_reads(&api),
        [get_config_map(NAMESPACE, "cluster-capi-operator-images")]
    );
}

/// Issue 15 item 3: that ConfigMap absent, capi-installer-images in the same namespace, keys
/// being component names and values references; `--namespace` chooses the namespace.
#[test]
fn api_image_list_falls_back_to_capi_installer_images_in_the_namespace_given() {
    let api = ApiServer::start();
    api.serve_openshift();
    api.put(installer_config_map(NAMESPACE, json!({"aws": AWS})));
    api.put(installer_config_map("elsewhere", json!({"gcp": GCP})));
    let run = resolve_api(&api, &[]);
    run.assert_code(0);
    assert_eq!(resolved(&run), [format!("{AWS}  (aws)")]);
    assert_eq!(
        config_map_reads(&api),
        [
            get_config_map(NAMESPACE, "capi-installer-images"),
            get_config_map(NAMESPACE, "cluster-capi-operator-images"),
        ]
    );

    let run = resolve_api(&api, &["--namespace", "elsewhere"]);
    run.assert_code(0);
    assert_eq!(resolved(&run), [format!("{GCP}  (gcp)")]);

    // A list given on the command line: no ConfigMap is read.
    let api = ApiServer::start();
    api.serve_openshift();
    resolve_api(&api, &[GCP]).assert_code(0);
    assert_eq!(config_map_reads(&api), []);
}

/// Issue 15 item 3: no list anywhere is exit 2 naming the ways to give one; a bad list names
/// the ConfigMap (exit 2), a refused read names it too (exit 3, design: exit codes).
#[test]
fn image_list_errors_name_the_config_map_and_no_list_is_exit_2() {
    let api = ApiServer::start();
    api.serve_openshift();
    let run = resolve_api(&api, &[]);
    run.assert_code(2);
    for text in [
        "no image list",
        "ConfigMap openshift-cluster-api-operator/cluster-capi-operator-images",
        "ConfigMap openshift-cluster-api-operator/capi-installer-images",
        "--images-json",
        "--namespace",
    ] {
        assert!(run.stderr.contains(text), "{text}\n{run}");
    }
    let out = tempfile::tempdir().unwrap();
    let run = Run::new()
        .args(["extract", "--no-cluster", "--output"])
        .arg(out.path())
        .run();
    run.assert_code(2);
    assert!(run.stderr.contains("--no-cluster"), "{run}");
    assert!(run.stderr.contains("--images-json"), "{run}");

    api.put(installer_config_map(
        NAMESPACE,
        json!({"aws": "quay.io/Upper/x:v1"}),
    ));
    let run = resolve_api(&api, &[]);
    run.assert_code(2);
    assert!(
        run.stderr.contains(
            r#"ConfigMap openshift-cluster-api-operator/capi-installer-images: entry \"aws\""#
        ),
        "{run}"
    );

    api.put(images_config_map(NAMESPACE, json!(["not", "an", "object"])));
    let run = resolve_api(&api, &[]);
    run.assert_code(2);
    assert!(
        run.stderr.contains(
            "ConfigMap openshift-cluster-api-operator/cluster-capi-operator-images key images.json: expected"
        ),
        "{run}"
    );

    api.put(config_map(
        NAMESPACE,
        "cluster-capi-operator-images",
        json!({"other": "x"}),
    ));
    let run = resolve_api(&api, &[]);
    run.assert_code(3);
    assert!(
        run.stderr.contains(
            "get ConfigMap openshift-cluster-api-operator/cluster-capi-operator-images: \
             malformed object: no key images.json"
        ),
        "{run}"
    );

    api.fail(
        "/api/v1/namespaces/openshift-cluster-api-operator/configmaps/cluster-capi-operator-images",
        Fault::Forbidden,
    );
    let out = tempfile::tempdir().unwrap();
    let run = Run::new()
        .args(["extract", "--output"])
        .arg(out.path())
        .env("KUBECONFIG", api.kubeconfig())
        .run();
    run.assert_code(3);
    assert!(
        run.stderr.contains(
            "get ConfigMap openshift-cluster-api-operator/cluster-capi-operator-images: HTTP 403"
        ),
        "{run}"
    );
}

/// Issue 15 item 3: `extract` without --images-json publishes the cluster's list (here an empty
/// capi-installer-images from a dump: nothing to pull, an index with no images).
#[test]
fn extract_publishes_the_cluster_list() {
    let dump = tempfile::tempdir().unwrap();
    write(
        dump.path(),
        "installer.yaml",
        &installer_config_map(NAMESPACE, json!({})),
    );
    let out = tempfile::tempdir().unwrap();
    let run = Run::new()
        .args(["extract", "--cluster-dir"])
        .arg(dump.path())
        .arg("--output")
        .arg(out.path().join("tree"))
        .run();
    run.assert_code(0);
    let index = common::read_index(&out.path().join("tree"));
    assert_eq!(index["images"], json!([]), "{index:#}");
}

/// Issue 15 item 3: `--images-json DIR` reads a ConfigMap volume as the kubelet mounts it.
#[test]
fn images_json_directory_is_a_mounted_config_map() {
    let volume = tempfile::tempdir().unwrap();
    let data = volume.path().join("..2025_01_01_00_00_00.000000001");
    std::fs::create_dir(&data).unwrap();
    for (key, value) in [("aws", AWS), ("gcp", GCP)] {
        std::fs::write(data.join(key), value).unwrap();
        std::os::unix::fs::symlink(format!("..data/{key}"), volume.path().join(key)).unwrap();
    }
    std::os::unix::fs::symlink(data.file_name().unwrap(), volume.path().join("..data")).unwrap();
    let run = Run::new()
        .args(["resolve", "--no-cluster", "--images-json"])
        .arg(volume.path())
        .run();
    run.assert_code(0);
    assert_eq!(
        resolved(&run),
        [format!("{AWS}  (aws)"), format!("{GCP}  (gcp)")]
    );
}
