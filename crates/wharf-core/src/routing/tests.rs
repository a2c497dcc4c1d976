use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::message::AttributeValue;

fn q(name: &str) -> Destination {
    Destination::Queue(name.to_owned())
}

fn binding(dest: &str, key: &str) -> Binding {
    Binding { destination: q(dest), routing_key: key.to_owned(), arguments: Headers::new() }
}

fn with_args(dest: &str, key: &str, args: &[(&str, HeaderValue)]) -> Binding {
    Binding {
        destination: q(dest),
        routing_key: key.to_owned(),
        arguments: args.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
    }
}

fn headers(pairs: &[(&str, HeaderValue)]) -> Headers {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn s(text: &str) -> HeaderValue {
    HeaderValue::String(text.to_owned())
}

fn router(kind: ExchangeKind) -> Router {
    Router::new(kind, &Headers::new()).unwrap()
}

fn route(r: &Router, key: &str) -> Vec<Destination> {
    route_h(r, key, &Headers::new())
}

fn route_h(r: &Router, key: &str, h: &Headers) -> Vec<Destination> {
    let mut out = Vec::new();
    r.route(key, h, &mut out);
    out
}

fn names(out: &[Destination]) -> BTreeSet<String> {
    out.iter()
        .map(|d| match d {
            Destination::Queue(n) => n.clone(),
            Destination::Exchange(n) => format!("exchange:{n}"),
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn router_is_clone_debug_send_sync() {
    fn assert_traits<T: Clone + std::fmt::Debug + Send + Sync + 'static>() {}
    assert_traits::<Router>();
}

#[test]
fn kind_names_round_trip() {
    for kind in ExchangeKind::ALL {
        assert_eq!(kind.as_str().parse::<ExchangeKind>(), Ok(kind));
        assert_eq!(kind.to_string(), kind.as_str());
    }
    assert_eq!("x-consistent-hash".parse(), Ok(ExchangeKind::ConsistentHash));
    assert_eq!("x-delayed".parse::<ExchangeKind>(), Err(RoutingError::UnknownKind("x-delayed".into())));
    assert!("Direct".parse::<ExchangeKind>().is_err());
}

#[test]
fn bind_is_idempotent_and_unbind_matches_arguments() {
    let mut r = router(ExchangeKind::Direct);
    assert_eq!(r.bind(binding("a", "k")), Ok(true));
    assert_eq!(r.bind(binding("a", "k")), Ok(false));
    let tagged = with_args("a", "k", &[("tag", s("x"))]);
    assert_eq!(r.bind(tagged.clone()), Ok(true));
    assert_eq!(r.len(), 2);
    assert_eq!(route(&r, "k"), vec![q("a")], "two bindings, one destination");

    assert!(!r.unbind(&with_args("a", "k", &[("tag", s("y"))])));
    assert!(r.unbind(&tagged));
    assert!(!r.unbind(&tagged));
    assert_eq!(route(&r, "k"), vec![q("a")], "the untagged binding still routes");
    assert!(r.unbind(&binding("a", "k")));
    assert!(route(&r, "k").is_empty());
    assert!(r.is_empty());
}

#[test]
fn nan_arguments_are_still_unbindable() {
    let mut r = router(ExchangeKind::Fanout);
    let b = with_args("a", "", &[("f", HeaderValue::F64(f64::NAN))]);
    assert_eq!(r.bind(b.clone()), Ok(true));
    assert_eq!(r.bind(b.clone()), Ok(false));
    assert!(r.unbind(&b));
    assert!(r.is_empty());
}

#[test]
fn remove_destination_drops_every_binding_to_it() {
    for kind in [ExchangeKind::Direct, ExchangeKind::Fanout, ExchangeKind::Topic] {
        let mut r = router(kind);
        for key in ["a", "b", "a.b", "#"] {
            r.bind(binding("gone", key)).unwrap();
            r.bind(binding("kept", key)).unwrap();
        }
        r.bind(Binding {
            destination: Destination::Exchange("gone".into()),
            routing_key: "a".into(),
            arguments: Headers::new(),
        })
        .unwrap();
        assert_eq!(r.remove_destination(&q("gone")), 4, "{kind}");
        assert_eq!(r.remove_destination(&q("gone")), 0);
        assert_eq!(r.len(), 5);
        assert!(r.bindings().all(|b| b.destination != q("gone")));
        let out = route(&r, "a");
        assert!(out.contains(&q("kept")), "{kind}");
        assert!(!out.contains(&q("gone")), "{kind}");
    }
}

#[test]
fn route_skips_destinations_already_in_out() {
    let mut r = router(ExchangeKind::Fanout);
    r.bind(binding("a", "")).unwrap();
    r.bind(binding("b", "")).unwrap();
    let mut out = vec![q("b"), Destination::Exchange("a".into())];
    r.route("", &Headers::new(), &mut out);
    assert_eq!(out, vec![q("b"), Destination::Exchange("a".into()), q("a")]);

    // The same with enough destinations to take the hash-set path.
    let mut r = router(ExchangeKind::Fanout);
    for i in 0..100 {
        r.bind(binding(&format!("q{i}"), "")).unwrap();
    }
    let mut out: Vec<Destination> = (0..100).step_by(2).map(|i| q(&format!("q{i}"))).collect();
    r.route("", &Headers::new(), &mut out);
    assert_eq!(out.len(), 100);
    assert_eq!(names(&out).len(), 100);
    assert_eq!(&out[..2], &[q("q0"), q("q2")], "what was there stays first");
}

#[test]
fn direct_matches_whole_key_only() {
    let mut r = router(ExchangeKind::Direct);
    r.bind(binding("a", "orders")).unwrap();
    r.bind(binding("b", "orders")).unwrap();
    r.bind(binding("c", "orders.eu")).unwrap();
    r.bind(binding("empty", "")).unwrap();
    assert_eq!(names(&route(&r, "orders")), set(&["a", "b"]));
    assert_eq!(names(&route(&r, "orders.eu")), set(&["c"]));
    assert_eq!(names(&route(&r, "")), set(&["empty"]));
    assert!(route(&r, "order").is_empty());
    assert!(route(&r, "#").is_empty(), "no wildcards in direct");
}

#[test]
fn fanout_ignores_the_key() {
    let mut r = router(ExchangeKind::Fanout);
    r.bind(binding("a", "x")).unwrap();
    r.bind(binding("a", "y")).unwrap();
    r.bind(binding("b", "")).unwrap();
    for key in ["", "x", "anything"] {
        let out = route(&r, key);
        assert_eq!(out.len(), 2);
        assert_eq!(names(&out), set(&["a", "b"]));
    }
}

/// Patterns whose words hold `#`, `*` or nothing, against keys, with RabbitMQ's answers.
const TOPIC_CASES: &[(&str, &str, bool)] = &[
    ("#", "", true),
    ("#", "a", true),
    ("#", "a.b.c", true),
    ("#", ".", true),
    ("", "", true),
    ("", "a", false),
    ("*", "", false),
    ("*", "a", true),
    ("*", "a.b", false),
    ("*", ".", false),
    ("*.*", ".", true),
    ("#.#", "", true),
    ("#.#", "a", true),
    ("#.#", "a.b.c", true),
    ("#.#.#", "a.b", true),
    ("a.#.b", "a.b", true),
    ("a.#.b", "a.x.b", true),
    ("a.#.b", "a.x.y.b", true),
    ("a.#.b", "a", false),
    ("a.#.b", "a.b.c", false),
    ("a.#.b", "b.a.b", false),
    ("#.a", "a", true),
    ("#.a", "x.a", true),
    ("#.a", "x.y.a", true),
    ("#.a", "a.x", false),
    ("#.a", "", false),
    ("*.#", "", false),
    ("*.#", "a", true),
    ("*.#", "a.b.c", true),
    ("#.*", "", false),
    ("#.*", "a.b", true),
    ("a.*.#", "a", false),
    ("a.*.#", "a.b", true),
    ("a.*.#", "a.b.c.d", true),
    ("a.*.#", "b.c", false),
    ("a.#", "a", true),
    ("a.#", "a.b.c", true),
    ("a.#", "ab", false),
    ("a..b", "a..b", true),
    ("a..b", "a.b", false),
    ("a.*.b", "a..b", true),
    ("a.", "a.", true),
    ("a.*", "a.", true),
    ("a.*", "a", false),
    (".", ".", true),
    (".", "", false),
    ("#.a.#", "a", true),
    ("#.a.#", "x.a.y", true),
    ("#.a.#", "x.y", false),
    ("#.a.#.a.#", "a.a", true),
    ("#.a.#.a.#", "a.b", false),
    ("*.*.#.*", "a.b", false),
    ("*.*.#.*", "a.b.c", true),
    ("a.b", "a.*", false),
    ("a.b", "a.#", false),
];

#[test]
fn topic_wildcards_match_as_rabbitmq() {
    for &(pattern, key, expected) in TOPIC_CASES {
        let mut r = router(ExchangeKind::Topic);
        r.bind(binding("q", pattern)).unwrap();
        assert_eq!(!route(&r, key).is_empty(), expected, "pattern {pattern:?} key {key:?}");
        assert_eq!(reference_matches(pattern, key), expected, "reference: {pattern:?} {key:?}");
    }
}

#[test]
fn topic_all_cases_in_one_trie() {
    let mut r = router(ExchangeKind::Topic);
    let patterns: BTreeSet<&str> = TOPIC_CASES.iter().map(|c| c.0).collect();
    for (i, p) in patterns.iter().enumerate() {
        r.bind(binding(&format!("q{i}"), p)).unwrap();
    }
    let keys: BTreeSet<&str> = TOPIC_CASES.iter().map(|c| c.1).collect();
    for key in keys {
        let expected: BTreeSet<String> = patterns
            .iter()
            .enumerate()
            .filter(|(_, p)| reference_matches(p, key))
            .map(|(i, _)| format!("q{i}"))
            .collect();
        assert_eq!(names(&route(&r, key)), expected, "key {key:?}");
    }
}

#[test]
fn topic_lists_each_destination_once() {
    let mut r = router(ExchangeKind::Topic);
    for p in ["#", "a.#", "*.b", "a.b", "#.#", "a.#.b", "#.b"] {
        r.bind(binding("q", p)).unwrap();
    }
    r.bind(binding("other", "a.*")).unwrap();
    let out = route(&r, "a.b");
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(names(&out), set(&["q", "other"]));
}

#[test]
fn topic_unbind_prunes_the_trie() {
    let mut r = router(ExchangeKind::Topic);
    let patterns = ["a.b.c", "a.*.c", "a.#", "#.#.c", "#", "", "a..b", "x.y.z.w"];
    for p in patterns {
        r.bind(binding("q", p)).unwrap();
        r.bind(with_args("q", p, &[("n", HeaderValue::I32(1))])).unwrap();
    }
    // "#.#.c" and "#.c" share a node once runs of '#' collapse; both bind and unbind cleanly.
    r.bind(binding("q", "#.c")).unwrap();
    assert!(r.unbind(&binding("q", "#.c")));
    assert_eq!(names(&route(&r, "x.c")), set(&["q"]));
    for p in patterns {
        assert!(r.unbind(&binding("q", p)));
        assert!(r.unbind(&with_args("q", p, &[("n", HeaderValue::I32(1))])));
    }
    assert!(r.is_empty());
    let Index::Topic(trie) = &r.index else { panic!("topic router has a trie") };
    assert_eq!(trie.live_nodes(), 1, "only the root is left");
    assert!(route(&r, "a.b.c").is_empty());
}

#[test]
fn topic_with_ten_thousand_bindings() {
    let mut r = router(ExchangeKind::Topic);
    for i in 0..10_000 {
        let pattern = match i % 4 {
            0 => format!("stock.{i}.nyse"),
            1 => format!("stock.*.q{i}"),
            2 => format!("region{i}.#"),
            _ => format!("#.tail{i}"),
        };
        r.bind(binding(&format!("q{i}"), &pattern)).unwrap();
    }
    r.bind(binding("all", "#")).unwrap();
    assert_eq!(r.len(), 10_001);

    assert_eq!(names(&route(&r, "stock.40.nyse")), set(&["q40", "all"]));
    assert_eq!(names(&route(&r, "stock.anything.q41")), set(&["q41", "all"]));
    assert_eq!(names(&route(&r, "region42")), set(&["q42", "all"]));
    assert_eq!(names(&route(&r, "region42.a.b.c")), set(&["q42", "all"]));
    assert_eq!(names(&route(&r, "x.y.tail43")), set(&["q43", "all"]));
    assert_eq!(names(&route(&r, "stock.1.q5.tail7")), set(&["q7", "all"]));
    assert_eq!(names(&route(&r, "nothing.here")), set(&["all"]));

    // A long key through thousands of '#' patterns stays linear in what can match.
    let long_key = vec!["w"; 200].join(".");
    assert_eq!(names(&route(&r, &long_key)), set(&["all"]));
}

#[test]
fn topic_survives_adversarial_hash_patterns() {
    let mut r = router(ExchangeKind::Topic);
    r.bind(binding("q", "#.a.#.a.#.a.#.a.#.b")).unwrap();
    let key = vec!["a"; 300].join(".");
    assert!(route(&r, &key).is_empty());
    assert_eq!(route(&r, &format!("{key}.b")), vec![q("q")]);
}

#[test]
fn topic_deep_patterns_need_no_recursion() {
    let mut r = router(ExchangeKind::Topic);
    let deep = vec!["w"; 100_000].join(".");
    r.bind(binding("q", &deep)).unwrap();
    assert_eq!(route(&r, &deep), vec![q("q")]);
    let copy = r.clone();
    assert!(r.unbind(&binding("q", &deep)));
    drop(copy);
}

/// The definition, written as directly as possible.
fn reference_matches(pattern: &str, key: &str) -> bool {
    fn words(s: &str) -> Vec<&str> {
        if s.is_empty() {
            Vec::new()
        } else {
            s.split('.').collect()
        }
    }
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|skip| go(rest, &k[skip..])),
            Some((&"*", rest)) => !k.is_empty() && go(rest, &k[1..]),
            Some((word, rest)) => k.first() == Some(word) && go(rest, &k[1..]),
        }
    }
    go(&words(pattern), &words(key))
}

fn topic_string(words: Vec<&'static str>) -> String {
    words.join(".")
}

fn pattern_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "", "*", "#"]), 0..6).prop_map(topic_string)
}

