//! `cargo run --release -p wharf-store --example store_bench [seconds] [producers] [record bytes]`
//!
//! Durable appends with group commit (64 producers x 1 KiB for 10 s by default) in a temporary
//! directory under the current directory, compared with the disk's raw `write + fdatasync`
//! rate; then the recovery time of 1,000,000 x 1 KiB records (skip with `WHARF_BENCH_NO_RECOVERY=1`).

use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let seconds = arg(0, 10);
    let producers = arg(1, 64) as usize;
    let record_size = arg(2, 1024) as usize;

    let here = std::env::current_dir()?;
    let dir = tempfile::Builder::new().prefix("wharf-store-bench-").tempdir_in(&here)?;
    println!("bench directory: {}", dir.path().display());

    let report = wharf_store::bench::durable_appends(
        dir.path(),
        producers,
        record_size,
        Duration::from_secs(seconds),
    )?;
    println!("{report}");

    if std::env::var_os("WHARF_BENCH_NO_RECOVERY").is_none() {
        let report = wharf_store::bench::recovery(dir.path(), 1_000_000, 1024)?;
        println!("{report}");
    }
    Ok(())
}
