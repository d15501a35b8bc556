//! Edge features over real sockets: compression.

use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
use tokio::io::AsyncReadExt;

use crate::helpers::{Backend, server, spawn_gateway};

fn compressing(backend: &Backend) -> String {
    format!(
        "[[route]]\npath = \"/\"\ncompress = true\nupstream = \"app\"\n\
         [[route]]\npath = \"/plain/\"\nstrip_prefix = true\nupstream = \"app\"\n\
         [upstream.app]\nserver = [{}]\n",
        server(backend.addr, "")
    )
}

async fn decode(encoding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => GzipDecoder::new(body).read_to_end(&mut out).await,
        "br" => BrotliDecoder::new(body).read_to_end(&mut out).await,
        "zstd" => ZstdDecoder::new(body).read_to_end(&mut out).await,
        other => panic!("unexpected encoding {other}"),
    }
    .unwrap();
    out
}

#[tokio::test]
async fn text_is_compressed_as_the_client_accepts_and_decodes_to_the_original() {
    let backend = Backend::start("a").await;
    let gateway = spawn_gateway(&compressing(&backend)).await;
    let original = gateway
        .get("/plain/text/200000")
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(original.len(), 200_000);

    for (accept, expected) in [
        ("gzip", "gzip"),
        ("gzip, deflate, br, zstd", "br"),
        ("zstd, gzip;q=0.5", "zstd"),
    ] {
        let response = gateway
            .client
            .get(gateway.url("/text/200000"))
            .header("accept-encoding", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        assert_eq!(headers["content-encoding"], expected, "{accept}");
        assert!(
            !headers.contains_key("content-length"),
            "streamed, length unknown"
        );
        assert_eq!(headers["vary"], "accept-encoding");
        assert_eq!(
            headers["etag"], "W/\"text-v1\"",
            "a changed body has a weak ETag"
        );
        let body = response.bytes().await.unwrap();
        assert!(body.len() < 20_000, "{expected}: {} bytes", body.len());
        assert_eq!(decode(expected, &body).await, original, "{expected}");
    }
}

#[tokio::test]
async fn small_binary_head_and_unaccepted_answers_are_sent_as_they_are() {
    let backend = Backend::start("a").await;
    let gateway = spawn_gateway(&compressing(&backend)).await;
    let get = |path: &'static str, accept: &'static str| {
        let request = gateway.client.get(gateway.url(path));
        async move {
            let request = if accept.is_empty() {
                request
            } else {
                request.header("accept-encoding", accept)
            };
            request.send().await.unwrap()
        }
    };
    // Below the minimum size: as it is, with its length.
    let small = get("/text/100", "gzip").await;
    assert!(!small.headers().contains_key("content-encoding"));
    assert_eq!(small.headers()["content-length"], "100");
    assert_eq!(small.headers()["vary"], "accept-encoding");
    // Not a compressible type.
    let binary = get("/download/100000", "gzip, br").await;
    assert!(!binary.headers().contains_key("content-encoding"));
    assert_eq!(binary.bytes().await.unwrap().len(), 100_000);
    // The client accepts none of ours, or refuses gzip.
    for accept in ["", "identity", "gzip;q=0"] {
        let plain = get("/text/5000", accept).await;
        assert!(
            !plain.headers().contains_key("content-encoding"),
            "{accept:?}"
        );
        assert_eq!(plain.bytes().await.unwrap().len(), 5000);
    }
    // HEAD keeps the length of the uncompressed answer.
    let head = gateway
        .client
        .head(gateway.url("/text/5000"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(!head.headers().contains_key("content-encoding"));
    assert_eq!(head.headers()["content-length"], "5000");
    // A route without `compress` leaves answers alone, Vary included.
    let route_off = get("/plain/text/5000", "gzip").await;
    assert!(!route_off.headers().contains_key("content-encoding"));
    assert!(!route_off.headers().contains_key("vary"));
}

// Written by Apache's htpasswd: -B, -m, -s.
const HTPASSWD: &str = "alice:$2y$05$w/sDtGpEF2XIzp2jkDzba.B3a/m62zouwpAHTra7WeqydJQgb4pyG\n\
    bob:$apr1$fGHUy2P3$J0HDV/.AesLoXTr.G66zY1\n\
    carol:{SHA}l5/jO3DHu6SJl12UvUCHRgci/IU=\n";

#[tokio::test]
async fn basic_auth_lets_only_users_of_the_file_through_and_never_logs_credentials() {
    let backend = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("htpasswd");
    std::fs::write(&users, HTPASSWD).unwrap();
    let log = dir.path().join("access.log");
    let routes = format!(
        "[[route]]\npath = \"/\"\nbasic_auth_file = {:?}\nupstream = \"app\"\n\
         [[route]]\npath = \"/open/\"\nupstream = \"app\"\n\
         [upstream.app]\nserver = [{}]\n",
        users.to_str().unwrap(),
        server(backend.addr, "")
    );
    let gateway = crate::helpers::spawn_gateway_logging(log.to_str().unwrap(), "", &routes).await;

    let anonymous = gateway.get("/private").await;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Basic realm=\"Restricted\""
    );
    assert_eq!(
        gateway.get("/open/x").await.status(),
        200,
        "other routes stay open"
    );

    let with = |user: &'static str, password: &'static str| {
        gateway
            .client
            .get(gateway.url("/private"))
            .basic_auth(user, Some(password))
            .send()
    };
    for (user, password) in [
        ("alice", "s3cret"),
        ("bob", "p@ss:word"),
        ("carol", "ünïcode"),
    ] {
        assert_eq!(with(user, password).await.unwrap().status(), 200, "{user}");
    }
    for (user, password) in [("alice", "wrong"), ("mallory", "s3cret")] {
        let refused = with(user, password).await.unwrap();
        assert_eq!(refused.status(), 401, "{user}");
        assert!(refused.headers().contains_key("www-authenticate"));
    }
    assert_eq!(
        backend.hits(),
        4,
        "refused requests never reach the upstream"
    );

    gateway.shutdown().await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 7, "{text}");
    for secret in [
        "s3cret",
        "p@ss",
        "cDBzczp3b3Jk",
        "YWxpY2U6czNjcmV0",
        "Basic ",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} in the access log:\n{text}"
        );
    }
}

