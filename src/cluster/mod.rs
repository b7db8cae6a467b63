//! What the cluster says: mirror objects (IDMS, ITMS, ICSP), image.config/cluster, the CA ConfigMaps
//! and the pull secret, read once before any pull, from the API (kube) or from a directory of dumps.
//! Never talks to a registry.
//!
//! Missing optional things are not errors: a mirror kind whose CRD is not installed, an absent
//! ConfigMap, Image or Secret each count as empty and leave a note (logged as it happens). Anything
//! else the API refuses (RBAC, 5xx, timeouts) is an error, because pulling with half the mirror
//! configuration would contact registries the node would not.

mod api;
pub(crate) mod dump;
mod image_list;
pub(crate) mod objects;
pub(crate) mod pem;
mod proxy;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::plan::mirrors::{MirrorObject, RegistrySources};
use crate::policy::PolicyResource;
use crate::transport::proxy::Proxies;

pub use image_list::{
    DEFAULT_NAMESPACE, ImageList, ImageListContents, ImageListError, given_or_cluster,
};
pub use proxy::{ClusterProxy, ClusterProxyRead, ProxyOrigin, for_registries};

/// Where the cluster's configuration comes from.
#[derive(Debug, Clone)]
pub enum ClusterSource {
    /// The Kubernetes API. `None`: kube's defaults (KUBECONFIG or ~/.kube/config, then the
    /// in-cluster service account); `Some(path)`: exactly that kubeconfig file.
    Api { kubeconfig: Option<PathBuf> },
    /// `--cluster-dir`: YAML/JSON dumps read recursively.
    Dir(PathBuf),
    /// `--no-cluster`: no cluster reads at all.
    None,
}

/// Everything read from the cluster, in one value.
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    /// Every IDMS, ITMS and ICSP, sorted by (kind, name) so runs are deterministic whatever order
    /// the API or the directory walk produced.
    pub mirror_objects: Vec<MirrorObject>,
    pub registry_sources: RegistrySources,
    /// The ConfigMap name image.config's `spec.additionalTrustedCA.name` gives, if any.
    pub additional_trusted_ca: Option<String>,
    /// One per ConfigMap key holding at least one valid certificate, in the order
    /// trusted-ca-bundle, user-ca-bundle, the additionalTrustedCA map; keys sorted within each.
    pub ca_bundles: Vec<CaBundle>,
    pub pull_secret: Option<PullSecret>,
    /// The operator's image list, when [`Extras::image_list_namespace`] asked for it and a
    /// ConfigMap holds one.
    pub image_list: Option<ImageList>,
    /// `proxy.config.openshift.io/cluster`'s status, when [`Extras::cluster_proxy`] applied and
    /// the object exists.
    pub cluster_proxy: Option<ClusterProxy>,
    /// Every ClusterImagePolicy and the ImagePolicies read (from the API, those of the namespace
    /// asked for; from a dump, all of them: rendering keeps one namespace's), sorted by object.
    pub image_policies: Vec<PolicyResource>,
    /// What was skipped or missing and why (each also logged when it happened).
    pub notes: Vec<String>,
}

/// Reads beyond the mirrors, CAs and pull secret, made only when asked for.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// Read the operator's image list from this namespace.
    pub image_list_namespace: Option<String>,
    /// When to read the cluster's proxy object (never from a dump).
    pub cluster_proxy: ClusterProxyRead,
    /// Read the signature policy from the API: every ClusterImagePolicy and the ImagePolicies
    /// of this namespace (a dump's are always read).
    pub policy_namespace: Option<String>,
}

impl ClusterConfig {
    /// Records a note and logs it at info: an expected absence, not a problem.
    fn note(&mut self, text: String) {
        tracing::info!(note = %text, "cluster configuration");
        self.notes.push(text);
    }

    /// Records a note and logs it as a warning: the data was there but unusable.
    fn warn(&mut self, text: String) {
        tracing::warn!(note = %text, "cluster configuration");
        self.notes.push(text);
    }
}

/// The certificates of one ConfigMap key. `pem` holds only the blocks that parsed as certificates,
/// re-encoded, so the trust module never sees the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundle {
    pub namespace: String,
    pub config_map: String,
    pub key: String,
    pub pem: Vec<u8>,
}

impl CaBundle {
    /// The key read as a registry host: in the additionalTrustedCA map keys are `host[:port]`
    /// with `:` written `..` (ConfigMap keys cannot hold `:`). Meaningful only for that map.
    pub fn registry_host(&self) -> String {
        self.key.replace("..", ":")
    }
}

/// The cluster's pull secret, as `.dockerconfigjson` bytes (already checked to be a JSON object).
#[derive(Clone)]
pub struct PullSecret {
    /// "Secret openshift-config/pull-secret", or the dump file it came from.
    pub origin: String,
    pub dockerconfigjson: Vec<u8>,
}

impl fmt::Debug for PullSecret {
    // Credentials must never reach a log through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullSecret")
            .field("origin", &self.origin)
            .field(
                "dockerconfigjson",
                &format_args!("<redacted, {} bytes>", self.dockerconfigjson.len()),
            )
            .finish()
    }
}

