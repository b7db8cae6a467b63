//! The layer applier: a blob (the first byte picks no compression, gzip or zstd) through the tar walk,
//! then applied twice onto one subtree, under small limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provider_images::layers::{Compression, Limits, Subtree, contribution};

const LIMITS: Limits = Limits {
    max_file_size: 64 << 10,
    max_image_size: 256 << 10,
};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, blob)) = data.split_first() else {
        return;
    };
    let compression = [Compression::None, Compression::Gzip, Compression::Zstd][selector as usize % 3];
    let Ok(layer) = contribution(blob, compression, blob.len() as u64, &LIMITS) else {
        return;
    };
    let mut subtree = Subtree::new();
    if subtree.apply(&layer, &LIMITS).is_ok() {
        let _ = subtree.apply(&layer, &LIMITS);
    }
});
