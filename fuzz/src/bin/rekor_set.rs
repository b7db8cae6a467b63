//! afl.rs binary for the `rekor_set` target (`provider_images::fuzz::rekor_set`).

fn main() {
    afl::fuzz!(|data: &[u8]| provider_images::fuzz::rekor_set(data));
}
