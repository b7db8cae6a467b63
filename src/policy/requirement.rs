//! One `sigstoreSigned` requirement as containers/image holds it (trust root + signed identity),
//! built from the API's policy the way the MCO renders it (signature-policy §2.1). Keys and
//! certificates are parsed here, once; a requirement that cannot be built rejects every image
//! under its scope (the node fails those pulls at evaluation time too).

use rustls_pki_types::CertificateDer;
use thiserror::Error;

use super::certificate::{self, CertificateError};
use super::keys::{KeyError, PublicKey};
use super::spec::{PolicySpec, SignedIdentitySpec};
use crate::reference::Reference;

/// Cloned into every image's error: it is kept in the rendered policy.
#[derive(Debug, Clone, Error)]
pub enum ConfigError {
    #[error("unsupported policyType {0:?}")]
    UnknownPolicyType(String),
    #[error("policyType {0} without its {0} settings")]
    MissingRoot(&'static str),
    #[error("{what}: {source}")]
    Key {
        what: &'static str,
        #[source]
        source: KeyError,
    },
    #[error("Rekor public key {0} is not using ECDSA")]
    RekorNotEcdsa(usize),
    #[error("{what}: {source}")]
    Certificate {
        what: &'static str,
        #[source]
        source: CertificateError,
    },
    #[error("{0} contains no certificate")]
    NoCertificate(&'static str),
    #[error("Fulcio requires a Rekor public key")]
    FulcioWithoutRekor,
    #[error("PKI requires a subject email or hostname")]
    PkiWithoutSubject,
    #[error("unsupported signedIdentity matchPolicy {0:?}")]
    UnknownMatchPolicy(String),
    #[error("signedIdentity {0} without its settings")]
    MissingIdentity(&'static str),
    #[error("invalid signedIdentity repository {0:?}")]
    BadRepository(String),
    /// signature-policy §2.3: the MCO writes no policy at all then.
    #[error(
        "the MCO refuses to render scope {scope} of {objects}: it is {reason}; stricter than \
         the node: the node keeps its previous policy, which we cannot know"
    )]
    RenderRefused {
        scope: String,
        objects: String,
        reason: String,
    },
}

/// Where trust comes from.
#[derive(Debug)]
pub enum TrustRoot {
    /// Any of `keys` signed the payload; with Rekor keys, a SET naming that key is required too.
    PublicKey {
        keys: Vec<PublicKey>,
        rekor_keys: Vec<PublicKey>,
    },
    /// A Fulcio leaf valid at the SET's time, with this OIDC issuer and email.
    Fulcio {
        ca: Vec<CertificateDer<'static>>,
        oidc_issuer: String,
        email: String,
        rekor_keys: Vec<PublicKey>,
    },
    /// A leaf valid now under `roots`, with this email and/or hostname.
    Pki {
        roots: Vec<CertificateDer<'static>>,
        intermediates: Vec<CertificateDer<'static>>,
        email: Option<String>,
        hostname: Option<String>,
    },
}

/// How the signed reference must relate to the image's original reference (§3 step 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedIdentity {
    MatchRepoDigestOrExact,
    MatchRepository,
    /// Holds the normalised `registry/repository`.
    ExactRepository(String),
    RemapIdentity {
        prefix: String,
        signed_prefix: String,
    },
}

#[derive(Debug)]
pub struct Requirement {
    pub trust: TrustRoot,
    pub identity: SignedIdentity,
}

impl TrustRoot {
    pub fn public_keys(keys: &[&[u8]], rekor_keys: &[&[u8]]) -> Result<TrustRoot, ConfigError> {
        Ok(TrustRoot::PublicKey {
            keys: parse_keys(keys, "public key")?,
            rekor_keys: parse_rekor_keys(rekor_keys)?,
        })
    }

    pub fn fulcio(
        ca_pem: &[u8],
        oidc_issuer: &str,
        email: &str,
        rekor_keys: &[&[u8]],
    ) -> Result<TrustRoot, ConfigError> {
        let rekor_keys = parse_rekor_keys(rekor_keys)?;
        if rekor_keys.is_empty() {
            return Err(ConfigError::FulcioWithoutRekor);
        }
        Ok(TrustRoot::Fulcio {
            ca: certificates(ca_pem, "fulcioCAData")?,
            oidc_issuer: oidc_issuer.to_string(),
            email: email.to_string(),
            rekor_keys,
        })
    }

