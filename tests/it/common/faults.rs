//! A fault-injecting HTTPS proxy in front of a registry (docker-registry or a fake): per request
//! pattern it resets connections mid-body, cuts bodies short, answers 500/503 or 429 with
//! Retry-After, sends bodies slowly, stalls them, hangs before the headers, lies in
//! Content-Length, flips bytes, ignores or botches Range, or serves a canned answer that the
//! registry would refuse to store. It speaks HTTP/1.1 itself, byte by byte, because a server
//! library would not send a wrong Content-Length or reset a connection halfway; everything it did
//! is counted, so a test can say how many faults it survived and how many bytes went out again.
//! It serves the same PKI's certificate as the registry, so a client trusts both alike.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::pki::Pki;
use super::server::Response;
use super::tls::{TlsStream, client_config, server_config};

/// Longest request head accepted; the binary's are a few hundred bytes.
const MAX_HEAD: usize = 64 << 10;

/// What to do to one response.
#[derive(Clone, Debug)]
pub enum HttpFault {
    /// The headers and half the body, then a TCP reset.
    ResetMidBody,
    /// The headers (with the true Content-Length) and two thirds of the body, then a clean close.
    Truncate,
    /// This status with an OCI error body, instead of asking the registry.
    Status(u16),
    /// 429 with this `Retry-After` value, instead of asking the registry.
    TooManyRequests(String),
    /// The body in `pieces` parts with `pause` after each (then the connection is kept).
    SlowBody { pieces: usize, pause: Duration },
    /// The headers and half the body, then nothing for this long, then a close.
    Stall(Duration),
    /// Nothing at all for this long (not even headers), then a close.
    Hang(Duration),
    /// A Content-Length this far off the body's length, the whole body, then a close.
    WrongLength(i64),
    /// One byte of the body flipped (the length kept).
    Corrupt,
    /// The request's Range dropped, so the registry answers 200 with the whole blob.
    IgnoreRange,
    /// The registry's 206, with a Content-Range that starts at byte 0.
    WrongRange,
    /// This answer instead of the registry's.
    Serve(Response),
}

impl HttpFault {
    pub fn name(&self) -> &'static str {
        match self {
            HttpFault::ResetMidBody => "reset-mid-body",
            HttpFault::Truncate => "truncated-body",
            HttpFault::Status(500) => "500",
            HttpFault::Status(503) => "503",
            HttpFault::Status(_) => "status",
            HttpFault::TooManyRequests(_) => "429-retry-after",
            HttpFault::SlowBody { .. } => "slow-body",
            HttpFault::Stall(_) => "stalled-body",
            HttpFault::Hang(_) => "no-headers",
            HttpFault::WrongLength(_) => "wrong-content-length",
            HttpFault::Corrupt => "corrupt-bytes",
            HttpFault::IgnoreRange => "range-ignored",
            HttpFault::WrongRange => "wrong-content-range",
            HttpFault::Serve(_) => "served",
        }
    }

    /// Faults about Range apply only to requests that carry one.
    fn needs_range(&self) -> bool {
        matches!(self, HttpFault::IgnoreRange | HttpFault::WrongRange)
    }
}

/// One request as the proxy saw it, and what it did.
#[derive(Clone, Debug)]
pub struct ProxiedRequest {
    pub method: String,
    pub path_and_query: String,
    pub range: Option<String>,
    /// The fault applied (its name), if any.
    pub fault: Option<&'static str>,
    /// The status sent (0 when nothing was).
    pub status: u16,
    /// Body bytes sent.
    pub body_bytes: u64,
    /// When the request arrived, from the proxy's start.
    pub at: Duration,
}

impl ProxiedRequest {
    pub fn path(&self) -> &str {
        self.path_and_query
            .split_once('?')
            .map_or(self.path_and_query.as_str(), |(path, _)| path)
    }
}

