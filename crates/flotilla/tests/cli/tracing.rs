//! Distributed tracing between real processes: `flotilla echo` exporting to `flotilla traces`.
//! A request's span joins the trace its W3C `traceparent`, its `b3` header or Sleuth's
//! `X-B3-*` headers name, with the caller's span as parent; a malformed header starts a new
//! trace and the request is served; the trace id is in the access log; with the collector down
//! the service keeps serving and counts the spans it could not send.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Running, free_port, start};

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
        failed = export_count(&echo, "failed");
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

#[test]
fn the_gateway_records_each_attempt_upstream_as_a_client_span() {
    let collector = start("traces", &[], &[("TRACES_DATA", ":memory:")]);
    let traces_url = format!("http://{}", collector.addr);
    let echo = start("echo", &[], &[("FLOTILLA_TRACES_URL", traces_url.as_str())]);
    let dead = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let log = dir.path().join("access.log");
    std::fs::write(
        &path,
        format!(
            "access_log = {:?}\n[admin]\nbind = \"off\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\nupstream = \"app\"\n\
             [upstream.app]\nserver = [{{ address = \"127.0.0.1:{dead}\" }}, {{ address = \"{}\" }}]\n",
            log.to_str().unwrap(),
            echo.addr
        ),
    )
    .unwrap();
    let gateway = start(
        "gateway",
        &["--config", path.to_str().unwrap()],
        &[
            ("FLOTILLA_TRACES_URL", traces_url.as_str()),
            ("FLOTILLA_APP_NAME", "edge"),
        ],
    );
    // Round robin over two servers: one of the first two requests tries the dead one first,
    // then the other (a connection refused is retried), and both attempts are in its trace.
    let mut retried = None;
    for n in 0..2 {
        let trace_id = format!("4bf92f3577b34da6a3ce929d0e0e473{n}");
        let header = format!("00-{trace_id}-00f067aa0ba902b7-01");
        assert_eq!(get(&gateway, "/", &[("traceparent", &header)]), 200);
        // The gateway's SERVER span, its CLIENT spans, echo's SERVER span.
        let found = spans(&collector, &trace_id, 3);
        let attempts: Vec<&Value> = found
            .iter()
            .filter(|s| s["kind"] == "CLIENT" && s["localEndpoint"]["serviceName"] == "edge")
            .collect();
        if attempts.len() == 2 {
            retried = Some(found.clone());
            break;
        }
        assert_eq!(attempts.len(), 1, "{found:#?}");
    }
    let found = retried.expect("one request was retried");
    let server = found
        .iter()
        .find(|s| s["kind"] == "SERVER" && s["localEndpoint"]["serviceName"] == "edge")
        .unwrap();
    let attempts: Vec<&Value> = found.iter().filter(|s| s["kind"] == "CLIENT").collect();
    for attempt in &attempts {
        assert_eq!(attempt["parentId"], server["id"], "{attempt}");
        assert_eq!(attempt["remoteEndpoint"]["serviceName"], "app");
    }
    let failed = attempts
        .iter()
        .find(|s| {
            s["tags"]["url.full"]
                .as_str()
                .unwrap()
                .contains(&dead.to_string())
        })
        .expect("the attempt on the dead server");
    assert_eq!(failed["tags"]["error"], "no answer");
    let answered = attempts.iter().find(|s| s["id"] != failed["id"]).unwrap();
    assert_eq!(answered["tags"]["http.response.status_code"], "200");
    // echo's span is the answered attempt's child.
    let trace_id = found[0]["traceId"].as_str().unwrap();
    let all = spans(&collector, trace_id, 4);
    let echo_span = all
        .iter()
        .find(|s| s["localEndpoint"]["serviceName"] != "edge")
        .expect("echo's span");
    assert_eq!(echo_span["parentId"], answered["id"]);

    // A request that starts its trace at the gateway: the access log names the trace the
    // gateway started, which is the one the collector has.
    assert_eq!(get(&gateway, "/?hop=first", &[]), 200);
    let mut line = None;
    for _ in 0..200 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        line = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|l| l["request_uri"] == "/?hop=first");
        if line.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let line = line.expect("the request's access log line");
    let trace_id = line["trace_id"].as_str().unwrap();
    assert_eq!(trace_id.len(), 32, "{line}");
    let found = spans(&collector, trace_id, 3);
    let edge = |kind: &str| {
        found
            .iter()
            .filter(|s| s["kind"] == kind && s["localEndpoint"]["serviceName"] == "edge")
            .count()
    };
    assert_eq!((edge("SERVER"), edge("CLIENT")), (1, 1), "{found:#?}");
}

