//! provider-images: turn a list of provider image references into a directory of extracted CAPI
//! provider manifests, on connected and disconnected OpenShift clusters alike.
//!
//! Data flows left to right through the modules, never back:
//! images.json → cluster → plan (mirrors, trust, auth) → registry → layers → profiles → publish.

pub mod cli;
pub mod cluster;
pub mod error;
pub mod extract;
pub mod images;
pub mod layers;
pub mod plan;
pub mod profiles;
pub mod publish;
pub mod reference;
pub mod registry;
pub mod resolve;
pub mod run;
pub mod setup;
pub mod time;
pub mod transport;
