//! Image references as images.json and mirror rules write them: parse, and what parses must print
//! back to something that parses to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provider_images::reference::Reference;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(reference) = Reference::parse(text) {
        let again = Reference::parse(&reference.to_string())
            .unwrap_or_else(|e| panic!("{text:?} → {reference} does not parse again: {e}"));
        assert_eq!(again.to_string(), reference.to_string(), "{text:?}");
    }
});
