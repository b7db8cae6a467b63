//! Answers to `Range` requests (RFC 9110 §14): `Content-Range` values and `multipart/byteranges`
//! bodies. Each part is delimited by the length its `Content-Range` gives, never by searching for
//! the boundary, which the data may well contain.

use std::ops::Range;

use bytes::Bytes;
use thiserror::Error;

/// Why an answer to a `Range` request is not the ranges asked.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub(crate) enum ByteRangesError {
    #[error("Content-Range {0:?}")]
    BadContentRange(String),
    #[error("answered bytes {first}-{last}/{}, not asked", complete.map_or("*".into(), |c| c.to_string()))]
    NotAsked {
        first: u64,
        last: u64,
        complete: Option<u64>,
    },
    #[error("{got} bytes for a range of {length}")]
    WrongLength { got: usize, length: u64 },
    #[error("a range asked is missing")]
    Missing,
    #[error("no multipart boundary in the body")]
    NoBoundary,
    #[error("malformed multipart delimiter")]
    BadDelimiter,
    #[error("unterminated part headers")]
    UnterminatedHeaders,
    #[error("part headers are not text")]
    HeadersNotText,
    #[error("a part has no Content-Range")]
    NoContentRange,
    #[error("bad Content-Range {0:?}")]
    BadPartContentRange(String),
    #[error("{MISFRAMED}")]
    Misframed,
}

