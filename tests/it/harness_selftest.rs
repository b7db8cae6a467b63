//! Self-tests of the shared harness in tests/it/common: each checks one promise the project's
//! integration tests rely on, against a real registry where one is involved.

use crate::common;

use std::io::Read;
use std::time::Duration;

use common::*;

const METADATA: &str = "name: aws\nattributes:\n  type: infrastructure\n  version: v1.0.0\n";
const MANIFESTS: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: capa-system\n";

fn provider_tar() -> Vec<u8> {
    provider_layer(&[("default", METADATA, MANIFESTS)])
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("JSON body")
}

#[test]
fn basic_auth_registry_serves_a_pushed_image() {
    let registry = Registry::start(RegistryOpts::default().basic_auth("alice", "s3cret"));
    let tar = provider_tar();
    let image = registry.push_image("capi/aws", Some("v1"), &Image::new(vec![Layer::gzip(&tar)]));

    for reference in [image.manifest_digest.as_str(), "v1"] {
        let manifest = registry.get_manifest("capi/aws", reference);
        assert_eq!(manifest.status, 200, "{}", manifest.text());
        assert_eq!(manifest.body, image.manifest_bytes);
        assert_eq!(manifest.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(
            manifest.header("docker-content-digest"),
            Some(image.manifest_digest.as_str())
        );
    }

    let config = json(&registry.get_blob("capi/aws", &image.config_digest).body);
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        sha256_digest(&tar).as_str()
    );
    assert_eq!(
        config["architecture"],
        Platform::host().architecture.as_str()
    );
    let layer = registry.get_blob("capi/aws", &image.layer_digests[0]);
    let mut unpacked = Vec::new();
    flate2::read::GzDecoder::new(&layer.body[..])
        .read_to_end(&mut unpacked)
        .expect("gunzip layer");
    assert_eq!(unpacked, tar);

    let url = registry.url(&format!("/v2/capi/aws/manifests/{}", image.manifest_digest));
    let anonymous = registry.anonymous_client().get(&url);
    assert_eq!(anonymous.status, 401);
    assert!(
        anonymous
            .header("www-authenticate")
            .is_some_and(|c| c.starts_with("Basic ")),
        "{:?}",
        anonymous.headers
    );
    let wrong = Client::new(&registry.ca_pem())
        .with_credentials("alice", "wrong")
        .get(&url);
    assert_eq!(wrong.status, 401);

    let secret = json(registry.docker_config_json().as_bytes());
    assert_eq!(secret["auths"][registry.host()]["auth"], "YWxpY2U6czNjcmV0");
}

