//! The cluster's signature policy in the pull (issue 16 §4, §7; signature-policy §3): which
//! requirements apply to an image, looked up on its original reference; the check of the
//! per-platform manifest's `.sig` attachments, fetched from the source that served that manifest,
//! before the config or any layer; and what index.json records of it.
//!
//! Attachments are always looked up for an image under a scope: the MCO writes
//! `use-sigstore-attachments: true` into registries.d for every scope and every mirror endpoint
//! reachable from it (signature-policy §2.5), so on the node the serving source has it too.
//!
//! index.json, per image a policy applied to (absent otherwise):
//! `"signature": {"scope": <the policy scope that matched>, "policyFingerprint": "sha256:<hex>"
//! (see [`crate::policy::fingerprint`]), "verified": [{"object": "ClusterImagePolicy <name>" or
//! "ImagePolicy <namespace>/<name>", "verifiedBy": "public key sha256:<hex>" or "certificate
//! issuer …, subject …, SAN …"}, …]}`, one `verified` entry per requirement (all must pass).

use serde::{Deserialize, Serialize};

use super::error::ImageError;
use crate::plan::Source;
use crate::policy::{self, RenderedPolicy, ScopedRequirement};
use crate::reference::Reference;
use crate::registry::RegistryClient;

/// The requirements that apply to one image, and their fingerprint.
pub(super) struct Applicable<'a> {
    scope: &'a str,
    requirements: &'a [ScopedRequirement],
    pub(super) fingerprint: String,
}

/// What index.json records of an image's signature check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SignatureRecord {
    pub(crate) scope: String,
    pub(crate) policy_fingerprint: String,
    pub(crate) verified: Vec<VerifiedRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VerifiedRecord {
    pub(crate) object: String,
    pub(crate) verified_by: String,
}

/// The scope of `policy` that names `image` (the reference as written, before any mirror);
/// `None`: no requirement, no signature request.
pub(super) fn applicable<'a>(
    policy: &'a RenderedPolicy,
    image: &Reference,
) -> Option<Applicable<'a>> {
    let (scope, requirements) = policy.lookup(image)?;
    Some(Applicable {
        scope,
        requirements,
        fingerprint: policy::fingerprint(policy.namespace(), scope, requirements),
    })
}

impl Applicable<'_> {
    /// Fetches the attachments of the manifest `digest` from `source` and checks every
    /// requirement against `manifest`, the exact bytes of that per-platform manifest.
    pub(super) async fn verify(
        &self,
        client: &RegistryClient,
        source: &Source,
        image: &Reference,
        digest: &str,
        manifest: &[u8],
    ) -> Result<SignatureRecord, ImageError> {
        let attachments = client
            .signatures(source, digest)
            .await
            .map_err(ImageError::SignatureFetch)?;
        let accepted =
            policy::check_scope(self.scope, self.requirements, image, manifest, &attachments)
                .map_err(|e| ImageError::Policy(Box::new(e)))?;
        for a in &accepted {
            tracing::info!(image = %image, source = %source, object = %a.object, scope = self.scope, verified_by = %a.verified_by, "signature verified");
        }
        Ok(SignatureRecord {
            scope: self.scope.to_string(),
            policy_fingerprint: self.fingerprint.clone(),
            verified: accepted
                .into_iter()
                .map(|a| VerifiedRecord {
                    object: a.object.to_string(),
                    verified_by: a.verified_by,
                })
                .collect(),
        })
    }
}
