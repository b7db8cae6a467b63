//! The cluster's signature policy in the pull, end to end (issue 16 §4–§8, signature-policy §3):
//! cosign `.sig` manifests made and pushed at test time under the mirror's repository,
//! ClusterImagePolicy and ImagePolicy objects in a `--cluster-dir` dump, a real registry.

use crate::common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};

const METADATA: &str = "name: aws\nattributes:\n  type: infrastructure\n  version: v1.0.0\nocpPlatform: AWS\ninstallOrder: 20\n";
const MANIFESTS: &str = "kind: Deployment\nmetadata:\n  name: capa-controller-manager\n";
/// The source the images are named under; it resolves nowhere (loopback only), so only the
/// mirror serves them.
const SOURCE: &str = "quay.io/openshift";
const SCOPE: &str = "quay.io/openshift";
const REPO: &str = "ocp/capi-aws";
const CIP: &str = "release-signing";
/// `--namespace`'s default: the operator's namespace.
const NAMESPACE: &str = "openshift-cluster-api-operator";

fn provider_image() -> Image {
    Image::new(vec![Layer::gzip(&provider_layer(&[(
        "default", METADATA, MANIFESTS,
    )]))])
}

/// A mirror holding the provider image, a signing key, and a dump directory.
struct Fixture {
    mirror: Registry,
    image: PushedImage,
    key: SigningKey,
    dump: tempfile::TempDir,
}

impl Fixture {
    /// The paths of the `.sig` manifests the binary asked the mirror for.
    fn signature_paths_asked(&self) -> Vec<String> {
        signature_requests(&self.mirror)
            .into_iter()
            .map(|a| a.path)
            .collect()
    }

    /// Where the per-platform image's signature is looked up on the mirror.
    fn image_signature_path(&self) -> String {
        format!(
            "/v2/{REPO}/manifests/{}",
            signature_tag(&self.image.manifest_digest)
        )
    }

    fn new() -> Fixture {
        let mirror = Registry::start(RegistryOpts::default());
        let image = mirror.push_image(REPO, Some("v1"), &provider_image());
        Fixture {
            mirror,
            image,
            key: SigningKey::generate(),
            dump: tempfile::tempdir().unwrap(),
        }
    }

    /// The ref as images.json writes it: the source registry, by digest.
    fn reference(&self) -> String {
        format!("{SOURCE}/capi-aws@{}", self.image.manifest_digest)
    }

    /// A valid signature by the fixture's key on the mirror, for `digest`.
    fn sign_on_mirror(&self, digest: &str) {
        let layer = self
            .key
            .signature_layer(&format!("{SOURCE}/capi-aws:v1"), digest);
        self.mirror.push_signatures(REPO, digest, &[layer]);
    }

    /// The IDMS (source → mirror) and `policies`, as the dump.
    fn cluster(&self, policies: Vec<Value>) {
        let idms = json!({"apiVersion": "config.openshift.io/v1", "kind": "ImageDigestMirrorSet",
            "metadata": {"name": "release"},
            "spec": {"imageDigestMirrors": [{"source": SOURCE,
                "mirrors": [format!("{}/ocp", self.mirror.host())]}]}});
        write_list(&self.dump.path().join("idms.yaml"), vec![idms]);
        write_list(&self.dump.path().join("policies.yaml"), policies);
    }

    fn policy(&self) -> Value {
        cluster_image_policy(
            CIP,
            public_key_policy(&[SCOPE], &self.key, "MatchRepoDigestOrExact"),
        )
    }

    fn extract(&self) -> Extract {
        Extract::new()
            .cluster_dir(self.dump.path())
            .trust(&self.mirror)
    }

    fn run(&self, out: &Path) -> RunOutput {
        self.extract()
            .image("aws-cluster-api-controllers", &self.reference())
            .run(out)
    }
}

/// Writes objects as `oc get <kind> -o yaml` would: a `List`.
fn write_list(path: &Path, items: Vec<Value>) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items,
                      "metadata": {"resourceVersion": ""}});
    std::fs::write(path, serde_yaml_ng::to_string(&list).unwrap()).unwrap();
}

