//! Reading the cluster through the Kubernetes API (kube, rustls with ring).
//!
//! Only `list` on the three mirror kinds and `get` on named objects: a ServiceAccount can then be
//! granted exactly these (with `resourceNames` on the ConfigMaps and the Secret), and nothing
//! here ever watches or writes.
//!
//! The API server is reached through the same proxy rules as registries: kube on its own would
//! take `HTTPS_PROXY` for kubeconfig clusters without honouring `NO_PROXY` for the server, and no
//! proxy at all in-cluster, so the decision is ours, made for the API server's URL.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use http::Uri;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::Value;

use super::image_list::{self, IMAGES_CONFIG_MAP, INSTALLER_CONFIG_MAP};
use super::names::{
    CONFIG_NAMESPACE, IMAGE_CONFIG, MANAGED_NAMESPACE, PULL_SECRET, TRUSTED_CA_BUNDLE,
    USER_CA_BUNDLE,
};
use super::objects::{self, MIRROR_KINDS, ObjectError, mirror_resource};
use super::proxy::{self as cluster_proxy, PROXY_OBJECT};
use super::{ClusterConfig, ClusterError, Extras, notes};
use crate::error::error_chain;
use crate::plan::mirrors::MirrorKind;
use crate::transport::proxy::Proxies;

/// Error bodies can be whole HTML pages from a proxy; the message keeps their start.
const MAX_CAUSE_CHARS: usize = 300;

pub(super) async fn read(
    kubeconfig: Option<&Path>,
    proxies: &Proxies,
    call_timeout: Duration,
    extras: &Extras,
) -> Result<ClusterConfig, ClusterError> {
    let (client, in_cluster) = client(kubeconfig, proxies).await?;
    let reader = Reader {
        client,
        call_timeout,
    };
    let configmaps = ApiResource::erase::<ConfigMap>(&());
    let secrets = ApiResource::erase::<Secret>(&());
    let image = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("config.openshift.io", "v1", "Image"),
        "images",
    );

    // Independent reads go out together; only the additionalTrustedCA map waits for the Image.
    let [idms, itms, icsp] = MIRROR_KINDS.map(|kind| reader.list(kind));
    let (idms, itms, icsp, image, trusted, user, secret) = tokio::join!(
        idms,
        itms,
        icsp,
        reader.get(
            &image,
            None,
            IMAGE_CONFIG,
            "images.config.openshift.io/cluster".into()
        ),
        reader.get(
            &configmaps,
            Some(MANAGED_NAMESPACE),
            TRUSTED_CA_BUNDLE,
            notes::config_map(MANAGED_NAMESPACE, TRUSTED_CA_BUNDLE),
        ),
        reader.get(
            &configmaps,
            Some(CONFIG_NAMESPACE),
            USER_CA_BUNDLE,
            notes::config_map(CONFIG_NAMESPACE, USER_CA_BUNDLE),
        ),
        reader.get(
            &secrets,
            Some(CONFIG_NAMESPACE),
            PULL_SECRET,
            notes::pull_secret()
        ),
    );
    // Errors are taken in this fixed order, so the same failures always report the same
    // resource whatever order the responses came in.
    let mirror_lists = [
        (MirrorKind::ImageDigestMirrorSet, idms?),
        (MirrorKind::ImageTagMirrorSet, itms?),
        (MirrorKind::ImageContentSourcePolicy, icsp?),
    ];
    let (image, trusted, user, secret) = (image?, trusted?, user?, secret?);

    let mut config = ClusterConfig::default();
    for (kind, items) in mirror_lists {
        let Some(items) = items else {
            config.note(notes::crd_missing(&list_resource(kind)));
            continue;
        };
        for item in &items {
            let object = objects::mirror_object(kind, item)
                .map_err(|cause| malformed("list", list_resource(kind), cause))?;
            config.mirror_objects.push(object);
        }
    }
    match &image {
        Some(object) => {
            let (additional, sources) = objects::image_config(object).map_err(|cause| {
                malformed("get", "images.config.openshift.io/cluster".into(), cause)
            })?;
            config.additional_trusted_ca = additional;
            config.registry_sources = sources;
        }
        None => config.note(notes::image_missing()),
    }

    add_ca_bundles(
        &mut config,
        MANAGED_NAMESPACE,
        TRUSTED_CA_BUNDLE,
        trusted.as_ref(),
        None,
    )?;
    add_ca_bundles(
        &mut config,
        CONFIG_NAMESPACE,
        USER_CA_BUNDLE,
        user.as_ref(),
        None,
    )?;
    if let Some(name) = config.additional_trusted_ca.clone() {
        // Naming user-ca-bundle is allowed; it was read already, and reading it twice would
        // only duplicate its certificates.
        if name != USER_CA_BUNDLE {
            let what = notes::config_map(CONFIG_NAMESPACE, &name);
            let object = reader
                .get(&configmaps, Some(CONFIG_NAMESPACE), &name, what)
                .await?;
            add_ca_bundles(
                &mut config,
                CONFIG_NAMESPACE,
                &name,
                object.as_ref(),
                Some("image.config additionalTrustedCA"),
            )?;
        }
    }

    match &secret {
        Some(object) => {
            let origin = notes::pull_secret();
            config.pull_secret = objects::pull_secret(&origin, object, &mut config)
                .map_err(|cause| malformed("get", origin.clone(), cause))?;
        }
        None => config.note(notes::pull_secret_missing(&notes::pull_secret())),
    }
    read_extras(&reader, in_cluster, extras, &mut config).await?;
    Ok(config)
}

