//! afl.rs binary for the `signature_payload` target (`provider_images::fuzz::signature_payload`).

fn main() {
    afl::fuzz!(|data: &[u8]| provider_images::fuzz::signature_payload(data));
}