/// GETs of `.sig` manifests made by the binary.
fn signature_requests(registry: &Registry) -> Vec<Access> {
    registry
        .requests_by_us()
        .into_iter()
        .filter(|a| a.object("manifests").is_some_and(|o| o.ends_with(".sig")))
        .collect()
}

/// Exit 1 with `message` in the log, and nothing published.
fn assert_refused(run: &RunOutput, out: &Path, message: &str) {
    run.assert_code(1);
    assert!(
        run.stderr.contains(message),
        "{message:?} in {}",
        run.stderr
    );
    assert_nothing_published(out);
}

fn assert_nothing_published(out: &Path) {
    assert!(
        !out.join("index.json").exists(),
        "nothing may be published: {:?}",
        std::fs::read_dir(out).map(|d| d.count())
    );
}

/// Issue 16 §4, §7 and signature-policy §3 "Signature discovery": a valid signature on the
/// mirror's `sha256-<hex>.sig` tag is fetched before the config and any layer, and index.json
/// records the scope, the object, the key that verified and the policy fingerprint.
#[test]
fn a_valid_signature_on_the_mirror_is_checked_first_and_recorded() {
    let fx = Fixture::new();
    fx.sign_on_mirror(&fx.image.manifest_digest);
    fx.cluster(vec![fx.policy()]);
    let out = tempfile::tempdir().unwrap();
    let run = fx.run(out.path());
    run.assert_code(0);
    let index = read_index(out.path());
    let signature = &index_image(&index, &fx.reference())["signature"];
    assert_eq!(signature["scope"], SCOPE, "{index:#}");
    assert_eq!(
        signature["verified"],
        json!([{"object": format!("ClusterImagePolicy {CIP}"), "verifiedBy": fx.key.verified_by()}])
    );
    let fingerprint = signature["policyFingerprint"].as_str().unwrap();
    assert!(
        fingerprint.starts_with("sha256:") && fingerprint.len() == 71,
        "{fingerprint}"
    );
    let log = fx.mirror.requests_by_us();
    let position = |wanted: &dyn Fn(&Access) -> bool| log.iter().position(wanted);
    let sig =
        position(&|a| a.object("manifests") == Some(&signature_tag(&fx.image.manifest_digest)))
            .expect("the .sig tag was asked for");
    assert_eq!(
        log[sig].path,
        format!(
            "/v2/{REPO}/manifests/{}",
            signature_tag(&fx.image.manifest_digest)
        )
    );
    let mut image_blobs = vec![fx.image.config_digest.clone()];
    image_blobs.extend(fx.image.layer_digests.iter().cloned());
    let first_blob = position(&|a| {
        a.object("blobs")
            .is_some_and(|d| image_blobs.iter().any(|b| b == d))
    })
    .expect("the image's blobs were fetched");
    assert!(
        sig < first_blob,
        "the signature is checked before the config and layers: {log:#?}"
    );
}

/// Issue 16 §6 and signature-policy §3 step 9: no `.sig` tag ⇒ the node's "A signature was
/// required, but no signature exists", naming the image, the pull source, the object and the
/// scope; exit 1, nothing published, no config or layer fetched.
#[test]
fn no_signature_is_refused_and_nothing_is_published() {
    let fx = Fixture::new();
    fx.cluster(vec![fx.policy()]);
    let out = tempfile::tempdir().unwrap();
    let run = fx.run(out.path());
    let reference = fx.reference();
    let expected = format!(
        "image {reference} (from {}/ocp/capi-aws@{}): rejected by ClusterImagePolicy \
         {CIP} (scope {SCOPE}): A signature was required, but no signature exists",
        fx.mirror.host(),
        fx.image.manifest_digest
    );
    assert_refused(&run, out.path(), &expected);
    let blobs: Vec<_> = fx
        .mirror
        .requests_by_us()
        .into_iter()
        .filter(Access::is_blob)
        .collect();
    assert!(
        blobs.is_empty(),
        "no config or layer is fetched: {blobs:#?}"
    );
}

