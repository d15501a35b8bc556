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
