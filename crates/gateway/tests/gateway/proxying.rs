//! Proxying that is correct HTTP: routes, headers, HTTP/2 clients, upgrades, streaming, limits.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, one_upstream, server, spawn_gateway, spawn_gateway_with};

/// Sends raw bytes and reads until the server closes or `wait` passes without data.
pub(crate) async fn raw(addr: std::net::SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(Ok(n)) = tokio::time::timeout(wait, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn json_body(answer: &str) -> Value {
    let body = &answer[answer.find("\r\n\r\n").expect("a complete head") + 4..];
    // The backend answers with Content-Length, so the body is the JSON itself.
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

#[tokio::test]
async fn host_is_kept_hop_by_hop_headers_dropped_and_forwarded_headers_set() {
    let backend = Backend::start("a").await;
    let gateway = spawn_gateway(&one_upstream(&[server(backend.addr, "")], "")).await;
    let answer = raw(
        gateway.addr,
        b"GET /x?y=1 HTTP/1.1\r\nHost: todo.example\r\nX-Forwarded-For: 203.0.113.9\r\n\
          Connection: close, x-secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
          Proxy-Authorization: Basic eDp5\r\nX-Request-Id: trace-me\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-request-id: trace-me"),
        "{answer}"
    );
    let seen = json_body(&answer);
    assert_eq!(seen["uri"], "/x?y=1");
    let headers = &seen["headers"];
    assert_eq!(headers["host"], "todo.example");
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(headers["x-real-ip"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "todo.example");
    assert_eq!(headers["x-request-id"], "trace-me");
    for gone in ["x-secret", "keep-alive", "te", "proxy-authorization"] {
        assert!(
            headers.get(gone).is_none(),
            "{gone} reached the backend: {headers}"
        );
    }
}

#[tokio::test]
async fn requests_get_a_request_id_that_the_backend_and_client_both_see() {
    let backend = Backend::start("a").await;
    let gateway = spawn_gateway(&one_upstream(&[server(backend.addr, "")], "")).await;
    let response = gateway.get("/").await;
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["headers"]["x-request-id"], id.as_str());
}

#[tokio::test]
async fn the_longest_prefix_wins_and_prefixes_can_be_stripped() {
    let (web, api) = (Backend::start("web").await, Backend::start("api").await);
    let config = format!(
        "[[route]]\nupstream = \"web\"\n\
         [[route]]\npath = \"/api/\"\nstrip_prefix = true\nupstream = \"api\"\n\
         [upstream.web]\nserver = [{}]\n[upstream.api]\nserver = [{}]\n",
        server(web.addr, ""),
        server(api.addr, "")
    );
    let gateway = spawn_gateway(&config).await;
    let seen = gateway.get_json("/api/todo?status=DONE").await;
    assert_eq!(
        (seen["backend"].as_str(), seen["uri"].as_str()),
        (Some("api"), Some("/todo?status=DONE"))
    );
    let seen = gateway.get_json("/apiary").await;
    assert_eq!(
        (seen["backend"].as_str(), seen["uri"].as_str()),
        (Some("web"), Some("/apiary"))
    );
}

#[tokio::test]
async fn a_request_no_route_matches_is_404_naming_host_and_path() {
    let backend = Backend::start("a").await;
    let config = format!(
        "[[route]]\nhost = \"only.example\"\nupstream = \"app\"\n[upstream.app]\nserver = [{}]\n",
        server(backend.addr, "")
    );
    let gateway = spawn_gateway(&config).await;
    let response = gateway.get("/somewhere").await;
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-flotilla-error"], "downstream");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("\"/somewhere\""),
        "{body}"
    );
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn http2_clients_reach_http1_backends_with_their_host() {
    let backend = Backend::start("a").await;
    let gateway = spawn_gateway(&one_upstream(&[server(backend.addr, "")], "")).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client.get(gateway.url("/h2")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(seen["headers"]["host"], gateway.addr.to_string().as_str());
}

#[tokio::test]
async fn protocol_upgrades_pass_through() {
    let backend = Backend::start("a").await;
    let gateway = spawn_gateway(&one_upstream(&[server(backend.addr, "")], "")).await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(
            b"GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: shout\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: shout"), "{head}");
    for word in ["hello", "again"] {
        stream.write_all(word.as_bytes()).await.unwrap();
        let mut echoed = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
            .await
            .expect("echo within 5 s")
            .unwrap();
        assert_eq!(&echoed, word.to_ascii_uppercase().as_bytes());
    }
}

/// Peak resident memory of this test process, in MiB (each test runs in its own process under
/// nextest; under `cargo test` the peak is shared, which only makes the check stricter).
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}

#[tokio::test]
async fn a_gibibyte_streams_through_both_ways_in_constant_memory() {
    const GIB: u64 = 1 << 30;
    const CHUNK: usize = 256 * 1024;
    let backend = Backend::start("a").await;
    let gateway = spawn_gateway(&one_upstream(&[server(backend.addr, "")], "")).await;
    let before = peak_rss_mib();

    // Upload: chunked (no length), from a generator, so the client holds one chunk at a time.
    let chunk = bytes::Bytes::from(vec![7u8; CHUNK]);
    let chunks = (GIB / CHUNK as u64) as usize;
    let stream = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let response = gateway
        .client
        .post(gateway.url("/upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["body_len"], GIB);
    assert_eq!(seen["headers"]["transfer-encoding"], "chunked");

    // Download: chunked from the backend, counted as it arrives.
    let response = gateway.get(&format!("/download/{GIB}")).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut received = 0u64;
    while let Some(chunk) = body.next().await {
        received += chunk.unwrap().len() as u64;
    }
    assert_eq!(received, GIB);

    let growth = peak_rss_mib().saturating_sub(before);
    assert!(
        growth < 128,
        "peak memory grew by {growth} MiB while 2 GiB passed through"
    );
}

#[tokio::test]
async fn small_and_large_bodies_arrive_intact() {
    let backend = Backend::start("a").await;
    let gateway = spawn_gateway(&one_upstream(&[server(backend.addr, "")], "")).await;
    for size in [0usize, 1, 64 * 1024, 64 * 1024 + 1, 3 * 1024 * 1024] {
        let body: Vec<u8> = (0..size).map(|i| (i * 7 % 256) as u8).collect();
        let digest = body
            .iter()
            .fold(0u64, |d, b| d.wrapping_mul(31).wrapping_add(u64::from(*b)));
        let response = gateway
            .client
            .put(gateway.url("/b"))
            .body(body)
            .send()
            .await
            .unwrap();
        let seen: Value = response.json().await.unwrap();
        assert_eq!(seen["body_len"], size as u64, "size {size}");
        assert_eq!(seen["digest"], digest, "size {size}");
    }
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let backend = Backend::start("a").await;
    let gateway = spawn_gateway_with(
        "max_header_size = 8192",
        &one_upstream(&[server(backend.addr, "")], ""),
    )
    .await;
    let big = "x".repeat(20_000);
    let response = gateway
        .client
        .get(gateway.url("/"))
        .header("x-big", big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn a_client_that_stalls_mid_body_gets_408() {
    let backend = Backend::start("a").await;
    let gateway = spawn_gateway_with(
        "client_body_timeout = \"300ms\"",
        &one_upstream(&[server(backend.addr, "")], ""),
    )
    .await;
    // Small bodies are read before a server is picked; large ones stream to the server.
    for length in [100, 1_000_000] {
        let request = format!(
            "POST /slow-client HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n0123456789"
        );
        let answer = raw(gateway.addr, request.as_bytes(), Duration::from_secs(10)).await;
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "length {length}: {answer}"
        );
        assert!(answer.contains("client body timeout"), "{answer}");
    }
}

#[tokio::test]
async fn smuggling_attempts_cannot_slip_a_second_request_through() {
    let backend = Backend::start("a").await;
    let gateway = spawn_gateway(&one_upstream(&[server(backend.addr, "")], "")).await;

    // Both lengths, in either order, after a clean request on the same connection: the clean one
    // is answered, the other gets 400 and the connection closes, so nothing after it is read as
    // a request.
    for attack in [
        &b"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"POST /second HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\ncontent-length: 3\r\n\r\n",
    ] {
        let mut bytes = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        bytes.extend_from_slice(attack);
        bytes.extend_from_slice(b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
        let answer = raw(gateway.addr, &bytes, Duration::from_secs(5)).await;
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 2, "{answer}");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let second = &answer[answer.rfind("HTTP/1.1 ").unwrap()..];
        assert!(second.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(!answer.contains("smuggled"));
    }
    assert_eq!(
        backend.hits(),
        2,
        "only the two clean requests reached the backend"
    );

    for attack in [
        &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nxxxx",
        b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let answer = raw(gateway.addr, attack, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    assert_eq!(backend.hits(), 2);
}

#[tokio::test]
async fn the_access_log_has_one_valid_json_line_per_request_with_the_seed_fields() {
    let backend = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let gateway = crate::helpers::spawn_gateway_logging(
        path.to_str().unwrap(),
        "",
        &one_upstream(&[server(backend.addr, "")], ""),
    )
    .await;
    let odd_agent = "agent \"quoted\" \\ back\tslash {\"json\": true}";
    let response = gateway
        .client
        .get(gateway.url("/x?y=1"))
        .header("user-agent", odd_agent)
        .header("referer", "http://example/\"ref\"")
        .header("x-request-id", "log-me")
        .send()
        .await
        .unwrap();
    let body_len = response.bytes().await.unwrap().len();
    let download = gateway.get("/download/300000").await.bytes().await.unwrap();
    assert_eq!(download.len(), 300_000);

    let lines = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= 2 {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let entries: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    let first = &entries[0];
    assert_eq!(first["request"], "GET /x?y=1 HTTP/1.1");
    assert_eq!(first["uri"], "/x");
    assert_eq!(first["query_string"], "y=1");
    assert_eq!(first["status"], "200");
    assert_eq!(first["useragent"], odd_agent);
    assert_eq!(first["referer"], "http://example/\"ref\"");
    assert_eq!(first["forwardedfor"], "-");
    assert_eq!(first["request_id"], "log-me");
    assert_eq!(first["upstream_addr"], backend.addr.to_string().as_str());
    assert_eq!(first["route"], "/");
    assert_eq!(first["body_bytes_sent"], body_len.to_string().as_str());
    assert!(first["time"].as_str().unwrap().ends_with("+00:00"));
    assert_eq!(
        entries[1]["body_bytes_sent"], "300000",
        "streamed bodies are counted as sent"
    );
}