/// Issue 16 §4 / Tests and signature-policy §5 "mirror without `.sig` while source has it
/// (reject)": the mirror served the manifest, so the signature must come from it; the source
/// (reachable, AllowContactingSource, with a valid signature) is never asked for the image.
#[test]
fn a_signature_on_the_source_only_is_refused_and_the_source_is_not_asked() {
    let pki = Pki::new();
    let mirror = Registry::start(RegistryOpts::default().pki(&pki));
    let source = Registry::start(RegistryOpts::default().pki(&pki));
    let on_mirror = mirror.push_image(REPO, Some("v1"), &provider_image());
    let on_source = source.push_image(REPO, Some("v1"), &provider_image());
    assert_eq!(on_mirror.manifest_digest, on_source.manifest_digest);
    let digest = &on_source.manifest_digest;
    let key = SigningKey::generate();
    let source_repo = format!("{}/ocp", source.host());
    source.push_signatures(
        REPO,
        digest,
        &[key.signature_layer(&format!("{source_repo}/capi-aws:v1"), digest)],
    );
    let dump = tempfile::tempdir().unwrap();
    let idms = json!({"apiVersion": "config.openshift.io/v1", "kind": "ImageDigestMirrorSet",
        "metadata": {"name": "release"},
        "spec": {"imageDigestMirrors": [{"source": source_repo,
            "mirrors": [format!("{}/ocp", mirror.host())]}]}});
    write_list(&dump.path().join("idms.yaml"), vec![idms]);
    write_list(
        &dump.path().join("policies.yaml"),
        vec![cluster_image_policy(
            CIP,
            public_key_policy(&[&source_repo], &key, "MatchRepoDigestOrExact"),
        )],
    );
    let reference = format!("{source_repo}/capi-aws@{digest}");
    let out = tempfile::tempdir().unwrap();
    let run = Extract::new()
        .cluster_dir(dump.path())
        .trust(&mirror)
        .image("capi", &reference)
        .run(out.path());
    assert_refused(
        &run,
        out.path(),
        "A signature was required, but no signature exists",
    );
    assert_eq!(signature_requests(&mirror).len(), 1);
    let asked: Vec<_> = source
        .requests_by_us()
        .into_iter()
        .filter(|a| a.is_manifest() || a.is_blob())
        .collect();
    assert!(asked.is_empty(), "the source was asked: {asked:#?}");
}

/// Issue 16 §8: an image outside every scope makes no `.sig` request and records no signature;
/// the image inside the scope, in the same run, does.
#[test]
fn an_image_outside_every_scope_makes_no_signature_request() {
    let fx = Fixture::new();
    let other = fx.mirror.push_image(
        "ocp/other",
        Some("v1"),
        &provider_image().platform(Platform::parse("linux/s390x")),
    );
    fx.sign_on_mirror(&fx.image.manifest_digest);
    fx.cluster(vec![cluster_image_policy(
        CIP,
        public_key_policy(
            &[&format!("{SCOPE}/capi-aws")],
            &fx.key,
            "MatchRepoDigestOrExact",
        ),
    )]);
    let outside = format!("{SOURCE}/other@{}", other.manifest_digest);
    let out = tempfile::tempdir().unwrap();
    let run = fx
        .extract()
        .image("aws-cluster-api-controllers", &fx.reference())
        .image("other", &outside)
        .run(out.path());
    run.assert_code(0);
    let index = read_index(out.path());
    assert!(index_image(&index, &outside).get("signature").is_none());
    assert_eq!(
        index_image(&index, &fx.reference())["signature"]["scope"],
        format!("{SCOPE}/capi-aws")
    );
    assert_eq!(fx.signature_paths_asked(), [fx.image_signature_path()]);
}

