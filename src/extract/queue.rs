//! The one work queue every layer pulled whole goes through, across images: at most `width` layers are
//! downloaded, verified, decompressed and walked at once, the largest waiting layer first. (A partial
//! pull, a few small requests, does not wait here.)
//!
//! A layer's decompression is a single thread's work that cannot be split, so the largest layers bound
//! the run: starting them first (longest processing time first) keeps every core busy until the end,
//! where first-come order could leave one big layer running alone. The width is twice the cores: a
//! layer is two stages (receiving, TLS and digest on the runtime; inflate and tar walk on a blocking
//! thread), and a second layer per core keeps that core busy while the first one's data is on its way.
//! Measured on 2 cores (hack/bench.sh: 11 images, 25 unique layers, 461 MiB; median of 5 cold runs):
//! width 1: 2.94 s, 2: 2.06 s, 3: 1.91 s, 4: 1.84 s, 8: 1.87 s, 64 (about every layer at once, as
//! before the queue): 1.82 s. So the width costs nothing at 4 and bounds threads, connections and
//! buffers however many images and layers a run has; longest-first showed no gain of its own here.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

#[derive(Clone)]
pub(super) struct WorkQueue {
    state: Arc<Mutex<State>>,
}

struct State {
    free: usize,
    waiting: BinaryHeap<Waiter>,
    /// Tells apart waiters of one size: the earlier first.
    next: u64,
}

struct Waiter {
    size: u64,
    order: u64,
    /// The slot is handed over through this; if the receiver is gone, the slot comes back (its Drop).
    wake: oneshot::Sender<Slot>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Waiter {}

impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiter {
    /// The greatest is served first: the largest layer, then the earliest asker.
    fn cmp(&self, other: &Self) -> Ordering {
        self.size
            .cmp(&other.size)
            .then_with(|| other.order.cmp(&self.order))
    }
}

/// The right to work on one layer; the next waiter gets it when this is dropped.
pub(super) struct Slot {
    queue: Option<WorkQueue>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            queue.release();
        }
    }
}

impl WorkQueue {
    pub(super) fn new(width: usize) -> WorkQueue {
        WorkQueue {
            state: Arc::new(Mutex::new(State {
                free: width.max(1),
                waiting: BinaryHeap::new(),
                next: 0,
            })),
        }
    }

    /// Twice as many layers as the machine has cores (or the cgroup allows).
    pub(super) fn for_this_machine() -> WorkQueue {
        WorkQueue::new(2 * std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Waits for a slot for a layer of `size` bytes. Dropping the future gives up its place (or, when
    /// a slot was already on its way, the slot).
    pub(super) async fn acquire(&self, size: u64) -> Slot {
        let receiver = {
            let mut state = self.state.lock().unwrap();
            if state.free > 0 {
                state.free -= 1;
                return self.slot();
            }
            let (wake, receiver) = oneshot::channel();
            let order = state.next;
            state.next += 1;
            state.waiting.push(Waiter { size, order, wake });
            receiver
        };
        // The sender lives in the heap until a slot is handed over, and the queue outlives the run.
        receiver.await.expect("a waiter is woken with a slot")
    }

    fn slot(&self) -> Slot {
        Slot {
            queue: Some(self.clone()),
        }
    }

    /// Hands the freed slot to the largest waiter still waiting, or keeps it free.
    fn release(&self) {
        let mut state = self.state.lock().unwrap();
        while let Some(waiter) = state.waiting.pop() {
            // A fresh slot for the waiter; if it gave up meanwhile, `send` hands the slot back and
            // dropping it would re-enter `release` under the lock, so it is defused first.
            match waiter.wake.send(Slot {
                queue: Some(self.clone()),
            }) {
                Ok(()) => return,
                Err(mut slot) => slot.queue = None,
            }
        }
        state.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_largest_waiting_layer_goes_first_and_no_more_than_the_width_run() {
        let queue = WorkQueue::new(1);
        let first = queue.acquire(1).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for size in [10u64, 30, 20, 30] {
            let (queue, order) = (queue.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = queue.acquire(size).await;
                order.lock().unwrap().push(size);
                tokio::task::yield_now().await;
            }));
            // Queued in this order.
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        assert!(order.lock().unwrap().is_empty(), "the one slot is taken");
        drop(first);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [30, 30, 20, 10]);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_does_not_lose_the_slot() {
        let queue = WorkQueue::new(1);
        let first = queue.acquire(1).await;
        let gave_up = tokio::spawn({
            let queue = queue.clone();
            async move { queue.acquire(100).await }
        });
        tokio::task::yield_now().await;
        gave_up.abort();
        let _ = gave_up.await;
        drop(first);
        // The slot is free again: acquiring does not wait.
        let again = tokio::time::timeout(std::time::Duration::from_secs(5), queue.acquire(1)).await;
        assert!(again.is_ok());
    }
}
