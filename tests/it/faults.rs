//! `provider-images extract` through a fault-injecting proxy in front of a real registry: each
//! fault alone (what is retried, resumed, downloaded again, or not retried at all, and how long it
//! waits), a token refused midway, the run's deadline, and a mix of every fault over 50 images of
//! 6 layers. Expected contents come from the fixtures' bytes; what the binary did on the wire comes
//! from the proxy's own record.

use crate::common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const METADATA: &str = "name: aws\nattributes:\n  type: infrastructure\n  version: v1.0.0\nocpPlatform: AWS\ninstallOrder: 20\n";

/// Bytes that do not compress, so a layer blob is as long as its content and has a middle to cut.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn base_layer(seed: u64, len: usize) -> Layer {
    Layer::gzip(
        &TarBuilder::new()
            .dir("usr/")
            .file("usr/bin/manager", &noise(seed, len))
            .finish(),
    )
}

fn provider(manifests: &str) -> Layer {
    Layer::gzip(&provider_layer(&[("default", METADATA, manifests)]))
}

/// A registry with the proxy in front of it; the binary only ever talks to the proxy.
struct Lab {
    registry: Registry,
    proxy: FaultProxy,
}

impl Lab {
    fn new() -> Lab {
        let registry = Registry::start(RegistryOpts::default());
        let proxy = FaultProxy::start(registry.pki(), &registry.url(""));
        Lab { registry, proxy }
    }

    /// Pushes `repo:v1`: a 64 KiB base layer and the provider layer with `manifests`.
    fn push(&self, repo: &str, manifests: &str) -> PushedImage {
        self.registry.push_image(
            repo,
            Some("v1"),
            &Image::new(vec![
                base_layer(repo.len() as u64, 64 << 10),
                provider(manifests),
            ]),
        )
    }

    fn reference(&self, repo: &str) -> String {
        format!("{}/{repo}:v1", self.proxy.host())
    }

    fn extract(&self) -> Extract {
        Extract::new().arg("--ca-file").arg(self.registry.ca_pem())
    }

    /// Extracts `repo:v1` into a fresh directory.
    fn pull(&self, repo: &str, extract: Extract) -> (RunOutput, tempfile::TempDir) {
        let out = tempfile::tempdir().unwrap();
        let run = extract
            .image("x", &self.reference(repo))
            .run(&out.path().join("tree"));
        (run, out)
    }
}

/// Asserts that `reference` was published with `manifests` and its contentID.
fn assert_published(out: &Path, reference: &str, manifests: &str) {
    let index = read_index(out);
    let image = index_image(&index, reference);
    assert_eq!(
        image["profiles"][0]["contentID"],
        sha256_hex(manifests.as_bytes()),
        "{image:#}"
    );
    assert_eq!(
        read_subtree_file(out, image, "default/manifests.yaml"),
        manifests.as_bytes()
    );
}

fn ranges(requests: &[&ProxiedRequest]) -> Vec<Option<String>> {
    requests.iter().map(|r| r.range.clone()).collect()
}

