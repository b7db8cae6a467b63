//! afl.rs binary for the `cluster_dump` target (`provider_images::fuzz::cluster_dump`).

fn main() {
    afl::fuzz!(|data: &[u8]| provider_images::fuzz::cluster_dump(data));
}