fn key_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "", "c"]), 0..7).prop_map(topic_string)
}

proptest! {
    #[test]
    fn topic_trie_agrees_with_reference(
        patterns in prop::collection::vec(pattern_strategy(), 1..12),
        keys in prop::collection::vec(key_strategy(), 1..12),
        drop_mask in any::<u16>(),
    ) {
        let mut r = router(ExchangeKind::Topic);
        for (i, p) in patterns.iter().enumerate() {
            // Few destinations, so several patterns share one and dedup is exercised.
            r.bind(binding(&format!("q{}", i % 4), p)).unwrap();
        }
        let check = |r: &Router, live: &[(usize, &String)]| -> Result<(), TestCaseError> {
            for key in &keys {
                let expected: BTreeSet<String> = live
                    .iter()
                    .filter(|(_, p)| reference_matches(p, key))
                    .map(|(i, _)| format!("q{}", i % 4))
                    .collect();
                let out = route(r, key);
                prop_assert_eq!(names(&out).len(), out.len(), "duplicates for {:?}", key);
                prop_assert_eq!(names(&out), expected, "key {:?} patterns {:?}", key, live);
            }
            Ok(())
        };
        let all: Vec<(usize, &String)> = patterns.iter().enumerate().collect();
        check(&r, &all)?;

        // Unbinding some must leave exactly the others matching (and prune correctly).
        let mut live = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            if drop_mask & (1 << i) != 0 {
                r.unbind(&binding(&format!("q{}", i % 4), p));
            } else {
                live.push((i, p));
            }
        }
        // Identical (destination, pattern) pairs were one binding; if any copy was dropped
        // the binding is gone.
        let dropped: BTreeSet<(usize, &String)> = patterns
            .iter()
            .enumerate()
            .filter(|(i, _)| drop_mask & (1 << i) != 0)
            .map(|(i, p)| (i % 4, p))
            .collect();
        live.retain(|(i, p)| !dropped.contains(&(i % 4, *p)));
        check(&r, &live)?;
    }
}