/// The image list and the cluster proxy, when `extras` asks for them.
async fn read_extras(
    reader: &Reader,
    in_cluster: bool,
    extras: &Extras,
    config: &mut ClusterConfig,
) -> Result<(), ClusterError> {
    if extras.cluster_proxy.applies(in_cluster) {
        let proxy = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("config.openshift.io", "v1", "Proxy"),
            "proxies",
        );
        // A missing object or CRD is a cluster without a proxy.
        match reader
            .get(&proxy, None, "cluster", PROXY_OBJECT.into())
            .await?
        {
            Some(object) => {
                config.cluster_proxy = Some(
                    cluster_proxy::cluster_proxy(&object)
                        .map_err(|cause| malformed("get", PROXY_OBJECT.into(), cause))?,
                );
            }
            None => config.note(format!("{PROXY_OBJECT}: not found; no cluster proxy")),
        }
    }
    if let Some(namespace) = extras.policy_namespace.as_deref() {
        read_policies(reader, namespace, config).await?;
    }
    let Some(namespace) = extras.image_list_namespace.as_deref() else {
        return Ok(());
    };
    let configmaps = ApiResource::erase::<ConfigMap>(&());
    for name in [IMAGES_CONFIG_MAP, INSTALLER_CONFIG_MAP] {
        let what = notes::config_map(namespace, name);
        if let Some(object) = reader
            .get(&configmaps, Some(namespace), name, what.clone())
            .await?
        {
            let list = image_list::from_config_map(namespace, name, &object, "")
                .map_err(|cause| malformed("get", what, cause))?;
            config.image_list = Some(list);
            return Ok(());
        }
        config.note(match name {
            IMAGES_CONFIG_MAP => image_list::first_missing(namespace),
            _ => image_list::both_missing(namespace),
        });
    }
    Ok(())
}

