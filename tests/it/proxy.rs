//! Behind an egress proxy: `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` (and `--proxy`/`--no-proxy`) for
//! registries, token realms, redirected blobs and the cluster API, against an in-test proxy that
//! logs every CONNECT. Loopback is never proxied (as in Go), so servers are named with `.test`
//! names only the proxy resolves; TLS still verifies end to end because the test PKI's server
//! certificate covers those names. `0.0.0.0` reaches the same servers without counting as
//! loopback, which is what the NO_PROXY tests need.

use crate::common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use serde_json::Value;

const METADATA: &str = "name: aws\nattributes:\n  type: infrastructure\n  version: v1.0.0\nocpPlatform: AWS\ninstallOrder: 20\n";
const MANIFESTS: &str =
    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: capa\nspec:\n  replicas: 1\n";

/// A proxy password with characters a URL must escape; it must never be shown.
const PROXY_USER: &str = "egress";
const PROXY_PASSWORD: &str = "pr0xy@SECRET:pw";

fn provider() -> Layer {
    Layer::gzip(&provider_layer(&[("default", METADATA, MANIFESTS)]))
}

/// A registry with one image `p/capi:v1`; `auth` decides how it authenticates.
fn registry_with_image(opts: RegistryOpts) -> Registry {
    let registry = Registry::start(opts);
    registry.push_image("p/capi", Some("v1"), &Image::new(vec![provider()]));
    registry
}

fn published_manifests(out: &std::path::Path, reference: &str) -> Vec<u8> {
    let index = read_index(out);
    read_subtree_file(
        out,
        index_image(&index, reference),
        "default/manifests.yaml",
    )
}

/// Every way the password could show: as written, percent-encoded, and inside the Basic value.
fn assert_password_hidden(text: &str) {
    let encoded_url = "pr0xy%40SECRET%3Apw";
    let basic = STANDARD.encode(format!("{PROXY_USER}:{PROXY_PASSWORD}"));
    for secret in [PROXY_PASSWORD, encoded_url, basic.as_str(), "SECRET"] {
        assert!(!text.contains(secret), "{secret:?} shown in:\n{text}");
    }
}

#[test]
fn extract_goes_through_the_proxy_to_a_name_only_it_resolves() {
    let registry =
        registry_with_image(RegistryOpts::default().basic_auth("puller", "pw-registry-basic"));
    let proxy = ProxyServer::start(ProxyOpts::default());
    let host = registry.host_named("registry.test");
    let reference = format!("{host}/p/capi:v1");
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .trust(&registry)
        .credentials_for(&registry, &host)
        .image("aws", &reference)
        .env("HTTPS_PROXY", proxy.url())
        .run(out.path());
    run.assert_code(0);
    assert_eq!(
        published_manifests(out.path(), &reference),
        MANIFESTS.as_bytes()
    );
    let tunnels = proxy.tunnels();
    assert!(!tunnels.is_empty(), "no tunnel opened");
    assert!(
        tunnels.iter().all(|target| *target == host),
        "every connection is a tunnel to {host}: {tunnels:?}"
    );
    // No credentials in the proxy URL: none sent.
    assert!(proxy.requests().iter().all(|r| r.authorization.is_none()));
}

#[test]
fn proxy_credentials_from_the_url_answer_the_proxys_challenge() {
    let registry = registry_with_image(RegistryOpts::default());
    let proxy = ProxyServer::start(ProxyOpts::default().credentials(PROXY_USER, PROXY_PASSWORD));
    let host = registry.host_named("registry.test");
    let reference = format!("{host}/p/capi:v1");
    let out = tempfile::tempdir().unwrap();

    let without = Extract::new()
        .trust(&registry)
        .image("aws", &reference)
        .env("HTTPS_PROXY", proxy.url())
        .run(&out.path().join("without"));
    without.assert_code(1);
    let expected = format!(
        "CONNECT to {host} via proxy {}: 407 Proxy Authentication Required",
        proxy.authority()
    );
    assert!(
        without.stderr.contains(&expected),
        "{expected:?} not in:\n{without}"
    );

    let with = Extract::new()
        .trust(&registry)
        .image("aws", &reference)
        .env(
            "https_proxy",
            proxy.url_with_credentials(PROXY_USER, PROXY_PASSWORD),
        )
        .run(&out.path().join("with"));
    with.assert_code(0);
    assert_eq!(
        published_manifests(&out.path().join("with"), &reference),
        MANIFESTS.as_bytes()
    );
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{PROXY_USER}:{PROXY_PASSWORD}"))
    );
    let authorized: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.status == 200)
        .collect();
    assert!(!authorized.is_empty());
    assert!(
        authorized
            .iter()
            .all(|r| r.authorization.as_deref() == Some(expected.as_str())),
        "{authorized:?}"
    );
    assert_password_hidden(&with.stderr);
}