    pub fn pki(
        roots_pem: &[u8],
        intermediates_pem: Option<&[u8]>,
        email: Option<&str>,
        hostname: Option<&str>,
    ) -> Result<TrustRoot, ConfigError> {
        if email.is_none() && hostname.is_none() {
            return Err(ConfigError::PkiWithoutSubject);
        }
        let intermediates = match intermediates_pem {
            Some(pem) => certificates(pem, "caIntermediatesData")?,
            None => Vec::new(),
        };
        Ok(TrustRoot::Pki {
            roots: certificates(roots_pem, "caRootsData")?,
            intermediates,
            email: email.map(str::to_string),
            hostname: hostname.map(str::to_string),
        })
    }
}

fn parse_keys(pems: &[&[u8]], what: &'static str) -> Result<Vec<PublicKey>, ConfigError> {
    pems.iter()
        .map(|pem| PublicKey::from_pem(pem).map_err(|source| ConfigError::Key { what, source }))
        .collect()
}

fn parse_rekor_keys(pems: &[&[u8]]) -> Result<Vec<PublicKey>, ConfigError> {
    let keys = parse_keys(pems, "Rekor public key")?;
    match keys.iter().position(|key| !key.is_ecdsa()) {
        Some(i) => Err(ConfigError::RekorNotEcdsa(i + 1)),
        None => Ok(keys),
    }
}

fn certificates(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = certificate::pem_certificates(pem, what)
        .map_err(|source| ConfigError::Certificate { what, source })?;
    if certs.is_empty() {
        return Err(ConfigError::NoCertificate(what));
    }
    Ok(certs)
}

impl SignedIdentity {
    pub fn from_spec(spec: Option<&SignedIdentitySpec>) -> Result<SignedIdentity, ConfigError> {
        let Some(spec) = spec else {
            return Ok(SignedIdentity::MatchRepoDigestOrExact);
        };
        match spec.match_policy.as_str() {
            "MatchRepoDigestOrExact" => Ok(SignedIdentity::MatchRepoDigestOrExact),
            "MatchRepository" => Ok(SignedIdentity::MatchRepository),
            "ExactRepository" => {
                let exact = spec
                    .exact_repository
                    .as_ref()
                    .ok_or(ConfigError::MissingIdentity("ExactRepository"))?;
                let repository = Reference::parse(&exact.repository)
                    .ok()
                    .filter(|r| r.tag.is_none() && r.digest.is_none())
                    .ok_or_else(|| ConfigError::BadRepository(exact.repository.clone()))?;
                Ok(SignedIdentity::ExactRepository(repository.name()))
            }
            "RemapIdentity" => {
                let remap = spec
                    .remap_identity
                    .as_ref()
                    .ok_or(ConfigError::MissingIdentity("RemapIdentity"))?;
                Ok(SignedIdentity::RemapIdentity {
                    prefix: remap.prefix.clone(),
                    signed_prefix: remap.signed_prefix.clone(),
                })
            }
            other => Err(ConfigError::UnknownMatchPolicy(other.to_string())),
        }
    }

    /// Whether a signature for `signed` (the payload's reference, as written) is accepted for
    /// `image` (the original reference, before any mirror).
    pub fn accepts(&self, signed: &str, image: &Reference) -> bool {
        let Ok(signed) = Reference::parse(signed) else {
            return false;
        };
        let image = logical(image);
        match self {
            SignedIdentity::MatchRepoDigestOrExact => repo_digest_or_exact(&signed, &image),
            SignedIdentity::MatchRepository => signed.name() == image.name(),
            SignedIdentity::ExactRepository(repository) => signed.name() == *repository,
            SignedIdentity::RemapIdentity {
                prefix,
                signed_prefix,
            } => {
                let name = image.name();
                let under_prefix = name == *prefix
                    || name
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/'));
                if !under_prefix {
                    return repo_digest_or_exact(&signed, &image);
                }
                let remapped = image
                    .to_string()
                    .replacen(prefix.as_str(), signed_prefix, 1);
                Reference::parse(&remapped)
                    .is_ok_and(|remapped| repo_digest_or_exact(&signed, &logical(&remapped)))
            }
        }
    }
}

/// matchRepoDigestOrExact: a name-only signature never matches; an image by digest needs the
/// same repository; an image by tag the same full reference.
fn repo_digest_or_exact(signed: &Reference, image: &Reference) -> bool {
    if signed.tag.is_none() && signed.digest.is_none() {
        return false;
    }
    if image.digest.is_some() {
        signed.name() == image.name()
    } else {
        signed.to_string() == image.to_string()
    }
}

/// The reference as containers/image holds it: a digest wins over a tag (CRI-O drops the tag),
/// and a bare name means `:latest`.
pub(super) fn logical(image: &Reference) -> Reference {
    let mut logical = image.clone();
    if logical.digest.is_some() {
        logical.tag = None;
    } else if logical.tag.is_none() {
        logical.tag = Some("latest".to_string());
    }
    logical
}

