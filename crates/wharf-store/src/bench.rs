//! Durable-append benchmark: many producer threads each appending and waiting for durability,
//! measured against the raw `write + fdatasync` rate of the same disk.

use std::fmt;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::file::{FileStore, FileStoreOptions};
use crate::{FsyncMode, Result, Store, StoreError};

/// What [`durable_appends`] measured.
#[derive(Clone, Debug, Default)]
pub struct AppendBenchReport {
    pub producers: usize,
    pub record_size: usize,
    /// Records appended and confirmed durable.
    pub records: u64,
    pub seconds: f64,
    pub records_per_sec: f64,
    /// `fdatasync`/`fsync` calls made by the store during the run.
    pub fsyncs: u64,
    pub fsyncs_per_sec: f64,
    /// Group-commit rounds (one round syncs every file written since the previous one).
    pub sync_rounds: u64,
    pub mean_records_per_fsync: f64,
    pub p50_latency: Duration,
    pub p99_latency: Duration,
    pub max_latency: Duration,
    /// One writer doing `write 1 KiB + fdatasync` in a loop on a scratch file in the same
    /// directory: the disk's sync rate without group commit.
    pub raw_fdatasync_per_sec: f64,
}

impl fmt::Display for AppendBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "durable appends (fsync = always, group commit)")?;
        writeln!(f, "  producers               {}", self.producers)?;
        writeln!(f, "  record size             {} B", self.record_size)?;
        writeln!(f, "  records                 {} in {:.2} s", self.records, self.seconds)?;
        writeln!(f, "  records/s               {:.0}", self.records_per_sec)?;
        writeln!(f, "  MB/s (payload)          {:.1}", self.records_per_sec * self.record_size as f64 / 1e6)?;
        writeln!(f, "  fsyncs                  {} ({:.0}/s)", self.fsyncs, self.fsyncs_per_sec)?;
        writeln!(f, "  sync rounds             {}", self.sync_rounds)?;
        writeln!(f, "  records per fsync       {:.1}", self.mean_records_per_fsync)?;
        writeln!(f, "  append->durable p50     {:.3} ms", self.p50_latency.as_secs_f64() * 1e3)?;
        writeln!(f, "  append->durable p99     {:.3} ms", self.p99_latency.as_secs_f64() * 1e3)?;
        writeln!(f, "  append->durable max     {:.3} ms", self.max_latency.as_secs_f64() * 1e3)?;
        write!(f, "  raw write+fdatasync/s   {:.0} (one writer, no batching)", self.raw_fdatasync_per_sec)
    }
}

