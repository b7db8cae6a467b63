//! afl.rs binary for the `pull_secret` target (`provider_images::fuzz::pull_secret`).

fn main() {
    afl::fuzz!(|data: &[u8]| provider_images::fuzz::pull_secret(data));
}
