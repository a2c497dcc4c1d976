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
    println!("wharf bench startup: {} cold starts of `wharf serve` (fresh data dir each)", times.len());
    print_times("spawn -> healthy", &mut times);
    println!("  idle resident memory after 1 s: {:.1} MB", rss as f64 / 1e6);
    if let (Some(command), Some(port)) = (&args.peer_command, args.peer_port) {
        let mut peer_times = Vec::new();
        let mut peer_rss = 0;
        for run in 0..args.peer_runs.max(1) {
            let (elapsed, rss) = time_peer(command, port, run == 0)?;
            peer_times.push(elapsed);
            peer_rss = peer_rss.max(rss);
        }
        println!("peer: {} cold starts of `{command}`", peer_times.len());
        print_times("spawn -> accepting on its port", &mut peer_times);
        println!("  idle resident memory after 1 s (whole process group): {:.1} MB", peer_rss as f64 / 1e6);
        let median = |t: &[Duration]| t[t.len() / 2].as_secs_f64();
        println!(
            "ratio: the peer takes {:.0}x as long to start as wharf",
            median(&peer_times) / median(&times)
        );
    }
    Ok(())
}

fn print_times(what: &str, times: &mut [Duration]) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "  {what}: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
}

/// Start the peer in its own process group, time it until `port` accepts, optionally read the
/// group's memory after a second, then kill the whole group.
fn time_peer(command: &str, port: u16, measure_rss: bool) -> anyhow::Result<(Duration, u64)> {
    use std::os::unix::process::CommandExt;
    let start = Instant::now();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start peer `{command}`"))?;
    let group = child.id();
    let outcome = (|| {
        let deadline = start + Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                anyhow::bail!("peer did not accept on port {port} within 120 s");
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("peer exited ({status}) before accepting on port {port}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let elapsed = start.elapsed();
        let mut rss = 0;
        if measure_rss {
            std::thread::sleep(Duration::from_secs(1));
            rss = group_rss(group)?;
        }
        Ok((elapsed, rss))
    })();
    let group_pid = -(libc::pid_t::try_from(group).context("pid out of range")?);
    let _ = crate::process::signal_pid(group_pid, libc::SIGKILL);
    let _ = child.wait();
    // Let the peer's port and files go before the next run.
    std::thread::sleep(Duration::from_secs(1));
    outcome
}

/// Sum of VmRSS over every process in process group `group`.
fn group_rss(group: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc")? {
        let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // Fields after the parenthesised command name: state ppid pgrp ...
        let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let pgrp = after_name.split_whitespace().nth(2).and_then(|f| f.parse::<u32>().ok());
        if pgrp == Some(group) {
            total += crate::process::rss_of(pid).unwrap_or(0);
        }
    }
    Ok(total)
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