#[test]
fn headers_all_and_any() {
    let mut r = router(ExchangeKind::Headers);
    r.bind(with_args("all", "", &[("format", s("pdf")), ("type", s("report"))])).unwrap();
    r.bind(with_args("any", "", &[("x-match", s("any")), ("format", s("pdf")), ("type", s("report"))]))
        .unwrap();
    r.bind(with_args("explicit-all", "", &[("x-match", s("all")), ("format", s("pdf"))])).unwrap();

    let both = headers(&[("format", s("pdf")), ("type", s("report")), ("extra", s("1"))]);
    assert_eq!(names(&route_h(&r, "ignored", &both)), set(&["all", "any", "explicit-all"]));
    let one = headers(&[("format", s("pdf")), ("type", s("log"))]);
    assert_eq!(names(&route_h(&r, "", &one)), set(&["any", "explicit-all"]));
    let none = headers(&[("format", s("zip"))]);
    assert!(route_h(&r, "", &none).is_empty());
    assert!(route_h(&r, "", &Headers::new()).is_empty());
}

#[test]
fn headers_without_conditions() {
    let mut r = router(ExchangeKind::Headers);
    r.bind(with_args("all", "", &[])).unwrap();
    r.bind(with_args("any", "", &[("x-match", s("any"))])).unwrap();
    r.bind(with_args("any-x-only", "", &[("x-match", s("any")), ("x-tag", s("a"))])).unwrap();
    let h = headers(&[("x-tag", s("a"))]);
    assert_eq!(names(&route_h(&r, "", &h)), set(&["all"]));
    assert_eq!(names(&route_h(&r, "", &Headers::new())), set(&["all"]));
}

