//! The fuzz targets (`provider_images::fuzz`) on stable, without AFL: every input committed under
//! `tests/corpus/<target>/` (each a crash or hang AFL found, kept as a regression test), and the
//! seeds `hack/fuzz.sh` starts AFL from, built here from the tests' own fixtures.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use provider_images::fuzz;
use serde_json::json;

use crate::common::{MANIFESTS_DIR, Pki, TarBuilder, provider_layer};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// Issue 17 §4: every committed input replays through its target without a panic (the targets
/// assert their invariants: subtree paths, reference round trip, blocked sources).
#[test]
fn corpus_replays() {
    let Ok(dirs) = fs::read_dir(corpus_dir()) else {
        return;
    };
    for entry in dirs {
        let dir = entry.unwrap().path();
        let target = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            fuzz::TARGETS.contains(&target.as_str()),
            "tests/corpus/{target} names no fuzz target"
        );
        for input in fs::read_dir(&dir).unwrap() {
            let path = input.unwrap().path();
            if path.file_name().is_some_and(|n| n == "README.md") {
                continue;
            }
            let data = fs::read(&path).unwrap();
            let started = std::time::Instant::now();
            assert!(fuzz::run(&target, &data));
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "{} is slow to replay (a hang)",
                path.display()
            );
        }
    }
}

/// The seeds replay too: a seed that fails its own target would hide every finding behind it.
#[test]
fn seeds_replay() {
    let seeds = seeds();
    for target in fuzz::TARGETS {
        assert!(
            seeds.iter().any(|(t, _)| *t == target),
            "no seed for the {target} target"
        );
    }
    for (target, data) in &seeds {
        assert!(fuzz::run(target, data));
    }
}

/// Writes the seeds under `$FUZZ_SEEDS/<target>/` for `hack/fuzz.sh` (ignored otherwise).
#[test]
#[ignore = "run by hack/fuzz.sh with FUZZ_SEEDS set"]
fn write_seeds() {
    let root = PathBuf::from(std::env::var_os("FUZZ_SEEDS").expect("FUZZ_SEEDS"));
    for (i, (target, data)) in seeds().iter().enumerate() {
        let dir = root.join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::File::create(dir.join(format!("seed-{i:03}")))
            .and_then(|mut f| f.write_all(data))
            .unwrap();
    }
}

