//! The cluster's signature policy (ClusterImagePolicy, ImagePolicy), pure: rendered into
//! per-scope requirements as the MCO does, looked up and checked per image as containers/image
//! does (`../shared/reference/signature-policy.md`). No I/O: the caller reads the policy objects
//! and fetches the `.sig` attachments.
//!
//! Stricter than the node, stated: ECDSA on P-256/P-384 only (P-521 refused), RSA from 2048
//! bits, SET payload numbers integers only, a PKI hostname with `*` matches nothing.

mod certificate;
mod fingerprint;
// Crate-visible for the fuzz targets (`crate::fuzz`) only.
pub(crate) mod keys;
pub(crate) mod payload;
pub(crate) mod rekor;
mod render;
mod requirement;
pub mod spec;
mod verify;

pub use fingerprint::fingerprint;
pub use render::{DroppedScope, PolicyObject, PolicyResource, RenderedPolicy, ScopedRequirement};
pub use requirement::{ConfigError, Requirement, SignedIdentity, TrustRoot};
pub use verify::{
    Accepted, Attachment, PolicyError, RequirementError, SIGNATURE_MEDIA_TYPE, SignatureError,
    check, check_scope,
};