#[test]
fn headers_with_x_variants() {
    let mut r = router(ExchangeKind::Headers);
    r.bind(with_args("all", "", &[("x-tag", s("a")), ("k", s("v"))])).unwrap();
    r.bind(with_args("all-with-x", "", &[("x-match", s("all-with-x")), ("x-tag", s("a")), ("k", s("v"))]))
        .unwrap();
    r.bind(with_args("any-with-x", "", &[("x-match", s("any-with-x")), ("x-tag", s("a")), ("k", s("no"))]))
        .unwrap();
    r.bind(with_args("any", "", &[("x-match", s("any")), ("x-tag", s("a")), ("k", s("no"))])).unwrap();

    let without_x = headers(&[("k", s("v"))]);
    assert_eq!(names(&route_h(&r, "", &without_x)), set(&["all"]));
    let with_x = headers(&[("k", s("v")), ("x-tag", s("a"))]);
    assert_eq!(names(&route_h(&r, "", &with_x)), set(&["all", "all-with-x", "any-with-x"]));
    let wrong_x = headers(&[("k", s("v")), ("x-tag", s("b"))]);
    assert_eq!(names(&route_h(&r, "", &wrong_x)), set(&["all"]));
}

#[test]
fn headers_void_means_present() {
    let mut r = router(ExchangeKind::Headers);
    r.bind(with_args("q", "", &[("trace", HeaderValue::Void)])).unwrap();
    assert_eq!(route_h(&r, "", &headers(&[("trace", s("anything"))])), vec![q("q")]);
    assert_eq!(route_h(&r, "", &headers(&[("trace", HeaderValue::Void)])), vec![q("q")]);
    assert!(route_h(&r, "", &headers(&[("other", s("x"))])).is_empty());
}