/// Run `producers` OS threads for `duration`, each appending `record_size`-byte records to one
/// shared queue log under `FsyncMode::Always` and waiting (`wait_blocking`) for each to be
/// durable before the next. The store lives in a fresh subdirectory of `dir`, removed after.
pub fn durable_appends(
    dir: &Path,
    producers: usize,
    record_size: usize,
    duration: Duration,
) -> Result<AppendBenchReport> {
    let producers = producers.max(1);
    let record_size = record_size.max(1);
    let store_dir = dir.join(format!("wharf-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store_dir);
    let report = run_appends(&store_dir, producers, record_size, duration);
    let _ = std::fs::remove_dir_all(&store_dir);
    let mut report = report?;
    report.raw_fdatasync_per_sec = raw_fdatasync_rate(dir, Duration::from_secs(2))?;
    Ok(report)
}

fn run_appends(
    store_dir: &Path,
    producers: usize,
    record_size: usize,
    duration: Duration,
) -> Result<AppendBenchReport> {
    let options = FileStoreOptions { fsync: FsyncMode::Always, ..FileStoreOptions::default() };
    let store = FileStore::open(store_dir, options)?;
    let log = store.open_queue(1)?;
    log.recover(&mut |_, _| {})?;
    let before = store.stats();
    let rounds_before = store.sync_rounds();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let log = log.clone();
            let stop = stop.clone();
            std::thread::spawn(move || -> Result<Vec<u32>> {
                let payload = vec![(p % 251) as u8; record_size];
                let mut latencies_us = Vec::with_capacity(1 << 16);
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let (_, durable) = log.append(&payload)?;
                    durable.wait_blocking()?;
                    latencies_us.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                }
                Ok(latencies_us)
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut first_error = None;
    for t in threads {
        match t.join() {
            Ok(Ok(l)) => latencies.extend(l),
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(_) => first_error = first_error.or(Some(StoreError::SyncFailed("producer panicked".into()))),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    if let Some(e) = first_error {
        return Err(e);
    }
    let after = store.stats();
    let sync_rounds = store.sync_rounds() - rounds_before;
    drop(log);
    drop(store);

    latencies.sort_unstable();
    let pct = |p: f64| -> Duration {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((latencies.len() - 1) as f64 * p).round() as usize;
        Duration::from_micros(u64::from(latencies[i]))
    };
    let records = latencies.len() as u64;
    let fsyncs = after.fsyncs - before.fsyncs;
    Ok(AppendBenchReport {
        producers,
        record_size,
        records,
        seconds,
        records_per_sec: records as f64 / seconds,
        fsyncs,
        fsyncs_per_sec: fsyncs as f64 / seconds,
        sync_rounds,
        mean_records_per_fsync: if fsyncs == 0 { 0.0 } else { records as f64 / fsyncs as f64 },
        p50_latency: pct(0.50),
        p99_latency: pct(0.99),
        max_latency: latencies.last().map_or(Duration::ZERO, |&us| Duration::from_micros(u64::from(us))),
        raw_fdatasync_per_sec: 0.0,
    })
}

/// `write 1 KiB + fdatasync` in a loop on a scratch file in `dir` for about `duration`.
fn raw_fdatasync_rate(dir: &Path, duration: Duration) -> Result<f64> {
    let path = dir.join(format!("wharf-bench-fdatasync-{}.tmp", std::process::id()));
    let io = |e| StoreError::io(path.display(), e);
    let file =
        OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).map_err(io)?;
    let block = vec![0x5au8; 1024];
    let start = Instant::now();
    let mut n = 0u64;
    let result = (|| {
        while start.elapsed() < duration {
            file.write_all_at(&block, n * block.len() as u64)?;
            file.sync_data()?;
            n += 1;
        }
        Ok(())
    })();
    let seconds = start.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    result.map_err(io)?;
    Ok(n as f64 / seconds)
}

/// What [`recovery`] measured.
#[derive(Clone, Debug, Default)]
pub struct RecoveryBenchReport {
    pub records: u64,
    pub record_size: usize,
    pub bytes: u64,
    pub segments: u64,
    /// Time of `QueueLog::recover` on a warm page cache (the files were just written).
    pub seconds: f64,
    pub mb_per_sec: f64,
    /// Growth of the process's resident memory across open + recover: the log's bookkeeping
    /// (plus the scan buffer), since no record bodies are kept.
    pub rss_growth_bytes: u64,
}

impl fmt::Display for RecoveryBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "recovery (warm page cache)")?;
        writeln!(
            f,
            "  records                 {} x {} B in {} segments ({:.0} MiB)",
            self.records,
            self.record_size,
            self.segments,
            self.bytes as f64 / (1 << 20) as f64
        )?;
        writeln!(f, "  recover time            {:.3} s ({:.0} MB/s)", self.seconds, self.mb_per_sec)?;
        write!(f, "  memory growth           {:.1} MiB", self.rss_growth_bytes as f64 / (1 << 20) as f64)
    }
}

/// Write `records` records of `record_size` bytes to one queue (fsync = never, then one flush),
/// reopen the store, and time the recovery of that queue. The store lives in a fresh
/// subdirectory of `dir`, removed after.
pub fn recovery(dir: &Path, records: u64, record_size: usize) -> Result<RecoveryBenchReport> {
    let store_dir = dir.join(format!("wharf-recovery-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store_dir);
    let result = run_recovery(&store_dir, records, record_size.max(1));
    let _ = std::fs::remove_dir_all(&store_dir);
    result
}

fn run_recovery(store_dir: &Path, records: u64, record_size: usize) -> Result<RecoveryBenchReport> {
    let options = FileStoreOptions { fsync: FsyncMode::Never, ..FileStoreOptions::default() };
    {
        let store = FileStore::open(store_dir, options.clone())?;
        let log = store.open_queue(1)?;
        log.recover(&mut |_, _| {})?;
        let mut payload = vec![0u8; record_size];
        for i in 0..records {
            payload[..8.min(record_size)].copy_from_slice(&i.to_le_bytes()[..8.min(record_size)]);
            log.append(&payload)?;
        }
        store.flush()?;
    }
    let rss_before = resident_bytes();
    let start = Instant::now();
    let store = FileStore::open(store_dir, options)?;
    let log = store.open_queue(1)?;
    let mut visited = 0u64;
    let mut bytes = 0u64;
    let report = log.recover(&mut |_, payload| {
        visited += 1;
        bytes += payload.len() as u64;
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let rss_growth_bytes = resident_bytes().saturating_sub(rss_before);
    if visited != records || report.damage.is_some() {
        return Err(StoreError::Damaged(1, format!("recovered {visited} of {records}: {report:?}")));
    }
    let stats = log.stats();
    Ok(RecoveryBenchReport {
        records,
        record_size,
        bytes: stats.bytes_on_disk,
        segments: stats.segments,
        seconds,
        mb_per_sec: stats.bytes_on_disk as f64 / 1e6 / seconds,
        rss_growth_bytes,
    })
}

/// Resident set size from `/proc/self/statm` (0 where unavailable).
fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}