#[test]
fn wrong_proxy_credentials_fail_naming_the_proxy_and_never_show_the_password() {
    let registry = registry_with_image(RegistryOpts::default());
    let proxy = ProxyServer::start(ProxyOpts::default().credentials(PROXY_USER, "the-right-one"));
    let host = registry.host_named("registry.test");
    let reference = format!("{host}/p/capi:v1");
    let out = tempfile::tempdir().unwrap();
    let termination = out.path().join("termination-log");
    let run = Extract::new()
        .trust(&registry)
        .image("aws", &reference)
        .arg("--termination-message-path")
        .arg(&termination)
        .env(
            "HTTPS_PROXY",
            proxy.url_with_credentials(PROXY_USER, PROXY_PASSWORD),
        )
        .env("RUST_LOG", "trace")
        .run(&out.path().join("out"));
    run.assert_code(1);
    let expected = format!(
        "CONNECT to {host} via proxy {}: 407 Proxy Authentication Required",
        proxy.authority()
    );
    assert!(
        run.stderr.contains(&expected),
        "{expected:?} not in:\n{run}"
    );
    let message = std::fs::read_to_string(&termination).unwrap();
    assert!(message.contains(&expected), "{message}");
    assert_password_hidden(&run.stderr);
    assert_password_hidden(&message);
    // The proxy did get the (wrong) credentials: they were sent, only never shown.
    assert!(
        proxy
            .requests()
            .iter()
            .all(|r| r.status == 407 && r.authorization.is_some())
    );
}

#[test]
fn an_unreachable_proxy_is_named() {
    let registry = registry_with_image(RegistryOpts::default());
    // A port that was free a moment ago: nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let reference = format!("{}/p/capi:v1", registry.host_named("registry.test"));
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .trust(&registry)
        .image("aws", &reference)
        .env("HTTPS_PROXY", format!("http://{dead}"))
        .run(out.path());
    run.assert_code(1);
    let expected = format!("proxy {dead} unreachable");
    assert!(
        run.stderr.contains(&expected),
        "{expected:?} not in:\n{run}"
    );
}

#[test]
fn the_token_realm_and_redirected_blobs_go_through_the_proxy_too() {
    let registry = registry_with_image(
        RegistryOpts::default()
            .token_auth("puller", "pw-token")
            .redirect_blobs()
            .proxy_names(),
    );
    let proxy = ProxyServer::start(ProxyOpts::default());
    let host = registry.host_named("registry.test");
    let reference = format!("{host}/p/capi:v1");
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .trust(&registry)
        .credentials_for(&registry, &host)
        .image("aws", &reference)
        .env("HTTPS_PROXY", proxy.url())
        .run(out.path());
    run.assert_code(0);
    assert_eq!(
        published_manifests(out.path(), &reference),
        MANIFESTS.as_bytes()
    );
    let token_requests = registry.token_server().unwrap().requests();
    assert!(!token_requests.is_empty());
    let store_requests = registry.blob_store().unwrap().requests();
    assert!(!store_requests.is_empty());
    let tunnels = proxy.tunnels();
    for name in ["registry.test", "auth.test", "blobs.test"] {
        assert!(
            tunnels.iter().any(|t| t.starts_with(&format!("{name}:"))),
            "no tunnel to {name}: {tunnels:?}"
        );
    }
}

#[test]
fn loopback_goes_direct_whatever_the_proxy_settings() {
    let registry = registry_with_image(RegistryOpts::default());
    let proxy = ProxyServer::start(ProxyOpts::default());
    let reference = format!("{}/p/capi:v1", registry.host());
    let out = tempfile::tempdir().unwrap();
    Extract::new()
        .trust(&registry)
        .image("aws", &reference)
        .env("HTTPS_PROXY", proxy.url())
        .env("HTTP_PROXY", proxy.url())
        .run(out.path())
        .assert_code(0);
    assert_eq!(proxy.requests(), []);
}

