//! Exchanges and bindings through the broker: kinds, exchange-to-exchange bindings,
//! alternate exchanges, unroutable messages, declare/delete rules.

use super::*;
use crate::{CoreError, Destination, ExchangeKind, ExchangeSettings, HeaderValue, Headers, PublishOptions};

fn setup(env: &Env, queues: &[&str]) {
    for q in queues {
        env.queue(q, QueueSettings::default());
    }
}

fn routed(env: &Env, exchange: &str, key: &str, headers: Headers) -> usize {
    let mut m = msg("m");
    m.headers = headers;
    env.vhost().publish(exchange, key, m, PublishOptions::default()).expect("publish").routed
}

fn depth(env: &Env, q: &str) -> u64 {
    env.vhost().queue(q).expect("queue").stats().ready
}

#[test]
fn default_exchange_routes_by_queue_name() {
    let env = env();
    setup(&env, &["a"]);
    assert_eq!(routed(&env, "", "a", Headers::new()), 1);
    assert_eq!(routed(&env, "", "missing", Headers::new()), 0);
    assert!(matches!(env.vhost().bind_queue("", "a", "x", Headers::new()), Err(CoreError::AccessRefused(_))));
}

#[test]
fn direct_fanout_topic_headers() {
    let env = env();
    let v = env.vhost();
    setup(&env, &["d", "f1", "f2", "t1", "t2", "h"]);
    v.bind_queue("amq.direct", "d", "key", Headers::new()).expect("bind");
    v.bind_queue("amq.fanout", "f1", "", Headers::new()).expect("bind");
    v.bind_queue("amq.fanout", "f2", "", Headers::new()).expect("bind");
    v.bind_queue("amq.topic", "t1", "stock.*.nyse", Headers::new()).expect("bind");
    v.bind_queue("amq.topic", "t2", "stock.#", Headers::new()).expect("bind");
    let args = Headers::from([
        ("x-match".to_string(), HeaderValue::String("all".into())),
        ("format".to_string(), HeaderValue::String("pdf".into())),
    ]);
    v.bind_queue("amq.headers", "h", "", args).expect("bind");

    assert_eq!(routed(&env, "amq.direct", "key", Headers::new()), 1);
    assert_eq!(routed(&env, "amq.direct", "other", Headers::new()), 0);
    assert_eq!(routed(&env, "amq.fanout", "whatever", Headers::new()), 2);
    assert_eq!(routed(&env, "amq.topic", "stock.ibm.nyse", Headers::new()), 2);
    assert_eq!(routed(&env, "amq.topic", "stock.ibm.lse", Headers::new()), 1);
    let pdf = Headers::from([("format".to_string(), HeaderValue::String("pdf".into()))]);
    assert_eq!(routed(&env, "amq.headers", "", pdf), 1);
    assert_eq!(routed(&env, "amq.headers", "", Headers::new()), 0);
    assert_eq!((depth(&env, "d"), depth(&env, "f1"), depth(&env, "t2"), depth(&env, "h")), (1, 1, 2, 1));
}

#[test]
fn exchange_to_exchange_bindings_and_cycles() {
    let env = env();
    let v = env.vhost();
    setup(&env, &["q"]);
    v.declare_exchange("upstream", ExchangeKind::Topic, ExchangeSettings::default()).expect("declare");
    v.declare_exchange("downstream", ExchangeKind::Fanout, ExchangeSettings::default()).expect("declare");
    v.bind_exchange("downstream", "upstream", "logs.#", Headers::new()).expect("e2e");
    // A cycle must not loop forever or deliver twice.
    v.bind_exchange("upstream", "downstream", "", Headers::new()).expect("e2e back");
    v.bind_queue("downstream", "q", "", Headers::new()).expect("bind");
    assert_eq!(routed(&env, "upstream", "logs.error", Headers::new()), 1);
    assert_eq!(routed(&env, "upstream", "metrics", Headers::new()), 0);
    assert_eq!(depth(&env, "q"), 1);
    assert!(v.unbind_exchange("downstream", "upstream", "logs.#", Headers::new()).expect("unbind"));
    assert_eq!(routed(&env, "upstream", "logs.error", Headers::new()), 0);
}

