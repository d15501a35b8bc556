//! The connection loop on one end of a pipe, with a test service on the other side of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::BodyExt;
use platform::server::listener::Standalone;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use http::header;

/// Answers `/` with "hi", `/echo` with the request body, `/ignore` without reading the body,
/// `/slow` after a long wait (setting `dropped` if its future is dropped), `/stream` with a body
/// of unknown length, `/close` with `Connection: close`, `/big` with 8 MiB.
#[derive(Clone, Default)]
struct TestService {
    dropped: Arc<AtomicBool>,
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl LeanService for TestService {
    type Body = axum::body::Body;

    fn call_lean(
        &mut self,
        request: Request<axum::body::Body>,
    ) -> impl Future<Output = Response<axum::body::Body>> + Send {
        let dropped = Arc::clone(&self.dropped);
        async move {
            let path = request.uri().path().to_string();
            let response = |body: axum::body::Body| Response::new(body);
            match path.as_str() {
                "/echo" => match request.into_body().collect().await {
                    Ok(body) => response(body.to_bytes().into()),
                    Err(error) => {
                        let mut r = response(format!("body error: {error}").into());
                        *r.status_mut() = StatusCode::BAD_REQUEST;
                        r
                    }
                },
                "/ignore" => response("ignored".into()),
                "/slow" => {
                    let _flag = DropFlag(dropped);
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    response("late".into())
                }
                "/stream" => {
                    let parts = futures_util::stream::iter(
                        ["one", "two"].map(|p| Ok::<_, io::Error>(Bytes::from(p))),
                    );
                    response(axum::body::Body::from_stream(parts))
                }
                "/close" => {
                    let mut r = response("bye".into());
                    r.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    r
                }
                "/big" => response(vec![b'x'; 8 << 20].into()),
                _ => response("hi".into()),
            }
        }
    }
}

const LIMITS: Limits = Limits {
    header_read_timeout: Duration::from_secs(5),
    max_header_size: 8192,
    send_timeout: Duration::from_secs(5),
};

struct Running {
    client: DuplexStream,
    task: tokio::task::JoinHandle<io::Result<()>>,
    standalone: Standalone,
    service: TestService,
}

/// Runs the loop on one end of a pipe of `capacity` bytes; the test talks on the other.
fn start_with(limits: Limits, capacity: usize) -> Running {
    let (client, mut server) = tokio::io::duplex(capacity);
    let (standalone, control) = Standalone::new();
    let service = TestService::default();
    let serving = service.clone();
    let task = tokio::spawn(async move {
        let peer: SocketAddr = "127.0.0.9:5000".parse().unwrap();
        serve(
            &mut server,
            BytesMut::new(),
            peer,
            None,
            serving,
            limits,
            &control,
        )
        .await
    });
    Running {
        client,
        task,
        standalone,
        service,
    }
}

fn start() -> Running {
    start_with(LIMITS, 64 * 1024)
}

async fn read_until_closed(client: &mut DuplexStream) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut all))
        .await
        .expect("the loop closes the connection")
        .unwrap();
    String::from_utf8_lossy(&all).into_owned()
}

