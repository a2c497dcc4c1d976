//! Test-only server: the SQS router over an in-memory broker, for running the Python suite
//! against this crate before `wharf serve --http` exists.
//!
//! `cargo run -p wharf-sqs --example sqs_only -- 127.0.0.1:9324`; prints "ready in N ms" once
//! listening, like `wharf serve`. SIGINT stops it cleanly; SIGTERM just ends it (nothing is
//! on disk to protect).

use std::sync::Arc;
use std::time::Instant;

use wharf_core::{Broker, BrokerConfig, SystemClock};
use wharf_sqs::SqsConfig;
use wharf_store::memory::MemoryStore;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let started = Instant::now();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9324".to_owned());
    let broker = Broker::open(Arc::new(MemoryStore::new()), Arc::new(SystemClock), BrokerConfig::default())
        .map_err(std::io::Error::other)?;
    tokio::spawn(broker.clone().run());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("sqs        http://{}", listener.local_addr()?);
    println!("ready in {} ms", started.elapsed().as_millis());
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let b = broker.clone();
    wharf_sqs::serve(listener, broker, SqsConfig::default(), async move {
        stop.await;
        b.shutdown();
    })
    .await
}
