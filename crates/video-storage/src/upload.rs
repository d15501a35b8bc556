//! `PUT /video?path=`: the request body streamed into the store, all or nothing.
//!
//! The body goes in parts (a multipart upload: block blobs on Azure, multipart on S3, a staging
//! file renamed into place on a local directory), so an object of any size needs only a few
//! parts of memory, and it becomes visible only once complete. A body over the limit (by its
//! `Content-Length` at once, else when the count passes it), a client that disconnects or
//! stops sending for [`IDLE_TIMEOUT`], or a failing store: the upload is aborted and nothing
//! is left under the path. The upload runs in a task of its own, so that it is aborted even
//! when the connection goes and the handler with it.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use futures_util::StreamExt;
use object_store::ObjectStoreExt as _;
use object_store::path::Path;
use object_store::{ObjectMeta, WriteMultipart};

use crate::error::StorageError;
use crate::store::Store;

/// A part's size: S3's smallest part (5 MiB) and then some.
const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts sent to the store at the same time.
const PARTS_IN_FLIGHT: usize = 2;
/// Longest wait for the next piece of a body.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Stores `body` at `path`; the object's metadata once it is complete.
pub(crate) async fn upload(
    store: Store,
    path: Path,
    headers: HeaderMap,
    body: Body,
    limit: u64,
) -> Result<ObjectMeta, StorageError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(StorageError::TooLarge(limit));
    }
    store.check_inside(&path).await?;
    let task = tokio::spawn(async move {
        let upload = store.objects.put_multipart(&path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut stream = body.into_data_stream();
        let mut received: u64 = 0;
        let failure = loop {
            let next = match tokio::time::timeout(IDLE_TIMEOUT, stream.next()).await {
                Ok(next) => next,
                Err(_) => {
                    break StorageError::BadRequest(format!(
                        "the upload stalled: nothing received for {} s",
                        IDLE_TIMEOUT.as_secs()
                    ));
                }
            };
            match next {
                None => {
                    writer.finish().await?;
                    return Ok(store.objects.head(&path).await?);
                }
                Some(Err(_)) => {
                    break StorageError::BadRequest("the upload was interrupted".to_string());
                }
                Some(Ok(chunk)) => {
                    received += chunk.len() as u64;
                    if received > limit {
                        break StorageError::TooLarge(limit);
                    }
                    if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                        break e.into();
                    }
                    writer.put(chunk);
                }
            }
        };
        if let Err(e) = writer.abort().await {
            tracing::warn!(error = %e, "aborting an upload failed");
        }
        Err(failure)
    });
    task.await.unwrap_or_else(|_| {
        Err(StorageError::BadRequest(
            "the upload was interrupted".into(),
        ))
    })
}
