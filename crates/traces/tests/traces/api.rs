//! Zipkin's v2 API over HTTP: ingest, every query with its filters, bad input, gzip, retention
//! and persistence.

use std::io::Write;

use serde_json::{Value, json};

use crate::helpers::{TestCollector, now_us, spawn_collector};

/// The 128-bit form of trace A's id (high half zero): stored and found as its 64-bit form.
const TRACE_A_LONG: &str = "00000000000000004D1E00C0DB9010DB";
pub(crate) const TRACE_A: &str = "4d1e00c0db9010db";
const TRACE_B: &str = "463ac35c9f6413ad48485a3953bb6124";
const TRACE_OLD: &str = "00000000000000aa";

fn endpoint(service: &str) -> Value {
    json!({"serviceName": service, "ipv4": "127.0.0.1"})
}

/// Trace A (10 s ago): frontend's request calls backend, which fails and queries its database.
/// Trace B (2 h ago): a quick health check. An old trace (2 days ago).
pub(crate) fn batch(now: u64) -> Value {
    let a = now - 10_000_000;
    json!([
        {"traceId": TRACE_A_LONG, "id": "a1", "kind": "SERVER", "name": "GET /",
         "timestamp": a, "duration": 50_000, "localEndpoint": endpoint("Frontend"),
         "tags": {"http.method": "GET", "http.path": "/"}},
        {"traceId": TRACE_A_LONG, "id": "a2", "parentId": "a1", "kind": "CLIENT", "name": "GET /api",
         "timestamp": a + 1_000, "duration": 40_000, "localEndpoint": endpoint("frontend"),
         "remoteEndpoint": {"serviceName": "backend"}},
        {"traceId": TRACE_A_LONG, "id": "a3", "parentId": "a2", "kind": "SERVER", "name": "GET /api",
         "timestamp": a + 2_000, "duration": 30_000, "localEndpoint": endpoint("backend"),
         "tags": {"error": "500", "http.method": "GET"}},
        {"traceId": TRACE_A_LONG, "id": "a4", "parentId": "a3", "kind": "CLIENT", "name": "select",
         "timestamp": a + 3_000, "duration": 5_000, "localEndpoint": endpoint("backend"),
         "remoteEndpoint": {"serviceName": "sqlite"},
         "annotations": [{"timestamp": a + 3_500, "value": "retry"}]},
        {"traceId": TRACE_B, "id": "b1", "kind": "SERVER", "name": "GET /health",
         "timestamp": now - 7_200_000_000, "duration": 100, "localEndpoint": endpoint("frontend")},
        {"traceId": TRACE_OLD, "id": "c1", "kind": "SERVER", "name": "GET /old",
         "timestamp": now - 172_800_000_000, "duration": 100, "localEndpoint": endpoint("frontend")},
    ])
}

