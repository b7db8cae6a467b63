//! Why an image or the run failed: each pull source's cause, the image's, and the run's.

use std::path::PathBuf;

use thiserror::Error;

use super::pull::MAX_INDEX_DEPTH;
use crate::layers::LayerError;
use crate::plan::mirrors::MirrorError;
use crate::policy::PolicyError;
use crate::profiles::ProfileError;
use crate::publish::PublishError;
use crate::registry::{Platform, RegistryError};

/// Why one image failed. Its `Display` is the cause alone; the image and source are added by `ImageFailure`.
#[derive(Debug, Error)]
pub(crate) enum ImageError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("layer {digest}: {source}")]
    Layer {
        digest: String,
        #[source]
        source: LayerError,
    },
    #[error("layer {digest}: {media_type:?} is not a filesystem layer, so this is not an image")]
    NotALayer { digest: String, media_type: String },
    #[error("config media type {0:?} is not an image config, so this is not an image")]
    NotAnImage(String),
    #[error("config {digest}: {cause}")]
    BadConfig { digest: String, cause: String },
    #[error("index {digest} has no manifest for {wanted}; it has: {available}")]
    NoPlatform {
        digest: String,
        wanted: Platform,
        available: String,
    },
    #[error("indexes nested deeper than {MAX_INDEX_DEPTH} levels")]
    NestedTooDeep,
    #[error("{0}")]
    Profile(#[from] ProfileError),
    #[error("layer {digest}: worker stopped: {cause}")]
    Worker { digest: String, cause: String },
    /// The `.sig` lookup failed otherwise than "not found" (signature-policy §3).
    #[error("fetching the image's signatures: {0}")]
    SignatureFetch(#[source] RegistryError),
    #[error(transparent)]
    Policy(Box<PolicyError>),
}

impl ImageError {
    /// The node fixes the pull source once a manifest loads: a signature failure there ends the
    /// image, with no fallback to another source (signature-policy §3, issue 16 §4).
    pub(crate) fn ends_image(&self) -> bool {
        matches!(self, ImageError::SignatureFetch(_) | ImageError::Policy(_))
    }
}

/// Why one pull source of an image did not serve it.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// Listed by the mirror configuration but not to be contacted: `not contacted: <why>`.
    Blocked(String),
    Failed(ImageError),
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Blocked(skipped) => f.write_str(skipped),
            AttemptError::Failed(error) => f.write_str(&crate::error::error_chain(error)),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Attempt {
    /// The reference as pulled from that source.
    pub(crate) source: String,
    pub(crate) error: AttemptError,
}

/// An image that no pull source served, with every source tried and why each failed.
#[derive(Debug)]
pub(crate) struct ImageFailure {
    pub(crate) reference: String,
    pub(crate) attempts: Vec<Attempt>,
    /// The mirror configuration could not produce the sources at all.
    pub(crate) plan_error: Option<MirrorError>,
}

impl std::fmt::Display for ImageFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(error) = &self.plan_error {
            return write!(
                f,
                "image {}: {}",
                self.reference,
                crate::error::error_chain(error)
            );
        }
        match self.attempts.as_slice() {
            [only] => write!(
                f,
                "image {} (from {}): {}",
                self.reference, only.source, only.error
            ),
            attempts => {
                // A signature refusal ends the image at its source: later sources were not tried.
                let ended = attempts
                    .last()
                    .is_some_and(|a| matches!(&a.error, AttemptError::Failed(e) if e.ends_image()));
                let what = if ended {
                    "refused at its last pull source tried"
                } else {
                    "every pull source failed"
                };
                write!(f, "image {}: {what}", self.reference)?;
                for attempt in attempts {
                    write!(f, "; {}: {}", attempt.source, attempt.error)?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug, Error)]
pub(crate) enum ExtractError {
    #[error("{} of {total} images failed; nothing was published", failures.len())]
    Images {
        failures: Vec<ImageFailure>,
        total: usize,
    },
    #[error("publishing to {path}: {source}")]
    Publish {
        path: PathBuf,
        #[source]
        source: PublishError,
    },
    #[error("writing index.json: {0}")]
    Index(#[from] serde_json::Error),
}

impl crate::error::ExitStatus for ExtractError {
    fn exit_code(&self) -> u8 {
        match self {
            ExtractError::Images { .. } => 1,
            ExtractError::Publish { .. } | ExtractError::Index(_) => 4,
        }
    }
}

impl ExtractError {
    /// The error with every failed image on a line of its own.
    pub(crate) fn report(&self) -> String {
        let mut text = crate::error::error_chain(self);
        if let ExtractError::Images { failures, .. } = self {
            for failure in failures {
                text.push('\n');
                text.push_str(&failure.to_string());
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RequirementError;

    fn refused() -> AttemptError {
        AttemptError::Failed(ImageError::Policy(Box::new(PolicyError {
            object: "ClusterImagePolicy release".into(),
            scope: "q.io/a".into(),
            source: Box::new(RequirementError::NoSignature(0)),
        })))
    }

    /// Issue 16 §4: a signature refusal ends the image at that source, so the message does not
    /// claim that every source was tried.
    #[test]
    fn a_refusal_after_a_failed_source_says_the_image_ended_there() {
        let attempt = |source: &str, error| Attempt {
            source: source.into(),
            error,
        };
        let failure = ImageFailure {
            reference: "q.io/a/b@sha256:1".into(),
            attempts: vec![
                attempt("m1/a/b", AttemptError::Blocked("not contacted: x".into())),
                attempt("m2/a/b", refused()),
            ],
            plan_error: None,
        };
        assert_eq!(
            failure.to_string(),
            "image q.io/a/b@sha256:1: refused at its last pull source tried; m1/a/b: not contacted: x; \
             m2/a/b: rejected by ClusterImagePolicy release (scope q.io/a): A signature was \
             required, but no signature exists"
        );
        let failure = ImageFailure {
            attempts: vec![attempt("m1/a/b", AttemptError::Blocked("x".into()))],
            ..failure
        };
        assert_eq!(
            failure.to_string(),
            "image q.io/a/b@sha256:1 (from m1/a/b): x"
        );
    }
}