#[test]
fn headers_compare_values_across_types() {
    let cases: &[(HeaderValue, HeaderValue, bool)] = &[
        (HeaderValue::I32(5), HeaderValue::I8(5), true),
        (HeaderValue::I64(5), HeaderValue::U16(5), true),
        (HeaderValue::U32(u32::MAX), HeaderValue::I64(u32::MAX.into()), true),
        (HeaderValue::I8(-1), HeaderValue::U8(255), false),
        (HeaderValue::I32(5), HeaderValue::F64(5.0), true),
        (HeaderValue::I32(5), HeaderValue::F64(5.5), false),
        (HeaderValue::F32(0.5), HeaderValue::F64(0.5), true),
        (HeaderValue::I64(7), HeaderValue::Timestamp(7), true),
        (HeaderValue::I32(5), s("5"), false),
        (s("pdf"), HeaderValue::Bytes("pdf".into()), true),
        (
            s("pdf"),
            HeaderValue::Attribute {
                data_type: "String".into(),
                value: AttributeValue::String("pdf".into()),
            },
            true,
        ),
        (
            s("pdf"),
            HeaderValue::Attribute {
                data_type: "String.custom".into(),
                value: AttributeValue::String("pdf".into()),
            },
            true,
        ),
        (
            HeaderValue::I32(42),
            HeaderValue::Attribute { data_type: "Number".into(), value: AttributeValue::String("42".into()) },
            true,
        ),
        (
            HeaderValue::F64(1.5),
            HeaderValue::Attribute {
                data_type: "Number.float".into(),
                value: AttributeValue::String("1.5".into()),
            },
            true,
        ),
        (
            HeaderValue::Bytes(vec![0xff, 0].into()),
            HeaderValue::Attribute {
                data_type: "Binary".into(),
                value: AttributeValue::Binary(vec![0xff, 0].into()),
            },
            true,
        ),
        (HeaderValue::Bool(true), HeaderValue::Bool(true), true),
        (HeaderValue::Bool(true), HeaderValue::I8(1), false),
        (HeaderValue::Decimal { scale: 2, value: 150 }, HeaderValue::Decimal { scale: 2, value: 150 }, true),
        (
            HeaderValue::Array(vec![HeaderValue::I8(1), s("a")]),
            HeaderValue::Array(vec![HeaderValue::I64(1), s("a")]),
            true,
        ),
        (HeaderValue::Array(vec![HeaderValue::I8(1)]), HeaderValue::Array(vec![]), false),
        (
            HeaderValue::Table(headers(&[("n", HeaderValue::U8(3))])),
            HeaderValue::Table(headers(&[("n", HeaderValue::I32(3))])),
            true,
        ),
    ];
    for (wanted, actual, expected) in cases {
        let mut r = router(ExchangeKind::Headers);
        r.bind(with_args("q", "", &[("h", wanted.clone())])).unwrap();
        let out = route_h(&r, "", &headers(&[("h", actual.clone())]));
        assert_eq!(!out.is_empty(), *expected, "binding {wanted:?} message {actual:?}");
    }
}

