//! One run of a command: the cluster source, the settings, the pull or the report, the summary, and
//! the run's edges (deadline, signals, logging, the kubelet's termination message). Decides no exit
//! code of its own but for signals and the deadline: each top-level error gives its own.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cli::{Command, CommonArgs, ExtractArgs, LogFormat, ReportFormat, ResolveArgs};
use crate::cluster::{
    self, ClusterConfig, ClusterSource, DEFAULT_CALL_TIMEOUT, Extras, ProxyOrigin,
};
use crate::error::{ExitStatus, error_chain};
use crate::extract::{self, ExtractOptions};
use crate::images::{self, ImageEntry};
use crate::layers::Limits;
use crate::registry::Platform;
use crate::resolve;
use crate::setup::{self, Settings, Setup};
use crate::transport::proxy::{Proxies, ProxyFlags};
use crate::transport::retry::RetryPolicy;

/// The kubelet reads at most this much of a termination message.
const TERMINATION_MESSAGE_LIMIT: usize = 4096;
const DEFAULT_TERMINATION_LOG: &str = "/dev/termination-log";

/// A failure with the exit code the design's table gives it.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    /// The error, shown with its sources, and the exit code it gives.
    fn of(error: &(impl ExitStatus + std::error::Error)) -> Failure {
        Failure {
            code: error.exit_code(),
            message: error_chain(error),
        }
    }
}

/// Runs `command`, ended early by SIGINT/SIGTERM or, when given, the `deadline`.
pub async fn run_with_deadline(
    command: Command,
    deadline: Option<Duration>,
) -> Result<String, Failure> {
    let expired = async {
        match deadline {
            Some(after) => tokio::time::sleep(after).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        code = signal() => Err(Failure { code, message: format!("interrupted (exit {code}); nothing published") }),
        _ = expired => Err(Failure {
            code: 1,
            message: format!("timed out after {:?} (--timeout); nothing published", deadline.unwrap_or_default()),
        }),
        result = run(command) => result,
    }
}

/// Resolves with the exit code for SIGINT (130) or SIGTERM (143).
async fn signal() -> u8 {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => 130,
        _ = terminate.recv() => 143,
    }
}

async fn run(command: Command) -> Result<String, Failure> {
    match command {
        Command::Extract(args) => extract_command(args).await,
        Command::Resolve(args) => resolve_command(args).await,
    }
}

/// The proxies from --proxy/--no-proxy and the environment, and which of them gave any; the one
/// place that reads them.
fn proxies(common: &CommonArgs) -> Result<(Proxies, ProxyOrigin), Failure> {
    let flags = ProxyFlags {
        proxy: common.proxy.clone(),
        no_proxy: common.no_proxy.clone(),
    };
    let env = |name: &str| std::env::var(name).ok();
    let (proxies, warnings) = Proxies::configure(&flags, env).map_err(|e| Failure::of(&e))?;
    for warning in warnings {
        tracing::warn!(%warning, "proxy configuration");
    }
    Ok((proxies, ProxyOrigin::given(&flags, env)))
}

/// Reads the cluster (once, before any pull) and assembles the run's parts; `deadline` is when the
/// run's `--timeout` ends it, past which no retry waits. `entries` are the images given on the
/// command line; without them the cluster's list is read and returned.
async fn prepare(
    common: &CommonArgs,
    deadline: Option<Instant>,
    entries: Option<Vec<ImageEntry>>,
) -> Result<(Setup, ClusterConfig, Vec<ImageEntry>, ProxyOrigin), Failure> {
    let (proxies, origin) = proxies(common)?;
    let proxies = std::sync::Arc::new(proxies);
    let mut retry = RetryPolicy::from_env().map_err(|e| Failure::of(&e))?;
    if let Some(deadline) = deadline {
        retry = retry.with_deadline(deadline);
    }
    let source = if common.no_cluster {
        ClusterSource::None
    } else if let Some(dir) = &common.cluster_dir {
        ClusterSource::Dir(dir.clone())
    } else {
        ClusterSource::Api { kubeconfig: None }
    };
    let extras = Extras {
        image_list_namespace: entries.is_none().then(|| common.namespace.clone()),
        cluster_proxy: origin.cluster_read(),
        policy_namespace: Some(common.namespace.clone()),
    };
    let cluster = cluster::read_with_extras(&source, &proxies, DEFAULT_CALL_TIMEOUT, &extras)
        .await
        .map_err(|error| Failure::of(&error))?;
    let cluster_read = !matches!(source, ClusterSource::None);
    let entries = cluster::given_or_cluster(
        entries,
        cluster.image_list.as_ref(),
        &common.namespace,
        cluster_read,
    )
    .map_err(|e| Failure::of(&e))?;
    let (proxies, origin) =
        cluster::for_registries(cluster.cluster_proxy.as_ref(), proxies, origin).map_err(|e| {
            Failure {
                code: e.exit_code(),
                message: format!("proxies.config.openshift.io/cluster status: {e}"),
            }
        })?;
    tracing::info!(from = %origin, "registries' proxy");
    let settings = Settings {
        pull_secret: common.pull_secret.clone(),
        ca_files: common.ca_files.clone(),
        insecure_registries: common.insecure_registries.clone(),
        proxies,
        retry,
        policy_namespace: cluster_read.then(|| common.namespace.clone()),
    };
    let setup = setup::assemble(&settings, &cluster).map_err(|e| Failure::of(&e))?;
    Ok((setup, cluster, entries, origin))
}

