//! provider-images: turn a list of provider image references into a directory of extracted CAPI
//! provider manifests, on connected and disconnected OpenShift clusters alike.
//!
//! Data flows left to right through the modules, never back:
//! images.json → cluster → plan (mirrors, trust, auth) → registry → layers → profiles → publish.

pub mod cli;
pub mod cluster;
pub mod error;
mod extract;
mod images;
pub mod layers;
pub mod plan;
mod profiles;
mod publish;
pub mod reference;
pub mod registry;
mod resolve;
pub mod run;
mod setup;
mod time;
pub mod transport;
