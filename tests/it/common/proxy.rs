//! An egress proxy for tests: HTTP `CONNECT` tunnels, and plain-http requests in absolute form,
//! optionally behind Basic proxy authentication, over plain TCP or TLS (an `https://` proxy).
//!
//! The binary never proxies loopback (as Go), so tests name their servers with host names under
//! `.test` that only this proxy resolves: `registry.test:<port>` is `127.0.0.1:<port>` here (the
//! test PKI's server certificate covers those names, so TLS through the tunnel still verifies).
//! Any other name is answered 502, so nothing leaves the machine. Every request is logged.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::client::basic_authorization;
use super::pki::Pki;
use super::tls::{TlsStream, server_config};

/// The names the proxy resolves (to 127.0.0.1); the test PKI's server certificate covers each.
pub const PROXY_NAMES: [&str; 5] = [
    "registry.test",
    "mirror.test",
    "auth.test",
    "blobs.test",
    "api.test",
];

/// One request the proxy answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyRequest {
    /// `CONNECT`, or the method of a plain-http request.
    pub method: String,
    /// `host:port` for CONNECT, the absolute URL otherwise.
    pub target: String,
    /// The `Proxy-Authorization` header as received.
    pub authorization: Option<String>,
    /// 200 for a tunnel or a forwarded request, 407, or 502 (unknown name, target down).
    pub status: u16,
}

#[derive(Clone, Default)]
pub struct ProxyOpts {
    /// Basic credentials the proxy requires; none required when None.
    pub credentials: Option<(String, String)>,
    /// Serve TLS with this PKI's server certificate (an `https://` proxy).
    pub tls: Option<Pki>,
}

impl ProxyOpts {
    pub fn credentials(mut self, user: &str, pass: &str) -> Self {
        self.credentials = Some((user.to_owned(), pass.to_owned()));
        self
    }

    pub fn tls(mut self, pki: &Pki) -> Self {
        self.tls = Some(pki.clone());
        self
    }
}

/// A running proxy on 127.0.0.1; stopped and joined on Drop.
pub struct ProxyServer {
    addr: SocketAddr,
    scheme: &'static str,
    log: Arc<Mutex<Vec<ProxyRequest>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ProxyServer {
    pub fn start(opts: ProxyOpts) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("listener address");
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(State {
            expected: opts
                .credentials
                .as_ref()
                .map(|(user, pass)| basic_authorization(user, pass)),
            tls: opts.tls.as_ref().map(server_config),
            log: log.clone(),
        });
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(serve(listener, state, stopped));
        });
        ProxyServer {
            addr,
            scheme,
            log,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>` (`https://` for a TLS proxy).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The URL with `user:pass@` (both percent-encoded as a URL needs).
    pub fn url_with_credentials(&self, user: &str, pass: &str) -> String {
        format!(
            "{}://{}:{}@{}",
            self.scheme,
            super::urlenc::encode(user),
            super::urlenc::encode(pass),
            self.addr
        )
    }

    /// `127.0.0.1:<port>`, as error messages name the proxy.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Every request answered, in order.
    pub fn requests(&self) -> Vec<ProxyRequest> {
        self.log.lock().unwrap().clone()
    }

    /// The targets of the tunnels it opened (200 answers to CONNECT), in order.
    pub fn tunnels(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "CONNECT" && r.status == 200)
            .map(|r| r.target)
            .collect()
    }
}

impl Drop for ProxyServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct State {
    expected: Option<String>,
    tls: Option<Arc<rustls::ServerConfig>>,
    log: Arc<Mutex<Vec<ProxyRequest>>>,
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<State>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let tcp = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            match &state.tls {
                Some(tls) => handle(TlsStream::new(tcp, tls.clone()), &state).await,
                None => handle(tcp, &state).await,
            }
        });
    }
}

/// Reads one request head, answers it, and then relays bytes both ways until either side closes.
async fn handle<S: AsyncRead + AsyncWrite + Unpin>(mut client: S, state: &State) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buffer.len() > 64 << 10 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let authorization = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, value)| value.trim().to_string());
    let mut record = ProxyRequest {
        method: method.clone(),
        target: target.clone(),
        authorization: authorization.clone(),
        status: 0,
    };
    if state.expected.is_some() && authorization != state.expected {
        record.status = 407;
        state.log.lock().unwrap().push(record);
        let _ = client
            .write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                  Proxy-Authenticate: Basic realm=\"harness-proxy\"\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
        let _ = client.shutdown().await;
        return;
    }
    let authority = if method == "CONNECT" {
        target.clone()
    } else {
        // http://host:port/path
        target
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .map(|a| {
                if a.contains(':') {
                    a.to_string()
                } else {
                    format!("{a}:80")
                }
            })
            .unwrap_or_default()
    };
    let upstream = match resolve(&authority) {
        Some(addr) => TcpStream::connect(addr).await.ok(),
        None => None,
    };
    let Some(mut upstream) = upstream else {
        record.status = 502;
        state.log.lock().unwrap().push(record);
        let _ = client
            .write_all(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
        return;
    };
    record.status = 200;
    state.log.lock().unwrap().push(record);
    if method == "CONNECT" {
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        if upstream.write_all(&buffer[head_end..]).await.is_err() {
            return;
        }
    } else if upstream.write_all(&buffer).await.is_err() {
        // The request as received (the upstream server accepts the absolute form).
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// `name:port` to a loopback address: IP literals as they are, names under `.test` that the
/// proxy knows to 127.0.0.1, anything else nowhere.
fn resolve(authority: &str) -> Option<SocketAddr> {
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return addr.ip().is_loopback().then_some(addr);
    }
    let (host, port) = authority.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    PROXY_NAMES
        .contains(&host.to_ascii_lowercase().as_str())
        .then(|| SocketAddr::from(([127, 0, 0, 1], port)))
}
