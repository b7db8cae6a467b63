//! The binary's edge: arguments, logging, signals, the run's deadline, exit codes and the kubelet's
//! termination message. Everything else lives in the library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use provider_images::auth::{Authenticator, Keychain};
use provider_images::cli::{Cli, Command, CommonArgs, ExtractArgs, LogFormat};
use provider_images::extract::{self, ExtractError, ExtractOptions};
use provider_images::images;
use provider_images::layers::Limits;
use provider_images::mirrors::{MirrorTable, RegistrySources};
use provider_images::plan::Planner;
use provider_images::registry::{Platform, RegistryClient};
use provider_images::transport::{Transport, TransportConfig, error_chain};
use provider_images::trust::Roots;

/// The kubelet reads at most this much of a termination message.
const TERMINATION_MESSAGE_LIMIT: usize = 4096;
const DEFAULT_TERMINATION_LOG: &str = "/dev/termination-log";

/// A failure with the exit code the design's table gives it.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Extract(args) = cli.command;
    init_logging(args.common.log_format);
    let termination_log = termination_log_path(args.termination_message_path.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(run_with_deadline(args));
    let (code, message) = match outcome {
        Ok(summary) => (0, summary),
        Err(failure) => {
            tracing::error!(error = %failure.message, code = failure.code, "extract failed");
            (failure.code, failure.message)
        }
    };
    if let Some(path) = termination_log {
        write_termination_message(&path, &message);
    }
    // Pending blocking work (an abandoned layer after a signal) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    ExitCode::from(code)
}

async fn run_with_deadline(args: ExtractArgs) -> Result<String, Failure> {
    let timeout = args.timeout;
    tokio::select! {
        biased;
        code = signal() => Err(Failure { code, message: format!("interrupted (exit {code}); nothing published") }),
        _ = tokio::time::sleep(timeout) => Err(Failure {
            code: 1,
            message: format!("timed out after {timeout:?} (--timeout); nothing published"),
        }),
        result = run(args) => result,
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

async fn run(args: ExtractArgs) -> Result<String, Failure> {
    let entries =
        images::read_images_json(&args.images_json).map_err(|e| Failure::usage(error_chain(&e)))?;
    let common = &args.common;
    if !common.no_cluster {
        return Err(Failure::usage(
            "reading mirrors, CAs and the pull secret from a cluster is not supported yet; pass --no-cluster",
        ));
    }
    let platform = match &common.platform {
        Some(text) => Platform::parse(text).ok_or_else(|| {
            Failure::usage(format!(
                "invalid --platform {text:?}: use OS/ARCH[/VARIANT]"
            ))
        })?,
        None => Platform::running(),
    };
    let (client, planner) = registry_client(common)?;
    let options = ExtractOptions {
        output: args.output.clone(),
        platform,
        concurrency: usize::from(args.concurrency),
        limits: Limits {
            max_file_size: args.max_file_size,
            max_image_size: args.max_image_size,
        },
        lock_timeout: Duration::from_secs(60),
    };
    match extract::extract(client, planner, entries, &options).await {
        Ok(summary) => {
            let message = format!(
                "published {} images ({} profiles) to {}",
                summary.images,
                summary.profiles,
                args.output.display()
            );
            tracing::info!(
                images = summary.images,
                profiles = summary.profiles,
                "{message}"
            );
            Ok(message)
        }
        Err(error) => {
            let code = match error {
                ExtractError::Images { .. } => 1,
                ExtractError::Publish { .. } | ExtractError::Index(_) => 4,
            };
            Err(Failure {
                code,
                message: error.report(),
            })
        }
    }
}

fn registry_client(common: &CommonArgs) -> Result<(Arc<RegistryClient>, Arc<Planner>), Failure> {
    let mut roots = Roots::default();
    for path in &common.ca_files {
        roots
            .add_file(path)
            .map_err(|e| Failure::usage(error_chain(&e)))?;
    }
    let keychain = match &common.pull_secret {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| {
                Failure::usage(format!("cannot read pull secret {}: {e}", path.display()))
            })?;
            Keychain::parse(&bytes, &path.display().to_string())
                .map_err(|e| Failure::usage(error_chain(&e)))?
        }
        None => Keychain::default(),
    };
    tracing::info!(
        extra_cas = roots.extra_count(),
        pull_secret_entries = keychain.len(),
        "configuration"
    );
    let transport = Transport::new(TransportConfig {
        roots,
        insecure_registries: common.insecure_registries.clone(),
        connect_timeout: Duration::from_secs(30),
        response_timeout: Duration::from_secs(60),
    })
    .map_err(|e| Failure::usage(error_chain(&e)))?;
    let keychain = Arc::new(keychain);
    let planner = Planner::new(
        MirrorTable::new(&[], &RegistrySources::default()),
        keychain.clone(),
    );
    let client = RegistryClient::new(Arc::new(transport), Arc::new(Authenticator::new(keychain)));
    Ok((Arc::new(client), Arc::new(planner)))
}

fn init_logging(format: Option<LogFormat>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        Some(format) => format == LogFormat::Json,
        None => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

fn termination_log_path(flag: Option<&Path>) -> Option<PathBuf> {
    match flag {
        Some(path) => Some(path.to_path_buf()),
        None => Path::new(DEFAULT_TERMINATION_LOG)
            .exists()
            .then(|| PathBuf::from(DEFAULT_TERMINATION_LOG)),
    }
}

/// Writes the message for the kubelet; failing to write it only warns.
fn write_termination_message(path: &Path, message: &str) {
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
