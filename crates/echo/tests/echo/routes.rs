//! The seeds' test-web paths.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;

use crate::helpers::spawn_echo;

fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[tokio::test]
async fn root_answers_hostname_and_current_millis() {
    let app = spawn_echo(&[]).await;
    let before = now_millis();
    let body = app.get("/").await.text().await.unwrap();
    let after = now_millis();
    let (host, millis) = body.split_once(", current time : ").expect(&body);
    assert_eq!(host, "echo-test");
    let millis: u128 = millis.parse().unwrap();
    assert!(
        (before..=after).contains(&millis),
        "{millis} not in {before}..={after}"
    );
}

#[tokio::test]
async fn a_delay_path_sleeps_first() {
    let app = spawn_echo(&[]).await;
    let started = Instant::now();
    let response = app.get("/300").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        response
            .text()
            .await
            .unwrap()
            .starts_with("echo-test, current time : ")
    );
}

#[tokio::test]
async fn healthcheck_answers_ok_with_and_without_delay() {
    let app = spawn_echo(&[]).await;
    assert_eq!(app.get("/healthcheck").await.text().await.unwrap(), "ok");
    let started = Instant::now();
    assert_eq!(
        app.get("/healthcheck/100").await.text().await.unwrap(),
        "ok"
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn bad_delays_are_400() {
    let app = spawn_echo(&[]).await;
    for path in [
        "/abc",
        "/-5",
        "/600001",
        "/healthcheck/x",
        "/99999999999999999999999",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(response.text().await.unwrap().contains("delay"), "{path}");
    }
}

#[tokio::test]
async fn the_contract_endpoints_are_there() {
    let app = spawn_echo(&[]).await;
    assert_eq!(app.get("/hc").await.text().await.unwrap(), "OK");
    assert_eq!(app.get("/ready").await.status(), StatusCode::OK);
    app.get("/7").await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"route="/{ms}""#),
        "delays are one route, not one per value"
    );
}
