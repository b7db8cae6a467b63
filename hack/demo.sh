#!/usr/bin/env bash
# The demo: a local TLS registry with htpasswd auth, two sample provider images pushed to it, and
# `provider-images extract` run against it; prints the published tree and index.json, then stops
# everything it started. Re-runnable. Needs root for apt-get on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

ensure_packages
cargo build --release --quiet
BIN=$PWD/target/release/provider-images

LAB=$(mktemp -d /tmp/provider-images-demo.XXXXXX)
cleanup() {
    [ -n "${REGISTRY_PID:-}" ] && kill "$REGISTRY_PID" 2>/dev/null || true
    [ -n "${KEEP_LAB:-}" ] || rm -rf "$LAB"
}
trap cleanup EXIT

echo "== lab in $LAB"
make_pki "$LAB"
PORT=$(free_port)
REGISTRY=127.0.0.1:$PORT
start_registry "$LAB" "$PORT" demo demo-password
echo "== registry https://$REGISTRY (TLS from a CA made just now, htpasswd auth)"

# Sample provider images: a shared base layer, then each provider's manifests layer (gzip and zstd).
mkdir -p "$LAB/base/usr/bin" "$LAB/aws/capi-operator-manifests/default" "$LAB/gcp/capi-operator-manifests"/{default,techpreview}
head -c 1048576 /dev/urandom >"$LAB/base/usr/bin/manager"
cat >"$LAB/aws/capi-operator-manifests/default/metadata.yaml" <<'YAML'
name: aws
attributes:
  type: infrastructure
  version: v2.8.0
ocpPlatform: AWS
selfImageRef: registry.ci.openshift.org/openshift:aws-cluster-api-controllers
installOrder: 20
YAML
cat >"$LAB/aws/capi-operator-manifests/default/manifests.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: capa-controller-manager
  namespace: openshift-cluster-api
spec:
  template:
    spec:
      containers:
      - name: manager
        image: registry.ci.openshift.org/openshift:aws-cluster-api-controllers
YAML
for profile in default techpreview; do
    cat >"$LAB/gcp/capi-operator-manifests/$profile/metadata.yaml" <<YAML
name: gcp
attributes:
  type: infrastructure
  version: v1.7.0-$profile
ocpPlatform: GCP
installOrder: 20
YAML
    printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: capg-%s\n' "$profile" \
        >"$LAB/gcp/capi-operator-manifests/$profile/manifests.yaml"
done
layer_from_dir "$LAB/base" "$LAB/base.tar.gz"
layer_from_dir "$LAB/aws" "$LAB/aws.tar.gz"
layer_from_dir "$LAB/gcp" "$LAB/gcp.tar.zst"
AWS_DIGEST=$(oci_image "$LAB/oci-aws" v1 amd64 "$LAB/base.tar.gz" "$LAB/aws.tar.gz")
GCP_DIGEST=$(oci_image "$LAB/oci-gcp" v1 amd64 "$LAB/base.tar.gz" "$LAB/gcp.tar.zst")
# skopeo reads every *.crt of a directory as a CA (and *.key as client keys), so the CA gets its own.
mkdir -p "$LAB/skopeo-certs" && cp "$LAB/ca.crt" "$LAB/skopeo-certs/"
for name in aws gcp; do
    skopeo copy --quiet --dest-creds demo:demo-password --dest-cert-dir "$LAB/skopeo-certs" --preserve-digests \
        "oci:$LAB/oci-$name:v1" "docker://$REGISTRY/openshift/capi-$name:v1"
done
echo "== pushed $REGISTRY/openshift/capi-aws@$AWS_DIGEST"
echo "== pushed $REGISTRY/openshift/capi-gcp@$GCP_DIGEST"

cat >"$LAB/images.json" <<JSON
{
  "aws-cluster-api-controllers": "$REGISTRY/openshift/capi-aws@$AWS_DIGEST",
  "gcp-cluster-api-controllers": "$REGISTRY/openshift/capi-gcp:v1"
}
JSON
printf '{"auths":{"%s":{"auth":"%s"}}}' "$REGISTRY" "$(printf demo:demo-password | base64)" >"$LAB/pull-secret.json"

echo "== provider-images extract"
"$BIN" extract --no-cluster --images-json "$LAB/images.json" --output "$LAB/out" \
    --pull-secret "$LAB/pull-secret.json" --ca-file "$LAB/ca.crt" --log-format text
echo "== the published tree (the operator reads it through the links)"
(cd "$LAB/out" && find . -maxdepth 1 -mindepth 1 | sort | while read -r entry; do
    if [ -L "$entry" ]; then echo "$entry -> $(readlink "$entry")"; else echo "$entry"; fi
done && find -L . -path './..*' -prune -o -path './*/*' -print | sort)
echo "== index.json"
cat "$LAB/out/index.json"
