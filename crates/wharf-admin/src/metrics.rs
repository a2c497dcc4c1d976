//! Prometheus text exposition format, version 0.0.4, written by hand: the format is small and
//! a metrics crate would add a registry we do not need (the engine already owns the numbers).

use std::fmt::Write;

use crate::{QueueSample, Snapshot};

/// A per-queue metric: name, type, help text, and how to read it from a sample.
type QueueMetric = (&'static str, &'static str, &'static str, fn(&QueueSample) -> u64);

/// Render a snapshot as Prometheus text.
pub fn render_metrics(snapshot: &Snapshot) -> String {
    let mut out = String::with_capacity(1024 + snapshot.queues.len() * 800);

    let queue_metrics: [QueueMetric; 10] = [
        ("wharf_queue_messages_ready", "gauge", "Messages ready for delivery.", |q| q.ready),
        ("wharf_queue_messages_in_flight", "gauge", "Messages delivered and not yet settled.", |q| {
            q.in_flight
        }),
        ("wharf_queue_messages_delayed", "gauge", "Messages waiting for their delay to end.", |q| q.delayed),
        ("wharf_queue_consumers", "gauge", "Push consumers attached to the queue.", |q| q.consumers),
        ("wharf_queue_messages_enqueued_total", "counter", "Messages accepted into the queue.", |q| {
            q.enqueued_total
        }),
        (
            "wharf_queue_messages_delivered_total",
            "counter",
            "Deliveries (dequeues), redeliveries included.",
            |q| q.delivered_total,
        ),
        (
            "wharf_queue_messages_acked_total",
            "counter",
            "Messages settled by their consumer (ack, delete).",
            |q| q.acked_total,
        ),
        ("wharf_queue_messages_expired_total", "counter", "Messages dropped by TTL or retention.", |q| {
            q.expired_total
        }),
        (
            "wharf_queue_messages_dead_lettered_total",
            "counter",
            "Messages moved to a dead-letter target.",
            |q| q.dead_lettered_total,
        ),
        ("wharf_queue_messages", "gauge", "Messages in the queue: ready + in flight + delayed.", |q| {
            q.ready + q.in_flight + q.delayed
        }),
    ];
    for (name, kind, help, value) in queue_metrics {
        header(&mut out, name, kind, help);
        for q in &snapshot.queues {
            let _ = writeln!(
                out,
                "{name}{{vhost=\"{}\",queue=\"{}\"}} {}",
                escape_label(&q.vhost),
                escape_label(&q.queue),
                value(q)
            );
        }
    }

    header(&mut out, "wharf_connections", "gauge", "Open client connections per protocol.");
    for (protocol, count) in &snapshot.connections {
        let _ = writeln!(out, "wharf_connections{{protocol=\"{protocol}\"}} {count}");
    }

    let store = &snapshot.store;
    let store_metrics: [(&str, &str, &str, String); 10] = [
        (
            "wharf_store_persistent",
            "gauge",
            "1 if messages are kept on disk, 0 in memory mode.",
            u8::from(store.persistent).to_string(),
        ),
        (
            "wharf_store_bytes_on_disk",
            "gauge",
            "Bytes of segment and ack files on disk.",
            store.bytes_on_disk.to_string(),
        ),
        (
            "wharf_store_fsyncs_total",
            "counter",
            "fdatasync calls made by the group-commit thread.",
            store.fsyncs_total.to_string(),
        ),
        (
            "wharf_store_sync_rounds_total",
            "counter",
            "Group-commit rounds; (records appended + settled) / rounds is the writes one round made durable.",
            store.sync_rounds_total.to_string(),
        ),
        (
            "wharf_store_fsync_seconds_total",
            "counter",
            "Time spent in fdatasync; divide by wharf_store_fsyncs_total for the mean latency.",
            format_float(store.fsync_seconds_total),
        ),
        (
            "wharf_store_fsync_seconds_max",
            "gauge",
            "Longest single fdatasync since start.",
            format_float(store.fsync_seconds_max),
        ),
        (
            "wharf_store_records_appended_total",
            "counter",
            "Records appended to queue logs.",
            store.records_appended_total.to_string(),
        ),
        (
            "wharf_store_records_settled_total",
            "counter",
            "Records settled (acked, expired, moved).",
            store.records_settled_total.to_string(),
        ),
        (
            "wharf_store_segments_deleted_total",
            "counter",
            "Segment files deleted once fully settled.",
            store.segments_deleted_total.to_string(),
        ),
        (
            "wharf_store_segments_reused_total",
            "counter",
            "Deleted segments whose file became the queue's next segment instead of being unlinked.",
            store.segments_reused_total.to_string(),
        ),
    ];
    for (name, kind, help, value) in store_metrics {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }

    header(&mut out, "wharf_uptime_seconds", "gauge", "Seconds since the server started.");
    let _ = writeln!(out, "wharf_uptime_seconds {}", format_float(snapshot.uptime_seconds));
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn format_float(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "NaN".to_owned()
    }
}

/// Label values escape backslash, double quote and newline (the exposition format's rules);
/// queue names come from clients, so this is not optional.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreSample;

    #[test]
    fn renders_queue_and_store_metrics() {
        let snapshot = Snapshot {
            queues: vec![QueueSample {
                vhost: "/".into(),
                queue: "we\"ird\\q\n".into(),
                ready: 3,
                in_flight: 2,
                delayed: 1,
                enqueued_total: 10,
                ..QueueSample::default()
            }],
            connections: vec![("amqp", 4)],
            store: StoreSample {
                persistent: true,
                fsyncs_total: 7,
                sync_rounds_total: 4,
                fsync_seconds_total: 0.5,
                ..StoreSample::default()
            },
            uptime_seconds: 1.5,
        };
        let text = render_metrics(&snapshot);
        assert!(
            text.contains("wharf_queue_messages_ready{vhost=\"/\",queue=\"we\\\"ird\\\\q\\n\"} 3"),
            "{text}"
        );
        assert!(text.contains("wharf_queue_messages{vhost=\"/\",queue=\"we\\\"ird\\\\q\\n\"} 6"));
        assert!(
            text.contains("wharf_queue_messages_enqueued_total{vhost=\"/\",queue=\"we\\\"ird\\\\q\\n\"} 10")
        );
        assert!(text.contains("wharf_connections{protocol=\"amqp\"} 4"));
        assert!(text.contains("wharf_store_fsyncs_total 7"));
        assert!(text.contains("wharf_store_sync_rounds_total 4"));
        assert!(text.contains("wharf_store_fsync_seconds_total 0.5"));
        assert!(text.contains("# TYPE wharf_store_fsyncs_total counter"));
        // Every sample line is `name{labels} value` or `name value`: no line is left half-written.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "bad sample line: {line}");
        }
    }
}