#[test]
fn alternate_exchange_takes_unroutable_messages() {
    let env = env();
    let v = env.vhost();
    setup(&env, &["main", "unrouted"]);
    v.declare_exchange("ae", ExchangeKind::Fanout, ExchangeSettings::default()).expect("ae");
    v.bind_queue("ae", "unrouted", "", Headers::new()).expect("bind");
    let settings = ExchangeSettings { alternate_exchange: Some("ae".into()), ..ExchangeSettings::default() };
    v.declare_exchange("ex", ExchangeKind::Direct, settings).expect("ex");
    v.bind_queue("ex", "main", "k", Headers::new()).expect("bind");
    assert_eq!(routed(&env, "ex", "k", Headers::new()), 1);
    assert_eq!(routed(&env, "ex", "nope", Headers::new()), 1);
    assert_eq!((depth(&env, "main"), depth(&env, "unrouted")), (1, 1));
}

#[test]
fn internal_exchanges_refuse_client_publishes() {
    let env = env();
    let v = env.vhost();
    v.declare_exchange(
        "inner",
        ExchangeKind::Fanout,
        ExchangeSettings { internal: true, ..ExchangeSettings::default() },
    )
    .expect("declare");
    assert!(matches!(
        v.publish("inner", "", msg("m"), PublishOptions::default()),
        Err(CoreError::AccessRefused(_))
    ));
    assert!(matches!(
        v.publish("ghost", "", msg("m"), PublishOptions::default()),
        Err(CoreError::NotFound { .. })
    ));
}

#[test]
fn declare_rules() {
    let env = env();
    let v = env.vhost();
    assert!(v.declare_exchange("ex", ExchangeKind::Direct, ExchangeSettings::default()).expect("declare"));
    assert!(!v.declare_exchange("ex", ExchangeKind::Direct, ExchangeSettings::default()).expect("redeclare"));
    let err =
        v.declare_exchange("ex", ExchangeKind::Topic, ExchangeSettings::default()).expect_err("mismatch");
    assert!(matches!(err, CoreError::PreconditionFailed { ref setting, .. } if setting == "type"));
    let err = v
        .declare_exchange(
            "ex",
            ExchangeKind::Direct,
            ExchangeSettings { durable: false, ..ExchangeSettings::default() },
        )
        .expect_err("mismatch");
    assert!(matches!(err, CoreError::PreconditionFailed { ref setting, .. } if setting == "durable"));
    assert!(matches!(
        v.declare_exchange("amq.custom", ExchangeKind::Direct, ExchangeSettings::default()),
        Err(CoreError::AccessRefused(_))
    ));
    assert!(!v
        .declare_exchange("amq.topic", ExchangeKind::Topic, ExchangeSettings::default())
        .expect("builtin"));
    assert!(matches!(v.exchange("nope"), Err(CoreError::NotFound { .. })));

    let (_, created) = v.declare_queue("q", QueueSettings::default()).expect("declare");
    assert!(created);
    let (_, created) = v.declare_queue("q", QueueSettings::default()).expect("redeclare");
    assert!(!created);
    let err = v
        .declare_queue("q", QueueSettings { message_ttl_ms: Some(1), ..QueueSettings::default() })
        .expect_err("mismatch");
    assert!(matches!(err, CoreError::PreconditionFailed { ref setting, .. } if setting == "message_ttl_ms"));
    let (generated, _) = v.declare_queue("", QueueSettings::default()).expect("server-named");
    assert!(generated.name().starts_with("amq.gen-"));

    let mine = QueueSettings { exclusive_owner: Some(1), ..QueueSettings::default() };
    v.declare_queue("excl", mine.clone()).expect("exclusive");
    let theirs = QueueSettings { exclusive_owner: Some(2), ..QueueSettings::default() };
    assert!(matches!(v.declare_queue("excl", theirs), Err(CoreError::ResourceLocked(_))));
    assert!(matches!(v.queue_for("excl", Some(2)), Err(CoreError::ResourceLocked(_))));
    assert!(v.queue_for("excl", Some(1)).is_ok());
    v.owner_closed(1);
    assert!(v.queue("excl").is_err());
}