impl Requirement {
    /// The requirement the MCO renders from one policy (§2.1).
    pub fn from_spec(policy: &PolicySpec) -> Result<Requirement, ConfigError> {
        let root = &policy.root_of_trust;
        let trust = match root.policy_type.as_str() {
            "PublicKey" => {
                let key = root
                    .public_key
                    .as_ref()
                    .ok_or(ConfigError::MissingRoot("PublicKey"))?;
                let rekor: Vec<&[u8]> = key.rekor_key_data.iter().map(|k| k.0.as_slice()).collect();
                TrustRoot::public_keys(&[&key.key_data.0], &rekor)?
            }
            "FulcioCAWithRekor" => {
                let fulcio = root
                    .fulcio_ca_with_rekor
                    .as_ref()
                    .ok_or(ConfigError::MissingRoot("FulcioCAWithRekor"))?;
                TrustRoot::fulcio(
                    &fulcio.fulcio_ca_data.0,
                    &fulcio.fulcio_subject.oidc_issuer,
                    &fulcio.fulcio_subject.signed_email,
                    &[&fulcio.rekor_key_data.0],
                )?
            }
            "PKI" => {
                let pki = root.pki.as_ref().ok_or(ConfigError::MissingRoot("PKI"))?;
                TrustRoot::pki(
                    &pki.ca_roots_data.0,
                    pki.ca_intermediates_data.as_ref().map(|d| d.0.as_slice()),
                    pki.pki_certificate_subject.email.as_deref(),
                    pki.pki_certificate_subject.hostname.as_deref(),
                )?
            }
            other => return Err(ConfigError::UnknownPolicyType(other.to_string())),
        };
        Ok(Requirement {
            trust,
            identity: SignedIdentity::from_spec(policy.signed_identity.as_ref())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(identity: &SignedIdentity, signed: &str, image: &str) -> bool {
        identity.accepts(signed, &Reference::parse(image).unwrap())
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// signature-policy §3 step 8: every match policy, incl. a name-only signature rejected by
    /// matchRepoDigestOrExact and remapIdentity (the cosign default payload).
    #[test]
    fn identity_rules() {
        let exact = SignedIdentity::MatchRepoDigestOrExact;
        assert!(!accepts(&exact, "q.io/a/b", "q.io/a/b:1"));
        assert!(!accepts(&exact, "q.io/a/b", &format!("q.io/a/b@{D}")));
        assert!(accepts(&exact, "q.io/a/b:1", "q.io/a/b:1"));
        assert!(!accepts(&exact, "q.io/a/b:1", "q.io/a/b:2"));
        assert!(accepts(&exact, "q.io/a/b:latest", "q.io/a/b"));
        assert!(accepts(&exact, "q.io/a/b:any", &format!("q.io/a/b@{D}")));
        assert!(!accepts(&exact, "q.io/a/c:any", &format!("q.io/a/b@{D}")));

        let repo = SignedIdentity::MatchRepository;
        assert!(accepts(&repo, "q.io/a/b", "q.io/a/b:1"));
        assert!(!accepts(&repo, "q.io/a/c", "q.io/a/b:1"));
        assert!(!accepts(&repo, "not a reference", "q.io/a/b:1"));
        assert!(accepts(&repo, "busybox", "docker.io/library/busybox:1"));

        let fixed = SignedIdentity::ExactRepository("r.io/signed".into());
        assert!(accepts(&fixed, "r.io/signed", "q.io/a/b:1"));
        assert!(!accepts(&fixed, "q.io/a/b", "q.io/a/b:1"));

        let remap = SignedIdentity::RemapIdentity {
            prefix: "mirror.io/ocp".into(),
            signed_prefix: "quay.io/openshift".into(),
        };
        assert!(accepts(
            &remap,
            "quay.io/openshift/x:1",
            "mirror.io/ocp/x:1"
        ));
        assert!(accepts(
            &remap,
            "quay.io/openshift/x:9",
            &format!("mirror.io/ocp/x@{D}")
        ));
        assert!(!accepts(
            &remap,
            "quay.io/openshift/x",
            &format!("mirror.io/ocp/x@{D}")
        ));
        assert!(!accepts(
            &remap,
            "quay.io/openshift/x:1",
            "mirror.io/ocpx/x:1"
        ));
        // Outside the prefix: plain matchRepoDigestOrExact.
        assert!(accepts(&remap, "other.io/x:1", "other.io/x:1"));
    }
}
