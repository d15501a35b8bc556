//! Load balancing, health, retries and their budget, timeouts, backups.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Backend, closed_port, eventually, one_upstream, server, spawn_gateway};

#[tokio::test]
async fn round_robin_spreads_requests_by_weight() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let gateway = spawn_gateway(&one_upstream(
        &[server(a.addr, "weight = 3"), server(b.addr, "")],
        "",
    ))
    .await;
    for _ in 0..40 {
        gateway.get_json("/").await;
    }
    assert_eq!((a.hits(), b.hits()), (30, 10));
}

#[tokio::test]
async fn a_request_that_never_reached_a_server_is_retried_whatever_its_method() {
    let live = Backend::start("live").await;
    let dead = closed_port().await;
    // max_fails = 0 keeps the dead server in rotation, so every other request tries it first.
    let gateway = spawn_gateway(&one_upstream(
        &[server(dead, "max_fails = 0"), server(live.addr, "")],
        "",
    ))
    .await;
    for i in 0..20 {
        let response = gateway
            .client
            .post(gateway.url("/todo"))
            .body(format!("{{\"n\":{i}}}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "request {i}");
        let seen: Value = response.json().await.unwrap();
        assert_eq!(seen["body_len"], format!("{{\"n\":{i}}}").len());
    }
    assert_eq!(live.hits(), 20);
}

#[tokio::test]
async fn idempotent_requests_are_retried_on_503_and_posts_are_not() {
    let failing = Backend::failing("failing", 503).await;
    let good = Backend::start("good").await;
    let gateway = spawn_gateway(&one_upstream(
        &[server(failing.addr, "max_fails = 0"), server(good.addr, "")],
        "",
    ))
    .await;
    for _ in 0..10 {
        assert_eq!(gateway.get("/").await.status(), 200);
    }
    let mut posts = Vec::new();
    for _ in 0..10 {
        posts.push(
            gateway
                .client
                .post(gateway.url("/"))
                .body("x")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    // Round robin alternates: half the POSTs land on the failing server and are passed on.
    assert_eq!(posts.iter().filter(|s| **s == 503).count(), 5, "{posts:?}");
    assert_eq!(posts.iter().filter(|s| **s == 200).count(), 5, "{posts:?}");
}

#[tokio::test]
async fn bodies_over_the_retry_buffer_are_not_replayed() {
    let failing = Backend::failing("failing", 503).await;
    let good = Backend::start("good").await;
    let gateway = spawn_gateway(&one_upstream(
        &[server(failing.addr, "max_fails = 0"), server(good.addr, "")],
        "retry_buffer = 1024",
    ))
    .await;
    let (mut small_ok, mut large_failed) = (0, 0);
    for _ in 0..10 {
        let small = gateway
            .client
            .put(gateway.url("/"))
            .body(vec![1u8; 1000])
            .send()
            .await
            .unwrap();
        small_ok += usize::from(small.status() == 200);
    }
    for _ in 0..10 {
        let large = gateway
            .client
            .put(gateway.url("/"))
            .body(vec![1u8; 4096])
            .send()
            .await
            .unwrap();
        large_failed += usize::from(large.status() == 503);
    }
    assert_eq!(small_ok, 10, "small PUTs are retried on the good server");
    assert_eq!(
        large_failed, 5,
        "large PUTs that hit the failing server are passed on"
    );
}

#[tokio::test]
async fn the_retry_budget_caps_retries_at_its_fraction_of_requests() {
    let (a, b) = (
        Backend::failing("a", 503).await,
        Backend::failing("b", 503).await,
    );
    let gateway = spawn_gateway(&one_upstream(
        &[
            server(a.addr, "max_fails = 0"),
            server(b.addr, "max_fails = 0"),
        ],
        "retry_budget = 0.2\nmin_retries_per_second = 0",
    ))
    .await;
    for _ in 0..100 {
        assert_eq!(gateway.get("/").await.status(), 503);
    }
    let attempts = a.hits() + b.hits();
    // 100 requests and at most 20% more: a failing upstream is not hit with a retry storm.
    assert!(
        (115..=120).contains(&attempts),
        "{attempts} attempts for 100 requests"
    );
}

#[tokio::test]
async fn when_every_server_is_down_the_answer_is_quick_and_names_nothing_internal() {
    let (dead_a, dead_b) = (closed_port().await, closed_port().await);
    let gateway = spawn_gateway(&one_upstream(&[server(dead_a, ""), server(dead_b, "")], "")).await;
    // The first request finds both dead (502, after trying each); then both are out (503).
    // The answers say what happened in general terms, with the request id to find the details
    // in the log; never the upstream's name, a server's address or a system error.
    let first = gateway.get("/").await;
    assert_eq!(first.status(), 502);
    assert_eq!(first.headers()["x-flotilla-error"], "upstream");
    let id = first.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["message"], "bad gateway");
    assert_eq!(body["request_id"], id.as_str());
    let text = body.to_string();
    for internal in [
        "app",
        &dead_a.to_string(),
        &dead_b.to_string(),
        "refused",
        "os error",
    ] {
        assert!(!text.contains(internal), "{internal} in {text}");
    }
    let second = gateway.get("/").await;
    assert_eq!(second.status(), 503);
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["message"], "no server is available");
}

#[tokio::test]
async fn a_server_slower_than_the_response_timeout_gets_504() {
    let slow = Backend::start("slow").await;
    let gateway = spawn_gateway(&one_upstream(
        &[server(slow.addr, "")],
        "response_timeout = \"200ms\"",
    ))
    .await;
    let response = gateway.get("/slow/3000").await;
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "upstream timed out", "{body}");
    assert_eq!(gateway.get("/slow/10").await.status(), 200);
}

#[tokio::test]
async fn active_health_checks_take_a_server_out_and_bring_it_back() {
    let mut a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let gateway = spawn_gateway(&one_upstream(
        // No passive marks: only the health checks move server a.
        &[server(a.addr, "max_fails = 0"), server(b.addr, "max_fails = 0")],
        "health_check = { path = \"/status/200\", interval = \"100ms\", timeout = \"100ms\", rise = 2, fall = 2 }",
    ))
    .await;
    let ready_detail = || async {
        let url = format!("http://{}/ready", gateway.admin);
        let report: Value = gateway
            .client
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        report["checks"]["upstream app"]["detail"]["available"].as_u64()
    };
    assert_eq!(ready_detail().await, Some(2));

    a.stop().await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            ready_detail().await == Some(1)
        })
        .await
    );
    // Out of rotation: no request even tries it, so nothing fails or is retried.
    let before = b.hits();
    for _ in 0..10 {
        assert_eq!(gateway.get("/").await.status(), 200);
    }
    assert_eq!(b.hits() - before, 10);

    a.restart().await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            ready_detail().await == Some(2)
        })
        .await
    );
    let before = a.hits();
    for _ in 0..10 {
        gateway.get_json("/").await;
    }
    assert!(a.hits() > before, "server a is back in rotation");
}

