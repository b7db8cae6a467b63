//! Never looser than the node, end to end against real registries: insecurity is per pull source
//! and per scope (mirror-semantics §3 "TLS InsecureSkipVerify = the pull source's own
//! Endpoint.Insecure", §4 `insecureRegistries`, vector 36), and a NeverContactSource rule on a bare
//! host keeps every port of that host uncontacted (vectors 11, 13). Each test names the registry
//! that must be refused, and checks it was refused for that reason, not for another.

use crate::common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};

const METADATA: &str = "name: aws\nattributes:\n  type: infrastructure\n  version: v1.0.0\nocpPlatform: AWS\ninstallOrder: 20\n";
const MANIFESTS: &str = "kind: Deployment\nmetadata:\n  name: capa-controller-manager\n";
/// Nothing listens on port 1: a source there refuses at once, as an unreachable one would.
const DEAD: &str = "127.0.0.1:1";

/// An image of its own for `name`: no two tests' images share a digest, so none is served from
/// what another image of the run already fetched.
fn provider_image(name: &str) -> Image {
    let manifests = format!("{MANIFESTS}# {name}\n");
    Image::new(vec![Layer::gzip(&provider_layer(&[(
        "default", METADATA, &manifests,
    )]))])
}

/// `image.config.openshift.io/cluster` with these `insecureRegistries`.
fn image_config(insecure: &[String]) -> Value {
    json!({"apiVersion": "config.openshift.io/v1", "kind": "Image", "metadata": {"name": "cluster"},
           "spec": {"registrySources": {"insecureRegistries": insecure}}})
}

fn idms(name: &str, source: &str, mirrors: &[String], never_contact: bool) -> Value {
    let mut rule = json!({"source": source, "mirrors": mirrors});
    if never_contact {
        rule["mirrorSourcePolicy"] = json!("NeverContactSource");
    }
    json!({"apiVersion": "config.openshift.io/v1", "kind": "ImageDigestMirrorSet",
           "metadata": {"name": name}, "spec": {"imageDigestMirrors": [rule]}})
}

/// A cluster dump holding `objects`, one file each.
fn dump(objects: &[Value]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (n, object) in objects.iter().enumerate() {
        std::fs::write(
            dir.path().join(format!("{n}.yaml")),
            serde_yaml_ng::to_string(object).unwrap(),
        )
        .unwrap();
    }
    dir
}

/// The termination message's line for `reference` (the run failed).
fn failure_line(termination: &Path, reference: &str) -> Option<String> {
    std::fs::read_to_string(termination)
        .unwrap()
        .lines()
        .find(|line| {
            line.strip_prefix(&format!("image {reference}"))
                .is_some_and(|rest| rest.starts_with([' ', ':']))
        })
        .map(str::to_string)
}

/// Rule 1: an `insecureRegistries` scope `host/dev` skips verification for pulls under `host/dev`
/// only. Another path of the same registry, and a mirror of an insecure source, stay verified.
#[test]
fn an_insecure_scope_covers_its_own_path_not_its_whole_registry() {
    // A registry whose CA the run is never given.
    let registry = Registry::start(RegistryOpts::default());
    let dev = registry.push_image("dev/app", Some("v1"), &provider_image("dev"));
    registry.push_image("prod/app", Some("v1"), &provider_image("prod"));
    let mirrored = registry.push_image("mirror/app", Some("v1"), &provider_image("mirror"));
    let dev_ref = format!("{}/dev/app@{}", registry.host(), dev.manifest_digest);
    let prod_ref = format!("{}/prod/app:v1", registry.host());
    // Its source is insecure, the mirror is not: the mirror stays verified (vector 36).
    let mirrored_ref = format!("{DEAD}/ocp/app@{}", mirrored.manifest_digest);
    let cluster = dump(&[
        image_config(&[format!("{}/dev", registry.host()), format!("{DEAD}/ocp")]),
        idms(
            "m",
            &format!("{DEAD}/ocp"),
            &[format!("{}/mirror", registry.host())],
            false,
        ),
    ]);
    let out = tempfile::tempdir().unwrap();
    let termination = out.path().join("termination-log");
    let run = Extract::new()
        .cluster_dir(cluster.path())
        .image("dev", &dev_ref)
        .image("prod", &prod_ref)
        .image("mirrored", &mirrored_ref)
        .arg("--termination-message-path")
        .arg(&termination)
        .run(&out.path().join("tree"));
    run.assert_code(1);
    let message = std::fs::read_to_string(&termination).unwrap();
    assert!(
        message.starts_with("2 of 3 images failed"),
        "{message}\n{}",
        run.stderr
    );
    assert_eq!(failure_line(&termination, &dev_ref), None, "{message}");
    for reference in [&prod_ref, &mirrored_ref] {
        let line = failure_line(&termination, reference)
            .unwrap_or_else(|| panic!("{reference} is reported: {message}"));
        assert!(
            line.contains(&format!("cannot connect to {}", registry.host()))
                && line.contains("UnknownIssuer"),
            "{line}"
        );
    }

    // `resolve` says which sources are insecure and why, and only those.
    let resolved = Run::new()
        .args(["resolve", "--cluster-dir"])
        .arg(cluster.path())
        .args([&dev_ref, &prod_ref, &mirrored_ref])
        .run();
    resolved.assert_code(0);
    let mut insecure_lines: Vec<&str> = resolved
        .stdout
        .lines()
        .filter(|line| line.contains("insecure: yes"))
        .map(str::trim)
        .collect();
    insecure_lines.sort();
    // Sorted: `127.0.0.1:1/…` before `127.0.0.1:<port>/…`.
    assert_eq!(
        insecure_lines,
        [
            format!("insecure: yes (image.config insecureRegistries {DEAD}/ocp)"),
            format!(
                "insecure: yes (image.config insecureRegistries {}/dev)",
                registry.host()
            ),
        ],
        "{}",
        resolved.stdout
    );
}