fn with_selector(selector: u8, body: &[u8]) -> Vec<u8> {
    let mut data = vec![selector];
    data.extend_from_slice(body);
    data
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Seeds per target, from the shapes the tests use.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let mut add = |target: &'static str, data: Vec<u8>| seeds.push((target, data));

    for text in [
        "quay.io/openshift/capi-aws:v1",
        "registry.example.com:5000/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "busybox",
        "localhost/x:latest",
        "[::1]:5000/ns/img:tag",
    ] {
        add("reference", text.into());
    }

    let images = json!({"aws": "quay.io/openshift/capi-aws:v1", "gcp": format!("quay.io/openshift/capi-gcp@{DIGEST}")});
    add("images", with_selector(0, images.to_string().as_bytes()));
    add("images", with_selector(1, images.to_string().as_bytes()));

    let auths = json!({"auths": {"quay.io": {"auth": "dXNlcjpwYXNz"}, "registry.example.com:5000/a": {"username": "u", "password": "p"}}});
    add("pull_secret", auths.to_string().into());
    let encoded = base64_encode(auths.to_string().as_bytes());
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pull-secret", "namespace": "openshift-config"}, "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": encoded}});
    add("pull_secret", secret.to_string().into());

    for header in [
        r#"Bearer realm="https://auth.example.com/token",service="registry",scope="repository:a/b:pull""#,
        r#"Basic realm="registry""#,
        "120",
        "Wed, 21 Oct 2026 07:28:00 GMT",
    ] {
        add("headers", header.into());
    }

    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": DIGEST, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": DIGEST, "size": 10}]});
    add(
        "manifest",
        with_selector(0, manifest.to_string().as_bytes()),
    );
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": DIGEST, "size": 10,
        "platform": {"architecture": "amd64", "os": "linux"}}]});
    add("manifest", with_selector(1, index.to_string().as_bytes()));

    let tar = provider_layer(&[("core", "cluster-api", "kind: Deployment\n")]);
    let links = TarBuilder::new()
        .dir(MANIFESTS_DIR)
        .file(&format!("{MANIFESTS_DIR}/a.yaml"), b"a: 1\n")
        .hardlink(
            &format!("{MANIFESTS_DIR}/b.yaml"),
            &format!("{MANIFESTS_DIR}/a.yaml"),
        )
        .symlink("etc/x", "../../y")
        .whiteout(&format!("{MANIFESTS_DIR}/old.yaml"))
        .opaque(&format!("{MANIFESTS_DIR}/dir"))
        .pax(&[("path", format!("{MANIFESTS_DIR}/long.yaml").as_bytes())])
        .file("placeholder", b"x")
        .finish();
    add("layer", with_selector(0, &tar));
    add("layer", with_selector(0, &links));
    add("layer", with_selector(1, &gzip(&tar)));
    add(
        "layer",
        with_selector(2, &zstd::encode_all(&tar[..], 3).unwrap()),
    );

    let file = format!("{MANIFESTS_DIR}/core/a.yaml");
    let estargz = json!({"version": 1, "entries": [
        {"name": MANIFESTS_DIR, "type": "dir"},
        {"name": file, "type": "reg", "size": 20, "offset": 100, "chunkSize": 10, "chunkDigest": DIGEST},
        {"name": file, "type": "chunk", "offset": 200, "chunkOffset": 10, "chunkDigest": DIGEST},
        {"name": "x", "type": "symlink", "linkName": "y"}]});
    add("toc", with_selector(0, estargz.to_string().as_bytes()));
    let chunked = json!({"version": 1, "entries": [
        {"name": MANIFESTS_DIR, "type": "dir"},
        {"name": file, "type": "reg", "size": 20, "offset": 100, "endOffset": 150, "digest": DIGEST},
        {"name": file, "type": "chunk", "offset": 150, "endOffset": 160}]});
    add("toc", with_selector(1, chunked.to_string().as_bytes()));

    add(
        "byteranges",
        format!(
            "application/octet-stream\nbytes 0-9/1000\n{}",
            "x".repeat(10)
        )
        .into(),
    );
    add(
        "byteranges",
        "application/octet-stream\nbytes 20-999/1000\nz".into(),
    );
    let mut multipart = b"multipart/byteranges; boundary=B\n\n".to_vec();
    for (first, last) in [(0, 9), (20, 29), (100, 199)] {
        multipart.extend_from_slice(
            format!("--B\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {first}-{last}/1000\r\n\r\n").as_bytes(),
        );
        multipart.extend(std::iter::repeat_n(b'y', last - first + 1));
        multipart.extend_from_slice(b"\r\n");
    }
    multipart.extend_from_slice(b"--B--\r\n");
    add("byteranges", multipart);

    let idms = json!({"apiVersion": "config.openshift.io/v1", "kind": "ImageDigestMirrorSet",
        "metadata": {"name": "idms"}, "spec": {"imageDigestMirrors": [
            {"source": "quay.io/openshift", "mirrors": ["mirror.local:5000/openshift"], "mirrorSourcePolicy": "NeverContactSource"},
            {"source": "*.example.com", "mirrors": ["mirror.local:5000/example"]}]}});
    let itms = json!({"apiVersion": "config.openshift.io/v1", "kind": "ImageTagMirrorSet",
        "metadata": {"name": "itms"}, "spec": {"imageTagMirrors": [
            {"source": "quay.io", "mirrors": ["mirror.local:5000/quay"], "mirrorSourcePolicy": "AllowContactingSource"}]}});
    let icsp = json!({"apiVersion": "operator.openshift.io/v1alpha1", "kind": "ImageContentSourcePolicy",
        "metadata": {"name": "icsp"}, "spec": {"repositoryDigestMirrors": [
            {"source": "registry.example.com/a", "mirrors": ["mirror.local:5000/a"]}]}});
    let image = json!({"apiVersion": "config.openshift.io/v1", "kind": "Image", "metadata": {"name": "cluster"},
        "spec": {"additionalTrustedCA": {"name": "extra-ca"}, "registrySources": {
            "blockedRegistries": ["bad.local"], "insecureRegistries": ["mirror.local:5000"]}}});
    let pull = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pull-secret", "namespace": "openshift-config"},
        "data": {".dockerconfigjson": base64_encode(auths.to_string().as_bytes())}});
    let images_cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cluster-capi-operator-images", "namespace": "openshift-cluster-api-operator"},
        "data": {"images.json": images.to_string()}});
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [idms, itms, icsp, image, pull, images_cm]});
    add(
        "cluster_dump",
        with_selector(1, list.to_string().as_bytes()),
    );
    let yaml: String = [&idms, &image, &images_cm]
        .iter()
        .map(|o| format!("---\n{}", serde_yaml_ng::to_string(o).unwrap()))
        .collect();
    add("cluster_dump", with_selector(0, yaml.as_bytes()));

    let mirrors = json!({"objects": [idms, itms, icsp], "image": image, "references": [
        format!("quay.io/openshift/capi-aws@{DIGEST}"), "quay.io/openshift/capi-aws:v1",
        format!("a.example.com/x@{DIGEST}"), format!("registry.example.com/a/b@{DIGEST}"), "bad.local:5000/x:y"]});
    add("mirrors", mirrors.to_string().into());

    let pki = Pki::self_signed();
    let ca = fs::read(pki.ca_pem()).unwrap();
    let mut bundle = b"# a bundle comment\n".to_vec();
    bundle.extend_from_slice(&ca);
    bundle.extend_from_slice(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    add("pem", ca);
    add("pem", bundle);

    policy_seeds(&mut add);
    seeds
}

