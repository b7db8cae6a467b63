//! What the table answers: one pull source of a reference, where it came from, and why none could
//! be given.

use std::fmt;

use thiserror::Error;

use super::MirrorKind;
use crate::reference::{Reference, ReferenceErrorKind};

/// One physical reference to try, in the order [`MirrorTable::pull_sources`] returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PullSource {
    /// What to pull: registry and repository rewritten for a mirror, tag and digest kept.
    pub(crate) reference: Reference,
    pub(crate) origin: SourceOrigin,
    /// Why it must not be contacted, if it must not. A blocked source stays in the list (as on
    /// the node) so that a failed pull can say what was skipped and why.
    pub(crate) blocked: Option<String>,
    /// Why plain HTTP or unverified TLS is allowed for this source's own registry, if it is: its
    /// location (not its source's) is inside an insecure scope.
    pub(crate) insecure: Option<Insecure>,
}

impl PullSource {
    /// What the extract log says of a source it skips (see [`not_contacted`]).
    pub(crate) fn not_contacted(&self) -> Option<String> {
        self.blocked.as_deref().map(not_contacted)
    }
}

/// What `resolve` and the extract log say of a source they skip for `why`: the same words in both.
pub(crate) fn not_contacted(why: &str) -> String {
    format!("not contacted: {why}")
}

/// Why a pull source may be reached over plain HTTP or with TLS unverified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Insecure {
    /// Inside this `image.config` `registrySources.insecureRegistries` scope.
    Scope(String),
    /// Named by `--insecure-registry HOST[:PORT]`.
    Flag(String),
}

impl fmt::Display for Insecure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Insecure::Scope(scope) => write!(f, "image.config insecureRegistries {scope}"),
            Insecure::Flag(entry) => write!(f, "--insecure-registry {entry}"),
        }
    }
}

/// Where a [`PullSource`] comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceOrigin {
    Mirror {
        /// The matched rule source.
        source: String,
        /// The objects that listed this mirror for that source, sorted.
        objects: Vec<(MirrorKind, String)>,
    },
    Source {
        /// The matched rule source, `None` when no rule matched.
        matched: Option<String>,
    },
}

impl fmt::Display for PullSource {
    /// E.g. `mirror.local:5000/ocp4/openshift4@sha256:… (mirror of
    /// quay.io/openshift-release-dev/ocp-release via ImageDigestMirrorSet/release-mirrors)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (", self.reference)?;
        match &self.origin {
            SourceOrigin::Mirror { source, objects } => {
                write!(f, "mirror of {source} via {}", ObjectList(objects))?
            }
            SourceOrigin::Source { matched: Some(_) } => f.write_str("source")?,
            SourceOrigin::Source { matched: None } => f.write_str("source, no mirror rule")?,
        }
        if let Some(why) = &self.blocked {
            write!(f, ", blocked: {why}")?;
        }
        if self.insecure.is_some() {
            f.write_str(", insecure")?;
        }
        f.write_str(")")
    }
}

/// Why [`MirrorTable::pull_sources`] failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum MirrorError {
    /// Boxed: the details are many strings, and the `Ok` path should not pay for them.
    #[error(transparent)]
    InvalidRewrite(Box<InvalidRewrite>),
}

/// A rewrite onto a mirror that does not give a valid, canonical reference. The pull fails, as
/// on the node, rather than silently skipping the mirror: the rule is wrong and whoever owns it
/// has to be told which one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "{kind}/{name}: mirror rule {rule_source} → {mirror} rewrites {reference} to {rewritten:?}, \
     which is not a valid image reference: {cause}"
)]
pub(crate) struct InvalidRewrite {
    /// The object that listed the mirror (the first in sorted order, if several did).
    pub(crate) kind: MirrorKind,
    pub(crate) name: String,
    /// The rule source (not named `source`: thiserror would take it for the error chain).
    pub(crate) rule_source: String,
    pub(crate) mirror: String,
    /// The reference being resolved.
    pub(crate) reference: String,
    /// What the rewrite produced.
    pub(crate) rewritten: String,
    pub(crate) cause: RewriteError,
}

/// Why a rewritten reference is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum RewriteError {
    #[error("{0}")]
    Invalid(ReferenceErrorKind),
    /// It parses, but only by normalisation into something else (e.g. `mirror.local@sha256:…`
    /// becomes a Docker Hub image); the node's `ParseNamed` rejects that too.
    #[error("repository name must be canonical (it would be read as {0})")]
    NotCanonical(String),
}

/// `Kind/a, Kind/b` for owned names.
struct ObjectList<'a>(&'a [(MirrorKind, String)]);

impl fmt::Display for ObjectList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (kind, name)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{kind}/{name}")?;
        }
        Ok(())
    }
}