#[test]
fn an_unusable_htpasswd_file_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("htpasswd");
    std::fs::write(&users, "dave:xyDES12345678\n").unwrap();
    let text = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\nbasic_auth_file = {:?}\nupstream = \"app\"\n\
         [upstream.app]\nserver = [{{ address = \"127.0.0.1:1\" }}]\n",
        users.to_str().unwrap()
    );
    let error = gateway::load::from_text("gw.toml", &text, &platform::Source::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("gw.toml:4: route[0].basic_auth_file: "),
        "{error}"
    );
    assert!(error.contains(":1: unsupported password hash"), "{error}");
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after_and_other_routes_are_not_limited() {
    let backend = Backend::start("a").await;
    let routes = format!(
        "[[route]]\npath = \"/limited/\"\nrate_limit = {{ per_second = 0.5, burst = 3 }}\nupstream = \"app\"\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n\
         [upstream.app]\nserver = [{}]\n",
        server(backend.addr, "")
    );
    let gateway = spawn_gateway(&routes).await;
    for _ in 0..3 {
        assert_eq!(gateway.get("/limited/x").await.status(), 200);
    }
    let refused = gateway.get("/limited/x").await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "2");
    assert_eq!(refused.headers()["x-flotilla-error"], "downstream");
    for _ in 0..10 {
        assert_eq!(gateway.get("/open").await.status(), 200);
    }
    assert_eq!(backend.hits(), 13);
}

