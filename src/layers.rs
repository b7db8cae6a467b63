//! Layer decompression and each layer's contribution to the `capi-operator-manifests/` subtree.
