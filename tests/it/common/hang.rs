//! A server that accepts TCP connections and never says a word: the registry that hangs, for
//! signals and the run's timeout. It counts connections so a test knows the client got there.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Stopped on Drop; the connections it holds are closed then.
pub struct HangingServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HangingServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        // Polled, so the thread notices `stop` without another connection arriving.
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("listener address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                // Held open, unanswered, until the server stops.
                let mut held: Vec<TcpStream> = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            held.push(stream);
                            accepted.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        HangingServer {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:<port>`, as an image reference's registry host.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits until at least one connection arrived; panics after `timeout`.
    pub fn wait_for_connection(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.accepted() == 0 {
            assert!(
                Instant::now() < deadline,
                "nothing connected to {} within {timeout:?}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for HangingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