#[test]
fn delete_rules() {
    let env = env();
    let v = env.vhost();
    setup(&env, &["q"]);
    v.declare_exchange("ex", ExchangeKind::Direct, ExchangeSettings::default()).expect("declare");
    v.bind_queue("ex", "q", "k", Headers::new()).expect("bind");
    assert!(matches!(v.delete_exchange("ex", true), Err(CoreError::PreconditionFailed { .. })));
    assert!(matches!(v.delete_exchange("amq.direct", false), Err(CoreError::AccessRefused(_))));
    send(&v.queue("q").expect("q"), "m");
    assert!(matches!(v.delete_queue("q", false, true), Err(CoreError::PreconditionFailed { .. })));
    let q = v.queue("q").expect("q");
    let c = q.consume(crate::ConsumerOptions::default()).expect("consume");
    assert!(matches!(v.delete_queue("q", true, false), Err(CoreError::PreconditionFailed { .. })));
    drop(c);
    assert_eq!(v.delete_queue("q", false, false).expect("delete"), 1);
    // Its bindings went with it.
    assert!(v.bindings().iter().all(|(_, b)| b.destination != Destination::Queue("q".into())));
    v.delete_exchange("ex", true).expect("unused now");
    assert!(matches!(v.delete_queue("q", false, false), Err(CoreError::NotFound { .. })));
}

#[test]
fn vhosts_are_isolated() {
    let env = env();
    let other = env.broker.create_vhost("other").expect("create");
    assert!(matches!(env.broker.create_vhost("other"), Err(CoreError::AlreadyExists { .. })));
    other.declare_queue("q", QueueSettings::default()).expect("declare");
    assert!(env.vhost().queue("q").is_err());
    assert!(other.exchange("amq.match").is_ok());
    assert_eq!(env.broker.vhosts(), ["/", "other"]);
    env.broker.delete_vhost("other").expect("delete");
    assert!(env.broker.vhost("other").is_err());
    assert!(matches!(env.broker.delete_vhost("/"), Err(CoreError::AccessRefused(_))));
}

#[test]
fn auto_delete_exchanges_go_with_their_last_binding() {
    let env = env();
    let v = env.vhost();
    setup(&env, &["a", "b"]);
    let auto = || ExchangeSettings { auto_delete: true, ..ExchangeSettings::default() };
    let exists = |name: &str| v.exchange(name).is_ok();

    // Never bound: stays (RabbitMQ deletes only when a binding goes).
    v.declare_exchange("lonely", ExchangeKind::Fanout, auto()).expect("declare");
    assert!(exists("lonely"));

    // Unbinding one of two bindings keeps it; the last unbind deletes it.
    v.declare_exchange("unbound", ExchangeKind::Fanout, auto()).expect("declare");
    v.bind_queue("unbound", "a", "", Headers::new()).expect("bind");
    v.bind_queue("unbound", "b", "", Headers::new()).expect("bind");
    assert!(v.unbind_queue("unbound", "a", "", Headers::new()).expect("unbind"));
    assert!(exists("unbound"));
    assert!(v.unbind_queue("unbound", "b", "", Headers::new()).expect("unbind"));
    assert!(!exists("unbound"));

    // Deleting the only bound queue deletes it, and that cascades: `upstream` (auto-delete)
    // was bound only to `middle`, which is gone now; `plain` is not auto-delete and stays.
    setup(&env, &["c"]);
    v.declare_exchange("middle", ExchangeKind::Fanout, auto()).expect("declare");
    v.declare_exchange("upstream", ExchangeKind::Fanout, auto()).expect("declare");
    v.declare_exchange("plain", ExchangeKind::Fanout, ExchangeSettings::default()).expect("declare");
    v.bind_queue("middle", "c", "", Headers::new()).expect("bind");
    v.bind_exchange("middle", "upstream", "", Headers::new()).expect("e2e");
    v.bind_exchange("middle", "plain", "", Headers::new()).expect("e2e");
    v.delete_queue("c", false, false).expect("delete");
    assert!(!exists("middle"));
    assert!(!exists("upstream"));
    assert!(exists("plain"));

    // Deleting a destination exchange removes the source's last binding too.
    v.declare_exchange("source", ExchangeKind::Fanout, auto()).expect("declare");
    v.declare_exchange("sink", ExchangeKind::Fanout, ExchangeSettings::default()).expect("declare");
    v.bind_exchange("sink", "source", "", Headers::new()).expect("e2e");
    v.delete_exchange("sink", false).expect("delete");
    assert!(!exists("source"));

    // The built-in exchanges are never auto-deleted.
    v.bind_queue("amq.fanout", "a", "", Headers::new()).expect("bind");
    v.unbind_queue("amq.fanout", "a", "", Headers::new()).expect("unbind");
    assert!(exists("amq.fanout"));
}
