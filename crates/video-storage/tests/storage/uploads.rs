//! Uploads are all or nothing: over the limit, cut off or stalled, nothing is left behind.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::helpers::{files_under, pattern, spawn_local};

#[tokio::test]
async fn an_upload_is_stored_whole_and_described() {
    let storage = spawn_local(&[]).await;
    // Bigger than one part (8 MiB), sent in pieces without a length.
    let data = pattern(20 * 1024 * 1024 + 123);
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(1_000_003).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
    let answer = storage.put("big/movie.mp4", body).await;
    assert_eq!(
        answer.status,
        201,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let info = answer.json();
    assert_eq!(info["path"], "big/movie.mp4");
    assert_eq!(info["size"], data.len());
    assert_eq!(info["content_type"], "video/mp4");
    assert_eq!(answer.header("location"), Some("/video?path=big/movie.mp4"));
    assert_eq!(storage.get("big/movie.mp4", &[]).await.body, data);
    assert_eq!(files_under(&storage.store_dir()), ["big/movie.mp4"]);
}

#[tokio::test]
async fn uploads_over_the_limit_get_413_and_leave_nothing() {
    let storage = spawn_local(&[("VIDEO_MAX_UPLOAD", "1M")]).await;
    // Declared too long: refused before reading.
    let declared = storage.put("declared.mp4", pattern(1024 * 1024 + 1)).await;
    assert_eq!(declared.status, 413);
    assert!(
        declared.message().contains("1048576 bytes"),
        "{}",
        declared.message()
    );
    // Streamed without a length: refused when the count passes the limit.
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..40).map(|_| Ok(pattern(64 * 1024))).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
    let streamed = storage
        .send(
            storage
                .client
                .put(storage.video_url("streamed.mp4"))
                .body(body),
        )
        .await;
    assert_eq!(streamed.status, 413);
    wait_until_empty(&storage.store_dir()).await;
    // Exactly the limit is fine.
    assert_eq!(
        storage.put("exact.mp4", pattern(1024 * 1024)).await.status,
        201
    );
}

#[tokio::test]
async fn a_client_that_disconnects_mid_upload_leaves_nothing() {
    let storage = spawn_local(&[]).await;
    let mut socket = tokio::net::TcpStream::connect(storage.addr).await.unwrap();
    let head = "PUT /video?path=cut.mp4 HTTP/1.1\r\nhost: x\r\ncontent-length: 10000000\r\n\r\n";
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&pattern(3_000_000)).await.unwrap();
    socket.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(socket);
    wait_until_empty(&storage.store_dir()).await;
    assert_eq!(storage.get("cut.mp4", &[]).await.status, 404);
    // The service is fine afterwards.
    assert_eq!(storage.put("after.mp4", "ok").await.status, 201);
}

/// Waits (bounded) for the staging files of aborted uploads to go.
async fn wait_until_empty(dir: &std::path::Path) {
    for _ in 0..100 {
        if files_under(dir).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("left behind: {:?}", files_under(dir));
}
