//! afl.rs binary for the `images` target (`provider_images::fuzz::images`).

fn main() {
    afl::fuzz!(|data: &[u8]| provider_images::fuzz::images(data));
}
