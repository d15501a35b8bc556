//! The differential test of the gateway's HTTP/1 grammar: the same bytes go to the gateway's
//! server loop and to a plain hyper server (and, for responses, to the gateway's upstream
//! reader and hyper's client), and both must make the same of them: the same requests with the
//! same methods, targets, headers and bodies, and the same refusals.
//!
//! The gateway is stricter than hyper in a few documented ways (`wire`'s docs); where the two
//! differ, the gateway must be the one that refused, and the input must hold one of those
//! constructs ([`allowed_divergence`]).
//!
//! Inputs: a corpus kept in `tests/corpus/` (requests and responses worth keeping: the
//! hostile-input cases, and anything a long run found), then generated streams (requests built
//! from a grammar with near-miss variants, then mutated). `PROPTEST_CASES` sets how many
//! (`scripts/fuzz-grammar.sh` runs a long one).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gateway::fuzzing::{self, SERVICE_STATUS, Seen, SeenRequest};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX_HEADER_SIZE: usize = 8192;

/// What plain hyper (as the services run it) makes of `bytes`.
async fn hyper_reads(bytes: &[u8]) -> Seen {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&seen);
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let recorded = Arc::clone(&recorded);
        async move {
            SeenRequest::record(request, &recorded).await;
            let mut response = http::Response::new(Empty::<Bytes>::new());
            *response.status_mut() = http::StatusCode::from_u16(SERVICE_STATUS).unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    let serving = async move {
        // Half-closed by the test once every byte is written: hyper reads on to the end, as
        // the gateway's loop does.
        let _ = hyper::server::conn::http1::Builder::new()
            .max_buf_size(MAX_HEADER_SIZE)
            .half_close(true)
            .serve_connection(TokioIo::new(server), service)
            .with_upgrades()
            .await;
    };
    let talking = async move {
        client.write_all(bytes).await.ok();
        client.shutdown().await.ok();
        let mut output = Vec::new();
        let _ = client.read_to_end(&mut output).await;
        output
    };
    let ((), output) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(serving, talking)
    })
    .await
    .expect("hyper ends with the stream");
    let requests = seen.lock().unwrap().clone();
    Seen {
        requests,
        refused: fuzzing::refusal(&output),
    }
}

/// Whether `bytes` hold a construct the gateway refuses on purpose and hyper takes (see `wire`).
fn allowed_divergence(bytes: &[u8]) -> Option<&'static str> {
    let text = String::from_utf8_lossy(bytes);
    let both_lengths = regex::Regex::new(
        r"(?is)(^|\n)transfer-encoding:[^\n]*\n(?:[^\r\n][^\n]*\n)*?content-length:|(^|\n)content-length:[^\n]*\n(?:[^\r\n][^\n]*\n)*?transfer-encoding:",
    )
    .unwrap();
    if both_lengths.is_match(&text) {
        return Some("both Transfer-Encoding and Content-Length");
    }
    let space_without_extension = regex::Regex::new(r"(?m)(^|\n)[0-9a-fA-F]+[ \t]+\r").unwrap();
    if space_without_extension.is_match(&text) {
        return Some("white space after a chunk size without an extension");
    }
    let control_in_extension = regex::bytes::Regex::new(
        r"(?-u)(^|\n)[0-9a-fA-F]+[ \t]*;[^\r\n]*[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]",
    )
    .unwrap();
    if control_in_extension.is_match(bytes) {
        return Some("a control character in a chunk extension");
    }
    None
}

/// Whether `ours` is `theirs` cut short by a refusal of the gateway's: equal up to where the
/// gateway stopped (a request it refused, or a body it would not read).
fn ours_stricter(ours: &Seen, theirs: &Seen) -> bool {
    let agreed = ours
        .requests
        .iter()
        .zip(&theirs.requests)
        .take_while(|(a, b)| a == b)
        .count();
    match ours.requests.get(agreed) {
        // The gateway stopped before a request hyper took.
        None => {
            ours.refused.is_some() || theirs.requests.len() > agreed || theirs.refused.is_some()
        }
        // The same request, whose body the gateway refused and hyper took; nothing after it.
        Some(request) => {
            request.body.is_none()
                && ours.requests.len() == agreed + 1
                && theirs.requests.get(agreed).is_some_and(|theirs| {
                    theirs.body.is_some()
                        && theirs.method == request.method
                        && theirs.target == request.target
                })
        }
    }
}

