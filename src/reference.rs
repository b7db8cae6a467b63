//! Parsing and normalising image references (host, port, IPv6, path, tag, digest; docker.io rules).
//!
//! The grammar is docker/distribution's `reference` package, normalised the way the node's
//! container runtime does it (containers/image's fork of `ParseNormalizedNamed`), because the
//! principle of this tool is to pull what the node would pull:
//!
//! ```text
//! reference := name [ ":" tag ] [ "@" digest ]
//! name      := [ domain "/" ] path
//! domain    := host [ ":" port ]           host = dns-name | "[" ipv6 "]"
//! path      := component ( "/" component )*
//! component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag       := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest    := algorithm ":" hex           (only sha256 and sha512: the only ones we verify)
//! ```
//!
//! The parser is hand-written rather than regex-based: each rule can then say precisely what is
//! wrong, and the error is what an operator reads in the termination message.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// The registry every name without a domain belongs to.
const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's legacy name, which the node folds into [`DOCKER_HUB`] before matching mirrors.
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// Docker Hub does not serve the distribution API on `docker.io` itself.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// `registry/repository` may be at most this long (distribution's `NameTotalLengthMax`, checked
/// on the normalised name as the node's fork of the parser does).
pub(crate) const NAME_MAX: usize = 255;
/// A tag is one leading word character plus at most 127 more.
pub(crate) const TAG_MAX: usize = 128;
/// Ports are at most five digits (brief: 1–5 digits; 65535 has five).
const PORT_DIGITS_MAX: usize = 5;

/// Why a reference was rejected. The whole reference is in [`ReferenceError::input`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReferenceErrorKind {
    #[error("reference is empty")]
    Empty,
    #[error("character {0:?} cannot appear in a reference")]
    InvalidCharacter(char),
    #[error("a 64-character hexadecimal string is an image ID, not a repository name")]
    HexIdentifier,
    #[error("repository name is missing")]
    MissingName,
    #[error("invalid registry host {0:?}")]
    InvalidHost(String),
    #[error("invalid registry port {0:?}: expected 1 to 5 digits")]
    InvalidPort(String),
    #[error("repository path is empty")]
    EmptyPath,
    #[error("repository path has an empty component (leading, trailing or doubled '/')")]
    EmptyPathComponent,
    #[error("repository name must be lowercase")]
    Uppercase,
    #[error(
        "invalid repository path component {0:?}: expected lowercase letters and digits \
         separated by '.', '_', '__' or dashes"
    )]
    InvalidPathComponent(String),
    #[error("repository name must not be more than {NAME_MAX} characters (it has {0})")]
    NameTooLong(usize),
    #[error(
        "invalid tag {0:?}: expected a letter, digit or '_' followed by letters, digits, '_', '.' or '-'"
    )]
    InvalidTag(String),
    #[error("tag must not be more than {TAG_MAX} characters (it has {0})")]
    TagTooLong(usize),
    #[error("invalid digest {0:?}: expected algorithm:hex")]
    InvalidDigest(String),
    #[error("unsupported digest algorithm {0:?}: only sha256 and sha512 can be verified")]
    UnsupportedDigestAlgorithm(String),
    #[error("invalid {algorithm} digest: expected exactly {expected} lowercase hex characters")]
    DigestEncoding {
        algorithm: &'static str,
        expected: usize,
    },
}

