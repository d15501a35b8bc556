//! The platform server: HTTP/2, limits, graceful shutdown.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::spawn_echo;

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let app = spawn_echo(&[]).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client.get(app.url("/")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    let app = spawn_echo(&[]).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    for _ in 0..3 {
        stream
            .write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("ok"), "{text}");
    }
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let app = spawn_echo(&[]).await;
    let response = app
        .client
        .get(app.url("/"))
        .header("x-big", "a".repeat(64 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_refuses_new_connections() {
    let mut app = spawn_echo(&[]).await;
    let slow = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/800");
        async move { client.get(url).send().await }
    });
    // Wait until the slow request is in flight.
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.begin_shutdown();
    let response = slow
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().starts_with("echo-test"));
    app.server.take().unwrap().await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(app.addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn the_drain_timeout_bounds_shutdown() {
    let mut app = spawn_echo(&[("FLOTILLA_DRAIN_TIMEOUT", "300ms")]).await;
    let slow = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/60000");
        async move { client.get(url).send().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    app.begin_shutdown();
    app.server.take().unwrap().await.unwrap().unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "returned before the drain timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(30),
        "did not stop at the drain timeout: {took:?}"
    );
    slow.abort();
}

#[tokio::test]
async fn during_the_shutdown_delay_it_is_unready_but_still_serves() {
    let mut app = spawn_echo(&[("FLOTILLA_SHUTDOWN_DELAY", "1s")]).await;
    assert_eq!(app.get("/ready").await.status(), StatusCode::OK);
    app.begin_shutdown();
    // New connections during the delay: /ready says draining, real requests still succeed.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let ready = client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "draining");
    assert_eq!(
        client.get(app.url("/")).send().await.unwrap().status(),
        StatusCode::OK
    );
    app.server.take().unwrap().await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(app.addr).await.is_err(),
        "closed after the delay"
    );
}
