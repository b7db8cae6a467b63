//! TEMPORARY: the data types and API of the mirrors module (the real module replaces this file).
use crate::reference::Reference;
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MirrorKind {
    ImageDigestMirrorSet,
    ImageTagMirrorSet,
    ImageContentSourcePolicy,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourcePolicy {
    AllowContactingSource,
    NeverContactSource,
}
#[derive(Debug, Clone)]
pub struct MirrorRule {
    pub source: String,
    pub mirrors: Vec<String>,
    pub policy: Option<SourcePolicy>,
}
#[derive(Debug, Clone)]
pub struct MirrorObject {
    pub kind: MirrorKind,
    pub name: String,
    pub rules: Vec<MirrorRule>,
}
#[derive(Debug, Clone, Default)]
pub struct RegistrySources {
    pub allowed: Vec<String>,
    pub blocked: Vec<String>,
    pub insecure: Vec<String>,
}
pub struct MirrorTable;
impl MirrorTable {
    pub fn new(objects: &[MirrorObject], registry_sources: &RegistrySources) -> MirrorTable {
        let _ = (objects, registry_sources);
        MirrorTable
    }
    pub fn warnings(&self) -> &[String] {
        &[]
    }
    pub fn is_empty(&self) -> bool {
        true
    }
    pub fn pull_sources(&self, reference: &Reference) -> Result<Vec<PullSource>, MirrorError> {
        Ok(vec![PullSource {
            reference: reference.clone(),
            origin: SourceOrigin::Source { matched: None },
            blocked: None,
            insecure: false,
        }])
    }
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSource {
    pub reference: Reference,
    pub origin: SourceOrigin,
    pub blocked: Option<String>,
    pub insecure: bool,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceOrigin {
    Mirror {
        source: String,
        objects: Vec<(MirrorKind, String)>,
    },
    Source {
        matched: Option<String>,
    },
}
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("x")]
    X,
}
