//! Hostile input: every attack the gateway was found open to, and the smuggling, header and
//! slowloris cases it already withstood, as regression tests. The byte-level cases are data
//! (`tests/hostile/cases.toml`, shared with `scripts/hostile-vs-nginx.py`); the ones that need
//! time, several connections or a misbehaving upstream are tests of their own below.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use platform::Source;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{
    Backend, TestGateway, eventually, one_upstream, server, spawn_gateway_config,
};

#[derive(Deserialize)]
struct Cases {
    case: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    group: String,
    request: String,
    expect: Vec<u16>,
    backend: usize,
}

fn hostile_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile")
}

/// The hostile cases' gateway (`tests/hostile/gateway.toml`) in front of `backend`, with `extra`
/// TOML appended and `listener` keys added to its listener.
async fn hostile_gateway(backend: SocketAddr, listener: &str, extra: &str) -> TestGateway {
    let dir = hostile_dir();
    let text = std::fs::read_to_string(dir.join("gateway.toml")).unwrap();
    let text = text.replacen(
        "bind = \"${LISTEN:-127.0.0.1:0}\"",
        &format!("bind = \"${{LISTEN:-127.0.0.1:0}}\"\n{listener}"),
        1,
    ) + extra;
    let source = Source::from_pairs([
        ("BACKEND", backend.to_string()),
        ("HTPASSWD", dir.join("htpasswd").display().to_string()),
        ("ADMIN", "127.0.0.1:0".to_string()),
    ]);
    let loaded = gateway::load::from_text("gateway.toml", &text, &source).expect("valid config");
    spawn_gateway_config(loaded).await
}

/// The statuses of the answers on a connection that sent `request`, read until it closes or is
/// quiet for a second.
async fn statuses(addr: SocketAddr, request: &[u8]) -> (Vec<u16>, String) {
    let answer = crate::proxying::raw(addr, request, Duration::from_secs(1)).await;
    let statuses = regex::Regex::new(r"HTTP/1\.1 (\d{3}) ")
        .unwrap()
        .captures_iter(&answer)
        .map(|c| c[1].parse().unwrap())
        .collect();
    (statuses, answer)
}