/// A reference that could not be parsed: names the input as written and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid image reference {input:?}: {kind}")]
pub struct ReferenceError {
    /// The reference exactly as it was given.
    pub(crate) input: String,
    pub(crate) kind: ReferenceErrorKind,
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// `host[:port]` as written (case kept), or `docker.io` for Docker Hub names.
    pub(crate) registry: String,
    /// Repository path, e.g. `openshift/capi-aws`; `library/x` for official Docker Hub images.
    pub(crate) repository: String,
    pub(crate) tag: Option<String>,
    /// `algorithm:hex`, e.g. `sha256:…`.
    pub(crate) digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `s`; see the module documentation for the grammar.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        parse(s).map_err(|kind| ReferenceError {
            input: s.to_string(),
            kind,
        })
    }

    /// `registry/repository`, e.g. `docker.io/library/busybox`.
    pub(crate) fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry for: the digest when present, else the tag, else "latest".
    pub(crate) fn object(&self) -> &str {
        // A digest wins over a tag: it names immutable content, and the node pulls
        // `name:tag@digest` by digest too (`ParseDockerRef` drops the tag).
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The host[:port] to contact for the API: `registry-1.docker.io` for docker.io, else `registry`.
    pub(crate) fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    #[cfg(test)]
    /// A copy with registry and repository replaced (for mirror rewriting later).
    ///
    /// Nothing is validated here: a rewritten reference should be re-parsed from its
    /// [`Display`](fmt::Display) form, as the node does after a mirror rewrite.
    pub(crate) fn with_name(&self, registry: &str, repository: &str) -> Reference {
        Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: self.tag.clone(),
            digest: self.digest.clone(),
        }
    }
}

impl fmt::Display for Reference {
    /// The normalised full form: `name[:tag][@digest]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

type KindResult<T> = std::result::Result<T, ReferenceErrorKind>;

fn parse(s: &str) -> KindResult<Reference> {
    if s.is_empty() {
        return Err(ReferenceErrorKind::Empty);
    }
    // Checked up front so that whitespace, quotes and the like get a message naming the
    // character rather than a vaguer "invalid component" from whichever part it landed in.
    if let Some(c) = s.chars().find(|&c| !is_reference_char(c)) {
        return Err(ReferenceErrorKind::InvalidCharacter(c));
    }
    // Docker refuses these as names because they are indistinguishable from image IDs.
    if s.len() == 64 && s.bytes().all(is_lower_hex) {
        return Err(ReferenceErrorKind::HexIdentifier);
    }

    // No part before the digest may contain '@', so the first one starts the digest.
    let (name_and_tag, digest) = match s.split_once('@') {
        Some((before, after)) => (before, Some(after)),
        None => (s, None),
    };
    // A tag has neither '/' nor ':', and a path component has no ':', so a ':' after the last
    // '/' starts the tag; any ':' before it belongs to the domain (port, IPv6 literal).
    let last_component_start = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_and_tag[last_component_start..].find(':') {
        Some(i) => {
            let colon = last_component_start + i;
            (&name_and_tag[..colon], Some(&name_and_tag[colon + 1..]))
        }
        None => (name_and_tag, None),
    };
    if name.is_empty() {
        return Err(ReferenceErrorKind::MissingName);
    }

    let (registry, repository) = split_domain(name);
    if let Some(registry) = registry {
        validate_domain(registry)?;
    }
    validate_path(repository)?;

    // Normalise as the node does before matching mirrors: no domain and the legacy Hub name
    // both mean docker.io, and a single-component Hub path is an official `library/` image.
    let registry = match registry {
        None | Some(DOCKER_HUB_LEGACY) => DOCKER_HUB,
        Some(host) => host,
    };
    let repository = if registry == DOCKER_HUB && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository.to_string()
    };
    let name_len = registry.len() + 1 + repository.len();
    if name_len > NAME_MAX {
        return Err(ReferenceErrorKind::NameTooLong(name_len));
    }

    if let Some(tag) = tag {
        validate_tag(tag)?;
    }
    if let Some(digest) = digest {
        validate_digest(digest)?;
    }

    Ok(Reference {
        registry: registry.to_string(),
        repository,
        tag: tag.map(str::to_string),
        digest: digest.map(str::to_string),
    })
}