#[test]
fn headers_reject_bad_x_match() {
    let mut r = router(ExchangeKind::Headers);
    for bad in [s("some"), s("ALL"), HeaderValue::I32(1), HeaderValue::Void] {
        let result = r.bind(with_args("q", "", &[("x-match", bad.clone()), ("k", s("v"))]));
        assert!(matches!(result, Err(RoutingError::InvalidArgument(_))), "{bad:?}");
    }
    assert!(r.is_empty(), "a rejected binding leaves nothing behind");
    // Other kinds do not read x-match.
    let mut fanout = router(ExchangeKind::Fanout);
    assert_eq!(fanout.bind(with_args("q", "", &[("x-match", s("some"))])), Ok(true));
}

#[test]
fn headers_dedup_destinations() {
    let mut r = router(ExchangeKind::Headers);
    r.bind(with_args("q", "", &[("a", s("1"))])).unwrap();
    r.bind(with_args("q", "", &[("b", s("2"))])).unwrap();
    r.bind(with_args("q", "other-key", &[("a", s("1"))])).unwrap();
    let out = route_h(&r, "", &headers(&[("a", s("1")), ("b", s("2"))]));
    assert_eq!(out, vec![q("q")]);
}

fn hash_router(args: &[(&str, HeaderValue)], weights: &[(&str, &str)]) -> Router {
    let mut r = Router::new(ExchangeKind::ConsistentHash, &headers(args)).unwrap();
    for (dest, weight) in weights {
        r.bind(binding(dest, weight)).unwrap();
    }
    r
}

#[test]
fn consistent_hash_weights_must_be_positive_integers() {
    let mut r = hash_router(&[], &[]);
    for bad in ["", "0", "-1", "1.5", "abc", "99999999999"] {
        assert!(matches!(r.bind(binding("q", bad)), Err(RoutingError::InvalidArgument(_))), "weight {bad:?}");
    }
    assert!(r.is_empty());
    assert_eq!(r.bind(binding("q", "10")), Ok(true));
}

#[test]
fn consistent_hash_routes_to_exactly_one_stable_destination() {
    let r = hash_router(&[], &[("a", "1"), ("b", "1"), ("c", "2")]);
    let mut clone = hash_router(&[], &[("c", "2"), ("b", "1"), ("a", "1")]);
    for i in 0..500 {
        let key = format!("order-{i}");
        let out = route(&r, &key);
        assert_eq!(out.len(), 1);
        assert_eq!(route(&r, &key), out, "same key, same destination");
        assert_eq!(route(&clone, &key), out, "binding order does not matter");
    }
    assert!(route(&hash_router(&[], &[]), "k").is_empty());
    // Binding the same destination again adds to its weight.
    clone.bind(with_args("a", "1", &[("n", HeaderValue::I8(1))])).unwrap();
    assert_eq!(clone.len(), 4);
}

