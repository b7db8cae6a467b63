//! Parsing and normalising image references (host, port, IPv6, path, tag, digest; docker.io rules).

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid image reference {0:?}: {1}")]
    Invalid(String, &'static str),
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// `host[:port]` as written (case kept), or `docker.io` for Docker Hub names.
    pub registry: String,
    /// Repository path, e.g. `openshift/capi-aws`; `library/x` for official Docker Hub images.
    pub repository: String,
    pub tag: Option<String>,
    /// `algorithm:hex`, e.g. `sha256:…`.
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let _ = s;
        todo!()
    }
    pub fn object(&self) -> &str {
        todo!()
    }
    pub fn api_host(&self) -> &str {
        todo!()
    }
}
