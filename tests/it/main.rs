//! The integration tests, one binary: a module per area, the shared harness in `common/`.
//! Each test starts what it needs (registries, a fake API server) on its own ports.

mod common;

mod cluster;
mod cluster_inputs;
mod containerfile;
mod deploy;
mod disconnected;
mod extract;
mod faults;
mod fuzz_corpus;
mod harness_selftest;
mod hostile;
mod node_rules;
mod partial;
mod policy_vectors;
mod proxy;
mod pull_secret;
mod readme;
mod registry_edges;
mod requests;
mod signatures;
mod trust;
