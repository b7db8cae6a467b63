//! Shared integration-test harness: a test PKI, real registries (CNCF distribution) with Basic
//! or token auth, TLS or plain HTTP, optionally redirecting blobs to a store on another origin;
//! a token service, fake and hanging endpoints, a fault-injecting proxy, image and layer
//! builders, and a runner for the binary.
//! Everything is per test (temp dirs, fresh ports) and synchronous; processes die on Drop.
//! Use it from plain `#[test]`s: its clients and servers own tokio runtimes, which must not be
//! driven or dropped inside another runtime.

// The re-exports are the harness's API: a part no test uses today (a few fields and re-exports)
// is kept for the next test rather than reported.
#![allow(dead_code, unused_imports)]

mod access_log;
mod apiserver;
mod blob_store;
mod client;
mod extract;
mod fake;
mod faults;
mod hang;
mod image;
mod pki;
mod proxy;
mod push;
mod recorder;
mod registry;
mod registry_config;
mod run;
mod server;
mod sigstore;
mod tarball;
mod tls;
mod token;
mod urlenc;

pub use access_log::Access;
pub use apiserver::{API_TOKEN, ApiRequest, ApiServer, Fault};
pub use blob_store::BlobStore;
pub use client::{Client, HARNESS_USER_AGENT, HttpResponse};
pub use extract::{Extract, index_image, read_index, read_subtree_file, sha256_hex, snapshot};
pub use fake::{FakeRoutes, FakeServer};
pub use faults::{FaultProxy, FaultStats, HttpFault, ProxiedRequest};
pub use hang::HangingServer;
pub use image::*;
pub use pki::Pki;
pub use proxy::{PROXY_NAMES, ProxyOpts, ProxyRequest, ProxyServer};
pub use push::{BlobRef, PushedImage, PushedIndex};
pub use recorder::{Recorder, SeenRequest};
pub use registry::{Registry, RegistryAuth, RegistryOpts};
pub use run::{FAST_RETRIES, RETRY_ENV, Run, RunOutput, Running, provider_images_bin};
pub use server::{HttpsServer, Request, Response};
pub use sigstore::*;
pub use tarball::{MANIFESTS_DIR, TarBuilder, provider_layer};
pub use token::{TOKEN_ISSUER, TOKEN_SERVICE, TokenRequest, TokenServer};
