use clap::Parser;
use tracing_subscriber::EnvFilter;

use custlake::error::Classify;

fn main() -> std::process::ExitCode {
    match custlake::runtime(None) {
        Ok(rt) => rt.block_on(run()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::ExitCode::from(custlake::cli::exit_code(
                custlake::error::ErrorKind::Internal,
            ))
        }
    }
}

async fn run() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("CUSTLAKE_LOG").unwrap_or_else(|_| {
            // delta-rs warns about a missing merge metric on every MERGE.
            EnvFilter::new("warn,deltalake_core::operations::merge=error")
        }))
        .with_writer(std::io::stderr)
        .init();
    let cli = custlake::cli::Cli::parse();
    match custlake::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(custlake::cli::exit_code(e.kind()))
        }
    }
}