/// The trace ids of a `/traces` answer, in order.
async fn trace_ids(collector: &TestCollector, query: &str) -> Vec<String> {
    let answer = collector.get_json(&format!("/api/v2/traces?{query}")).await;
    answer
        .as_array()
        .unwrap()
        .iter()
        .map(|trace| trace[0]["traceId"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn spans_are_ingested_normalised_and_found_by_every_query() {
    let collector = spawn_collector(&[]).await;
    let now = now_us();
    let (status, body) = collector.post_spans(batch(now).to_string()).await;
    assert_eq!((status, body.as_str()), (202, ""));

    assert_eq!(
        collector.get_json("/api/v2/services").await,
        json!(["backend", "frontend"])
    );
    assert_eq!(
        collector
            .get_json("/api/v2/spans?serviceName=Frontend")
            .await,
        json!(["get /", "get /api", "get /health", "get /old"])
    );
    assert_eq!(
        collector
            .get_json("/api/v2/remoteServices?serviceName=backend")
            .await,
        json!(["sqlite"])
    );

    // The default window is a day, newest first.
    assert_eq!(trace_ids(&collector, "").await, [TRACE_A, TRACE_B]);
    assert_eq!(trace_ids(&collector, "limit=1").await, [TRACE_A]);
    assert_eq!(trace_ids(&collector, "lookback=3600000").await, [TRACE_A]);
    let end = now / 1000 - 3_600_000;
    assert_eq!(
        trace_ids(&collector, &format!("endTs={end}&lookback=86400000")).await,
        [TRACE_B]
    );
    assert_eq!(
        trace_ids(&collector, "lookback=259200000").await,
        [TRACE_A, TRACE_B, TRACE_OLD]
    );
    assert_eq!(
        trace_ids(&collector, "serviceName=frontend&minDuration=10000").await,
        [TRACE_A]
    );
    assert_eq!(
        trace_ids(&collector, "serviceName=frontend&maxDuration=1000").await,
        [TRACE_B]
    );
    assert_eq!(
        trace_ids(&collector, "serviceName=frontend&spanName=get%20%2Fhealth").await,
        [TRACE_B]
    );
    assert_eq!(
        trace_ids(&collector, "serviceName=frontend&remoteServiceName=backend").await,
        [TRACE_A]
    );
    assert_eq!(
        trace_ids(&collector, "serviceName=backend&annotationQuery=error").await,
        [TRACE_A]
    );
    assert_eq!(
        trace_ids(
            &collector,
            "annotationQuery=retry%20and%20http.method%3DGET"
        )
        .await,
        [TRACE_A]
    );
    assert!(
        trace_ids(&collector, "annotationQuery=http.method%3DPOST")
            .await
            .is_empty()
    );
    // The error is backend's: not found among frontend's spans.
    assert!(
        trace_ids(&collector, "serviceName=frontend&annotationQuery=error")
            .await
            .is_empty()
    );

    // One trace by either form of its id, in any case; several at once.
    let by_long = collector
        .get_json(&format!("/api/v2/trace/{TRACE_A_LONG}"))
        .await;
    assert_eq!(by_long.as_array().unwrap().len(), 4);
    assert_eq!(
        by_long,
        collector
            .get_json(&format!("/api/v2/trace/{TRACE_A}"))
            .await
    );
    let root = &by_long[0];
    assert_eq!(root["traceId"], TRACE_A);
    assert_eq!(root["id"], "00000000000000a1");
    assert_eq!(root["name"], "get /");
    assert_eq!(root["localEndpoint"]["serviceName"], "frontend");
    let many = collector
        .get_json(&format!(
            "/api/v2/traceMany?traceIds={TRACE_B},{TRACE_A},0123456789abcdef"
        ))
        .await;
    assert_eq!(many.as_array().unwrap().len(), 2);
    assert_eq!(many[0][0]["traceId"], TRACE_B);
    let (status, body) = collector.get("/api/v2/trace/0123456789abcdef").await;
    assert_eq!(
        (status, body.as_str()),
        (404, "trace 0123456789abcdef not found")
    );

    let end = now / 1000 + 1000;
    assert_eq!(
        collector
            .get_json(&format!("/api/v2/dependencies?endTs={end}"))
            .await,
        json!([
            {"parent": "backend", "child": "sqlite", "callCount": 1, "errorCount": 0},
            {"parent": "frontend", "child": "backend", "callCount": 1, "errorCount": 1},
        ])
    );
    assert_eq!(
        collector.get_json("/api/v2/autocompleteKeys").await,
        json!(["http.method", "http.status_code", "error"])
    );
    assert_eq!(
        collector
            .get_json("/api/v2/autocompleteValues?key=http.method")
            .await,
        json!(["GET"])
    );
    // Zipkin's other prefix.
    assert_eq!(
        collector.get_json("/zipkin/api/v2/services").await,
        json!(["backend", "frontend"])
    );
}

#[tokio::test]
async fn gzip_batches_are_accepted_and_bombs_are_not() {
    let collector = spawn_collector(&[]).await;
    let gzip = |bytes: &[u8]| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    };
    let headers = [
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ];
    let body = gzip(batch(now_us()).to_string().as_bytes());
    assert_eq!(collector.post("/api/v2/spans", &headers, body).await.0, 202);
    assert_eq!(
        collector
            .get_json(&format!("/api/v2/trace/{TRACE_A}"))
            .await
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // 9 MB of spaces, 9 KB compressed: refused once it passes the limit decompressed.
    let bomb = gzip(&vec![b' '; 9 * 1024 * 1024]);
    let (status, message) = collector.post("/api/v2/spans", &headers, bomb).await;
    assert_eq!(status, 400);
    assert!(message.contains("once decompressed"), "{message}");
    let (status, message) = collector
        .post("/api/v2/spans", &headers, b"not gzip".to_vec())
        .await;
    assert_eq!(
        (status, message.as_str()),
        (400, "the body is not valid gzip")
    );
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_problem_and_stores_nothing() {
    let collector = spawn_collector(&[]).await;
    let ok = r#"{"traceId":"a","id":"1","localEndpoint":{"serviceName":"x"}}"#;
    let many = format!("[{}]", vec![ok; 10_001].join(","));
    let cases: Vec<(String, u16, &str)> = vec![
        ("not json".into(), 400, "malformed JSON"),
        ("{}".into(), 400, "a JSON array of v2 spans"),
        (
            r#"[{"traceId":"zz","id":"1"}]"#.into(),
            400,
            "span 0: traceId must be 1 to 32 hex digits",
        ),
        (
            r#"[{"traceId":"0","id":"1"}]"#.into(),
            400,
            "traceId must not be all zeros",
        ),
        (
            r#"[{"traceId":"a"}]"#.into(),
            400,
            "span 0: missing field `id`",
        ),
        (
            format!(r#"[{ok},{{"traceId":"a","id":"1","kind":"SIDEWAYS"}}]"#),
            400,
            "span 1: unknown variant `SIDEWAYS`",
        ),
        (
            r#"[{"traceId":"a","id":"1","tags":{"n":1}}]"#.into(),
            400,
            "span 0: invalid type",
        ),
        (
            format!(
                r#"[{{"traceId":"a","id":"1","name":"{}"}}]"#,
                "n".repeat(300)
            ),
            400,
            "name is 300 bytes long; at most 256",
        ),
        (many, 400, "10001 spans in one request; at most 10000"),
        (format!("[{}]", " ".repeat(9 * 1024 * 1024)), 413, ""),
    ];
    for (body, status, message) in cases {
        let (got, text) = collector.post_spans(body.clone()).await;
        assert_eq!(got, status, "{}: {text}", &body[..body.len().min(80)]);
        assert!(text.contains(message), "{message:?} not in {text:?}");
    }
    let (status, text) = collector
        .post(
            "/api/v2/spans",
            &[("content-type", "application/x-protobuf")],
            vec![0u8; 4],
        )
        .await;
    assert_eq!(status, 415);
    assert!(text.contains("send Zipkin v2 JSON"), "{text}");
    assert_eq!(collector.get_json("/api/v2/services").await, json!([]));
    // An empty batch is fine.
    assert_eq!(collector.post_spans("[]").await.0, 202);

    for (query, message) in [
        ("/api/v2/traces?limit=0", "limit must be from 1 to 1000"),
        (
            "/api/v2/traces?limit=abc",
            "limit must be a non-negative whole number",
        ),
        (
            "/api/v2/traces?minDuration=-1",
            "minDuration must be a non-negative whole number",
        ),
        (
            "/api/v2/traces?minDuration=5&maxDuration=4",
            "maxDuration must not be less than minDuration",
        ),
        (
            "/api/v2/traces?endTs=1e9",
            "endTs must be a non-negative whole number",
        ),
        ("/api/v2/spans", "serviceName is required"),
        (
            "/api/v2/remoteServices?serviceName=",
            "serviceName is required",
        ),
        ("/api/v2/traceMany", "traceIds is required"),
        (
            "/api/v2/traceMany?traceIds=a,xyz",
            "trace id \"xyz\" must be 1 to 32 hex digits",
        ),
        ("/api/v2/trace/xyz", "trace id must be 1 to 32 hex digits"),
        ("/api/v2/dependencies", "endTs is required"),
        ("/api/v2/autocompleteValues", "key is required"),
    ] {
        let (status, text) = collector.get(query).await;
        assert_eq!(status, 400, "{query}: {text}");
        assert!(
            text.contains(message),
            "{query}: {message:?} not in {text:?}"
        );
    }
    // Still answering.
    assert_eq!(collector.get("/api/v2/services").await.0, 200);
}

#[tokio::test]
async fn spans_survive_a_restart_with_traces_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traces.db");
    let path = path.to_str().unwrap();
    let collector = spawn_collector(&[("TRACES_DATA", path)]).await;
    assert_eq!(
        collector.post_spans(batch(now_us()).to_string()).await.0,
        202
    );
    collector.stop().await;
    let again = spawn_collector(&[("TRACES_DATA", path)]).await;
    assert_eq!(
        again
            .get_json(&format!("/api/v2/trace/{TRACE_A}"))
            .await
            .as_array()
            .unwrap()
            .len(),
        4
    );
    again.stop().await;
}

#[test]
fn old_spans_go_by_age_and_the_oldest_past_the_count() {
    let store = traces::store::Store::open(None).unwrap();
    let now = 1_800_000_000_000_000u64;
    let spans: Vec<traces::span::Span> = (0..3000u64)
        .map(|n| {
            let span = json!({"traceId": format!("{:x}", n + 1), "id": "1", "name": "s",
                "timestamp": now - (3000 - n) * 1_000_000, "localEndpoint": {"serviceName": "x"},
                "tags": {"k": "v"}});
            traces::span::normalise(serde_json::from_value(span).unwrap()).unwrap()
        })
        .collect();
    store.insert(&spans, now).unwrap();
    assert_eq!(store.count().unwrap(), 3000);
    // By age: the 500 older than 2500 s go.
    assert_eq!(store.prune(now, 2_500_000_000, 1_000_000).unwrap(), 500);
    assert_eq!(store.count().unwrap(), 2500);
    // By count: the oldest go, the newest 1000 stay.
    store.prune(now, 1_000_000_000_000, 1000).unwrap();
    assert_eq!(store.count().unwrap(), 1000);
    let newest = traces::span::trace_id(&format!("{:x}", 3000)).unwrap();
    assert_eq!(
        store
            .traces_by_id(std::slice::from_ref(&newest))
            .unwrap()
            .len(),
        1
    );
    let query = traces::store::TraceQuery {
        end_ts: now,
        lookback: 1_000_000_000_000,
        limit: 1000,
        annotations: vec![("k".into(), Some("v".into()))],
        ..Default::default()
    };
    assert_eq!(store.traces(&query).unwrap().len(), 1000);
}

#[tokio::test]
async fn concurrent_batches_are_all_stored_and_each_answered_once_committed() {
    let collector = spawn_collector(&[]).await;
    let now = now_us();
    // 32 clients at once, 100 spans each: grouped into few transactions by the writer, every
    // one answered 202 only once its spans can be read.
    let posts = (0..32u64).map(|client| {
        let spans: Vec<Value> = (0..100u64)
            .map(|n| {
                json!({"traceId": format!("{:x}", client * 1000 + n + 1), "id": "1",
                    "name": "get /", "timestamp": now - 1_000_000,
                    "localEndpoint": {"serviceName": format!("client-{client}")}})
            })
            .collect();
        let collector = &collector;
        async move {
            let (status, _) = collector.post_spans(Value::from(spans).to_string()).await;
            assert_eq!(status, 202);
            // Read right after the answer: there.
            let id = format!("{:x}", client * 1000 + 100);
            assert_eq!(collector.get(&format!("/api/v2/trace/{id}")).await.0, 200);
        }
    });
    futures_util::future::join_all(posts).await;
    let services = collector.get_json("/api/v2/services").await;
    assert_eq!(services.as_array().unwrap().len(), 32);
    let all = collector
        .get_json("/api/v2/traces?limit=1000&lookback=3600000")
        .await;
    assert_eq!(
        all.as_array().unwrap().len(),
        1000,
        "the limit, of 3,200 stored"
    );
}
