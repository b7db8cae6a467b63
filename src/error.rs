//! How errors end the process: shown on one line with their sources, and the exit code each
//! top-level error gives (README's table). Owns no error type of its own.

use std::error::Error as StdError;

/// The exit code of an error that ends the run; each top-level error type decides its own.
pub trait ExitStatus {
    fn exit_code(&self) -> u8;
}

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
