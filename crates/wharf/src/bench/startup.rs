//! Start-up time, idle memory, and recovery with many queued messages, measured from outside
//! the real `wharf serve` process.

use std::time::{Duration, Instant};

use anyhow::Context;

use super::{RecoveryArgs, StartupArgs};
use crate::process::ServerProcess;

fn current_binary() -> anyhow::Result<std::path::PathBuf> {
    std::env::current_exe().context("cannot find the wharf binary")
}

pub fn run(args: StartupArgs) -> anyhow::Result<()> {
    let binary = current_binary()?;
    let mut times = Vec::with_capacity(args.runs);
    let mut rss = 0;
    for run in 0..args.runs.max(1) {
        let data = super::tempdir_in(std::path::Path::new("."))?;
        let data_dir = data.path().to_string_lossy().into_owned();
        let start = Instant::now();
        let server = ServerProcess::spawn(&binary, &["--data-dir", &data_dir])?;
        // Accepting connections is what a client sees; the admin port is bound last-but-recovery.
        server.wait_accepting(Duration::from_secs(10))?;
        server.wait_healthy(Duration::from_secs(10))?;
        times.push(start.elapsed());
        if run == 0 {
            // Let the runtime settle before reading idle memory.
            std::thread::sleep(Duration::from_secs(1));
            rss = server.rss_bytes()?;
        }
        server.terminate(Duration::from_secs(10))?;
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("wharf bench startup: {} cold starts of `wharf serve` (fresh data dir each)", times.len());
    println!(
        "  spawn -> healthy: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
    println!("  idle resident memory after 1 s: {:.1} MB", rss as f64 / 1e6);
    Ok(())
}

pub fn recovery(args: RecoveryArgs) -> anyhow::Result<()> {
    let binary = current_binary()?;
    let data = super::tempdir_in(&args.dir)?;
    let data_dir = data.path().to_string_lossy().into_owned();

    let load_started = Instant::now();
    super::load::preload(data.path(), "bench", args.messages, args.size)?;
    let load_time = load_started.elapsed();
    println!(
        "wharf bench recovery: queued {} messages of {} B durably in {:.1} s ({:.0} msg/s through the engine)",
        args.messages,
        args.size,
        load_time.as_secs_f64(),
        args.messages as f64 / load_time.as_secs_f64()
    );

    let start = Instant::now();
    let mut server = ServerProcess::spawn(&binary, &["--data-dir", &data_dir])?;
    server.wait_started(Duration::from_secs(120))?;
    let ready = start.elapsed();
    let ready_count = server.metric("wharf_queue_messages_ready{vhost=\"/\",queue=\"bench\"}")?;
    std::thread::sleep(Duration::from_secs(1));
    let rss = server.rss_bytes()?;
    let disk = server.metric("wharf_store_bytes_on_disk")?.unwrap_or(0.0);
    println!("  restart -> ready to serve: {:.2} s", ready.as_secs_f64());
    println!("  messages ready after restart: {}", ready_count.unwrap_or(0.0));
    println!(
        "  resident memory with them queued: {:.1} MB ({:.0} B per message); store on disk {:.0} MB",
        rss as f64 / 1e6,
        rss as f64 / args.messages.max(1) as f64,
        disk / 1e6
    );
    server.terminate(Duration::from_secs(30))?;
    Ok(())
}
