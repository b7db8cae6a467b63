//! Just enough DER to read a certificate's validity and extended key usage: tag-length-value
//! walking, X.509 times and OID arcs.
//!
//! rustls-webpki parses these fields but keeps them private, and no X.509 parser is in the
//! dependency tree; the walk is small, and it only reads certificates WebPKI has already parsed.

use std::time::Duration;

use rustls_pki_types::UnixTime;
use thiserror::Error;

pub(super) const SEQUENCE: u8 = 0x30;
pub(super) const OCTET_STRING: u8 = 0x04;
pub(super) const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed DER")]
pub(super) struct BadDer;

/// Reads consecutive tag-length-value items from a byte slice.
pub(super) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    pub(super) fn at_end(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next item's tag, without consuming it.
    pub(super) fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next item, whatever its tag: (tag, contents).
    pub(super) fn any(&mut self) -> Result<(u8, &'a [u8]), BadDer> {
        let (&tag, rest) = self.rest.split_first().ok_or(BadDer)?;
        // Certificates use only single-byte tags; the multi-byte form is not DER we expect.
        if tag & 0x1f == 0x1f {
            return Err(BadDer);
        }
        let (&first, mut rest) = rest.split_first().ok_or(BadDer)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            // Long form: the low bits count the length bytes (at most 4 here: 4 GiB is plenty).
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return Err(BadDer);
            }
            let (bytes, after) = rest.split_at(count);
            rest = after;
            bytes
                .iter()
                .fold(0usize, |len, &b| (len << 8) | usize::from(b))
        };
        if rest.len() < len {
            return Err(BadDer);
        }
        let (contents, after) = rest.split_at(len);
        self.rest = after;
        Ok((tag, contents))
    }

    /// The next item, which must carry `tag`: its contents.
    pub(super) fn expect(&mut self, tag: u8) -> Result<&'a [u8], BadDer> {
        match self.any()? {
            (found, contents) if found == tag => Ok(contents),
            _ => Err(BadDer),
        }
    }

    /// The next item if it carries `tag`, else nothing consumed.
    pub(super) fn optional(&mut self, tag: u8) -> Result<Option<&'a [u8]>, BadDer> {
        if self.peek_tag() == Some(tag) {
            self.expect(tag).map(Some)
        } else {
            Ok(None)
        }
    }

    /// An X.509 `Time`: UTCTime or GeneralizedTime in the forms RFC 5280 §4.1.2.5 requires.
    /// Times before 1970 come out as the epoch: for a notBefore or notAfter that is just as good.
    pub(super) fn time(&mut self) -> Result<UnixTime, BadDer> {
        let (tag, contents) = self.any()?;
        let (year, rest) = match (tag, contents.len()) {
            // YYMMDDHHMMSSZ; years 50–99 are 19xx (RFC 5280 §4.1.2.5.1).
            (UTC_TIME, 13) => {
                let yy = digits(&contents[..2])?;
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &contents[2..])
            }
            // YYYYMMDDHHMMSSZ
            (GENERALIZED_TIME, 15) => (digits(&contents[..4])?, &contents[4..]),
            _ => return Err(BadDer),
        };
        if rest[10] != b'Z' {
            return Err(BadDer);
        }
        let month = digits(&rest[0..2])?;
        let day = digits(&rest[2..4])?;
        let hour = digits(&rest[4..6])?;
        let minute = digits(&rest[6..8])?;
        let second = digits(&rest[8..10])?;
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return Err(BadDer);
        }
        let days = days_since_epoch(year, month, day);
        let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
        Ok(UnixTime::since_unix_epoch(Duration::from_secs(
            u64::try_from(seconds).unwrap_or(0),
        )))
    }
}

