//! The connector under the transport's TLS layer: it opens the byte stream a request travels on,
//! directly or through a proxy, and the TLS layer above it (hyper-rustls) then talks to the target
//! over that stream. So the proxy decision is made here, per connection, from the target URL hyper
//! asks for — registries, token realms and redirect targets alike:
//!
//! ```text
//! hyper client ─► HttpsConnector (TLS to the target, its CA and SNI) ─► ProxyConnector
//!                                                                         ├─ direct: TCP to the target
//!                                                                         └─ proxied: TCP (or TLS) to the proxy,
//!                                                                            then CONNECT target (https targets)
//! ```
//!
//! An https target gets a `CONNECT host:port` tunnel: the proxy resolves the name (no local DNS for
//! it) and TLS runs end to end above. An http target is sent to the proxy itself in absolute form
//! (`Connected::proxy`); the transport adds `Proxy-Authorization` to those requests.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{StatusCode, Uri};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tower_service::Service;

use super::{Proxies, ProxyScheme, ProxyUrl};

type BoxError = Box<dyn StdError + Send + Sync>;

/// A proxy's answer head larger than this is refused.
const MAX_ANSWER_HEAD: usize = 16 << 10;

/// A failure that is the proxy's, named with the proxy's `host:port` (never its credentials).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub(crate) enum ProxyError {
    #[error("proxy {proxy} unreachable: {cause}")]
    Unreachable { proxy: String, cause: String },
    #[error("TLS to proxy {proxy}: {cause}")]
    Tls { proxy: String, cause: String },
    /// The proxy answered CONNECT with something other than 2xx.
    #[error("CONNECT to {target} via proxy {proxy}: {}", shown_status(.status, .reason))]
    ConnectRefused {
        target: String,
        proxy: String,
        status: StatusCode,
        /// The proxy's reason phrase: shown for a status HTTP gives no name.
        reason: String,
    },
    /// The proxy answered a plain-http request with 407.
    #[error("request to {target} via proxy {proxy}: {status}")]
    Refused {
        target: String,
        proxy: String,
        status: StatusCode,
    },
    #[error("CONNECT to {target} via proxy {proxy}: {cause}")]
    BadAnswer {
        target: String,
        proxy: String,
        cause: String,
    },
}

/// `503 Service Unavailable`: HTTP's name for the status, else the proxy's own reason phrase.
fn shown_status(status: &StatusCode, reason: &str) -> String {
    match status.canonical_reason() {
        Some(_) => status.to_string(),
        None => format!("{} {reason}", status.as_str())
            .trim_end()
            .to_string(),
    }
}

impl ProxyError {
    /// The first `ProxyError` in an error's source chain (hyper wraps connector errors).
    pub(crate) fn find<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a ProxyError> {
        let mut current = Some(error);
        while let Some(error) = current {
            if let Some(found) = error.downcast_ref::<ProxyError>() {
                return Some(found);
            }
            // io::Error's source() skips the error it wraps.
            current = match error.downcast_ref::<io::Error>().and_then(|e| e.get_ref()) {
                Some(inner) => Some(inner as &(dyn StdError + 'static)),
                None => error.source(),
            };
        }
        None
    }
}

/// Direct TCP, or a stream through the proxy that `Proxies` names for the target.
#[derive(Clone)]
pub(crate) struct ProxyConnector {
    direct: HttpConnector,
    /// For https:// proxies: the verifying configuration, without ALPN (we speak HTTP/1.1 to them).
    proxy_tls: TlsConnector,
    proxies: Arc<Proxies>,
}

impl ProxyConnector {
    pub(crate) fn new(
        direct: HttpConnector,
        proxy_tls: Arc<rustls::ClientConfig>,
        proxies: Arc<Proxies>,
    ) -> ProxyConnector {
        ProxyConnector {
            direct,
            proxy_tls: TlsConnector::from(proxy_tls),
            proxies,
        }
    }
}

impl Service<Uri> for ProxyConnector {
    type Response = ProxyStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<ProxyStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.direct.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, target: Uri) -> Self::Future {
        let Some(proxy) = self.proxies.for_uri(&target).cloned() else {
            let connecting = self.direct.call(target);
            return Box::pin(async move { Ok(ProxyStream::Direct(connecting.await?)) });
        };
        let connector = self.clone();
        Box::pin(async move {
            let mut io = connector.open(&proxy).await?;
            if target.scheme_str() == Some("http") {
                tracing::debug!(%proxy, target = %authority(&target), "sending through proxy");
                return Ok(ProxyStream::Proxied {
                    io: TokioIo::new(io),
                    absolute_form: true,
                });
            }
            let target = authority(&target);
            tracing::debug!(%proxy, %target, "CONNECT through proxy");
            connect_tunnel(&mut io, &target, &proxy).await?;
            Ok(ProxyStream::Proxied {
                io: TokioIo::new(io),
                absolute_form: false,
            })
        })
    }
}

impl ProxyConnector {
    /// TCP to the proxy, and TLS for an https:// one.
    async fn open(&self, proxy: &ProxyUrl) -> Result<ProxyIo, ProxyError> {
        let shown = proxy.authority();
        let mut direct = self.direct.clone();
        std::future::poll_fn(|cx| direct.poll_ready(cx))
            .await
            .map_err(|e| ProxyError::Unreachable {
                proxy: shown.clone(),
                cause: crate::error::error_chain(&e),
            })?;
        // Only the proxy's own name is resolved here; the target's is left to the proxy.
        let tcp = direct
            .call(proxy.connect_uri())
            .await
            .map_err(|e| ProxyError::Unreachable {
                proxy: shown.clone(),
                cause: crate::error::error_chain(&e),
            })?
            .into_inner();
        match proxy.scheme() {
            ProxyScheme::Http => Ok(ProxyIo::Plain(tcp)),
            ProxyScheme::Https => {
                let host = proxy.authority();
                let host = host
                    .rsplit_once(':')
                    .map_or(host.as_str(), |(host, _)| host)
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                let name = ServerName::try_from(host).map_err(|e| ProxyError::Tls {
                    proxy: shown.clone(),
                    cause: e.to_string(),
                })?;
                let tls = self
                    .proxy_tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ProxyError::Tls {
                        proxy: shown.clone(),
                        cause: crate::error::error_chain(&e),
                    })?;
                Ok(ProxyIo::Tls(Box::new(tls)))
            }
        }
    }
}

