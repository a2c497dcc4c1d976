//! The `wharf` server binary's library half: settings, the `serve` command, the benchmark
//! programs, and the child-process harness the benchmarks and integration tests share.

pub mod aws;
pub mod bench;
pub mod config;
pub mod connections;
pub mod observe;
pub mod process;
pub mod serve;
