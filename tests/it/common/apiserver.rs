//! A fake Kubernetes API server speaking the wire format the real one does, for reads through the
//! real kube client: JSON lists and objects, `Status` bodies for errors, and the plain-text
//! `404 page not found` for resources nobody serves (a CRD that is not installed). It runs on
//! the harness' `HttpsServer` with the test PKI, checks a bearer token, writes a kubeconfig
//! pointing at itself, and records every request it serves (for exact-request and RBAC checks).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;

use super::pki::Pki;
use super::server::{HttpsServer, Request, Response};

/// The bearer token the written kubeconfig carries and the server expects.
pub const API_TOKEN: &str = "test-service-account-token";
/// Who the server says is asking, in Forbidden messages (as the real one names the caller).
const CALLER: &str = "system:serviceaccount:openshift-cluster-api:provider-images";

/// One request as the API server's authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiRequest {
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// "" for the core group.
    pub group: String,
    pub version: String,
    /// The plural resource (`configmaps`); for a path that is no resource, the path itself.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl ApiRequest {
    /// Shorthand for expected requests: `ApiRequest::new("get", "", "v1", "configmaps",
    /// Some("openshift-config"), Some("user-ca-bundle"))`.
    pub fn new(
        verb: &str,
        group: &str,
        version: &str,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Self {
        ApiRequest {
            verb: verb.into(),
            group: group.into(),
            version: version.into(),
            resource: resource.into(),
            namespace: namespace.map(Into::into),
            name: name.map(Into::into),
        }
    }
}

/// A scripted failure for one path.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 403 with a Forbidden Status, as RBAC answers.
    Forbidden,
    /// 500 with an InternalError Status.
    Internal,
    /// Answers normally, after this long (for client timeouts).
    Delay(Duration),
}

/// A resource the server serves (a built-in, or a CRD that is "installed").
#[derive(Debug, Clone)]
struct Served {
    group: String,
    version: String,
    plural: String,
    kind: String,
    namespaced: bool,
}

#[derive(Default)]
struct State {
    served: Vec<Served>,
    /// (group, version, plural, namespace or "", name) → object.
    objects: BTreeMap<(String, String, String, String, String), Value>,
    faults: BTreeMap<String, Fault>,
    requests: Vec<ApiRequest>,
}

impl State {
    fn served(&self, group: &str, version: &str, plural: &str) -> Option<&Served> {
        self.served
            .iter()
            .find(|s| s.group == group && s.version == version && s.plural == plural)
    }
}

pub struct ApiServer {
    state: Arc<Mutex<State>>,
    server: HttpsServer,
    pki: Pki,
    dir: TempDir,
}

impl ApiServer {
    /// A server with the core `configmaps` and `secrets` and nothing else: no CRDs, no objects.
    pub fn start() -> Self {
        let pki = Pki::new();
        let state = Arc::new(Mutex::new(State::default()));
        let handler_state = state.clone();
        let server = HttpsServer::start(&pki, move |request| handle(&handler_state, request));
        let api = ApiServer {
            state,
            server,
            pki,
            dir: tempfile::Builder::new()
                .prefix("apiserver-")
                .tempdir()
                .expect("temp dir for kubeconfig"),
        };
        api.serve("", "v1", "configmaps", "ConfigMap", true);
        api.serve("", "v1", "secrets", "Secret", true);
        api
    }

    /// Starts serving a resource, as installing its CRD would.
    pub fn serve(&self, group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) {
        self.state.lock().unwrap().served.push(Served {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            kind: kind.into(),
            namespaced,
        });
    }

    /// Installs the OpenShift CRDs the cluster module reads: IDMS, ITMS, ICSP, Image and Proxy
    /// (the signature-policy kinds: [`ApiServer::serve_image_policies`]).
    pub fn serve_openshift(&self) {
        self.serve_idms();
        self.serve_itms();
        self.serve_icsp();
        self.serve_image();
        self.serve_proxy();
    }

    /// ClusterImagePolicy and ImagePolicy at `version`: `v1` (4.20+) or `v1alpha1` (4.16–4.19).
    pub fn serve_image_policies(&self, version: &str) {
        self.serve(
            "config.openshift.io",
            version,
            "clusterimagepolicies",
            "ClusterImagePolicy",
            false,
        );
        self.serve(
            "config.openshift.io",
            version,
            "imagepolicies",
            "ImagePolicy",
            true,
        );
    }

