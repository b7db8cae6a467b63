//! afl.rs binary for the `reference` target (`provider_images::fuzz::reference`).

fn main() {
    afl::fuzz!(|data: &[u8]| provider_images::fuzz::reference(data));
}