/// Signature-policy §3 "Entry point" and §5 "per-platform instance digest; index signatures
/// irrelevant": a signature over the index's digest only does not count.
#[test]
fn a_signature_over_the_index_only_is_refused() {
    let fx = Fixture::new();
    let index = fx.mirror.push_index(
        REPO,
        Some("multi"),
        &[fx.image.index_entry()],
        ManifestFormat::Oci,
    );
    fx.sign_on_mirror(&index.digest);
    fx.cluster(vec![fx.policy()]);
    let reference = format!("{SOURCE}/capi-aws@{}", index.digest);
    let out = tempfile::tempdir().unwrap();
    let run = fx.extract().image("capi", &reference).run(out.path());
    assert_refused(
        &run,
        out.path(),
        "A signature was required, but no signature exists",
    );
    assert_eq!(
        fx.signature_paths_asked(),
        [fx.image_signature_path()],
        "the per-platform manifest's tag, not the index's"
    );
}

/// Signature-policy §5 "wrong key": a signature by another key is not accepted.
#[test]
fn a_signature_by_another_key_is_refused() {
    let fx = Fixture::new();
    let other_key = SigningKey::generate();
    let digest = &fx.image.manifest_digest;
    fx.mirror.push_signatures(
        REPO,
        digest,
        &[other_key.signature_layer(&format!("{SOURCE}/capi-aws:v1"), digest)],
    );
    fx.cluster(vec![fx.policy()]);
    let out = tempfile::tempdir().unwrap();
    let run = fx.run(out.path());
    assert_refused(
        &run,
        out.path(),
        &format!(
            "rejected by ClusterImagePolicy {CIP} (scope {SCOPE}): cryptographic signature verification failed"
        ),
    );
}

/// Issue 16 §1 and signature-policy §2.4, §5 "IP in namespace A not applied in namespace B":
/// an ImagePolicy of another namespace (no signature exists for it) is not applied; the one in
/// the operator's namespace is.
#[test]
fn an_image_policy_of_another_namespace_is_not_applied() {
    let fx = Fixture::new();
    fx.sign_on_mirror(&fx.image.manifest_digest);
    let stranger = SigningKey::generate();
    fx.cluster(vec![
        image_policy(
            "elsewhere",
            "theirs",
            public_key_policy(&[SCOPE], &stranger, "MatchRepoDigestOrExact"),
        ),
        image_policy(
            NAMESPACE,
            "ours",
            public_key_policy(&[SCOPE], &fx.key, "MatchRepoDigestOrExact"),
        ),
    ]);
    let out = tempfile::tempdir().unwrap();
    let run = fx.run(out.path());
    run.assert_code(0);
    let index = read_index(out.path());
    assert_eq!(
        index_image(&index, &fx.reference())["signature"]["verified"],
        json!([{"object": format!("ImagePolicy {NAMESPACE}/ours"), "verifiedBy": fx.key.verified_by()}])
    );
}

/// Issue 16 §7: a tree published with no policy is verified once a policy applies (fingerprint
/// missing); the next run with the same policy is warm (no `.sig` request); a changed policy
/// re-verifies and records its new fingerprint.
#[test]
fn the_warm_check_follows_the_policy_fingerprint() {
    let fx = Fixture::new();
    fx.sign_on_mirror(&fx.image.manifest_digest);
    let out = tempfile::tempdir().unwrap();
    let fingerprint = || {
        read_index(out.path())["images"][0]["signature"]["policyFingerprint"]
            .as_str()
            .map(str::to_string)
    };
    let warm = |run: &RunOutput| run.stderr.contains("warm run");

    fx.cluster(vec![]);
    let run = fx.run(out.path());
    run.assert_code(0);
    assert_eq!(fingerprint(), None);
    assert!(signature_requests(&fx.mirror).is_empty());

    fx.cluster(vec![fx.policy()]);
    let run = fx.run(out.path());
    run.assert_code(0);
    assert!(!warm(&run), "a policy now applies: {}", run.stderr);
    assert_eq!(signature_requests(&fx.mirror).len(), 1);
    let first = fingerprint().expect("recorded");

    let run = fx.run(out.path());
    run.assert_code(0);
    assert!(warm(&run), "same policy: warm: {}", run.stderr);
    assert_eq!(signature_requests(&fx.mirror).len(), 1);

    let changed =
        cluster_image_policy(CIP, public_key_policy(&[SCOPE], &fx.key, "MatchRepository"));
    fx.cluster(vec![changed]);
    let run = fx.run(out.path());
    run.assert_code(0);
    assert!(!warm(&run), "changed policy: {}", run.stderr);
    assert_eq!(signature_requests(&fx.mirror).len(), 2);
    assert_ne!(fingerprint().unwrap(), first);
}

