//! The binary: parse → logging → runtime → run → exit code. Everything else lives in the library.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use provider_images::cli::{Cli, Command};
use provider_images::run;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (common, termination_flag, deadline) = match &cli.command {
        Command::Extract(args) => (
            &args.common,
            args.termination_message_path.as_deref(),
            Some(args.timeout),
        ),
        Command::Resolve(args) => (&args.common, None, None),
    };
    run::init_logging(common.log_format);
    let termination_log = match cli.command {
        Command::Extract(_) => run::termination_log_path(termination_flag),
        Command::Resolve(_) => None,
    };
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
    let outcome = runtime.block_on(run::run_with_deadline(cli.command, deadline));
    let (code, message) = match outcome {
        Ok(summary) => (0, summary),
        Err(failure) => {
            tracing::error!(error = %failure.message, code = failure.code, "failed");
            (failure.code, failure.message)
        }
    };
    if let Some(path) = termination_log {
        run::write_termination_message(&path, &message);
    }
    // Pending blocking work (an abandoned layer after a signal) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    ExitCode::from(code)
}
