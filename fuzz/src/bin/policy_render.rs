//! afl.rs binary for the `policy_render` target (`provider_images::fuzz::policy_render`).

fn main() {
    afl::fuzz!(|data: &[u8]| provider_images::fuzz::policy_render(data));
}