const EMAIL: &str = "signer@example.com";
const OIDC_ISSUER: &str = "https://issuer.example.com";
/// 2024-01-01T00:05:00Z: inside the Fulcio leaf's ten minutes, long before now.
const INTEGRATED_TIME: i64 = 1_704_067_500;

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn spec(root_of_trust: Value) -> Value {
    json!({"scopes": [SCOPE], "policy": {"rootOfTrust": root_of_trust,
                                          "signedIdentity": {"matchPolicy": "MatchRepoDigestOrExact"}}})
}

/// Issue 16 §5 and signature-policy §3 step 2, §5 "Rekor key configured but no bundle": with
/// `rekorKeyData`, a signature without a SET is refused; with a SET signed by a test Rekor key
/// over the canonical Payload that names this signature and key, it is accepted.
#[test]
fn public_key_with_rekor_needs_the_set() {
    let fx = Fixture::new();
    let rekor = SigningKey::generate();
    let digest = &fx.image.manifest_digest;
    let layer = fx
        .key
        .signature_layer(&format!("{SOURCE}/capi-aws:v1"), digest);
    fx.mirror
        .push_signatures(REPO, digest, std::slice::from_ref(&layer));
    fx.cluster(vec![cluster_image_policy(
        CIP,
        public_key_rekor_policy(&[SCOPE], &fx.key, &rekor),
    )]);
    let out = tempfile::tempdir().unwrap();
    let run = fx.run(out.path());
    assert_refused(
        &run,
        out.path(),
        "missing dev.sigstore.cosign/bundle annotation",
    );

    let bundle = rekor.rekor_bundle(&layer, &fx.key.public_pem(), INTEGRATED_TIME);
    fx.mirror
        .push_signatures(REPO, digest, &[layer.with(BUNDLE_ANNOTATION, bundle)]);
    let run = fx.run(out.path());
    run.assert_code(0);
    let index = read_index(out.path());
    assert_eq!(
        index_image(&index, &fx.reference())["signature"]["verified"][0]["verifiedBy"],
        fx.key.verified_by()
    );
}

/// Issue 16 §5 and signature-policy §3 step 3, §5 "Fulcio cert expired-now-valid-at-SET
/// (accept)": a test Fulcio CA's leaf (EKU codeSigning, email SAN, OIDC issuer extension
/// 1.3.6.1.4.1.57264.1.1) expired years ago but valid at the Rekor entry's integratedTime.
#[test]
fn fulcio_leaf_expired_now_but_valid_at_the_rekor_time_is_accepted() {
    let fx = Fixture::new();
    let rekor = SigningKey::generate();
    let ca = CodeSigningCa::new(false, EMAIL, OIDC_ISSUER);
    let leaf = ca.leaf("fulcio-leaf", "20240101000000Z", "20240101001000Z");
    let digest = &fx.image.manifest_digest;
    let layer = leaf.signature_layer(&format!("{SOURCE}/capi-aws:v1"), digest);
    let bundle = rekor.rekor_bundle(&layer, &leaf.cert_pem, INTEGRATED_TIME);
    fx.mirror
        .push_signatures(REPO, digest, &[layer.with(BUNDLE_ANNOTATION, bundle)]);
    fx.cluster(vec![cluster_image_policy(
        CIP,
        spec(
            json!({"policyType": "FulcioCAWithRekor", "fulcioCAWithRekor": {
            "fulcioCAData": b64(&ca.root_pem()), "rekorKeyData": b64(&rekor.public_pem()),
            "fulcioSubject": {"oidcIssuer": OIDC_ISSUER, "signedEmail": EMAIL}}}),
        ),
    )]);
    let out = tempfile::tempdir().unwrap();
    let run = fx.run(out.path());
    run.assert_code(0);
    let index = read_index(out.path());
    let verified_by =
        index_image(&index, &fx.reference())["signature"]["verified"][0]["verifiedBy"]
            .as_str()
            .unwrap()
            .to_string();
    assert!(
        verified_by.starts_with("certificate issuer CN=root, subject CN=fulcio-leaf")
            && verified_by.ends_with(EMAIL),
        "{verified_by}"
    );
}

