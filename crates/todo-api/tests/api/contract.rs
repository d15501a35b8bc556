//! The service contract: health, readiness, metrics, request ids, shutdown.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, spawn_app};

#[tokio::test]
async fn hc_answers_ok_on_the_standard_methods_and_refuses_trace() {
    let app = spawn_app().await;
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let response = app.raw(method, "/hc", None, "").await;
        assert_eq!(response.status(), StatusCode::OK, "{method}");
        assert_eq!(response.text().await.unwrap(), "OK");
    }
    // TRACE echoes a request back (cross-site tracing): refused, like any method a route does
    // not declare, with the methods it does.
    let response = app.raw("TRACE", "/hc", None, "").await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = response.headers()["allow"].to_str().unwrap().to_string();
    for method in ["GET", "HEAD", "POST", "DELETE"] {
        assert!(allow.contains(method), "{allow}");
    }
    let body: Value = response.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("GET"), "{body}");
}

#[tokio::test]
async fn ready_reports_the_database() {
    let app = spawn_app().await;
    let response = app.get("/ready").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["primary"]["status"], "up");
    let target = body["checks"]["primary"]["detail"]["target"]
        .as_str()
        .unwrap();
    let scheme = match crate::BACKEND {
        Backend::Sqlite => "sqlite:",
        Backend::MariaDb => "mysql://",
    };
    assert!(target.starts_with(scheme), "{body}");
}

#[tokio::test]
async fn metrics_count_requests_by_route_with_latency_histograms() {
    let app = spawn_app().await;
    let id = app.create("m", "").await["id"].as_i64().unwrap();
    app.get(&format!("/todo/{id}")).await;
    app.get("/todo/999999").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    // Metrics are process-wide and tests run in parallel, so check presence, not exact counts.
    for needle in [
        r#"http_requests_total{method="POST",route="/todo",status="201"}"#,
        r#"http_requests_total{method="GET",route="/todo/{id}",status="200"}"#,
        r#"http_requests_total{method="GET",route="/todo/{id}",status="404"}"#,
        r#"http_request_duration_seconds_bucket{method="GET",route="/todo/{id}",le="0.005"}"#,
        r#"http_request_duration_seconds_count{method="POST",route="/todo"}"#,
        "# TYPE http_request_duration_seconds histogram",
    ] {
        assert!(text.contains(needle), "missing {needle}");
    }
    assert!(
        !text.contains("route=\"/todo/999999\""),
        "raw paths must not become labels"
    );
}

#[tokio::test]
async fn request_ids_are_passed_through_or_generated() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/todo"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");
    let generated = app.get("/todo").await.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    let error = app.get("/todo/0").await;
    assert!(
        error.headers().contains_key("x-request-id"),
        "errors carry the id too"
    );
}