#[test]
fn multi_arch_index_and_manifest_list_read_back() {
    let registry = Registry::start(RegistryOpts::default());
    let tar = provider_tar();
    for (repo, format) in [
        ("multi/oci", ManifestFormat::Oci),
        ("multi/docker", ManifestFormat::Docker),
    ] {
        let entries: Vec<IndexEntry> = ["linux/amd64", "linux/arm64/v8"]
            .into_iter()
            .map(|platform| {
                let image = Image::new(vec![Layer::gzip(&tar)])
                    .platform(Platform::parse(platform))
                    .format(format);
                registry.push_image(repo, None, &image).index_entry()
            })
            .collect();
        let index = registry.push_index(repo, Some("v1"), &entries, format);

        let got = registry.get_manifest(repo, "v1");
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.body, index.bytes);
        assert_eq!(got.header("content-type"), Some(format.index_media_type()));
        let body = json(&got.body);
        assert_eq!(body["manifests"][1]["platform"]["variant"], "v8");
        assert_eq!(
            body["manifests"][0]["mediaType"],
            format.manifest_media_type()
        );
        for entry in &entries {
            let child = registry.get_manifest(repo, &entry.digest);
            assert_eq!(child.status, 200);
            assert_eq!(sha256_digest(&child.body), entry.digest);
        }
        let child = json(&registry.get_manifest(repo, &entries[0].digest).body);
        let expected = match format {
            ManifestFormat::Oci => OCI_LAYER_GZIP,
            ManifestFormat::Docker => DOCKER_LAYER_GZIP,
        };
        assert_eq!(child["layers"][0]["mediaType"], expected);
    }

    // A reference client (containers/image) must accept what the harness pushed, every platform.
    let out_dir = tempfile::tempdir().unwrap();
    Run::program("skopeo")
        .args(["copy", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{}/multi/oci:v1", registry.host()))
        .arg(format!("oci:{}:copy", out_dir.path().display()))
        .run()
        .assert_code(0);
}

#[test]
fn token_auth_registry_runs_the_bearer_flow() {
    let registry = Registry::start(RegistryOpts::default().token_auth("bob", "hunter2"));
    let image = registry.push_image(
        "secure/app",
        Some("v1"),
        &Image::new(vec![Layer::zstd(&provider_tar())]),
    );
    let tokens = registry.token_server().expect("token server");
    assert!(
        tokens.requests().iter().any(|r| r.status == 200),
        "pushing used tokens"
    );
    tokens.clear_requests();

    let anonymous = registry.anonymous_client();
    let ping = anonymous.get(&registry.url("/v2/"));
    assert_eq!(ping.status, 401);
    let realm = format!("Bearer realm=\"{}\"", tokens.realm());
    assert!(
        ping.header("www-authenticate")
            .is_some_and(|c| c.starts_with(&realm)),
        "{:?}",
        ping.headers
    );

    let url = registry.url(&format!(
        "/v2/secure/app/manifests/{}",
        image.manifest_digest
    ));
    let accept = ("accept", OCI_MANIFEST);
    let denied = anonymous.request("GET", &url, &[accept], Vec::new());
    assert_eq!(denied.status, 401);
    let challenge = denied
        .header("www-authenticate")
        .expect("challenge")
        .to_owned();
    assert!(
        challenge.contains("scope=\"repository:secure/app:pull\""),
        "{challenge}"
    );

    let refused = anonymous
        .bearer_token(&challenge)
        .expect_err("no credentials, no token");
    assert!(refused.contains("401"), "{refused}");
    let token = registry.client().bearer_token(&challenge).expect("token");
    let bearer = format!("Bearer {token}");
    let allowed = anonymous.request(
        "GET",
        &url,
        &[accept, ("authorization", &bearer)],
        Vec::new(),
    );
    assert_eq!(
        allowed.status,
        200,
        "{}\n{}",
        allowed.text(),
        registry.log()
    );
    assert_eq!(allowed.body, image.manifest_bytes);

    // The grant is per repository: the same token opens nothing else.
    let other = registry.url("/v2/other/app/manifests/v1");
    let other = anonymous.request(
        "GET",
        &other,
        &[accept, ("authorization", &bearer)],
        Vec::new(),
    );
    assert_eq!(other.status, 401);

    let seen: Vec<(bool, u16, Vec<String>)> = tokens
        .requests()
        .into_iter()
        .map(|r| (r.authorization, r.status, r.scopes))
        .collect();
    let scope = vec!["repository:secure/app:pull".to_owned()];
    assert_eq!(seen, [(false, 401, scope.clone()), (true, 200, scope)]);
}

#[test]
fn tampered_blob_is_served_as_stored() {
    let registry = Registry::start(RegistryOpts::default());
    let blob = registry.push_blob("tamper/app", b"original layer bytes");
    assert_eq!(
        registry.get_blob("tamper/app", &blob.digest).body,
        &b"original layer bytes"[..]
    );

    std::fs::write(
        registry.blob_data_path(&blob.digest),
        b"tampered layer bytes",
    )
    .unwrap();
    let served = registry.get_blob("tamper/app", &blob.digest);
    assert_eq!(served.status, 200);
    assert_eq!(served.body, &b"tampered layer bytes"[..]);
    assert_ne!(sha256_digest(&served.body), blob.digest);
}

#[test]
fn registry_certificate_fits_its_ca_only() {
    let registry = Registry::start(RegistryOpts::default());
    for host in ["127.0.0.1", "localhost"] {
        let url = format!(
            "https://{host}:{}/v2/",
            registry.host().rsplit(':').next().unwrap()
        );
        assert_eq!(registry.anonymous_client().get(&url).status, 200, "{host}");
    }
    let unrelated = Pki::new();
    let error = Client::new(&unrelated.ca_pem())
        .try_request("GET", &registry.url("/v2/"), &[], Vec::new())
        .err()
        .expect("a CA the registry's cert does not chain to");
    assert!(error.contains("UnknownIssuer"), "{error}");
}

#[test]
fn https_server_passes_requests_to_its_handler() {
    let pki = Pki::new();
    let server = HttpsServer::start(&pki, |request| {
        Response::new(418)
            .header(
                "x-seen",
                &format!("{} {}", request.method, request.path_and_query),
            )
            .body(request.body.to_vec())
    });
    let response = Client::new(&pki.ca_pem()).request("POST", &server.url("/a?b=c"), &[], "ping");
    assert_eq!(response.status, 418);
    assert_eq!(response.header("x-seen"), Some("POST /a?b=c"));
    assert_eq!(response.body, "ping");
}

#[test]
fn tar_builder_writes_every_entry_kind() {
    let tar = TarBuilder::new()
        .dir("m/")
        .file_mode("m/suid", b"x", 0o4755)
        .symlink("m/link", "/etc")
        .hardlink("m/hard", "../../etc/passwd")
        .whiteout("m/gone.yaml")
        .opaque("m")
        .char_device("m/null", 1, 3)
        .fifo("m/pipe")
        .raw_name(b"../evil", tar::EntryType::Regular, b"evil")
        .pax(&[("path", b"m/renamed.yaml")])
        .file("m/original.yaml", b"y")
        .finish();
    let mut archive = tar::Archive::new(&tar[..]);
    let entries: Vec<(String, tar::EntryType)> = archive
        .entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            (path, entry.header().entry_type())
        })
        .collect();
    use tar::EntryType::*;
    let expected = [
        ("m/", Directory),
        ("m/suid", Regular),
        ("m/link", Symlink),
        ("m/hard", Link),
        ("m/.wh.gone.yaml", Regular),
        ("m/.wh..wh..opq", Regular),
        ("m/null", Char),
        ("m/pipe", Fifo),
        ("../evil", Regular),
        ("m/renamed.yaml", Regular),
    ];
    let expected: Vec<(String, tar::EntryType)> =
        expected.iter().map(|(p, t)| (p.to_string(), *t)).collect();
    assert_eq!(entries, expected);
}