#[tokio::test]
async fn a_body_over_max_body_size_gets_413_whether_its_length_is_declared_or_not() {
    let backend = Backend::start("a").await;
    let routes = format!(
        "[[route]]\npath = \"/\"\nmax_body_size = \"1k\"\nupstream = \"app\"\n\
         [upstream.app]\nserver = [{}]\n",
        server(backend.addr, "")
    );
    let gateway = spawn_gateway(&routes).await;
    let post = |body: reqwest::Body| {
        gateway
            .client
            .post(gateway.url("/upload"))
            .body(body)
            .send()
    };

    let fits = post(vec![b'x'; 1024].into()).await.unwrap();
    assert_eq!(fits.status(), 200);
    let declared = post(vec![b'x'; 1025].into()).await.unwrap();
    assert_eq!(declared.status(), 413);
    assert_eq!(
        backend.hits(),
        1,
        "a declared length over the limit never reaches the upstream"
    );

    // Chunked, so the length is only known by counting; over the limit inside the retry buffer...
    let chunks = |n: usize, size: usize| {
        let stream = futures_util::stream::iter(
            (0..n).map(move |_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; size]))),
        );
        reqwest::Body::wrap_stream(stream)
    };
    assert_eq!(post(chunks(4, 512)).await.unwrap().status(), 413);
    assert_eq!(post(chunks(2, 512)).await.unwrap().status(), 200);
    // ...and far beyond it, while streaming to the upstream.
    let big_routes = format!(
        "[[route]]\npath = \"/\"\nmax_body_size = \"100k\"\nupstream = \"app\"\n\
         [upstream.app]\nretry_buffer = 1024\nserver = [{}]\n",
        server(backend.addr, "")
    );
    let streaming = spawn_gateway(&big_routes).await;
    let response = streaming
        .client
        .post(streaming.url("/upload"))
        .body(chunks(300, 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn the_admin_listener_shows_every_server_with_its_state_as_json_html_and_metrics() {
    let backend = Backend::start("a").await;
    let spare = Backend::start("spare").await;
    let dead = crate::helpers::closed_port().await;
    let routes = format!(
        "[[route]]\npath = \"/\"\ncompress = true\nupstream = \"watched\"\n\
         [upstream.watched]\nhealth_check = {{ path = \"/\", interval = \"100ms\", timeout = \"1s\", rise = 1, fall = 1 }}\n\
         server = [{}, {}, {}]\n",
        server(backend.addr, ""),
        server(dead, ""),
        server(spare.addr, "backup = true"),
    );
    let gateway = spawn_gateway(&routes).await;
    let admin = |path: &str| format!("http://{}{path}", gateway.admin);
    // (A name of its own: the metrics recorder is shared by every gateway in this process.)
    // The check takes the dead server out; then every request goes to the live one.
    let mut status = gateway.admin_json("/status").await;
    for _ in 0..200 {
        if status["upstreams"]["watched"]["servers"][1]["state"] == "down" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        status = gateway.admin_json("/status").await;
    }
    assert_eq!(status["routes"][0]["path"], "/");
    assert_eq!(status["routes"][0]["options"][0], "compress");
    let app = &status["upstreams"]["watched"];
    assert_eq!(app["policy"], "round_robin");
    assert_eq!(app["servers"][0]["address"], backend.addr.to_string());
    assert_eq!(app["servers"][0]["state"], "up");
    assert_eq!(app["servers"][1]["state"], "down");
    assert_eq!(app["servers"][1]["health_check"], "failing");
    assert_eq!(app["servers"][2]["state"], "backup");

    for _ in 0..5 {
        assert_eq!(gateway.get("/x").await.status(), 200);
    }
    let status = gateway.admin_json("/status").await;
    let live = &status["upstreams"]["watched"]["servers"][0];
    assert!(live["requests"].as_u64().unwrap() >= 5, "{live}");
    assert_eq!(live["active"], 0);
    assert_eq!(status["upstreams"]["watched"]["servers"][1]["requests"], 0);

    let page = gateway.client.get(admin("/")).send().await.unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let page = page.text().await.unwrap();
    assert!(page.contains(&backend.addr.to_string()) && page.contains(&dead.to_string()));
    assert!(
        page.contains("class=\"down\">down<") && page.contains("class=\"up\">up<"),
        "{page}"
    );

    // Gauges are refreshed every second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let metrics = gateway
        .client
        .get(admin("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "gateway_upstream_responses_total{upstream=\"watched\",class=\"2xx\"}",
        "gateway_upstream_response_duration_seconds_bucket{upstream=\"watched\"",
        "gateway_upstream_servers{upstream=\"watched\",state=\"down\"} 1",
        "http_connections_open{",
        "http_requests_total{method=\"GET\",route=\"/\",status=\"200\"}",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }
}

/// A directory to serve, next to a file it must never give away.
fn site() -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("public");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(dir.path().join("outside.txt"), "secret").unwrap();
    std::fs::write(root.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(root.join("app.0d97ed6168f4.css"), "body { color: red }\n").unwrap();
    let big: Vec<u8> = (0..1_048_576u32)
        .map(|i| b"abcdefgh"[(i % 8) as usize])
        .collect();
    std::fs::write(root.join("big.txt"), &big).unwrap();
    std::fs::write(root.join("big.txt.gz"), b"pretend-gzip").unwrap();
    std::os::unix::fs::symlink(dir.path(), root.join("escape")).unwrap();
    std::os::unix::fs::symlink(root.join("index.html"), root.join("inner.html")).unwrap();
    (dir, root, big)
}

#[tokio::test]
async fn a_root_route_serves_files_with_validators_ranges_and_precompressed_siblings() {
    let backend = Backend::start("a").await;
    let (_dir, root, big) = site();
    let routes = format!(
        "[[route]]\npath = \"/assets/\"\nroot = {:?}\n\
         [[route]]\npath = \"/\"\nupstream = \"app\"\n[upstream.app]\nserver = [{}]\n",
        root.to_str().unwrap(),
        server(backend.addr, "")
    );
    let gateway = spawn_gateway(&routes).await;
    let client = &gateway.client;
    let get = |path: &str| client.get(gateway.url(path));

    let css = get("/assets/app.0d97ed6168f4.css").send().await.unwrap();
    assert_eq!(css.status(), 200);
    let headers = css.headers().clone();
    assert_eq!(headers["content-type"], "text/css; charset=utf-8");
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(headers["content-length"], "20");
    assert_eq!(css.text().await.unwrap(), "body { color: red }\n");
    let (etag, modified) = (headers["etag"].clone(), headers["last-modified"].clone());

    let index = get("/assets/").send().await.unwrap();
    assert_eq!(index.headers()["cache-control"], "no-cache");
    assert_eq!(index.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(index.text().await.unwrap(), "<h1>home</h1>");
    assert_eq!(
        get("/assets/inner.html").send().await.unwrap().status(),
        200,
        "a link inside"
    );

    // Conditional requests.
    let path = "/assets/app.0d97ed6168f4.css";
    let cached = get(path)
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    assert_eq!(cached.headers()["etag"], etag);
    let cached = get(path)
        .header("if-modified-since", modified)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    let stale = get(path)
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);

    // Ranges.
    let part = get("/assets/big.txt")
        .header("range", "bytes=8-15")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 8-15/1048576");
    assert_eq!(part.bytes().await.unwrap(), &big[8..16]);
    let tail = get("/assets/big.txt")
        .header("range", "bytes=-4")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.bytes().await.unwrap(), &big[big.len() - 4..]);
    let beyond = get("/assets/big.txt")
        .header("range", "bytes=2000000-")
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 416);
    assert_eq!(beyond.headers()["content-range"], "bytes */1048576");
    let whole = get("/assets/big.txt").send().await.unwrap();
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert_eq!(whole.bytes().await.unwrap(), big, "1 MiB, streamed");

    // The precompressed sibling, when accepted (never for a range).
    let zipped = get("/assets/big.txt")
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    assert_eq!(zipped.bytes().await.unwrap(), &b"pretend-gzip"[..]);
    let ranged = get("/assets/big.txt")
        .header("accept-encoding", "gzip")
        .header("range", "bytes=0-1")
        .send()
        .await
        .unwrap();
    assert!(!ranged.headers().contains_key("content-encoding"));

    // HEAD: the headers, no body.
    let head = client
        .head(gateway.url("/assets/big.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.headers()["content-length"], "1048576");
    assert!(head.bytes().await.unwrap().is_empty());
    let post = client
        .post(gateway.url("/assets/big.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    assert_eq!(backend.hits(), 0, "the static route never proxies");
}

/// Bytes sent with sendfile(2) so far in this process (each test is a process of its own).
async fn sendfile_bytes(gateway: &crate::helpers::TestGateway) -> u64 {
    let url = format!("http://{}/metrics", gateway.admin);
    let metrics = gateway.client.get(url).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("http_sendfile_bytes_total "))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// The sendfile counter once it reaches `expected`, or whatever it says after two seconds: the
/// server counts a send after the call returns, which can be after the client has read the bytes.
async fn sendfile_bytes_reaching(gateway: &crate::helpers::TestGateway, expected: u64) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let now = sendfile_bytes(gateway).await;
        if now >= expected || std::time::Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn large_files_go_with_sendfile_only_when_the_body_reaches_the_client_unchanged() {
    let (_dir, root, big) = site();
    let css: Vec<u8> = (0..300_000u32)
        .map(|i| b"a { color: red }\n"[(i % 17) as usize])
        .collect();
    std::fs::write(root.join("site.css"), &css).unwrap();
    let routes = format!(
        "[[route]]\npath = \"/assets/\"\nroot = {root:?}\n\
         [[route]]\npath = \"/zipped/\"\nroot = {root:?}\ncompress = true\n",
        root = root.to_str().unwrap()
    );
    let gateway = spawn_gateway(&routes).await;
    let get = |path: &str| gateway.client.get(gateway.url(path));
    let before = sendfile_bytes(&gateway).await;

    // Plain HTTP/1: the whole file and a range, from the page cache to the socket.
    let whole = get("/assets/big.txt").send().await.unwrap();
    assert_eq!(whole.version(), reqwest::Version::HTTP_11);
    assert_eq!(whole.bytes().await.unwrap(), big);
    let part = get("/assets/big.txt")
        .header("range", "bytes=1000-600000")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap(), &big[1000..=600_000]);
    let sent = sendfile_bytes_reaching(&gateway, before + 1_048_576 + 599_001).await - before;
    assert_eq!(sent, 1_048_576 + 599_001, "both bodies went with sendfile");

    // A body compressed on the way is read and copied, and arrives right.
    let zipped = get("/zipped/site.css")
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    let body = zipped.bytes().await.unwrap();
    assert_eq!(decode("gzip", &body).await, css);
    // So is one over HTTP/2, which frames bodies itself.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let over_h2 = h2.get(gateway.url("/assets/big.txt")).send().await.unwrap();
    assert_eq!(over_h2.version(), reqwest::Version::HTTP_2);
    assert_eq!(over_h2.bytes().await.unwrap(), big);
    // An uncompressed answer on the compressing route (not accepted) goes with sendfile again.
    let plain = get("/zipped/site.css").send().await.unwrap();
    assert!(!plain.headers().contains_key("content-encoding"));
    assert_eq!(plain.bytes().await.unwrap(), css);
    assert_eq!(
        sendfile_bytes_reaching(&gateway, before + sent + 300_000).await - before,
        sent + 300_000,
        "only the uncompressed HTTP/1 answer added to it"
    );
}

#[tokio::test]
async fn a_small_file_changed_on_disk_is_served_anew_within_a_second() {
    let (_dir, root, _) = site();
    let routes = format!(
        "[[route]]\npath = \"/assets/\"\nroot = {:?}\n",
        root.to_str().unwrap()
    );
    let gateway = spawn_gateway(&routes).await;
    let first = gateway.get("/assets/index.html").await;
    let etag = first.headers()["etag"].clone();
    assert_eq!(first.text().await.unwrap(), "<h1>home</h1>");
    std::fs::write(root.join("index.html"), "<h1>a new home page</h1>").unwrap();
    let changed = crate::helpers::eventually(std::time::Duration::from_secs(3), || async {
        gateway
            .get("/assets/index.html")
            .await
            .text()
            .await
            .unwrap()
            == "<h1>a new home page</h1>"
    })
    .await;
    assert!(changed, "the new contents are served");
    let now = gateway.get("/assets/index.html").await;
    assert_ne!(now.headers()["etag"], etag);
    assert_eq!(now.headers()["content-length"], "24");
    std::fs::remove_file(root.join("index.html")).unwrap();
    let gone = crate::helpers::eventually(std::time::Duration::from_secs(3), || async {
        gateway.get("/assets/index.html").await.status() == 404
    })
    .await;
    assert!(gone, "a removed file stops being served");
    for _ in 0..20 {
        let again = gateway.get("/assets/index.html").await;
        assert_eq!(again.status(), 404, "and stays gone");
    }
}

#[tokio::test]
async fn nothing_outside_the_root_can_be_reached() {
    let (_dir, root, _) = site();
    let routes = format!(
        "[[route]]\npath = \"/assets/\"\nroot = {:?}\n",
        root.to_str().unwrap()
    );
    let gateway = spawn_gateway(&routes).await;
    for path in [
        "/assets/../outside.txt",
        "/assets/%2e%2e/outside.txt",
        "/assets/%2E%2E%2Foutside.txt",
        "/assets/sub/../../outside.txt",
        "/assets/escape/outside.txt",
        "/assets/sub/",
        "/assets/missing.txt",
        "/assets/..%5coutside.txt",
        "/assets/%00",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let answer = crate::proxying::raw(
            gateway.addr,
            request.as_bytes(),
            std::time::Duration::from_secs(5),
        )
        .await;
        // Refused as malformed or ambiguous (400), or found to be missing (404): never served.
        assert!(
            answer.starts_with("HTTP/1.1 404") || answer.starts_with("HTTP/1.1 400"),
            "{path}: {answer}"
        );
        assert!(!answer.contains("secret"), "{path}: {answer}");
    }
}

#[test]
fn a_root_that_is_not_a_directory_is_a_config_error() {
    let text = "[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\nroot = \"/nonexistent/dir\"\n";
    let error = gateway::load::from_text("gw.toml", text, &platform::Source::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("gw.toml:4: route[0].root: /nonexistent/dir: "),
        "{error}"
    );
    let both = "[[listener]]\nbind = \"127.0.0.1:0\"\n[[route]]\nroot = \"/tmp\"\nupstream = \"a\"\n\
                [upstream.a]\nserver = [{ address = \"127.0.0.1:1\" }]\n";
    let error = gateway::load::from_text("gw.toml", both, &platform::Source::default())
        .unwrap_err()
        .to_string();
    assert!(error.contains("either an upstream or a root"), "{error}");
}

#[tokio::test]
async fn a_reload_adds_and_drains_listeners_and_a_listener_that_cannot_bind_keeps_the_old_config() {
    let backend = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let write = |listeners: &[String]| {
        let listeners: String = listeners
            .iter()
            .map(|bind| format!("[[listener]]\nbind = {bind:?}\n"))
            .collect();
        std::fs::write(
            &path,
            format!(
                "access_log = \"off\"\n[admin]\nbind = \"127.0.0.1:0\"\n{listeners}{}",
                crate::helpers::one_upstream(&[server(backend.addr, "")], "")
            ),
        )
        .unwrap();
    };
    write(&["127.0.0.1:0".into()]);
    let gateway = crate::helpers::spawn_gateway_from_file(path.to_str().unwrap()).await;
    let reload = || async {
        let response = gateway
            .client
            .post(format!("http://{}/reload", gateway.admin))
            .header("x-flotilla-admin", "1")
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let first = gateway.addr;
    let second = crate::helpers::closed_port().await;
    let get = |addr: std::net::SocketAddr, path: &str| {
        let url = format!("http://{addr}{path}");
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        async move { client.get(url).send().await }
    };

    // Added: the new address serves at once, the old one goes on.
    write(&["127.0.0.1:0".into(), second.to_string()]);
    let (status, text) = reload().await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(&format!("+{second}")), "{text}");
    assert_eq!(get(second, "/on-second").await.unwrap().status(), 200);
    assert_eq!(get(first, "/on-first").await.unwrap().status(), 200);

    // Removed: a request in flight on it finishes; then it refuses connections.
    let in_flight = tokio::spawn(get(first, "/slow/1000"));
    assert!(
        crate::helpers::eventually(std::time::Duration::from_secs(5), || async {
            backend.hits() >= 3
        })
        .await
    );
    write(&[second.to_string()]);
    let (status, text) = reload().await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(&format!("-{first}")), "{text}");
    let finished = in_flight
        .await
        .unwrap()
        .expect("the request in flight finishes");
    assert_eq!(finished.status(), 200);
    assert!(
        crate::helpers::eventually(std::time::Duration::from_secs(5), || async {
            tokio::net::TcpStream::connect(first).await.is_err()
        })
        .await,
        "the removed listener is closed"
    );
    assert_eq!(get(second, "/still").await.unwrap().status(), 200);

    // A listener that cannot be bound (the backend has the port): nothing changes.
    write(&[second.to_string(), backend.addr.to_string()]);
    let (status, text) = reload().await;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains(&backend.addr.to_string()), "{text}");
    assert_eq!(get(second, "/after-refusal").await.unwrap().status(), 200);
}