/// The signature policy (signature-policy §1): every ClusterImagePolicy and the ImagePolicies of
/// `namespace` (the pod's: CRI-O applies that namespace's policy), each from
/// `config.openshift.io/v1`, else `v1alpha1` (4.16–4.19) when v1 is not served.
async fn read_policies(
    reader: &Reader,
    namespace: &str,
    config: &mut ClusterConfig,
) -> Result<(), ClusterError> {
    let (cluster_wide, namespaced) = tokio::join!(
        reader.list_policies(POLICY_KINDS[0], None),
        reader.list_policies(POLICY_KINDS[1], Some(namespace)),
    );
    // Taken in a fixed order, as the other reads' errors are.
    for (kind, read) in [
        (POLICY_KINDS[0], cluster_wide?),
        (POLICY_KINDS[1], namespaced?),
    ] {
        let (kind_name, plural, cluster) = kind;
        let (what, items) = match read {
            Some(found) => found,
            None => {
                config.note(notes::policy_crd_missing(&policy_resource(
                    plural, None, namespace, cluster,
                )));
                continue;
            }
        };
        for item in &items {
            let policy = objects::image_policy(cluster, item).map_err(|cause| {
                let name = item["metadata"]["name"].as_str().unwrap_or("");
                ClusterError::Api {
                    verb: "list",
                    resource: what.clone(),
                    cause: format!("malformed object: {kind_name} {name}: {cause}"),
                }
            })?;
            config.image_policies.push(policy);
        }
    }
    Ok(())
}

/// (kind, plural, cluster-scoped) of ClusterImagePolicy and ImagePolicy.
const POLICY_KINDS: [(&str, &str, bool); 2] = [
    ("ClusterImagePolicy", "clusterimagepolicies", true),
    ("ImagePolicy", "imagepolicies", false),
];

/// `clusterimagepolicies.config.openshift.io`, or with the version when it is not v1
/// (`….v1alpha1.config.openshift.io`, kubectl's fully qualified form), plus the namespace.
fn policy_resource(plural: &str, version: Option<&str>, namespace: &str, cluster: bool) -> String {
    let qualified = match version {
        Some(version) => format!("{plural}.{version}.config.openshift.io"),
        None => format!("{plural}.config.openshift.io"),
    };
    if cluster {
        qualified
    } else {
        format!("{qualified} in namespace {namespace}")
    }
}

fn add_ca_bundles(
    config: &mut ClusterConfig,
    namespace: &str,
    name: &str,
    object: Option<&Value>,
    named_by: Option<&str>,
) -> Result<(), ClusterError> {
    let what = notes::config_map(namespace, name);
    let Some(object) = object else {
        config.note(notes::config_map_missing(&what, named_by));
        return Ok(());
    };
    let bundles = objects::ca_bundles(namespace, name, object, config)
        .map_err(|cause| malformed("get", what, cause))?;
    config.ca_bundles.extend(bundles);
    Ok(())
}

/// A client from the given kubeconfig, or from kube's own search (KUBECONFIG, ~/.kube/config,
/// then the in-cluster service account), and whether it is the in-cluster one.
async fn client(
    kubeconfig: Option<&Path>,
    proxies: &Proxies,
) -> Result<(Client, bool), ClusterError> {
    let mut in_cluster = false;
    let mut config = match kubeconfig {
        // Config::infer's search, done here to know which one it found.
        None => {
            let mut config = match Config::from_kubeconfig(&KubeConfigOptions::default()).await {
                Ok(config) => config,
                Err(kubeconfig_error) => {
                    let config = Config::incluster().map_err(|in_cluster_error| {
                        ClusterError::Config(format!(
                            "no kubeconfig ({}) and not in a cluster ({})",
                            error_chain(&kubeconfig_error),
                            error_chain(&in_cluster_error)
                        ))
                    })?;
                    in_cluster = true;
                    config
                }
            };
            config.apply_debug_overrides();
            config
        }
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|e| {
                ClusterError::Config(format!(
                    "kubeconfig {}: {}",
                    path.display(),
                    error_chain(&e)
                ))
            })?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| {
                    ClusterError::Config(format!(
                        "kubeconfig {}: {}",
                        path.display(),
                        error_chain(&e)
                    ))
                })?
        }
    };
    let environment = ["HTTPS_PROXY", "https_proxy"]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()));
    config.proxy_url = api_proxy(
        config.proxy_url.as_ref(),
        environment.as_deref(),
        proxies,
        &config.cluster_url,
    );
    match &config.proxy_url {
        // Shown without credentials: the URL may carry some.
        Some(proxy) => tracing::info!(
            server = %config.cluster_url,
            proxy = %format_args!("{}://{}", proxy.scheme_str().unwrap_or("http"), proxy.host().unwrap_or("")),
            "cluster API through a proxy"
        ),
        None => tracing::debug!(server = %config.cluster_url, "cluster API direct"),
    }
    let client = Client::try_from(config).map_err(|e| ClusterError::Config(error_chain(&e)))?;
    Ok((client, in_cluster))
}

