//! The mirror rules as the cluster states them: IDMS, ITMS and ICSP objects and `registrySources`.

use std::fmt;

/// The kinds of cluster object that carry mirror rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MirrorKind {
    ImageDigestMirrorSet,
    ImageTagMirrorSet,
    ImageContentSourcePolicy,
}

impl MirrorKind {
    /// Whether this kind's mirrors serve digest references (else tag references).
    pub(super) fn is_digest(self) -> bool {
        matches!(
            self,
            MirrorKind::ImageDigestMirrorSet | MirrorKind::ImageContentSourcePolicy
        )
    }
}

impl fmt::Display for MirrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MirrorKind::ImageDigestMirrorSet => "ImageDigestMirrorSet",
            MirrorKind::ImageTagMirrorSet => "ImageTagMirrorSet",
            MirrorKind::ImageContentSourcePolicy => "ImageContentSourcePolicy",
        })
    }
}

/// `mirrorSourcePolicy` of an IDMS or ITMS rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourcePolicy {
    AllowContactingSource,
    NeverContactSource,
}

/// One `imageDigestMirrors[]` / `imageTagMirrors[]` / `repositoryDigestMirrors[]` item.
#[derive(Debug, Clone)]
pub struct MirrorRule {
    pub source: String,
    pub mirrors: Vec<String>,
    /// `None` when unset, which means the source may be contacted. Ignored for ICSP, whose API
    /// has no policy: the node treats every ICSP rule as `AllowContactingSource`.
    pub policy: Option<SourcePolicy>,
}

/// One IDMS, ITMS or ICSP object.
#[derive(Debug, Clone)]
pub struct MirrorObject {
    pub kind: MirrorKind,
    pub name: String,
    pub rules: Vec<MirrorRule>,
}

/// `image.config.openshift.io/cluster` `spec.registrySources` scopes (`host`, `host:port`,
/// `host/path`, `*.domain`).
#[derive(Debug, Clone, Default)]
pub struct RegistrySources {
    pub allowed: Vec<String>,
    pub blocked: Vec<String>,
    pub insecure: Vec<String>,
}

impl RegistrySources {
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.allowed.is_empty() && self.blocked.is_empty() && self.insecure.is_empty()
    }
}
