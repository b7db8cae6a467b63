//! Fetching byte ranges of one layer: close ranges coalesced, several per request where the
//! registry answers `multipart/byteranges`, one per request where it does not; every request and
//! byte counted.

use std::ops::Range;

use bytes::Bytes;

use super::Fallback;
use crate::error::error_chain;
use crate::plan::Source;
use crate::registry::{Descriptor, RegistryClient, RegistryError};

/// Ranges closer than this are fetched as one: a request costs more than 64 KiB of a fast link.
const GAP: u64 = 64 << 10;
/// Most ranges in one request; a longer `Range` header risks a 400 or 416 from the server.
const MAX_PER_REQUEST: usize = 16;

/// One layer's range requests.
pub(super) struct Fetcher<'a> {
    client: &'a RegistryClient,
    source: &'a Source,
    layer: &'a Descriptor,
    pub(super) requests: u64,
    pub(super) bytes: u64,
    /// Cleared when the registry refuses a request for several ranges.
    multipart: bool,
    /// Everything fetched so far: a later range inside one of these is not fetched again.
    have: Vec<(Range<u64>, Bytes)>,
}

/// The ranges fetched, each with its bytes.
pub(super) struct Fetched(Vec<(Range<u64>, Bytes)>);

impl Fetched {
    #[cfg(test)]
    pub(super) fn of(pieces: Vec<(Range<u64>, Bytes)>) -> Fetched {
        Fetched(pieces)
    }

    /// The bytes of `range`, from a fetched range that holds it.
    pub(super) fn get(&self, range: &Range<u64>) -> Option<Bytes> {
        let (fetched, bytes) = self
            .0
            .iter()
            .find(|(fetched, _)| fetched.start <= range.start && range.end <= fetched.end)?;
        let start = (range.start - fetched.start) as usize;
        let end = (range.end - fetched.start) as usize;
        Some(bytes.slice(start..end))
    }
}

impl<'a> Fetcher<'a> {
    pub(super) fn new(
        client: &'a RegistryClient,
        source: &'a Source,
        layer: &'a Descriptor,
    ) -> Fetcher<'a> {
        Fetcher {
            client,
            source,
            layer,
            requests: 0,
            bytes: 0,
            multipart: true,
            have: Vec::new(),
        }
    }

    /// One range, in one request.
    pub(super) async fn one(&mut self, range: Range<u64>) -> Result<Bytes, Fallback> {
        let mut parts = self.request(std::slice::from_ref(&range)).await?;
        let bytes = parts.pop().expect("one part per range");
        self.have.push((range, bytes.clone()));
        Ok(bytes)
    }

    /// Every range (in any order, overlapping or not), with as few requests as the registry allows.
    pub(super) async fn fetch(&mut self, mut ranges: Vec<Range<u64>>) -> Result<Fetched, Fallback> {
        ranges.retain(|range| {
            !self
                .have
                .iter()
                .any(|(have, _)| have.start <= range.start && range.end <= have.end)
        });
        let merged = coalesce(ranges, GAP);
        let mut fetched = std::mem::take(&mut self.have);
        let mut rest = &merged[..];
        while !rest.is_empty() {
            let count = if self.multipart {
                rest.len().min(MAX_PER_REQUEST)
            } else {
                1
            };
            let (batch, after) = rest.split_at(count);
            match self.request(batch).await {
                Ok(parts) => {
                    fetched.extend(batch.iter().cloned().zip(parts));
                    rest = after;
                }
                Err(RequestError::Refused(cause)) if count > 1 => {
                    tracing::debug!(layer = %self.layer.digest(), %cause, "several ranges refused in one request; asking one at a time");
                    self.multipart = false;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(Fetched(fetched))
    }

    async fn request(&mut self, ranges: &[Range<u64>]) -> Result<Vec<Bytes>, RequestError> {
        self.requests += 1;
        let parts = self
            .client
            .blob_ranges(self.source, self.layer, ranges)
            .await
            .map_err(|error| match error {
                RegistryError::RangeRefused { .. } => RequestError::Refused(error_chain(&error)),
                other => RequestError::Failed(error_chain(&other)),
            })?;
        self.bytes += parts.iter().map(|p| p.len() as u64).sum::<u64>();
        Ok(parts)
    }
}

enum RequestError {
    /// The registry does not serve these ranges (a 200, other ranges).
    Refused(String),
    Failed(String),
}

impl From<RequestError> for Fallback {
    fn from(error: RequestError) -> Fallback {
        match error {
            RequestError::Refused(cause) => Fallback::plain(cause),
            RequestError::Failed(cause) => {
                Fallback::plain(format!("range request failed: {cause}"))
            }
        }
    }
}

/// Sorted, with overlapping ranges and those at most `gap` apart merged.
pub(super) fn coalesce(mut ranges: Vec<Range<u64>>, gap: u64) -> Vec<Range<u64>> {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end.saturating_add(gap) => {
                last.end = last.end.max(range.end);
            }
            _ => merged.push(range),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_ranges_are_merged() {
        assert_eq!(
            coalesce(vec![30..40, 0..10, 12..20, 5..8, 100..110, 50..50], 1),
            [0..10, 12..20, 30..40, 100..110]
        );
        assert_eq!(
            coalesce(vec![30..40, 0..10, 12..20], 10),
            [Range { start: 0, end: 40 }]
        );
        assert_eq!(
            coalesce(vec![0..10, 10..20], 0),
            [Range { start: 0, end: 20 }]
        );
        assert!(coalesce(Vec::new(), 10).is_empty());
    }

    #[test]
    fn fetched_ranges_serve_the_ranges_inside_them() {
        let fetched = Fetched(vec![
            (10..20, Bytes::from_static(b"0123456789")),
            (30..33, Bytes::from_static(b"abc")),
        ]);
        assert_eq!(fetched.get(&(12..15)).as_deref(), Some(&b"234"[..]));
        assert_eq!(fetched.get(&(10..20)).as_deref(), Some(&b"0123456789"[..]));
        assert_eq!(fetched.get(&(31..33)).as_deref(), Some(&b"bc"[..]));
        for outside in [0..5, 18..22, 20..30, 25..31, 33..34] {
            assert_eq!(fetched.get(&outside), None, "{outside:?}");
        }
    }
}
