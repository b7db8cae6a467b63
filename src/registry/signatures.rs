//! An image's sigstore attachments, found as containers/image finds them (signature-policy §3
//! "Signature discovery"): the `<alg>-<hex>.sig` tag in the repository of the pull source that
//! served the manifest, an OCI image manifest whose layers are the attachments.
//!
//! | case | outcome |
//! |---|---|
//! | the tag is absent (404, `MANIFEST_UNKNOWN`, `UNKNOWN` saying "not found") | no attachments |
//! | any other error | error |
//! | a Content-Type other than the OCI image manifest's | error |
//! | the manifest or a layer over 4 MiB, or not matching its digest | error (refetched first) |
//! | more than [`MAX_ATTACHMENTS`] layers | error: stricter than the node, which has no cap |

use std::collections::BTreeMap;

use bytes::Bytes;
use http::HeaderMap;
use http::header::CONTENT_TYPE;

use super::{
    Manifest, OCI_MANIFEST, RegistryClient, RegistryError, header_text, parse_manifest,
    sha256_digest,
};
use crate::plan::Source;
use crate::policy::Attachment;

/// Layers of one `.sig` manifest fetched at most (the node fetches them all).
pub(crate) const MAX_ATTACHMENTS: usize = 64;

impl RegistryClient {
    /// The attachments of the image whose manifest has `digest` (`sha256:<hex>`), from `source`'s
    /// repository.
    pub(crate) async fn signatures(
        &self,
        source: &Source,
        digest: &str,
    ) -> Result<Vec<Attachment>, RegistryError> {
        let tag = signature_tag(digest)?;
        let what = format!("signature manifest {}:{tag}", source.repository);
        let check = |body: Bytes, headers: &HeaderMap| {
            let content_type = header_text(headers, CONTENT_TYPE);
            let simple = content_type.split(';').next().unwrap_or("").trim();
            let not_oci = || RegistryError::NotSignatureManifest {
                registry: source.registry.clone(),
                what: what.clone(),
                content_type: content_type.clone(),
            };
            if simple != OCI_MANIFEST {
                return Err(not_oci());
            }
            let claimed = header_text(headers, "docker-content-digest");
            let actual = sha256_digest(&body);
            if claimed.starts_with("sha256:") && claimed != actual {
                return Err(RegistryError::DigestMismatch {
                    registry: source.registry.clone(),
                    what: what.clone(),
                    expected: claimed,
                    actual,
                });
            }
            match parse_manifest(&body, simple) {
                Ok((_, Manifest::Image(manifest))) => Ok(manifest),
                Ok((_, Manifest::Index(_))) => Err(not_oci()),
                Err(cause) => Err(RegistryError::BadManifest {
                    registry: source.registry.clone(),
                    what: what.clone(),
                    cause,
                }),
            }
        };
        let path = format!("manifests/{tag}");
        let manifest = match self
            .fetch_small(source, &path, Some(OCI_MANIFEST), &what, check)
            .await
        {
            Err(error) if not_found(&error) => {
                tracing::debug!(source = %source, tag, "no signature manifest");
                return Ok(Vec::new());
            }
            other => other?,
        };
        let layers = manifest.layers();
        if layers.len() > MAX_ATTACHMENTS {
            return Err(RegistryError::TooManyAttachments {
                registry: source.registry.clone(),
                what,
                count: layers.len(),
                limit: MAX_ATTACHMENTS,
            });
        }
        let mut attachments = Vec::with_capacity(layers.len());
        for layer in layers {
            let payload = self.small_blob(source, layer).await?;
            let annotations: BTreeMap<String, String> = layer
                .annotations()
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            attachments.push(Attachment {
                media_type: layer.media_type().to_string(),
                payload: payload.to_vec(),
                annotations,
            });
        }
        Ok(attachments)
    }
}

/// `sha256:<hex>` → `sha256-<hex>.sig`.
fn signature_tag(digest: &str) -> Result<String, RegistryError> {
    match digest.split_once(':') {
        Some((algorithm, hex))
            if !algorithm.is_empty()
                && algorithm.bytes().all(|b| b.is_ascii_alphanumeric())
                && !hex.is_empty()
                && hex.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Ok(format!("{algorithm}-{hex}.sig"))
        }
        _ => Err(RegistryError::UnsupportedDigest(digest.to_string())),
    }
}

/// containers/image's not-found test for the `.sig` tag: HTTP 404 or a manifest-unknown code.
fn not_found(error: &RegistryError) -> bool {
    match error {
        RegistryError::Status { status, errors, .. } => {
            *status == http::StatusCode::NOT_FOUND || errors.manifest_unknown()
        }
        RegistryError::GaveUp { cause, .. } => not_found(cause),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::error::OciErrors;

    /// signature-policy §3 "Signature discovery": the tag, and which answers mean "no signature".
    #[test]
    fn tag_and_not_found() {
        assert_eq!(
            signature_tag(&format!("sha256:{}", "ab".repeat(32))).unwrap(),
            format!("sha256-{}.sig", "ab".repeat(32))
        );
        assert!(signature_tag("sha256:../x").is_err());
        let status = |code: u16, body: &[u8]| RegistryError::Status {
            registry: "r".into(),
            what: "w".into(),
            status: http::StatusCode::from_u16(code).unwrap(),
            errors: OciErrors::parse(body),
            credentials: None,
        };
        assert!(not_found(&status(404, b"")));
        assert!(not_found(&status(
            400,
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"x"}]}"#
        )));
        assert!(not_found(&status(
            500,
            br#"{"errors":[{"code":"UNKNOWN","message":"Not Found"}]}"#
        )));
        assert!(!not_found(&status(
            500,
            br#"{"errors":[{"code":"UNKNOWN","message":"boom"}]}"#
        )));
        assert!(!not_found(&status(401, b"")));
        assert!(!not_found(&status(403, b"")));
    }
}
