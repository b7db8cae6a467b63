//! Header values a registry controls: WWW-Authenticate challenges and Retry-After.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use provider_images::registry::auth::parse_challenge;
use provider_images::transport::retry::parse_retry_after;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_challenge(text);
    let _ = parse_retry_after(text, UNIX_EPOCH + Duration::from_secs(1_800_000_000));
});