/// The proxy for the API server at `server`. kube has filled in `loaded` from the kubeconfig
/// cluster's `proxy-url`, or else from `HTTPS_PROXY`/`https_proxy` (`environment`). A `proxy-url`
/// is that cluster's own setting and is kept (as kubectl keeps it); one taken from the environment
/// is replaced by our decision, which also honours `NO_PROXY`, loopback and the flags.
fn api_proxy(
    loaded: Option<&Uri>,
    environment: Option<&str>,
    proxies: &Proxies,
    server: &Uri,
) -> Option<Uri> {
    let from_environment = environment.and_then(|value| value.parse::<Uri>().ok());
    match loaded {
        Some(uri) if from_environment.as_ref() != Some(uri) => Some(uri.clone()),
        _ => proxies
            .for_uri(server)
            .map(|proxy| proxy.uri_with_credentials()),
    }
}

struct Reader {
    client: Client,
    call_timeout: Duration,
}

impl Reader {
    /// Every object of a mirror kind; `None` when the cluster does not serve the kind at all.
    async fn list(&self, kind: MirrorKind) -> Result<Option<Vec<Value>>, ClusterError> {
        let (group, version, kind_name, plural) = mirror_resource(kind);
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, kind_name),
            plural,
        );
        self.list_of(&resource, None, list_resource(kind)).await
    }

    /// Every object of `resource` (in `namespace`, if given); `None` when nothing serves it.
    async fn list_of(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        what: String,
    ) -> Result<Option<Vec<Value>>, ClusterError> {
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
            None => Api::all_with(self.client.clone(), resource),
        };
        // An unpaginated list: these objects are few, and one response is one consistent view.
        let result = self
            .bounded("list", what.clone(), api.list(&ListParams::default()))
            .await?;
        // A 404 on a collection means nothing serves that path: the CRD is not installed
        // (apiservers answer with a plain-text "404 page not found", not a Status).
        let Some(list) = not_found_as_none("list", what.clone(), result)? else {
            return Ok(None);
        };
        let items = list
            .items
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| malformed("list", what, e.into()))?;
        Ok(Some(items))
    }

    /// The objects of one policy kind and the resource they were read as; `None` when neither
    /// v1 nor v1alpha1 is served.
    async fn list_policies(
        &self,
        (kind, plural, cluster): (&str, &str, bool),
        namespace: Option<&str>,
    ) -> Result<Option<(String, Vec<Value>)>, ClusterError> {
        for version in ["v1", "v1alpha1"] {
            let resource = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("config.openshift.io", version, kind),
                plural,
            );
            let named_version = (version != "v1").then_some(version);
            let what = policy_resource(plural, named_version, namespace.unwrap_or(""), cluster);
            if let Some(items) = self.list_of(&resource, namespace, what.clone()).await? {
                return Ok(Some((what, items)));
            }
        }
        Ok(None)
    }

    /// One named object; `None` when it (or, for the Image, its CRD) does not exist.
    async fn get(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        what: String,
    ) -> Result<Option<Value>, ClusterError> {
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
            None => Api::all_with(self.client.clone(), resource),
        };
        let result = self.bounded("get", what.clone(), api.get(name)).await?;
        match not_found_as_none("get", what.clone(), result)? {
            Some(object) => serde_json::to_value(&object)
                .map(Some)
                .map_err(|e| malformed("get", what, e.into())),
            None => Ok(None),
        }
    }

    /// Bounds one call: a hung apiserver must not hold the run until the global --timeout.
    async fn bounded<T>(
        &self,
        verb: &'static str,
        resource: String,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, ClusterError> {
        tokio::time::timeout(self.call_timeout, call)
            .await
            .map_err(|_| {
                tracing::debug!(verb, %resource, timeout = ?self.call_timeout, "cluster API call timed out");
                ClusterError::Api {
                    verb,
                    resource,
                    cause: "timed out".to_string(),
                }
            })
    }
}

