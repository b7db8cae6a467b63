//! Manifest and index bodies under each content type a registry may send.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provider_images::registry::parse_manifest;

const CONTENT_TYPES: [&str; 6] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/json",
    "",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let _ = parse_manifest(body, CONTENT_TYPES[selector as usize % CONTENT_TYPES.len()]);
});
