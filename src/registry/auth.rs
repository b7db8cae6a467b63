//! Registry authorization: Basic and Bearer challenges, tokens cached per registry and scope, and
//! the one entry point that sends a request authorized as the registry asks. Credentials come from
//! the keychain; nothing in here logs or displays a secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri};
use hyper::body::Incoming;
use serde::Deserialize;
use thiserror::Error;

use crate::plan::Source;
use crate::plan::keychain::{Credential, Keychain, KeychainError, sensitive};
use crate::transport::{Insecure, SafeUrl, Transport, TransportError};

/// Token responses are small; a larger body is a broken or hostile realm.
const MAX_TOKEN_RESPONSE: usize = 1 << 20;
/// The token lifetime assumed when the realm does not say (the distribution spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
pub(crate) enum AuthError {
    #[error(transparent)]
    Keychain(#[from] KeychainError),
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
pub(crate) struct Authenticator {
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
pub(crate) struct FirstContact(tokio::sync::OwnedMutexGuard<bool>);

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
    pub(crate) fn new(keychain: Arc<Keychain>) -> Authenticator {
        Authenticator {
            keychain,
            challenges: Mutex::default(),
            tokens: Mutex::default(),
            first_contacts: Mutex::default(),
        }
    }

    /// Sends a request (`send`, given the authorization to send) authorized as the registry asks,
    /// and once more with fresh authorization when the registry answers 401 for the first time in
    /// this request (`challenged`: a token that expired or was revoked early).
    pub(crate) async fn send<E>(
        &self,
        transport: &Transport,
        source: &Source,
        challenged: &mut bool,
        send: impl AsyncFn(Option<&HeaderValue>) -> Result<Response<Incoming>, E>,
    ) -> Result<Response<Incoming>, E>
    where
        E: From<AuthError>,
    {
        let first_contact = self.first_contact(&source.registry, source.insecure).await;
        let authorization = self
            .authorization(
                transport,
                &source.registry,
                source.insecure,
                &source.repository,
            )
            .await?;
        let response = send(authorization.as_ref()).await?;
        if response.status() != StatusCode::UNAUTHORIZED || *challenged {
            return Ok(response);
        }
        *challenged = true;
        let answer = self
            .challenged(
                transport,
                &source.registry,
                source.insecure,
                &source.repository,
                response.headers().get(WWW_AUTHENTICATE),
                authorization.as_ref(),
            )
            .await?;
        // The challenge is known: the requests waiting for it go on.
        drop(first_contact);
        match answer {
            Some(answer) if Some(&answer) != authorization.as_ref() => send(Some(&answer)).await,
            _ => Ok(response),
        }
    }

    /// The first request to `registry` in this run gets a [`FirstContact`] to hold until it has its
    /// answer, and the requests sent meanwhile wait for that (up to [`FIRST_CONTACT_WAIT`]): so
    /// the registry's challenge is learned from one 401, not from one per request sent at once.
    async fn first_contact(&self, registry: &str, insecure: bool) -> Option<FirstContact> {
        let gate =
            shared_entry(&self.first_contacts, (registry.to_string(), insecure)).lock_owned();
        let tried = tokio::time::timeout(FIRST_CONTACT_WAIT, gate).await.ok()?;
        (!*tried).then_some(FirstContact(tried))
    }

    pub(crate) fn has_credentials(&self, registry: &str, repository: &str) -> bool {
        matches!(self.keychain.lookup(registry, repository), Ok(Some(_)))
    }

    /// The Authorization header to send to `registry` for pulling `repository` without waiting for a 401,
    /// when the registry's challenge is already known (fetching a token if the cached one expired).
    async fn authorization(
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
    async fn challenged(
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
        .and_then(|c| c.identity_token())
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
pub(crate) fn refresh_token_form(
    refresh_token: &str,
    service: Option<&str>,
    scope: &str,
) -> String {
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
