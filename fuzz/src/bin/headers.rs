//! afl.rs binary for the `headers` target (`provider_images::fuzz::headers`).

fn main() {
    afl::fuzz!(|data: &[u8]| provider_images::fuzz::headers(data));
}