/// Feeds `bytes` to both servers and compares.
async fn compare(bytes: &[u8]) -> Result<(), String> {
    let ours = fuzzing::gateway_reads(bytes, MAX_HEADER_SIZE).await;
    let theirs = hyper_reads(bytes).await;
    if ours == theirs {
        return Ok(());
    }
    if let Some(reason) = allowed_divergence(bytes)
        && ours_stricter(&ours, &theirs)
    {
        let _ = reason;
        return Ok(());
    }
    Err(format!(
        "input {:?}\n gateway: {ours:?}\n hyper:   {theirs:?}",
        String::from_utf8_lossy(bytes)
    ))
}

/// What hyper's client makes of `bytes` as the answer to a request.
async fn hyper_reads_response(bytes: &[u8], head_only: bool) -> fuzzing::ReadResponse {
    let (client, mut server) = tokio::io::duplex(1 << 20);
    let bytes = bytes.to_vec();
    let answering = tokio::spawn(async move {
        let mut request = vec![0u8; 4096];
        let _ = server.read(&mut request).await;
        server.write_all(&bytes).await.ok();
        server.shutdown().await.ok();
        // Keep the read side until the client is done.
        let _ = server.read_to_end(&mut Vec::new()).await;
    });
    let outcome = async {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(client))
                .await
                .ok()?;
        tokio::spawn(connection);
        let method = if head_only { "HEAD" } else { "GET" };
        let request = http::Request::builder()
            .method(method)
            .uri("/")
            .header("host", "x")
            .body(Empty::new())
            .unwrap();
        let response = sender.send_request(request).await.ok()?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
            .collect();
        let body = response
            .into_body()
            .collect()
            .await
            .ok()
            .map(|b| b.to_bytes().to_vec());
        Some((status, headers, body))
    };
    let outcome = tokio::time::timeout(Duration::from_secs(10), outcome)
        .await
        .expect("hyper's client ends with the stream");
    answering.abort();
    outcome
}

/// `response` without `Content-Length` when it has `Transfer-Encoding`: hyper's client passes the
/// length on, the gateway drops it (it would misframe the answer to the client); the framing
/// both read is the same.
fn without_overridden_length(response: fuzzing::ReadResponse) -> fuzzing::ReadResponse {
    response.map(|(status, mut headers, body)| {
        if headers.iter().any(|(name, _)| name == "transfer-encoding") {
            headers.retain(|(name, _)| name != "content-length");
        }
        // Lines of one name keep their order; names need not.
        headers.sort_by(|a, b| a.0.cmp(&b.0));
        (status, headers, body)
    })
}

async fn compare_response(bytes: &[u8], head_only: bool) -> Result<(), String> {
    let ours = without_overridden_length(fuzzing::gateway_reads_response(bytes, head_only));
    let theirs = without_overridden_length(hyper_reads_response(bytes, head_only).await);
    let same = ours == theirs;
    // Stricter on purpose: a head the gateway refuses or a body it will not read, where the
    // input holds one of the documented constructs.
    let stricter = allowed_divergence(bytes).is_some()
        && match (&ours, &theirs) {
            (None, Some(_)) => true,
            (Some((s, h, None)), Some((t, g, Some(_)))) => s == t && h == g,
            _ => false,
        };
    if same || stricter {
        Ok(())
    } else {
        Err(format!(
            "response {:?} (head only: {head_only})\n gateway: {ours:?}\n hyper:   {theirs:?}",
            String::from_utf8_lossy(bytes)
        ))
    }
}

