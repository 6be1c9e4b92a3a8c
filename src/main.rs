use clap::Parser;
use tracing_subscriber::EnvFilter;

use custlake::error::Classify;

/// mimalloc, not the system allocator: a lookup allocates and frees each
/// column's page buffers, and glibc's malloc spent about a quarter of the
/// server's CPU on them (splitting and consolidating free chunks). Built
/// with `no_thp`: transparent huge pages off for the process, or each arena
/// page touched costs 2 MB of resident memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let serves = matches!(
        cli.command,
        custlake::cli::Command::Serve(_) | custlake::cli::Command::Demo(_)
    );
    if !serves {
        quiet_on_closed_output();
    }
    match custlake::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if !serves && e.is_closed_output() => std::process::ExitCode::from(CLOSED_OUTPUT),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(custlake::cli::exit_code(e.kind()))
        }
    }
}

/// The exit code of a command whose reader went away (`custlake sql … |
/// head`): the shell's code for a process ended by SIGPIPE, as `cat` has.
const CLOSED_OUTPUT: u8 = 141;

/// A command printing to a pipe whose reader has gone ends quietly, with
/// the shell's code for it, instead of panicking in `println!` (commands
/// only: a server never exits for its terminal).
fn quiet_on_closed_output() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if text.contains("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(i32::from(CLOSED_OUTPUT));
        }
        default(info);
    }));
}