#[test]
fn no_proxy_sends_a_listed_registry_direct_and_the_flags_override_it() {
    let registry = registry_with_image(RegistryOpts::default());
    let proxy = ProxyServer::start(ProxyOpts::default());
    // 0.0.0.0 reaches the registry without being loopback: proxied unless NO_PROXY lists it.
    let host = registry.host_named("0.0.0.0");
    let reference = format!("{host}/p/capi:v1");
    let out = tempfile::tempdir().unwrap();
    let extract = || {
        Extract::new()
            .trust(&registry)
            .image("aws", &reference)
            .env("HTTPS_PROXY", proxy.url())
    };

    // Not listed: through the proxy, which refuses to reach a non-loopback address.
    let proxied = extract().run(&out.path().join("proxied"));
    proxied.assert_code(1);
    let refused = format!(
        "CONNECT to {host} via proxy {}: 502 Bad Gateway",
        proxy.authority()
    );
    assert!(
        proxied.stderr.contains(&refused),
        "{refused:?} not in:\n{proxied}"
    );
    let seen = proxy.requests().len();
    assert!(seen > 0);

    // Listed (as a CIDR range, among other entries): direct.
    extract()
        .env("NO_PROXY", "quay.io, .example.com,0.0.0.0/8")
        .run(&out.path().join("direct"))
        .assert_code(0);
    assert_eq!(
        published_manifests(&out.path().join("direct"), &reference),
        MANIFESTS.as_bytes()
    );
    assert_eq!(proxy.requests().len(), seen, "the proxy saw nothing more");

    // --no-proxy replaces NO_PROXY: proxied again.
    let overridden = extract()
        .env("NO_PROXY", "0.0.0.0")
        .arg("--no-proxy")
        .arg("quay.io")
        .run(&out.path().join("overridden"));
    overridden.assert_code(1);
    assert!(overridden.stderr.contains(&refused), "{overridden}");

    // --proxy replaces HTTPS_PROXY: a dead proxy in the environment is not used.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let named = registry.host_named("registry.test");
    let by_name = format!("{named}/p/capi:v1");
    let before = proxy.tunnels().len();
    Extract::new()
        .trust(&registry)
        .image("aws", &by_name)
        .env("HTTPS_PROXY", format!("http://{dead}"))
        .arg("--proxy")
        .arg(proxy.url())
        .run(&out.path().join("flag"))
        .assert_code(0);
    assert!(proxy.tunnels()[before..].iter().all(|t| *t == named));
    assert!(proxy.tunnels().len() > before);
}

#[test]
fn an_https_proxy_is_verified_with_the_same_roots() {
    let registry = registry_with_image(RegistryOpts::default());
    let proxy_pki = Pki::new();
    let proxy = ProxyServer::start(
        ProxyOpts::default()
            .tls(&proxy_pki)
            .credentials(PROXY_USER, PROXY_PASSWORD),
    );
    assert!(proxy.url().starts_with("https://"));
    let host = registry.host_named("registry.test");
    let reference = format!("{host}/p/capi:v1");
    let out = tempfile::tempdir().unwrap();
    let proxy_url = proxy.url_with_credentials(PROXY_USER, PROXY_PASSWORD);

    // The proxy's CA is not trusted: refused before any credential is sent.
    let untrusted = Extract::new()
        .trust(&registry)
        .image("aws", &reference)
        .env("HTTPS_PROXY", &proxy_url)
        .run(&out.path().join("untrusted"));
    untrusted.assert_code(1);
    let expected = format!("TLS to proxy {}", proxy.authority());
    assert!(
        untrusted.stderr.contains(&expected),
        "{expected:?} not in:\n{untrusted}"
    );
    assert_eq!(proxy.requests(), []);

    let trusted = Extract::new()
        .trust(&registry)
        .arg("--ca-file")
        .arg(proxy_pki.ca_pem())
        .image("aws", &reference)
        .env("HTTPS_PROXY", &proxy_url)
        .run(&out.path().join("trusted"));
    trusted.assert_code(0);
    assert_eq!(
        published_manifests(&out.path().join("trusted"), &reference),
        MANIFESTS.as_bytes()
    );
    let tunnels = proxy.tunnels();
    assert!(
        !tunnels.is_empty() && tunnels.iter().all(|t| *t == host),
        "{tunnels:?}"
    );
    assert_password_hidden(&trusted.stderr);
}

#[test]
fn a_plain_http_registry_is_reached_through_http_proxy_in_absolute_form() {
    let registry = registry_with_image(RegistryOpts::default().plain_http());
    let proxy = ProxyServer::start(ProxyOpts::default().credentials(PROXY_USER, PROXY_PASSWORD));
    let host = registry.host_named("registry.test");
    let reference = format!("{host}/p/capi:v1");
    let out = tempfile::tempdir().unwrap();
    let proxy_url = proxy.url_with_credentials(PROXY_USER, PROXY_PASSWORD);
    let run = Extract::new()
        .image("aws", &reference)
        .arg("--insecure-registry")
        .arg(&host)
        .env("HTTPS_PROXY", &proxy_url)
        .env("HTTP_PROXY", &proxy_url)
        .run(out.path());
    run.assert_code(0);
    assert_eq!(
        published_manifests(out.path(), &reference),
        MANIFESTS.as_bytes()
    );
    let requests = proxy.requests();
    let plain: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "GET" && r.target.starts_with(&format!("http://{host}/v2/")))
        .collect();
    assert!(!plain.is_empty(), "{requests:?}");
    assert!(
        plain
            .iter()
            .all(|r| r.status == 200 && r.authorization.is_some()),
        "{plain:?}"
    );
    assert_password_hidden(&run.stderr);
}

