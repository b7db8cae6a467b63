//! The OCI distribution client: manifests, indexes, configs and blobs, each verified against its digest and
//! size. It knows nothing of provider manifests: it hands verified bytes (or a verifying byte stream) on.
//!
//! Requests are retried as `retry` says. A blob download that is cut resumes with `Range: bytes=N-`;
//! bytes that do not verify are downloaded again from the start, into a fresh consumer.
//!
//! | threat | outcome |
//! |---|---|
//! | manifest, index or config over 4 MiB (announced, chunked or streamed) | error at the cap, read no further |
//! | a manifest that is not JSON, schema 1, both `layers` and `manifests`, an unknown media type | error naming the document |
//! | a document that does not hash to the digest asked for, or to its `Docker-Content-Digest` | fetched again, then error |
//! | blob bytes that do not match the digest or size | downloaded again from the start, then error; never handed on as complete |
//! | a `Content-Length` other than the blob's size (or what is left of it) | fetched again, then error |
//! | a body cut short, reset or stalled (`idle`) | resumed from the last byte received; the digest runs on |
//! | a 206 whose `Content-Range` is not `bytes N-LAST/SIZE` for the resume asked | not used; whole bodies from then on |
//! | a 200 to a Range request | its first N bytes must hash like the N already handed on (else start over); then it goes on |
//! | `urls` on a layer (foreign or non-distributable) | ignored: every blob comes from the registry |
//! | ranges of a blob (`blob_ranges`, for partial pulls) answered 200, or with other ranges or lengths | `RangeRefused`, the body unread: the caller pulls the blob whole |
//! | the consumer fails on a blob | the download still runs to its end: unverified → start over, verified → the consumer's error |
//!
//! `extract` adds: an index child whose size is not its descriptor's, indexes nested deeper than 2, a
//! config that is not an image config (artifacts) and a layer media type that is not a filesystem layer are
//! errors; the tar walk's own table is in `layers`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_RANGE, CONTENT_TYPE, RANGE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri};
use hyper::body::Incoming;

use crate::error::error_chain;
use crate::plan::Source;
use crate::transport::body::{BodyFailure, read_capped};
use crate::transport::proxy::connector::ProxyError;
use crate::transport::retry::{self, Attempts, GiveUp, RetryPolicy};
use crate::transport::{Transport, TransportError};

pub mod auth;
mod blob;
pub(crate) mod byteranges;
mod digest;
mod error;
mod oci;
mod signatures;

use auth::{AuthError, Authenticator};
pub(crate) use blob::BlobError;
pub(crate) use digest::{sha256, sha256_digest, sha256_hex};
pub(crate) use error::RegistryError;
pub use oci::*;

use digest::{Digester, verify};
use error::{Credentials, OciErrors};

/// The registry client: one per run, shared by every image.
pub(crate) struct RegistryClient {
    transport: Arc<Transport>,
    auth: Arc<Authenticator>,
    /// `http` for insecure registries found to speak plain HTTP, keyed by registry and insecurity:
    /// what an insecure source found never switches a secure source of the same registry to http.
    schemes: Mutex<HashMap<(String, bool), &'static str>>,
    retry: RetryPolicy,
    /// Registries that stayed unreachable through a whole round of tries: tried once from then on, so
    /// every image of a run does not wait out the backoff before falling back to its next source.
    unreachable: Mutex<HashSet<String>>,
}

impl RegistryClient {
    pub(crate) fn new(transport: Arc<Transport>, auth: Arc<Authenticator>) -> RegistryClient {
        RegistryClient {
            transport,
            auth,
            schemes: Mutex::default(),
            retry: RetryPolicy::default(),
            unreachable: Mutex::default(),
        }
    }

    /// Retries as `policy` says (otherwise as `RetryPolicy::default()`).
    pub(crate) fn with_retry(mut self, policy: RetryPolicy) -> RegistryClient {
        self.retry = policy;
        self
    }

    fn url(&self, source: &Source, scheme: &str, path: &str) -> Result<Uri, RegistryError> {
        format!(
            "{scheme}://{}/v2/{}/{path}",
            source.registry, source.repository
        )
        .parse()
        .map_err(|_| TransportError::BadUrl(format!("{source}/{path}")).into())
    }

    /// The tries for one request to `source`'s registry.
    fn attempts(&self, source: &Source) -> Attempts {
        let attempts = self.retry.attempts();
        if self.unreachable.lock().unwrap().contains(&source.registry) {
            attempts.once()
        } else {
            attempts
        }
    }