/// What the proxy did so far.
#[derive(Clone, Debug, Default)]
pub struct FaultStats {
    /// Faults applied, by name.
    pub faults: BTreeMap<&'static str, usize>,
    /// Body bytes sent in every response.
    pub body_bytes: u64,
    /// Every request, in arrival order.
    pub requests: Vec<ProxiedRequest>,
}

impl FaultStats {
    pub fn injected(&self) -> usize {
        self.faults
            .iter()
            .filter(|(name, _)| **name != "served")
            .map(|(_, n)| n)
            .sum()
    }

    /// The requests whose path contains `pattern`.
    pub fn to(&self, pattern: &str) -> Vec<&ProxiedRequest> {
        self.requests
            .iter()
            .filter(|r| r.path().contains(pattern))
            .collect()
    }
}

struct Rule {
    pattern: String,
    fault: HttpFault,
    /// How many more matching requests get the fault; None: all of them.
    left: Option<usize>,
}

/// Faults drawn at random: each request, with probability `per_mille`/1000, gets one of `faults`
/// (a request with a Range gets a Range fault 3 times in 4), but no path more than
/// `max_per_path` times, so every request gets through in the end.
struct Chaos {
    rng: u64,
    per_mille: u64,
    max_per_path: usize,
    faults: Vec<HttpFault>,
    per_path: HashMap<String, usize>,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    chaos: Option<Chaos>,
    stats: FaultStats,
}

impl State {
    fn decide(&mut self, path: &str, ranged: bool) -> Option<HttpFault> {
        for rule in &mut self.rules {
            if path.contains(&rule.pattern)
                && rule.left != Some(0)
                && (ranged || !rule.fault.needs_range())
            {
                if let Some(left) = &mut rule.left {
                    *left -= 1;
                }
                return Some(rule.fault.clone());
            }
        }
        let chaos = self.chaos.as_mut()?;
        let count = chaos.per_path.entry(path.to_owned()).or_default();
        if *count >= chaos.max_per_path {
            return None;
        }
        // Range faults can only hit the few requests that resume: those get one 3 times in 4.
        let range_faults: Vec<&HttpFault> =
            chaos.faults.iter().filter(|f| f.needs_range()).collect();
        let fault =
            if ranged && !range_faults.is_empty() && !next_random(&mut chaos.rng).is_multiple_of(4)
            {
                range_faults[(next_random(&mut chaos.rng) % range_faults.len() as u64) as usize]
            } else if next_random(&mut chaos.rng) % 1000 < chaos.per_mille {
                &chaos.faults[(next_random(&mut chaos.rng) % chaos.faults.len() as u64) as usize]
            } else {
                return None;
            };
        if fault.needs_range() && !ranged {
            return None;
        }
        *count += 1;
        Some(fault.clone())
    }
}

