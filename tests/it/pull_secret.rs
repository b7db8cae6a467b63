//! Pull-secret keys as containers/image reads them, end to end against a registry with htpasswd
//! auth: an old-style URL key answers for its host, and an unusable entry fails only the images
//! it covers, naming its key.

use crate::common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::*;
use serde_json::{Value, json};

const USER: &str = "puller";
const PASSWORD: &str = "pw-SECRET-keys";

fn registry() -> Registry {
    Registry::start(RegistryOpts::default().basic_auth(USER, PASSWORD))
}

fn push(registry: &Registry, repo: &str) -> String {
    registry.push_image(
        repo,
        Some("v1"),
        &Image::new(vec![Layer::gzip(&provider_layer(&[(
            "default",
            "name: aws\n",
            "kind: Deployment\n",
        )]))]),
    );
    format!("{}/{repo}:v1", registry.host())
}

/// The JSON log lines of a run with this message.
fn log_lines(run: &RunOutput, message: &str) -> Vec<Value> {
    run.stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == message)
        .collect()
}

/// A `https://host:port/v1/` key (docker login's old form) stands for the host alone
/// (containers/image `normalizeAuthFileKey`; issue item 4).
#[test]
fn an_old_style_url_key_answers_for_its_host() {
    let registry = registry();
    let reference = push(&registry, "ocp/capi-aws");
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .trust(&registry)
        .credentials_for(&registry, &format!("https://{}/v1/", registry.host()))
        .image("aws", &reference)
        .run(out.path());
    run.assert_code(0);
    index_image(&read_index(out.path()), &reference);
    assert!(!run.stderr.contains("pw-SECRET"), "the password leaked");
}

/// Only the most specific matching entry is used, and one that is not base64 `user:password`
/// fails the images it covers naming its key, never its value; a less specific entry does not
/// answer instead, and images under other keys still pull (containers/image
/// `findCredentialsInFile`; issue item 4).
#[test]
fn an_unusable_namespace_entry_fails_its_images_naming_the_key_and_only_them() {
    let registry = registry();
    let covered = push(&registry, "ocp/capi-aws");
    let other = push(&registry, "other/capi-gcp");
    let bad_key = format!("{}/ocp", registry.host());
    let bad_value = BASE64.encode("no-colon-SECRET");
    let secret = json!({"auths": {
        registry.host(): {"auth": BASE64.encode(format!("{USER}:{PASSWORD}"))},
        &bad_key: {"auth": bad_value},
    }});
    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("pull-secret.json");
    std::fs::write(&secret_path, secret.to_string()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .trust(&registry)
        .arg("--pull-secret")
        .arg(&secret_path)
        .image("aws", &covered)
        .image("gcp", &other)
        .run(out.path());
    run.assert_code(1);
    let failed = log_lines(&run, "image failed");
    assert!(
        failed.iter().any(|line| line["image"] == covered.as_str()
            && line["error"]
                .as_str()
                .is_some_and(|e| e.contains(&format!("entry {bad_key:?} is unusable")))),
        "the failure names the key {bad_key}:\n{}",
        run.stderr
    );
    assert_eq!(failed.len(), 1, "{}", run.stderr);
    assert!(
        !run.stderr.contains("SECRET") && !run.stderr.contains(&bad_value),
        "the entry's value leaked:\n{}",
        run.stderr
    );
    let pulled: Vec<Value> = log_lines(&run, "pulled");
    assert!(
        pulled.iter().any(|line| line["image"] == other.as_str()),
        "the image under another key pulled:\n{}",
        run.stderr
    );
    assert!(
        !pulled.iter().any(|line| line["image"] == covered.as_str()),
        "{}",
        run.stderr
    );
    // Failed before anything was sent for it, as the node fails the attempt on looking it up.
    let asked_for_covered = registry
        .requests_by_us()
        .into_iter()
        .filter(|access| access.path.starts_with("/v2/ocp/"))
        .collect::<Vec<_>>();
    assert!(asked_for_covered.is_empty(), "{asked_for_covered:?}");
    // `resolve` shows which entry answers, and that it is unusable.
    let plan = Run::new()
        .args(["resolve", "--no-cluster", "--pull-secret"])
        .arg(&secret_path)
        .args([&covered, &other])
        .run();
    plan.assert_code(0);
    for line in [
        format!("       credentials: {bad_key} (unusable: auth is not user:password)"),
        format!("       credentials: {}", registry.host()),
    ] {
        assert!(
            plan.stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{}",
            plan.stdout
        );
    }
}
