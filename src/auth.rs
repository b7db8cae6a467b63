//! Registry credentials: the dockerconfigjson keychain, Basic and Bearer challenges, and a token cache per
//! registry and scope. Nothing in here logs or displays a secret: credential types have redacting `Debug`,
//! and authorization headers are marked sensitive.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use serde::Deserialize;
use thiserror::Error;

use crate::transport::{Insecure, SafeUrl, Transport, TransportError};

/// Token responses are small; a larger body is a broken or hostile realm.
const MAX_TOKEN_RESPONSE: usize = 1 << 20;
/// The token lifetime assumed when the realm does not say (the distribution spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
pub enum AuthError {
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
    #[error("token request to {realm} failed: {cause}")]
    TokenRequest { realm: SafeUrl, cause: String },
    #[error("token request to {realm}: {status}")]
    TokenStatus { realm: SafeUrl, status: StatusCode },
    #[error(
        "token realm {realm} of registry {registry} is not https; not sending credentials there"
    )]
    InsecureRealm { realm: SafeUrl, registry: String },
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// A username and password for one registry (or one namespace of it).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
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
    fn basic_header(&self) -> HeaderValue {
        let encoded = BASE64.encode(format!("{}:{}", self.username, self.password));
        sensitive(&format!("Basic {encoded}"))
    }
}

fn sensitive(value: &str) -> HeaderValue {
    let mut header = HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""));
    header.set_sensitive(true);
    header
}

/// The `auths` of a `.dockerconfigjson`, keyed by normalised `host[:port][/namespace…]`.
#[derive(Debug, Default, Clone)]
pub struct Keychain {
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
pub struct Matched<'a> {
    /// The key as written in the pull secret.
    pub key: &'a str,
    value: &'a EntryValue,
    origin: &'a str,
}