/// The corpus files under `tests/corpus/<kind>`.
fn corpus(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the {kind} corpus is empty");
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn the_request_corpus_reads_the_same_to_the_gateway_and_to_hyper() {
    let mut failures = Vec::new();
    for (name, bytes) in corpus("requests") {
        if let Err(difference) = compare(&bytes).await {
            failures.push(format!("{name}: {difference}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test]
async fn the_response_corpus_reads_the_same_to_the_gateway_and_to_hyper() {
    let mut failures = Vec::new();
    for (name, bytes) in corpus("responses") {
        for head_only in [false, true] {
            if let Err(difference) = compare_response(&bytes, head_only).await {
                failures.push(format!("{name}: {difference}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// Generated inputs: heads from a grammar of usual and near-miss parts, bodies framed right or
// nearly, several requests per stream, then a few random byte edits.

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just("GET".to_string()),
        8 => Just("POST".to_string()),
        4 => Just("PUT".to_string()),
        1 => Just("HEAD".to_string()),
        1 => Just("OPTIONS".to_string()),
        1 => Just("CONNECT".to_string()),
        1 => Just("get".to_string()),
        1 => Just("G(T".to_string()),
        1 => "[A-Z]{1,8}",
    ]
}

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just("/".to_string()),
        2 => Just("/a/b?c=d".to_string()),
        1 => Just("http://h.example/p".to_string()),
        1 => Just("*".to_string()),
        1 => Just("h.example:443".to_string()),
        1 => Just("/%2e%2e/x".to_string()),
        1 => Just("//x".to_string()),
        4 => "/[a-z0-9%._~-]{0,12}",
        1 => "[ -~]{1,10}",
    ]
}

fn version() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => Just("HTTP/1.1".to_string()),
        4 => Just("HTTP/1.0".to_string()),
        1 => Just("HTTP/2.0".to_string()),
        1 => Just("HTTP/1.2".to_string()),
        1 => Just("http/1.1".to_string()),
    ]
}

fn header() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => Just("Host: h.example".to_string()),
        1 => Just("Host: a b".to_string()),
        2 => Just("Connection: close".to_string()),
        2 => Just("Connection: keep-alive".to_string()),
        1 => Just("Connection: upgrade".to_string()),
        1 => Just("Upgrade: websocket".to_string()),
        2 => Just("Expect: 100-continue".to_string()),
        1 => Just("X-Empty:".to_string()),
        1 => Just("X-Obs: a\r\n b".to_string()),
        1 => Just("Bad Name: x".to_string()),
        1 => Just("X-Tab:\tv".to_string()),
        1 => Just("Content-Length: 0".to_string()),
        1 => Just("Transfer-Encoding: gzip".to_string()),
        1 => Just("Transfer-Encoding: chunked, gzip".to_string()),
        6 => "[A-Za-z-]{1,10}: [ -~]{0,12}",
    ]
}

/// A body and the header that frames it (or none).
fn framed_body() -> impl Strategy<Value = (Option<String>, Vec<u8>)> {
    let data = proptest::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        Just((None, Vec::new())),
        data.clone().prop_flat_map(|data| {
            let len = data.len();
            prop_oneof![
                Just(format!("{len}")),
                Just(format!("+{len}")),
                Just(format!("0{len}")),
                Just(format!("{len}, {len}")),
                Just(format!(" {len} ")),
                Just(format!("{}", len + 1)),
                Just("-1".to_string()),
                Just("99999999999999999999999".to_string()),
            ]
            .prop_map(move |value| (Some(format!("Content-Length: {value}")), data.clone()))
        }),
        (
            proptest::collection::vec(chunk(), 0..4),
            prop_oneof![
                Just("0\r\n\r\n".to_string()),
                Just("0\r\nX-Trailer: t\r\n\r\n".to_string()),
                Just("0;e=1\r\n\r\n".to_string()),
                Just("0\r\n".to_string()),
                Just("0\r\nbad trailer\r\n\r\n".to_string()),
                Just("00\r\n\r\n".to_string()),
            ],
            prop_oneof![
                4 => Just("chunked"),
                1 => Just("Chunked"),
                1 => Just("gzip, chunked"),
                1 => Just("chunked "),
            ],
        )
            .prop_map(|(chunks, last, coding)| {
                let mut body = Vec::new();
                for chunk in chunks {
                    body.extend_from_slice(&chunk);
                }
                body.extend_from_slice(last.as_bytes());
                (Some(format!("Transfer-Encoding: {coding}")), body)
            }),
    ]
}

/// One chunk, framed right or nearly.
fn chunk() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(any::<u8>(), 1..20),
        prop_oneof![
            4 => Just(""),
            1 => Just(";ext"),
            1 => Just(";a=\"b c\""),
            1 => Just(" ;x"),
            1 => Just(" "),
            1 => Just("\t"),
            1 => Just(";\x01"),
        ],
        prop_oneof![4 => Just(0i8), 1 => Just(1), 1 => Just(-1)],
        any::<bool>(),
    )
        .prop_map(|(data, extension, skew, upper)| {
            let size = (data.len() as i64 + i64::from(skew)).max(0);
            let size = if upper {
                format!("{size:X}")
            } else {
                format!("{size:x}")
            };
            let mut chunk = format!("{size}{extension}\r\n").into_bytes();
            chunk.extend_from_slice(&data);
            chunk.extend_from_slice(b"\r\n");
            chunk
        })
}

fn request() -> impl Strategy<Value = Vec<u8>> {
    (
        method(),
        target(),
        version(),
        proptest::collection::vec(header(), 0..4),
        framed_body(),
        prop_oneof![4 => Just("\r\n"), 1 => Just("\n")],
    )
        .prop_map(|(method, target, version, headers, (framing, body), eol)| {
            let mut head = format!("{method} {target} {version}{eol}");
            for header in headers.iter().chain(framing.iter()) {
                head.push_str(header);
                head.push_str(eol);
            }
            head.push_str(eol);
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(&body);
            bytes
        })
}

/// A few random edits: replace, insert or delete a byte.
fn mutated(stream: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), 0..3u8), 0..3).prop_map(move |edits| {
        let mut bytes = stream.clone();
        for (at, byte, kind) in edits {
            if bytes.is_empty() {
                break;
            }
            let at = at % bytes.len();
            match kind {
                0 => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ => {
                    bytes.remove(at);
                }
            }
        }
        bytes
    })
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(request(), 1..4)
        .prop_map(|requests| requests.concat())
        .prop_flat_map(|stream| prop_oneof![2 => Just(stream.clone()), 1 => mutated(stream)])
}