#[tokio::test]
async fn backups_serve_only_while_no_real_server_is_up() {
    // Seed 002's layout: least_conn; two real servers with max_fails=1 fail_timeout=2s; a backup.
    let mut real1 = Backend::start("real1").await;
    let mut real2 = Backend::start("real2").await;
    let backup = Backend::start("backup").await;
    let gateway = spawn_gateway(&one_upstream(
        &[
            server(real1.addr, "max_fails = 1, fail_timeout = \"2s\""),
            server(real2.addr, "max_fails = 1, fail_timeout = \"2s\""),
            server(backup.addr, "backup = true"),
        ],
        "policy = \"least_conn\"",
    ))
    .await;
    for _ in 0..20 {
        gateway.get_json("/").await;
    }
    assert_eq!(backup.hits(), 0);

    real1.stop().await;
    real2.stop().await;
    for _ in 0..20 {
        let seen = gateway.get_json("/").await;
        assert_eq!(seen["backend"], "backup");
    }

    real1.restart().await;
    real2.restart().await;
    // Once fail_timeout has passed the real servers are tried again and keep the traffic.
    assert!(
        eventually(Duration::from_secs(6), || async {
            gateway.get_json("/").await["backend"] != "backup"
        })
        .await
    );
    let before = backup.hits();
    for _ in 0..20 {
        gateway.get_json("/").await;
    }
    assert_eq!(backup.hits(), before, "the backup is idle again");
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let slow = Backend::start("slow").await;
    let gateway = spawn_gateway(&one_upstream(&[server(slow.addr, "")], "")).await;
    let client = gateway.client.clone();
    let url = gateway.url("/slow/500");
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    assert!(eventually(Duration::from_secs(5), || async { slow.hits() == 1 }).await);
    gateway.shutdown().await.unwrap();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "slow after 500 ms");
}

async fn overflow(gateway: &crate::helpers::TestGateway, limit: &str) -> String {
    let metrics = gateway
        .client
        .get(format!("http://{}/metrics", gateway.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("gateway_upstream_overflow_total{{upstream=\"app\",limit=\"{limit}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or("none")
        .to_string()
}

#[tokio::test]
async fn a_pool_at_max_requests_refuses_at_once_and_counts_it() {
    let backend = Backend::start("only").await;
    let gateway = spawn_gateway(&one_upstream(
        &[server(backend.addr, "")],
        "max_requests = 1",
    ))
    .await;
    // One slow request holds the pool's only place.
    let slow = tokio::spawn(reqwest::get(gateway.url("/slow/1500")));
    assert!(eventually(Duration::from_secs(5), || async { backend.hits() == 1 }).await);
    let refused = gateway.get("/").await;
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("too many requests in flight"),
        "{body}"
    );
    assert_eq!(
        backend.hits(),
        1,
        "the refused request never reached the server"
    );
    assert_eq!(overflow(&gateway, "requests").await, "1");
    // The place comes back when the slow answer ends.
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    assert_eq!(gateway.get("/").await.status(), 200);
}

#[tokio::test]
async fn max_retries_bounds_the_retries_in_flight() {
    let refusing = closed_port().await;
    let good = Backend::start("good").await;
    let gateway = spawn_gateway(&one_upstream(
        &[
            server(refusing, "max_fails = 0"),
            server(good.addr, "max_fails = 0"),
        ],
        "max_retries = 1",
    ))
    .await;
    // Two slow requests at once: round robin sends one to the refusing server first, and its
    // retry on the good server (3 s) holds the only retry place.
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(reqwest::get(gateway.url("/slow/3000"))))
        .collect();
    assert!(eventually(Duration::from_secs(5), || async { good.hits() == 2 }).await);
    // Meanwhile a request that lands on the refusing server is not retried.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(gateway.get("/").await.status().as_u16());
    }
    assert!(statuses.contains(&502), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    assert_ne!(overflow(&gateway, "retries").await, "0");
    for request in slow {
        assert_eq!(request.await.unwrap().unwrap().status(), 200);
    }
    // With the place back, every request that lands there is retried again.
    for _ in 0..4 {
        assert_eq!(gateway.get("/").await.status(), 200);
    }
}