#[test]
fn a_body_reset_midway_resumes_with_range_and_the_digest_runs_on() {
    let lab = Lab::new();
    let image = lab.push("p/reset", "reset: true\n");
    let blob = &image.layer_digests[0];
    lab.proxy.inject(blob, HttpFault::ResetMidBody, 1);
    let (run, out) = lab.pull("p/reset", lab.extract());
    run.assert_code(0);
    assert_published(
        &out.path().join("tree"),
        &lab.reference("p/reset"),
        "reset: true\n",
    );
    let stats = lab.proxy.stats();
    let requests = stats.to(blob);
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert_eq!(requests[0].fault, Some("reset-mid-body"));
    let sent = requests[0].body_bytes;
    assert!(sent > 0, "part of the body went out before the reset");
    // What the client got before the reset may be less than what left the proxy, never more.
    let range = requests[1]
        .range
        .as_deref()
        .expect("the second request resumes");
    let from: u64 = range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{range}"));
    assert!(from > 0 && from <= sent, "resumed from {from}, {sent} sent");
    assert_eq!(requests[1].status, 206);
    assert!(
        run.stderr.contains("resuming the download"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_truncated_body_resumes_from_where_it_stopped() {
    let lab = Lab::new();
    let image = lab.push("p/truncated", "truncated: true\n");
    let blob = &image.layer_digests[0];
    lab.proxy.inject(blob, HttpFault::Truncate, 1);
    let (run, out) = lab.pull("p/truncated", lab.extract());
    run.assert_code(0);
    assert_published(
        &out.path().join("tree"),
        &lab.reference("p/truncated"),
        "truncated: true\n",
    );
    let stats = lab.proxy.stats();
    let requests = stats.to(blob);
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert_eq!(
        requests[1].range,
        Some(format!("bytes={}-", requests[0].body_bytes)),
        "a clean close delivers every byte sent"
    );
    assert_eq!(requests[1].status, 206);
}

#[test]
fn a_200_to_a_range_request_starts_over_cleanly() {
    let lab = Lab::new();
    let image = lab.push("p/norange", "norange: true\n");
    let blob = &image.layer_digests[0];
    lab.proxy
        .inject(blob, HttpFault::ResetMidBody, 1)
        .inject(blob, HttpFault::IgnoreRange, 1);
    let (run, out) = lab.pull("p/norange", lab.extract());
    run.assert_code(0);
    assert_published(
        &out.path().join("tree"),
        &lab.reference("p/norange"),
        "norange: true\n",
    );
    let stats = lab.proxy.stats();
    let requests = stats.to(blob);
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert!(requests[1].range.is_some());
    assert_eq!(requests[1].fault, Some("range-ignored"));
    assert_eq!(requests[1].status, 200, "the whole blob again");
}

#[test]
fn a_206_starting_elsewhere_is_not_trusted_and_ranges_stop() {
    let lab = Lab::new();
    let image = lab.push("p/badrange", "badrange: true\n");
    let blob = &image.layer_digests[0];
    lab.proxy
        .inject(blob, HttpFault::ResetMidBody, 1)
        .inject(blob, HttpFault::WrongRange, 1);
    let (run, out) = lab.pull("p/badrange", lab.extract());
    run.assert_code(0);
    assert_published(
        &out.path().join("tree"),
        &lab.reference("p/badrange"),
        "badrange: true\n",
    );
    let stats = lab.proxy.stats();
    let requests = stats.to(blob);
    assert_eq!(requests.len(), 3, "{requests:#?}");
    assert_eq!(requests[1].fault, Some("wrong-content-range"));
    assert_eq!(
        requests[2].range, None,
        "no Range after a wrong Content-Range"
    );
    assert!(
        run.stderr.contains("does not answer a resume"),
        "{}",
        run.stderr
    );
}

#[test]
fn server_errors_are_retried_then_given_up_naming_image_registry_and_cause() {
    let lab = Lab::new();
    lab.push("p/flaky", "flaky: true\n");
    lab.push("p/down", "down: true\n");
    lab.proxy
        .inject("/p/flaky/manifests/", HttpFault::Status(500), 1)
        .inject("/p/flaky/manifests/", HttpFault::Status(503), 1)
        .always("/p/down/manifests/", HttpFault::Status(503));
    let (run, out) = lab.pull("p/flaky", lab.extract());
    run.assert_code(0);
    assert_published(
        &out.path().join("tree"),
        &lab.reference("p/flaky"),
        "flaky: true\n",
    );
    let stats = lab.proxy.stats();
    let statuses: Vec<u16> = stats
        .to("/p/flaky/manifests/")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [500, 503, 200]);

    let (run, out) = lab.pull("p/down", lab.extract());
    run.assert_code(1);
    let tries = lab.proxy.stats().to("/p/down/manifests/").len();
    assert_eq!(tries, 5, "the production number of tries");
    let failure = run
        .stderr
        .lines()
        .find(|l| l.contains("gave up after 5 tries"))
        .unwrap_or_else(|| panic!("{}", run.stderr));
    for part in [lab.reference("p/down"), lab.proxy.host(), "503".into()] {
        assert!(failure.contains(&part), "{part}: {failure}");
    }
    assert!(!out.path().join("tree/index.json").exists());
}

#[test]
fn other_client_errors_are_not_retried() {
    let lab = Lab::new();
    lab.push("p/forbidden", "x: 1\n");
    lab.push("p/bad", "x: 1\n");
    lab.proxy
        .always("/p/forbidden/manifests/", HttpFault::Status(403))
        .always("/p/bad/manifests/", HttpFault::Status(400));
    for repo in ["p/forbidden", "p/bad", "p/missing"] {
        let (run, _out) = lab.pull(repo, lab.extract());
        run.assert_code(1);
        assert!(!run.stderr.contains("retrying"), "{repo}: {}", run.stderr);
        let requests = lab.proxy.stats().to(&format!("/{repo}/manifests/")).len();
        assert_eq!(requests, 1, "{repo}");
    }
}

/// `date -u` formats an IMF-fixdate `seconds` from now.
fn http_date_in(seconds: u64) -> String {
    let output = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("+{seconds} seconds"),
            "+%a, %d %b %Y %H:%M:%S GMT",
        ])
        .env("LC_ALL", "C")
        .output()
        .expect("run date");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The time between the first two requests whose path contains `pattern`.
fn gap(proxy: &FaultProxy, pattern: &str) -> Duration {
    let stats = proxy.stats();
    let requests = stats.to(pattern);
    assert!(requests.len() >= 2, "{requests:#?}");
    requests[1].at - requests[0].at
}

#[test]
fn retry_after_is_honoured_in_seconds_and_as_a_date_and_capped() {
    let lab = Lab::new();
    for repo in ["p/seconds", "p/date", "p/forever"] {
        lab.push(repo, "x: 1\n");
    }
    lab.proxy
        .inject(
            "/p/seconds/manifests/",
            HttpFault::TooManyRequests("1".into()),
            1,
        )
        .inject(
            "/p/date/manifests/",
            HttpFault::TooManyRequests(http_date_in(30)),
            1,
        )
        .inject(
            "/p/forever/manifests/",
            HttpFault::TooManyRequests("99999".into()),
            1,
        );
    lab.pull("p/seconds", lab.extract()).0.assert_code(0);
    let waited = gap(&lab.proxy, "/p/seconds/manifests/");
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    // A date 30 s ahead is read (the backoff alone would be under 100 ms) and waited up to
    // the harness's cap of 2 s.
    lab.pull("p/date", lab.extract()).0.assert_code(0);
    let waited = gap(&lab.proxy, "/p/date/manifests/");
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    let started = Instant::now();
    let (run, _out) = lab.pull(
        "p/forever",
        lab.extract()
            .env(RETRY_ENV, format!("{FAST_RETRIES},retry-after-max=300ms")),
    );
    run.assert_code(0);
    let waited = gap(&lab.proxy, "/p/forever/manifests/");
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "capped");
}

