//! Running the binary under test (or any program) with a timeout, capturing its output.

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Long enough for any single run against loopback registries; a hang fails instead of
/// stalling the suite.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The binary's hidden retry timings (`provider_images::transport::retry::ENV`) for tests: the production
/// backoff, scaled down a hundredfold or so, so a test that fails requests stays fast; the number
/// of tries is the production one. A test that times retries sets its own.
pub const RETRY_ENV: &str = "PROVIDER_IMAGES_RETRY";
pub const FAST_RETRIES: &str = "base=10ms,max=100ms,retry-after-max=2s";

/// Variables that would let the developer's or CI's environment steer a run: proxies (the
/// binary honours them), the binary's own env fallbacks for flags, and cluster access (a
/// kubeconfig must never lead a test to a real cluster). A test sets what it needs with `env`.
const SCRUBBED_ENV: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "IMAGES_JSON",
    "PROVIDER_IMAGE_DIR",
    "KUBECONFIG",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    RETRY_ENV,
];

/// The project's binary, as cargo built it for these tests.
pub fn provider_images_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_provider-images"))
}

/// A command line to run: `Run::new().args([...]).env(..).run()`.
pub struct Run {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    timeout: Duration,
}

/// How a run ended. `code` is None when a signal ended it.
#[derive(Debug)]
pub struct RunOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Default for Run {
    fn default() -> Self {
        Run::new()
    }
}

impl Run {
    /// The binary under test, with fast retries.
    pub fn new() -> Self {
        Run::program(provider_images_bin()).env(RETRY_ENV, FAST_RETRIES)
    }

    /// Any program (e.g. skopeo, to compare with a reference client).
    pub fn program(program: impl Into<PathBuf>) -> Self {
        Run {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs to completion; panics (after killing it) when it outlives the timeout.
    pub fn run(&self) -> RunOutput {
        self.spawn().wait(self.timeout)
    }

    /// Starts the program and returns at once, for a test that acts on it while it runs
    /// (signals it); `Running::wait` collects the result.
    pub fn spawn(&self) -> Running {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for name in SCRUBBED_ENV {
            command.env_remove(name);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.program.display()));
        // Drained on threads: a child blocked on a full pipe would never exit.
        let stdout = drain(child.stdout.take().expect("piped stdout"));
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        Running {
            child,
            stdout: Some(stdout),
            stderr: Some(stderr),
            what: format!("{} {:?}", self.program.display(), self.args),
        }
    }
}

/// A started program. Killed and reaped if dropped before `wait`.
pub struct Running {
    child: Child,
    // Taken by `wait`.
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    /// The command line, for messages.
    what: String,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (a name `kill` knows: TERM, INT, …) with kill(1); the crate forbids the
    /// unsafe code a direct kill(2) would take.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Waits for the exit; panics (after killing it) when it outlives `timeout`.
    pub fn wait(mut self, timeout: Duration) -> RunOutput {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for child") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The pipes close once the child is gone, so the readers end.
        let read = |pipe: Option<JoinHandle<String>>| pipe.expect("not waited yet").join();
        let output = RunOutput {
            code: status.and_then(|s| s.code()),
            stdout: read(self.stdout.take()).expect("stdout reader"),
            stderr: read(self.stderr.take()).expect("stderr reader"),
        };
        assert!(
            status.is_some(),
            "{} still running after {timeout:?}; killed.\n{output}",
            self.what
        );
        output
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Already reaped after `wait`; then both calls are harmless no-ops.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RunOutput {
    /// Panics, showing both streams, unless the exit code is `code`.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit code\n{self}");
        self
    }
}

impl std::fmt::Display for RunOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
