//! afl.rs binary for the `pem` target (`provider_images::fuzz::pem`).

fn main() {
    afl::fuzz!(|data: &[u8]| provider_images::fuzz::pem(data));
}