#[test]
fn consistent_hash_shares_follow_weights() {
    let r = hash_router(&[], &[("light", "1"), ("heavy", "3")]);
    let n = 10_000;
    let light = (0..n).filter(|i| route(&r, &format!("key-{i}")) == vec![q("light")]).count();
    let share = light as f64 / n as f64;
    assert!((0.23..0.27).contains(&share), "light share {share}");

    let r = hash_router(&[], &[("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")]);
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..n {
        *counts.entry(route(&r, &i.to_string())[0].clone()).or_insert(0) += 1;
    }
    for (dest, count) in counts {
        assert!((2200..2800).contains(&count), "{dest:?} got {count}");
    }
}

#[test]
fn consistent_hash_moves_only_the_removed_share() {
    let mut r = hash_router(&[], &[("a", "1"), ("b", "1"), ("c", "1")]);
    let keys: Vec<String> = (0..3000).map(|i| format!("k{i}")).collect();
    let before: Vec<Destination> = keys.iter().map(|k| route(&r, k)[0].clone()).collect();
    assert!(r.unbind(&binding("c", "1")));
    for (key, was) in keys.iter().zip(&before) {
        let now = route(&r, key)[0].clone();
        if *was != q("c") {
            assert_eq!(&now, was, "{key} moved though its destination stayed");
        }
    }
}

#[test]
fn consistent_hash_on_header() {
    let r = hash_router(&[("hash-header", s("user"))], &[("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")]);
    let mut seen = BTreeSet::new();
    for i in 0..200 {
        let as_string = route_h(&r, "ignored", &headers(&[("user", s(&i.to_string()))]));
        let as_int = route_h(&r, "other", &headers(&[("user", HeaderValue::I64(i))]));
        assert_eq!(as_string.len(), 1);
        assert_eq!(as_string, as_int, "a header hashes by its text");
        seen.extend(names(&as_string));
    }
    assert_eq!(seen.len(), 4);
    let missing_one = route_h(&r, "x", &Headers::new());
    let missing_two = route_h(&r, "y", &Headers::new());
    assert_eq!(missing_one.len(), 1);
    assert_eq!(missing_one, missing_two, "messages without the header still go to one place");
}

#[test]
fn consistent_hash_on_property() {
    let args = [("hash-property", s("message_id"))];
    let r = hash_router(&args, &[("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")]);
    assert!(r.uses_properties());
    assert!(!hash_router(&[], &[]).uses_properties());
    let mut seen = BTreeSet::new();
    for i in 0..200 {
        let mut message = Message::new("body");
        message.routing_key = format!("rk-{}", i % 3);
        message.properties.message_id = Some(format!("id-{i}"));
        let mut out = Vec::new();
        r.route_message(&message, &mut out);
        assert_eq!(out.len(), 1);
        // The routing key plays no part: id-{i} against a plain router keyed the same way.
        let by_key = hash_router(&[], &[("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")]);
        assert_eq!(out, route(&by_key, &format!("id-{i}")));
        seen.extend(names(&out));
    }
    assert_eq!(seen.len(), 4);

    let ts = hash_router(&[("hash-property", s("timestamp"))], &[("a", "1"), ("b", "1")]);
    let mut props = Properties { timestamp: Some(1_700_000_000), ..Properties::default() };
    let mut out = Vec::new();
    ts.route_with_properties("", &Headers::new(), Some(&props), &mut out);
    let by_key = hash_router(&[], &[("a", "1"), ("b", "1")]);
    assert_eq!(out, route(&by_key, "1700000000"));
    props.correlation_id = Some("c".into());
    let corr = hash_router(&[("hash-property", s("correlation_id"))], &[("a", "1"), ("b", "1")]);
    let mut out = Vec::new();
    corr.route_with_properties("", &Headers::new(), Some(&props), &mut out);
    assert_eq!(out, route(&by_key, "c"));
}

#[test]
fn consistent_hash_rejects_bad_exchange_arguments() {
    let bad: &[&[(&str, HeaderValue)]] = &[
        &[("hash-header", s("h")), ("hash-property", s("message_id"))],
        &[("hash-property", s("reply_to"))],
        &[("hash-header", HeaderValue::I32(3))],
    ];
    for args in bad {
        assert!(
            matches!(
                Router::new(ExchangeKind::ConsistentHash, &headers(args)),
                Err(RoutingError::InvalidArgument(_))
            ),
            "{args:?}"
        );
    }
    // Other kinds ignore arguments they do not know, as RabbitMQ does.
    assert!(Router::new(ExchangeKind::Topic, &headers(bad[0])).is_ok());
}
