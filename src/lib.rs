//! provider-images: turn a list of provider image references into a directory of extracted CAPI
//! provider manifests, on connected and disconnected OpenShift clusters alike.
//!
//! The folders are the pipeline; data flows left to right, never back:
//! images.json → cluster → plan (mirrors, keychain) → registry (over transport: TLS, proxy,
//! retries) → layers → profiles → publish, driven by `extract` (or `resolve`, which stops at the
//! plan). `run` is one command's run; `main.rs` only parses, logs, and exits.

pub mod cli;
pub mod cluster;
pub mod error;
mod extract;
pub mod fuzz;
mod images;
pub mod layers;
pub mod plan;
pub mod policy;
mod profiles;
mod publish;
pub mod reference;
pub mod registry;
mod resolve;
pub mod run;
mod setup;
mod time;
pub mod transport;