fn platform(common: &CommonArgs) -> Result<Platform, Failure> {
    match &common.platform {
        Some(text) => Platform::parse(text).ok_or_else(|| {
            Failure::usage(format!(
                "invalid --platform {text:?}: use OS/ARCH[/VARIANT]"
            ))
        }),
        None => Ok(Platform::running()),
    }
}

async fn extract_command(args: ExtractArgs) -> Result<String, Failure> {
    let entries = match &args.images_json {
        Some(path) => Some(images::read_images_path(path).map_err(|e| Failure::of(&e))?),
        None => None,
    };
    let platform = platform(&args.common)?;
    let (setup, _, entries, _) =
        prepare(&args.common, Some(Instant::now() + args.timeout), entries).await?;
    let options = ExtractOptions {
        output: args.output.clone(),
        platform,
        concurrency: usize::from(args.concurrency),
        limits: Limits {
            max_file_size: args.max_file_size,
            max_image_size: args.max_image_size,
        },
        lock_timeout: Duration::from_secs(60),
        partial: !args.no_partial,
        cache_dir: args.cache_dir.clone(),
    };
    match extract::extract(setup.client, setup.planner, setup.policy, entries, &options).await {
        Ok(summary) => {
            let message = if summary.warm {
                format!(
                    "{} images ({} profiles) already published to {}; nothing pulled",
                    summary.images,
                    summary.profiles,
                    args.output.display()
                )
            } else {
                format!(
                    "published {} images ({} profiles) to {}",
                    summary.images,
                    summary.profiles,
                    args.output.display()
                )
            };
            tracing::info!(
                images = summary.images,
                profiles = summary.profiles,
                warm = summary.warm,
                "{message}"
            );
            Ok(message)
        }
        Err(error) => Err(Failure {
            code: error.exit_code(),
            message: error.report(),
        }),
    }
}

async fn resolve_command(args: ResolveArgs) -> Result<String, Failure> {
    let entries = match &args.images_json {
        Some(path) => Some(images::read_images_path(path).map_err(|e| Failure::of(&e))?),
        None if args.references.is_empty() => None,
        None => Some(images::from_references(&args.references).map_err(|e| Failure::of(&e))?),
    };
    let (setup, cluster, entries, proxy_from) = prepare(&args.common, None, entries).await?;
    let report = resolve::report(&entries, &setup.planner, &setup, &cluster.notes, proxy_from);
    let text = match args.format {
        ReportFormat::Text => report.to_text(),
        ReportFormat::Json => report.to_json(),
    };
    print!("{text}");
    Ok(String::new())
}

/// Logs to stderr, as text or JSON; `RUST_LOG` filters (default `info`).
pub fn init_logging(format: Option<LogFormat>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        Some(format) => format == LogFormat::Json,
        None => !std::io::stderr().is_terminal(),
    };
    // Colours only for a person at a terminal who did not opt out (https://no-color.org): a text
    // log written to a file must not fill with escape codes.
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// Where the kubelet reads the termination message: the flag, else its default path when it exists.
pub fn termination_log_path(flag: Option<&Path>) -> Option<PathBuf> {
    match flag {
        Some(path) => Some(path.to_path_buf()),
        None => Path::new(DEFAULT_TERMINATION_LOG)
            .exists()
            .then(|| PathBuf::from(DEFAULT_TERMINATION_LOG)),
    }
}

/// Writes the message for the kubelet; failing to write it only warns.
pub fn write_termination_message(path: &Path, message: &str) {
    if let Err(error) = std::fs::write(path, fit_termination_message(message)) {
        tracing::warn!(path = %path.display(), %error, "cannot write the termination message");
    }
}

/// At most 4 KiB, cut at a character boundary and marked when cut.
fn fit_termination_message(message: &str) -> String {
    let mut text = message.to_string();
    if text.len() > TERMINATION_MESSAGE_LIMIT {
        let marker = "\n…(truncated; see the log)";
        let mut cut = TERMINATION_MESSAGE_LIMIT - marker.len();
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(marker);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn termination_messages_fit_the_kubelets_limit() {
        assert_eq!(fit_termination_message("short"), "short");
        let long = "é".repeat(3000);
        let fitted = fit_termination_message(&long);
        assert!(
            fitted.len() <= TERMINATION_MESSAGE_LIMIT,
            "{}",
            fitted.len()
        );
        assert!(fitted.ends_with("(truncated; see the log)"));
        assert!(fitted.starts_with("éé"));
    }
}
