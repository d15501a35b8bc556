//! Signals and draining, on the real process.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::helpers::start;

fn in_flight_request_survives(signal: Signal) {
    let mut echo = start("echo", &[], &[("HOSTNAME", "drain-test")]);
    let url = echo.url("/1500");
    let request = std::thread::spawn(move || {
        reqwest::blocking::get(url).and_then(|r| Ok((r.status(), r.text()?)))
    });
    // The request is in flight once the server has accepted it; give it a moment to be sent.
    std::thread::sleep(Duration::from_millis(300));
    echo.signal(signal);
    echo.log_matching(|line| line["message"] == "shutdown requested");
    let (status, body) = request
        .join()
        .unwrap()
        .expect("the in-flight request got its answer");
    assert_eq!(status, 200);
    assert!(body.starts_with("drain-test, current time : "), "{body}");
    let exit = echo.wait_exit(Duration::from_secs(10));
    assert_eq!(exit.code(), Some(0), "a drained shutdown exits 0");
}

#[test]
fn sigterm_drains_a_slow_request_then_exits_0() {
    in_flight_request_survives(Signal::SIGTERM);
}

#[test]
fn sigint_drains_a_slow_request_then_exits_0() {
    in_flight_request_survives(Signal::SIGINT);
}

#[test]
fn the_api_drains_on_sigterm_too() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let mut api = start("todo-api", &["--seed"], &[("TODO_PRIMARY_URL", &db)]);
    api.wait_ready();
    let items: serde_json::Value = reqwest::blocking::get(api.url("/todo?status=PROGRESS"))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(items.as_array().unwrap().len(), 5);
    api.signal(Signal::SIGTERM);
    assert_eq!(api.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn json_request_logs_carry_method_path_status_latency_and_id() {
    let echo = start("echo", &[], &[]);
    let client = reqwest::blocking::Client::new();
    client
        .get(echo.url("/"))
        .header("x-request-id", "abc-123")
        .send()
        .unwrap();
    let line = echo.log_matching(|line| line["message"] == "request");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/");
    assert_eq!(line["status"], 200);
    assert!(line["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(line["request_id"], "abc-123");
    assert_eq!(line["level"], "INFO");
}

#[test]
fn healthcheck_exits_0_only_for_a_2xx_answer_in_time() {
    use crate::helpers::run_to_end;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let api = start("todo-api", &[], &[("TODO_PRIMARY_URL", &db)]);
    api.wait_ready();
    let check = |url: &str, extra: &[&str]| {
        let mut args = vec!["healthcheck", url];
        args.extend_from_slice(extra);
        let out = run_to_end(&args, &[]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(check(&api.url("/ready"), &[]), (Some(0), String::new()));
    let (code, stderr) = check(&api.url("/no-such-page"), &[]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("answered 404"), "{stderr}");

    // A server that accepts but never answers: the timeout decides.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hc", silent.local_addr().unwrap());
    let (code, stderr) = check(&url, &["--timeout", "300ms"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no answer within 300ms"), "{stderr}");
    drop(silent);
    let (code, stderr) = check(&url, &[]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("cannot connect"), "{stderr}");

    assert_eq!(check("https://127.0.0.1/", &[]).0, Some(1));
    // Without a URL: HEALTHCHECK_URL, so one image can carry one HEALTHCHECK for every service.
    let ready = api.url("/ready");
    let out = run_to_end(&["healthcheck"], &[("HEALTHCHECK_URL", &ready)]);
    assert_eq!(out.status.code(), Some(0));
    let out = run_to_end(&["healthcheck"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HEALTHCHECK_URL"));
    let (code, stderr) = check(&api.url("/hc"), &["--timeout", "soon"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--timeout"), "{stderr}");
    api.signal(Signal::SIGTERM);
}

#[test]
fn every_service_refuses_trace_on_its_contract_endpoints_with_allow() {
    // The contract's routes are the platform's: one check per kind of service.
    let traces = start("traces", &[], &[("TRACES_DATA", ":memory:")]);
    let registry = start("registry", &[], &[]);
    let echo = start("echo", &[], &[]);
    let client = reqwest::blocking::Client::new();
    for service in [&traces, &registry, &echo] {
        for path in ["/hc", "/ready", "/metrics"] {
            let response = client
                .request(reqwest::Method::TRACE, service.url(path))
                .send()
                .unwrap();
            assert_eq!(response.status(), 405, "TRACE {path}");
            let allow = response.headers()["allow"].to_str().unwrap().to_string();
            assert!(allow.contains("GET"), "TRACE {path}: Allow {allow}");
        }
    }
}
