//! `wharf serve`: open the store, recover, declare what the config asks for, start every
//! listener, print one start-up block, and on SIGINT/SIGTERM stop accepting, finish what is in
//! flight, flush and exit 0.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use wharf_admin::HealthStatus;
use wharf_core::Broker;
use wharf_store::file::{FileStore, FileStoreOptions};
use wharf_store::memory::MemoryStore;
use wharf_store::Store;

use crate::config::{ServeArgs, Settings, Storage};
use crate::connections::CountedListener;
use crate::observe::ServerState;

/// How long requests in flight get to finish at shutdown before long polls are cut short.
const IN_FLIGHT_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let settings = Settings::resolve(args)?;
    init_logging();
    // Two workers: this is a small server, and the store's sync thread is a third thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("wharf-worker")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(settings, started))
}

fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    // Warnings and errors by default: the start-up block already says what a person needs, and
    // a failed start should read as one line. `WHARF_LOG=info` (or any filter) shows more.
    let filter = EnvFilter::try_from_env("WHARF_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn open_store(storage: &Storage) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match storage {
        Storage::Memory => Arc::new(MemoryStore::new()),
        Storage::Disk { dir, fsync, group_commit_wait_percent } => {
            // Segments are prepared ahead, so a group commit never waits on a file's size change.
            let options = FileStoreOptions {
                fsync: *fsync,
                preallocate: true,
                group_commit_wait_percent: *group_commit_wait_percent,
                ..FileStoreOptions::default()
            };
            // The store's own error already names the directory ("… is locked by another wharf").
            FileStore::open(dir, options)?
        }
    })
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for {what}"))
}

async fn serve(settings: Settings, started: Instant) -> anyhow::Result<()> {
    // Signal handlers first: a SIGTERM that arrives during start-up must still mean "stop
    // cleanly", not the default action of dying on the spot.
    let stop_signal = shutdown_signal()?;
    let store = open_store(&settings.storage)?;

    // Bind every listener before the (possibly long) recovery, so an occupied port fails at
    // once and /health can answer "starting" while messages are recovered.
    let admin_listener = bind(settings.admin, "admin").await?;
    let admin_addr = admin_listener.local_addr()?;
    let http_listener = bind(settings.http, "SQS").await?;
    let http_addr = http_listener.local_addr()?;
    let amqp_listener = bind(settings.amqp, "AMQP").await?;
    let amqp_addr = amqp_listener.local_addr()?;

    let state = Arc::new(ServerState::new(store.clone(), started));
    let (stop_tx, stop_rx) = watch::channel(false);
    let admin_task =
        tokio::spawn(wharf_admin::serve(admin_listener, state.clone(), wait_for_stop(stop_rx.clone())));

    let recovery_started = Instant::now();
    let broker = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            let broker = crate::observe::open_broker(store);
            return_freed_memory();
            broker
        })
        .await
        .context("recovery task failed")??
    };
    let recovery = recovery_started.elapsed();
    crate::observe::declare_from_config(&broker, &settings)?;
    state.set_broker(broker.clone());
    let background = tokio::spawn(broker.clone().run());
    // Clients that connected during recovery waited in the listen backlog; served from now on.
    let sns = wharf_sns::Sns::start(broker.clone(), sns_config(&settings, http_addr))
        .map_err(|e| anyhow::anyhow!("SNS: {}", e.message))?;
    // SQS and SNS share the HTTP listener (crate::aws routes each request).
    let sqs_task = tokio::spawn(crate::aws::serve(
        CountedListener::new(http_listener, state.connections("sqs")),
        broker.clone(),
        settings.sqs.clone(),
        sns,
        wait_for_stop(stop_rx.clone()),
    ));

    let amqp_task = tokio::spawn(wharf_amqp::serve(
        CountedListener::new(amqp_listener, state.connections("amqp")),
        broker.clone(),
        settings.amqp_config.clone(),
        wait_for_stop(stop_rx.clone()),
    ));

    let listeners = Listeners { admin: admin_addr, http: http_addr, amqp: amqp_addr };
    // Ready before the block says so: whoever reads "ready in" may ask /health at once.
    state.set_status(HealthStatus::Ready);
    print_startup_block(&settings, store.as_ref(), &listeners, &broker, recovery, started);

    stop_signal.await;
    tracing::info!("shutting down: no new work accepted; finishing what is in flight");
    state.set_status(HealthStatus::Stopping);
    let _ = stop_tx.send(true);
    // Listeners stop accepting and finish the requests in flight before the engine stops.
    let listeners_done = async {
        for (name, task) in [("SQS", sqs_task), ("AMQP", amqp_task), ("admin", admin_task)] {
            if let Ok(Err(err)) = task.await {
                tracing::warn!("{name} listener: {err}");
            }
        }
    };
    tokio::pin!(listeners_done);
    if tokio::time::timeout(IN_FLIGHT_GRACE, &mut listeners_done).await.is_err() {
        // What is still open after the grace is long polls (up to 20 s): stopping the engine
        // answers them with no messages now instead of making a restart wait for them.
        broker.shutdown();
        listeners_done.await;
    }
    broker.shutdown();
    background.abort();
    store.flush().context("final flush of the store failed")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// SNS shares SQS's account, region and credentials; its links point at the HTTP listener