/// `host:port` of a target, with the scheme's default port (`Uri::host` keeps IPv6 brackets).
fn authority(uri: &Uri) -> String {
    let host = uri.host().unwrap_or("");
    let default = if uri.scheme_str() == Some("http") {
        80
    } else {
        443
    };
    format!("{host}:{}", uri.port_u16().unwrap_or(default))
}

/// Asks the proxy for a tunnel to `target` and reads its answer; on 2xx the stream is the tunnel.
async fn connect_tunnel(
    io: &mut ProxyIo,
    target: &str,
    proxy: &ProxyUrl,
) -> Result<(), ProxyError> {
    let bad = |cause: String| ProxyError::BadAnswer {
        target: target.to_string(),
        proxy: proxy.authority(),
        cause,
    };
    let mut head = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: {}\r\n",
        crate::transport::USER_AGENT_VALUE
    )
    .into_bytes();
    if let Some(authorization) = proxy.authorization() {
        head.extend_from_slice(b"Proxy-Authorization: ");
        head.extend_from_slice(authorization.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let lost = |e: io::Error| ProxyError::Unreachable {
        proxy: proxy.authority(),
        cause: crate::error::error_chain(&e),
    };
    io.write_all(&head).await.map_err(lost)?;
    io.flush().await.map_err(lost)?;
    let mut answer = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    let end = loop {
        let read = io.read(&mut chunk).await.map_err(lost)?;
        if read == 0 {
            return Err(bad(
                "the proxy closed the connection without an answer".into()
            ));
        }
        answer.extend_from_slice(&chunk[..read]);
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if answer.len() > MAX_ANSWER_HEAD {
            return Err(bad(format!(
                "answer head longer than {MAX_ANSWER_HEAD} bytes"
            )));
        }
    };
    let status_line = answer
        .split(|b| *b == b'\n')
        .next()
        .map(|line| String::from_utf8_lossy(line).trim_end().to_string())
        .unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code, reason) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
    // Three digits, as HTTP writes a status: anything else is not an answer to act on.
    let status = match (version, code.map(|c| StatusCode::from_bytes(c.as_bytes()))) {
        (Some(v), Some(Ok(status))) if v.starts_with("HTTP/1.") => status,
        _ => return Err(bad(format!("not an HTTP answer: {status_line:?}"))),
    };
    if !status.is_success() {
        return Err(ProxyError::ConnectRefused {
            target: target.to_string(),
            proxy: proxy.authority(),
            status,
            reason: reason.to_string(),
        });
    }
    // Nothing may follow a 2xx answer before the target speaks: TLS has not started yet.
    if end != answer.len() {
        return Err(bad("data after the CONNECT answer".into()));
    }
    Ok(())
}

