//! Distributed tracing between real processes: `flotilla echo` exporting to `flotilla traces`.
//! A request's span joins the trace its W3C `traceparent`, its `b3` header or Sleuth's
//! `X-B3-*` headers name, with the caller's span as parent; a malformed header starts a new
//! trace and the request is served; the trace id is in the access log; with the collector down
//! the service keeps serving and counts the spans it could not send.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Running, start};

fn get(service: &Running, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = reqwest::blocking::Client::new().get(service.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().unwrap().status().as_u16()
}

/// The spans of `trace_id` the collector has, after waiting up to 10 s for `count` of them.
fn spans(collector: &Running, trace_id: &str, count: usize) -> Vec<Value> {
    let url = collector.url(&format!("/api/v2/trace/{trace_id}"));
    for _ in 0..200 {
        if let Ok(answer) = reqwest::blocking::get(&url)
            && answer.status() == 200
        {
            let spans: Vec<Value> = answer.json().unwrap();
            if spans.len() >= count {
                return spans;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("trace {trace_id} did not reach the collector within 10 s");
}

#[test]
fn a_service_joins_the_callers_trace_in_each_format_and_exports_it() {
    let collector = start("traces", &[], &[("TRACES_DATA", ":memory:")]);
    let traces_url = format!("http://{}", collector.addr);
    let echo = start(
        "echo",
        &[],
        &[
            ("FLOTILLA_TRACES_URL", traces_url.as_str()),
            ("HOSTNAME", "echo-1"),
        ],
    );
    // (headers, trace id, parent span id) as each format carries them.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 3] = [
        (
            &[
                ("X-B3-TraceId", "463ac35c9f6413ad"),
                ("X-B3-SpanId", "a2fb4a1d1a96d312"),
                ("X-B3-Sampled", "1"),
            ],
            "463ac35c9f6413ad",
            "a2fb4a1d1a96d312",
        ),
        (
            &[(
                "b3",
                "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
            )],
            "80f198ee56343ba864fe8b2a57d3eff7",
            "e457b5a2e4d86bd1",
        ),
        (
            &[
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
                // W3C wins over B3 when both are there.
                ("X-B3-TraceId", "1111111111111111"),
                ("X-B3-SpanId", "2222222222222222"),
            ],
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
        ),
    ];
    for (headers, trace_id, parent) in cases {
        assert_eq!(get(&echo, "/", headers), 200);
        let found = spans(&collector, trace_id, 1);
        let span = &found[0];
        assert_eq!(span["parentId"], parent, "{span}");
        assert_eq!(span["kind"], "SERVER");
        assert_eq!(span["name"], "get /");
        assert_eq!(span["localEndpoint"]["serviceName"], "echo");
        assert_eq!(span["tags"]["http.route"], "/");
        assert_eq!(span["tags"]["http.response.status_code"], "200");
        // The access log line carries the same trace id, in W3C's 32 digits (a 64-bit B3 id
        // left-padded with zeros).
        let line = echo.log_matching(|l| l["message"] == "request" && l["path"] == "/");
        assert_eq!(line["trace_id"], format!("{trace_id:0>32}"));
    }

    // Health checks are not traced: a probe's trace never arrives, though a later request's
    // does (spans leave in the order they end).
    let probe = "0af7651916cd43dd8448eb211c80319c";
    let probe_header = format!("00-{probe}-b7ad6b7169203331-01");
    assert_eq!(get(&echo, "/hc", &[("traceparent", &probe_header)]), 200);
    let after = "1af7651916cd43dd8448eb211c80319c";
    let after_header = format!("00-{after}-b7ad6b7169203331-01");
    assert_eq!(get(&echo, "/", &[("traceparent", &after_header)]), 200);
    spans(&collector, after, 1);
    let probe_trace = reqwest::blocking::get(collector.url(&format!("/api/v2/trace/{probe}")));
    assert_eq!(probe_trace.unwrap().status(), 404);

    // Malformed headers: ignored, a new trace, the request served.
    for headers in [
        &[(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        )][..],
        &[(
            "traceparent",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )][..],
        &[(
            "traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        )][..],
        &[("b3", "not-a-b3-header")][..],
        &[("X-B3-TraceId", "xyz"), ("X-B3-SpanId", "1")][..],
    ] {
        assert_eq!(get(&echo, "/bad", headers), 400, "echo answers /bad itself");
        let line = echo.log_matching(|l| l["message"] == "request" && l["path"] == "/bad");
        let trace_id = line["trace_id"].as_str().unwrap().to_string();
        assert_eq!(trace_id.len(), 32);
        assert!(
            !trace_id.starts_with("4bf92f"),
            "{headers:?} was not ignored"
        );
        let found = spans(&collector, &trace_id, 1);
        assert!(found[0].get("parentId").is_none(), "{}", found[0]);
    }
}

#[test]
fn with_the_collector_down_the_service_serves_and_counts_what_it_could_not_send() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let echo = start("echo", &[], &[("FLOTILLA_TRACES_URL", url.as_str())]);
    for _ in 0..20 {
        assert_eq!(get(&echo, "/", &[]), 200);
    }
    let mut failed = 0.0;
    for _ in 0..200 {
        let metrics = reqwest::blocking::get(echo.url("/metrics"))
            .unwrap()
            .text()
            .unwrap();
        failed = metrics
            .lines()
            .find(|l| l.starts_with("traces_export_spans_total{outcome=\"failed\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if failed >= 20.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(failed >= 20.0, "spans not sent are counted ({failed})");
    assert_eq!(get(&echo, "/", &[]), 200);
}

#[test]
fn a_request_left_out_by_the_sampler_is_served_and_exports_nothing() {
    let collector = start("traces", &[], &[("TRACES_DATA", ":memory:")]);
    let traces_url = format!("http://{}", collector.addr);
    let sampled_out = start(
        "echo",
        &[],
        &[
            ("FLOTILLA_TRACES_URL", traces_url.as_str()),
            ("OTEL_TRACES_SAMPLER", "always_off"),
        ],
    );
    let sampled_in = start("echo", &[], &[("FLOTILLA_TRACES_URL", traces_url.as_str())]);
    let left_out = "2af7651916cd43dd8448eb211c80319c";
    for _ in 0..10 {
        assert_eq!(get(&sampled_out, "/", &[]), 200);
    }
    // A caller's "not sampled" is followed too (parent-based sampling, the default).
    let header = format!("00-{left_out}-b7ad6b7169203331-00");
    assert_eq!(get(&sampled_in, "/", &[("traceparent", &header)]), 200);
    // A sampled request after them arrives; nothing of the others did.
    let kept = "3af7651916cd43dd8448eb211c80319c";
    let header = format!("00-{kept}-b7ad6b7169203331-01");
    assert_eq!(get(&sampled_in, "/", &[("traceparent", &header)]), 200);
    let found = spans(&collector, kept, 1);
    assert_eq!(found.len(), 1);
    let status = |id: &str| {
        reqwest::blocking::get(collector.url(&format!("/api/v2/trace/{id}")))
            .unwrap()
            .status()
    };
    assert_eq!(status(left_out), 404);
    let names: Vec<String> =
        reqwest::blocking::get(collector.url("/api/v2/traces?limit=100&lookback=600000"))
            .unwrap()
            .json::<Vec<Vec<Value>>>()
            .unwrap()
            .iter()
            .map(|t| t[0]["traceId"].as_str().unwrap().to_string())
            .collect();
    assert_eq!(names, [kept], "only the sampled request was exported");
}
