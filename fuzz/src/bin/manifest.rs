//! afl.rs binary for the `manifest` target (`provider_images::fuzz::manifest`).

fn main() {
    afl::fuzz!(|data: &[u8]| provider_images::fuzz::manifest(data));
}