#[derive(Debug, Error)]
pub enum ClusterError {
    /// Any API error other than a missing CRD or a missing optional object → exit 3.
    #[error("cluster API: {verb} {resource}: {cause}")]
    Api {
        verb: &'static str,
        resource: String,
        cause: String,
    },
    /// An unreadable or malformed `--cluster-dir` object → exit 2.
    #[error("cluster dump {}: {cause}", path.display())]
    Dump { path: PathBuf, cause: String },
    /// Kube client configuration (no kubeconfig, no in-cluster environment) → exit 3.
    #[error("cluster API client configuration: {0}")]
    Config(String),
}

impl crate::error::ExitStatus for ClusterError {
    fn exit_code(&self) -> u8 {
        match self {
            ClusterError::Api { .. } | ClusterError::Config(_) => 3,
            ClusterError::Dump { .. } => 2,
        }
    }
}

/// How long one API call may take before the read fails with "timed out".
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads the cluster's configuration once, from `source`, without a proxy.
pub async fn read(source: &ClusterSource) -> Result<ClusterConfig, ClusterError> {
    read_with(source, &Proxies::none(), DEFAULT_CALL_TIMEOUT).await
}

/// [`read`] with another bound on each API call (tests use a short one).
pub async fn read_with_timeout(
    source: &ClusterSource,
    call_timeout: Duration,
) -> Result<ClusterConfig, ClusterError> {
    read_with(source, &Proxies::none(), call_timeout).await
}

/// [`read`] through `proxies` (decided for the API server's URL, as for registries), with
/// `call_timeout` on each API call.
pub(crate) async fn read_with(
    source: &ClusterSource,
    proxies: &Proxies,
    call_timeout: Duration,
) -> Result<ClusterConfig, ClusterError> {
    read_with_extras(source, proxies, call_timeout, &Extras::default()).await
}

/// [`read_with`], plus the `extras` reads.
pub async fn read_with_extras(
    source: &ClusterSource,
    proxies: &Proxies,
    call_timeout: Duration,
    extras: &Extras,
) -> Result<ClusterConfig, ClusterError> {
    let mut config = match source {
        ClusterSource::Api { kubeconfig } => {
            api::read(kubeconfig.as_deref(), proxies, call_timeout, extras).await?
        }
        // Synchronous file I/O on an async worker: acceptable because this runs once, before
        // anything else is in flight, so there is nothing for it to hold up.
        ClusterSource::Dir(dir) => dump::read(dir, extras.image_list_namespace.as_deref())?,
        ClusterSource::None => {
            let mut config = ClusterConfig::default();
            config.note("cluster reads disabled (--no-cluster)".to_string());
            config
        }
    };
    // Once here for both readers: runs are deterministic whatever order the API or the directory
    // walk produced.
    config
        .mirror_objects
        .sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    config
        .image_policies
        .sort_by(|a, b| a.object.cmp(&b.object));
    tracing::info!(
        mirror_objects = config.mirror_objects.len(),
        ca_bundles = config.ca_bundles.len(),
        pull_secret = config.pull_secret.is_some(),
        image_list = config.image_list.as_ref().map(|list| list.origin.as_str()),
        cluster_proxy = config.cluster_proxy.is_some(),
        image_policies = config.image_policies.len(),
        "cluster configuration read"
    );
    Ok(config)
}

/// The fixed names this module reads.
pub(crate) mod names {
    pub(crate) const CONFIG_NAMESPACE: &str = "openshift-config";
    pub(crate) const MANAGED_NAMESPACE: &str = "openshift-config-managed";
    pub(crate) const TRUSTED_CA_BUNDLE: &str = "trusted-ca-bundle";
    pub(crate) const USER_CA_BUNDLE: &str = "user-ca-bundle";
    pub(crate) const PULL_SECRET: &str = "pull-secret";
    pub(crate) const IMAGE_CONFIG: &str = "cluster";
}

/// Note texts and object descriptions shared by the API and dump readers, so a note reads the
/// same whichever source produced it.
pub(crate) mod notes {
    use super::names::{CONFIG_NAMESPACE, PULL_SECRET};

    pub(crate) fn config_map(namespace: &str, name: &str) -> String {
        format!("ConfigMap {namespace}/{name}")
    }

    pub(crate) fn pull_secret() -> String {
        format!("Secret {CONFIG_NAMESPACE}/{PULL_SECRET}")
    }

    pub(crate) fn policy_crd_missing(resource: &str) -> String {
        format!(
            "{resource}: not served by the cluster (neither v1 nor v1alpha1; CRD not installed); \
             no signature policy from it"
        )
    }

    pub(crate) fn crd_missing(resource: &str) -> String {
        format!("{resource}: not served by the cluster (CRD not installed); skipped")
    }

    pub(crate) fn image_missing() -> String {
        "images.config.openshift.io/cluster: not found; no registry sources and no \
         additionalTrustedCA"
            .to_string()
    }

    pub(crate) fn config_map_missing(what: &str, named_by: Option<&str>) -> String {
        match named_by {
            Some(by) => format!("{what} (named by {by}): not found; no CAs from it"),
            None => format!("{what}: not found; no CAs from it"),
        }
    }

    pub(crate) fn pull_secret_missing(what: &str) -> String {
        format!("{what}: not found; no pull secret from the cluster")
    }
}
