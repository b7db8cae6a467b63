//! afl.rs binary for the `byteranges` target (`provider_images::fuzz::byteranges`).

fn main() {
    afl::fuzz!(|data: &[u8]| provider_images::fuzz::byteranges(data));
}
