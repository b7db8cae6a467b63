//! One image's progress for the log: bytes of its layers received out of what they weigh, at most
//! every few seconds, so that a long pull shows it is alive and how far it got. Counts only; it
//! decides nothing about the pull.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often at most an image's progress is logged.
const EVERY: Duration = Duration::from_secs(5);

pub(crate) struct ImageProgress {
    image: String,
    total: u64,
    received: AtomicU64,
    started: Instant,
    last: Mutex<Instant>,
}

impl ImageProgress {
    /// `total`: the bytes of the image's layers.
    pub(crate) fn new(image: &str, total: u64) -> Arc<ImageProgress> {
        let now = Instant::now();
        Arc::new(ImageProgress {
            image: image.to_string(),
            total,
            received: AtomicU64::new(0),
            started: now,
            last: Mutex::new(now),
        })
    }

    fn add(&self, bytes: u64) {
        let received = self.received.fetch_add(bytes, Ordering::Relaxed) + bytes;
        // A reader that finds the lock taken leaves the line to the one that holds it.
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        if last.elapsed() < EVERY {
            return;
        }
        *last = Instant::now();
        drop(last);
        let seconds = self.started.elapsed().as_secs_f64();
        tracing::info!(
            image = %self.image,
            received,
            total = self.total,
            mib_per_s = format!("{:.1}", received as f64 / seconds / f64::from(1 << 20)),
            "pulling: {} of {} MiB",
            received >> 20,
            self.total >> 20
        );
    }
}

/// Where one layer's bytes are counted as they are read: its image's progress, and the layer's own
/// count (so that [`LayerCounter::done`] adds only what reading did not).
#[derive(Clone)]
pub(crate) struct LayerCounter {
    progress: Arc<ImageProgress>,
    layer: Arc<AtomicU64>,
}

impl LayerCounter {
    pub(crate) fn new(progress: &Arc<ImageProgress>) -> LayerCounter {
        LayerCounter {
            progress: progress.clone(),
            layer: Arc::new(AtomicU64::new(0)),
        }
    }

    /// `inner`, counted as it is read.
    pub(crate) fn reader<R: Read>(&self, inner: R) -> Counted<R> {
        Counted {
            inner,
            counter: self.clone(),
        }
    }

    /// The layer of `size` bytes is done, whichever way (downloaded, read through its TOC, taken
    /// from the cache or from another image's pull).
    pub(crate) fn done(&self, size: u64) {
        let read = self.layer.load(Ordering::Relaxed);
        self.progress.add(size.saturating_sub(read));
    }
}

pub(crate) struct Counted<R> {
    inner: R,
    counter: LayerCounter,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.counter.layer.fetch_add(read as u64, Ordering::Relaxed);
        self.counter.progress.add(read as u64);
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_is_counted_once_however_it_was_done() {
        let progress = ImageProgress::new("x", 300);
        let read = LayerCounter::new(&progress);
        std::io::copy(&mut read.reader(&[7u8; 100][..]), &mut std::io::sink()).unwrap();
        read.done(100);
        // Another layer, done without reading it here (the cache, another image's pull).
        LayerCounter::new(&progress).done(200);
        assert_eq!(progress.received.load(Ordering::Relaxed), 300);
    }
}