/// Every character that may appear somewhere in a valid reference.
fn is_reference_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/' | '@' | '[' | ']' | '+')
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// Splits off the registry the way containers/image's `SplitDockerDomain` does: the first
/// component is a registry only if it contains '.' or ':' or is exactly `localhost`.
///
/// Upstream distribution also treats an uppercase first component as a host; the node's fork
/// does not (so `LOCALDOMAIN/x` is an uppercase error), and the node is what we follow.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// `host[:port]`, where host is DNS-like components (any case: registries' hosts are matched
/// case-sensitively against mirror rules, so the case as written is kept) or `[ipv6]`.
fn validate_domain(domain: &str) -> KindResult<()> {
    let invalid_host = || ReferenceErrorKind::InvalidHost(domain.to_string());
    let (host, port) = if let Some(after_bracket) = domain.strip_prefix('[') {
        let close = after_bracket.find(']').ok_or_else(invalid_host)?;
        let literal = &after_bracket[..close];
        if literal.is_empty() || !literal.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(invalid_host());
        }
        let rest = &after_bracket[close + 1..];
        let port = match rest.strip_prefix(':') {
            Some(port) => Some(port),
            None if rest.is_empty() => None,
            None => return Err(invalid_host()),
        };
        (&domain[..close + 2], port)
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        }
    };
    if !host.starts_with('[') && !host.split('.').all(is_domain_component) {
        return Err(invalid_host());
    }
    if let Some(port) = port
        && (port.is_empty()
            || port.len() > PORT_DIGITS_MAX
            || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(ReferenceErrorKind::InvalidPort(port.to_string()));
    }
    Ok(())
}

/// `[a-zA-Z0-9]` or `[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn is_domain_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