/// unless a public URL is configured; its signing key lives in the data directory.
fn sns_config(settings: &Settings, http: SocketAddr) -> wharf_sns::SnsConfig {
    let public_url = settings.sns_public_url.clone().unwrap_or_else(|| {
        let mut addr = http;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    });
    wharf_sns::SnsConfig {
        account_id: settings.sqs.account_id.clone(),
        region: settings.sqs.region.clone(),
        vhost: settings.sqs.vhost.clone(),
        credentials: settings.sqs.credentials.clone(),
        public_url,
        key_dir: match &settings.storage {
            Storage::Memory => None,
            Storage::Disk { dir, .. } => Some(dir.join("sns")),
        },
        smtp: settings.sns_smtp.clone(),
        https_ca_file: settings.sns_https_ca_file.clone(),
    }
}

async fn wait_for_stop(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Where each listener ended up (a port of 0 in the settings picks a free one).
struct Listeners {
    admin: SocketAddr,
    http: SocketAddr,
    amqp: SocketAddr,
}

/// Hand the memory recovery allocated and freed (segment read buffers, decoded records) back
/// to the OS. The server's allocator, mimalloc, keeps freed pages for reuse and returns them
/// only as later allocations pass by; a server that goes idle after start-up never would:
/// 359 MB resident after recovering a million 1 KiB messages, 100 MB with this (`wharf bench
/// recovery`). Recovery runs on this thread, whose heap holds those pages.
fn return_freed_memory() {
    // SAFETY: `mi_collect` only walks the allocator's own structures. When mimalloc is not the
    // global allocator (tests linking this crate) it finds nothing of ours to free.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

fn print_startup_block(
    settings: &Settings,
    store: &dyn Store,
    listeners: &Listeners,
    broker: &Broker,
    recovery: std::time::Duration,
    started: Instant,
) {
    let (queues, messages) = crate::observe::queue_totals(broker);
    let data = match &settings.storage {
        Storage::Memory => "none (in memory: nothing survives a restart)".to_owned(),
        Storage::Disk { dir, .. } => dir.display().to_string(),
    };
    let durability = match &settings.storage {
        Storage::Memory => "in memory".to_owned(),
        Storage::Disk { group_commit_wait_percent: 0, .. } => format!("fsync {}", store.fsync_mode()),
        Storage::Disk { group_commit_wait_percent: p, .. } => {
            format!("fsync {}; group commits wait {p}% of a sync for more writes", store.fsync_mode())
        }
    };
    let sqs_auth = match settings.sqs.credentials.len() {
        0 => "any credentials accepted".to_owned(),
        1 => "SigV4 required (1 access key)".to_owned(),
        n => format!("SigV4 required ({n} access keys)"),
    };
    let amqp_users = match settings.amqp_config.users.len() {
        _ if settings.amqp_config.users.is_guest_only() => "user guest from loopback only".to_owned(),
        1 => "1 user".to_owned(),
        n => format!("{n} users"),
    };
    let block = format!(
        "wharf {version}\n\
         \x20 data directory  {data}\n\
         \x20 durability      {durability}\n\
         \x20 sqs             http://{http}  (Amazon SQS: AWS JSON 1.0 and Query; account {account}; {sqs_auth})\n\
         \x20 sns             http://{http}  (Amazon SNS: Query, same listener; delivers to sqs, http{email})\n\
         \x20 amqp            amqp://{amqp}  (AMQP 0-9-1, RabbitMQ clients; {amqp_users})\n\
         \x20 admin           http://{admin}  (/health, /metrics)\n\
         \x20 recovered       {queues} queues, {messages} messages in {recovery_ms} ms\n\
         ready in {ready_ms} ms\n",
        version = env!("CARGO_PKG_VERSION"),
        http = listeners.http,
        account = settings.sqs.account_id,
        admin = listeners.admin,
        amqp = listeners.amqp,
        email = match &settings.sns_smtp {
            Some(smtp) => format!(", email via {}", smtp.relay),
            None => String::new(),
        },
        recovery_ms = recovery.as_millis(),
        ready_ms = started.elapsed().as_millis(),
    );
    // One write, so the block is never interleaved with log lines; flushed because tests and
    // supervisors read it through a pipe.
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(block.as_bytes());
    let _ = stdout.flush();
}
