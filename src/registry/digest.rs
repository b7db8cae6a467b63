//! Digests: the running sha256/sha512 that verifies what a registry sends, and the one sha256 helper
//! for bytes held whole.

use sha2::{Digest as _, Sha256, Sha512};

use super::{Descriptor, RegistryError, Source};

/// A running digest of sha256 or sha512.
#[derive(Clone)]
pub(super) enum Digester {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Digester {
    pub(super) fn for_digest(digest: &str) -> Result<Digester, RegistryError> {
        match digest.split_once(':') {
            Some(("sha256", _)) => Ok(Digester::Sha256(Sha256::new())),
            Some(("sha512", _)) => Ok(Digester::Sha512(Sha512::new())),
            _ => Err(RegistryError::UnsupportedDigest(digest.to_string())),
        }
    }

    pub(super) fn update(&mut self, data: &[u8]) {
        match self {
            Digester::Sha256(h) => h.update(data),
            Digester::Sha512(h) => h.update(data),
        }
    }

    pub(super) fn finish(self) -> String {
        match self {
            Digester::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Digester::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

pub(crate) fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// The sha256 of `data`, in lowercase hex.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha256(data))
}

/// The sha256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub(super) fn verify(
    source: &Source,
    what: &str,
    descriptor: &Descriptor,
    size: u64,
    digest: String,
) -> Result<(), RegistryError> {
    if size != descriptor.size() {
        return Err(RegistryError::SizeMismatch {
            registry: source.registry.clone(),
            what: what.to_string(),
            expected: descriptor.size(),
            actual: size,
        });
    }
    if digest != descriptor.digest().as_ref() {
        return Err(RegistryError::DigestMismatch {
            registry: source.registry.clone(),
            what: what.to_string(),
            expected: descriptor.digest().to_string(),
            actual: digest,
        });
    }
    Ok(())
}