const PAYLOAD_TYPE: &str = "cosign container image signature";

/// Seeds of the policy targets: small ones made here, and the golden sigstore vectors' payloads,
/// SETs and signatures when the vectors are at hand.
fn policy_seeds(add: &mut impl FnMut(&'static str, Vec<u8>)) {
    let payload = |optional: serde_json::Value| {
        json!({"critical": {"identity": {"docker-reference": "quay.io/openshift/capi-aws:v1"},
            "image": {"docker-manifest-digest": DIGEST}, "type": PAYLOAD_TYPE}, "optional": optional})
    };
    add("signature_payload", payload(json!(null)).to_string().into());
    let with_optional = payload(json!({"creator": "c", "timestamp": 1_657_296_609, "other": [1]}));
    add("signature_payload", with_optional.to_string().into());

    let pem_block = |label: &str, der: &[u8]| {
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            base64_encode(der)
        )
    };
    let body = |public_key: &str| {
        json!({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": sha256_hex(fuzz::REKOR_PAYLOAD)}},
            "signature": {"content": base64_encode(fuzz::REKOR_SIGNATURE),
                "publicKey": {"content": base64_encode(public_key.as_bytes())}}}})
        .to_string()
    };
    add(
        "rekor_set",
        with_selector(1, body(fuzz::REKOR_SIGNER_KEY).as_bytes()),
    );
    let certificate = pem_block("CERTIFICATE", fuzz::REKOR_SIGNER_CERTIFICATE);
    add("rekor_set", with_selector(3, body(&certificate).as_bytes()));
    let set = json!({"SignedEntryTimestamp": base64_encode(b"not a signature"), "Payload": {
        "body": base64_encode(body(fuzz::REKOR_SIGNER_KEY).as_bytes()),
        "integratedTime": 1_674_247_893, "logIndex": 7, "logID": "00"}});
    add("rekor_set", with_selector(0, set.to_string().as_bytes()));

    let key_data = base64_encode(fuzz::REKOR_SIGNER_KEY.as_bytes());
    let public_key = |scopes: serde_json::Value| {
        json!({"scopes": scopes, "policy": {"rootOfTrust": {"policyType": "PublicKey",
            "publicKey": {"keyData": key_data}}, "signedIdentity": {"matchPolicy": "MatchRepository"}}})
    };
    let broken = json!({"scopes": ["registry.example.com:5000/a"], "policy": {"rootOfTrust": {
        "policyType": "FulcioCAWithRekor", "fulcioCAWithRekor": {"fulcioCAData": "Y2E=",
        "rekorKeyData": "cms=", "fulcioSubject": {"oidcIssuer": "https://i", "signedEmail": "a@b"}}}}});
    let signature = json!({"kind": "Attachment", "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
        "payload": payload(json!(null)).to_string(),
        "annotations": {"dev.cosignproject.cosign/signature": base64_encode(b"not a signature")}});
    let policies = json!([
        {"kind": "ClusterImagePolicy", "name": "release", "spec": public_key(json!(["quay.io/openshift", "*.example.com"]))},
        {"kind": "ClusterImagePolicy", "name": "broken", "spec": broken},
        {"kind": "ImagePolicy", "namespace": "ns", "name": "own",
            "spec": public_key(json!(["quay.io/openshift/capi-aws", "own.io/x:1", "h.example.com:5000/x"]))},
        {"kind": "ImagePolicy", "namespace": "other", "name": "theirs", "spec": public_key(json!(["their.io"]))},
        signature,
        {"kind": "Reference", "reference": "own.io/x:1"},
        {"kind": "Reference", "reference": format!("a.example.com/x@{DIGEST}")},
    ]);
    add("policy_render", policies.to_string().into());
    let mut refused = policies.as_array().unwrap().clone();
    refused.push(json!({"kind": "RegistrySources", "allowed": ["quay.io", "own.io"], "blocked": ["their.io"]}));
    add(
        "policy_render",
        serde_json::Value::Array(refused).to_string().into(),
    );

    let Some(dir) = crate::policy_vectors::vectors() else {
        return;
    };
    let read = |name: &str| fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    add("signature_payload", read("rekor-payload"));
    let set = read("rekor-set");
    add("rekor_set", with_selector(0, &set));
    let set: serde_json::Value = serde_json::from_slice(&set).unwrap();
    let body = base64_decode(set["Payload"]["body"].as_str().unwrap());
    add("rekor_set", with_selector(1, &body));
    add("rekor_set", with_selector(3, &body));
    let rekor_key = base64_encode(&read("rekor.pub"));
    for (image, key, rekor) in [
        ("dir-img-cosign-valid", "cosign.pub", None),
        (
            "dir-img-cosign-key-rekor-valid",
            "cosign2.pub",
            Some(rekor_key),
        ),
    ] {
        let key = base64_encode(&read(key));
        let signature = read(&format!("{image}/signature-1"));
        let signature: serde_json::Value =
            serde_json::from_slice(signature.strip_prefix(b"\x00sigstore-json\n").unwrap())
                .unwrap();
        let payload = base64_decode(signature["payload"].as_str().unwrap());
        add("signature_payload", payload.clone());
        let annotations = &signature["annotations"];
        if let Some(bundle) = annotations["dev.sigstore.cosign/bundle"].as_str() {
            add("rekor_set", with_selector(0, bundle.as_bytes()));
        }
        let signed: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        let critical = &signed["critical"];
        let name = critical["identity"]["docker-reference"].as_str().unwrap();
        let digest = critical["image"]["docker-manifest-digest"]
            .as_str()
            .unwrap();
        let manifest = String::from_utf8(read(&format!("{image}/manifest.json"))).unwrap();
        let spec = json!({"scopes": [name], "policy": {"rootOfTrust": {"policyType": "PublicKey",
            "publicKey": {"keyData": key, "rekorKeyData": rekor}}, "signedIdentity": {"matchPolicy": "MatchRepository"}}});
        let policies = json!([
            {"kind": "ClusterImagePolicy", "name": image, "spec": spec},
            {"kind": "Attachment", "mediaType": signature["mimeType"], "annotations": annotations,
                "payload": String::from_utf8(payload).unwrap()},
            {"kind": "Reference", "reference": format!("{name}@{digest}")},
            {"kind": "Manifest", "manifest": manifest},
        ]);
        add("policy_render", policies.to_string().into());
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}
