//! `dvnet`: parses the command line, runs it, prints the error chain.
use std::process::ExitCode;

use clap::Parser as _;
use dvnet::cli::{Cli, EXIT_INVALID_INPUT, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default = match cli.verbose {
        0 => "warn",
        1 => "info,dvnet=debug",
        _ => "debug,dvnet=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A cause already quoted by the message above it is not repeated.
            let mut shown = err.to_string();
            eprint!("error: {shown}");
            let mut cause = std::error::Error::source(&err);
            while let Some(c) = cause {
                let text = c.to_string();
                if !shown.contains(&text) {
                    eprint!("\n  caused by: {text}");
                }
                shown = text;
                cause = c.source();
            }
            eprintln!();
            if err.is_invalid_input() {
                ExitCode::from(EXIT_INVALID_INPUT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
