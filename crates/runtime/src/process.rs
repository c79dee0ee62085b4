//! The body of every service binary: start telemetry, turn SIGTERM/SIGINT into a cancellation,
//! run the services, and exit with 0, 1 (failed while serving) or 64 (bad configuration).

use std::collections::HashMap;
use std::future::Future;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

/// A failure before serving (exit status 64) or while serving (1).
#[derive(Debug)]
pub enum Failure {
    Config(anyhow::Error),
    Serve(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Serve(e.into())
    }
}

/// Runs `body` on a multi-threaded runtime with telemetry named `name`. `env` is the process
/// environment, read once by the caller.
pub fn run<F, Fut>(name: &'static str, env: &HashMap<String, String>, body: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    crate::config::private_umask();
    crate::http::raise_open_file_limit();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let _telemetry = match crate::telemetry::init(
            name,
            env.get("OTEL_EXPORTER_OTLP_ENDPOINT").map(String::as_str),
        ) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("{name}: telemetry: {e:#}");
                return ExitCode::from(64);
            }
        };
        let shutdown = CancellationToken::new();
        crate::shutdown::cancel_on_signal(shutdown.clone());
        match body(shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(Failure::Config(e)) => {
                tracing::error!("configuration: {e:#}");
                ExitCode::from(64)
            }
            Err(Failure::Serve(e)) => {
                tracing::error!("{name} failed: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}