#[test]
fn layer_encodings_decode_to_the_tar() {
    let tar = provider_tar();
    let split = tar.len() / 2;
    let layer = Layer::gzip_multi_member(&tar, split);
    assert_eq!(layer.media_type, OCI_LAYER_GZIP);
    assert_eq!(layer.diff_id, sha256_digest(&tar));
    let mut all = Vec::new();
    flate2::read::MultiGzDecoder::new(&layer.bytes[..])
        .read_to_end(&mut all)
        .unwrap();
    assert_eq!(all, tar);
    // The property the layer exists for: a single-member reader stops halfway.
    let mut first = Vec::new();
    flate2::read::GzDecoder::new(&layer.bytes[..])
        .read_to_end(&mut first)
        .unwrap();
    assert_eq!(first, &tar[..split]);

    let layer = Layer::zstd(&tar);
    assert_eq!(layer.media_type, OCI_LAYER_ZSTD);
    assert_eq!(zstd::decode_all(&layer.bytes[..]).unwrap(), tar);
    assert_eq!(Layer::uncompressed(&tar).bytes, tar);
}

#[test]
fn run_captures_exit_code_output_and_timeout() {
    let out = Run::program("sh")
        .args(["-c", "echo out; echo \"$HARNESS_X\" >&2; exit 3"])
        .env("HARNESS_X", "err")
        .run();
    out.assert_code(3);
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str()),
        ("out\n", "err\n")
    );

    let started = std::time::Instant::now();
    let hung = std::panic::catch_unwind(|| {
        Run::program("sleep")
            .arg("30")
            .timeout(Duration::from_millis(300))
            .run()
    });
    assert!(hung.is_err(), "a run past its timeout must fail the test");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn plain_http_registry_serves_a_pushed_image() {
    let registry = Registry::start(RegistryOpts::default().plain_http());
    assert!(registry.url("/v2/").starts_with("http://"));
    let image = registry.push_image(
        "plain/app",
        Some("v1"),
        &Image::new(vec![Layer::gzip(&provider_tar())]),
    );
    let manifest = registry.get_manifest("plain/app", "v1");
    assert_eq!(manifest.status, 200, "{}", manifest.text());
    assert_eq!(manifest.body, image.manifest_bytes);
    let tls = registry.anonymous_client().try_request(
        "GET",
        &registry.url("/v2/").replacen("http", "https", 1),
        &[],
        Vec::new(),
    );
    assert!(tls.is_err(), "no TLS on a plain-HTTP registry");
}

#[test]
fn redirecting_registry_sends_blob_reads_to_its_store() {
    let registry = Registry::start(
        RegistryOpts::default()
            .basic_auth("alice", "s3cret")
            .redirect_blobs(),
    );
    let blob = registry.push_blob("redirect/app", b"stored elsewhere");
    let answer = registry.get_blob("redirect/app", &blob.digest);
    assert_eq!(answer.status, 307, "{}", answer.text());
    let store = registry.blob_store().expect("a blob store");
    let hex = blob.digest.strip_prefix("sha256:").unwrap();
    let path = format!("/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]);
    let location = answer.header("location").expect("Location");
    assert_eq!(location, format!("{}{}", store.base_url(), &path[1..]));
    assert!(
        !location.starts_with(&registry.url("/")),
        "the store is another origin"
    );

    let fetched = registry.anonymous_client().get(location);
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body, &b"stored elsewhere"[..]);
    let seen = store.requests();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path()),
        ("GET", path.as_str())
    );
    assert!(
        seen[0].headers.get("user-agent").is_some(),
        "headers are recorded"
    );
    let outside = format!("{}docker/../../config.yml", store.base_url());
    assert_eq!(
        registry.anonymous_client().get(&outside).status,
        404,
        "only the storage root is served"
    );
}

