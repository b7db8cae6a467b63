//! afl.rs binary for the `layer` target (`provider_images::fuzz::layer`).

fn main() {
    afl::fuzz!(|data: &[u8]| provider_images::fuzz::layer(data));
}
