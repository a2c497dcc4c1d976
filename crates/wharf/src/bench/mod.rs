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
use clap::{Args, Subcommand, ValueEnum};

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

/// How the kernel schedules the load tool's own threads.
///
/// The network benches run on the machine they measure, sharing its cores with the server. With
/// the default policy a tool thread woken by an answer preempts whatever runs on its core — on a
/// 2-core machine usually the server thread that just sent that answer — so every call can cost
/// two extra context switches that neither side needs. (`wharf bench sqs`, unbatched: the server's
/// workers were preempted by the tool ~9,000 times a second; docs/BENCHMARKS.md.)
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ToolScheduling {
    /// `SCHED_BATCH`: the tool never preempts a running thread when it wakes; it runs when a core
    /// is free or at the next scheduler tick. It gets the same share of the CPU, and measures the
    /// peer the same way.
    #[default]
    Batch,
    /// The default policy (`SCHED_OTHER`), as an ordinary client process would run.
    Normal,
}

impl ToolScheduling {
    fn name(self) -> &'static str {
        match self {
            ToolScheduling::Batch => "SCHED_BATCH",
            ToolScheduling::Normal => "SCHED_OTHER",
        }
    }

    /// Put the calling thread under this policy.
    fn apply_to_this_thread(self) -> std::io::Result<()> {
        let policy = match self {
            ToolScheduling::Batch => libc::SCHED_BATCH,
            ToolScheduling::Normal => libc::SCHED_OTHER,
        };
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` lives across the call. Unprivileged
        // threads may move between SCHED_OTHER and SCHED_BATCH.
        if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The policy the kernel reports for the calling thread (what the report prints, so it shows
/// what was in force rather than what was asked for).
fn this_threads_policy() -> String {
    // SAFETY: pid 0 is the calling thread; the call only reads its policy.
    match unsafe { libc::sched_getscheduler(0) } {
        libc::SCHED_OTHER => "SCHED_OTHER".to_owned(),
        libc::SCHED_BATCH => "SCHED_BATCH".to_owned(),
        libc::SCHED_IDLE => "SCHED_IDLE".to_owned(),
        other => format!("scheduling policy {other}"),
    }
}

/// The load tool's runtime: one thread (tokio's current-thread runtime on the calling thread,
/// which keeps the tool off the server's cores as much as a load generator can be) or `threads`
/// workers, all under `scheduling`. Also returns how it runs, for the report's first line.
fn tool_runtime(
    threads: usize,
    scheduling: ToolScheduling,
) -> anyhow::Result<(tokio::runtime::Runtime, String)> {
    // Threads inherit their creator's policy, so the runtime's workers (and tokio's blocking
    // threads) get it from this one.
    scheduling
        .apply_to_this_thread()
        .with_context(|| format!("cannot put the tool under {}", scheduling.name()))?;
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = builder.enable_all().build().context("cannot start the tool's runtime")?;
    Ok((runtime, format!("{} tool thread(s) under {}", threads.max(1), this_threads_policy())))
}

fn tempdir_in(dir: &std::path::Path) -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("wharf-bench-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a scratch directory in {}", dir.display()))
}
