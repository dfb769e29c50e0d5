//! The store's bounds: bytes, cut values, strings freed with their spans,
//! capped searches, and a linker linear in a trace's depth.

use serde_json::{Value, json};

use super::*;

/// A span of trace `trace` (hex) with `extra` fields merged in.
fn span(trace: u64, id: u64, extra: Value) -> Value {
    let mut s = json!({
        "traceId": format!("{trace:016x}"),
        "id": format!("{id:016x}"),
        "name": "work",
        "timestamp": 1_000_000u64 + id,
        "duration": 10,
        "localEndpoint": { "serviceName": "worker" },
    });
    if let (Value::Object(s), Value::Object(extra)) = (&mut s, extra) {
        s.extend(extra);
    }
    s
}

fn ingest(store: &Store, spans: &[Value]) -> Ingested {
    let body = serde_json::to_vec(spans).expect("json");
    let parsed: Vec<SpanIn<'_>> = serde_json::from_slice(&body).expect("spans");
    store.ingest(parsed).expect("ingest")
}

#[test]
fn the_store_stays_within_its_bytes_evicting_the_oldest_traces() {
    let max = 1 << 20;
    let store = Store::new(1_000_000, &[]).with_max_bytes(max);
    let mut evicted = 0;
    for trace in 1..=400u64 {
        // Every value its own: 4 KiB of strings a span.
        let tag = format!("{trace}-{}", "x".repeat(4096));
        evicted += ingest(
            &store,
            &[span(trace, 1, json!({ "tags": { "blob": tag } }))],
        )
        .evicted_traces;
        assert!(
            store.stats().bytes <= max,
            "trace {trace}: {:?}",
            store.stats()
        );
    }
    assert!(evicted > 100, "{evicted} evicted");
    let stats = store.stats();
    assert!(
        stats.bytes > max / 2,
        "the store fills up to its cap: {stats:?}"
    );
    // The newest is kept, the oldest gone.
    let newest = TraceId::parse(&format!("{:016x}", 400)).expect("id");
    assert!(store.trace(newest).is_some());
    assert!(store.trace(TraceId::parse("1").expect("id")).is_none());
}

#[test]
fn long_values_are_cut_and_the_span_says_how_many() {
    let store = Store::new(100, &[]);
    let long = "é".repeat(MAX_VALUE_BYTES); // two bytes a character
    let key = "k".repeat(MAX_NAME_BYTES + 1);
    ingest(
        &store,
        &[span(
            7,
            1,
            json!({
                "name": "n".repeat(1000),
                "tags": { "sql": long, key.clone(): "v", "short": "kept" },
                "annotations": [{ "timestamp": 1, "value": "a".repeat(MAX_VALUE_BYTES + 1) }],
            }),
        )],
    );
    let spans = store
        .trace(TraceId::parse("7").expect("id"))
        .expect("stored");
    let s = &spans[0];
    let sql = &s.tags["sql"];
    assert!(
        sql.len() <= MAX_VALUE_BYTES && sql.ends_with('…'),
        "{}",
        sql.len()
    );
    assert!(
        sql.trim_end_matches('…').chars().all(|c| c == 'é'),
        "cut at a boundary"
    );
    assert_eq!(s.tags["short"], "kept");
    assert!(
        s.tags
            .keys()
            .any(|k| k.len() <= MAX_NAME_BYTES && k.starts_with("kkk") && k.ends_with('…'))
    );
    assert!(s.name.as_deref().is_some_and(|n| n.len() <= MAX_NAME_BYTES));
    assert!(s.annotations[0].value.len() <= MAX_VALUE_BYTES);
    assert_eq!(s.tags[TRUNCATED_TAG], "4", "{:?}", s.tags);
}

#[test]
fn no_string_outlives_the_spans_that_name_it() {
    let store = Store::new(1, &[]);
    let plain = || span(1, 1, json!({ "tags": { "a": "b" } }));
    ingest(&store, &[plain()]);
    let before = store.stats();
    // An empty key's value, repeated annotations, a forged truncation tag.
    ingest(
        &store,
        &[span(
            2,
            1,
            json!({
                "tags": { "": "ghost", "console.truncated": "forged" },
                "annotations": [
                    { "timestamp": 5, "value": "echo" },
                    { "timestamp": 5, "value": "echo" },
                    { "timestamp": 5, "value": "echo" },
                ],
            }),
        )],
    );
    let hostile = store
        .trace(TraceId::parse("2").expect("id"))
        .expect("stored");
    assert_eq!(hostile[0].annotations.len(), 1, "repeats are one");
    assert!(!hostile[0].tags.contains_key(""));
    assert!(!hostile[0].tags.contains_key(TRUNCATED_TAG), "not forged");
    // Evicted by the next trace: every string it took is given back.
    ingest(&store, &[plain()]);
    assert_eq!(store.stats(), before);
    let inner = store.read();
    assert_eq!(inner.strings.lookup("ghost"), None);
    assert_eq!(inner.strings.lookup("echo"), None);
}

#[test]
fn searches_answer_at_most_their_cap() {
    let store = Store::new(10_000, &[]);
    let spans: Vec<Value> = (1..=1_200u64).map(|t| span(t, 1, json!({}))).collect();
    ingest(&store, &spans);
    let q = TraceQuery::new(
        None,
        None,
        None,
        None,
        None,
        Some(2_000),
        Some(2_000),
        Some(5_000),
        2_000,
        86_400_000,
    )
    .expect("query");
    assert_eq!(q.limit, query::MAX_LIMIT);
    let found = store.traces(&q);
    assert_eq!(found.len(), query::MAX_LIMIT);
    // Newest first, across the pieces the search reads.
    assert_eq!(found[0][0].trace_id, format!("{:016x}", 1_200));
}

#[test]
fn a_deep_trace_links_through_every_level_and_a_cycle_links_nothing() {
    // A server span, 100,000 local spans each the child of the one
    // before, and a client span at the bottom calling redis.
    let store = Store::new(1_000_000, &[]);
    let depth = 100_000u64;
    let mut spans = vec![span(
        9,
        1,
        json!({
            "kind": "SERVER", "localEndpoint": { "serviceName": "api" },
            "remoteEndpoint": { "serviceName": "caller" },
        }),
    )];
    for id in 2..=depth {
        spans.push(span(
            9,
            id,
            json!({ "parentId": format!("{:016x}", id - 1) }),
        ));
    }
    spans.push(span(9, depth + 1, json!({
        "kind": "CLIENT", "parentId": format!("{depth:016x}"),
        "localEndpoint": { "serviceName": "worker" }, "remoteEndpoint": { "serviceName": "redis" },
    })));
    ingest(&store, &spans);
    let links = store.dependencies(10_000, 10_000);
    let pairs: Vec<(&str, &str, u64)> = links
        .iter()
        .map(|l| (l.parent.as_str(), l.child.as_str(), l.call_count))
        .collect();
    assert_eq!(
        pairs,
        vec![
            ("api", "worker", 1),
            ("caller", "api", 1),
            ("worker", "redis", 1)
        ]
    );
    // Ids in a cycle: no ancestor, no endless walk.
    let store = Store::new(100, &[]);
    ingest(
        &store,
        &[
            span(3, 1, json!({ "parentId": format!("{:016x}", 2) })),
            span(3, 2, json!({ "parentId": format!("{:016x}", 1) })),
            span(
                3,
                4,
                json!({ "kind": "SERVER", "parentId": format!("{:016x}", 2),
                "localEndpoint": { "serviceName": "api" } }),
            ),
        ],
    );
    assert!(store.dependencies(10_000, 10_000).is_empty());
}