    pub fn serve_idms(&self) {
        self.serve(
            "config.openshift.io",
            "v1",
            "imagedigestmirrorsets",
            "ImageDigestMirrorSet",
            false,
        );
    }

    pub fn serve_itms(&self) {
        self.serve(
            "config.openshift.io",
            "v1",
            "imagetagmirrorsets",
            "ImageTagMirrorSet",
            false,
        );
    }

    pub fn serve_icsp(&self) {
        self.serve(
            "operator.openshift.io",
            "v1alpha1",
            "imagecontentsourcepolicies",
            "ImageContentSourcePolicy",
            false,
        );
    }

    pub fn serve_image(&self) {
        self.serve("config.openshift.io", "v1", "images", "Image", false);
    }

    pub fn serve_proxy(&self) {
        self.serve("config.openshift.io", "v1", "proxies", "Proxy", false);
    }

    /// Stores an object; its apiVersion and kind must name a served resource.
    pub fn put(&self, object: Value) {
        let api_version = object["apiVersion"].as_str().expect("object apiVersion");
        let kind = object["kind"].as_str().expect("object kind");
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let mut state = self.state.lock().unwrap();
        let served = state
            .served
            .iter()
            .find(|s| s.group == group && s.version == version && s.kind == kind)
            .unwrap_or_else(|| panic!("{api_version} {kind} is not served; serve() it first"))
            .clone();
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or("");
        assert_eq!(
            served.namespaced,
            !namespace.is_empty(),
            "{kind} namespace {namespace:?}"
        );
        let name = object["metadata"]["name"].as_str().expect("metadata.name");
        let key = (
            served.group,
            served.version,
            served.plural,
            namespace.to_string(),
            name.to_string(),
        );
        state.objects.insert(key, object);
    }

    /// Fails every request to `path` (no query string) with `fault`.
    pub fn fail(&self, path: &str, fault: Fault) {
        self.state
            .lock()
            .unwrap()
            .faults
            .insert(path.to_string(), fault);
    }

    /// Every request served so far, in arrival order.
    pub fn requests(&self) -> Vec<ApiRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Every request served so far, sorted (for comparing with an expected set when the client
    /// sends requests concurrently).
    pub fn sorted_requests(&self) -> Vec<ApiRequest> {
        let mut requests = self.requests();
        requests.sort();
        requests
    }

    /// A kubeconfig for this server: its URL, the test CA, the expected bearer token.
    pub fn kubeconfig(&self) -> PathBuf {
        self.kubeconfig_with_token(API_TOKEN)
    }

    /// A kubeconfig carrying another token (for 401 tests).
    pub fn kubeconfig_with_token(&self, token: &str) -> PathBuf {
        self.write_kubeconfig(token, &self.pki.ca_pem())
    }

    /// A kubeconfig trusting another CA than the server's (for certificate-verification tests).
    pub fn kubeconfig_trusting(&self, ca_pem: &Path) -> PathBuf {
        self.write_kubeconfig(API_TOKEN, ca_pem)
    }

    /// A kubeconfig naming the server `https://<name>:<port>`, e.g. a name only the test proxy
    /// resolves.
    pub fn kubeconfig_named(&self, name: &str) -> PathBuf {
        let url = format!("https://{name}:{}", self.server.addr().port());
        self.write_kubeconfig_for(&url, API_TOKEN, &self.pki.ca_pem())
    }

    fn write_kubeconfig(&self, token: &str, ca_pem: &Path) -> PathBuf {
        self.write_kubeconfig_for(&self.server.url(""), token, ca_pem)
    }

    fn write_kubeconfig_for(&self, server: &str, token: &str, ca_pem: &Path) -> PathBuf {
        let n = std::fs::read_dir(self.dir.path())
            .map(|d| d.count())
            .unwrap_or(0);
        let path = self.dir.path().join(format!("kubeconfig-{n}"));
        let config = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: test
  user:
    token: {token}
contexts:
- name: test
  context:
    cluster: test
    user: test
    namespace: default
current-context: test
",
            ca = ca_pem.display(),
        );
        std::fs::write(&path, config).expect("write kubeconfig");
        path
    }
}

/// A parsed API path: group, version, resource plural, namespace, name.
struct Target {
    group: String,
    version: String,
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (resource, name) = match rest {
        [resource] => (*resource, None),
        [resource, name] => (*resource, Some(name.to_string())),
        _ => return None,
    };
    Some(Target {
        group: group.into(),
        version: version.into(),
        resource: resource.into(),
        namespace,
        name,
    })
}

fn verb(method: &str, named: bool, query: &str) -> &'static str {
    let watch = query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    match (method, named) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

