//! The persistent form of a contribution, for `--cache-dir`. Decoding trusts nothing it reads.

use std::sync::Arc;

use super::contribution::{Action, Contribution, Hidden, Recorded, Step};
use super::{MAX_ENTRIES, MAX_PATH_LEN};

/// The persistent form of a contribution (for `--cache-dir`): hidden paths, then steps, each
/// length-prefixed, little endian. The caller frames it (version, limits, checksum); [`decode`]
/// still checks every length and every path, and gives up on anything it would not have recorded.
impl Contribution {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        fn text(out: &mut Vec<u8>, text: &str) {
            out.extend_from_slice(&(text.len() as u32).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        let recorded = &self.recorded;
        out.extend_from_slice(&(recorded.hidden.len() as u32).to_le_bytes());
        for hidden in &recorded.hidden {
            let (tag, path) = match hidden {
                Hidden::Path(path) => (0u8, path),
                Hidden::Contents(path) => (1u8, path),
            };
            out.push(tag);
            text(out, path);
        }
        out.extend_from_slice(&(recorded.steps.len() as u32).to_le_bytes());
        for step in &recorded.steps {
            match &step.action {
                Action::Dir => {
                    out.push(0);
                    text(out, &step.path);
                }
                Action::File(content) => {
                    out.push(1);
                    text(out, &step.path);
                    out.extend_from_slice(&(content.len() as u64).to_le_bytes());
                    out.extend_from_slice(content);
                }
                Action::Hardlink { target } => {
                    out.push(2);
                    text(out, &step.path);
                    text(out, target);
                }
            }
        }
    }

    /// Reads what [`Contribution::encode`] wrote; None for anything else.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Contribution> {
        let mut input = Input(bytes);
        let mut recorded = Recorded::default();
        let hidden = input.u32()? as usize;
        for _ in 0..hidden {
            let tag = input.u8()?;
            let path = input.path()?;
            recorded.hidden.push(match tag {
                0 => Hidden::Path(path),
                1 => Hidden::Contents(path),
                _ => return None,
            });
            if recorded.hidden.len() > MAX_ENTRIES {
                return None;
            }
        }
        let steps = input.u32()? as usize;
        for _ in 0..steps {
            let tag = input.u8()?;
            let path = input.path()?;
            let action = match tag {
                0 => Action::Dir,
                1 => {
                    let len = usize::try_from(input.u64()?).ok()?;
                    Action::File(input.take(len)?.into())
                }
                2 => Action::Hardlink {
                    target: input.path()?,
                },
                _ => return None,
            };
            recorded.steps.push(Step { path, action });
            if recorded.hidden.len() + recorded.steps.len() > MAX_ENTRIES {
                return None;
            }
        }
        if !input.0.is_empty() {
            return None;
        }
        Some(Contribution {
            recorded: Arc::new(recorded),
        })
    }
}

/// A cursor over an encoded contribution.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.0.len() < len {
            return None;
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// A path as recorded: UTF-8, relative, no empty, `.` or `..` component ("" is the root).
    fn path(&mut self) -> Option<String> {
        let len = self.u32()? as usize;
        if len > MAX_PATH_LEN {
            return None;
        }
        let path = std::str::from_utf8(self.take(len)?).ok()?;
        let clean = path.is_empty()
            || path
                .split('/')
                .all(|part| !matches!(part, "" | "." | "..") && !part.contains('\0'));
        clean.then(|| path.to_string())
    }
}