#[test]
fn a_slow_body_is_waited_for_and_a_stalled_one_resumed() {
    let lab = Lab::new();
    let slow = lab.push("p/slow", "slow: true\n");
    let stalled = lab.push("p/stalled", "stalled: true\n");
    lab.proxy
        .inject(
            &slow.layer_digests[0],
            HttpFault::SlowBody {
                pieces: 5,
                pause: Duration::from_millis(100),
            },
            1,
        )
        .inject(
            &stalled.layer_digests[0],
            HttpFault::Stall(Duration::from_secs(8)),
            1,
        );
    let fast_idle = format!("{FAST_RETRIES},idle=400ms");
    let (run, out) = lab.pull("p/slow", lab.extract().env(RETRY_ENV, &fast_idle));
    run.assert_code(0);
    assert_published(
        &out.path().join("tree"),
        &lab.reference("p/slow"),
        "slow: true\n",
    );
    assert_eq!(lab.proxy.stats().to(&slow.layer_digests[0]).len(), 1);

    let started = Instant::now();
    let (run, out) = lab.pull("p/stalled", lab.extract().env(RETRY_ENV, &fast_idle));
    run.assert_code(0);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "did not wait out the stall"
    );
    assert_published(
        &out.path().join("tree"),
        &lab.reference("p/stalled"),
        "stalled: true\n",
    );
    let stats = lab.proxy.stats();
    let requests = stats.to(&stalled.layer_digests[0]);
    assert_eq!(requests.len(), 2);
    assert!(requests[1].range.is_some(), "{requests:#?}");
    assert!(run.stderr.contains("stalled for 400ms"), "{}", run.stderr);
}

