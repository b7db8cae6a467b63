//! Assembles a run from what the cluster says and what the flags say: the root store, the keychain, the
//! mirror table, the transport, the registry client and the planner. Flags win over the cluster where both
//! speak (`--pull-secret`), and add to it otherwise (`--ca-file`, `--insecure-registry`). The proxies
//! come from the flags and the environment (see [`crate::transport::proxy`]), decided before the cluster is read.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::cluster::ClusterConfig;
use crate::plan::Planner;
use crate::plan::keychain::{Keychain, KeychainError};
use crate::plan::mirrors::MirrorTable;
use crate::policy::RenderedPolicy;
use crate::registry::RegistryClient;
use crate::registry::auth::Authenticator;
use crate::transport::proxy::Proxies;
use crate::transport::retry::RetryPolicy;
use crate::transport::trust::{Roots, TrustError};
use crate::transport::{Transport, TransportConfig, TransportError};

/// The flags that shape a run's parts.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    pub(crate) pull_secret: Option<PathBuf>,
    pub(crate) ca_files: Vec<PathBuf>,
    pub(crate) insecure_registries: Vec<String>,
    pub(crate) proxies: Arc<Proxies>,
    /// How registry requests are retried, and the run's deadline.
    pub(crate) retry: RetryPolicy,
    /// The namespace whose ImagePolicies apply (the pod's, as CRI-O picks the policy); `None`
    /// when the cluster was not read, so the signature policy is unknown.
    pub(crate) policy_namespace: Option<String>,
}

#[derive(Debug, Error)]
pub(crate) enum SetupError {
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("cannot read pull secret {path}: {source}")]
    ReadPullSecret {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    PullSecret(#[from] KeychainError),
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Where trust came from, for the log and `resolve`.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustReport {
    /// (origin, certificates added), in the order loaded.
    pub(crate) loaded: Vec<(String, usize)>,
    /// Bundles that held no certificate (origin), skipped.
    pub(crate) skipped: Vec<String>,
    /// Where this trust is wider than the node's, said once each.
    pub(crate) departures: Vec<String>,
}

pub(crate) struct Setup {
    pub(crate) client: Arc<RegistryClient>,
    pub(crate) planner: Arc<Planner>,
    pub(crate) trust: TrustReport,
    /// Where the credentials came from, if anywhere.
    pub(crate) pull_secret: Option<String>,
    /// Which proxy each registry is reached through.
    pub(crate) proxies: Arc<Proxies>,
    /// The signature policy as the node renders it for the namespace; `None`: unknown (no cluster read).
    pub(crate) policy: Option<Arc<RenderedPolicy>>,
}

pub(crate) fn assemble(settings: &Settings, cluster: &ClusterConfig) -> Result<Setup, SetupError> {
    let mut roots = Roots::default();
    let mut trust = TrustReport::default();
    for bundle in &cluster.ca_bundles {
        let origin = format!(
            "ConfigMap {}/{} key {}",
            bundle.namespace, bundle.config_map, bundle.key
        );
        // A cluster bundle with bad blocks keeps its good ones; one with none is skipped, not fatal.
        match roots.add_pem(&origin, &bundle.pem) {
            Ok(0) | Err(_) => {
                tracing::warn!(configmap = %bundle.config_map, namespace = %bundle.namespace, key = %bundle.key, "ConfigMap key holds no valid PEM certificate; skipped");
                trust.skipped.push(origin);
            }
            Ok(count) => trust.loaded.push((origin, count)),
        }
    }
    if let Some(name) = &cluster.additional_trusted_ca
        && cluster.ca_bundles.iter().any(|b| &b.config_map == name)
    {
        // The mission's choice, as the operator's own code does: one pool.
        trust.departures.push(format!(
            "the node trusts each key of ConfigMap openshift-config/{name} (additionalTrustedCA) for \
             the registry the key names only; here its CAs join one pool trusted for every registry"
        ));
    }
    for path in &settings.ca_files {
        let before = roots.extra_count();
        roots.add_file(path)?;
        trust.loaded.push((
            format!("--ca-file {}", path.display()),
            roots.extra_count() - before,
        ));
    }
    let (keychain, pull_secret) = match (&settings.pull_secret, &cluster.pull_secret) {
        (Some(path), _) => {
            let bytes = std::fs::read(path).map_err(|source| SetupError::ReadPullSecret {
                path: path.clone(),
                source,
            })?;
            let origin = format!("--pull-secret {}", path.display());
            (Keychain::parse(&bytes, &origin)?, Some(origin))
        }
        (None, Some(secret)) => (
            Keychain::parse(&secret.dockerconfigjson, &secret.origin)?,
            Some(secret.origin.clone()),
        ),
        (None, None) => (Keychain::default(), None),
    };
    tracing::info!(
        extra_cas = roots.extra_count(),
        pull_secret = pull_secret.as_deref().unwrap_or("none"),
        pull_secret_entries = keychain.len(),
        mirror_objects = cluster.mirror_objects.len(),
        proxies = %settings.proxies.describe(),
        "configuration"
    );
    let table = MirrorTable::new(&cluster.mirror_objects, &cluster.registry_sources)
        .with_insecure_registries(&settings.insecure_registries);
    for warning in table.warnings() {
        tracing::warn!(%warning, "mirror configuration");
    }
    let transport = Transport::new(TransportConfig {
        roots,
        connect_timeout: Duration::from_secs(30),
        response_timeout: settings.retry.headers,
        proxies: settings.proxies.clone(),
    })?;
    let keychain = Arc::new(keychain);
    let client = RegistryClient::new(
        Arc::new(transport),
        Arc::new(Authenticator::new(keychain.clone())),
    )
    .with_retry(settings.retry);
    let policy = settings.policy_namespace.as_deref().map(|namespace| {
        let rendered = RenderedPolicy::render(
            &cluster.image_policies,
            namespace,
            &cluster.registry_sources,
        );
        for dropped in &rendered.dropped {
            tracing::warn!(object = %dropped.object, scope = %dropped.scope, covered_by = %dropped.covered_by, "ImagePolicy scope ignored: a ClusterImagePolicy scope covers it (the MCO marks it Pending)");
        }
        Arc::new(rendered)
    });
    Ok(Setup {
        policy,
        client: Arc::new(client),
        planner: Arc::new(Planner::new(table, keychain)),
        trust,
        pull_secret,
        proxies: settings.proxies.clone(),
    })
}

/// Usage errors (a malformed pull secret or CA file, found before any pull): exit 2.
impl crate::error::ExitStatus for SetupError {
    fn exit_code(&self) -> u8 {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::CaBundle;

    #[test]
    fn cluster_bundles_without_certificates_are_skipped_and_reported() {
        let cluster = ClusterConfig {
            ca_bundles: vec![CaBundle {
                namespace: "openshift-config".into(),
                config_map: "registry-cas".into(),
                key: "mirror..5000".into(),
                pem: b"not a certificate".to_vec(),
            }],
            ..ClusterConfig::default()
        };
        let setup = assemble(&Settings::default(), &cluster).unwrap();
        assert_eq!(
            setup.trust.skipped,
            ["ConfigMap openshift-config/registry-cas key mirror..5000"]
        );
        assert!(setup.trust.loaded.is_empty());
        assert_eq!(setup.pull_secret, None);
    }
}