impl<'a> Matched<'a> {
    /// The credential to send; none for an empty entry; an error naming the key for an unusable one.
    pub fn credential(&self) -> Result<Option<&'a Credential>, AuthError> {
        match self.value {
            EntryValue::Credential(credential) => Ok(Some(credential)),
            EntryValue::Empty => Ok(None),
            EntryValue::Unusable(reason) => Err(AuthError::BadPullSecretEntry {
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
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Keychain, AuthError> {
        let bad = |message: String| AuthError::BadPullSecret {
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

    fn parse_config(bytes: &[u8], origin: &str) -> Result<Keychain, AuthError> {
        let config: DockerConfig =
            serde_json::from_slice(bytes).map_err(|e| AuthError::BadPullSecret {
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

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The credential for `repository` on `registry` (`host[:port]` actually contacted), from the
    /// entry [`entry`](Self::entry) finds: an error if that entry is unusable.
    pub fn lookup(
        &self,
        registry: &str,
        repository: &str,
    ) -> Result<Option<&Credential>, AuthError> {
        match self.entry(registry, repository) {
            Some(matched) => matched.credential(),
            None => Ok(None),
        }
    }

    /// The most specific entry for `repository` on `registry` (`host/org/repo`, then `host/org`,
    /// then the host's own entry), as the node does. Only that one is used, whatever it holds.
    pub fn entry(&self, registry: &str, repository: &str) -> Option<Matched<'_>> {
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

/// One `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Parses the first Basic or Bearer challenge of a `WWW-Authenticate` value (RFC 7235 auth-params,
/// quoted strings with backslash escapes).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
        })
    } else {
        None
    }
}

fn parse_params(mut input: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    loop {
        input = input.trim_start_matches([' ', ',', '\t']);
        let Some((name, rest)) = input.split_once('=') else {
            return params;
        };
        let name = name.trim().to_string();
        let rest = rest.trim_start();
        let (value, remaining) = if let Some(quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            (rest[..end].trim().to_string(), &rest[end..])
        };
        params.push((name, value));
        input = remaining;
    }
}

struct Token {
    header: HeaderValue,
    expires: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// Authorization for registry requests: learns each registry's challenge on its first 401 and then
/// authorizes later requests up front.
///
/// Everything learned is kept per [`Endpoint`], the registry *and* whether it was reached insecurely:
/// a challenge that came over unverified TLS may name any realm, and must never send a secure
/// source's credentials there.
pub struct Authenticator {
    keychain: Arc<Keychain>,
    challenges: Mutex<HashMap<Endpoint, Challenge>>,
    /// By endpoint and scope. Requests that need a token for one scope at once wait for the one
    /// token request that is under way, rather than each asking the realm.
    tokens: Mutex<HashMap<(Endpoint, String), Arc<TokenSlot>>>,
    /// By endpoint: whether its first request was tried (see `first_contact`).
    first_contacts: Mutex<HashMap<Endpoint, Arc<tokio::sync::Mutex<bool>>>>,
}

/// A registry (`host[:port]`) and whether its pull source is insecure.
type Endpoint = (String, bool);

/// Held by the first request sent to a registry; see [`Authenticator::first_contact`]. Dropped,
/// it lets the others go, whatever the registry answered, if anything: they wait for one try.
pub struct FirstContact(tokio::sync::OwnedMutexGuard<bool>);

impl Drop for FirstContact {
    fn drop(&mut self) {
        *self.0 = true;
    }
}

/// How long a request waits for the first one to a registry before it goes on alone: a registry
/// that answers at all answers a 401 sooner, and one that does not is not waited for in turn.
const FIRST_CONTACT_WAIT: Duration = Duration::from_secs(1);

/// One scope's token, if any; locked across the token request that renews it.
type TokenSlot = tokio::sync::Mutex<Option<Token>>;

/// The value kept for `key` (a default one, if none yet): shared, for callers to wait on together.
fn shared_entry<K: Eq + std::hash::Hash, V: Default>(
    map: &Mutex<HashMap<K, Arc<V>>>,
    key: K,
) -> Arc<V> {
    map.lock().unwrap().entry(key).or_default().clone()
}

impl Authenticator {
    pub fn new(keychain: Arc<Keychain>) -> Authenticator {
        Authenticator {
            keychain,
            challenges: Mutex::default(),
            tokens: Mutex::default(),
            first_contacts: Mutex::default(),
        }
    }

    /// The first request to `registry` in this run gets a [`FirstContact`] to hold until it has its
    /// answer, and the requests sent meanwhile wait for that (up to [`FIRST_CONTACT_WAIT`]): so
    /// the registry's challenge is learned from one 401, not from one per request sent at once.
    pub async fn first_contact(&self, registry: &str, insecure: bool) -> Option<FirstContact> {
        let gate =
            shared_entry(&self.first_contacts, (registry.to_string(), insecure)).lock_owned();
        let tried = tokio::time::timeout(FIRST_CONTACT_WAIT, gate).await.ok()?;
        (!*tried).then_some(FirstContact(tried))
    }

    pub fn has_credentials(&self, registry: &str, repository: &str) -> bool {
        matches!(self.keychain.lookup(registry, repository), Ok(Some(_)))
    }

    /// The Authorization header to send to `registry` for pulling `repository` without waiting for a 401,
    /// when the registry's challenge is already known (fetching a token if the cached one expired).
    pub async fn authorization(
        &self,
        transport: &Transport,
        registry: &str,
        insecure: bool,
        repository: &str,
    ) -> Result<Option<HeaderValue>, AuthError> {
        // An unusable entry for this repository fails its requests before any is sent.
        self.keychain.lookup(registry, repository)?;
        let endpoint = (registry.to_string(), insecure);
        let challenge = self.challenges.lock().unwrap().get(&endpoint).cloned();
        match challenge {
            None => Ok(None),
            Some(challenge) => {
                self.answer(transport, endpoint, repository, &challenge, None)
                    .await
            }
        }
    }

    /// Learns the challenge of a 401 answer to a request sent with `refused` and returns the
    /// authorization to retry with (None when there is nothing better to offer than what was sent).
    pub async fn challenged(
        &self,
        transport: &Transport,
        registry: &str,
        insecure: bool,
        repository: &str,
        www_authenticate: Option<&HeaderValue>,
        refused: Option<&HeaderValue>,
    ) -> Result<Option<HeaderValue>, AuthError> {
        let Some(challenge) = www_authenticate
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge)
        else {
            return Ok(None);
        };
        let endpoint = (registry.to_string(), insecure);
        self.challenges
            .lock()
            .unwrap()
            .insert(endpoint.clone(), challenge.clone());
        self.answer(transport, endpoint, repository, &challenge, refused)
            .await
    }

    /// The authorization for `challenge`: the cached token of the scope unless it expired or is the
    /// one just `refused` (then the realm is asked again, once, however many requests were refused).
    async fn answer(
        &self,
        transport: &Transport,
        endpoint: Endpoint,
        repository: &str,
        challenge: &Challenge,
        refused: Option<&HeaderValue>,
    ) -> Result<Option<HeaderValue>, AuthError> {
        let registry = endpoint.0.as_str();
        let insecure = Insecure::registry(registry, endpoint.1);
        let credential = self.keychain.lookup(registry, repository)?;
        match challenge {
            Challenge::Basic => Ok(credential.map(Credential::basic_header)),
            Challenge::Bearer { realm, service } => {
                let scope = pull_scope(repository);
                let slot = shared_entry(&self.tokens, (endpoint.clone(), scope.clone()));
                let mut cached = slot.lock().await;
                if let Some(token) = cached.as_ref()
                    && token.expires > Instant::now()
                    && Some(&token.header) != refused
                {
                    return Ok(Some(token.header.clone()));
                }
                let token = fetch_token(
                    transport,
                    registry,
                    insecure,
                    realm,
                    service.as_deref(),
                    &scope,
                    credential,
                )
                .await?;
                let header = token.header.clone();
                *cached = Some(token);
                Ok(Some(header))
            }
        }
    }
}

fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

async fn fetch_token(
    transport: &Transport,
    registry: &str,
    insecure: Insecure<'_>,
    realm: &str,
    service: Option<&str>,
    scope: &str,
    credential: Option<&Credential>,
) -> Result<Token, AuthError> {
    let mut url = realm.to_string();
    let mut separator = if url.contains('?') { '&' } else { '?' };
    for (name, value) in [("service", service), ("scope", Some(scope))] {
        if let Some(value) = value {
            url.push(separator);
            url.push_str(name);
            url.push('=');
            url.push_str(&percent_encode(value));
            separator = '&';
        }
    }
    let uri: Uri = url
        .parse()
        .map_err(|_| TransportError::BadUrl(format!("token realm of {registry}")))?;
    let realm_url = SafeUrl::new(&uri);
    let grant_form = credential
        .and_then(|c| c.identity_token.as_deref())
        .map(|refresh_token| refresh_token_form(refresh_token, service, scope));
    // Credentials go to a realm only over https, or back to the registry's own host.
    let realm_host = uri.authority().map_or_else(String::new, |a| a.to_string());
    let same_host = realm_host == registry;
    let authorization = match credential {
        Some(credential) if uri.scheme_str() == Some("https") || same_host => {
            Some(credential.basic_header())
        }
        Some(_) => {
            return Err(AuthError::InsecureRealm {
                realm: realm_url,
                registry: registry.to_string(),
            });
        }
        None => None,
    };
    tracing::debug!(realm = %realm_url, registry, scope, with_credentials = authorization.is_some(), refresh_token = grant_form.is_some(), "requesting token");
    let response = match grant_form {
        // The OAuth2 refresh-token grant, as docker and containers/image use an identity token.
        Some(form) => {
            let realm_only: Uri = realm
                .parse()
                .map_err(|_| TransportError::BadUrl(format!("token realm of {registry}")))?;
            transport.post_form(realm_only, form, insecure).await?
        }
        None => {
            transport
                .get(uri, &HeaderMap::new(), authorization.as_ref(), insecure)
                .await?
        }
    };
    let status = response.status();
    if !status.is_success() {
        return Err(AuthError::TokenStatus {
            realm: realm_url,
            status,
        });
    }
    // A token answer is small: all of it is due within the response timeout, so a realm that stalls
    // midway is tried again (a timeout is transient) rather than holding every request of the scope.
    let after = transport.response_timeout();
    let body = tokio::time::timeout(
        after,
        crate::transport::body::read_capped(response.into_body(), MAX_TOKEN_RESPONSE, None),
    )
    .await
    .map_err(|_| TransportError::Timeout {
        host: realm_host,
        after,
    })?
    .map_err(|failure| AuthError::TokenRequest {
        realm: realm_url.clone(),
        cause: failure.to_string(),
    })?;
    let parsed: TokenResponse =
        serde_json::from_slice(&body).map_err(|e| AuthError::TokenRequest {
            realm: realm_url.clone(),
            cause: format!("response is not a token: {e}"),
        })?;
    let token = parsed
        .token
        .filter(|t| !t.is_empty())
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AuthError::TokenRequest {
            realm: realm_url.clone(),
            cause: "response has no token".into(),
        })?;
    let lifetime = parsed
        .expires_in
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TOKEN_LIFETIME);
    // Renew a little early so a token does not expire between the check and the request.
    let expires = Instant::now()
        + lifetime
            .saturating_sub(Duration::from_secs(5))
            .max(Duration::from_secs(1));
    Ok(Token {
        header: sensitive(&format!("Bearer {token}")),
        expires,
    })
}

/// `grant_type=refresh_token&…`, the form of an OAuth2 refresh-token grant at a registry token realm.
fn refresh_token_form(refresh_token: &str, service: Option<&str>, scope: &str) -> String {
    let mut form = format!(
        "grant_type=refresh_token&client_id=provider-images&refresh_token={}&scope={}",
        percent_encode(refresh_token),
        percent_encode(scope)
    );
    if let Some(service) = service {
        form.push_str("&service=");
        form.push_str(&percent_encode(service));
    }
    form
}

fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keychain(json: &str) -> Keychain {
        Keychain::parse(json.as_bytes(), "test").unwrap()
    }

    #[tokio::test]
    async fn requests_wait_for_the_first_one_to_a_registry_once_and_briefly() {
        let auth = Arc::new(Authenticator::new(Arc::new(keychain(r#"{"auths":{}}"#))));
        let first = auth
            .first_contact("r", false)
            .await
            .expect("the first request");
        assert!(
            auth.first_contact("other", false).await.is_some(),
            "per registry"
        );
        // Sent meanwhile: waits for the first, and goes on when it is done.
        let waiter = tokio::spawn({
            let auth = auth.clone();
            async move { auth.first_contact("r", false).await.is_none() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(first);
        assert!(waiter.await.unwrap(), "not a first request");
        assert!(auth.first_contact("r", false).await.is_none());
        // A first request that takes long is waited for FIRST_CONTACT_WAIT at most.
        let slow = auth
            .first_contact("slow", false)
            .await
            .expect("the first request");
        let started = Instant::now();
        assert!(auth.first_contact("slow", false).await.is_none());
        let waited = started.elapsed();
        assert!(
            waited >= FIRST_CONTACT_WAIT && waited < FIRST_CONTACT_WAIT * 3,
            "{waited:?}"
        );
        drop(slow);
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
                        matches!(&error, AuthError::BadPullSecretEntry { origin, key: k, reason: r }
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

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into())
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(r#"bearer realm="https://a/\"t\"", service=svc"#),
            Some(Challenge::Bearer {
                realm: "https://a/\"t\"".into(),
                service: Some("svc".into())
            })
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(
            parse_challenge("Bearer service=x"),
            None,
            "a Bearer challenge needs a realm"
        );
    }

    #[test]
    fn scope_values_are_percent_encoded() {
        assert_eq!(
            percent_encode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }
}
