//! Message move tasks (StartMessageMoveTask, CancelMessageMoveTask, ListMessageMoveTasks):
//! moving messages out of a dead-letter queue, back to its source queue or to a given queue.
//!
//! A task is a tokio task that moves batches of ready messages with the engine's
//! `Queue::move_to` (or, without a destination, `Queue::move_to_sources`: each message back to
//! the queue it was redriven from), at most MaxNumberOfMessagesPerSecond. A moved message keeps
//! its MessageId, sent time (so its retention clock) and attributes, and the engine settles the
//! original only once the copy is durable, so a crash can duplicate a message but never lose
//! one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use wharf_core::{Clock, Queue};

use crate::error::{ErrorCode, SqsError, SqsResult};

/// AWS's cap on MaxNumberOfMessagesPerSecond.
pub const MAX_MOVE_RATE: i64 = 500;
/// Finished tasks remembered per source queue (ListMessageMoveTasks shows up to 10).
pub const TASK_HISTORY: usize = 10;

pub struct MoveTask {
    pub handle: String,
    pub source_arn: String,
    pub destination_arn: Option<String>,
    pub rate: Option<i64>,
    pub to_move: u64,
    pub started_ms: u64,
    moved: AtomicU64,
    cancel: AtomicBool,
    status: Mutex<(&'static str, Option<String>)>,
}

impl MoveTask {
    pub fn new(
        source_arn: String,
        destination_arn: Option<String>,
        rate: Option<i64>,
        to_move: u64,
        now_ms: u64,
    ) -> Self {
        let id = uuid::Uuid::new_v4().to_string();
        let handle = base64::engine::general_purpose::STANDARD
            .encode(json!({"taskId": id, "sourceArn": source_arn}).to_string());
        MoveTask {
            handle,
            source_arn,
            destination_arn,
            rate,
            to_move,
            started_ms: now_ms,
            moved: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
            status: Mutex::new(("RUNNING", None)),
        }
    }

    pub fn status(&self) -> &'static str {
        self.status.lock().0
    }

    pub fn moved(&self) -> u64 {
        self.moved.load(Ordering::SeqCst)
    }

    /// Ask a running task to stop; false if it is not running.
    pub fn cancel(&self) -> bool {
        let mut st = self.status.lock();
        if st.0 != "RUNNING" {
            return false;
        }
        st.0 = "CANCELLING";
        self.cancel.store(true, Ordering::SeqCst);
        true
    }

    fn finish(&self, status: &'static str, reason: Option<String>) {
        *self.status.lock() = (status, reason);
    }

    pub fn to_json(&self) -> Value {
        let (status, reason) = self.status.lock().clone();
        let mut m = Map::new();
        if status == "RUNNING" {
            m.insert("TaskHandle".into(), Value::String(self.handle.clone()));
        }
        m.insert("Status".into(), Value::String(status.to_owned()));
        m.insert("SourceArn".into(), Value::String(self.source_arn.clone()));
        if let Some(d) = &self.destination_arn {
            m.insert("DestinationArn".into(), Value::String(d.clone()));
        }
        if let Some(r) = self.rate {
            m.insert("MaxNumberOfMessagesPerSecond".into(), json!(r));
        }
        m.insert("ApproximateNumberOfMessagesMoved".into(), json!(self.moved()));
        m.insert("ApproximateNumberOfMessagesToMove".into(), json!(self.to_move));
        if let Some(r) = reason {
            m.insert("FailureReason".into(), Value::String(r));
        }
        m.insert("StartedTimestamp".into(), json!(self.started_ms));
        Value::Object(m)
    }
}

/// Where a task's messages go.
pub enum Destination {
    /// The queue DestinationArn named.
    Queue(Arc<Queue>),
    /// Each message back to the queue it was redriven from; messages without a recorded source
    /// (sent straight to the DLQ) go to the fallback, the DLQ's only source queue if it has one.
    Sources { fallback: Option<Arc<Queue>> },
}

/// Run `task` to completion, cancellation or failure.
pub async fn run(task: Arc<MoveTask>, source: Arc<Queue>, destination: Destination, clock: Arc<dyn Clock>) {
    let result = move_all(&task, &source, &destination, clock).await;
    match result {
        Ok(()) if task.cancel.load(Ordering::SeqCst) => task.finish("CANCELLED", None),
        Ok(()) => task.finish("COMPLETED", None),
        Err(e) => task.finish("FAILED", Some(e.message)),
    }
}

async fn move_all(
    task: &MoveTask,
    source: &Queue,
    destination: &Destination,
    clock: Arc<dyn Clock>,
) -> SqsResult<()> {
    let started = clock.now_ms();
    loop {
        if task.cancel.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Keep to the rate: the next message may go once moved/rate seconds have passed.
        let batch = match task.rate {
            Some(rate) => {
                let rate = u64::try_from(rate).unwrap_or(1).max(1);
                let due_ms = task.moved() * 1000 / rate;
                let elapsed = clock.now_ms().saturating_sub(started);
                if due_ms > elapsed {
                    tokio::time::sleep(Duration::from_millis((due_ms - elapsed).min(1000))).await;
                    continue;
                }
                usize::try_from(rate.min(10)).unwrap_or(10)
            }
            None => 10,
        };
        let moved = match destination {
            Destination::Queue(q) => source.move_to(q, batch)?,
            Destination::Sources { fallback } => source.move_to_sources(fallback.as_deref(), batch)?,
        };
        if moved == 0 {
            return Ok(());
        }
        task.moved.fetch_add(moved as u64, Ordering::SeqCst);
        // A move is synchronous: give the runtime back between batches.
        tokio::task::yield_now().await;
    }
}

pub fn decode_handle(handle: &str) -> SqsResult<String> {
    let bad = || SqsError::new(ErrorCode::ResourceNotFound, "The specified task handle does not exist.");
    let bytes = base64::engine::general_purpose::STANDARD.decode(handle).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    v.get("sourceArn").and_then(Value::as_str).map(str::to_owned).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_name_their_source() {
        let t = MoveTask::new("arn:aws:sqs:us-east-1:000000000000:dlq".into(), None, None, 3, 1);
        assert_eq!(decode_handle(&t.handle).expect("ok"), "arn:aws:sqs:us-east-1:000000000000:dlq");
        assert!(decode_handle("garbage").is_err());
        assert!(t.cancel());
        assert!(!t.cancel());
        assert_eq!(t.to_json()["Status"], "CANCELLING");
    }
}
