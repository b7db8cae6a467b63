//! The pull secret: the dockerconfigjson keychain and which of its entries answers for a repository,
//! as containers/image chooses it. Nothing in here logs or displays a secret: credential types
//! have redacting `Debug`, and authorization headers are marked sensitive.

use std::collections::HashMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::HeaderValue;
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub(crate) enum KeychainError {
    #[error("pull secret {origin}: {message}")]
    BadPullSecret { origin: String, message: String },
    /// The entry that answers for a repository cannot be used. A less specific entry is not used
    /// instead (containers/image `findCredentialsInFile` stops at the first key that matches).
    #[error(
        "pull secret {origin}: entry {key:?} is unusable: {reason}; no less specific entry is used instead"
    )]
    BadPullSecretEntry {
        origin: String,
        key: String,
        reason: &'static str,
    },
}

/// A username and password for one registry (or one namespace of it).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credential {
    pub(crate) username: String,
    password: String,
    /// An OAuth2 refresh token (`identitytoken`): exchanged at the token realm for access tokens.
    identity_token: Option<String>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credential {{ username: {:?}, password: <redacted>, identity_token: {} }}",
            self.username,
            if self.identity_token.is_some() {
                "<redacted>"
            } else {
                "none"
            }
        )
    }
}

impl Credential {
    pub(crate) fn basic_header(&self) -> HeaderValue {
        let encoded = BASE64.encode(format!("{}:{}", self.username, self.password));
        sensitive(&format!("Basic {encoded}"))
    }

    /// The OAuth2 refresh token to exchange at a token realm, if the entry has one.
    pub(crate) fn identity_token(&self) -> Option<&str> {
        self.identity_token.as_deref()
    }
}

/// A header value marked sensitive (hyper and our logs leave it out).
pub(crate) fn sensitive(value: &str) -> HeaderValue {
    let mut header = HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""));
    header.set_sensitive(true);
    header
}

/// The `auths` of a `.dockerconfigjson`, keyed by normalised `host[:port][/namespace…]`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Keychain {
    origin: String,
    entries: HashMap<String, Entry>,
}

/// One `auths` entry: its key as written, and what it holds. Each is decoded when the pull secret
/// is read but judged only when it is the one that matches, so a bad entry fails the images it
/// covers and no others.
#[derive(Debug, Clone)]
struct Entry {
    key: String,
    value: EntryValue,
}

#[derive(Debug, Clone)]
enum EntryValue {
    Credential(Credential),
    /// No `auth` and no user (docker writes `{}` when a credential helper holds the secret): it
    /// matches and gives no credential, as containers/image `decodeDockerAuth` reads it.
    Empty,
    /// Why the entry cannot be used; never its value.
    Unusable(&'static str),
}

/// The entry that answers for a repository.
pub(crate) struct Matched<'a> {
    /// The key as written in the pull secret.
    pub(crate) key: &'a str,
    value: &'a EntryValue,
    origin: &'a str,
}

impl<'a> Matched<'a> {
    /// The credential to send; none for an empty entry; an error naming the key for an unusable one.
    pub(crate) fn credential(&self) -> Result<Option<&'a Credential>, KeychainError> {
        match self.value {
            EntryValue::Credential(credential) => Ok(Some(credential)),
            EntryValue::Empty => Ok(None),
            EntryValue::Unusable(reason) => Err(KeychainError::BadPullSecretEntry {
                origin: self.origin.to_string(),
                key: self.key.to_string(),
                reason,
            }),
        }
    }
}

/// The key, and what is wrong with the entry if anything (for `resolve`).
impl fmt::Display for Matched<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value {
            EntryValue::Credential(_) => f.write_str(self.key),
            EntryValue::Empty => write!(f, "{} (empty entry: anonymous)", self.key),
            EntryValue::Unusable(reason) => write!(f, "{} (unusable: {reason})", self.key),
        }
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    auths: Option<HashMap<String, DockerAuth>>,
}

#[derive(Deserialize, Default)]
struct DockerAuth {
    auth: Option<String>,
    identitytoken: Option<String>,
}

#[derive(Deserialize)]
struct SecretManifest {
    kind: Option<String>,
    #[serde(default)]
    data: HashMap<String, String>,
    #[serde(default, rename = "stringData")]
    string_data: HashMap<String, String>,
}

