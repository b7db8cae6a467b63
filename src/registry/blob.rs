//! Blob downloads: streaming into a consumer on a blocking thread, resuming a cut body with `Range`,
//! starting over when the bytes do not verify, and logging a long download's progress.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::byteranges;
use super::digest::{Digester, verify};
use super::{Descriptor, RegistryClient, RegistryError, Source, body_error, header_text};
use crate::error::error_chain;

/// Chunks in flight between a download and the thread that decompresses it: bounds memory per layer.
const STREAM_DEPTH: usize = 16;

/// How a blob download ended badly.
enum Download {
    /// For good: retries and resumes are spent, or the registry said no.
    Failed(RegistryError),
    /// What arrived does not verify (digest, size, a resent body that differs): start over.
    Unverified(RegistryError),
}

/// Why a blob did not serve its consumer.
#[derive(Debug)]
pub(crate) enum BlobError<E> {
    /// The download failed for good, after its retries, resumes and restarts.
    Download(RegistryError),
    /// The consumer failed on bytes that verified: the blob itself is at fault.
    Consumer(E),
    /// The consumer's thread panicked.
    Worker(String),
}

impl RegistryClient {
    /// Streams a blob into `consume`, which runs on a blocking thread with a reader over the bytes as
    /// they arrive. A download cut midway resumes where it stopped (`Range: bytes=N-`; the digest
    /// runs on over the whole blob). When what arrived does not verify, the blob is downloaded again
    /// from the start into a fresh `consume`. The reader reports its end only once the whole blob has
    /// verified, so a consumer that reads to the end never accepts unverified bytes. When `consume`
    /// fails, the download still runs to its end, to tell a damaged blob (downloaded again) from a
    /// hostile one (`BlobError::Consumer`).
    pub(crate) async fn consume_blob<T, E, F>(
        &self,
        source: &Source,
        descriptor: &Descriptor,
        consume: F,
    ) -> Result<T, BlobError<E>>
    where
        F: Fn(BlobReader) -> Result<T, E> + Send + Sync + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let what = format!("blob {}", descriptor.digest());
        let consume = Arc::new(consume);
        let mut restarts = self.retry.attempts();
        loop {
            let (sender, receiver) = mpsc::channel(STREAM_DEPTH);
            let consumer = {
                let consume = consume.clone();
                tokio::task::spawn_blocking(move || consume(BlobReader::new(receiver)))
            };
            let mut outlet = Outlet { sender, open: true };
            // The consumer's reader fails with the download's own error (shared until the consumer
            // is done), so its error chain keeps the cause.
            let failure = match self.download(source, descriptor, &what, &mut outlet).await {
                Ok(_) => None,
                Err(Download::Failed(error)) => Some((true, Arc::new(error))),
                Err(Download::Unverified(error)) => Some((false, Arc::new(error))),
            };
            match &failure {
                None => outlet.send(Ok(Bytes::new())).await,
                Some((_, error)) => outlet.send(Err(reader_error(error))).await,
            }
            drop(outlet);
            let consumed = consumer
                .await
                .map_err(|e| BlobError::Worker(e.to_string()))?;
            let Some((for_good, error)) = failure else {
                return consumed.map_err(BlobError::Consumer);
            };
            drop(consumed);
            let error = DownloadFailed::into_inner(error, source, &what);
            if for_good {
                return Err(BlobError::Download(error));
            }
            self.pause_or_give_up(source, &what, &mut restarts, error, None)
                .await
                .map_err(BlobError::Download)?;
            tracing::warn!(registry = %source.registry, blob = %descriptor.digest(), "downloading the blob again from its start");
        }
    }

    /// Downloads a blob into `outlet`, resuming when the body is cut; returns the bytes received once
    /// they verify.
    async fn download(
        &self,
        source: &Source,
        descriptor: &Descriptor,
        what: &str,
        outlet: &mut Outlet,
    ) -> Result<u64, Download> {
        let path = format!("blobs/{}", descriptor.digest());
        let size = descriptor.size();
        let mut digester =
            Digester::for_digest(descriptor.digest().as_ref()).map_err(Download::Failed)?;
        let mut received: u64 = 0;
        // Cleared once the registry answers a Range request wrongly: from then on, full bodies only.
        let mut ranges = true;
        let mut attempts = self.attempts(source);
        let mut progress = Progress::new();
        loop {
            let ranged = received > 0 && ranges;
            let mut headers = HeaderMap::new();
            if ranged {
                headers.insert(
                    RANGE,
                    HeaderValue::from_str(&format!("bytes={received}-")).expect("digits"),
                );
            }
            let response = self
                .get(source, &path, &headers, what, &mut attempts)
                .await
                .map_err(Download::Failed)?;
            // A 206 goes on from `received`; anything else is the whole blob again, whose first
            // `received` bytes were delivered already and must be the same.
            let (skip, length) = match response.status() {
                StatusCode::PARTIAL_CONTENT => (0, size - received),
                _ => (received, size),
            };
            let wrong = if response.status() == StatusCode::PARTIAL_CONTENT {
                let value = header_text(response.headers(), CONTENT_RANGE);
                byteranges::resume(&value, ranged, received, size).err()
            } else {
                None
            }
            .map(|cause| body_error(source, what, cause.to_string()))
            .or_else(|| {
                header_text(response.headers(), CONTENT_LENGTH)
                    .parse::<u64>()
                    .ok()
                    .filter(|&announced| announced != length)
                    .map(|announced| RegistryError::SizeMismatch {
                        registry: source.registry.clone(),
                        what: format!("{what} (Content-Length)"),
                        expected: length,
                        actual: announced,
                    })
            });
            if let Some(failure) = wrong {
                ranges &= response.status() != StatusCode::PARTIAL_CONTENT;
                self.pause_or_give_up(source, what, &mut attempts, failure, None)
                    .await
                    .map_err(Download::Failed)?;
                continue;
            }
            let mut body = response.into_body();
            let mut resent = (skip > 0)
                .then(|| Digester::for_digest(descriptor.digest().as_ref()).map(|d| (d, skip)))
                .transpose()
                .map_err(Download::Failed)?;
            let cut = loop {
                let frame = match tokio::time::timeout(self.retry.idle, body.frame()).await {
                    Err(_) => break Some(format!("stalled for {:?}", self.retry.idle)),
                    Ok(None) => break None,
                    Ok(Some(Err(e))) => break Some(error_chain(&e)),
                    Ok(Some(Ok(frame))) => frame,
                };
                let Ok(mut data) = frame.into_data() else {
                    continue;
                };
                if let Some((prefix, left)) = &mut resent {
                    let n = (*left).min(data.len() as u64);
                    prefix.update(&data[..n as usize]);
                    *left -= n;
                    data = data.slice(n as usize..);
                    if *left > 0 {
                        continue;
                    }
                    let (prefix, _) = resent.take().expect("checked above");
                    if prefix.finish() != digester.clone().finish() {
                        return Err(Download::Unverified(body_error(
                            source,
                            what,
                            format!(
                                "sent again whole, its first {received} bytes differ from those read before"
                            ),
                        )));
                    }
                }
                if data.is_empty() {
                    continue;
                }
                received += data.len() as u64;
                if received > size {
                    return Err(Download::Unverified(RegistryError::SizeMismatch {
                        registry: source.registry.clone(),
                        what: what.to_string(),
                        expected: size,
                        actual: received,
                    }));
                }
                digester.update(&data);
                attempts.progressed();
                progress.report(descriptor, source, received);
                outlet.send(Ok(data)).await;
            };
            let cut = match (cut, &resent) {
                (None, Some(_)) => Some("the body ended before the bytes already read".to_string()),
                (cut, _) => cut,
            };
            let Some(cause) = cut else { break };
            if received == size && resent.is_none() {
                // Every byte is here; the connection broke after them.
                break;
            }
            self.pause_or_give_up(
                source,
                what,
                &mut attempts,
                body_error(source, what, cause),
                None,
            )
            .await
            .map_err(Download::Failed)?;
            tracing::info!(
                registry = %source.registry,
                blob = %descriptor.digest(),
                offset = received,
                size,
                range = ranges,
                "resuming the download"
            );
        }
        verify(source, what, descriptor, received, digester.finish())
            .map_err(Download::Unverified)?;
        Ok(received)
    }
}