fn response() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            Just("HTTP/1.1 200 OK"),
            Just("HTTP/1.0 200 OK"),
            Just("HTTP/1.1 204 No Content"),
            Just("HTTP/1.1 304 Not Modified"),
            Just("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"),
            Just("HTTP/1.1 999 Odd"),
            Just("HTTP/1.1 200"),
        ],
        proptest::collection::vec(header(), 0..3),
        framed_body(),
        any::<bool>(),
    )
        .prop_map(|(status, headers, (framing, body), framed)| {
            let mut head = format!("{status}\r\n");
            for header in headers.iter().chain(framing.iter().filter(|_| framed)) {
                head.push_str(header);
                head.push_str("\r\n");
            }
            head.push_str("\r\n");
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(&body);
            bytes
        })
        .prop_flat_map(mutated)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(400),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_requests_read_the_same_to_the_gateway_and_to_hyper(bytes in stream()) {
        let outcome = runtime().block_on(compare(&bytes));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }

    #[test]
    fn generated_responses_read_the_same_to_the_gateway_and_to_hyper(bytes in response(), head_only in any::<bool>()) {
        let outcome = runtime().block_on(compare_response(&bytes, head_only));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}

/// Guards the generator against drifting into inputs that every server refuses at once: a good
/// share of streams must carry requests, bodies and chunked bodies to the service.
#[test]
fn generated_streams_reach_the_service_with_bodies() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let runtime = runtime();
    let (mut served, mut with_body, mut chunked) = (0, 0, 0);
    for _ in 0..500 {
        let bytes = stream().new_tree(&mut runner).unwrap().current();
        let seen = runtime.block_on(fuzzing::gateway_reads(&bytes, MAX_HEADER_SIZE));
        served += usize::from(!seen.requests.is_empty());
        with_body += usize::from(
            seen.requests
                .iter()
                .any(|r| r.body.as_ref().is_some_and(|b| !b.is_empty())),
        );
        chunked += usize::from(
            String::from_utf8_lossy(&bytes).contains("chunked")
                && seen.requests.iter().any(|r| r.body.is_some()),
        );
    }
    assert!(
        served > 200,
        "only {served} of 500 streams reached the service"
    );
    assert!(
        with_body > 50,
        "only {with_body} of 500 carried a body through"
    );
    assert!(
        chunked > 25,
        "only {chunked} of 500 carried a chunked body through"
    );
}
