//! Mirror configuration data types (IDMS, ITMS, ICSP and image.config's registry sources).

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
