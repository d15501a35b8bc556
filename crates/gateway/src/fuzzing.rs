//! Entry points for the differential tests and fuzz targets (`tests/gateway/grammar.rs`,
//! `scripts/fuzz-grammar.sh`): the gateway's HTTP/1 server loop and its upstream response reader
//! run on raw bytes, reporting what they made of them in terms a test can compare with another
//! server's (hyper's). Not an API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server::http1::{self, LeanService};

/// A request as a server's service saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub target: String,
    pub version: String,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, or `None` when reading it failed.
    pub body: Option<Vec<u8>>,
}

impl SeenRequest {
    /// Adds `request` to `seen` as soon as it arrives, then its body once read: a request whose
    /// body never ends (its server stopped reading) is seen with `body: None`.
    pub async fn record<B>(request: Request<B>, seen: &Mutex<Vec<SeenRequest>>)
    where
        B: http_body::Body,
    {
        let (parts, body) = request.into_parts();
        let at = {
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.push(
                SeenRequest::of(Request::from_parts(
                    parts,
                    http_body_util::Empty::<Bytes>::new(),
                ))
                .now_or_never()
                .expect("an empty body is read at once"),
            );
            let at = seen.len() - 1;
            seen[at].body = None;
            at
        };
        let body = body.collect().await.ok().map(|b| b.to_bytes().to_vec());
        seen.lock().unwrap_or_else(|e| e.into_inner())[at].body = body;
    }

    /// What a service sees of `request`, its body read to the end.
    pub async fn of<B>(request: Request<B>) -> SeenRequest
    where
        B: http_body::Body,
    {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.ok().map(|b| b.to_bytes().to_vec());
        SeenRequest {
            method: parts.method.to_string(),
            target: parts.uri.to_string(),
            version: format!("{:?}", parts.version),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                .collect(),
            body,
        }
    }
}

/// What a server made of a byte stream: the requests its service got, and the status of the
/// answer it gave itself (refusing the stream), if it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    pub requests: Vec<SeenRequest>,
    pub refused: Option<u16>,
}

/// Status codes the recording service answers with, so that its answers can be told from the
/// server's own refusals.
pub const SERVICE_STATUS: u16 = 418;

#[derive(Clone)]
struct Recorder(Arc<Mutex<Vec<SeenRequest>>>);

impl LeanService for Recorder {
    type Body = axum::body::Body;

    fn call_lean(
        &mut self,
        request: Request<axum::body::Body>,
    ) -> impl Future<Output = Response<axum::body::Body>> + Send {
        let seen = Arc::clone(&self.0);
        async move {
            SeenRequest::record(request, &seen).await;
            let mut response = Response::new(axum::body::Body::empty());
            *response.status_mut() =
                http::StatusCode::from_u16(SERVICE_STATUS).expect("a valid status");
            response
        }
    }
}

/// The first status among the answers in `output` that is not the service's (HTTP/1.1 or 1.0).
pub fn refusal(output: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(output);
    text.match_indices("HTTP/1.")
        .filter(|(at, _)| text.get(at + 8..at + 9) == Some(" "))
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse::<u16>().ok())
        .find(|&status| status != SERVICE_STATUS && status != 100)
}

/// Feeds `bytes` to the gateway's HTTP/1 server loop (then the end of the stream) and reports
/// what it made of them. `max_header_size` as the listener's.
pub async fn gateway_reads(bytes: &[u8], max_header_size: usize) -> Seen {
    let (mut client, mut server) = tokio::io::duplex(1 << 20);
    let (_standalone, control) = platform::server::listener::Standalone::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let service = Recorder(Arc::clone(&seen));
    let limits = http1::Limits {
        header_read_timeout: Duration::from_secs(2),
        max_header_size,
        send_timeout: Duration::from_secs(2),
    };
    let serving = async move {
        let peer = "127.0.0.1:1".parse().expect("an address");
        let _ = http1::serve(
            &mut server,
            BytesMut::new(),
            peer,
            None,
            service,
            limits,
            &control,
        )
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
    .expect("the loop ends with the stream");
    let requests = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Seen {
        requests,
        refused: refusal(&output),
    }
}

/// What a client made of a response: its status and headers, and its body (`None` when reading
/// it failed); `None` when the head was refused.
pub type ReadResponse = Option<(u16, Vec<(String, Vec<u8>)>, Option<Vec<u8>>)>;

/// Reads `bytes` as a server's answer to a request (`HEAD` when `head_only`), then the end of the
/// stream, with the gateway's upstream response reader.
pub fn gateway_reads_response(bytes: &[u8], head_only: bool) -> ReadResponse {
    use crate::wire::head::{ResponseHead, parse_response};
    let mut buf = BytesMut::from(bytes);
    let (parts, framing) = loop {
        match parse_response(&mut buf, head_only, 64 * 1024) {
            Ok(ResponseHead::Complete(parts, framing, _)) => break (parts, framing),
            Ok(ResponseHead::Interim) => continue,
            Ok(ResponseHead::Partial) | Err(_) => return None,
        }
    };
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    let body = crate::client::decode_all(framing, buf);
    Some((
        parts.status.as_u16(),
        headers,
        body.map(|b: Bytes| b.to_vec()),
    ))
}
