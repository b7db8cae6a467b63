//! The cluster-wide proxy, `proxy.config.openshift.io/cluster`. Its status holds what the
//! cluster-version operator injects as HTTP_PROXY, HTTPS_PROXY and NO_PROXY into the pods it
//! manages. A Job it does not manage gets nothing injected, so, only when running in-cluster and
//! with no proxy flag or variable at all, the object is read instead and used for registries (the
//! API server connection stays as it was decided). Never from a dump or through a kubeconfig: a
//! laptop is not behind the cluster's proxy.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::objects::ObjectError;
use crate::transport::proxy::{Proxies, ProxyConfigError, ProxyFlags};

/// How errors and notes name the object, as kubectl names a resource.
pub(crate) const PROXY_OBJECT: &str = "proxies.config.openshift.io/cluster";

/// When the cluster's proxy object is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClusterProxyRead {
    #[default]
    Never,
    /// Only when the API client is kube's in-cluster one (the pod's ServiceAccount), not a
    /// kubeconfig's: what the binary asks for when no proxy flag or variable is set.
    InCluster,
    /// Whatever the client, for a caller that knows it runs in the cluster's network.
    Always,
}

impl ClusterProxyRead {
    /// Whether to read it, given whether the API client is the in-cluster one.
    pub fn applies(self, in_cluster: bool) -> bool {
        match self {
            ClusterProxyRead::Never => false,
            ClusterProxyRead::InCluster => in_cluster,
            ClusterProxyRead::Always => true,
        }
    }
}

/// The object's `status.{httpProxy,httpsProxy,noProxy}`, as written (empty counts as unset).
/// Proxy URLs may carry credentials, so `Debug` shows only which fields are set.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClusterProxy {
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: Option<String>,
}

impl fmt::Debug for ClusterProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |field: &Option<String>| if field.is_some() { "set" } else { "unset" };
        f.debug_struct("ClusterProxy")
            .field("http_proxy", &set(&self.http_proxy))
            .field("https_proxy", &set(&self.https_proxy))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl ClusterProxy {
    /// The proxies for registries, parsed as the variables the CVO would inject from this status
    /// are (warnings as for the environment).
    pub fn proxies(&self) -> Result<(Proxies, Vec<String>), ProxyConfigError> {
        Proxies::configure(&ProxyFlags::default(), |name| match name {
            "HTTP_PROXY" => self.http_proxy.clone(),
            "HTTPS_PROXY" => self.https_proxy.clone(),
            "NO_PROXY" => self.no_proxy.clone(),
            _ => None,
        })
    }
}

#[derive(Deserialize)]
struct ProxyObject {
    status: Option<ProxyStatus>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ProxyStatus {
    http_proxy: Option<String>,
    https_proxy: Option<String>,
    no_proxy: Option<String>,
}

/// The proxy object → its status fields; a field of the wrong type is an error.
pub(crate) fn cluster_proxy(object: &Value) -> Result<ClusterProxy, ObjectError> {
    let object = ProxyObject::deserialize(object)?;
    let status = object.status.unwrap_or_default();
    let set = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
    Ok(ClusterProxy {
        http_proxy: set(status.http_proxy),
        https_proxy: set(status.https_proxy),
        no_proxy: set(status.no_proxy),
    })
}

/// The registries' proxies: from the cluster's proxy object when it was read, else those `given`
/// (from `origin`); and where they came from. The API server connection keeps `given`.
pub fn for_registries(
    cluster_proxy: Option<&ClusterProxy>,
    given: Arc<Proxies>,
    origin: ProxyOrigin,
) -> Result<(Arc<Proxies>, ProxyOrigin), ProxyConfigError> {
    let Some(cluster_proxy) = cluster_proxy else {
        return Ok((given, origin));
    };
    let (proxies, warnings) = cluster_proxy.proxies()?;
    for warning in warnings {
        tracing::warn!(%warning, "cluster proxy ({PROXY_OBJECT} status)");
    }
    Ok((Arc::new(proxies), ProxyOrigin::Cluster))
}

/// Where the registries' proxy comes from, as `resolve` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyOrigin {
    Flags,
    Environment,
    Cluster,
    Nowhere,
}

impl ProxyOrigin {
    /// From the flags and the environment alone (`env` reads a variable): any proxy flag or
    /// non-empty proxy variable, even NO_PROXY alone, means the run's proxies are given.
    pub(crate) fn given(flags: &ProxyFlags, env: impl Fn(&str) -> Option<String>) -> ProxyOrigin {
        const VARIABLES: [&str; 6] = [
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "NO_PROXY",
            "no_proxy",
        ];
        if flags.proxy.is_some() || flags.no_proxy.is_some() {
            ProxyOrigin::Flags
        } else if VARIABLES
            .iter()
            .any(|name| env(name).is_some_and(|v| !v.trim().is_empty()))
        {
            ProxyOrigin::Environment
        } else {
            ProxyOrigin::Nowhere
        }
    }