#[test]
fn resolve_shows_the_proxy_of_each_pull_source_without_credentials() {
    let env = [
        (
            "HTTPS_PROXY",
            "http://egress:pr0xy%40SECRET%3Apw@proxy.example.com:3128",
        ),
        ("NO_PROXY", ".internal.example"),
    ];
    let refs = [
        "quay.io/openshift/capi:v1",
        "mirror.internal.example:5000/openshift/capi:v1",
    ];
    let mut text = Run::new().args(["resolve", "--no-cluster"]).args(refs);
    let mut json = Run::new()
        .args(["resolve", "--no-cluster", "--format", "json"])
        .args(refs);
    for (name, value) in env {
        text = text.env(name, value);
        json = json.env(name, value);
    }
    let text = text.run();
    text.assert_code(0);
    let lines: Vec<&str> = text.stdout.lines().collect();
    let proxy_lines: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.trim_start().starts_with("proxy:"))
        .collect();
    assert_eq!(
        proxy_lines,
        // Sorted by reference: the mirror first.
        [
            "       proxy: none (direct)",
            "       proxy: http://proxy.example.com:3128",
        ],
        "{}",
        text.stdout
    );
    assert_password_hidden(&text.stdout);
    assert_password_hidden(&text.stderr);
    let json = json.run();
    json.assert_code(0);
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["images"][0]["ref"], refs[1]);
    assert_eq!(report["images"][0]["sources"][0]["proxy"], Value::Null);
    assert_eq!(
        report["images"][1]["sources"][0]["proxy"],
        "http://proxy.example.com:3128"
    );
    assert_password_hidden(&json.stdout);
}

#[test]
fn a_socks_proxy_is_a_usage_error() {
    let run = Run::new()
        .args(["resolve", "--no-cluster", "quay.io/a/b:c"])
        .env("HTTPS_PROXY", "socks5://127.0.0.1:1080")
        .run();
    run.assert_code(2);
    assert!(
        run.stderr.contains("only http:// and https:// proxies"),
        "{run}"
    );
}

/// An API server with the OpenShift kinds, read through `resolve` (which pulls nothing).
fn resolve_against(kubeconfig: &std::path::Path, env: &[(&str, String)]) -> RunOutput {
    let mut run = Run::new()
        .args(["resolve", "quay.io/openshift/capi:v1"])
        .env("KUBECONFIG", kubeconfig);
    for (name, value) in env {
        run = run.env(name, value);
    }
    run.run()
}

#[test]
fn the_cluster_api_goes_through_the_proxy_with_its_credentials() {
    let api = ApiServer::start();
    api.serve_openshift();
    let proxy = ProxyServer::start(ProxyOpts::default().credentials(PROXY_USER, PROXY_PASSWORD));
    let kubeconfig = api.kubeconfig_named("api.test");
    let run = resolve_against(
        &kubeconfig,
        &[
            (
                "HTTPS_PROXY",
                proxy.url_with_credentials(PROXY_USER, PROXY_PASSWORD),
            ),
            ("RUST_LOG", "trace".into()),
        ],
    );
    run.assert_code(0);
    assert!(!api.requests().is_empty(), "the API server was read");
    let tunnels = proxy.tunnels();
    assert!(
        !tunnels.is_empty() && tunnels.iter().all(|t| t.starts_with("api.test:")),
        "{tunnels:?}"
    );
    assert_password_hidden(&run.stderr);
}

#[test]
fn the_cluster_api_honours_no_proxy() {
    let api = ApiServer::start();
    api.serve_openshift();
    let proxy = ProxyServer::start(ProxyOpts::default());
    // 0.0.0.0: not loopback, so only NO_PROXY keeps it off the proxy (which would refuse it).
    let kubeconfig = api.kubeconfig_named("0.0.0.0");

    let proxied = resolve_against(&kubeconfig, &[("HTTPS_PROXY", proxy.url())]);
    proxied.assert_code(3);
    assert!(
        proxy
            .requests()
            .iter()
            .any(|r| r.method == "CONNECT" && r.status == 502),
        "{:?}",
        proxy.requests()
    );
    assert!(api.requests().is_empty());

    let seen = proxy.requests().len();
    let direct = resolve_against(
        &kubeconfig,
        &[
            ("HTTPS_PROXY", proxy.url()),
            ("NO_PROXY", ".svc,0.0.0.0".into()),
        ],
    );
    direct.assert_code(0);
    assert_eq!(proxy.requests().len(), seen, "the proxy saw nothing more");
    assert!(!api.requests().is_empty());
}
