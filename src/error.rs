//! How errors are shown: one line per error with its sources. Owns no error type of its own.

use std::error::Error as StdError;

/// Joins an error and its sources into one line, as `a: b: c` (hyper's own messages are terse).
pub fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
