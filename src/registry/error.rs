//! The registry client's errors, and the registry's own OCI error body as shown in them.

use std::fmt;

use http::StatusCode;
use serde::Deserialize;
use thiserror::Error;

use super::auth::AuthError;
use super::oci::ManifestError;
use crate::transport::TransportError;
use crate::transport::retry::GiveUp;

#[derive(Debug, Error)]
pub(crate) enum RegistryError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{registry} answered {status} for {what}{errors}{}", credentials_note(.credentials, .registry))]
    Status {
        registry: String,
        what: String,
        status: StatusCode,
        /// The registry's OCI error body; empty when the body is not one.
        errors: OciErrors,
        /// For a 401: what the pull secret holds for this registry.
        credentials: Option<Credentials>,
    },
    #[error("{what} from {registry}: {cause}")]
    Body {
        registry: String,
        what: String,
        cause: String,
    },
    #[error("{what} from {registry} has digest {actual}, expected {expected}")]
    DigestMismatch {
        registry: String,
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what} from {registry} is {actual} bytes, expected {expected}")]
    SizeMismatch {
        registry: String,
        what: String,
        expected: u64,
        actual: u64,
    },
    /// The registry answered a `Range` request with the whole blob (200), or not with the ranges
    /// asked; what it sent is not used.
    #[error("{registry} did not serve the ranges asked of {what}: {cause}")]
    RangeRefused {
        registry: String,
        what: String,
        cause: String,
    },
    /// A failure that was retried until the retry policy said stop.
    #[error("{cause} ({why})")]
    GaveUp {
        cause: Box<RegistryError>,
        why: GiveUp,
    },
    #[error("unsupported digest {0:?} (sha256 and sha512 are supported)")]
    UnsupportedDigest(String),
    /// A `.sig` tag that is not an OCI image manifest (signature-policy §3: the node fails the pull).
    #[error("{what} from {registry} is {content_type:?}, not an OCI image manifest")]
    NotSignatureManifest {
        registry: String,
        what: String,
        content_type: String,
    },
    /// More attachments than the cap (stricter than the node, which has none).
    #[error("{what} from {registry} has {count} layers, over the limit of {limit}")]
    TooManyAttachments {
        registry: String,
        what: String,
        count: usize,
        limit: usize,
    },
    /// `what` already names the document (`manifest <repository>:<tag or digest>`).
    #[error("{what} from {registry}: {cause}")]
    BadManifest {
        registry: String,
        what: String,
        #[source]
        cause: ManifestError,
    },
}

/// What the pull secret holds for a registry that answered 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credentials {
    /// It has credentials, and the registry refused them.
    Refused,
    /// It has none for the registry.
    Missing,
}

fn credentials_note(credentials: &Option<Credentials>, registry: &str) -> String {
    match credentials {
        None => String::new(),
        Some(Credentials::Refused) => " (the pull secret's credentials were refused)".to_string(),
        Some(Credentials::Missing) => {
            format!(" (no credentials for {registry} in the pull secret)")
        }
    }
}

/// The entries of an OCI error body (`{"errors": [{"code", "message", "detail"}]}`), kept as the
/// registry sent them; shown as `: CODE: message; CODE: message`, or as nothing when there are none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct OciErrors {
    #[serde(default)]
    errors: Vec<OciErrorEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct OciErrorEntry {
    #[serde(default)]
    pub(crate) code: String,
    #[serde(default)]
    pub(crate) message: String,
}

impl OciErrors {
    /// The entries of `body`; none when it is not an OCI error body.
    pub(super) fn parse(body: &[u8]) -> OciErrors {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// containers/image's `isManifestUnknownError`: MANIFEST_UNKNOWN, or UNKNOWN saying "not found".
    pub(super) fn manifest_unknown(&self) -> bool {
        self.errors.iter().any(|e| {
            e.code == "MANIFEST_UNKNOWN"
                || (e.code == "UNKNOWN" && e.message.to_ascii_lowercase().contains("not found"))
        })
    }

    /// The entries, in the registry's order.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> &[OciErrorEntry] {
        &self.errors
    }
}

impl fmt::Display for OciErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, entry) in self.errors.iter().enumerate() {
            let separator = if i == 0 { ": " } else { "; " };
            write!(f, "{separator}{}: {}", entry.code, entry.message)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_summarised() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            OciErrors::parse(body).to_string(),
            ": MANIFEST_UNKNOWN: manifest unknown"
        );
        assert_eq!(OciErrors::parse(b"oops").to_string(), "");
    }

    /// Issue 14 (typed causes): a registry's error body stays code and message inside
    /// `RegistryError::Status` until the error is shown, so a caller can tell MANIFEST_UNKNOWN from
    /// DENIED without reading text.
    #[test]
    fn a_status_error_keeps_the_registrys_error_codes() {
        let body = br#"{"errors":[{"code":"DENIED","message":"no"},{"code":"UNAUTHORIZED","message":"auth"}]}"#;
        let error = RegistryError::Status {
            registry: "mirror.test".into(),
            what: "manifest a/b:v1".into(),
            status: StatusCode::UNAUTHORIZED,
            errors: OciErrors::parse(body),
            credentials: Some(Credentials::Missing),
        };
        let RegistryError::Status { errors, .. } = &error else {
            unreachable!()
        };
        let codes: Vec<&str> = errors.entries().iter().map(|e| e.code.as_str()).collect();
        assert_eq!(codes, ["DENIED", "UNAUTHORIZED"]);
        assert_eq!(
            error.to_string(),
            "mirror.test answered 401 Unauthorized for manifest a/b:v1: DENIED: no; UNAUTHORIZED: \
             auth (no credentials for mirror.test in the pull secret)"
        );
    }
}
