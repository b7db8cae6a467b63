//! One HTTP client for everything that talks to registries: TLS, proxies, redirects and timeouts.
//! Knows nothing of OCI: registries, tokens and blobs are URLs and bodies here.
//!
//! hyper follows no redirects, so the loop is ours: it strips the registry's `Authorization` when a
//! redirect leaves the origin it was meant for (blob downloads are often redirected to object storage with
//! a signed URL), refuses schemes other than http(s) and https → http downgrades, and caps the hops.
//! URLs are shown without their query in errors and logs: signed URLs carry secrets there.
//!
//! Every connection the client opens goes through [`ProxyConnector`], which decides per target URL
//! (registry, token realm, redirect target alike) whether to go direct or through a proxy.
//!
//! TLS is verified on every request but those to the one `host[:port]` of an insecure pull source
//! that the request serves ([`Insecure`]): its token realm or a redirect on that same host and port
//! inherit the setting (a self-signed mirror answers tokens on its own origin); any other host is
//! verified. The node uses one unverified client for all of an insecure source's requests; we
//! are stricter.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, LOCATION, PROXY_AUTHORIZATION, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use thiserror::Error;

use crate::error::error_chain;
use proxy::Proxies;
use proxy::connector::{ProxyConnector, ProxyError};
use trust::{Roots, TrustError};

pub(crate) mod body;
pub mod proxy;
pub mod retry;
pub(crate) mod trust;

const MAX_REDIRECTS: usize = 5;
pub(crate) const USER_AGENT_VALUE: &str = concat!("provider-images/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Error)]
pub(crate) enum TransportError {
    #[error("cannot connect to {host}: {cause}")]
    Connect {
        host: String,
        cause: String,
        /// Whether another try may succeed (see `retry::is_transient`).
        transient: bool,
    },
    #[error("{host} did not answer within {after:?}")]
    Timeout { host: String, after: Duration },
    #[error("more than {MAX_REDIRECTS} redirects from {url}")]
    TooManyRedirects { url: SafeUrl },
    #[error("refusing redirect from {from} to {to}: {why}")]
    BadRedirect {
        from: SafeUrl,
        to: String,
        why: &'static str,
    },
    #[error("invalid URL {0}")]
    BadUrl(String),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
}

/// A URL as it may be shown: without its query string or user info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SafeUrl(String);

impl SafeUrl {
    pub(crate) fn new(uri: &Uri) -> SafeUrl {
        let scheme = uri.scheme_str().unwrap_or("https");
        let host = uri.host().unwrap_or("");
        let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
        let query = if uri.query().is_some() { "?…" } else { "" };
        SafeUrl(format!("{scheme}://{host}{port}{}{query}", uri.path()))
    }
}

impl fmt::Display for SafeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) struct TransportConfig {
    pub(crate) roots: Roots,
    pub(crate) connect_timeout: Duration,
    /// How long to wait for a response's headers.
    pub(crate) response_timeout: Duration,
    pub(crate) proxies: Arc<Proxies>,
}

type HttpsClient = Client<HttpsConnector<ProxyConnector>, Full<Bytes>>;

pub(crate) struct Transport {
    verified: HttpsClient,
    unverified: HttpsClient,
    response_timeout: Duration,
    proxies: Arc<Proxies>,
}

impl Transport {
    pub(crate) fn new(config: TransportConfig) -> Result<Transport, TransportError> {
        let verified = trust::verifying_config(&config.roots)?;
        // A proxy is verified like a registry (never with an insecure registry's configuration),
        // and spoken to in HTTP/1.1 only: no ALPN.
        let proxy_tls = Arc::new(verified.clone());
        let build = |tls: rustls::ClientConfig| {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_connect_timeout(Some(config.connect_timeout));
            http.set_nodelay(true);
            let connector = ProxyConnector::new(http, proxy_tls.clone(), config.proxies.clone());
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(connector);
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(https)
        };
        Ok(Transport {
            verified: build(verified),
            unverified: build(trust::unverified_config()?),
            response_timeout: config.response_timeout,
            proxies: config.proxies,
        })
    }

    /// How long a response may take to arrive.
    pub(crate) fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// GETs `url`, following redirects. `authorization` goes only to `url`'s own origin (scheme, host and
    /// port): never to a redirect target elsewhere.
    pub(crate) async fn get(
        &self,
        url: Uri,
        headers: &HeaderMap,
        authorization: Option<&HeaderValue>,
        insecure: Insecure<'_>,
    ) -> Result<Response<Incoming>, TransportError> {
        let origin = Origin::of(&url)?;
        let mut current = url;
        for _ in 0..=MAX_REDIRECTS {
            let mut builder = Request::builder()
                .method(Method::GET)
                .uri(current.clone())
                .header(USER_AGENT, USER_AGENT_VALUE);
            for (name, value) in headers {
                builder = builder.header(name, value);
            }
            if let Some(value) = authorization
                && Origin::of(&current)? == origin
            {
                builder = builder.header(AUTHORIZATION, value);
            }
            let request = builder
                .body(Full::default())
                .map_err(|_| TransportError::BadUrl(SafeUrl::new(&current).to_string()))?;
            let response = self.send(request, insecure).await?;
            if !is_redirect(response.status()) {
                return Ok(response);
            }
            current = redirect_target(&current, response.headers().get(LOCATION))?;
            // Only an insecure source's own registry may be reached over http after https.
            if current.scheme_str() == Some("http")
                && origin.scheme == "https"
                && !insecure.covers(&current)
            {
                return Err(TransportError::BadRedirect {
                    from: SafeUrl::new(&origin.uri()),
                    to: SafeUrl::new(&current).to_string(),
                    why: "https to http downgrade",
                });
            }
            tracing::debug!(to = %SafeUrl::new(&current), "following redirect");
        }
        Err(TransportError::TooManyRedirects {
            url: SafeUrl::new(&origin.uri()),
        })
    }

