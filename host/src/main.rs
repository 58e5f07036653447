//! `portcullis`: check a pipeline, run logins through it, serve it, and the jobs of a
//! migration. Each command is a module of `cli`; this file only starts one.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    use std::io::IsTerminal;
    // PORTCULLIS_LOG, else the usual RUST_LOG, else warnings and the few lines that
    // close one or say what a server did (a reload, a shutdown, an outbox endpoint
    // that works again); colour only where a person reads it (escape codes in a
    // redirected log are noise to grep through).
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| "warn,portcullis::server=info,portcullis::jobs::outbox=info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    // A reader that went away (`| head`) ends the command quietly, as it ends Unix
    // tools, instead of a panic from `println!`: exit 141, a shell's code for SIGPIPE.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        hook(info)
    }));
    // A usage error is clap's to report: exit 2, as for any other bad input.
    let cli = cli::Cli::try_parse().unwrap_or_else(|e| {
        // clap's message for a missing `--config` does not say the variable stands in.
        if e.kind() == clap::error::ErrorKind::MissingRequiredArgument && misses_config(&e) {
            let _ = e.print();
            eprintln!("hint: or set PORTCULLIS_CONFIG=FILE once for every command");
            std::process::exit(e.exit_code());
        }
        e.exit()
    });
    cli::exit::finish(cli.execute())
}

/// Whether `--config` is among the arguments a usage error says are missing (not
/// merely in the usage line it prints).
fn misses_config(e: &clap::Error) -> bool {
    use clap::error::{ContextKind, ContextValue};
    match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::Strings(missing)) => missing.iter().any(|a| a.starts_with("--config")),
        Some(ContextValue::String(missing)) => missing.starts_with("--config"),
        _ => false,
    }
}
