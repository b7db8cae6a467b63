//! The registry client's errors, and the registry's own OCI error body as shown in them.

use http::StatusCode;
use serde::Deserialize;
use thiserror::Error;

use super::auth::AuthError;
use crate::transport::TransportError;
use crate::transport::retry::GiveUp;

#[derive(Debug, Error)]
pub(crate) enum RegistryError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{registry} answered {status} for {what}{detail}")]
    Status {
        registry: String,
        what: String,
        status: StatusCode,
        detail: String,
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
    /// `what` already names the document (`manifest <repository>:<tag or digest>`).
    #[error("{what} from {registry}: {cause}")]
    BadManifest {
        registry: String,
        what: String,
        cause: String,
    },
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// `: CODE: message` from an OCI error body, or nothing.
pub(super) fn describe_error_body(body: &[u8]) -> String {
    let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) else {
        return String::new();
    };
    let parts: Vec<String> = parsed
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.code, e.message))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join("; "))
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
            describe_error_body(body),
            ": MANIFEST_UNKNOWN: manifest unknown"
        );
        assert_eq!(describe_error_body(b"oops"), "");
    }
}