    /// POSTs a form (an OAuth2 token grant). Redirects are not followed: a token endpoint answers itself.
    pub(crate) async fn post_form(
        &self,
        url: Uri,
        form: String,
        insecure: Insecure<'_>,
    ) -> Result<Response<Incoming>, TransportError> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Full::new(Bytes::from(form)))
            .map_err(|_| TransportError::BadUrl(SafeUrl::new(&url).to_string()))?;
        self.send(request, insecure).await
    }

    async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
        insecure: Insecure<'_>,
    ) -> Result<Response<Incoming>, TransportError> {
        let authority = Origin::of(request.uri())?.authority();
        let client = if insecure.covers(request.uri()) {
            &self.unverified
        } else {
            &self.verified
        };
        // A plain-http request goes to the proxy itself, so its credentials ride on the request;
        // an https one is tunnelled, and the connector sends them with the CONNECT only.
        let plain_proxy = match self.proxies.for_uri(request.uri()) {
            Some(proxy) if request.uri().scheme_str() == Some("http") => Some(proxy),
            _ => None,
        };
        if let Some(value) = plain_proxy.and_then(|proxy| proxy.authorization()) {
            request
                .headers_mut()
                .insert(PROXY_AUTHORIZATION, value.clone());
        }
        match tokio::time::timeout(self.response_timeout, client.request(request)).await {
            Err(_) => Err(TransportError::Timeout {
                host: authority,
                after: self.response_timeout,
            }),
            Ok(Err(error)) => match ProxyError::find(&error) {
                Some(proxy_error) => Err(proxy_error.clone().into()),
                None => Err(TransportError::Connect {
                    host: authority,
                    cause: error_chain(&error),
                    transient: retry::is_transient(&error),
                }),
            },
            Ok(Ok(response)) => match plain_proxy {
                Some(proxy) if response.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED => {
                    Err(ProxyError::Refused {
                        target: authority,
                        proxy: proxy.authority(),
                        status: response.status(),
                    }
                    .into())
                }
                _ => Ok(response),
            },
        }
    }
}

/// The registry (`host[:port]`, as in an image reference) of the insecure pull source a request
/// serves, if that source is insecure. A request is sent unverified (and may be plain http) only
/// when it goes to that same host and port; without a port, the scheme's default port.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Insecure<'a>(Option<&'a str>);

impl<'a> Insecure<'a> {
    /// Requests to `registry` unverified when `insecure`, all others verified.
    pub(crate) fn registry(registry: &'a str, insecure: bool) -> Insecure<'a> {
        Insecure(insecure.then_some(registry))
    }

    /// Whether a request to `url` may skip verification.
    fn covers(&self, url: &Uri) -> bool {
        let Some(registry) = self.0 else {
            return false;
        };
        let (Some(host), Ok(target)) = (url.host(), Origin::of(url)) else {
            return false;
        };
        let Ok(named) = format!("{}://{registry}/", target.scheme).parse::<Uri>() else {
            return false;
        };
        named.host().is_some_and(|h| h.eq_ignore_ascii_case(host))
            && Origin::of(&named).is_ok_and(|named| named.port == target.port)
    }
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Scheme, host and port: what credentials are bound to (RFC 6454 origin, default ports made explicit).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn of(uri: &Uri) -> Result<Origin, TransportError> {
        let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => return Err(TransportError::BadUrl(SafeUrl::new(uri).to_string())),
        };
        let host = uri
            .host()
            .ok_or_else(|| TransportError::BadUrl(SafeUrl::new(uri).to_string()))?
            .to_ascii_lowercase();
        Ok(Origin {
            scheme,
            host,
            port: uri.port_u16().unwrap_or(default_port),
        })
    }

    fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn uri(&self) -> Uri {
        format!("{}://{}:{}/", self.scheme, self.host, self.port)
            .parse()
            .unwrap_or_default()
    }
}

