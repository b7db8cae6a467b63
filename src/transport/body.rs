//! Reading a whole (small) response body with a cap, so a hostile server cannot make us buffer
//! without bound. Streaming bodies (blobs) are read elsewhere.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::error::error_chain;

/// Why a whole-body read failed.
#[derive(Debug)]
pub(crate) enum BodyFailure {
    TooLarge(usize),
    Cut(String),
    Stalled(Duration),
}

impl std::fmt::Display for BodyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyFailure::TooLarge(cap) => write!(f, "response body exceeds {cap} bytes"),
            BodyFailure::Cut(cause) => f.write_str(cause),
            BodyFailure::Stalled(after) => write!(f, "stalled for {after:?}"),
        }
    }
}

/// Reads the whole body: fails once it grows past `cap` bytes, or when no data comes for `idle`
/// (when given; a caller without it bounds the whole read instead).
pub(crate) async fn read_capped(
    mut body: Incoming,
    cap: usize,
    idle: Option<Duration>,
) -> Result<Bytes, BodyFailure> {
    let mut collected = bytes::BytesMut::new();
    loop {
        let next = match idle {
            Some(idle) => tokio::time::timeout(idle, body.frame())
                .await
                .map_err(|_| BodyFailure::Stalled(idle))?,
            None => body.frame().await,
        };
        match next {
            None => return Ok(collected.freeze()),
            Some(Err(e)) => return Err(BodyFailure::Cut(error_chain(&e))),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if collected.len() + data.len() > cap {
                        return Err(BodyFailure::TooLarge(cap));
                    }
                    collected.extend_from_slice(&data);
                }
            }
        }
    }
}