/// Rule 1: what an insecure scope learned of a plain-http registry (that it speaks http) never
/// switches a secure scope of the same registry to http.
#[test]
fn plain_http_found_for_an_insecure_scope_is_not_used_for_a_secure_one() {
    let registry = Registry::start(RegistryOpts::default().plain_http());
    registry.push_image("dev/app", Some("v1"), &provider_image("plain-dev"));
    registry.push_image("prod/app", Some("v1"), &provider_image("plain-prod"));
    let dev_ref = format!("{}/dev/app:v1", registry.host());
    let prod_ref = format!("{}/prod/app:v1", registry.host());
    let cluster = dump(&[image_config(&[format!("{}/dev", registry.host())])]);
    let out = tempfile::tempdir().unwrap();
    let termination = out.path().join("termination-log");
    // One image at a time, `dev` first (images go in reference order): `prod` comes after the
    // fallback to http was learned.
    let run = Extract::new()
        .cluster_dir(cluster.path())
        .image("dev", &dev_ref)
        .image("prod", &prod_ref)
        .arg("--concurrency")
        .arg("1")
        .arg("--termination-message-path")
        .arg(&termination)
        .run(&out.path().join("tree"));
    run.assert_code(1);
    let message = std::fs::read_to_string(&termination).unwrap();
    assert!(message.starts_with("1 of 2 images failed"), "{message}");
    let line = failure_line(&termination, &prod_ref).expect("prod is reported");
    assert!(
        line.contains(&format!("cannot connect to {}", registry.host())),
        "{line}"
    );
}

/// Rule 1: a token realm on the same host:port as an insecure mirror inherits its setting (the
/// registry answers tokens on its own origin, with the same self-signed certificate).
#[test]
fn a_same_origin_token_realm_of_an_insecure_registry_is_reached_unverified() {
    let registry = Registry::start(RegistryOpts::default().token_auth("puller", "pw-SECRET-token"));
    registry.push_image("p/x", Some("v1"), &provider_image("x"));
    // In front of it, one origin that also answers the token requests, as a registry with its own
    // token service does. Its certificate is the registry's, whose CA the run is never given.
    let origin = FaultProxy::start(registry.pki(), &registry.url(""));
    let scope = "repository:p/x:pull";
    let token = Client::new(&registry.ca_pem())
        .with_credentials("puller", "pw-SECRET-token")
        .bearer_token(&format!(
            "Bearer realm=\"{}\",service=\"{TOKEN_SERVICE}\",scope=\"{scope}\"",
            registry.token_server().unwrap().realm()
        ))
        .unwrap();
    origin.inject(
        "/v2/p/x/manifests/v1",
        HttpFault::Serve(Response::new(401).header(
            "www-authenticate",
            &format!(
                "Bearer realm=\"https://{}/token\",service=\"{TOKEN_SERVICE}\",scope=\"{scope}\"",
                origin.host()
            ),
        )),
        1,
    );
    origin.serve(
        "/token",
        Response::json(200, &json!({"token": token, "expires_in": 300})),
    );
    let reference = format!("{}/p/x:v1", origin.host());
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .image("x", &reference)
        .arg("--insecure-registry")
        .arg(origin.host())
        .run(out.path());
    run.assert_code(0);
    assert_eq!(origin.stats().to("/token").len(), 1, "one token request");
}