/// The answers in `all`, split at each status line.
fn answers(all: &str) -> Vec<&str> {
    all.split("HTTP/1.1 ").skip(1).collect()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_http10_closes() {
    let mut run = start();
    run.client
        .write_all(
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nHEAD / HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /stream HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.0\r\n\r\n",
        )
        .await
        .unwrap();
    let all = read_until_closed(&mut run.client).await;
    let answers = answers(&all);
    assert_eq!(answers.len(), 4, "{all}");
    assert!(answers[0].starts_with("200 OK\r\n"), "{all}");
    assert!(answers[0].contains("content-length: 2\r\n"), "{all}");
    assert!(answers[0].ends_with("\r\n\r\nhi"), "{all}");
    // HEAD: the length of what GET would send, and no body.
    assert!(answers[1].contains("content-length: 2\r\n"), "{all}");
    assert!(answers[1].ends_with("\r\n\r\n"), "{all}");
    // Unknown length: chunked.
    assert!(
        answers[2].contains("transfer-encoding: chunked\r\n"),
        "{all}"
    );
    assert!(
        answers[2].ends_with("\r\n\r\n3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n"),
        "{all}"
    );
    // HTTP/1.0 without keep-alive: answered, then closed.
    assert!(answers[3].contains("connection: close\r\n"), "{all}");
    assert!(answers[3].ends_with("hi"), "{all}");
    run.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn bodies_by_length_and_by_chunks_reach_the_handler_whole() {
    let mut run = start();
    let big = "y".repeat(100_000);
    let request = format!(
        "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
         POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
         3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\n\
         POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
        big.len()
    );
    let writing = tokio::spawn(async move {
        run.client.write_all(request.as_bytes()).await.unwrap();
        run.client
    });
    let mut client = writing.await.unwrap();
    let all = read_until_closed(&mut client).await;
    let answers = answers(&all);
    assert_eq!(answers.len(), 3, "{all}");
    assert!(answers[0].ends_with("\r\n\r\nhello"), "{all}");
    assert!(answers[1].ends_with("\r\n\r\nabcde"), "{all}");
    assert!(answers[2].ends_with(&big), "a body larger than the pipe");
}

#[tokio::test]
async fn expect_continue_is_answered_when_the_handler_reads_and_never_when_it_does_not() {
    let mut run = start();
    run.client
        .write_all(
            b"PUT /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
        )
        .await
        .unwrap();
    let mut got = vec![0u8; 25];
    run.client.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"HTTP/1.1 100 Continue\r\n\r\n");
    run.client.write_all(b"data").await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = run.client.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(
        answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("data"),
        "{answer}"
    );

    // A handler that answers without reading: no 100, the answer, and the connection closes
    // (the body was never read, so what follows cannot be told from a request).
    run.client
        .write_all(
            b"PUT /ignore HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
        )
        .await
        .unwrap();
    let all = read_until_closed(&mut run.client).await;
    assert!(!all.contains("100 Continue"), "{all}");
    assert!(
        all.starts_with("HTTP/1.1 200 OK") && all.contains("connection: close"),
        "{all}"
    );
}

#[tokio::test]
async fn an_unread_body_closes_the_connection_so_it_is_never_read_as_a_request() {
    let mut run = start();
    // The body is still coming when the handler answers; its bytes look like a request.
    run.client
        .write_all(b"POST /ignore HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let all = read_until_closed(&mut run.client).await;
    assert_eq!(answers(&all).len(), 1, "{all}");
    assert!(
        all.contains("ignored") && all.contains("connection: close"),
        "{all}"
    );
}

#[tokio::test]
async fn both_lengths_are_refused_whatever_came_before_on_the_connection() {
    for before in [
        "",
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        // A refused upgrade leaves the connection in HTTP/1, strict as before.
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let mut run = start();
        let attack = format!(
            "{before}POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
        );
        run.client.write_all(attack.as_bytes()).await.unwrap();
        let all = read_until_closed(&mut run.client).await;
        let answers = answers(&all);
        let last = answers.last().unwrap();
        assert!(
            last.starts_with("400 Bad Request"),
            "after {before:?}: {all}"
        );
        assert!(
            last.contains("both Transfer-Encoding and Content-Length"),
            "{all}"
        );
        assert_eq!(answers.len(), usize::from(!before.is_empty()) + 1, "{all}");
    }
}

#[tokio::test]
async fn a_client_that_hangs_up_cancels_its_request() {
    let mut run = start();
    run.client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!run.service.dropped.load(Ordering::SeqCst));
    drop(run.client);
    tokio::time::timeout(Duration::from_secs(5), run.task)
        .await
        .expect("the loop ends when the client goes")
        .unwrap()
        .unwrap();
    assert!(
        run.service.dropped.load(Ordering::SeqCst),
        "the handler's future was dropped"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_send_timeout() {
    let limits = Limits {
        send_timeout: Duration::from_millis(300),
        ..LIMITS
    };
    let mut run = start_with(limits, 4096);
    run.client
        .write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    // Nothing read: the pipe fills and the loop waits, then gives up.
    let ended = tokio::time::timeout(Duration::from_secs(10), run.task)
        .await
        .expect("the loop gives up on a client that takes nothing");
    let error = ended.unwrap().unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
}

#[tokio::test]
async fn a_handler_that_says_close_closes_and_draining_closes_an_idle_connection() {
    let mut run = start();
    run.client
        .write_all(b"GET /close HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let all = read_until_closed(&mut run.client).await;
    assert_eq!(answers(&all).len(), 1, "{all}");
    assert!(
        all.contains("connection: close\r\n") && all.ends_with("bye"),
        "{all}"
    );

    let mut run = start();
    run.client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1024];
    let n = run.client.read(&mut first).await.unwrap();
    assert!(std::str::from_utf8(&first[..n]).unwrap().ends_with("hi"));
    run.standalone.drain();
    tokio::time::timeout(Duration::from_secs(2), run.task)
        .await
        .expect("an idle connection closes when draining starts")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn malformed_and_oversized_heads_get_their_status_and_a_close() {
    for (request, status) in [
        ("GET / HTTP/1.1\r\nBad Header\r\n\r\n", "400"),
        ("GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "400"),
        ("GET / HTTP/9.9\r\n\r\n", "400"),
    ] {
        let mut run = start();
        run.client.write_all(request.as_bytes()).await.unwrap();
        let all = read_until_closed(&mut run.client).await;
        assert!(
            all.starts_with(&format!("HTTP/1.1 {status}")),
            "{request:?}: {all}"
        );
        assert!(all.contains("connection: close"), "{all}");
    }
    let mut run = start();
    let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "x".repeat(9000));
    run.client.write_all(big.as_bytes()).await.unwrap();
    let all = read_until_closed(&mut run.client).await;
    assert!(all.starts_with("HTTP/1.1 431"), "{all}");
}
