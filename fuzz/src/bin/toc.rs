//! afl.rs binary for the `toc` target (`provider_images::fuzz::toc`).

fn main() {
    afl::fuzz!(|data: &[u8]| provider_images::fuzz::toc(data));
}