#[test]
fn a_response_that_never_comes_is_timed_out_and_retried() {
    let lab = Lab::new();
    lab.push("p/hang", "hang: true\n");
    lab.proxy.inject(
        "/p/hang/manifests/",
        HttpFault::Hang(Duration::from_secs(8)),
        1,
    );
    let started = Instant::now();
    let (run, out) = lab.pull(
        "p/hang",
        lab.extract()
            .env(RETRY_ENV, format!("{FAST_RETRIES},headers=400ms")),
    );
    run.assert_code(0);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "did not wait out the hang"
    );
    assert_published(
        &out.path().join("tree"),
        &lab.reference("p/hang"),
        "hang: true\n",
    );
    assert_eq!(lab.proxy.stats().to("/p/hang/manifests/").len(), 2);
    assert!(
        run.stderr.contains("did not answer within 400ms"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_wrong_content_length_is_fetched_again() {
    let lab = Lab::new();
    let image = lab.push("p/length", "length: true\n");
    let blob = &image.layer_digests[0];
    lab.proxy
        .inject(blob, HttpFault::WrongLength(-7), 1)
        .inject(blob, HttpFault::WrongLength(7), 1)
        .inject("/p/length/manifests/", HttpFault::WrongLength(-3), 1)
        .inject(&image.config_digest, HttpFault::WrongLength(3), 1);
    let (run, out) = lab.pull("p/length", lab.extract());
    run.assert_code(0);
    assert_published(
        &out.path().join("tree"),
        &lab.reference("p/length"),
        "length: true\n",
    );
    let stats = lab.proxy.stats();
    assert_eq!(stats.to(blob).len(), 3);
    assert_eq!(stats.to("/p/length/manifests/").len(), 2);
    assert_eq!(stats.to(&image.config_digest).len(), 2);
    assert!(run.stderr.contains("(Content-Length)"), "{}", run.stderr);
}

#[test]
fn corrupt_bytes_are_never_accepted() {
    let lab = Lab::new();
    let image = lab.push("p/corrupt", "corrupt: once\n");
    let blob = image.layer_digests[0].clone();
    let provider_blob = image.layer_digests[1].clone();
    lab.proxy
        .inject(&blob, HttpFault::Corrupt, 1)
        .inject(&provider_blob, HttpFault::Corrupt, 1)
        .inject(&image.config_digest, HttpFault::Corrupt, 1)
        .inject("/p/corrupt/manifests/", HttpFault::Corrupt, 1);
    let out = tempfile::tempdir().unwrap();
    let reference = lab.reference("p/corrupt");
    let run = lab.extract().image("x", &reference).run(out.path());
    run.assert_code(0);
    assert_published(out.path(), &reference, "corrupt: once\n");
    let stats = lab.proxy.stats();
    for pattern in [&blob, &provider_blob, &image.config_digest] {
        let requests = stats.to(pattern);
        assert_eq!(ranges(&requests), [None, None], "fetched again whole");
    }
    assert_eq!(stats.to("/p/corrupt/manifests/").len(), 2);
    assert!(
        run.stderr
            .contains("downloading the blob again from its start"),
        "{}",
        run.stderr
    );

    // Corrupt every time: the run fails and the published tree stays as it was. The tag moves to a new
    // image first, so the re-run cannot reuse the published tree (a warm run would not fetch at all).
    let before = snapshot(out.path());
    let provider_blob = lab.push("p/corrupt", "corrupt: always\n").layer_digests[1].clone();
    lab.proxy.always(&provider_blob, HttpFault::Corrupt);
    let run = lab.extract().image("x", &reference).run(out.path());
    run.assert_code(1);
    assert!(
        run.stderr.contains(&format!("expected {provider_blob}"))
            && run.stderr.contains("gave up after 5 tries"),
        "{}",
        run.stderr
    );
    assert_eq!(snapshot(out.path()), before);
}

/// A registry whose tokens are revoked after each manifest is served, with its own token realm.
struct RevokingRegistry {
    server: HttpsServer,
    tokens_issued: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<(String, u16)>>>,
    /// The host its challenges name for the token realm (`/token`): its own, unless a test puts a
    /// proxy there.
    realm_host: Arc<Mutex<String>>,
}

impl RevokingRegistry {
    /// `accept_tokens: false` refuses every token (a registry that never takes what its realm issues).
    fn start(pki: &Pki, built: &BuiltImage, layers: &[Layer], accept_tokens: bool) -> Self {
        let mut blobs = vec![built.config.clone()];
        blobs.extend(layers.iter().map(|l| l.bytes.clone()));
        let manifest = built.manifest.clone();
        let tokens_issued = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let valid = Arc::new(Mutex::new(None::<String>));
        let realm_host = Arc::new(Mutex::new(String::new()));
        let server = {
            let (tokens_issued, requests, realm_host) =
                (tokens_issued.clone(), requests.clone(), realm_host.clone());
            HttpsServer::start(pki, move |request| {
                let path = request.path_and_query.split('?').next().unwrap().to_owned();
                if path == "/token" {
                    let n = tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
                    let token = format!("tok-{n}");
                    *valid.lock().unwrap() = Some(token.clone());
                    return Response::json(200, &json!({"token": token, "expires_in": 300}));
                }
                let authorized = accept_tokens
                    && matches!(
                        (request.header("authorization"), valid.lock().unwrap().as_ref()),
                        (Some(sent), Some(token)) if sent == format!("Bearer {token}")
                    );
                let response = if !authorized {
                    Response::json(
                        401,
                        &json!({"errors": [{"code": "UNAUTHORIZED", "message": "token expired"}]}),
                    )
                    .header(
                        "www-authenticate",
                        &format!(
                            "Bearer realm=\"https://{}/token\",service=\"fake\"",
                            realm_host.lock().unwrap()
                        ),
                    )
                } else if path.ends_with("/manifests/v1") {
                    // Served once with this token; the next request finds it revoked.
                    *valid.lock().unwrap() = None;
                    Response::new(200)
                        .header("content-type", OCI_MANIFEST)
                        .body(manifest.clone())
                } else if let Some(blob) = blobs
                    .iter()
                    .find(|b| path.ends_with(&format!("/blobs/{}", sha256_digest(b))))
                {
                    Response::new(200).body(blob.clone())
                } else {
                    Response::json(404, &json!({"errors": []}))
                };
                requests.lock().unwrap().push((path, response.status));
                response
            })
        };
        *realm_host.lock().unwrap() = server.addr().to_string();
        RevokingRegistry {
            server,
            tokens_issued,
            requests,
            realm_host,
        }
    }
}

#[test]
fn a_token_refused_midway_is_renewed_once_per_request() {
    let pki = Pki::new();
    let layers = vec![provider("renewed: true\n")];
    let built = Image::new(layers.clone()).build();
    let registry = RevokingRegistry::start(&pki, &built, &layers, true);
    let reference = format!("{}/p/tok:v1", registry.server.addr());
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .arg("--ca-file")
        .arg(pki.ca_pem())
        .image("tok", &reference)
        .run(out.path());
    run.assert_code(0);
    assert_published(out.path(), &reference, "renewed: true\n");
    // The manifest with the first token; the config and the layer, asked for at once, are refused
    // with it and share one renewal: the second token.
    assert_eq!(
        registry.tokens_issued.load(Ordering::SeqCst),
        2,
        "{:?}\n{}",
        registry.requests.lock().unwrap(),
        run.stderr
    );

    // A registry that refuses every token: one renewal, then the 401 is the answer.
    let refusing = RevokingRegistry::start(&pki, &built, &layers, false);
    let reference = format!("{}/p/tok:v1", refusing.server.addr());
    let run = Extract::new()
        .arg("--ca-file")
        .arg(pki.ca_pem())
        .image("tok", &reference)
        .run(tempfile::tempdir().unwrap().path());
    run.assert_code(1);
    assert!(run.stderr.contains("401"), "{}", run.stderr);
    assert_eq!(refusing.tokens_issued.load(Ordering::SeqCst), 1);
    assert_eq!(refusing.requests.lock().unwrap().len(), 2, "no loop");
}

#[test]
fn a_token_answer_that_stalls_midway_is_asked_for_again() {
    let pki = Pki::new();
    let layers = vec![provider("stalled: once\n")];
    let built = Image::new(layers.clone()).build();
    let registry = RevokingRegistry::start(&pki, &built, &layers, true);
    let proxy = FaultProxy::start(&pki, &format!("https://{}", registry.server.addr()));
    *registry.realm_host.lock().unwrap() = proxy.host();
    proxy.inject("/token", HttpFault::Stall(Duration::from_secs(60)), 1);
    let reference = format!("{}/p/tok:v1", proxy.host());
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let run = Extract::new()
        .arg("--ca-file")
        .arg(pki.ca_pem())
        .env(RETRY_ENV, format!("{FAST_RETRIES},headers=1s"))
        .image("tok", &reference)
        .run(out.path());
    run.assert_code(0);
    assert_published(out.path(), &reference, "stalled: once\n");
    // Half a token, then nothing: the whole answer is due within the response timeout (1 s here),
    // and a timeout is tried again; the stall itself would last 60 s (and is counted once over).
    let token_requests = proxy.stats().to("/token").len();
    assert!(token_requests >= 2, "{token_requests}\n{}", run.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}\n{}",
        started.elapsed(),
        run.stderr
    );
}

#[test]
fn the_deadline_stops_retries_with_a_clear_error() {
    let lab = Lab::new();
    lab.push("p/busy", "x: 1\n");
    lab.proxy
        .always("/p/busy/manifests/", HttpFault::Status(503));
    let started = Instant::now();
    let (run, _out) = lab.pull(
        "p/busy",
        lab.extract()
            .env(RETRY_ENV, "tries=100,base=1s,max=1s")
            .arg("--timeout")
            .arg("4s"),
    );
    run.assert_code(1);
    // Not the run's timer (its message is checked below): some slack for a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(
        run.stderr
            .contains("the next would start after the --timeout deadline")
            && run.stderr.contains(&lab.reference("p/busy"))
            && !run.stderr.contains("timed out after"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_registry_that_stays_unreachable_is_tried_once_by_later_images() {
    let lab = Lab::new();
    lab.push("p/one", "x: 1\n");
    lab.push("p/two", "x: 2\n");
    lab.proxy
        .always("/manifests/", HttpFault::Hang(Duration::from_secs(1)));
    let out = tempfile::tempdir().unwrap();
    let run = lab
        .extract()
        .env(RETRY_ENV, format!("{FAST_RETRIES},headers=200ms"))
        .arg("--concurrency")
        .arg("1")
        .image("one", &lab.reference("p/one"))
        .image("two", &lab.reference("p/two"))
        .run(out.path());
    run.assert_code(1);
    let stats = lab.proxy.stats();
    let mut counts = [
        stats.to("/p/one/manifests/").len(),
        stats.to("/p/two/manifests/").len(),
    ];
    counts.sort();
    assert_eq!(counts, [1, 5], "{}", run.stderr);
    assert!(
        run.stderr
            .contains("stayed unreachable through every try earlier in this run"),
        "{}",
        run.stderr
    );
}

#[test]
fn fifty_images_of_six_layers_come_through_a_mix_of_every_fault() {
    const IMAGES: usize = 50;
    let lab = Lab::new();
    let mut extract = lab
        .extract()
        .env(
            RETRY_ENV,
            "base=5ms,max=50ms,retry-after-max=50ms,idle=500ms,headers=1s",
        )
        .arg("--concurrency")
        .arg("8");
    // Built and pushed from a few threads at once: 400 blobs one by one take most of a minute.
    let built: Vec<(String, String, Image)> = (0..IMAGES)
        .map(|i| {
            let manifests = format!("image: {i}\n{}", "kind: ConfigMap\n".repeat(i + 1));
            let mut layers: Vec<Layer> = (0..5)
                .map(|l| base_layer((i * 10 + l) as u64, 4096 + 512 * l))
                .collect();
            layers.push(provider(&manifests));
            (format!("mix/image-{i:02}"), manifests, Image::new(layers))
        })
        .collect();
    let pushing = Instant::now();
    std::thread::scope(|scope| {
        for part in built.chunks(IMAGES.div_ceil(4)) {
            let registry = &lab.registry;
            scope.spawn(move || {
                for (repo, _, image) in part {
                    registry.push_image(repo, Some("v1"), image);
                }
            });
        }
    });
    eprintln!("mix: pushed in {:?}", pushing.elapsed());
    let mut needed: u64 = 0;
    let mut expected = Vec::new();
    for (i, (repo, manifests, image)) in built.iter().enumerate() {
        let documents = image.build();
        needed += (documents.manifest.len() + documents.config.len()) as u64
            + image
                .layers
                .iter()
                .map(|l| l.bytes.len() as u64)
                .sum::<u64>();
        extract = extract.image(&format!("image-{i:02}"), &lab.reference(repo));
        expected.push((lab.reference(repo), manifests.clone()));
    }
    lab.proxy.chaos(
        0x5eed,
        250,
        2,
        vec![
            HttpFault::ResetMidBody,
            HttpFault::Truncate,
            HttpFault::Status(500),
            HttpFault::Status(503),
            HttpFault::TooManyRequests("1".into()),
            HttpFault::SlowBody {
                pieces: 4,
                pause: Duration::from_millis(5),
            },
            HttpFault::Stall(Duration::from_secs(1)),
            HttpFault::Hang(Duration::from_millis(1500)),
            HttpFault::WrongLength(-5),
            HttpFault::WrongLength(5),
            HttpFault::Corrupt,
            HttpFault::IgnoreRange,
            HttpFault::WrongRange,
        ],
    );
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let run = extract
        .command(out.path())
        .timeout(Duration::from_secs(120))
        .run();
    let elapsed = started.elapsed();
    run.assert_code(0);
    let index = read_index(out.path());
    assert_eq!(index["images"].as_array().unwrap().len(), IMAGES);
    for (reference, manifests) in &expected {
        assert_published(out.path(), reference, manifests);
    }
    let stats = lab.proxy.stats();
    let count = |message: &str| run.stderr.matches(message).count();
    eprintln!(
        "mix: {IMAGES} images × 6 layers in {elapsed:?}; {} requests; {} faults injected {:?}; \
         {} bytes needed, {} sent, {} sent again; binary: {} retries, {} resumes, {} restarts",
        stats.requests.len(),
        stats.injected(),
        stats.faults,
        needed,
        stats.body_bytes,
        stats.body_bytes.saturating_sub(needed),
        count("\"retrying\""),
        count("resuming the download"),
        count("downloading the blob again"),
    );
    assert!(stats.injected() >= 40, "{:?}", stats.faults);
    for fault in [
        "reset-mid-body",
        "truncated-body",
        "500",
        "503",
        "429-retry-after",
        "slow-body",
        "stalled-body",
        "no-headers",
        "wrong-content-length",
        "corrupt-bytes",
        "range-ignored",
        "wrong-content-range",
    ] {
        assert!(
            stats.faults.contains_key(fault),
            "{fault}: {:?}",
            stats.faults
        );
    }
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
}

/// Every image of the published tree reads whole: each profile's file hashes to its contentID.
fn assert_whole(out: &Path) -> Vec<String> {
    let index = read_index(out);
    let mut contents = Vec::new();
    for image in index["images"].as_array().unwrap() {
        let content = read_subtree_file(out, image, "default/manifests.yaml");
        assert_eq!(
            sha256_hex(&content),
            image["profiles"][0]["contentID"].as_str().unwrap(),
            "{image:#}"
        );
        contents.push(String::from_utf8(content).unwrap());
    }
    contents
}

#[test]
fn sigkill_at_any_point_of_a_pull_leaves_a_whole_tree_and_the_next_run_succeeds() {
    const KILLS: u32 = 8;
    let lab = Lab::new();
    let repos = ["k/a", "k/b", "k/c", "k/d"];
    let extract = repos
        .iter()
        .fold(lab.extract().arg("--concurrency").arg("2"), |e, repo| {
            e.image(repo, &lab.reference(repo))
        });
    for repo in repos {
        lab.push(repo, "version: old\n");
    }
    let out = tempfile::tempdir().unwrap();
    extract.run(out.path()).assert_code(0);
    for repo in repos {
        lab.push(repo, "version: new\n");
    }
    // Slow enough that a run lasts a while, so the kills land all along it.
    lab.proxy.always(
        "/blobs/",
        HttpFault::SlowBody {
            pieces: 8,
            pause: Duration::from_millis(25),
        },
    );
    let scratch = tempfile::tempdir().unwrap();
    let started = Instant::now();
    extract.run(scratch.path()).assert_code(0);
    let length = started.elapsed();
    let mut killed = 0;
    for kill in 0..KILLS {
        let running = extract.command(out.path()).spawn();
        // Spread over the first 80% of a run; a run that is faster this time may have ended.
        std::thread::sleep(length * 4 * (2 * kill + 1) / (10 * KILLS));
        running.signal("KILL");
        let run = running.wait(Duration::from_secs(10));
        assert!(matches!(run.code, None | Some(0)), "kill {kill}: {run}");
        killed += usize::from(run.code.is_none());
        // One whole tree, old or (when the kill came after the swap) new; never a mix.
        let contents = assert_whole(out.path());
        assert!(
            contents.iter().all(|c| c == "version: old\n")
                || contents.iter().all(|c| c == "version: new\n"),
            "kill {kill}: {contents:?}"
        );
    }
    eprintln!("sigkill: {killed} of {KILLS} runs killed midway (a run takes {length:?})");
    assert!(killed >= KILLS as usize / 2, "most kills land during a run");
    extract.run(out.path()).assert_code(0);
    let contents = assert_whole(out.path());
    assert!(
        contents.iter().all(|c| c == "version: new\n"),
        "{contents:?}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("..") && name != "..data" && name != "..lock")
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "only the current payload: {leftovers:?}"
    );
}

/// A pull that takes longer than a few seconds says how far it got, per image, at most every 5 s
/// (issue 9 item 4): here one layer arrives in 7 pieces a second apart.
#[test]
fn a_long_pull_logs_its_progress_per_image_every_few_seconds() {
    let lab = Lab::new();
    let image = lab.push("p/long", "long: true\n");
    lab.proxy.inject(
        &image.layer_digests[0],
        HttpFault::SlowBody {
            pieces: 7,
            pause: Duration::from_secs(1),
        },
        1,
    );
    let started = Instant::now();
    let (run, _out) = lab.pull("p/long", lab.extract());
    run.assert_code(0);
    let took = started.elapsed();
    let lines: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("pulling: "))
        })
        .collect();
    assert!(
        !lines.is_empty() && lines.len() as u64 <= took.as_secs() / 5 + 1,
        "{took:?}\n{}",
        run.stderr
    );
    for line in &lines {
        assert_eq!(line["image"], lab.reference("p/long"), "{line}");
        let (received, total) = (line["received"].as_u64(), line["total"].as_u64());
        assert!(
            received.is_some_and(|r| r > 0) && received <= total,
            "{line}"
        );
    }
}
