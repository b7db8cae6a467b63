//! When a registry request is tried again, and after how long.
//!
//! A disconnected cluster's mirror is one box under install-time load, often behind proxies that
//! reset connections, so transient failures are retried with exponential backoff and jitter, within
//! a bounded number of tries and the run's `--timeout`. What is deterministic is not retried.
//!
//! | failure | outcome |
//! |---|---|
//! | connection refused, reset or aborted, early EOF, DNS failure, connect or header timeout | retried |
//! | TLS failure (untrusted certificate, handshake, protocol) | not retried |
//! | `408`, `429`, `5xx` | retried; a `Retry-After` (seconds or HTTP-date) is waited instead of the backoff, capped |
//! | `401` | the token is dropped and the challenge answered again, once per request (an expired or revoked token) |
//! | any other `4xx`, a refused redirect, an oversized document | not retried |
//! | token request failing as above (network, `408`/`429`/`5xx`) | retried as the request it serves |
//! | egress proxy unreachable, or answering `CONNECT` with `408`/`429`/`5xx` | retried; `407` is not |
//! | body cut or stalled midway | a blob resumes with `Range: bytes=N-` (`registry`); a document is fetched again |
//! | bytes that do not match their digest or size, a wrong `Content-Length` | fetched again from the start |
//! | a host that stayed unreachable through a whole round of tries | later requests of the run try it once |
//!
//! Each request, each chain of resumes of one blob and the restarts of one blob get at most
//! [`RetryPolicy::tries`] tries; a resume that brought new bytes resets its chain's count. The wait
//! before try `n + 1` is drawn from `[b/2, b]` with `b = min(max, base × 2^(n-1))` ("equal jitter"),
//! so concurrent pulls do not retry in lockstep. A wait that would end past the run's deadline is not
//! taken: the request fails at once, saying so.
//!
//! Tests set the timings with the hidden variable `PROVIDER_IMAGES_RETRY`, e.g.
//! `tries=3,base=5ms,max=20ms,retry-after-max=1s,idle=2s,headers=2s` (any subset).

use std::error::Error as StdError;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use thiserror::Error;

use crate::time::DurationError;

/// The hidden variable that overrides the retry timings (for tests).
pub(crate) const ENV: &str = "PROVIDER_IMAGES_RETRY";

/// A retry setting [`RetryPolicy::parse`] cannot read.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub(crate) enum RetrySpecError {
    #[error("{0:?} is not key=value")]
    NotKeyValue(String),
    #[error("tries={0:?} is not a number ≥ 1")]
    Tries(String),
    #[error("unknown setting {0:?}")]
    UnknownSetting(String),
    #[error(transparent)]
    Duration(#[from] DurationError),
}

/// `PROVIDER_IMAGES_RETRY` holds what [`RetryPolicy::parse`] refuses (exit 2, as a bad flag).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{ENV}: {0}")]
pub(crate) struct RetryEnvError(#[source] RetrySpecError);

impl crate::error::ExitStatus for RetryEnvError {
    fn exit_code(&self) -> u8 {
        2
    }
}

/// How often and how patiently requests are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Tries per request (the first included).
    pub(crate) tries: u32,
    /// The backoff before the first retry (drawn from `[base/2, base]`); it doubles with each retry.
    pub(crate) base: Duration,
    /// Longest backoff between two tries.
    pub(crate) max: Duration,
    /// Longest `Retry-After` honoured; a longer one is waited only this long.
    pub(crate) retry_after_max: Duration,
    /// How long a body may stall between two chunks before the download counts as cut.
    pub(crate) idle: Duration,
    /// How long to wait for a response's headers.
    pub(crate) headers: Duration,
    /// The end of the run (`--timeout`): no wait is started that would end after it.
    pub(crate) deadline: Option<Instant>,
}

impl Default for RetryPolicy {
    /// 5 tries with waits of 0.5–1 s, 1–2 s, 2–4 s and 4–8 s (at most 15 s in all), `Retry-After` up
    /// to 60 s, 60 s for headers and for a stalled body.
    fn default() -> RetryPolicy {
        RetryPolicy {
            tries: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(15),
            retry_after_max: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            headers: Duration::from_secs(60),
            deadline: None,
        }
    }
}

impl RetryPolicy {
    /// The defaults, with what `PROVIDER_IMAGES_RETRY` sets.
    pub(crate) fn from_env() -> Result<RetryPolicy, RetryEnvError> {
        match std::env::var(ENV) {
            Ok(spec) => RetryPolicy::parse(&spec).map_err(RetryEnvError),
            Err(_) => Ok(RetryPolicy::default()),
        }
    }