#[test]
fn the_board_passes_a_left_out_requests_decision_on_to_the_api() {
    let collector = start("traces", &[], &[("TRACES_DATA", ":memory:")]);
    let traces_url = format!("http://{}", collector.addr);
    // The board's "API" is echo, which follows its callers' decisions (parent-based sampling)
    // and would start a trace of its own for a call that carries none.
    let api = start("echo", &[], &[("FLOTILLA_TRACES_URL", traces_url.as_str())]);
    let api_url = format!("http://{}", api.addr);
    let board = start(
        "todo-web",
        &[],
        &[
            ("FLOTILLA_TRACES_URL", traces_url.as_str()),
            ("OTEL_TRACES_SAMPLER", "always_off"),
            ("TODO_API_URL", api_url.as_str()),
        ],
    );
    for _ in 0..3 {
        // echo's answers are not the API's: the board says so, and answers.
        get(&board, "/", &[]);
    }
    // A sampled request to echo after them arrives; nothing of the board's calls did.
    let kept = "5af7651916cd43dd8448eb211c80319c";
    let header = format!("00-{kept}-b7ad6b7169203331-01");
    assert_eq!(get(&api, "/", &[("traceparent", &header)]), 200);
    spans(&collector, kept, 1);
    let traces: Vec<Vec<Value>> =
        reqwest::blocking::get(collector.url("/api/v2/traces?limit=100&lookback=600000"))
            .unwrap()
            .json()
            .unwrap();
    assert_eq!(traces.len(), 1, "only the marked request: {traces:#?}");
}

/// A counter of `/metrics`, 0 when it is not there yet.
fn export_count(service: &Running, outcome: &str) -> f64 {
    let metrics = reqwest::blocking::get(service.url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    let prefix = format!("traces_export_spans_total{{outcome=\"{outcome}\"}}");
    metrics
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn with_a_collector_that_never_answers_the_queue_stays_bounded_and_drops_are_counted() {
    // Accepts connections (the backlog does) and never answers: each export waits its 5 s.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let echo = start(
        "echo",
        &[],
        &[
            ("FLOTILLA_TRACES_URL", url.as_str()),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "8"),
        ],
    );
    for _ in 0..40 {
        assert_eq!(get(&echo, "/", &[]), 200);
    }
    // At most 8 spans wait (the first batch, stuck in its export); the rest were dropped.
    let dropped = export_count(&echo, "dropped");
    assert!((32.0..=40.0).contains(&dropped), "dropped {dropped}");
    assert_eq!(get(&echo, "/", &[]), 200);
}

#[test]
fn spans_reach_an_otlp_receiver_decoded_with_opentelemetrys_own_protobuf_definitions() {
    // The receiver is Python with opentelemetry-proto (PyPI), which scripts/setup.sh installs.
    let clients = std::env::var_os("FLOTILLA_CLIENTS_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/clients"),
        std::path::PathBuf::from,
    );
    let python = clients.join("py/bin/python");
    assert!(
        python.exists(),
        "the test clients are not installed in {}: run scripts/setup.sh",
        clients.display()
    );
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/otlp_receiver.py");
    let mut receiver = std::process::Command::new(python)
        .arg(script)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = receiver.stdout.take().unwrap();
    let _receiver = Kill(receiver);
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let first = lines.recv_timeout(Duration::from_secs(20)).unwrap();
    let port = first.strip_prefix("port ").expect("the receiver's port");
    let endpoint = format!("http://127.0.0.1:{port}");
    let echo = start(
        "echo",
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "echo-otlp"),
        ],
    );
    let header = "00-6bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_eq!(get(&echo, "/", &[("traceparent", header)]), 200);
    let line = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("a span within 10 s");
    let span: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(span["service"], "echo-otlp");
    assert_eq!(span["kind"], "SERVER");
    assert_eq!(span["trace_id"], "6bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(span["attributes"]["http.request.method"], "GET");
    assert_eq!(span["attributes"]["http.response.status_code"], "200");
    // Counted once the receiver has answered.
    let mut exported = 0.0;
    for _ in 0..100 {
        exported = export_count(&echo, "exported");
        if exported >= 1.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(exported, 1.0);
}
