//! Receiving a new video: a `multipart/form-data` body with `title` and `file`, the file
//! streamed to video-storage as it arrives (never whole in memory), then probed (duration, a
//! still), and only then the catalog row written: a video is listed once its file is stored.
//! Whatever fails after the file went to storage removes it again.

use axum::extract::Multipart;
use axum::extract::multipart::{Field, MultipartError};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::AppState;
use crate::catalog::Video;
use crate::error::VideoError;
use crate::media;
use crate::storage::Stored;

/// Longest title, in characters.
pub(crate) const MAX_TITLE_CHARS: usize = 200;

/// A new video id: 24 hex digits, the shape of a MongoDB ObjectId (the seed's ids).
pub(crate) fn new_id() -> String {
    format!("{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..))
}

/// A video id from a client: 1 to 64 letters, digits, `-` or `_`.
pub(crate) fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The file's name as stored: its letters, digits, `.`, `-` and `_` (others become `_`), at
/// most 100 bytes, never empty or hidden.
fn stored_name(original: Option<&str>) -> String {
    let base = original
        .and_then(|n| n.rsplit(['/', '\\']).next())
        .unwrap_or("");
    let mut name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.len() > 100 {
        let keep = name.len() - 100;
        name.drain(..keep);
    }
    let name = name.trim_start_matches('.').to_string();
    if name.is_empty() {
        "video".to_string()
    } else {
        name
    }
}

fn title(raw: &str) -> Result<String, VideoError> {
    let title = raw.trim();
    if title.is_empty() {
        return Err(VideoError::BadRequest("title must not be empty".into()));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(VideoError::BadRequest(format!(
            "title must be at most {MAX_TITLE_CHARS} characters"
        )));
    }
    if title.chars().any(char::is_control) {
        return Err(VideoError::BadRequest(
            "title must not contain control characters".into(),
        ));
    }
    Ok(title.to_string())
}

fn multipart_error(error: MultipartError, limit: u64) -> VideoError {
    if error.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        VideoError::TooLarge(limit)
    } else {
        VideoError::BadRequest(format!("the form could not be read: {}", error.body_text()))
    }
}

/// Most bytes a text field may have (a title is at most 200 characters): the form as a whole may
/// be as large as an upload, and a field's text is held in memory.
const MAX_TEXT_FIELD_BYTES: usize = 4096;

/// A text field, read up to [`MAX_TEXT_FIELD_BYTES`].
async fn small_field(mut field: Field<'_>, limit: u64) -> Result<String, VideoError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(|e| multipart_error(e, limit))?;
        if bytes.len() + chunk.len() > MAX_TEXT_FIELD_BYTES {
            return Err(VideoError::BadRequest(format!(
                "title must be at most {MAX_TITLE_CHARS} characters"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| VideoError::BadRequest("title must be UTF-8".into()))
}

/// Streams one form field to storage at `path`, at most `limit` bytes.
async fn store_field(
    state: &AppState,
    mut field: Field<'_>,
    path: &str,
    limit: u64,
) -> Result<Stored, VideoError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|item| (item, rx))
    }));
    let put = state.storage.put(path, body);
    // Feeds the field to the upload; a failure ends the body with an error, which aborts the
    // upload in storage.
    let pump = async move {
        let mut sent: u64 = 0;
        while let Some(chunk) = field.next().await {
            let failure = match chunk {
                Ok(bytes) => {
                    sent += bytes.len() as u64;
                    if sent > limit {
                        Some(VideoError::TooLarge(limit))
                    } else if tx.send(Ok(bytes)).await.is_err() {
                        // Storage stopped reading: its answer says why.
                        return Ok(());
                    } else {
                        None
                    }
                }
                Err(error) => Some(multipart_error(error, limit)),
            };
            if let Some(failure) = failure {
                let _ = tx
                    .send(Err(std::io::Error::other("the upload was cut off")))
                    .await;
                return Err(failure);
            }
        }
        Ok(())
    };
    let (stored, pumped) = tokio::join!(put, pump);
    pumped?;
    Ok(stored?)
}