fn handle(state: &Mutex<State>, request: &Request) -> Response {
    let (path, query) = request
        .path_and_query
        .split_once('?')
        .unwrap_or((request.path_and_query.as_str(), ""));
    let target = parse_path(path);
    let verb = verb(
        &request.method,
        target.as_ref().is_some_and(|t| t.name.is_some()),
        query,
    );
    let recorded = match &target {
        Some(t) => ApiRequest {
            verb: verb.into(),
            group: t.group.clone(),
            version: t.version.clone(),
            resource: t.resource.clone(),
            namespace: t.namespace.clone(),
            name: t.name.clone(),
        },
        None => ApiRequest {
            verb: verb.into(),
            resource: path.into(),
            ..ApiRequest::new("", "", "", "", None, None)
        },
    };
    let fault = {
        let mut state = state.lock().unwrap();
        state.requests.push(recorded);
        state.faults.get(path).cloned()
    };

    if request.header("authorization") != Some(&format!("Bearer {API_TOKEN}")) {
        return status(401, "Unauthorized", "Unauthorized", None);
    }
    let Some(target) = target else {
        return page_not_found();
    };
    match fault {
        Some(Fault::Forbidden) => return forbidden(&target, verb),
        Some(Fault::Internal) => {
            return status(
                500,
                "InternalError",
                "Internal error occurred: etcdserver: request timed out",
                None,
            );
        }
        Some(Fault::Delay(delay)) => std::thread::sleep(delay),
        None => {}
    }

    let state = state.lock().unwrap();
    // Nothing serves an unknown group/version/resource: the apiserver's mux answers, not an
    // API handler, hence plain text rather than a Status.
    let Some(served) = state.served(&target.group, &target.version, &target.resource) else {
        return page_not_found();
    };
    if served.namespaced != target.namespace.is_some() && target.name.is_some() {
        return page_not_found();
    }
    if verb != "get" && verb != "list" {
        return status(
            405,
            "MethodNotAllowed",
            &format!("the server does not allow this method on the requested resource ({verb})"),
            None,
        );
    }
    let api_version = if served.group.is_empty() {
        served.version.clone()
    } else {
        format!("{}/{}", served.group, served.version)
    };
    let in_resource = |key: &(String, String, String, String, String)| {
        key.0 == served.group && key.1 == served.version && key.2 == served.plural
    };
    let namespace = target.namespace.clone().unwrap_or_default();
    match &target.name {
        None => {
            let items: Vec<Value> = state
                .objects
                .iter()
                .filter(|(k, _)| in_resource(k) && (namespace.is_empty() || k.3 == namespace))
                .map(|(_, v)| v.clone())
                .collect();
            Response::json(
                200,
                &json!({
                    "kind": format!("{}List", served.kind),
                    "apiVersion": api_version,
                    "metadata": {"resourceVersion": "1"},
                    "items": items,
                }),
            )
        }
        Some(name) => {
            let key = (
                served.group.clone(),
                served.version.clone(),
                served.plural.clone(),
                namespace,
                name.clone(),
            );
            match state.objects.get(&key) {
                Some(object) => Response::json(200, object),
                None => {
                    let qualified = qualified(&served.plural, &served.group);
                    status(
                        404,
                        "NotFound",
                        &format!("{qualified} \"{name}\" not found"),
                        Some(json!({"name": name, "group": served.group, "kind": served.plural})),
                    )
                }
            }
        }
    }
}

/// `configmaps` for the core group, `images.config.openshift.io` otherwise, as the apiserver
/// writes a resource in messages.
fn qualified(plural: &str, group: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

fn forbidden(target: &Target, verb: &str) -> Response {
    let qualified = qualified(&target.resource, &target.group);
    let subject = match &target.name {
        Some(name) => format!("{qualified} \"{name}\""),
        None => qualified,
    };
    let scope = match &target.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    status(
        403,
        "Forbidden",
        &format!(
            "{subject} is forbidden: User \"{CALLER}\" cannot {verb} resource \"{}\" in API \
             group \"{}\" {scope}",
            target.resource, target.group
        ),
        Some(json!({"group": target.group, "kind": target.resource})),
    )
}

fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Response {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(details) = details {
        body["details"] = details;
    }
    Response::json(code, &body)
}

fn page_not_found() -> Response {
    Response::new(404)
        .header("content-type", "text/plain; charset=utf-8")
        .header("x-content-type-options", "nosniff")
        .body("404 page not found\n")
}