/// `Ok(None)` for a 404, the error for anything else.
fn not_found_as_none<T>(
    verb: &'static str,
    resource: String,
    result: Result<T, kube::Error>,
) -> Result<Option<T>, ClusterError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(error) => Err(ClusterError::Api {
            verb,
            resource,
            cause: cause(&error),
        }),
    }
}

/// A readable cause: the HTTP code, the Status reason and message for API errors; the error
/// chain (TLS, connection, auth plugin) otherwise.
fn cause(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            let message: String = status
                .message
                .trim()
                .chars()
                .take(MAX_CAUSE_CHARS)
                .collect();
            // kube fills in this reason itself when the body was not a Status (a proxy's page).
            if status.reason.is_empty() || status.reason == "Failed to parse error data" {
                format!("HTTP {}: {message}", status.code)
            } else {
                format!("HTTP {} {}: {message}", status.code, status.reason)
            }
        }
        other => error_chain(other),
    }
}

fn malformed(verb: &'static str, resource: String, cause: ObjectError) -> ClusterError {
    ClusterError::Api {
        verb,
        resource,
        cause: format!("malformed object: {cause}"),
    }
}

/// `imagedigestmirrorsets.config.openshift.io`, as kubectl names a resource.
fn list_resource(kind: MirrorKind) -> String {
    let (group, _, _, plural) = mirror_resource(kind);
    format!("{plural}.{group}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::proxy::ProxyFlags;

    fn proxies(proxy: &str, no_proxy: &str) -> Proxies {
        let flags = ProxyFlags {
            proxy: Some(proxy.into()),
            no_proxy: Some(no_proxy.into()),
        };
        Proxies::configure(&flags, |_| None).unwrap().0
    }

    #[test]
    fn the_api_server_url_decides_its_proxy() {
        let proxies = proxies("http://user:pw@proxy:3128", ".svc,172.30.0.0/16");
        let server = |s: &str| s.parse::<Uri>().unwrap();
        let decide = |loaded: Option<&str>, env: Option<&str>, url: &str| {
            let loaded = loaded.map(server);
            api_proxy(loaded.as_ref(), env, &proxies, &server(url)).map(|u| u.to_string())
        };
        assert_eq!(
            decide(None, None, "https://api.lab.example.com:6443"),
            Some("http://user:pw@proxy:3128/".into())
        );
        // In-cluster: the service address is in NO_PROXY.
        assert_eq!(decide(None, None, "https://172.30.0.1:443"), None);
        assert_eq!(decide(None, None, "https://kubernetes.default.svc"), None);
        assert_eq!(decide(None, None, "https://127.0.0.1:6443"), None);
        // kube took HTTPS_PROXY: replaced by our decision, which honours NO_PROXY.
        assert_eq!(
            decide(
                Some("http://env-proxy:8080"),
                Some("http://env-proxy:8080"),
                "https://api.svc:6443"
            ),
            None
        );
        // The kubeconfig's own proxy-url is kept.
        assert_eq!(
            decide(
                Some("http://kubeconfig-proxy:3128"),
                Some("http://env-proxy:8080"),
                "https://172.30.0.1:443"
            ),
            Some("http://kubeconfig-proxy:3128/".into())
        );
    }
}
