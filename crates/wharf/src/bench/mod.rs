//! `wharf bench …`: benchmark and load programs. They measure over real sockets and real
//! processes (or through the engine API where no protocol front end exists yet), print what
//! they measured, and never assert timings: numbers go to docs/BENCHMARKS.md with the command.

pub mod amqp;
mod http;
pub mod load;
pub mod sns;
pub mod sqs;
mod startup;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Durable appends straight into the store from many producers, each waiting for its fsync;
    /// also measures this disk's raw fdatasync rate in the same run.
    Store(StoreArgs),
    /// Time from starting `wharf serve` to accepting connections, and idle resident memory.
    Startup(StartupArgs),
    /// Queue N messages durably through the engine, then restart `wharf serve` on them: resident
    /// memory with the messages queued, and time until it is ready to serve.
    Recovery(RecoveryArgs),
    /// Load generator used by the crash test: durable sends (and some acks) through the engine,
    /// printing one line per message once it is durable. Runs until killed or `--messages`.
    Load(load::LoadArgs),
    /// SQS JSON 1.0 over keep-alive HTTP/1.1: SendMessage -> ReceiveMessage -> DeleteMessage
    /// loops (or their batch forms) against wharf and a peer endpoint with the same settings.
    Sqs(sqs::SqsArgs),
    /// SNS Publish to a topic with SQS subscriptions (raw delivery), with and without a filter
    /// policy on every subscription, against wharf and a peer endpoint in the same run.
    Sns(sns::SnsArgs),
    /// AMQP 0-9-1 with pipelined raw frames: transient, durable-with-confirms and fan-out
    /// scenarios against wharf and a peer broker (RabbitMQ) in the same run.
    Amqp(amqp::AmqpArgs),
}

#[derive(Args, Debug)]
pub struct StoreArgs {
    /// Directory for the scratch store (on the disk you want to measure); removed afterwards.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 64)]
    pub producers: usize,
    /// Record size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

#[derive(Args, Debug)]
pub struct StartupArgs {
    /// How many cold starts to time.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// A peer broker to time the same way, as a shell command (run in its own process group,
    /// killed after each run), e.g. "rabbitmq-server".
    #[arg(long, requires = "peer_port")]
    pub peer_command: Option<String>,
    /// The TCP port on 127.0.0.1 that says the peer is accepting connections.
    #[arg(long)]
    pub peer_port: Option<u16>,
    /// Cold starts of the peer (it is usually much slower than wharf).
    #[arg(long, default_value_t = 3)]
    pub peer_runs: usize,
}

#[derive(Args, Debug)]
pub struct RecoveryArgs {
    /// Directory for the scratch data directory; removed afterwards.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Store(args) => {
            let scratch = tempdir_in(&args.dir)?;
            let report = wharf_store::bench::durable_appends(
                scratch.path(),
                args.producers,
                args.size,
                Duration::from_secs(args.seconds),
            )?;
            println!(
                "wharf bench store: {} producers, {} B records, {} s",
                args.producers, args.size, args.seconds
            );
            println!("{report}");
            Ok(())
        }
        BenchCommand::Startup(args) => startup::run(args),
        BenchCommand::Recovery(args) => startup::recovery(args),
        BenchCommand::Load(args) => load::run(args),
        BenchCommand::Sqs(args) => sqs::run(args),
        BenchCommand::Sns(args) => sns::run(args),
        BenchCommand::Amqp(args) => amqp::run(args),
    }
}

fn tempdir_in(dir: &std::path::Path) -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("wharf-bench-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a scratch directory in {}", dir.display()))
}