/// Rule 1: the token realm of an insecure registry on another port is verified, even when
/// `--insecure-registry` names the host alone (every port of it as a *registry*, not as a realm).
#[test]
fn a_token_realm_on_another_port_is_verified_for_an_insecure_registry() {
    let registry = Registry::start(RegistryOpts::default().token_auth("puller", "pw-SECRET-token"));
    registry.push_image("p/x", Some("v1"), &provider_image("x"));
    let realm = registry.token_server().unwrap().realm();
    let realm_authority = realm
        .trim_start_matches("https://")
        .trim_end_matches("/token");
    let reference = format!("{}/p/x:v1", registry.host());
    let out = tempfile::tempdir().unwrap();
    registry.token_server().unwrap().clear_requests();
    let run = Extract::new()
        .credentials(&registry)
        .image("x", &reference)
        .arg("--insecure-registry")
        .arg("127.0.0.1")
        .run(out.path());
    run.assert_code(1);
    assert!(
        run.stderr.contains(&format!(
            "cannot connect to {realm_authority}: client error (Connect): invalid peer \
             certificate: UnknownIssuer"
        )),
        "{}",
        run.stderr
    );
    assert!(registry.token_server().unwrap().requests().is_empty());
    assert!(!run.stderr.contains("pw-SECRET-token"));
    // With the realm's CA trusted, the same run pulls.
    Extract::new()
        .credentials(&registry)
        .trust(&registry)
        .image("x", &reference)
        .arg("--insecure-registry")
        .arg("127.0.0.1")
        .run(&out.path().join("trusted"))
        .assert_code(0);
}

/// Rule 2, vectors 11 and 13: a NeverContactSource rule for a bare host covers that host on every
/// port. The node fails the pull there; we never contact it either, and name the rule.
#[test]
fn a_never_contact_rule_on_a_bare_host_keeps_every_port_uncontacted() {
    let registry = Registry::start(RegistryOpts::default());
    let image = registry.push_image("p/x", Some("v1"), &provider_image("x"));
    let reference = format!("{}/p/x@{}", registry.host(), image.manifest_digest);
    let cluster = dump(&[idms(
        "no-loopback",
        "127.0.0.1",
        &["mirror.invalid/x".to_string()],
        true,
    )]);
    let before = registry.requests_by_us().len();
    let out = tempfile::tempdir().unwrap();
    let termination = out.path().join("termination-log");
    let run = Extract::new()
        .registry(&registry)
        .cluster_dir(cluster.path())
        .image("x", &reference)
        .arg("--termination-message-path")
        .arg(&termination)
        .run(&out.path().join("tree"));
    run.assert_code(1);
    let line = failure_line(&termination, &reference).expect("the image is reported");
    assert!(
        line.contains(
            "not contacted: NeverContactSource in ImageDigestMirrorSet/no-loopback (its source \
             127.0.0.1 covers every port of that host on the node)"
        ),
        "{line}"
    );
    assert_eq!(
        registry.requests_by_us().len(),
        before,
        "the registry was contacted"
    );
    // The extract log says so in the words `resolve` uses.
    let resolved = Run::new()
        .args(["resolve", "--cluster-dir"])
        .arg(cluster.path())
        .arg(&reference)
        .run();
    resolved.assert_code(0);
    let said = resolved
        .stdout
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("not contacted: "))
        .unwrap_or_else(|| panic!("{}", resolved.stdout));
    assert!(run.stderr.contains(said), "{said}\n{}", run.stderr);
}

/// Rule 5: `resolve` names each departure from the node that applies, with its vector: here the
/// `:` boundary (vector 11) and the one CA pool (mirror-semantics §4, the mission's choice).
#[test]
fn resolve_names_where_a_pull_differs_from_the_node() {
    let pki = Pki::new();
    let pem = std::fs::read_to_string(pki.ca_pem()).unwrap();
    let cluster = dump(&[
        idms("h", "127.0.0.1", &["mirror.invalid/x".to_string()], false),
        json!({"apiVersion": "config.openshift.io/v1", "kind": "Image", "metadata": {"name": "cluster"},
               "spec": {"additionalTrustedCA": {"name": "registry-cas"}}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "registry-cas", "namespace": "openshift-config"},
               "data": {"127.0.0.1..5000": pem}}),
    ]);
    let on_a_port = format!("127.0.0.1:5000/ns/app@sha256:{}", "a".repeat(64));
    let plain = format!("127.0.0.1/ns/app@sha256:{}", "a".repeat(64));
    let resolved = Run::new()
        .args(["resolve", "--cluster-dir"])
        .arg(cluster.path())
        .args([&on_a_port, &plain])
        .run();
    resolved.assert_code(0);
    let said: Vec<&str> = resolved
        .stdout
        .lines()
        .filter(|line| line.contains("differs from the node:"))
        .map(str::trim)
        .collect();
    assert_eq!(
        said,
        [
            "differs from the node: the node matches the rule for 127.0.0.1 on 127.0.0.1:5000 too \
             (its ':' boundary) and fails this pull rewriting it onto that rule's mirrors \
             (vectors 11, 13); here the rule does not apply across a port",
            "note: differs from the node: the node trusts each key of ConfigMap \
             openshift-config/registry-cas (additionalTrustedCA) for the registry the key names \
             only; here its CAs join one pool trusted for every registry",
        ],
        "{}",
        resolved.stdout
    );
    // The reference on the rule's own port is mirrored as on the node, and said nothing of.
    assert!(
        resolved.stdout.contains(&format!(
            "mirror.invalid/x/ns/app@sha256:{}",
            "a".repeat(64)
        )),
        "{}",
        resolved.stdout
    );
}