    /// `key=value` pairs separated by commas: `tries`, `base`, `max`, `retry-after-max`, `idle`,
    /// `headers` (durations as for `--timeout`, e.g. `5ms`, `2s`).
    pub(crate) fn parse(spec: &str) -> Result<RetryPolicy, RetrySpecError> {
        let mut policy = RetryPolicy::default();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| RetrySpecError::NotKeyValue(pair.to_string()))?;
            let duration = || crate::time::parse_duration(value);
            match key.trim() {
                "tries" => {
                    policy.tries = value
                        .parse()
                        .ok()
                        .filter(|&n| n >= 1)
                        .ok_or_else(|| RetrySpecError::Tries(value.to_string()))?
                }
                "base" => policy.base = duration()?,
                "max" => policy.max = duration()?,
                "retry-after-max" => policy.retry_after_max = duration()?,
                "idle" => policy.idle = duration()?,
                "headers" => policy.headers = duration()?,
                other => return Err(RetrySpecError::UnknownSetting(other.to_string())),
            }
        }
        Ok(policy)
    }

    pub(crate) fn with_deadline(mut self, deadline: Instant) -> RetryPolicy {
        self.deadline = Some(deadline);
        self
    }

    /// A fresh count of tries under this policy.
    pub(crate) fn attempts(&self) -> Attempts {
        Attempts {
            policy: *self,
            failures: 0,
            unreachable: false,
        }
    }

    /// The jittered backoff after `failures` failed tries (≥ 1).
    fn backoff(&self, failures: u32) -> Duration {
        let doubled = self
            .base
            .checked_mul(1 << failures.saturating_sub(1).min(20))
            .unwrap_or(self.max);
        let ceiling = doubled.min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(random_fraction())
    }
}

/// Why a failed request is not tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GiveUp {
    /// Every try was used.
    Tries(u32),
    /// The next try would start after the run's deadline.
    Deadline { tries: u32 },
    /// The one try allowed to a registry that stayed unreachable through a whole round before.
    Unreachable,
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GiveUp::Tries(1) => f.write_str("tried once"),
            GiveUp::Tries(n) => write!(f, "gave up after {n} tries"),
            GiveUp::Unreachable => {
                f.write_str("not retried: the registry stayed unreachable through every try earlier in this run")
            }
            GiveUp::Deadline { tries } => write!(
                f,
                "gave up after {tries} {}: the next would start after the --timeout deadline",
                if *tries == 1 { "try" } else { "tries" }
            ),
        }
    }
}

/// The tries of one request (or one chain of resumes): counts failures and says how long to wait.
#[derive(Debug, Clone)]
pub(crate) struct Attempts {
    policy: RetryPolicy,
    failures: u32,
    /// Set by `once`: the registry was found unreachable before.
    unreachable: bool,
}

impl Attempts {
    /// Only one try, whatever the policy says: for a registry that stayed unreachable before.
    pub(crate) fn once(mut self) -> Attempts {
        self.policy.tries = 1;
        self.unreachable = true;
        self
    }

    /// Records a failed try; returns the wait before the next one, or why there is none.
    /// `retry_after` is what the server asked for, if anything.
    pub(crate) fn failed(&mut self, retry_after: Option<Duration>) -> Result<Duration, GiveUp> {
        self.failures += 1;
        if self.unreachable {
            return Err(GiveUp::Unreachable);
        }
        if self.failures >= self.policy.tries {
            return Err(GiveUp::Tries(self.failures));
        }
        let wait = match retry_after {
            Some(asked) => asked.min(self.policy.retry_after_max),
            None => self.policy.backoff(self.failures),
        };
        if let Some(deadline) = self.policy.deadline
            && Instant::now() + wait >= deadline
        {
            return Err(GiveUp::Deadline {
                tries: self.failures,
            });
        }
        Ok(wait)
    }

    /// New bytes arrived: the failures before them no longer count.
    pub(crate) fn progressed(&mut self) {
        self.failures = 0;
    }

    /// The number of the try about to be made (1 for the first).
    pub(crate) fn next_try(&self) -> u32 {
        self.failures + 1
    }
}

/// 408, 429 and 5xx: the server may answer differently if asked again.
pub(crate) fn retryable_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// Whether a failed request (hyper's error, with its sources) may succeed if tried again: anything the
/// network did (refused, reset, EOF, timeouts, DNS), but not what TLS decided (an untrusted
/// certificate, a failed handshake), nor a request hyper itself refused to send.
pub(crate) fn is_transient(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.downcast_ref::<rustls::Error>().is_some() {
            return false;
        }
        if let Some(hyper_error) = error.downcast_ref::<hyper::Error>()
            && hyper_error.is_user()
        {
            return false;
        }
        // io::Error's `source` skips the error it wraps: look at that one directly.
        if let Some(io_error) = error.downcast_ref::<std::io::Error>()
            && let Some(inner) = io_error.get_ref()
            && !is_transient(inner)
        {
            return false;
        }
        current = error.source();
    }
    true
}