/// The connection to a proxy.
pub(crate) enum ProxyIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for ProxyIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ProxyIo::Plain(io) => Pin::new(io).poll_read(cx, buf),
            ProxyIo::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ProxyIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ProxyIo::Plain(io) => Pin::new(io).poll_write(cx, buf),
            ProxyIo::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ProxyIo::Plain(io) => Pin::new(io).poll_flush(cx),
            ProxyIo::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ProxyIo::Plain(io) => Pin::new(io).poll_shutdown(cx),
            ProxyIo::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What the connector hands to the TLS layer.
pub(crate) enum ProxyStream {
    Direct(TokioIo<TcpStream>),
    Proxied {
        io: TokioIo<ProxyIo>,
        /// Requests go to the proxy in absolute form (http targets); false for a tunnel.
        absolute_form: bool,
    },
}

impl Connection for ProxyStream {
    fn connected(&self) -> Connected {
        match self {
            ProxyStream::Direct(io) => io.connected(),
            ProxyStream::Proxied { absolute_form, .. } => Connected::new().proxy(*absolute_form),
        }
    }
}

impl Read for ProxyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ProxyStream::Direct(io) => Pin::new(io).poll_read(cx, buf),
            ProxyStream::Proxied { io, .. } => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl Write for ProxyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ProxyStream::Direct(io) => Pin::new(io).poll_write(cx, buf),
            ProxyStream::Proxied { io, .. } => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ProxyStream::Direct(io) => Pin::new(io).poll_flush(cx),
            ProxyStream::Proxied { io, .. } => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ProxyStream::Direct(io) => Pin::new(io).poll_shutdown(cx),
            ProxyStream::Proxied { io, .. } => Pin::new(io).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_named_host_and_port() {
        let a = |s: &str| authority(&s.parse().unwrap());
        assert_eq!(a("https://registry.test/v2/"), "registry.test:443");
        assert_eq!(a("https://registry.test:5000/v2/"), "registry.test:5000");
        assert_eq!(a("http://registry.test/v2/"), "registry.test:80");
        assert_eq!(a("https://[fd00::1]:5000/v2/"), "[fd00::1]:5000");
    }

    #[test]
    fn proxy_errors_are_found_through_wrappers() {
        let inner = ProxyError::Unreachable {
            proxy: "proxy:3128".into(),
            cause: "connection refused".into(),
        };
        let wrapped = io::Error::other(inner.clone());
        assert_eq!(ProxyError::find(&wrapped), Some(&inner));
        #[derive(Debug, Error)]
        #[error("client error (Connect)")]
        struct Wrapper(#[source] BoxError);
        let wrapped = Wrapper(Box::new(inner.clone()));
        assert_eq!(ProxyError::find(&wrapped), Some(&inner));
        assert_eq!(ProxyError::find(&io::Error::other("x")), None);
    }

    /// The proxy's answer to CONNECT, as `connect_tunnel` reads it from a one-shot listener.
    async fn tunnel_answer(answer: &'static [u8]) -> Result<(), ProxyError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await.unwrap();
            stream.write_all(answer).await.unwrap();
        });
        let proxy = ProxyUrl::parse(&format!("http://{address}"), "test").unwrap();
        let mut io = ProxyIo::Plain(TcpStream::connect(address).await.unwrap());
        let result = connect_tunnel(&mut io, "registry.test:443", &proxy).await;
        server.await.unwrap();
        result
    }

    /// retry.rs's table (and README's Proxies): a CONNECT answered 408, 429 or 5xx is retried. The
    /// status travels as a `StatusCode`, so a code that is not three digits is a broken answer, not
    /// the 5xx its first digits spell.
    #[tokio::test]
    async fn connect_statuses_are_read_as_http_status_codes() {
        let refused = tunnel_answer(b"HTTP/1.1 503 Busy\r\n\r\n")
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, ProxyError::ConnectRefused { .. }),
            "{refused:?}"
        );
        assert!(
            refused.to_string().ends_with(": 503 Service Unavailable"),
            "{refused}"
        );
        let custom = tunnel_answer(b"HTTP/1.1 599 Custom Reason\r\n\r\n")
            .await
            .unwrap_err();
        assert!(
            custom.to_string().ends_with(": 599 Custom Reason"),
            "{custom}"
        );
        for bogus in [
            &b"HTTP/1.1 5031 Busy\r\n\r\n"[..],
            b"HTTP/1.1 +503 Busy\r\n\r\n",
            b"HTTP/1.1 0503 Busy\r\n\r\n",
        ] {
            let error = tunnel_answer(bogus).await.unwrap_err();
            assert!(
                matches!(&error, ProxyError::BadAnswer { .. }),
                "{}: {error:?}",
                String::from_utf8_lossy(bogus)
            );
        }
    }
}
