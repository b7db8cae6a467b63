//! A synchronous HTTPS client for the harness itself (pushing, reading back): hyper + hyper-rustls
//! trusting only the test CA (plain HTTP for `http://` URLs, as plain-HTTP test registries need),
//! answering Basic and Bearer challenges as a registry client does.

use std::collections::HashMap;
use std::error::Error;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, USER_AGENT};
use hyper::{HeaderMap, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::tls::client_config;
use super::urlenc;

/// Long enough for any loopback request in a test, short enough that a hung fake fails the test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Lets a registry's access log tell the harness's own requests from the binary's.
pub const HARNESS_USER_AGENT: &str = "provider-images-test-harness";

/// A fully read response.
pub struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    /// The value of a header, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub struct Client {
    /// Own runtime, so callers stay synchronous; hyper's pooled connections live on it.
    runtime: tokio::runtime::Runtime,
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    credentials: Option<(String, String)>,
    /// Per host:port, the Authorization that last got past a challenge, sent up front next
    /// time so most requests skip the 401 round trip (a token for a repository covers all its
    /// requests). Per host, so credentials never reach a host that did not ask for them.
    authorization: Mutex<HashMap<String, String>>,
}

impl Client {
    /// An anonymous client trusting exactly the CA certificates in `ca_pem` for `https://` URLs.
    pub fn new(ca_pem: &Path) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime");
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(client_config(ca_pem))
            .https_or_http()
            .enable_http1()
            .build();
        Client {
            runtime,
            http: HyperClient::builder(TokioExecutor::new()).build(connector),
            credentials: None,
            authorization: Mutex::new(HashMap::new()),
        }
    }

    /// Answers 401 challenges with these credentials: Basic directly, Bearer via the realm.
    pub fn with_credentials(mut self, user: &str, pass: &str) -> Self {
        self.credentials = Some((user.to_owned(), pass.to_owned()));
        self
    }

    pub fn get(&self, url: &str) -> HttpResponse {
        self.request("GET", url, &[], Bytes::new())
    }

    /// Like `try_request`, panicking on transport errors.
    pub fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> HttpResponse {
        self.try_request(method, url, headers, body)
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
    }

    /// Sends a request; with credentials, a 401 is answered once, as a registry client would,
    /// unless `headers` carry their own Authorization (then it is sent as is, alone).
    /// Err: no response (refused, TLS, timeout; with the whole cause chain) or a challenge that
    /// could not be answered.
    pub fn try_request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<HttpResponse, String> {
        let body = body.into();
        let authority = url
            .parse::<Uri>()
            .map_err(|e| format!("{url}: {e}"))?
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let explicit = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("authorization"));
        let remembered = if explicit {
            None
        } else {
            self.authorization.lock().unwrap().get(&authority).cloned()
        };
        let response = self.send(method, url, headers, body.clone(), remembered.as_deref())?;
        let (Some((user, pass)), false) = (&self.credentials, explicit) else {
            return Ok(response);
        };
        if response.status != 401 {
            return Ok(response);
        }
        let challenge = response
            .header("www-authenticate")
            .ok_or_else(|| format!("{method} {url}: 401 without WWW-Authenticate"))?;
        let authorization = match parse_challenge(challenge) {
            (scheme, _) if scheme.eq_ignore_ascii_case("bearer") => {
                format!("Bearer {}", self.bearer_token(challenge)?)
            }
            _ => basic_authorization(user, pass),
        };
        let response = self.send(method, url, headers, body, Some(&authorization))?;
        self.authorization
            .lock()
            .unwrap()
            .insert(authority, authorization);
        Ok(response)
    }

    /// Gets a token from the realm of a `WWW-Authenticate: Bearer …` challenge, for its service
    /// and scope, sending this client's credentials (if any) as Basic.
    pub fn bearer_token(&self, challenge: &str) -> Result<String, String> {
        let (_, params) = parse_challenge(challenge);
        let param = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let realm = param("realm").ok_or_else(|| format!("no realm in {challenge:?}"))?;
        // A realm named for the test proxy (`RegistryOpts::proxy_names`) is ours on 127.0.0.1,
        // which the test certificates cover too; the harness itself never goes through a proxy.
        let realm = super::proxy::PROXY_NAMES
            .iter()
            .fold(realm.to_string(), |realm, name| {
                realm.replace(&format!("https://{name}:"), "https://127.0.0.1:")
            });
        let query: Vec<String> = ["service", "scope"]
            .into_iter()
            .filter_map(|name| param(name).map(|v| format!("{name}={}", urlenc::encode(v))))
            .collect();
        let url = format!("{realm}?{}", query.join("&"));
        let basic = self
            .credentials
            .as_ref()
            .map(|(user, pass)| basic_authorization(user, pass));
        let response = self.send("GET", &url, &[], Bytes::new(), basic.as_deref())?;
        if response.status != 200 {
            return Err(format!(
                "token GET {url}: {} {}",
                response.status,
                response.text()
            ));
        }
        let json: serde_json::Value = serde_json::from_slice(&response.body)
            .map_err(|e| format!("token response from {url}: {e}"))?;
        ["token", "access_token"]
            .into_iter()
            .find_map(|field| json[field].as_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("no token in {json}"))
    }

    fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        authorization: Option<&str>,
    ) -> Result<HttpResponse, String> {
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(url)
            .header(USER_AGENT, HARNESS_USER_AGENT);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if let Some(authorization) = authorization {
            builder = builder.header(AUTHORIZATION, authorization);
        }
        let request = builder.body(Full::new(body)).map_err(|e| e.to_string())?;
        self.runtime.block_on(async {
            let response = tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(request))
                .await
                .map_err(|_| format!("no response within {REQUEST_TIMEOUT:?}"))?
                .map_err(|e| cause_chain(&e))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| cause_chain(&e))?
                .to_bytes();
            Ok(HttpResponse {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        })
    }
}

/// `Basic base64(user:pass)`.
pub(crate) fn basic_authorization(user: &str, pass: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")))
}

/// hyper's top-level errors say little ("client error (Connect)"); the cause (e.g. rustls'
/// UnknownIssuer) is further down the chain, and tests assert on it.
fn cause_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Splits `Scheme name="value", name=value` into the scheme and its parameters (names
/// lowercased). Quoted values may hold commas, as a scope `repository:x:pull,push` does.
fn parse_challenge(header: &str) -> (String, Vec<(String, String)>) {
    let header = header.trim();
    let (scheme, mut rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => unquote(quoted),
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_owned(), &after[end..])
            }
        };
        params.push((name.trim().to_ascii_lowercase(), value));
        rest = after;
    }
    (scheme.to_owned(), params)
}

/// Reads a quoted-string body (after its opening quote): the unescaped value and what follows
/// the closing quote.
fn unquote(quoted: &str) -> (String, &str) {
    let mut value = String::new();
    let mut escaped = false;
    for (i, c) in quoted.char_indices() {
        match c {
            _ if escaped => {
                value.push(c);
                escaped = false;
            }
            '\\' => escaped = true,
            '"' => return (value, &quoted[i + 1..]),
            _ => value.push(c),
        }
    }
    (value, "")
}
