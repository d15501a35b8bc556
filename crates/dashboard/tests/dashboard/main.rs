//! The dashboard against real services on loopback: a board whose API answers slowly (2 s, so
//! the slow-call rate opens its circuit, though every call succeeds), next to an instance whose
//! `/metrics` is garbage.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use platform::Source;

/// Serves `router` on a free loopback port until the test ends.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A service's `run` on a free loopback port, until the test ends.
async fn spawn<F, Fut, E>(run: F) -> SocketAddr
where
    F: FnOnce(tokio::net::TcpListener) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(run(listener));
    addr
}

/// Forwards every request to `api` after 2 s: an API that answers, slowly.
async fn slowly(State(api): State<String>, request: Request) -> Response {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let url = format!("{api}{}", request.uri());
    let method = request.method().clone();
    let headers = request.headers().clone();
    let body: Bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let answer = reqwest::Client::new()
        .request(method, url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let headers = answer.headers().clone();
    let body = answer.bytes().await.unwrap_or_default();
    (status, headers, body).into_response()
}

async fn tiles(dashboard: SocketAddr) -> serde_json::Value {
    reqwest::get(format!("http://{dashboard}/api/tiles"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_api_opens_the_circuit_by_slow_calls_and_garbage_metrics_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("todo.db").display());
    let api_config = todo_api::Config::from_source(&Source::from_pairs([
        ("TODO_PRIMARY_URL", db.as_str()),
        ("TODO_SEED", "1"),
    ]))
    .unwrap();
    let api = spawn(|l| todo_api::run(l, api_config, std::future::pending())).await;
    let slow = serve(
        Router::new()
            .fallback(slowly)
            .with_state(format!("http://{api}")),
    )
    .await;

    let slow_url = format!("http://{slow}");
    let web_config = todo_web::Config::from_source(&Source::from_pairs([
        ("TODO_API_URL", slow_url.as_str()),
        // Longer than the API takes: every call succeeds, slowly.
        ("FLOTILLA_CALL_TODO_API_TIMEOUT", "5s"),
        ("FLOTILLA_CALL_TODO_API_SLOW_CALL_DURATION", "1s"),
        ("FLOTILLA_CALL_TODO_API_SLOW_CALL_RATE", "80"),
        ("FLOTILLA_CALL_TODO_API_MINIMUM_CALLS", "5"),
    ]))
    .unwrap();
    let web = spawn(|l| todo_web::run(l, web_config, std::future::pending())).await;
    let garbage = serve(Router::new().route(
        "/metrics",
        axum::routing::get(|| async { "<html><body>not metrics</body></html>" }),
    ))
    .await;

    let targets = format!("todo-web=http://{web},broken=http://{garbage}");
    let dashboard_config = dashboard::Config::from_source(&Source::from_pairs([
        ("DASHBOARD_TARGETS", targets.as_str()),
        ("DASHBOARD_INTERVAL", "500ms"),
    ]))
    .unwrap();
    let dashboard = spawn(|l| dashboard::run(l, dashboard_config, std::future::pending())).await;

    // Two pages at once: six slow calls, each a success that took 2 s.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let page = || client.get(format!("http://{web}/")).send();
    let (a, b) = tokio::join!(page(), page());
    assert_eq!(a.unwrap().status(), 200);
    assert_eq!(b.unwrap().status(), 200);

    // Open now: the next page does not wait for the API.
    let began = Instant::now();
    let answer = page().await.unwrap();
    assert_eq!(answer.status(), 200);
    let took = began.elapsed();
    let text = answer.text().await.unwrap();
    assert!(text.contains("TODO API unavailable"), "{text}");
    assert!(
        took < Duration::from_secs(1),
        "the open circuit still waited {took:?}"
    );

    let metrics = client
        .get(format!("http://{web}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"flotilla_calls_total{target="todo-api",outcome="failure"} 0"#)
            && metrics.contains(r#"flotilla_calls_total{target="todo-api",outcome="timeout"} 0"#),
        "no call failed; slowness alone opened it:\n{metrics}"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let view = loop {
        let view = tiles(dashboard).await;
        let open =
            view["tiles"].as_array().unwrap().iter().any(|t| {
                t["service"] == "todo-web" && t["name"] == "todo-api" && t["state"] == "open"
            });
        if open {
            break view;
        }
        assert!(Instant::now() < deadline, "never shown open: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let broken = view["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "broken")
        .unwrap();
    let error = broken["unreadable"][0]["error"].as_str().unwrap();
    assert!(error.contains("not Prometheus text"), "{error}");

    // The page says so too, and works without JavaScript (it refreshes itself).
    let html = client
        .get(format!("http://{dashboard}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(r#"data-name="todo-api" data-state="open""#),
        "{html}"
    );
    assert!(html.contains("cannot read its metrics: not Prometheus text"));
    assert!(html.contains(r#"<noscript><meta http-equiv="refresh""#));

    // The event stream sends the tiles.
    let mut stream = client
        .get(format!("http://{dashboard}/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        stream.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut seen = String::new();
    while !seen.contains("data-state=\"open\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.starts_with("event: tiles"), "{seen}");
}