    /// When the cluster's proxy object is read: only if nothing else gave one.
    pub fn cluster_read(self) -> ClusterProxyRead {
        match self {
            ProxyOrigin::Nowhere => ClusterProxyRead::InCluster,
            _ => ClusterProxyRead::Never,
        }
    }
}

impl fmt::Display for ProxyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyOrigin::Flags => "--proxy/--no-proxy",
            ProxyOrigin::Environment => "the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY)",
            ProxyOrigin::Cluster => {
                "proxy.config.openshift.io/cluster status (in-cluster, no proxy flag or variable set)"
            }
            ProxyOrigin::Nowhere => {
                "none given (no proxy flag or variable; the cluster's proxy object is read only \
                 in-cluster)"
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    /// Issue 15 item 2: the object is read only in-cluster and only with no proxy flag or
    /// variable; a kubeconfig client never reads it.
    #[test]
    fn the_cluster_proxy_is_read_in_cluster_only_when_no_proxy_is_given() {
        let none = ProxyFlags::default();
        let decide = |flags: &ProxyFlags, vars, in_cluster| {
            ProxyOrigin::given(flags, env(vars))
                .cluster_read()
                .applies(in_cluster)
        };
        assert!(decide(&none, &[], true));
        assert!(!decide(&none, &[], false), "a kubeconfig: never");
        assert!(
            decide(&none, &[("HTTPS_PROXY", " ")], true),
            "empty is unset"
        );
        for var in [
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "NO_PROXY",
            "no_proxy",
        ] {
            let vars: &'static [(&'static str, &'static str)] = match var {
                "HTTPS_PROXY" => &[("HTTPS_PROXY", "http://p:3128")],
                "https_proxy" => &[("https_proxy", "http://p:3128")],
                "HTTP_PROXY" => &[("HTTP_PROXY", "http://p:3128")],
                "http_proxy" => &[("http_proxy", "http://p:3128")],
                "NO_PROXY" => &[("NO_PROXY", ".svc")],
                _ => &[("no_proxy", ".svc")],
            };
            assert_eq!(
                ProxyOrigin::given(&none, env(vars)),
                ProxyOrigin::Environment
            );
            assert!(!decide(&none, vars, true), "{var}");
        }
        let flag = ProxyFlags {
            proxy: Some("http://p:3128".into()),
            no_proxy: None,
        };
        assert_eq!(ProxyOrigin::given(&flag, env(&[])), ProxyOrigin::Flags);
        assert!(!decide(&flag, &[], true));
        let no_proxy_flag = ProxyFlags {
            proxy: None,
            no_proxy: Some("".into()),
        };
        assert!(!decide(&no_proxy_flag, &[], true), "--no-proxy alone");
        assert!(ClusterProxyRead::Always.applies(false));
        assert!(!ClusterProxyRead::Never.applies(true));
    }

    /// Issue 15 item 2: the status is what the CVO would inject, and is used as those variables.
    #[test]
    fn the_status_is_used_as_the_injected_variables() {
        let object = json!({
            "apiVersion": "config.openshift.io/v1", "kind": "Proxy",
            "metadata": {"name": "cluster"},
            "spec": {"httpsProxy": "http://spec-only:1"},
            "status": {
                "httpProxy": "http://user:secret@proxy.lab:3128",
                "httpsProxy": "http://user:secret@proxy.lab:3128",
                "noProxy": ".cluster.local,.svc,mirror.lab:5000"
            }
        });
        let proxy = cluster_proxy(&object).unwrap();
        let debug = format!("{proxy:?}");
        assert!(!debug.contains("secret"), "{debug}");
        let (proxies, warnings) = proxy.proxies().unwrap();
        assert!(warnings.is_empty());
        assert_eq!(
            proxies.for_registry("quay.io").map(ToString::to_string),
            Some("http://proxy.lab:3128".into())
        );
        assert_eq!(proxies.for_registry("mirror.lab:5000"), None);

        // No status (the spec is not what is in effect), or empty fields: no proxy.
        let unset = cluster_proxy(&json!({"metadata": {"name": "cluster"},
            "spec": {"httpsProxy": "http://spec-only:1"}, "status": {"httpsProxy": ""}}))
        .unwrap();
        assert_eq!(unset, ClusterProxy::default());
        assert!(unset.proxies().unwrap().0.is_empty());

        assert!(cluster_proxy(&json!({"status": {"httpsProxy": 3}})).is_err());
    }
}
