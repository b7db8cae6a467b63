#!/usr/bin/env bash
# The demo: the whole disconnected flow on one machine. A TLS mirror registry (CA made just now, htpasswd
# auth) holds two sample provider images; a cluster dump (as `oc get -o yaml` prints it) says that
# quay.io and registry.ci.openshift.org are mirrored there (ImageDigestMirrorSet with NeverContactSource,
# ImageContentSourcePolicy), carries the mirror's CA in trusted-ca-bundle and the pull secret; images.json
# names the *source* registries by digest, and the dump holds it as the operator's images ConfigMap.
# A ClusterImagePolicy requires quay.io/openshift images to be signed by a release key made just now;
# the aws image's signature (`sha256-<hex>.sig`) is mirrored beside it, and is checked before its layers.
# `resolve` reads the list from the dump and shows the plan, `extract` pulls from the mirror and
# publishes the tree; the demo fails unless every image was served by the mirror. Stops everything it
# started; re-runnable (KEEP_LAB=1 keeps the lab directory). Needs root for apt-get on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

open_lab demo demo demo-password
echo "== lab in $LAB"
echo "== mirror registry https://$REGISTRY (TLS from a CA made just now, htpasswd auth)"

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
push() {
    skopeo copy --quiet --dest-creds demo:demo-password --dest-cert-dir "$LAB/certs" --preserve-digests \
        "oci:$1:v1" "docker://$REGISTRY/$2:v1"
    echo "== mirrored $2 to $REGISTRY/$2"
}
push "$LAB/oci-aws" ocp4/capi-aws
push "$LAB/oci-gcp" ci/capi-gcp
# The release key signs the aws image as published (identity: its quay.io repository); the signature is
# mirrored with the image, into the mirror's repository.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$LAB/release.key" 2>/dev/null
openssl pkey -in "$LAB/release.key" -pubout -out "$LAB/release.pub"
sign_image "$REGISTRY" ocp4/capi-aws "$AWS_DIGEST" quay.io/openshift/capi-aws "$LAB/release.key" \
    demo:demo-password "$LAB/ca.crt"
echo "== signed quay.io/openshift/capi-aws; mirrored its signature to $REGISTRY/ocp4/capi-aws:sha256-${AWS_DIGEST#sha256:}.sig"

# The cluster, as `oc get <kind> -o yaml` dumps it (what an admin collects with must-gather).
CLUSTER=$LAB/cluster
mkdir -p "$CLUSTER"
cat >"$CLUSTER/imagedigestmirrorsets.yaml" <<YAML
apiVersion: v1
kind: List
items:
- apiVersion: config.openshift.io/v1
  kind: ImageDigestMirrorSet
  metadata:
    name: release-mirror
  spec:
    imageDigestMirrors:
    - source: quay.io/openshift
      mirrors:
      - $REGISTRY/ocp4
      mirrorSourcePolicy: NeverContactSource
YAML
cat >"$CLUSTER/imagecontentsourcepolicies.yaml" <<YAML
apiVersion: v1
kind: List
items:
- apiVersion: operator.openshift.io/v1alpha1
  kind: ImageContentSourcePolicy
  metadata:
    name: ci-mirror
  spec:
    repositoryDigestMirrors:
    - source: registry.ci.openshift.org/openshift
      mirrors:
      - $REGISTRY/ci
YAML
cluster_image_policy "$CLUSTER" release-signatures quay.io/openshift "$LAB/release.pub"
cat >"$CLUSTER/image.yaml" <<YAML
apiVersion: config.openshift.io/v1
kind: Image
metadata:
  name: cluster
spec:
  registrySources: {}
YAML
{
    printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: trusted-ca-bundle\n  namespace: openshift-config-managed\ndata:\n  ca-bundle.crt: |\n'
    sed 's/^/    /' "$LAB/ca.crt"
} >"$CLUSTER/trusted-ca-bundle.yaml"
AUTHS=$(printf '{"auths":{"%s":{"auth":"%s"},"quay.io":{"auth":"%s"}}}' "$REGISTRY" \
    "$(printf demo:demo-password | base64)" "$(printf unused:unused | base64)")
cat >"$CLUSTER/pull-secret.yaml" <<YAML
apiVersion: v1
kind: Secret
type: kubernetes.io/dockerconfigjson
metadata:
  name: pull-secret
  namespace: openshift-config
data:
  .dockerconfigjson: $(printf '%s' "$AUTHS" | base64 -w0)
YAML

cat >"$LAB/images.json" <<JSON
{
  "aws-cluster-api-controllers": "quay.io/openshift/capi-aws@$AWS_DIGEST",
  "gcp-cluster-api-controllers": "registry.ci.openshift.org/openshift/capi-gcp@$GCP_DIGEST"
}
JSON
echo "== images.json names the source registries:"
cat "$LAB/images.json"
# The operator's images ConfigMap, as the dump holds it: resolve reads the list from there.
{
    printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cluster-capi-operator-images\n  namespace: openshift-cluster-api-operator\ndata:\n  images.json: |\n'
    sed 's/^/    /' "$LAB/images.json"
} >"$CLUSTER/cluster-capi-operator-images.yaml"
for source in quay.io registry.ci.openshift.org; do
    if curl -s -o /dev/null -m 3 "https://$source/v2/"; then
        echo "   $source is reachable from here, but the mirror comes first"
    else
        echo "   $source is unreachable from here"
    fi
done

echo "== provider-images resolve --cluster-dir cluster/   (the image list from the dump's cluster-capi-operator-images)"
if ! "$BIN" resolve --cluster-dir "$CLUSTER" --log-format text 2>"$LAB/resolve.log"; then
    cat "$LAB/resolve.log" >&2
    exit 1
fi
echo "== provider-images extract --cluster-dir cluster/ --images-json images.json --output out/"
"$BIN" extract --cluster-dir "$CLUSTER" --images-json "$LAB/images.json" --output "$LAB/out" --log-format text
echo "== the published tree (the operator reads it through the links)"
(cd "$LAB/out" && find . -maxdepth 1 -mindepth 1 | sort | while read -r entry; do
    if [ -L "$entry" ]; then echo "$entry -> $(readlink "$entry")"; else echo "$entry"; fi
done && find -L . -path './..*' -prune -o -path './*/*' -print | sort)
echo "== index.json"
cat "$LAB/out/index.json"
served=$(grep -c "\"source\": \"$REGISTRY/" "$LAB/out/index.json" || true)
if [ "$served" != 2 ]; then
    echo "== FAILED: $served of 2 images were served by the mirror $REGISTRY" >&2
    exit 1
fi
release_key="public key sha256:$(openssl pkey -pubin -in "$LAB/release.pub" -outform DER | sha256sum | cut -c1-64)"
if ! grep -q "\"verifiedBy\": \"$release_key\"" "$LAB/out/index.json"; then
    echo "== FAILED: index.json does not record the aws image's signature as verified by the release key" >&2
    exit 1
fi
echo "== both images were pulled from the mirror $REGISTRY; the sources were never needed"
echo "== the aws image's signature was verified by the release key (ClusterImagePolicy release-signatures)"