#[tokio::test]
async fn every_hostile_case_gets_its_answer_and_reaches_the_upstream_only_as_allowed() {
    let cases: Cases =
        toml::from_str(&std::fs::read_to_string(hostile_dir().join("cases.toml")).unwrap())
            .unwrap();
    let mut failures = Vec::new();
    for case in &cases.case {
        // A fresh gateway and backend per case: rate limits and counts start at zero.
        let backend = Backend::start("app").await;
        let gateway = hostile_gateway(backend.addr, "", "").await;
        let (statuses, answer) = statuses(gateway.addr, case.request.as_bytes()).await;
        if statuses != case.expect || backend.hits() != case.backend {
            failures.push(format!(
                "[{}] {}: expected {:?} with {} reaching the upstream, got {statuses:?} with {}\n{answer}",
                case.group,
                case.name,
                case.expect,
                case.backend,
                backend.hits()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Reads from `stream` until it closes; `true` if it did within `limit`.
async fn closes_within(stream: &mut TcpStream, limit: Duration) -> (bool, Vec<u8>) {
    let mut got = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (closed, got)
}

#[tokio::test]
async fn cleartext_http2_that_sends_a_partial_preface_or_nothing_more_is_closed_in_time() {
    let backend = Backend::start("app").await;
    let gateway = hostile_gateway(backend.addr, "keepalive_timeout = \"1s\"", "").await;

    // Part of the preface, then silence: the connection is not kept (it was for ever).
    let mut partial = TcpStream::connect(gateway.addr).await.unwrap();
    partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let (closed, _) = closes_within(&mut partial, Duration::from_secs(10)).await;
    assert!(closed, "a partial preface held the connection");

    // The whole preface and SETTINGS, then no stream: GOAWAY, then the close.
    let mut silent = TcpStream::connect(gateway.addr).await.unwrap();
    silent
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let started = Instant::now();
    let (closed, got) = closes_within(&mut silent, Duration::from_secs(10)).await;
    assert!(closed, "a silent HTTP/2 connection was kept");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "closed before its time"
    );
    // Frames: 9-byte headers; a GOAWAY is type 7.
    let mut at = 0;
    let mut types = Vec::new();
    while at + 9 <= got.len() {
        let len =
            usize::from(got[at]) << 16 | usize::from(got[at + 1]) << 8 | usize::from(got[at + 2]);
        types.push(got[at + 3]);
        at += 9 + len;
    }
    assert!(types.contains(&7), "no GOAWAY among frames {types:?}");

    // A client that keeps using its HTTP/2 connection is not cut off.
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for _ in 0..3 {
        let response = client.get(gateway.url("/public/")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
}

#[tokio::test]
async fn half_heads_at_the_connection_cap_do_not_lock_out_a_client_that_sends_a_request() {
    let backend = Backend::start("app").await;
    // The header read timeout is long: a slot freed only by it would come far too late.
    let gateway = hostile_gateway(
        backend.addr,
        "max_connections = 40\nkeepalive_timeout = \"60s\"",
        "",
    )
    .await;
    let mut slow = Vec::new();
    for _ in 0..60 {
        let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: public.example\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    let started = Instant::now();
    let (statuses, answer) = statuses(
        gateway.addr,
        b"GET /public/ HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses, [200], "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered after {:?}",
        started.elapsed()
    );
    // Half-read connections were recycled to make room: some of them are closed now.
    let mut closed = 0;
    for stream in &mut slow {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(20), stream.read(&mut byte)).await
        {
            closed += 1;
        }
    }
    assert!(
        closed >= 20,
        "only {closed} half-read connections were recycled"
    );
}

#[tokio::test]
async fn with_request_buffering_a_slow_upload_holds_no_upstream_connection() {
    let backend = Backend::start("app").await;
    let gateway = hostile_gateway(
        backend.addr,
        "",
        "\n[[route]]\npath = \"/buffered/\"\nrequest_buffering = true\nupstream = \"app\"\n",
    )
    .await;
    for (path, buffered) in [("/buffered/up", true), ("/public/up", false)] {
        let before = backend.hits();
        let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: public.example\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&[b'a'; 70_000]).await.unwrap();
        // The client pauses mid-body.
        let reached = eventually(Duration::from_millis(800), || async {
            backend.hits() > before
        })
        .await;
        assert_eq!(
            reached,
            !buffered,
            "{path}: the upstream {} the request before its body was in",
            if reached { "got" } else { "did not get" }
        );
        stream.write_all(&[b'a'; 30_000]).await.unwrap();
        let (closed, answer) = closes_within(&mut stream, Duration::from_secs(10)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            closed && answer.starts_with("HTTP/1.1 200"),
            "{path}: {answer}"
        );
        assert!(answer.contains("\"body_len\":100000"), "{path}: {answer}");
    }
}

/// A gateway whose connections drain for at most `drain`.
async fn gateway_draining_in(toml: &str, drain: &str) -> TestGateway {
    let text = format!(
        "access_log = \"off\"\n[admin]\nbind = \"127.0.0.1:0\"\n[[listener]]\nbind = \"127.0.0.1:0\"\nmax_connections = 1\n{toml}"
    );
    let loaded = gateway::load::from_text("test.toml", &text, &Source::default()).unwrap();
    let common = platform::CommonConfig::from_source(&Source::from_pairs([(
        "FLOTILLA_DRAIN_TIMEOUT",
        drain,
    )]))
    .unwrap();
    crate::helpers::start_gateway(gateway::Config::new(loaded, common)).await
}

#[tokio::test]
async fn a_tunnel_holds_its_place_under_the_cap_and_closes_when_draining_ends() {
    let backend = Backend::start("app").await;
    let gateway = gateway_draining_in(&one_upstream(&[server(backend.addr, "")], ""), "1s").await;
    let mut tunnel = TcpStream::connect(gateway.addr).await.unwrap();
    tunnel
        .write_all(
            b"GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: shout\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = vec![0u8; 1024];
    let n = tunnel.read(&mut head).await.unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    tunnel.write_all(b"hello").await.unwrap();
    let mut echoed = [0u8; 5];
    tunnel.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"HELLO");

    // The tunnel takes the listener's only place: another client is not served meanwhile.
    let waiting = tokio::time::timeout(
        Duration::from_millis(700),
        gateway.client.get(gateway.url("/")).send(),
    )
    .await;
    assert!(
        waiting.is_err(),
        "a second connection was served past the cap"
    );

    // Shutting down: the tunnel ends with the drain timeout, not when its peers please.
    let started = Instant::now();
    let stopping = tokio::spawn(gateway.shutdown());
    let (closed, _) = closes_within(&mut tunnel, Duration::from_secs(10)).await;
    assert!(closed, "the tunnel outlived draining");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    stopping.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_client_that_hangs_up_cancels_its_upstream_request_on_http1_and_http2() {
    let backend = Backend::start("app").await;
    let gateway = hostile_gateway(backend.addr, "", "").await;

    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"GET /hang HTTP/1.1\r\nHost: public.example\r\n\r\n")
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || async { backend.hits() == 1 }).await);
    drop(stream);
    assert!(
        eventually(Duration::from_secs(5), || async {
            backend.cancelled.load(Ordering::SeqCst) == 1
        })
        .await,
        "HTTP/1: the upstream request went on after the client left"
    );

    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let request = tokio::spawn({
        let url = gateway.url("/hang");
        async move { client.get(url).send().await }
    });
    assert!(eventually(Duration::from_secs(5), || async { backend.hits() == 2 }).await);
    request.abort();
    assert!(
        eventually(Duration::from_secs(5), || async {
            backend.cancelled.load(Ordering::SeqCst) == 2
        })
        .await,
        "HTTP/2: the upstream request went on after the client left"
    );
}

/// A one-connection upstream that answers every request with `answer` and then keeps the
/// connection open, silent.
async fn misbehaving_upstream(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(answer).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_that_stalls_mid_body_is_cut_off_after_its_read_timeout() {
    let upstream = misbehaving_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nthe first bytes, then nothing",
    )
    .await;
    let gateway = crate::helpers::spawn_gateway(&one_upstream(
        &[server(upstream, "")],
        "read_timeout = \"500ms\"\nmax_attempts = 1",
    ))
    .await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (closed, got) = closes_within(&mut stream, Duration::from_secs(10)).await;
    let got = String::from_utf8_lossy(&got);
    assert!(closed, "the client was held by a stalled upstream: {got}");
    assert!(
        got.starts_with("HTTP/1.1 200") && got.contains("the first bytes"),
        "{got}"
    );
}

#[tokio::test]
async fn a_switch_of_protocols_nobody_asked_for_is_a_bad_gateway() {
    let upstream = misbehaving_upstream(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n",
    )
    .await;
    let gateway =
        crate::helpers::spawn_gateway(&one_upstream(&[server(upstream, "")], "max_attempts = 1"))
            .await;
    let response = gateway.get("/").await;
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["message"], "bad gateway");
}

#[tokio::test]
async fn an_http2_host_header_that_disagrees_with_its_authority_is_refused() {
    let backend = Backend::start("app").await;
    let gateway = hostile_gateway(backend.addr, "", "").await;
    let stream = TcpStream::connect(gateway.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let ask = |host: &'static str| {
        http::Request::builder()
            .uri("http://public.example/public/")
            .header("host", host)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let refused = sender.send_request(ask("secret.example")).await.unwrap();
    assert_eq!(refused.status(), 400);
    let agreed = sender.send_request(ask("PUBLIC.example")).await.unwrap();
    assert_eq!(agreed.status(), 200);
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn credentials_for_the_gateway_are_not_passed_upstream_unless_the_route_says_so() {
    let backend = Backend::start("app").await;
    let extra = "\n[[route]]\npath = \"/pass/\"\nbasic_auth_file = \"${HTPASSWD}\"\npass_authorization = true\nupstream = \"app\"\n";
    let gateway = hostile_gateway(backend.addr, "", extra).await;
    for (path, passed) in [("/auth/x", false), ("/pass/x", true)] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: public.example\r\nAuthorization: Basic YWxpY2U6czNjcmV0\r\nConnection: close\r\n\r\n"
        );
        let (statuses, answer) = statuses(gateway.addr, request.as_bytes()).await;
        assert_eq!(statuses, [200], "{answer}");
        assert_eq!(
            answer.contains("\"authorization\""),
            passed,
            "{path}: {answer}"
        );
    }
}

#[tokio::test]
async fn the_admin_listener_refuses_foreign_hosts_and_reloads_a_browser_page_could_send() {
    let backend = Backend::start("app").await;
    let gateway = hostile_gateway(backend.addr, "", "").await;
    let admin = gateway.admin;
    let ask = |request: String| async move { statuses(admin, request.as_bytes()).await };
    let (status, _) =
        ask("GET /status HTTP/1.1\r\nHost: evil.example:9901\r\nConnection: close\r\n\r\n".into())
            .await;
    assert_eq!(status, [403], "DNS rebinding");
    let (status, _) = ask(format!(
        "GET /status HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert_eq!(status, [200]);
    let (status, _) = ask(format!(
        "POST /reload HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert_eq!(status, [403], "a reload without the admin header");
    let (status, _) = ask(format!(
        "POST /reload HTTP/1.1\r\nHost: {admin}\r\nX-Flotilla-Admin: 1\r\nOrigin: http://evil.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert_eq!(status, [403], "a reload from another origin");
    // Asked properly, the reload is tried (this test gateway has no file to read again: 422).
    let (status, answer) = ask(format!(
        "POST /reload HTTP/1.1\r\nHost: {admin}\r\nX-Flotilla-Admin: 1\r\nOrigin: http://{admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ))
    .await;
    assert_eq!(status, [422], "{answer}");
}

#[tokio::test]
async fn an_http2_client_that_stops_reading_is_dropped_but_a_slow_upstream_is_waited_for() {
    let backend = Backend::start("app").await;
    let gateway = hostile_gateway(backend.addr, "send_timeout = \"1s\"", "").await;
    let connect = || async {
        let stream = TcpStream::connect(gateway.addr).await.unwrap();
        let (sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        (sender, tokio::spawn(connection))
    };
    let ask = |path: &str| {
        http::Request::builder()
            .uri(format!("http://public.example{path}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };

    // An answer slower than the send timeout is not the client's doing: it is waited for.
    let (mut sender, _connection) = connect().await;
    let slow = sender.send_request(ask("/slow/2500")).await.unwrap();
    assert_eq!(slow.status(), 200);

    // A client that takes nothing of a large answer: its flow-control window fills, and after
    // the send timeout its connection is closed.
    let (mut sender, connection) = connect().await;
    let large = sender
        .send_request(ask("/download/20000000"))
        .await
        .unwrap();
    assert_eq!(large.status(), 200);
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(15), connection).await;
    assert!(ended.is_ok(), "the stalled connection was kept");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    drop(large);
}