/// xorshift64*: enough randomness for choosing faults, and repeatable from a seed.
fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// The proxy; stopped and joined on Drop.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy on 127.0.0.1 with `pki`'s certificate, forwarding to `upstream`
    /// (`https://host:port`, trusted through `pki`'s CA).
    pub fn start(pki: &Pki, upstream: &str) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("listener address");
        let tls = server_config(pki);
        let state = Arc::new(Mutex::new(State::default()));
        let (stop, stopped) = oneshot::channel();
        let upstream = Upstream::new(&pki.ca_pem(), upstream);
        let thread = {
            let state = state.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                runtime.block_on(serve(listener, tls, upstream, state, stopped));
            })
        };
        FaultProxy {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:<port>`, as an image reference's registry host.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The next `times` requests whose path contains `pattern` get `fault` (Range faults count
    /// only requests with a Range). Rules apply in the order given.
    pub fn inject(&self, pattern: &str, fault: HttpFault, times: usize) -> &Self {
        self.add(pattern, fault, Some(times))
    }

    /// Every request whose path contains `pattern` gets `fault`.
    pub fn always(&self, pattern: &str, fault: HttpFault) -> &Self {
        self.add(pattern, fault, None)
    }

    /// `GET path` (exactly, without query) answers `response` instead of the registry.
    pub fn serve(&self, path: &str, response: Response) -> &Self {
        self.always(path, HttpFault::Serve(response))
    }

    fn add(&self, pattern: &str, fault: HttpFault, left: Option<usize>) -> &Self {
        self.state.lock().unwrap().rules.push(Rule {
            pattern: pattern.to_owned(),
            fault,
            left,
        });
        self
    }

    /// Random faults from `faults` for every request: see `Chaos`.
    pub fn chaos(&self, seed: u64, per_mille: u64, max_per_path: usize, faults: Vec<HttpFault>) {
        assert!(!faults.is_empty());
        self.state.lock().unwrap().chaos = Some(Chaos {
            rng: seed | 1,
            per_mille,
            max_per_path,
            faults,
            per_path: HashMap::new(),
        });
    }

    pub fn stats(&self) -> FaultStats {
        self.state.lock().unwrap().stats.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The registry behind the proxy.
struct Upstream {
    base: String,
    client: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// A registry's answer, read whole.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Upstream {
    fn new(ca_pem: &Path, base: &str) -> Arc<Upstream> {
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(client_config(ca_pem))
            .https_or_http()
            .enable_http1()
            .build();
        Arc::new(Upstream {
            base: base.trim_end_matches('/').to_owned(),
            client: HyperClient::builder(TokioExecutor::new()).build(connector),
        })
    }

    async fn fetch(&self, request: &Head, drop_range: bool) -> Answer {
        let mut builder = hyper::Request::builder()
            .method(request.method.as_str())
            .uri(format!("{}{}", self.base, request.target));
        for (name, value) in &request.headers {
            let skip = ["host", "connection", "content-length", "transfer-encoding"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
                || (drop_range && name.eq_ignore_ascii_case("range"));
            if !skip {
                builder = builder.header(name.as_str(), value.as_str());
            }
        }
        let request = builder
            .body(Full::new(Bytes::new()))
            .expect("upstream request");
        match self.client.request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let headers = response
                    .headers()
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                let body = match response.into_body().collect().await {
                    Ok(body) => body.to_bytes().to_vec(),
                    Err(e) => return bad_gateway(&e.to_string()),
                };
                Answer {
                    status,
                    headers,
                    body,
                }
            }
            Err(e) => bad_gateway(&e.to_string()),
        }
    }
}

fn bad_gateway(cause: &str) -> Answer {
    Answer {
        status: 502,
        headers: Vec::new(),
        body: format!("fault proxy: upstream failed: {cause}").into_bytes(),
    }
}

fn oci_error(status: u16, code: &str) -> Answer {
    let body =
        serde_json::json!({"errors": [{"code": code, "message": "injected by the fault proxy"}]});
    Answer {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::to_vec(&body).unwrap(),
    }
}

async fn serve(
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    upstream: Arc<Upstream>,
    state: Arc<Mutex<State>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let started = Instant::now();
    loop {
        let tcp = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
        };
        let stream = TlsStream::new(tcp, tls.clone());
        tokio::spawn(connection(stream, upstream.clone(), state.clone(), started));
    }
}

/// A request head.
struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(path, _)| path)
    }
}

/// Reads one request head (and skips its body); None when the client is gone or talks nonsense.
async fn read_head(stream: &mut TlsStream, buffer: &mut Vec<u8>) -> Option<Head> {
    let end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if buffer.len() > MAX_HEAD {
            return None;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&buffer[..end]).into_owned();
    buffer.drain(..end + 4);
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, target) = (request_line.next()?, request_line.next()?);
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let head = Head {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
    };
    let mut body_left: usize = head
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while body_left > 0 {
        if buffer.is_empty() {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
        let n = body_left.min(buffer.len());
        buffer.drain(..n);
        body_left -= n;
    }
    Some(head)
}

async fn connection(
    mut stream: TlsStream,
    upstream: Arc<Upstream>,
    state: Arc<Mutex<State>>,
    started: Instant,
) {
    let mut buffer = Vec::new();
    while let Some(head) = read_head(&mut stream, &mut buffer).await {
        let range = head.header("range").map(str::to_owned);
        // Recorded on arrival, so a test sees it even while the answer is still being stalled.
        let (fault, slot) = {
            let mut state = state.lock().unwrap();
            let fault = state.decide(head.path(), range.is_some());
            // A hang is counted at once: its answer (none) comes only when the client is gone.
            if let Some(hang @ HttpFault::Hang(_)) = &fault {
                *state.stats.faults.entry(hang.name()).or_default() += 1;
            }
            state.stats.requests.push(ProxiedRequest {
                method: head.method.clone(),
                path_and_query: head.target.clone(),
                range,
                fault: fault.as_ref().map(HttpFault::name),
                status: 0,
                body_bytes: 0,
                at: started.elapsed(),
            });
            (fault, state.stats.requests.len() - 1)
        };
        let outcome = respond(&mut stream, &head, fault.as_ref(), &upstream).await;
        let mut state = state.lock().unwrap();
        if let Some(name) = outcome.fault {
            *state.stats.faults.entry(name).or_default() += 1;
        }
        state.stats.body_bytes += outcome.body_bytes;
        let recorded = &mut state.stats.requests[slot];
        recorded.fault = outcome
            .fault
            .or(recorded.fault.filter(|&f| f == "no-headers"));
        recorded.status = outcome.status;
        recorded.body_bytes = outcome.body_bytes;
        if !outcome.keep_alive {
            return;
        }
    }
}

/// What `respond` did.
struct Outcome {
    fault: Option<&'static str>,
    status: u16,
    body_bytes: u64,
    keep_alive: bool,
}

/// Answers one request, doing `fault` to the answer.
async fn respond(
    stream: &mut TlsStream,
    request: &Head,
    fault: Option<&HttpFault>,
    upstream: &Upstream,
) -> Outcome {
    let name = fault.map(HttpFault::name);
    let mut answer = match fault {
        Some(HttpFault::Status(status)) => oci_error(*status, "UNAVAILABLE"),
        Some(HttpFault::TooManyRequests(retry_after)) => {
            let mut answer = oci_error(429, "TOOMANYREQUESTS");
            answer
                .headers
                .push(("retry-after".into(), retry_after.clone()));
            answer
        }
        Some(HttpFault::Serve(response)) => Answer {
            status: response.status,
            headers: response.headers.clone(),
            body: response.body.clone(),
        },
        Some(HttpFault::Hang(pause)) => {
            tokio::time::sleep(*pause).await;
            let _ = stream.shutdown().await;
            // Counted on arrival.
            return Outcome {
                fault: None,
                status: 0,
                body_bytes: 0,
                keep_alive: false,
            };
        }
        Some(HttpFault::IgnoreRange) => upstream.fetch(request, true).await,
        _ => upstream.fetch(request, false).await,
    };
    let head_only = request.method.eq_ignore_ascii_case("HEAD");
    let body_fault = matches!(
        fault,
        Some(
            HttpFault::ResetMidBody
                | HttpFault::Truncate
                | HttpFault::Stall(_)
                | HttpFault::WrongLength(_)
                | HttpFault::Corrupt
                | HttpFault::SlowBody { .. }
        )
    );
    // A body fault needs a body to spoil: on a bodiless answer (a redirect, a HEAD) it is not done.
    if body_fault && (answer.body.len() < 2 || head_only) {
        return write_plain(stream, &answer, head_only, None).await;
    }
    if let Some(HttpFault::WrongRange) = fault {
        if answer.status != 206 {
            return write_plain(stream, &answer, head_only, None).await;
        }
        for (header, value) in &mut answer.headers {
            if header.eq_ignore_ascii_case("content-range") {
                let total = value.rsplit_once('/').map_or("*", |(_, t)| t).to_owned();
                *value = format!("bytes 0-{}/{total}", answer.body.len() - 1);
            }
        }
    }
    let len = answer.body.len();
    match fault {
        Some(HttpFault::ResetMidBody) => {
            let sent = send_head(stream, &answer, len as u64).await
                && send(stream, &answer.body[..len / 2]).await;
            // Linger 0: closing sends a TCP reset instead of a FIN.
            let _ = stream.tcp().set_zero_linger();
            Outcome {
                fault: name,
                status: answer.status,
                body_bytes: if sent { (len / 2) as u64 } else { 0 },
                keep_alive: false,
            }
        }
        Some(HttpFault::Truncate) => {
            let cut = len * 2 / 3;
            let sent = send_head(stream, &answer, len as u64).await
                && send(stream, &answer.body[..cut]).await;
            let _ = stream.shutdown().await;
            Outcome {
                fault: name,
                status: answer.status,
                body_bytes: if sent { cut as u64 } else { 0 },
                keep_alive: false,
            }
        }
        Some(HttpFault::Stall(pause)) => {
            let sent = send_head(stream, &answer, len as u64).await
                && send(stream, &answer.body[..len / 2]).await;
            tokio::time::sleep(*pause).await;
            let _ = stream.shutdown().await;
            Outcome {
                fault: name,
                status: answer.status,
                body_bytes: if sent { (len / 2) as u64 } else { 0 },
                keep_alive: false,
            }
        }
        Some(HttpFault::WrongLength(delta)) => {
            let claimed = (len as i64 + delta).max(0) as u64;
            let sent =
                send_head(stream, &answer, claimed).await && send(stream, &answer.body).await;
            let _ = stream.shutdown().await;
            Outcome {
                fault: name,
                status: answer.status,
                body_bytes: if sent { len as u64 } else { 0 },
                keep_alive: false,
            }
        }
        Some(HttpFault::Corrupt) => {
            answer.body[len / 2] ^= 0xff;
            write_plain(stream, &answer, false, name).await
        }
        Some(HttpFault::SlowBody { pieces, pause }) => {
            let mut sent = send_head(stream, &answer, len as u64).await;
            let piece = len.div_ceil((*pieces).max(1)).max(1);
            for part in answer.body.chunks(piece) {
                sent = sent && send(stream, part).await;
                tokio::time::sleep(*pause).await;
            }
            Outcome {
                fault: name,
                status: answer.status,
                body_bytes: if sent { len as u64 } else { 0 },
                keep_alive: sent,
            }
        }
        _ => write_plain(stream, &answer, head_only, name).await,
    }
}

/// Writes `answer` whole, keeping the connection.
async fn write_plain(
    stream: &mut TlsStream,
    answer: &Answer,
    head_only: bool,
    fault: Option<&'static str>,
) -> Outcome {
    let length = if head_only {
        answer
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    } else {
        answer.body.len() as u64
    };
    let sent =
        send_head(stream, answer, length).await && (head_only || send(stream, &answer.body).await);
    Outcome {
        fault,
        status: answer.status,
        body_bytes: if sent && !head_only {
            answer.body.len() as u64
        } else {
            0
        },
        keep_alive: sent,
    }
}

async fn send_head(stream: &mut TlsStream, answer: &Answer, content_length: u64) -> bool {
    let reason = hyper::StatusCode::from_u16(answer.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", answer.status);
    for (name, value) in &answer.headers {
        let hop = [
            "content-length",
            "transfer-encoding",
            "connection",
            "keep-alive",
        ]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n));
        if !hop {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str(&format!("content-length: {content_length}\r\n\r\n"));
    send(stream, head.as_bytes()).await
}

async fn send(stream: &mut TlsStream, bytes: &[u8]) -> bool {
    stream.write_all(bytes).await.is_ok() && stream.flush().await.is_ok()
}