    /// Waits before the next try of `what`, or gives up with `failure` when `attempts` are spent.
    async fn pause_or_give_up(
        &self,
        source: &Source,
        what: &str,
        attempts: &mut Attempts,
        failure: RegistryError,
        retry_after: Option<Duration>,
    ) -> Result<(), RegistryError> {
        match attempts.failed(retry_after) {
            Ok(wait) => {
                tracing::warn!(
                    registry = %source.registry,
                    what,
                    next_try = attempts.next_try(),
                    wait_ms = wait.as_millis() as u64,
                    error = %error_chain(&failure),
                    "retrying"
                );
                tokio::time::sleep(wait).await;
                Ok(())
            }
            Err(why) => Err(RegistryError::GaveUp {
                cause: Box::new(failure),
                why,
            }),
        }
    }

    /// GETs `/v2/<repository>/<path>`, authorizing as the registry asks and retrying what may pass
    /// (see `retry`), and returns a 2xx response. Failed tries count in `attempts`, which the caller
    /// goes on using for what it does with the body.
    async fn get(
        &self,
        source: &Source,
        path: &str,
        headers: &HeaderMap,
        what: &str,
        attempts: &mut Attempts,
    ) -> Result<Response<Incoming>, RegistryError> {
        let mut challenged = false;
        loop {
            let (failure, retry_after) =
                match self.try_get(source, path, headers, &mut challenged).await {
                    Ok(response) if response.status().is_success() => {
                        self.unreachable.lock().unwrap().remove(&source.registry);
                        return Ok(response);
                    }
                    Ok(response) if retry::retryable_status(response.status()) => {
                        let retry_after = response
                            .headers()
                            .get(RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
                        (self.status_error(source, what, response).await, retry_after)
                    }
                    Ok(response) => return Err(self.status_error(source, what, response).await),
                    Err(error) if worth_retrying(&error) => (error, None),
                    Err(error) => return Err(error),
                };
            let unreachable = is_unreachable(&failure);
            if let Err(error) = self
                .pause_or_give_up(source, what, attempts, failure, retry_after)
                .await
            {
                if unreachable
                    && matches!(error, RegistryError::GaveUp { why: GiveUp::Tries(n), .. } if n > 1)
                {
                    self.unreachable
                        .lock()
                        .unwrap()
                        .insert(source.registry.clone());
                }
                return Err(error);
            }
        }
    }

    /// One try: the request, authorized as the registry asks (see [`Authenticator::send`]).
    async fn try_get(
        &self,
        source: &Source,
        path: &str,
        headers: &HeaderMap,
        challenged: &mut bool,
    ) -> Result<Response<Incoming>, RegistryError> {
        self.auth
            .send(&self.transport, source, challenged, async |authorization| {
                self.send(source, path, headers, authorization).await
            })
            .await
    }

    async fn send(
        &self,
        source: &Source,
        path: &str,
        headers: &HeaderMap,
        authorization: Option<&HeaderValue>,
    ) -> Result<Response<Incoming>, RegistryError> {
        let key = (source.registry.clone(), source.insecure);
        let known = self.schemes.lock().unwrap().get(&key).copied();
        let scheme = known.unwrap_or("https");
        let insecure = source.insecurity();
        let result = self
            .transport
            .get(
                self.url(source, scheme, path)?,
                headers,
                authorization,
                insecure,
            )
            .await;
        match result {
            // An insecure registry may speak plain HTTP only: fall back once and remember it.
            Err(TransportError::Connect { .. }) if known.is_none() && source.insecure => {
                let response = self
                    .transport
                    .get(
                        self.url(source, "http", path)?,
                        headers,
                        authorization,
                        insecure,
                    )
                    .await?;
                self.schemes.lock().unwrap().insert(key, "http");
                Ok(response)
            }
            other => Ok(other?),
        }
    }

    async fn status_error(
        &self,
        source: &Source,
        what: &str,
        response: Response<Incoming>,
    ) -> RegistryError {
        let status = response.status();
        let body = read_capped(response.into_body(), 64 << 10, Some(self.retry.idle))
            .await
            .unwrap_or_default();
        let credentials = (status == StatusCode::UNAUTHORIZED).then(|| {
            if self
                .auth
                .has_credentials(&source.registry, &source.repository)
            {
                Credentials::Refused
            } else {
                Credentials::Missing
            }
        });
        RegistryError::Status {
            registry: source.registry.clone(),
            what: what.to_string(),
            status,
            errors: OciErrors::parse(&body),
            credentials,
        }
    }

    /// GETs a document whole (at most `MAX_MANIFEST_SIZE` bytes) and hands it to `check`. A body cut
    /// short, or one that `check` finds does not match its digest or size, is fetched again.
    async fn fetch_small<T>(
        &self,
        source: &Source,
        path: &str,
        accept: Option<&str>,
        what: &str,
        check: impl Fn(Bytes, &HeaderMap) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut headers = HeaderMap::new();
        if let Some(accept) = accept {
            headers.insert(
                ACCEPT,
                HeaderValue::from_str(accept).expect("static accept list"),
            );
        }
        let mut attempts = self.attempts(source);
        loop {
            let response = self
                .get(source, path, &headers, what, &mut attempts)
                .await?;
            let response_headers = response.headers().clone();
            let body = read_capped(
                response.into_body(),
                MAX_MANIFEST_SIZE,
                Some(self.retry.idle),
            )
            .await;
            let failure = match body {
                Err(cut @ BodyFailure::TooLarge(_)) => {
                    return Err(body_error(source, what, cut.to_string()));
                }
                Err(cut) => body_error(source, what, cut.to_string()),
                Ok(body) => match check(body, &response_headers) {
                    Err(
                        error @ (RegistryError::DigestMismatch { .. }
                        | RegistryError::SizeMismatch { .. }),
                    ) => error,
                    other => return other,
                },
            };
            self.pause_or_give_up(source, what, &mut attempts, failure, None)
                .await?;
        }
    }

    /// Fetches a manifest or index by tag or digest. By digest, the body must hash to it.
    pub(crate) async fn manifest(
        &self,
        source: &Source,
        object: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let what = format!("manifest {}:{object}", source.repository);
        let accept = [
            OCI_MANIFEST,
            OCI_INDEX,
            DOCKER_MANIFEST,
            DOCKER_MANIFEST_LIST,
        ]
        .join(", ");
        let check = |body: Bytes, headers: &HeaderMap| {
            let content_type = header_text(headers, CONTENT_TYPE);
            let header_digest = header_text(headers, "docker-content-digest");
            let expected = object.contains(':').then_some(object);
            let digest = match expected {
                Some(expected) => {
                    let mut digester = Digester::for_digest(expected)?;
                    digester.update(&body);
                    digester.finish()
                }
                None => sha256_digest(&body),
            };
            // By digest the body must match the ask; by tag, a registry's own digest header must
            // match the body.
            for claimed in [
                expected,
                (!header_digest.is_empty()).then_some(header_digest.as_str()),
            ]
            .into_iter()
            .flatten()
            {
                if claimed.split(':').next() == digest.split(':').next() && claimed != digest {
                    return Err(RegistryError::DigestMismatch {
                        registry: source.registry.clone(),
                        what: what.clone(),
                        expected: claimed.to_string(),
                        actual: digest,
                    });
                }
            }
            let (media_type, manifest) = parse_manifest(&body, &content_type).map_err(|cause| {
                RegistryError::BadManifest {
                    registry: source.registry.clone(),
                    what: what.clone(),
                    cause,
                }
            })?;
            Ok(FetchedManifest {
                digest,
                media_type,
                size: body.len() as u64,
                manifest,
                body,
            })
        };
        self.fetch_small(
            source,
            &format!("manifests/{object}"),
            Some(&accept),
            &what,
            check,
        )
        .await
    }

    /// Fetches a small blob (an image config, a signature payload) whole, verified.
    pub(crate) async fn small_blob(
        &self,
        source: &Source,
        descriptor: &Descriptor,
    ) -> Result<Bytes, RegistryError> {
        let what = format!("blob {}", descriptor.digest());
        if descriptor.size() > MAX_MANIFEST_SIZE as u64 {
            return Err(RegistryError::Body {
                registry: source.registry.clone(),
                what,
                cause: format!(
                    "{} bytes is over the {MAX_MANIFEST_SIZE} byte limit for small blobs (configs, signatures)",
                    descriptor.size()
                ),
            });
        }
        Digester::for_digest(descriptor.digest().as_ref())?;
        let check = |body: Bytes, _: &HeaderMap| {
            let mut digester = Digester::for_digest(descriptor.digest().as_ref())?;
            digester.update(&body);
            verify(
                source,
                &what,
                descriptor,
                body.len() as u64,
                digester.finish(),
            )?;
            Ok(body)
        };
        self.fetch_small(
            source,
            &format!("blobs/{}", descriptor.digest()),
            None,
            &what,
            check,
        )
        .await
    }

    /// Fetches byte ranges of a blob (half-open, within the blob) with one request: `Range: bytes=…`,
    /// answered 206 with a `Content-Range` for one range, or as `multipart/byteranges` for several.
    /// Every part must be exactly a range asked for (in any order) and every range must come; the
    /// parts are returned in the order of `ranges`. These bytes cannot be checked against the
    /// blob's digest: the caller verifies them against digests it trusts. A registry that answers
    /// with the whole blob (200) or with other ranges gives `RangeRefused`, its body unread; a body
    /// cut short is fetched again, as `retry` says.
    pub(crate) async fn blob_ranges(
        &self,
        source: &Source,
        descriptor: &Descriptor,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<Bytes>, RegistryError> {
        let spec = byteranges::spec(ranges);
        let what = format!("blob {} bytes {spec}", descriptor.digest());
        let refused = |cause: String| RegistryError::RangeRefused {
            registry: source.registry.clone(),
            what: what.clone(),
            cause,
        };
        if ranges.is_empty()
            || ranges
                .iter()
                .any(|r| r.start >= r.end || r.end > descriptor.size())
        {
            return Err(refused("empty ranges or ranges outside the blob".into()));
        }
        let mut headers = HeaderMap::new();
        let range =
            HeaderValue::from_str(&format!("bytes={spec}")).expect("digits and punctuation");
        headers.insert(RANGE, range);
        // The parts' own headers take well under 1 KiB each.
        let wanted: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        let cap = usize::try_from(wanted + 1024 * ranges.len() as u64 + 1024).unwrap_or(usize::MAX);
        let path = format!("blobs/{}", descriptor.digest());
        let mut attempts = self.attempts(source);
        loop {
            let response = self
                .get(source, &path, &headers, &what, &mut attempts)
                .await?;
            if response.status() != StatusCode::PARTIAL_CONTENT {
                return Err(refused(format!("answered {}", response.status())));
            }
            let content_type = header_text(response.headers(), CONTENT_TYPE);
            let content_range = header_text(response.headers(), CONTENT_RANGE);
            let failure = match read_capped(response.into_body(), cap, Some(self.retry.idle)).await
            {
                Err(too_large @ BodyFailure::TooLarge(_)) => {
                    return Err(refused(too_large.to_string()));
                }
                Err(cut) => body_error(source, &what, cut.to_string()),
                Ok(body) => {
                    return byteranges::answer(
                        ranges,
                        descriptor.size(),
                        &content_type,
                        &content_range,
                        body,
                    )
                    .map_err(|e| refused(e.to_string()));
                }
            };
            self.pause_or_give_up(source, &what, &mut attempts, failure, None)
                .await?;
        }
    }
}

/// Whether a failed request may pass if tried again (see `retry`).
fn worth_retrying(error: &RegistryError) -> bool {
    match error {
        RegistryError::Transport(error) | RegistryError::Auth(AuthError::Transport(error)) => {
            transport_transient(error)
        }
        RegistryError::Auth(AuthError::TokenStatus { status, .. }) => {
            retry::retryable_status(*status)
        }
        _ => false,
    }
}

fn transport_transient(error: &TransportError) -> bool {
    match error {
        TransportError::Connect { transient, .. } => *transient,
        TransportError::Timeout { .. } => true,
        // A proxy that cannot be reached, or that could not reach the registry (CONNECT answered
        // 408, 429 or 5xx), fails like the network; 407 and broken answers do not pass on retry.
        TransportError::Proxy(ProxyError::Unreachable { .. }) => true,
        TransportError::Proxy(ProxyError::ConnectRefused { status, .. }) => {
            retry::retryable_status(*status)
        }
        _ => false,
    }
}

/// The registry could not be reached at all (rather than answering badly).
fn is_unreachable(error: &RegistryError) -> bool {
    matches!(error, RegistryError::Transport(e) if transport_transient(e))
}

fn body_error(source: &Source, what: &str, cause: String) -> RegistryError {
    RegistryError::Body {
        registry: source.registry.clone(),
        what: what.to_string(),
        cause,
    }
}

fn header_text(headers: &HeaderMap, name: impl http::header::AsHeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_and_proxy_failures_are_worth_another_try_and_verdicts_are_not() {
        let connect = |transient| TransportError::Connect {
            host: "r".into(),
            cause: "x".into(),
            transient,
        };
        let refused = |code: u16| {
            TransportError::Proxy(ProxyError::ConnectRefused {
                target: "r:443".into(),
                proxy: "p:3128".into(),
                status: StatusCode::from_u16(code).unwrap(),
                reason: String::new(),
            })
        };
        for (error, expected) in [
            (connect(true), true),
            (connect(false), false),
            (
                TransportError::Timeout {
                    host: "r".into(),
                    after: Duration::from_secs(1),
                },
                true,
            ),
            (
                TransportError::Proxy(ProxyError::Unreachable {
                    proxy: "p:3128".into(),
                    cause: "refused".into(),
                }),
                true,
            ),
            (refused(503), true),
            (refused(502), true),
            (refused(407), false),
            (refused(403), false),
            (TransportError::BadUrl("x".into()), false),
        ] {
            let shown = error.to_string();
            assert_eq!(
                worth_retrying(&RegistryError::Transport(error)),
                expected,
                "{shown}"
            );
        }
    }
}