/// A failed download as the consumer's reader reports it: shown as the registry error, which is its
/// source.
#[derive(Debug)]
struct DownloadFailed(Arc<RegistryError>);

impl DownloadFailed {
    /// The error back from the consumer, which has returned and dropped its reader. Should it have
    /// kept the reader's error, the download's verdict keeps the text.
    fn into_inner(error: Arc<RegistryError>, source: &Source, what: &str) -> RegistryError {
        Arc::try_unwrap(error)
            .unwrap_or_else(|shared| body_error(source, what, error_chain(&*shared)))
    }
}

impl std::fmt::Display for DownloadFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DownloadFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

fn reader_error(error: &Arc<RegistryError>) -> io::Error {
    io::Error::other(DownloadFailed(error.clone()))
}

/// Where downloaded bytes go: the consumer's channel, while the consumer listens.
struct Outlet {
    sender: mpsc::Sender<io::Result<Bytes>>,
    open: bool,
}

impl Outlet {
    async fn send(&mut self, item: io::Result<Bytes>) {
        if self.open && self.sender.send(item).await.is_err() {
            // The consumer stopped (it failed on its own); the download goes on to its verdict.
            self.open = false;
        }
    }
}

/// Logs a long download's progress every few seconds, so a slow pull shows it is alive.
struct Progress {
    started: std::time::Instant,
    last: std::time::Instant,
}