/// A `Retry-After` value: delay-seconds or an HTTP-date (IMF-fixdate), as a wait from `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds still means "a long time".
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = parse_http_date(value)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → seconds since the epoch.
fn parse_http_date(value: &str) -> Option<u64> {
    let parts: Vec<&str> = value.split_ascii_whitespace().collect();
    let [weekday, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    if !weekday.ends_with(',') || day.len() != 2 || year.len() != 4 {
        return None;
    }
    let day: u64 = day.parse().ok()?;
    let year: u64 = year.parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as u64 + 1;
    let clock: Vec<u64> = time
        .split(':')
        .map(|p| (p.len() == 2).then(|| p.parse().ok()).flatten())
        .collect::<Option<_>>()?;
    let [hour, minute, second] = clock.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || *hour > 23 || *minute > 59 || *second > 60 || year < 1970 {
        return None;
    }
    let days = crate::time::days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// A number in `[0, 1)`, different on each call: std's hasher keys are random per process and
/// change with each `RandomState`, which is all the jitter needs.
fn random_fraction() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_within_its_jitter_band_and_stops_at_the_cap() {
        let policy = RetryPolicy::default();
        for (failures, low, high) in [(1, 500, 1000), (2, 1000, 2000), (3, 2000, 4000)] {
            for _ in 0..50 {
                let wait = policy.backoff(failures).as_millis();
                assert!((low..=high).contains(&wait), "{failures}: {wait}");
            }
        }
        assert!(policy.backoff(30) <= policy.max && policy.backoff(30) >= policy.max / 2);
        let waits: std::collections::HashSet<Duration> =
            (0..20).map(|_| policy.backoff(2)).collect();
        assert!(waits.len() > 1, "jittered: {waits:?}");
    }

    #[test]
    fn tries_are_bounded_and_progress_starts_the_count_again() {
        let policy = RetryPolicy::parse("tries=3,base=1ms,max=2ms").unwrap();
        let mut attempts = policy.attempts();
        assert!(attempts.failed(None).is_ok());
        assert!(attempts.failed(None).is_ok());
        assert_eq!(attempts.next_try(), 3);
        assert_eq!(attempts.failed(None), Err(GiveUp::Tries(3)));
        let mut attempts = policy.attempts();
        attempts.failed(None).unwrap();
        attempts.failed(None).unwrap();
        attempts.progressed();
        assert!(attempts.failed(None).is_ok());
        assert_eq!(
            policy.attempts().once().failed(None),
            Err(GiveUp::Unreachable)
        );
    }

    #[test]
    fn retry_after_is_honoured_up_to_its_cap() {
        let policy = RetryPolicy::parse("retry-after-max=2s").unwrap();
        let mut attempts = policy.attempts();
        assert_eq!(
            attempts.failed(Some(Duration::from_secs(1))),
            Ok(Duration::from_secs(1))
        );
        assert_eq!(
            attempts.failed(Some(Duration::from_secs(99_999))),
            Ok(Duration::from_secs(2))
        );
    }

    #[test]
    fn no_wait_is_started_that_would_end_after_the_deadline() {
        let policy = RetryPolicy::parse("base=10s,max=10s")
            .unwrap()
            .with_deadline(Instant::now() + Duration::from_secs(3));
        let mut attempts = policy.attempts();
        assert_eq!(attempts.failed(None), Err(GiveUp::Deadline { tries: 1 }));
        assert!(
            GiveUp::Deadline { tries: 1 }
                .to_string()
                .contains("--timeout")
        );
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(0),
            "the epoch"
        );
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2028 12:00:00 GMT"),
            Some(1_835_438_400)
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        for bad in [
            "",
            "-1",
            "1.5",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn the_hidden_variable_sets_timings_and_refuses_nonsense() {
        let policy =
            RetryPolicy::parse("tries=2, base=5ms,max=20ms,retry-after-max=1s,idle=2s,headers=3s")
                .unwrap();
        assert_eq!(
            policy,
            RetryPolicy {
                tries: 2,
                base: Duration::from_millis(5),
                max: Duration::from_millis(20),
                retry_after_max: Duration::from_secs(1),
                idle: Duration::from_secs(2),
                headers: Duration::from_secs(3),
                deadline: None,
            }
        );
        assert_eq!(RetryPolicy::parse("").unwrap(), RetryPolicy::default());
        for bad in ["tries=0", "tries=x", "base", "base=5", "speed=1s"] {
            assert!(RetryPolicy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_worth_another_try() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(retryable_status(StatusCode::from_u16(status).unwrap()));
        }
        for status in [400, 401, 403, 404, 416] {
            assert!(!retryable_status(StatusCode::from_u16(status).unwrap()));
        }
    }

    #[test]
    fn network_errors_are_transient_and_tls_verdicts_are_not() {
        use std::io::{Error, ErrorKind};
        for kind in [
            ErrorKind::ConnectionReset,
            ErrorKind::ConnectionRefused,
            ErrorKind::UnexpectedEof,
            ErrorKind::TimedOut,
        ] {
            assert!(is_transient(&Error::from(kind)), "{kind:?}");
        }
        let certificate = Error::new(
            ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(!is_transient(&certificate));
        #[derive(Debug)]
        struct Wrapper(Error);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl StdError for Wrapper {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        assert!(!is_transient(&Wrapper(certificate)));
        assert!(is_transient(&Wrapper(Error::from(
            ErrorKind::ConnectionReset
        ))));
    }
}
