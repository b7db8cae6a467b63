//! The plan for one reference: the ordered pull sources (mirrors, then the source), each with the registry
//! host to contact and the pull-secret entry that would answer for it. Nothing is contacted here:
//! `mirrors` (the node's rules) and `keychain` (the pull secret) do no I/O.

use std::sync::Arc;

use crate::reference::Reference;
use crate::transport::Insecure;
use mirrors::{MirrorError, MirrorTable, PullSource};

pub(crate) mod keychain;
pub mod mirrors;

use keychain::Keychain;

/// Where to pull from: the registry host actually contacted and the repository there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Source {
    pub(crate) registry: String,
    pub(crate) repository: String,
    /// This pull source may use plain http or unverified TLS, on its own registry only.
    pub(crate) insecure: bool,
}

impl Source {
    /// How requests to this source's registry may skip verification.
    pub(crate) fn insecurity(&self) -> Insecure<'_> {
        Insecure::registry(&self.registry, self.insecure)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

pub(crate) struct Planner {
    table: MirrorTable,
    keychain: Arc<Keychain>,
}

/// One pull source with what is needed to contact it.
#[derive(Debug, Clone)]
pub(crate) struct PlannedSource {
    pub(crate) pull: PullSource,
    /// The registry host actually contacted and the repository there.
    pub(crate) source: Source,
    /// The key of the pull-secret entry used for it, if any, as written there; with why the entry
    /// gives no credential when it gives none (`resolve` shows it).
    pub(crate) credential: Option<String>,
}

impl PlannedSource {
    /// The reference as pulled from this source, e.g. `mirror:5000/ocp/x@sha256:…`.
    pub(crate) fn display(&self) -> String {
        self.pull.reference.to_string()
    }
}

impl Planner {
    pub(crate) fn new(table: MirrorTable, keychain: Arc<Keychain>) -> Planner {
        Planner { table, keychain }
    }

    pub(crate) fn table(&self) -> &MirrorTable {
        &self.table
    }

    pub(crate) fn plan(&self, reference: &Reference) -> Result<Vec<PlannedSource>, MirrorError> {
        let sources = self.table.pull_sources(reference)?;
        Ok(sources
            .into_iter()
            .map(|pull| {
                let source = Source {
                    registry: pull.reference.api_host().to_string(),
                    repository: pull.reference.repository.clone(),
                    insecure: pull.insecure.is_some(),
                };
                let credential = self
                    .keychain
                    .entry(&source.registry, &source.repository)
                    .map(|matched| matched.to_string());
                PlannedSource {
                    pull,
                    source,
                    credential,
                }
            })
            .collect())
    }
}