impl Progress {
    const EVERY: Duration = Duration::from_secs(5);

    fn new() -> Progress {
        let now = std::time::Instant::now();
        Progress {
            started: now,
            last: now,
        }
    }

    fn report(&mut self, descriptor: &Descriptor, source: &Source, received: u64) {
        if self.last.elapsed() < Self::EVERY {
            return;
        }
        self.last = std::time::Instant::now();
        let seconds = self.started.elapsed().as_secs_f64();
        // Each image logs its own progress at info (extract::progress); this is the blob's detail.
        tracing::debug!(
            blob = %descriptor.digest(),
            registry = %source.registry,
            received,
            size = descriptor.size(),
            mib_per_s = format!("{:.1}", received as f64 / seconds / (1 << 20) as f64),
            "downloading"
        );
    }
}

/// A blocking `Read` over a blob being downloaded by an async task. The download marks the end of a
/// verified blob with an empty chunk; a failed verification arrives as a read error, and a download
/// that stops without either is an error too, so a consumer never sees the end of a blob that did not
/// verify.
pub(crate) struct BlobReader {
    receiver: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    verified: bool,
}

impl BlobReader {
    fn new(receiver: mpsc::Receiver<io::Result<Bytes>>) -> BlobReader {
        BlobReader {
            receiver,
            current: Bytes::new(),
            verified: false,
        }
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.verified {
                return Ok(0);
            }
            match self.receiver.blocking_recv() {
                None => {
                    return Err(io::Error::other(
                        "the download stopped before the blob verified",
                    ));
                }
                Some(Ok(chunk)) if chunk.is_empty() => self.verified = true,
                Some(chunk) => self.current = chunk?,
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_reader_surfaces_a_failed_verification_instead_of_eof() {
        let (sender, receiver) = mpsc::channel(4);
        sender.try_send(Ok(Bytes::from_static(b"abc"))).unwrap();
        sender
            .try_send(Err(io::Error::other("digest mismatch")))
            .unwrap();
        drop(sender);
        let mut reader = BlobReader::new(receiver);
        let mut out = Vec::new();
        let err = reader.read_to_end(&mut out).unwrap_err();
        assert_eq!(out, b"abc");
        assert!(err.to_string().contains("digest mismatch"));
    }

    /// Issue 14 (typed causes): the consumer's reader fails with the download's own error as the
    /// source of its `io::Error`, not with its text, so the consumer's error chain keeps the cause.
    #[test]
    fn the_consumer_reads_the_download_error_itself() {
        let error = Arc::new(RegistryError::SizeMismatch {
            registry: "mirror.test".into(),
            what: "blob sha256:ab".into(),
            expected: 3,
            actual: 4,
        });
        let (sender, receiver) = mpsc::channel(4);
        sender.try_send(Err(reader_error(&error))).unwrap();
        drop(sender);
        let read = BlobReader::new(receiver).read_to_end(&mut Vec::new());
        let read_error = read.unwrap_err();
        assert_eq!(read_error.to_string(), error.to_string());
        let cause = read_error
            .get_ref()
            .and_then(|inner| inner.source())
            .and_then(|cause| cause.downcast_ref::<RegistryError>());
        assert!(
            matches!(cause, Some(RegistryError::SizeMismatch { actual: 4, .. })),
            "{read_error:?}"
        );
    }

    #[test]
    fn blob_reader_ends_only_at_the_verified_end_marker() {
        let (sender, receiver) = mpsc::channel(4);
        sender.try_send(Ok(Bytes::from_static(b"abc"))).unwrap();
        drop(sender);
        let mut out = Vec::new();
        let err = BlobReader::new(receiver).read_to_end(&mut out).unwrap_err();
        assert!(
            err.to_string().contains("before the blob verified"),
            "{err}"
        );

        let (sender, receiver) = mpsc::channel(4);
        sender.try_send(Ok(Bytes::from_static(b"abc"))).unwrap();
        sender.try_send(Ok(Bytes::new())).unwrap();
        let mut out = Vec::new();
        BlobReader::new(receiver).read_to_end(&mut out).unwrap();
        assert_eq!(
            out, b"abc",
            "ends at the marker, with the sender still open"
        );
    }
}