#[test]
fn fake_routes_answer_by_path_and_record_requests() {
    let pki = Pki::new();
    let fake = FakeRoutes::new()
        .registry()
        .manifest("f/app", "v1", OCI_MANIFEST, b"{}")
        .blob("f/app", b"bytes")
        .redirect_blob("f/app", "sha256:00", "https://elsewhere.example/x?sig=1")
        .start(&pki);
    let client = Client::new(&pki.ca_pem());
    assert_eq!(client.get(&fake.url("/v2/")).status, 200);
    let manifest = client.get(&fake.url("/v2/f/app/manifests/v1?ignored=1"));
    assert_eq!(
        (manifest.header("content-type"), &manifest.body[..]),
        (Some(OCI_MANIFEST), &b"{}"[..])
    );
    let blob = client.get(&fake.url(&format!("/v2/f/app/blobs/{}", sha256_digest(b"bytes"))));
    assert_eq!(blob.body, &b"bytes"[..]);
    let redirect = client.get(&fake.url("/v2/f/app/blobs/sha256:00"));
    assert_eq!(
        (redirect.status, redirect.header("location")),
        (307, Some("https://elsewhere.example/x?sig=1"))
    );
    assert_eq!(client.get(&fake.url("/v2/other")).status, 404);
    let post = client.request("POST", &fake.url("/v2/"), &[], Vec::new());
    assert_eq!(post.status, 404, "GET only");
    let seen: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path_and_query))
        .collect();
    assert_eq!(seen[1], "GET /v2/f/app/manifests/v1?ignored=1");
    assert_eq!(seen.len(), 6);
}

#[test]
fn hanging_server_accepts_and_never_answers() {
    let hanging = HangingServer::start();
    let stream = std::net::TcpStream::connect(hanging.host()).unwrap();
    hanging.wait_for_connection(Duration::from_secs(5));
    assert_eq!(hanging.accepted(), 1);
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1];
    let read = (&stream).read(&mut buf);
    assert!(
        read.as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut),
        "nothing is ever said: {read:?}"
    );
}

#[test]
fn a_spawned_run_can_be_signalled() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let running = Run::program("sh")
        .args([
            "-c",
            "trap 'echo got-term >&2; exit 7' TERM; echo up; : > \"$READY\"; \
             while :; do sleep 0.05; done",
        ])
        .env("READY", &ready)
        .spawn();
    // The trap is set once the file exists; signalled earlier, sh would just die.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(std::time::Instant::now() < deadline, "sh never got ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    running.signal("TERM");
    let out = running.wait(Duration::from_secs(10));
    out.assert_code(7);
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str()),
        ("up\n", "got-term\n")
    );
}

#[test]
fn access_log_lines_parse_and_the_registrys_messages_do_not() {
    let line = r#"127.0.0.1 - - [24/Nov/2026:09:02:37 +0000] "GET /v2/foo/blobs/sha256:abc HTTP/1.1" 400 110 "" "provider-images/0.1.0""#;
    let access = Access::parse(line).unwrap();
    assert_eq!(access.method, "GET");
    assert_eq!(access.path, "/v2/foo/blobs/sha256:abc");
    assert_eq!(access.status, 400);
    assert_eq!(access.user_agent, "provider-images/0.1.0");
    assert_eq!(access.object("blobs"), Some("sha256:abc"));
    assert!(access.is_blob() && !access.is_manifest());
    let message = r#"time="2026-11-24T09:02:37Z" level=error msg="response completed with error" http.request.useragent=provider-images/0.1.0"#;
    assert_eq!(Access::parse(message), None);
}

#[test]
fn the_access_log_records_each_request() {
    let registry = Registry::start(RegistryOpts::default());
    let image = registry.push_image(
        "p/log",
        Some("v1"),
        &Image::new(vec![Layer::gzip(&provider_tar())]),
    );
    registry.get_blob("p/log", &image.config_digest);
    let log = registry.access_log();
    let last = log.last().expect("the GET is logged");
    assert_eq!(last.method, "GET");
    assert_eq!(last.object("blobs"), Some(image.config_digest.as_str()));
    assert_eq!(last.status, 200);
}