/// Reads the form, stores the file, probes it and writes the catalog row.
pub(crate) async fn receive(state: &AppState, mut form: Multipart) -> Result<Video, VideoError> {
    let limit = state.max_upload;
    let id = new_id();
    let mut title_text = None;
    let mut stored: Option<Stored> = None;
    let outcome = async {
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| multipart_error(e, limit))?
        {
            match field.name() {
                Some("title") => title_text = Some(small_field(field, limit).await?),
                Some("file") if stored.is_some() => {
                    return Err(VideoError::BadRequest("send one file".into()));
                }
                Some("file") => {
                    let path = format!("{id}/{}", stored_name(field.file_name()));
                    stored = Some(store_field(state, field, &path, limit).await?);
                }
                // Other fields are ignored (read past by the next call).
                _ => {}
            }
        }
        let title = title(
            title_text
                .as_deref()
                .ok_or_else(|| VideoError::BadRequest("title is required".into()))?,
        )?;
        let file = stored
            .as_ref()
            .ok_or_else(|| VideoError::BadRequest("file is required".into()))?;
        if file.size == 0 {
            return Err(VideoError::BadRequest("file must not be empty".into()));
        }
        Ok(title)
    }
    .await;
    let title = match outcome {
        Ok(title) => title,
        Err(error) => {
            if let Some(file) = &stored {
                forget(state, &file.path).await;
            }
            return Err(error);
        }
    };
    let file = stored.expect("checked above");
    let url = state.storage.object_url(&file.path);
    let duration = media::duration(&url).await;
    let mut thumbnail = None;
    if let Some(still) = media::still(&url, duration).await {
        let path = format!("{id}/still.jpg");
        if state.storage.put(&path, still.into()).await.is_ok() {
            thumbnail = Some(path);
        }
    }
    let video = Video {
        id,
        title,
        path: file.path.clone(),
        size: file.size,
        content_type: file.content_type,
        duration,
        created: crate::now(),
        thumbnail,
        views: 0,
    };
    if let Err(error) = state.catalog.insert(video.clone()).await {
        forget(state, &file.path).await;
        if let Some(still) = &video.thumbnail {
            forget(state, still).await;
        }
        return Err(error.into());
    }
    Ok(video)
}

/// Removes an object this upload stored, logging (not failing) when storage refuses.
async fn forget(state: &AppState, path: &str) {
    if let Err(error) = state.storage.delete(path).await {
        tracing::warn!(%error, path, "removing an abandoned upload failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_are_plain_and_never_empty() {
        assert_eq!(
            stored_name(Some("My Film (2024).mp4")),
            "My_Film__2024_.mp4"
        );
        assert_eq!(stored_name(Some("../../etc/passwd")), "passwd");
        assert_eq!(stored_name(Some("C:\\videos\\clip.webm")), "clip.webm");
        assert_eq!(stored_name(Some(".hidden")), "hidden");
        assert_eq!(stored_name(Some("")), "video");
        assert_eq!(stored_name(None), "video");
        assert_eq!(
            stored_name(Some(&format!("{}.mp4", "a".repeat(300)))).len(),
            100
        );
    }

    #[test]
    fn ids_are_24_hex_digits_and_client_ids_are_checked() {
        let id = new_id();
        assert_eq!(id.len(), 24);
        assert!(valid_id(&id));
        assert!(valid_id("5d9e690ad76fe06a3d7ae416"));
        for bad in ["", "a/b", "a b", "..", "é", &"a".repeat(65)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(title("  Big Buck Bunny ").unwrap(), "Big Buck Bunny");
        assert!(title("   ").is_err());
        assert!(title(&"x".repeat(201)).is_err());
        assert!(title("a\u{0}b").is_err());
    }
}
