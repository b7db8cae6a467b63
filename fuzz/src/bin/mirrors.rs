//! afl.rs binary for the `mirrors` target (`provider_images::fuzz::mirrors`).

fn main() {
    afl::fuzz!(|data: &[u8]| provider_images::fuzz::mirrors(data));
}