/// Issue 16 §5 and signature-policy §3 step 4, §5 "PKI expired (reject)": a leaf under a PKI
/// root and intermediate is accepted at the current time; an expired one is refused.
#[test]
fn pki_chain_is_checked_at_the_current_time() {
    let fx = Fixture::new();
    let ca = CodeSigningCa::new(true, EMAIL, OIDC_ISSUER);
    fx.cluster(vec![cluster_image_policy(
        CIP,
        spec(json!({"policyType": "PKI", "pki": {
            "caRootsData": b64(&ca.root_pem()),
            "caIntermediatesData": b64(&ca.intermediate_pem()),
            "pkiCertificateSubject": {"email": EMAIL}}})),
    )]);
    let digest = &fx.image.manifest_digest;
    let identity = format!("{SOURCE}/capi-aws:v1");

    let expired = ca.leaf("expired-leaf", "20240101000000Z", "20240102000000Z");
    fx.mirror
        .push_signatures(REPO, digest, &[expired.signature_layer(&identity, digest)]);
    let out = tempfile::tempdir().unwrap();
    let run = fx.run(out.path());
    assert_refused(&run, out.path(), "certificate is not trusted");

    let current = ca.leaf("current-leaf", "20240101000000Z", "20390101000000Z");
    fx.mirror
        .push_signatures(REPO, digest, &[current.signature_layer(&identity, digest)]);
    let run = fx.run(out.path());
    run.assert_code(0);
    let index = read_index(out.path());
    let verified_by =
        &index_image(&index, &fx.reference())["signature"]["verified"][0]["verifiedBy"];
    assert!(
        verified_by
            .as_str()
            .unwrap()
            .starts_with("certificate issuer CN=intermediate, subject CN=current-leaf"),
        "{verified_by}"
    );
}

/// Issue 16 §4: with `--cache-dir`, a manifest taken from the cache still needs the pull source
/// to answer for its signature: none there ⇒ refused, the `.sig` tag asked of the mirror.
#[test]
fn a_cached_manifest_still_needs_the_sources_signature() {
    let fx = Fixture::new();
    let cache = tempfile::tempdir().unwrap();
    let run_into = |out: &Path| {
        fx.extract()
            .arg("--cache-dir")
            .arg(cache.path())
            .image("aws-cluster-api-controllers", &fx.reference())
            .run(out)
    };
    let manifest_gets = || {
        fx.mirror
            .requests_by_us()
            .into_iter()
            .filter(|a| a.object("manifests") == Some(fx.image.manifest_digest.as_str()))
            .count()
    };
    fx.cluster(vec![]);
    let first = tempfile::tempdir().unwrap();
    run_into(first.path()).assert_code(0);
    let fetched = manifest_gets();

    fx.cluster(vec![fx.policy()]);
    let out = tempfile::tempdir().unwrap();
    let run = run_into(out.path());
    assert_refused(
        &run,
        out.path(),
        "A signature was required, but no signature exists",
    );
    assert_eq!(manifest_gets(), fetched, "the manifest came from the cache");
    assert_eq!(signature_requests(&fx.mirror).len(), 1);
}