fn validate_path(path: &str) -> KindResult<()> {
    if path.is_empty() {
        return Err(ReferenceErrorKind::EmptyPath);
    }
    // Reported before the grammar, as distribution does, because "must be lowercase" is the
    // actionable message for `Foo/bar` where "invalid component" would not be.
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ReferenceErrorKind::Uppercase);
    }
    for component in path.split('/') {
        if component.is_empty() {
            return Err(ReferenceErrorKind::EmptyPathComponent);
        }
        if !is_path_component(component) {
            return Err(ReferenceErrorKind::InvalidPathComponent(
                component.to_string(),
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`: alternating runs of lowercase alphanumerics and
/// separators, starting and ending with an alphanumeric run.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let is_alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(is_alnum) || !bytes.last().is_some_and(is_alnum) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum(&bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_alnum(&bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let allowed = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !allowed {
            return false;
        }
    }
    true
}

fn validate_tag(tag: &str) -> KindResult<()> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    let well_formed = bytes.first().is_some_and(|&b| word(b))
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-');
    if !well_formed {
        return Err(ReferenceErrorKind::InvalidTag(tag.to_string()));
    }
    if tag.len() > TAG_MAX {
        return Err(ReferenceErrorKind::TagTooLong(tag.len()));
    }
    Ok(())
}

fn validate_digest(digest: &str) -> KindResult<()> {
    let invalid = || ReferenceErrorKind::InvalidDigest(digest.to_string());
    let (algorithm, encoded) = digest.split_once(':').ok_or_else(invalid)?;
    if !is_digest_algorithm(algorithm) {
        return Err(invalid());
    }
    // Only what we can verify: accepting another algorithm would mean pulling content whose
    // integrity nothing checks.
    let (algorithm, expected) = match algorithm {
        "sha256" => ("sha256", 64),
        "sha512" => ("sha512", 128),
        other => {
            return Err(ReferenceErrorKind::UnsupportedDigestAlgorithm(
                other.to_string(),
            ));
        }
    };
    // Lowercase only, as go-digest's validation demands: the digest is compared byte for byte
    // with the one computed over the content.
    if encoded.len() != expected || !encoded.bytes().all(is_lower_hex) {
        return Err(ReferenceErrorKind::DigestEncoding {
            algorithm,
            expected,
        });
    }
    Ok(())
}

/// OCI's `[a-z0-9]+([+._-][a-z0-9]+)*`.
fn is_digest_algorithm(algorithm: &str) -> bool {
    !algorithm.is_empty()
        && algorithm.split(['+', '.', '_', '-']).all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// Usage errors (a bad reference on the command line): exit 2.
impl crate::error::ExitStatus for ReferenceError {
    fn exit_code(&self) -> u8 {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn sha256(hex: &str) -> String {
        format!("sha256:{hex}")
    }

    /// (input, registry, repository, tag, digest)
    type Case = (
        String,
        &'static str,
        &'static str,
        Option<String>,
        Option<String>,
    );

    fn valid_cases() -> Vec<Case> {
        let d = sha256(HEX64);
        let sha512 = format!("sha512:{HEX64}{HEX64}");
        let tag128 = "t".repeat(TAG_MAX);
        let case = |input: &str, registry, repository, tag: Option<&str>, digest: Option<&str>| {
            (
                input.to_string(),
                registry,
                repository,
                tag.map(str::to_string),
                digest.map(str::to_string),
            )
        };
        vec![
            case("busybox", "docker.io", "library/busybox", None, None),
            case(
                "busybox:1.36",
                "docker.io",
                "library/busybox",
                Some("1.36"),
                None,
            ),
            case(
                "library/busybox",
                "docker.io",
                "library/busybox",
                None,
                None,
            ),
            case(
                "docker.io/busybox",
                "docker.io",
                "library/busybox",
                None,
                None,
            ),
            case(
                "index.docker.io/busybox:1",
                "docker.io",
                "library/busybox",
                Some("1"),
                None,
            ),
            case(
                "index.docker.io/library/busybox",
                "docker.io",
                "library/busybox",
                None,
                None,
            ),
            case(
                "bitnami/redis:7",
                "docker.io",
                "bitnami/redis",
                Some("7"),
                None,
            ),
            // A dotless first component without a port is a Hub namespace, not a host.
            case(
                "myregistry/ns/app",
                "docker.io",
                "myregistry/ns/app",
                None,
                None,
            ),
            // No '/' means no domain, so `localhost:5000` is a Hub name with a tag.
            case(
                "localhost:5000",
                "docker.io",
                "library/localhost",
                Some("5000"),
                None,
            ),
            case("localhost/x", "localhost", "x", None, None),
            case("localhost:5000/x", "localhost:5000", "x", None, None),
            case("[::1]:5000/x:y", "[::1]:5000", "x", Some("y"), None),
            case("[fe80::1]/ns/x", "[fe80::1]", "ns/x", None, None),
            case(
                "10.0.0.1:5000/ns/app",
                "10.0.0.1:5000",
                "ns/app",
                None,
                None,
            ),
            case("Quay.IO/a/b", "Quay.IO", "a/b", None, None),
            // Case is kept, so this is not Docker Hub and gets no `library/`.
            case("Docker.IO/busybox", "Docker.IO", "busybox", None, None),
            case(
                "quay.io/openshift/capi-aws:v1",
                "quay.io",
                "openshift/capi-aws",
                Some("v1"),
                None,
            ),
            case(
                &format!("quay.io/a/b@{d}"),
                "quay.io",
                "a/b",
                None,
                Some(&d),
            ),
            case(
                &format!("quay.io/a/b:v1.2.3@{d}"),
                "quay.io",
                "a/b",
                Some("v1.2.3"),
                Some(&d),
            ),
            case(
                &format!("busybox@{sha512}"),
                "docker.io",
                "library/busybox",
                None,
                Some(&sha512),
            ),
            case(
                "r.example.com/a/b/c/d/e/f:t",
                "r.example.com",
                "a/b/c/d/e/f",
                Some("t"),
                None,
            ),
            case(
                "r.example.com/a__b/c---d/e.f_g-h",
                "r.example.com",
                "a__b/c---d/e.f_g-h",
                None,
                None,
            ),
            case("r.example.com:1/x", "r.example.com:1", "x", None, None),
            case(
                "my-host.example.com:65535/x",
                "my-host.example.com:65535",
                "x",
                None,
                None,
            ),
            case(
                "quay.io/x:_Tag.With-Caps_",
                "quay.io",
                "x",
                Some("_Tag.With-Caps_"),
                None,
            ),
            case(
                &format!("quay.io/x:{tag128}"),
                "quay.io",
                "x",
                Some(&tag128),
                None,
            ),
        ]
    }

    #[test]
    fn valid_references_parse_to_their_normalised_fields() {
        for (input, registry, repository, tag, digest) in valid_cases() {
            let parsed =
                Reference::parse(&input).unwrap_or_else(|e| panic!("{input:?} should parse: {e}"));
            let expected = Reference {
                registry: registry.to_string(),
                repository: repository.to_string(),
                tag,
                digest,
            };
            assert_eq!(parsed, expected, "input {input:?}");
            // The normalised form is a fixed point: parsing it again changes nothing.
            assert_eq!(
                Reference::parse(&parsed.to_string()),
                Ok(parsed),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn invalid_references_are_rejected_with_the_reason() {
        use ReferenceErrorKind as K;
        let long_tag = format!("quay.io/x:{}", "t".repeat(129));
        // "docker.io/" + 245 = 255 is fine (checked below); one more is too long.
        let long_name = format!("quay.io/{}", "a".repeat(248));
        let cases: Vec<(String, ReferenceErrorKind)> = vec![
            ("".into(), K::Empty),
            ("Foo/bar".into(), K::Uppercase),
            ("quay.io/Foo/bar".into(), K::Uppercase),
            ("LOCALDOMAIN/foo".into(), K::Uppercase),
            ("a//b".into(), K::EmptyPathComponent),
            ("a/b/".into(), K::EmptyPathComponent),
            ("/a".into(), K::EmptyPathComponent),
            ("quay.io/".into(), K::EmptyPath),
            (":tag".into(), K::MissingName),
            (format!("@{}", sha256(HEX64)), K::MissingName),
            ("@sha256:".into(), K::MissingName),
            (
                "busybox@sha256:".into(),
                K::DigestEncoding {
                    algorithm: "sha256",
                    expected: 64,
                },
            ),
            (
                format!("busybox@sha256:{}", &HEX64[..63]),
                K::DigestEncoding {
                    algorithm: "sha256",
                    expected: 64,
                },
            ),
            (
                format!("busybox@sha256:{HEX64}0"),
                K::DigestEncoding {
                    algorithm: "sha256",
                    expected: 64,
                },
            ),
            (
                format!("busybox@sha256:{}", HEX64.to_uppercase()),
                K::DigestEncoding {
                    algorithm: "sha256",
                    expected: 64,
                },
            ),
            (
                format!("busybox@sha512:{HEX64}"),
                K::DigestEncoding {
                    algorithm: "sha512",
                    expected: 128,
                },
            ),
            (
                format!("busybox@md5:{}", &HEX64[..32]),
                K::UnsupportedDigestAlgorithm("md5".into()),
            ),
            (
                format!("busybox@SHA256:{HEX64}"),
                K::InvalidDigest(format!("SHA256:{HEX64}")),
            ),
            (format!("busybox@{HEX64}"), K::InvalidDigest(HEX64.into())),
            (
                format!("busybox@sha256:{HEX64}@sha256:{HEX64}"),
                K::DigestEncoding {
                    algorithm: "sha256",
                    expected: 64,
                },
            ),
            ("quay.io/a b".into(), K::InvalidCharacter(' ')),
            (" busybox".into(), K::InvalidCharacter(' ')),
            ("busybox\n".into(), K::InvalidCharacter('\n')),
            (
                "not a valid image reference!!!".into(),
                K::InvalidCharacter(' '),
            ),
            ("quay.io/é".into(), K::InvalidCharacter('é')),
            (HEX64.into(), K::HexIdentifier),
            (long_tag, K::TagTooLong(129)),
            ("quay.io/x:".into(), K::InvalidTag("".into())),
            ("quay.io/x:-v1".into(), K::InvalidTag("-v1".into())),
            ("quay.io/x:v1:v2".into(), K::InvalidTag("v1:v2".into())),
            (long_name, K::NameTooLong(256)),
            (
                "quay.io/a_-b".into(),
                K::InvalidPathComponent("a_-b".into()),
            ),
            (
                "quay.io/a___b".into(),
                K::InvalidPathComponent("a___b".into()),
            ),
            (
                "quay.io/a..b".into(),
                K::InvalidPathComponent("a..b".into()),
            ),
            ("quay.io/-a".into(), K::InvalidPathComponent("-a".into())),
            ("quay.io/a-".into(), K::InvalidPathComponent("a-".into())),
            ("quay.io:b/c".into(), K::InvalidPort("b".into())),
            // A ':' inside the path is not a tag separator (the tag follows the last '/').
            (
                "quay.io/a:b/c".into(),
                K::InvalidPathComponent("a:b".into()),
            ),
            ("quay.io:/x".into(), K::InvalidPort("".into())),
            ("quay.io:123456/x".into(), K::InvalidPort("123456".into())),
            ("-quay.io/x".into(), K::InvalidHost("-quay.io".into())),
            ("quay..io/x".into(), K::InvalidHost("quay..io".into())),
            ("quay_io.com/x".into(), K::InvalidHost("quay_io.com".into())),
            ("[::1/x".into(), K::InvalidHost("[::1".into())),
            ("[]:5000/x".into(), K::InvalidHost("[]:5000".into())),
            ("[::g]/x".into(), K::InvalidHost("[::g]".into())),
            ("[::1]x/y".into(), K::InvalidHost("[::1]x".into())),
            ("[::1]:/y".into(), K::InvalidPort("".into())),
            // Without a '/', brackets are not a host but (invalid) path characters.
            ("[::1]:5000".into(), K::InvalidPathComponent("[".into())),
        ];
        for (input, kind) in cases {
            let err = Reference::parse(&input).expect_err(&format!("{input:?} should fail"));
            assert_eq!(err.kind, kind, "input {input:?}: {err}");
            assert_eq!(err.input, input);
        }
    }

    #[test]
    fn name_length_limit_is_inclusive_and_counts_the_normalised_name() {
        // docker.io/library/ + 237 = 255.
        let at_limit = "a".repeat(237);
        let parsed = Reference::parse(&at_limit).unwrap();
        assert_eq!(parsed.name().len(), NAME_MAX);
        let over = "a".repeat(238);
        assert_eq!(
            Reference::parse(&over).unwrap_err().kind,
            ReferenceErrorKind::NameTooLong(256)
        );
    }

    #[test]
    fn error_message_names_the_input_and_the_problem() {
        let err = Reference::parse("Foo/bar").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid image reference "Foo/bar": repository name must be lowercase"#
        );
        let err = Reference::parse("not a valid image reference!!!").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid image reference "not a valid image reference!!!": character ' ' cannot appear in a reference"#
        );
        // Control characters are escaped, so a hostile value cannot forge log lines.
        let err = Reference::parse("a\nb").unwrap_err();
        assert!(
            err.to_string()
                .starts_with(r#"invalid image reference "a\nb""#)
        );
    }

    #[test]
    fn accessors() {
        let d = sha256(HEX64);
        let hub = Reference::parse("busybox").unwrap();
        assert_eq!(hub.name(), "docker.io/library/busybox");
        assert_eq!(hub.object(), "latest");
        assert_eq!(hub.api_host(), "registry-1.docker.io");
        assert_eq!(hub.to_string(), "docker.io/library/busybox");

        let tagged = Reference::parse("localhost:5000/ns/app:v2").unwrap();
        assert_eq!(tagged.object(), "v2");
        assert_eq!(tagged.api_host(), "localhost:5000");
        assert_eq!(tagged.to_string(), "localhost:5000/ns/app:v2");

        let both = Reference::parse(&format!("quay.io/a/b:v1@{d}")).unwrap();
        assert_eq!(both.object(), d);
        assert_eq!(both.api_host(), "quay.io");
        assert_eq!(both.to_string(), format!("quay.io/a/b:v1@{d}"));

        let mirrored = both.with_name("mirror.local:5000", "ocp/b");
        assert_eq!(
            mirrored.to_string(),
            format!("mirror.local:5000/ocp/b:v1@{d}")
        );
        assert_eq!(mirrored.tag, both.tag);
        assert_eq!(mirrored.digest, both.digest);
        assert_eq!(
            mirrored.with_name("docker.io", "library/x").api_host(),
            "registry-1.docker.io"
        );
    }

    #[test]
    fn from_str_matches_parse() {
        let parsed: Reference = "quay.io/a/b:v1".parse().unwrap();
        assert_eq!(parsed, Reference::parse("quay.io/a/b:v1").unwrap());
    }
}