/// A run of ASCII decimal digits as a number.
fn digits(bytes: &[u8]) -> Result<i64, BadDer> {
    bytes.iter().try_fold(0i64, |n, &b| {
        if b.is_ascii_digit() {
            Ok(n * 10 + i64::from(b - b'0'))
        } else {
            Err(BadDer)
        }
    })
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given date (proleptic Gregorian; negative before 1970).
fn days_since_epoch(year: i64, month: i64, day: i64) -> i64 {
    // Leap years in [1, y]: every 4th, but not every 100th, except every 400th.
    let leaps_through = |y: i64| y / 4 - y / 100 + y / 400;
    let year_days = 365 * (year - 1970) + leaps_through(year - 1) - leaps_through(1969);
    let month_days: i64 = (1..month).map(|m| days_in_month(year, m)).sum();
    year_days + month_days + day - 1
}

/// An OID's contents as its arcs (1.3.6.1… form).
pub(super) fn oid_arcs(contents: &[u8]) -> Result<Vec<usize>, BadDer> {
    let mut arcs = Vec::new();
    let mut value: usize = 0;
    let mut in_arc = false;
    for &byte in contents {
        // A leading 0x80 would be a non-minimal encoding.
        if !in_arc && byte == 0x80 {
            return Err(BadDer);
        }
        value = value
            .checked_mul(128)
            .and_then(|v| v.checked_add(usize::from(byte & 0x7f)))
            .ok_or(BadDer)?;
        in_arc = byte & 0x80 != 0;
        if !in_arc {
            if arcs.is_empty() {
                // The first subidentifier packs two arcs: 40 * first + second.
                let first = (value / 40).min(2);
                arcs.extend([first, value - 40 * first]);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    if in_arc || arcs.is_empty() {
        return Err(BadDer);
    }
    Ok(arcs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(tag: u8, text: &str) -> Result<u64, BadDer> {
        let mut der = vec![tag, text.len() as u8];
        der.extend_from_slice(text.as_bytes());
        Reader::new(&der).time().map(|t| t.as_secs())
    }

    #[test]
    fn utc_and_generalized_times_are_read_as_unix_seconds() {
        // Values checked with `date -u -d … +%s`.
        assert_eq!(time(UTC_TIME, "200101000000Z"), Ok(1_577_836_800));
        assert_eq!(time(UTC_TIME, "491231235959Z"), Ok(2_524_607_999));
        assert_eq!(time(UTC_TIME, "000229120000Z"), Ok(951_825_600));
        assert_eq!(time(GENERALIZED_TIME, "20500101000000Z"), Ok(2_524_608_000));
        assert_eq!(time(GENERALIZED_TIME, "21000301000000Z"), Ok(4_107_542_400));
        // 1950–1969 precede the epoch: clamped to it.
        assert_eq!(time(UTC_TIME, "500101000000Z"), Ok(0));
    }

    #[test]
    fn malformed_times_are_refused() {
        for (tag, text) in [
            (UTC_TIME, "200101000000"),
            (UTC_TIME, "200101000000+"),
            (UTC_TIME, "201301000000Z"),
            (UTC_TIME, "210229000000Z"),
            (UTC_TIME, "200101240000Z"),
            (UTC_TIME, "2001010000a0Z"),
            (GENERALIZED_TIME, "200101000000Z"),
            (OCTET_STRING, "200101000000Z"),
        ] {
            assert_eq!(time(tag, text), Err(BadDer), "{text}");
        }
    }

    #[test]
    fn long_form_lengths_and_truncation() {
        let mut der = vec![OCTET_STRING, 0x81, 0x80];
        der.extend([7u8; 0x80]);
        let mut reader = Reader::new(&der);
        assert_eq!(reader.expect(OCTET_STRING).unwrap().len(), 0x80);
        assert!(reader.at_end());
        assert_eq!(Reader::new(&der[..100]).any(), Err(BadDer));
        assert_eq!(Reader::new(&[OID, 0x80]).any(), Err(BadDer));
    }

    #[test]
    fn oids_are_read_as_arcs() {
        let server_auth = [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
        assert_eq!(oid_arcs(&server_auth), Ok(vec![1, 3, 6, 1, 5, 5, 7, 3, 1]));
        // 2.5.29.37.0 (anyExtendedKeyUsage) and a multi-byte arc: 1.2.840.113549.
        assert_eq!(
            oid_arcs(&[0x55, 0x1d, 0x25, 0x00]),
            Ok(vec![2, 5, 29, 37, 0])
        );
        assert_eq!(
            oid_arcs(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            Ok(vec![1, 2, 840, 113_549])
        );
        assert_eq!(oid_arcs(&[0x2b, 0x86]), Err(BadDer));
        assert_eq!(oid_arcs(&[0x2b, 0x80, 0x01]), Err(BadDer));
    }
}