/// Resolves a `Location` header against the URL that answered with it.
fn redirect_target(base: &Uri, location: Option<&HeaderValue>) -> Result<Uri, TransportError> {
    let bad = |why| TransportError::BadRedirect {
        from: SafeUrl::new(base),
        to: location
            .and_then(|l| l.to_str().ok())
            .map(|l| SafeUrl::new(&l.parse().unwrap_or_default()).to_string())
            .unwrap_or_default(),
        why,
    };
    let location = location
        .ok_or_else(|| bad("no Location header"))?
        .to_str()
        .map_err(|_| bad("Location is not text"))?;
    let scheme = base.scheme_str().unwrap_or("https");
    let authority = base.authority().map(|a| a.as_str()).unwrap_or("");
    let absolute = if let Some(target_scheme) = uri_scheme(location) {
        if !target_scheme.eq_ignore_ascii_case("https")
            && !target_scheme.eq_ignore_ascii_case("http")
        {
            return Err(bad("only http and https redirects are followed"));
        }
        location.to_string()
    } else if location.starts_with("//") {
        format!("{scheme}:{location}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let dir = base
            .path()
            .rsplit_once('/')
            .map(|(dir, _)| dir)
            .unwrap_or("");
        format!("{scheme}://{authority}{dir}/{location}")
    };
    absolute
        .parse()
        .map_err(|_| bad("Location is not a valid URL"))
}

/// The scheme of an absolute URI reference (RFC 3986 §3.1), if it has one.
fn uri_scheme(reference: &str) -> Option<&str> {
    let (scheme, _) = reference.split_once(':')?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(base: &str, location: &str) -> Result<String, TransportError> {
        redirect_target(
            &base.parse().unwrap(),
            Some(&HeaderValue::from_str(location).unwrap()),
        )
        .map(|u| u.to_string())
    }

    #[test]
    fn redirect_locations_resolve_against_the_base() {
        let base = "https://reg.example:5000/v2/a/blobs/sha256:1";
        assert_eq!(
            target(base, "https://cdn.example/x?sig=1").unwrap(),
            "https://cdn.example/x?sig=1"
        );
        assert_eq!(
            target(base, "//cdn.example/y").unwrap(),
            "https://cdn.example/y"
        );
        assert_eq!(
            target(base, "/elsewhere").unwrap(),
            "https://reg.example:5000/elsewhere"
        );
        assert_eq!(
            target(base, "other").unwrap(),
            "https://reg.example:5000/v2/a/blobs/other"
        );
    }

    #[test]
    fn redirects_to_other_schemes_are_refused() {
        for location in ["file:///etc/passwd", "ftp://x/y", "javascript:alert(1)"] {
            let err = target("https://reg.example/v2/", location).unwrap_err();
            assert!(
                err.to_string().contains("only http and https"),
                "{location}: {err}"
            );
        }
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let of = |s: &str| Origin::of(&s.parse().unwrap()).unwrap();
        assert_eq!(of("https://Reg.example/a"), of("https://reg.example:443/b"));
        assert_ne!(
            of("https://reg.example/a"),
            of("https://reg.example:5000/a")
        );
        assert_ne!(of("https://reg.example/a"), of("http://reg.example:443/a"));
        assert_ne!(of("https://reg.example/a"), of("https://cdn.reg.example/a"));
    }

    #[test]
    fn an_insecure_source_skips_verification_on_its_own_host_and_port_only() {
        let covers = |registry: &str, insecure: bool, url: &str| {
            Insecure::registry(registry, insecure).covers(&url.parse().unwrap())
        };
        // Its registry, its token realm or redirects on the same origin, and its plain-http form.
        assert!(covers(
            "mirror.local:5000",
            true,
            "https://mirror.local:5000/v2/"
        ));
        assert!(covers(
            "mirror.local:5000",
            true,
            "https://Mirror.Local:5000/token"
        ));
        assert!(covers(
            "mirror.local:5000",
            true,
            "http://mirror.local:5000/v2/"
        ));
        assert!(covers("mirror.local", true, "https://mirror.local/v2/"));
        assert!(covers("mirror.local", true, "http://mirror.local/v2/"));
        assert!(covers("[::1]:5000", true, "https://[::1]:5000/v2/"));
        // Anything else is verified: another port, another host, a secure source.
        assert!(!covers(
            "mirror.local:5000",
            true,
            "https://mirror.local/v2/"
        ));
        assert!(!covers(
            "mirror.local",
            true,
            "https://mirror.local:8443/v2/"
        ));
        assert!(!covers(
            "mirror.local:5000",
            true,
            "https://auth.mirror.local:5000/t"
        ));
        assert!(!covers(
            "mirror.local:5000",
            true,
            "https://mirror.local.evil:5000/"
        ));
        assert!(!covers(
            "mirror.local:5000",
            false,
            "https://mirror.local:5000/v2/"
        ));
        assert!(!Insecure::default().covers(&"https://mirror.local/".parse().unwrap()));
    }

    #[test]
    fn safe_urls_hide_the_query() {
        let url = SafeUrl::new(
            &"https://s3.example/b?X-Amz-Signature=SECRET"
                .parse()
                .unwrap(),
        );
        assert_eq!(url.to_string(), "https://s3.example/b?…");
        assert!(!format!("{url}").contains("SECRET"));
    }
}