/// `first-last,first-last…` for the `Range` header (half-open ranges in, inclusive ranges out).
pub(super) fn spec(ranges: &[Range<u64>]) -> String {
    ranges
        .iter()
        .map(|r| format!("{}-{}", r.start, r.end.saturating_sub(1)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The data of each range asked, in the order asked, from a 206: one part framed by the
/// response's `Content-Range` header, or a `multipart/byteranges` body. Every part must be exactly one of
/// the ranges (of a blob of `size` bytes, when the part says) and every range must come.
pub(crate) fn answer(
    ranges: &[Range<u64>],
    size: u64,
    content_type: &str,
    range_header: &str,
    body: Bytes,
) -> Result<Vec<Bytes>, ByteRangesError> {
    let parts = match boundary(content_type) {
        Some(boundary) => parts(&body, &boundary)?,
        None => {
            let range = content_range(range_header)
                .ok_or_else(|| ByteRangesError::BadContentRange(range_header.to_string()))?;
            vec![(range, body)]
        }
    };
    let mut found: Vec<Option<Bytes>> = vec![None; ranges.len()];
    for (range, data) in parts {
        let asked = ranges
            .iter()
            .position(|r| r.start == range.first && r.end == range.last + 1)
            .filter(|_| range.complete.is_none_or(|complete| complete == size));
        let Some(index) = asked else {
            return Err(ByteRangesError::NotAsked {
                first: range.first,
                last: range.last,
                complete: range.complete,
            });
        };
        if data.len() as u64 != range.len() {
            return Err(ByteRangesError::WrongLength {
                got: data.len(),
                length: range.len(),
            });
        }
        found[index] = Some(data);
    }
    found
        .into_iter()
        .map(|part| part.ok_or(ByteRangesError::Missing))
        .collect()
}

/// `bytes first-last/complete` (`complete` is None for `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ContentRange {
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) complete: Option<u64>,
}

impl ContentRange {
    pub(crate) fn len(&self) -> u64 {
        self.last - self.first + 1
    }
}

pub(crate) fn content_range(text: &str) -> Option<ContentRange> {
    let rest = text.trim().strip_prefix("bytes ")?;
    let (span, complete) = rest.split_once('/')?;
    let (first, last) = span.trim().split_once('-')?;
    let number = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let (first, last) = (number(first)?, number(last)?);
    let complete = match complete.trim() {
        "*" => None,
        other => Some(number(other)?),
    };
    (first <= last && complete.is_none_or(|c| last < c)).then_some(ContentRange {
        first,
        last,
        complete,
    })
}

/// Why a 206 does not answer a resume.
#[derive(Debug, Error)]
pub(crate) enum ResumeRangeError {
    #[error("206 ({0:?}) to a request for the whole blob")]
    Unasked(String),
    #[error("Content-Range {value:?} does not answer a resume from byte {from} of {size}")]
    Wrong { value: String, from: u64, size: u64 },
}

/// A 206 must answer a resume (`Range: bytes=FROM-`, sent when `ranged`) with the Content-Range
/// `bytes FROM-LAST/TOTAL`, starting where the download stopped and running to the blob's end
/// (TOTAL may be `*`); the range it answers.
pub(crate) fn resume(
    value: &str,
    ranged: bool,
    from: u64,
    size: u64,
) -> Result<ContentRange, ResumeRangeError> {
    if !ranged {
        return Err(ResumeRangeError::Unasked(value.to_string()));
    }
    content_range(value)
        .filter(|range| {
            range.first == from
                && range.last.checked_add(1) == Some(size)
                && range.complete.is_none_or(|total| total == size)
        })
        .ok_or_else(|| ResumeRangeError::Wrong {
            value: value.to_string(),
            from,
            size,
        })
}

/// The boundary of a `multipart/byteranges` content type; None for any other type.
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    let mut fields = content_type.split(';');
    let media_type = fields.next()?.trim();
    if !media_type.eq_ignore_ascii_case("multipart/byteranges") {
        return None;
    }
    fields.find_map(|field| {
        let (name, value) = field.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// The parts of a `multipart/byteranges` body, in the order they come.
pub(crate) fn parts(
    body: &Bytes,
    boundary: &str,
) -> Result<Vec<(ContentRange, Bytes)>, ByteRangesError> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut at = find(body, delimiter, 0)
        .filter(|&start| start == 0 || body[..start].ends_with(b"\r\n"))
        .ok_or(ByteRangesError::NoBoundary)?
        + delimiter.len();
    let mut parts = Vec::new();
    loop {
        if body[at..].starts_with(b"--") {
            return Ok(parts);
        }
        // Transport padding (spaces, tabs) may follow a delimiter before its CRLF.
        while matches!(body.get(at), Some(b' ' | b'\t')) {
            at += 1;
        }
        if !body[at..].starts_with(b"\r\n") {
            return Err(ByteRangesError::BadDelimiter);
        }
        at += 2;
        let headers_end =
            find(body, b"\r\n\r\n", at).ok_or(ByteRangesError::UnterminatedHeaders)?;
        let headers = std::str::from_utf8(&body[at..headers_end])
            .map_err(|_| ByteRangesError::HeadersNotText)?;
        let range = headers
            .split("\r\n")
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-range"))
            .map(|(_, value)| value)
            .ok_or(ByteRangesError::NoContentRange)?;
        let range = content_range(range)
            .ok_or_else(|| ByteRangesError::BadPartContentRange(range.to_string()))?;
        let start = headers_end + 4;
        let end = usize::try_from(range.len())
            .ok()
            .and_then(|len| start.checked_add(len))
            .filter(|&end| end <= body.len())
            .ok_or(ByteRangesError::Misframed)?;
        parts.push((range, body.slice(start..end)));
        at = end;
        if !body[at..].starts_with(b"\r\n") || !body[at + 2..].starts_with(delimiter) {
            return Err(ByteRangesError::Misframed);
        }
        at += 2 + delimiter.len();
    }
}

const MISFRAMED: &str = "a part's length does not match its Content-Range";

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|position| from + position)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            content_range("bytes 0-99/1000"),
            Some(ContentRange {
                first: 0,
                last: 99,
                complete: Some(1000)
            })
        );
        assert_eq!(content_range("bytes 5-5/*").map(|r| r.len()), Some(1));
        for bad in [
            "bytes 9-5/10",
            "bytes 0-10/10",
            "bytes -5/10",
            "bytes 0-+5/10",
            "items 0-5/10",
            "bytes */10",
            "bytes 0-5",
        ] {
            assert_eq!(content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_resume_must_start_where_the_download_stopped_and_run_to_the_end() {
        assert!(resume("bytes 100-999/1000", true, 100, 1000).is_ok());
        assert!(resume("bytes 100-999/*", true, 100, 1000).is_ok());
        for wrong in [
            "bytes 0-999/1000",
            "bytes 100-998/1000",
            "bytes 100-999/1001",
            "bytes 100-/1000",
            "100-999/1000",
        ] {
            assert!(resume(wrong, true, 100, 1000).is_err(), "{wrong}");
        }
        assert!(
            resume("bytes 0-999/1000", false, 0, 1000).is_err(),
            "a 206 to a request without Range"
        );
    }

    #[test]
    fn boundaries() {
        assert_eq!(
            boundary("multipart/byteranges; boundary=3d6b6a416f9b5").as_deref(),
            Some("3d6b6a416f9b5")
        );
        assert_eq!(
            boundary("Multipart/Byteranges;charset=x; Boundary=\"a b\"").as_deref(),
            Some("a b")
        );
        assert_eq!(boundary("application/octet-stream"), None);
        assert_eq!(boundary("multipart/byteranges"), None);
        assert_eq!(boundary("multipart/mixed; boundary=x"), None);
    }

    #[test]
    fn answers_must_be_the_ranges_asked() {
        let asked = [10..12, 0..2];
        assert_eq!(spec(&asked), "10-11,0-1");
        let multipart = "multipart/byteranges; boundary=B";
        let two = body(&[("bytes 0-1/100", b"ab"), ("bytes 10-11/100", b"kl")]);
        assert_eq!(
            answer(&asked, 100, multipart, "", two.clone()).unwrap(),
            [Bytes::from_static(b"kl"), Bytes::from_static(b"ab")]
        );
        assert_eq!(
            answer(
                &[Range { start: 5, end: 8 }],
                100,
                "application/octet-stream",
                "bytes 5-7/*",
                "xyz".into()
            )
            .unwrap(),
            [Bytes::from_static(b"xyz")]
        );
        let bytes = Bytes::from_static;
        for (ranges, size, content_type, header, body, why) in [
            (
                &asked[..],
                100,
                multipart,
                "",
                body(&[("bytes 0-1/100", b"ab")]),
                "missing",
            ),
            // The parts are of a blob of another size.
            (&asked[..], 99, multipart, "", two.clone(), "not asked"),
            (
                &[Range { start: 0, end: 2 }][..],
                100,
                "x",
                "bytes 0-2/100",
                bytes(b"abc"),
                "not asked",
            ),
            (
                &[Range { start: 0, end: 2 }][..],
                100,
                "x",
                "bytes 0-1/99",
                bytes(b"ab"),
                "not asked",
            ),
            (
                &[Range { start: 0, end: 2 }][..],
                100,
                "x",
                "bytes 0-1/100",
                bytes(b"abc"),
                "3 bytes",
            ),
            (
                &[Range { start: 0, end: 2 }][..],
                100,
                "x",
                "",
                bytes(b"ab"),
                "Content-Range",
            ),
        ] {
            let error = answer(ranges, size, content_type, header, body)
                .unwrap_err()
                .to_string();
            assert!(error.contains(why), "{error}");
        }
    }

    fn body(parts: &[(&str, &[u8])]) -> Bytes {
        let mut body = Vec::new();
        for (i, (range, data)) in parts.iter().enumerate() {
            if i > 0 {
                body.extend(b"\r\n");
            }
            body.extend(b"--B\r\nContent-Type: application/octet-stream\r\n");
            body.extend(format!("Content-Range: {range}\r\n\r\n").as_bytes());
            body.extend(*data);
        }
        body.extend(b"\r\n--B--\r\n");
        Bytes::from(body)
    }

    #[test]
    fn parts_are_framed_by_their_content_range() {
        // The data holds the delimiter itself: only the lengths say where parts end.
        let tricky: &[u8] = b"x\r\n--B\r\ny";
        let parsed = parts(
            &body(&[("bytes 10-18/100", tricky), ("bytes 0-1/100", b"ab")]),
            "B",
        )
        .unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!((parsed[0].0.first, &parsed[0].1[..]), (10, tricky));
        assert_eq!((parsed[1].0.first, &parsed[1].1[..]), (0, &b"ab"[..]));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let cases: [(Bytes, &str); 6] = [
            (body(&[("bytes 0-3/10", b"ab")]), MISFRAMED),
            (body(&[("bytes 0-1/10", b"abcd")]), MISFRAMED),
            (body(&[("bytes 0-99/100", b"ab")]), MISFRAMED),
            (
                Bytes::from_static(b"no boundary here"),
                "no multipart boundary",
            ),
            (
                Bytes::from_static(b"--B\r\nContent-Type: x\r\n\r\nab\r\n--B--"),
                "no Content-Range",
            ),
            (
                Bytes::from_static(b"--B\r\nContent-Range: bytes 0-1/10\r\n"),
                "unterminated",
            ),
        ];
        for (body, expected) in cases {
            let error = parts(&body, "B").unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }
}
