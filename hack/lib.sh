# Shared by the hack/ scripts: installing what they need and running a local TLS registry.
# shellcheck shell=bash

# Debian packages the demo, the tests and the benchmarks use (curl and python3 are not on a fresh
# Debian: start_registry and free_port need them).
LAB_PACKAGES=(docker-registry skopeo openssl apache2-utils zstd pigz time curl python3 bc iproute2)

ensure_packages() {
    local missing=()
    for pkg in "${LAB_PACKAGES[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing: ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# make_pki DIR: a CA and a server certificate for 127.0.0.1/localhost signed by it.
make_pki() {
    local dir=$1
    mkdir -p "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=provider-images demo CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=127.0.0.1" -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$dir/ext.cnf"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 2 -extfile "$dir/ext.cnf" -out "$dir/server.crt" 2>/dev/null
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_registry DIR PORT USER PASS: a TLS registry with htpasswd auth; its pid in $REGISTRY_PID.
start_registry() {
    local dir=$1 port=$2 user=$3 pass=$4
    mkdir -p "$dir/storage"
    htpasswd -Bbn "$user" "$pass" >"$dir/htpasswd"
    cat >"$dir/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/storage
http:
  addr: 127.0.0.1:$port
  secret: demo-secret
  tls:
    certificate: $dir/server.crt
    key: $dir/server.key
auth:
  htpasswd:
    realm: demo
    path: $dir/htpasswd
YAML
    docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
    REGISTRY_PID=$!
    for _ in $(seq 1 100); do
        if curl -s -o /dev/null --cacert "$dir/ca.crt" "https://127.0.0.1:$port/v2/"; then return 0; fi
        sleep 0.1
    done
    echo "registry did not start:" >&2
    cat "$dir/registry.log" >&2
    return 1
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# oci_image LAYOUT TAG ARCH LAYER_FILE...: adds an image to an OCI layout from prepared layer blobs
# (file name suffix .tar.gz, .tar.zst or .tar decides the media type; FILE.difftar is the uncompressed tar).
oci_image() {
    local layout=$1 tag=$2 arch=$3
    shift 3
    mkdir -p "$layout/blobs/sha256"
    [ -f "$layout/oci-layout" ] || echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
    local layers="" diff_ids="" sep=""
    for layer in "$@"; do
        local media=application/vnd.oci.image.layer.v1.tar
        case "$layer" in
            *.tar.gz) media="$media+gzip" ;;
            *.tar.zst) media="$media+zstd" ;;
        esac
        local digest size diff
        digest=$(sha256_of "$layer")
        size=$(stat -c %s "$layer")
        diff=$(sha256_of "$layer.difftar")
        cp "$layer" "$layout/blobs/sha256/$digest"
        layers="$layers$sep{\"mediaType\":\"$media\",\"digest\":\"sha256:$digest\",\"size\":$size}"
        diff_ids="$diff_ids$sep\"sha256:$diff\""
        sep=","
    done
    local config="$layout/config.json"
    printf '{"architecture":"%s","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
        "$arch" "$diff_ids" >"$config"
    local config_digest config_size
    config_digest=$(sha256_of "$config")
    config_size=$(stat -c %s "$config")
    mv "$config" "$layout/blobs/sha256/$config_digest"
    local manifest="$layout/manifest.json"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
        "$config_digest" "$config_size" "$layers" >"$manifest"
    local manifest_digest manifest_size
    manifest_digest=$(sha256_of "$manifest")
    manifest_size=$(stat -c %s "$manifest")
    mv "$manifest" "$layout/blobs/sha256/$manifest_digest"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
        "$manifest_digest" "$manifest_size" "$tag" >"$layout/index.json"
    echo "sha256:$manifest_digest"
}

# push_blob REGISTRY REPO FILE CREDS CA: uploads FILE (POST for an upload URL, then one PUT of it all);
# prints its digest.
push_blob() {
    local digest location
    digest=sha256:$(sha256_of "$3")
    location=$(curl -sSf -o /dev/null -w '%header{location}' --cacert "$5" -u "$4" -X POST \
        "https://$1/v2/$2/blobs/uploads/")
    case "$location" in /*) location=https://$1$location ;; esac
    case "$location" in *\?*) location=$location\&digest=$digest ;; *) location=$location?digest=$digest ;; esac
    curl -sSf -o /dev/null --cacert "$5" -u "$4" -X PUT -H 'Content-Type: application/octet-stream' \
        --data-binary "@$3" "$location"
    echo "$digest"
}

# sign_image REGISTRY REPO DIGEST IDENTITY KEY CREDS CA: a sigstore signature as `cosign sign --key`
# makes it (simple-signing payload naming IDENTITY and DIGEST, ECDSA/SHA-256 by the PEM private KEY),
# pushed as the manifest REPO:sha256-<hex>.sig, where CRI-O looks for it.
sign_image() {
    local registry=$1 repo=$2 digest=$3 identity=$4 key=$5 creds=$6 ca=$7 tmp signature payload config
    tmp=$(mktemp -d)
    printf '{"critical":{"identity":{"docker-reference":"%s"},"image":{"docker-manifest-digest":"%s"},"type":"cosign container image signature"},"optional":null}' \
        "$identity" "$digest" >"$tmp/payload"
    signature=$(openssl dgst -sha256 -sign "$key" "$tmp/payload" | base64 -w0)
    printf '{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$(sha256_of "$tmp/payload")" >"$tmp/config"
    payload=$(push_blob "$registry" "$repo" "$tmp/payload" "$creds" "$ca")
    config=$(push_blob "$registry" "$repo" "$tmp/config" "$creds" "$ca")
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"%s","size":%s,"annotations":{"dev.cosignproject.cosign/signature":"%s"}}]}' \
        "$config" "$(stat -c %s "$tmp/config")" "$payload" "$(stat -c %s "$tmp/payload")" "$signature" >"$tmp/manifest"
    curl -sSf -o /dev/null --cacert "$ca" -u "$creds" -X PUT \
        -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "@$tmp/manifest" \
        "https://$registry/v2/$repo/manifests/sha256-${digest#sha256:}.sig"
    rm -rf "$tmp"
}

# cluster_image_policy DIR NAME SCOPE PUBLIC_KEY: a ClusterImagePolicy dump in DIR requiring a signature
# by PUBLIC_KEY (PEM) for SCOPE, identities matched by repository (cosign's default payload).
cluster_image_policy() {
    mkdir -p "$1"
    cat >"$1/clusterimagepolicy-$2.yaml" <<YAML
apiVersion: config.openshift.io/v1
kind: ClusterImagePolicy
metadata:
  name: $2
spec:
  scopes: ["$3"]
  policy:
    rootOfTrust:
      policyType: PublicKey
      publicKey:
        keyData: $(base64 -w0 "$4")
    signedIdentity:
      matchPolicy: MatchRepository
YAML
}

# layer_from_dir DIR OUT.tar.{gz,zst}: a layer of DIR's content, with OUT.difftar beside it.
layer_from_dir() {
    local dir=$1 out=$2
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$dir" -cf "$out.difftar" .
    case "$out" in
        *.tar.gz) gzip -n -c "$out.difftar" >"$out" ;;
        *.tar.zst) zstd -q -c "$out.difftar" >"$out" ;;
        *) cp "$out.difftar" "$out" ;;
    esac
}

# open_lab NAME USER PASS: installs what is missing, builds the release binary ($BIN), makes a lab dir
# ($LAB, removed on exit unless KEEP_LAB is set) with a CA and a TLS registry with htpasswd auth on a free
# port ($REGISTRY), stopped on exit. $LAB/certs holds only the CA (a cert dir for skopeo, which reads
# every *.crt there as a CA and every *.key as a client key).
open_lab() {
    ensure_packages
    cargo build --release --quiet
    BIN=$PWD/target/release/provider-images
    LAB=$(mktemp -d "/tmp/provider-images-$1.XXXXXX")
    trap close_lab EXIT
    make_pki "$LAB"
    local port
    port=$(free_port)
    REGISTRY=127.0.0.1:$port
    start_registry "$LAB" "$port" "$2" "$3"
    mkdir -p "$LAB/certs" && cp "$LAB/ca.crt" "$LAB/certs/"
}

# shape_link RATE PORT: what leaves port PORT on lo (the registry's replies) is sent at RATE at most
# (tc htb; everything else on lo goes through an unlimited class), until close_lab. Needs root.
shape_link() {
    tc qdisc add dev lo root handle 1: htb default 1
    tc class add dev lo parent 1: classid 1:1 htb rate 1000gbit quantum 65536
    tc class add dev lo parent 1: classid 1:2 htb rate "$1" burst 256k quantum 65536
    tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip sport "$2" 0xffff flowid 1:2
    SHAPED=1
}

close_lab() {
    [ -n "${SHAPED:-}" ] && tc qdisc del dev lo root 2>/dev/null || true
    [ -n "${REGISTRY_PID:-}" ] && kill "$REGISTRY_PID" 2>/dev/null || true
    [ -n "${KEEP_LAB:-}" ] || rm -rf "$LAB"
}
