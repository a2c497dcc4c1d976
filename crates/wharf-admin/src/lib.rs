//! wharf's admin listener: `GET /health` and `GET /metrics` (Prometheus text format).
//!
//! This crate knows nothing of the engine's types: the binary hands it an [`Observe`]
//! implementation that takes a [`Snapshot`] on demand. That keeps the admin surface testable
//! alone and keeps the engine free of HTTP.

mod metrics;

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;

pub use metrics::render_metrics;

/// Where the admin listener reads the server's state from.
pub trait Observe: Send + Sync + 'static {
    fn health(&self) -> Health;
    fn snapshot(&self) -> Snapshot;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Recovering stored messages; not serving yet.
    Starting,
    /// Serving.
    Ready,
    /// Serving, but something needs an operator (a damaged queue was opened closed).
    Degraded,
    /// Shutting down.
    Stopping,
}

#[derive(Clone, Debug, Serialize)]
pub struct Health {
    pub status: HealthStatus,
    pub version: &'static str,
    pub uptime_seconds: f64,
    /// Queues opened closed because their stored log is damaged, with the reason.
    pub damaged_queues: Vec<DamagedQueue>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DamagedQueue {
    pub vhost: String,
    pub queue: String,
    pub reason: String,
}

/// One queue's numbers.
#[derive(Clone, Debug, Default)]
pub struct QueueSample {
    pub vhost: String,
    pub queue: String,
    pub ready: u64,
    pub in_flight: u64,
    pub delayed: u64,
    pub consumers: u64,
    pub enqueued_total: u64,
    pub delivered_total: u64,
    pub acked_total: u64,
    pub expired_total: u64,
    pub dead_lettered_total: u64,
}

/// The store's numbers.
#[derive(Clone, Debug, Default)]
pub struct StoreSample {
    pub persistent: bool,
    pub bytes_on_disk: u64,
    pub fsyncs_total: u64,
    pub sync_rounds_total: u64,
    pub fsync_seconds_total: f64,
    pub fsync_seconds_max: f64,
    pub records_appended_total: u64,
    pub records_settled_total: u64,
    pub segments_deleted_total: u64,
    pub segments_reused_total: u64,
}

/// Everything `/metrics` reports, taken at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub queues: Vec<QueueSample>,
    /// Open connections per protocol front end that is built and listening.
    pub connections: Vec<(&'static str, u64)>,
    pub store: StoreSample,
    pub uptime_seconds: f64,
}

/// Serve the admin API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn Observe>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(source)).with_graceful_shutdown(shutdown).await
}

pub fn router(source: Arc<dyn Observe>) -> Router {
    Router::new().route("/health", get(health)).route("/metrics", get(metrics_text)).with_state(source)
}

async fn health(State(source): State<Arc<dyn Observe>>) -> Response {
    let health = source.health();
    // Load balancers and orchestrators read the status code; people read the body.
    let code = match health.status {
        HealthStatus::Ready | HealthStatus::Degraded => StatusCode::OK,
        HealthStatus::Starting | HealthStatus::Stopping => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, Json(health)).into_response()
}

async fn metrics_text(State(source): State<Arc<dyn Observe>>) -> Response {
    let body = render_metrics(&source.snapshot());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}
