//! TEMPORARY: the API of the cluster module (the real module replaces this file).
use crate::mirrors::{MirrorObject, RegistrySources};
pub enum ClusterSource {
    Api {
        kubeconfig: Option<std::path::PathBuf>,
    },
    Dir(std::path::PathBuf),
    None,
}
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    pub mirror_objects: Vec<MirrorObject>,
    pub registry_sources: RegistrySources,
    pub additional_trusted_ca: Option<String>,
    pub ca_bundles: Vec<CaBundle>,
    pub pull_secret: Option<PullSecret>,
    pub notes: Vec<String>,
}
#[derive(Debug, Clone)]
pub struct CaBundle {
    pub namespace: String,
    pub config_map: String,
    pub key: String,
    pub pem: Vec<u8>,
}
#[derive(Clone)]
pub struct PullSecret {
    pub origin: String,
    pub dockerconfigjson: Vec<u8>,
}
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster API: {verb} {resource}: {cause}")]
    Api {
        verb: &'static str,
        resource: String,
        cause: String,
    },
    #[error("{path}: {cause}")]
    Dump {
        path: std::path::PathBuf,
        cause: String,
    },
    #[error("{0}")]
    Config(String),
}
pub async fn read(source: &ClusterSource) -> Result<ClusterConfig, ClusterError> {
    match source {
        ClusterSource::None => Ok(ClusterConfig::default()),
        _ => Err(ClusterError::Config("not yet".into())),
    }
}
impl std::fmt::Debug for PullSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PullSecret({})", self.origin)
    }
}
