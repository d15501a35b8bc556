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