impl Keychain {
    /// Reads a `.dockerconfigjson` document, or a Secret manifest (YAML or JSON) holding one.
    pub(crate) fn parse(bytes: &[u8], origin: &str) -> Result<Keychain, KeychainError> {
        let bad = |message: String| KeychainError::BadPullSecret {
            origin: origin.to_string(),
            message,
        };
        if let Ok(secret) = serde_yaml_ng::from_slice::<SecretManifest>(bytes)
            && secret.kind.as_deref() == Some("Secret")
        {
            let config = if let Some(text) = secret.string_data.get(".dockerconfigjson") {
                text.clone().into_bytes()
            } else if let Some(encoded) = secret.data.get(".dockerconfigjson") {
                BASE64
                    .decode(encoded.trim())
                    .map_err(|e| bad(format!("data[.dockerconfigjson] is not base64: {e}")))?
            } else {
                return Err(bad("Secret has no .dockerconfigjson key".into()));
            };
            return Keychain::parse_config(&config, origin);
        }
        Keychain::parse_config(bytes, origin)
    }

    fn parse_config(bytes: &[u8], origin: &str) -> Result<Keychain, KeychainError> {
        let config: DockerConfig =
            serde_json::from_slice(bytes).map_err(|e| KeychainError::BadPullSecret {
                origin: origin.to_string(),
                message: format!("not a .dockerconfigjson: {e}"),
            })?;
        let mut entries: HashMap<String, Entry> = HashMap::new();
        for (key, auth) in config.auths.unwrap_or_default() {
            let normalised = normalise_key(&key);
            // Keys that normalise alike: containers/image tries the key written as the lookup
            // spells it first (`host` beats `https://host/v1/`), then whichever of the others its
            // map iteration meets first; here the byte-smallest, so every run picks the same one.
            let rank = |written: &str| (written != normalised, written.to_string());
            if let Some(kept) = entries.get(&normalised)
                && rank(&kept.key) < rank(&key)
            {
                continue;
            }
            let value = entry_value(auth);
            entries.insert(normalised, Entry { key, value });
        }
        Ok(Keychain {
            origin: origin.to_string(),
            entries,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The credential for `repository` on `registry` (`host[:port]` actually contacted), from the
    /// entry [`entry`](Self::entry) finds: an error if that entry is unusable.
    pub(crate) fn lookup(
        &self,
        registry: &str,
        repository: &str,
    ) -> Result<Option<&Credential>, KeychainError> {
        match self.entry(registry, repository) {
            Some(matched) => matched.credential(),
            None => Ok(None),
        }
    }

    /// The most specific entry for `repository` on `registry` (`host/org/repo`, then `host/org`,
    /// then the host's own entry), as the node does. Only that one is used, whatever it holds.
    pub(crate) fn entry(&self, registry: &str, repository: &str) -> Option<Matched<'_>> {
        let host = normalise_key(registry);
        let mut candidate = format!("{host}/{repository}");
        loop {
            if let Some(entry) = self.entries.get(&candidate) {
                return Some(Matched {
                    key: &entry.key,
                    value: &entry.value,
                    origin: &self.origin,
                });
            }
            match candidate.rsplit_once('/') {
                Some((parent, _)) => candidate = parent.to_string(),
                None => return None,
            }
        }
    }
}

/// What one `auths` entry holds: `auth` (base64 of `user:password`), with an `identitytoken`
/// beside it if any. containers/image reads nothing else: `username`/`password` fields and an
/// identity token without `auth` give no credential there, so none here either.
fn entry_value(auth: DockerAuth) -> EntryValue {
    let identity_token = auth.identitytoken.filter(|t| !t.is_empty());
    let (username, password) = match auth.auth {
        Some(encoded) if !encoded.is_empty() => {
            match decode_auth(&encoded, identity_token.is_some()) {
                Ok(pair) => pair,
                Err(reason) => return EntryValue::Unusable(reason),
            }
        }
        _ => return EntryValue::Empty,
    };
    EntryValue::Credential(Credential {
        username,
        password,
        identity_token,
    })
}

/// `user:password` from an `auth` value; the error says what is wrong, never what is there.
fn decode_auth(encoded: &str, has_identity_token: bool) -> Result<(String, String), &'static str> {
    let decoded = BASE64
        .decode(encoded.trim())
        .map_err(|_| "auth is not base64")?;
    let decoded = String::from_utf8(decoded).map_err(|_| "auth is not UTF-8")?;
    match decoded.split_once(':') {
        // With an identity token, docker writes `<token>:` here: the name is a placeholder.
        Some((user, password)) if !user.is_empty() || has_identity_token => Ok((
            user.to_string(),
            password.trim_end_matches('\n').to_string(),
        )),
        _ => Err("auth is not user:password"),
    }
}

/// The key an `auths` key is filed under, as containers/image `normalizeAuthFileKey` reads it. A
/// URL (`https://…`, `http://…`; docker login's old form) stands for its host alone:
/// `https://mirror:5000/v1/` → `mirror:5000`. Without a scheme the key is kept as written, a
/// namespace if it has a path: `quay.io/org` covers `quay.io/org/…`, while `quay.io/org/` and
/// `index.docker.io/library` match nothing there, so nothing here. Only a bare host of docker.io's
/// other names is docker.io: `index.docker.io`, `https://index.docker.io/v1/` → `docker.io`.
fn normalise_key(key: &str) -> String {
    let key = match key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
    {
        Some(url) => url.split('/').next().unwrap_or(url),
        None => key,
    };
    match key {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::auth::refresh_token_form;

    fn keychain(json: &str) -> Keychain {
        Keychain::parse(json.as_bytes(), "test").unwrap()
    }

    #[test]
    fn lookup_prefers_the_most_specific_namespace() {
        let auth = |s: &str| BASE64.encode(s);
        let chain = keychain(&format!(
            r#"{{"auths": {{"quay.io": {{"auth": "{}"}}, "quay.io/openshift": {{"auth": "{}"}},
                "https://index.docker.io/v1/": {{"auth": "{}"}}, "mirror:5000": {{"auth": "{}"}}}}}}"#,
            auth("host:a"),
            auth("ns:b"),
            auth("hub:c"),
            auth("m:p")
        ));
        assert_eq!(
            chain
                .lookup("quay.io", "openshift/capi")
                .unwrap()
                .unwrap()
                .username,
            "ns"
        );
        assert_eq!(
            chain
                .lookup("quay.io", "other/capi")
                .unwrap()
                .unwrap()
                .username,
            "host"
        );
        assert_eq!(
            chain
                .lookup("docker.io", "library/busybox")
                .unwrap()
                .unwrap()
                .username,
            "hub"
        );
        assert_eq!(
            chain
                .lookup("registry-1.docker.io", "library/busybox")
                .unwrap()
                .unwrap()
                .username,
            "hub"
        );
        assert_eq!(
            chain.lookup("mirror:5000", "x").unwrap().unwrap().username,
            "m"
        );
        assert!(
            chain.lookup("mirror", "x").unwrap().is_none(),
            "the port is part of the key"
        );
        assert!(
            chain
                .lookup("quay.io.evil", "openshift/capi")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn identity_tokens_are_kept_as_refresh_tokens_and_never_shown() {
        let chain = keychain(&format!(
            r#"{{"auths":{{"r":{{"auth":"{}","identitytoken":"refresh-SECRET"}}}}}}"#,
            BASE64.encode("<token>:")
        ));
        let credential = chain.lookup("r", "x").unwrap().unwrap();
        assert_eq!(credential.identity_token.as_deref(), Some("refresh-SECRET"));
        assert!(!format!("{chain:?}").contains("refresh-SECRET"));
        // containers/image reads an identity token only beside an `auth`, and never the
        // `username`/`password` fields: such entries match and give no credential.
        let bare = keychain(
            r#"{"auths":{"r":{"identitytoken":"t"},"s":{"username":"u","password":"p"},"s/ns":{"auth":"dTpw"}}}"#,
        );
        assert!(bare.lookup("r", "x").unwrap().is_none());
        assert!(bare.lookup("s", "x").unwrap().is_none());
        assert!(bare.lookup("s", "ns/x").unwrap().is_some());
        assert_eq!(
            refresh_token_form("a&b", Some("svc"), "repository:x/y:pull"),
            "grant_type=refresh_token&client_id=provider-images&refresh_token=a%26b&scope=repository%3Ax%2Fy%3Apull&service=svc"
        );
    }

    #[test]
    fn a_secret_manifest_is_accepted() {
        let config = BASE64.encode(format!(
            r#"{{"auths":{{"r:1":{{"auth":"{}"}}}}}}"#,
            BASE64.encode("u:p")
        ));
        let yaml = format!(
            "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {config}\n"
        );
        let chain = Keychain::parse(yaml.as_bytes(), "secret.yaml").unwrap();
        assert_eq!(chain.lookup("r:1", "x").unwrap().unwrap().username, "u");
    }

    #[test]
    fn only_a_document_that_is_no_dockerconfigjson_fails_the_whole_pull_secret() {
        let err = Keychain::parse(b"[]", "ps.json").unwrap_err().to_string();
        assert!(
            err.contains("not a .dockerconfigjson") && err.contains("ps.json"),
            "{err}"
        );
        // Bad entries are judged when they match (see the no-fallback test), not here.
        let chain = keychain(r#"{"auths":{"a":{"auth":"%%%"},"b":{"auth":"bm9jb2xvbg=="}}}"#);
        assert_eq!(chain.len(), 2);
    }

    /// Keys as containers/image reads them (`normalizeAuthFileKey`, issue item 4): a key with a
    /// scheme stands for its host alone; without one its path is a namespace and is kept.
    #[test]
    fn keys_normalise_as_containers_image_reads_them() {
        for (key, normalised) in [
            (
                "https://mirror.example.com:5000/v1/",
                "mirror.example.com:5000",
            ),
            (
                "http://mirror.example.com:5000/v2/ns",
                "mirror.example.com:5000",
            ),
            ("https://mirror.example.com", "mirror.example.com"),
            ("https://quay.io/org/repo", "quay.io"),
            ("https://index.docker.io/v1/", "docker.io"),
            ("http://registry-1.docker.io", "docker.io"),
            ("mirror.example.com:5000", "mirror.example.com:5000"),
            // Without a scheme the key is used as written, so these match no reference.
            ("quay.io/org/", "quay.io/org/"),
            ("quay.io/org/repo", "quay.io/org/repo"),
            ("mirror.example.com:5000/v1", "mirror.example.com:5000/v1"),
            ("index.docker.io/library", "index.docker.io/library"),
            ("index.docker.io/v1/", "index.docker.io/v1/"),
            ("index.docker.io", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("Registry.Example.com/ns", "Registry.Example.com/ns"),
        ] {
            assert_eq!(normalise_key(key), normalised, "{key}");
        }
    }

    /// Only the most specific matching entry is used (containers/image `findCredentialsInFile`,
    /// issue item 4): an unusable one is an error naming its key, never its value, and a less
    /// specific entry does not answer instead; the other entries keep working.
    #[test]
    fn an_unusable_matching_entry_fails_naming_its_key_with_no_fallback() {
        let secret_in_bad_entry = BASE64.encode("no-colon-SECRET");
        let chain = keychain(&format!(
            r#"{{"auths": {{"r:5000": {{"auth": "{}"}}, "r:5000/ocp": {{"auth": "{secret_in_bad_entry}"}},
                "r:5000/junk": {{"auth": "%%%-SECRET"}}, "r:5000/latin1": {{"auth": "{}"}},
                "r:5000/empty": {{}}, "r:5000/nouser": {{"auth": "{}"}}}}}}"#,
            BASE64.encode("host:pw"),
            BASE64.encode([0xff, b':', b'p']),
            BASE64.encode(":pw"),
        ));
        for (repository, expected) in [
            ("ocp/capi", Err(("r:5000/ocp", "auth is not user:password"))),
            ("ocp", Err(("r:5000/ocp", "auth is not user:password"))),
            ("junk/x", Err(("r:5000/junk", "auth is not base64"))),
            ("latin1/x", Err(("r:5000/latin1", "auth is not UTF-8"))),
            (
                "nouser/x",
                Err(("r:5000/nouser", "auth is not user:password")),
            ),
            ("empty/x", Ok(None)),
            ("ocp-other/x", Ok(Some("host"))),
            ("other/x", Ok(Some("host"))),
        ] {
            let got = chain
                .lookup("r:5000", repository)
                .map(|c| c.map(|c| c.username.as_str()));
            match (got, expected) {
                (Ok(user), Ok(expected)) => assert_eq!(user, expected, "{repository}"),
                (Err(error), Err((key, reason))) => {
                    assert!(
                        matches!(&error, KeychainError::BadPullSecretEntry { origin, key: k, reason: r }
                            if origin == "test" && k == key && *r == reason),
                        "{repository}: {error:?}"
                    );
                    let shown = error.to_string();
                    assert!(shown.contains(&format!("{key:?}")), "{shown}");
                    assert!(
                        !shown.contains("SECRET") && !shown.contains(&secret_in_bad_entry),
                        "{shown}"
                    );
                }
                (got, expected) => panic!("{repository}: got {got:?}, expected {expected:?}"),
            }
        }
        let shown = |repository: &str| chain.entry("r:5000", repository).unwrap().to_string();
        assert_eq!(
            shown("ocp/x"),
            "r:5000/ocp (unusable: auth is not user:password)"
        );
        assert_eq!(shown("empty/x"), "r:5000/empty (empty entry: anonymous)");
        assert_eq!(shown("other/x"), "r:5000");
    }

    /// An old-style URL key answers for its host (issue item 4); among keys that normalise alike,
    /// the one written as the host wins, then the byte-smallest, whatever the document order.
    #[test]
    fn keys_that_normalise_alike_are_chosen_deterministically() {
        let entry =
            |user: &str| format!(r#"{{"auth": "{}"}}"#, BASE64.encode(format!("{user}:pw")));
        let user_for = |keys: &[(&str, &str)], registry: &str| {
            let auths: Vec<String> = keys
                .iter()
                .map(|(key, user)| format!("{key:?}: {}", entry(user)))
                .collect();
            let chain = keychain(&format!(r#"{{"auths": {{{}}}}}"#, auths.join(",")));
            let matched = chain.entry(registry, "ns/repo").map(|m| m.key.to_string());
            let user = chain
                .lookup(registry, "ns/repo")
                .unwrap()
                .map(|c| c.username.clone());
            (matched, user)
        };
        let url_only = [("https://m:5000/v1/", "url")];
        assert_eq!(
            user_for(&url_only, "m:5000"),
            (Some("https://m:5000/v1/".into()), Some("url".into()))
        );
        for keys in [
            [
                ("https://m:5000/v1/", "url"),
                ("m:5000", "host"),
                ("http://m:5000", "plain"),
            ],
            [
                ("http://m:5000", "plain"),
                ("https://m:5000/v1/", "url"),
                ("m:5000", "host"),
            ],
        ] {
            assert_eq!(
                user_for(&keys, "m:5000"),
                (Some("m:5000".into()), Some("host".into()))
            );
        }
        for keys in [
            [("https://m:5000/v1/", "url"), ("http://m:5000", "plain")],
            [("http://m:5000", "plain"), ("https://m:5000/v1/", "url")],
        ] {
            assert_eq!(
                user_for(&keys, "m:5000"),
                (Some("http://m:5000".into()), Some("plain".into()))
            );
        }
        for keys in [
            [
                ("https://index.docker.io/v1/", "url"),
                ("docker.io", "host"),
            ],
            [
                ("docker.io", "host"),
                ("https://index.docker.io/v1/", "url"),
            ],
        ] {
            assert_eq!(
                user_for(&keys, "registry-1.docker.io"),
                (Some("docker.io".into()), Some("host".into()))
            );
        }
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let chain = keychain(&format!(
            r#"{{"auths":{{"r":{{"auth":"{}"}}}}}}"#,
            BASE64.encode("user:pw-SECRET")
        ));
        let shown = format!(
            "{chain:?} {:?}",
            chain.lookup("r", "x").unwrap().unwrap().basic_header()
        );
        assert!(
            !shown.contains("pw-SECRET") && !shown.contains(&BASE64.encode("user:pw-SECRET")),
            "{shown}"
        );
    }
}
