//! The `wharf` command: `wharf serve` runs the server; `wharf bench …` measures it.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wharf::{bench, config, serve};

// See the workspace manifest for why the server does not use the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "wharf", version, about = "One small, fast, durable message server.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the `serve` variant (every flag) does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve(config::ServeArgs),
    /// Benchmark programs (load over real sockets or through the engine; see docs/BENCHMARKS.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Print a RabbitMQ-compatible SHA-256 hash of a password, for `password_hash` in
    /// `[[user]]` (reads the password from standard input when none is given).
    HashPassword { password: Option<String> },
}

fn hash_password(password: Option<String>) -> anyhow::Result<()> {
    let password = match password {
        Some(p) => p,
        None => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    println!("{}", wharf_amqp::hash_password(&password, rand::random()));
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind;
            if matches!(err.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || matches!(err.kind(), ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand)
            {
                let _ = err.print();
                return if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            // clap's rendering spans several lines (tips, usage); a bad flag deserves one.
            let rendered = err.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("wharf: {} (see 'wharf --help')", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let outcome = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Bench(command) => bench::run(command),
        Command::HashPassword { password } => hash_password(password),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` joins the context chain into one line: "cannot listen on …: Address in use".
            eprintln!("wharf: {err:#}");
            ExitCode::FAILURE
        }
    }
}
