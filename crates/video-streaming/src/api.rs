//! `GET /video?id=` (the seed's path: a video streamed from storage, seeking included) and the
//! JSON API under `/api/videos`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use serde::Deserialize;

use crate::AppState;
use crate::catalog::{Cursor, Video};
use crate::error::VideoError;
use crate::events::Event;
use crate::storage::ANSWER_HEADERS;
use crate::upload::{self, valid_id};

/// Most videos in one page of the list.
pub(crate) const MAX_PAGE: usize = 100;

#[derive(Debug, Deserialize)]
pub(crate) struct IdQuery {
    id: Option<String>,
}

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

fn malformed_query<T>(query: QueryResult<T>) -> Result<T, VideoError> {
    query
        .map(|Query(q)| q)
        .map_err(|_| VideoError::BadRequest("the query string is malformed".into()))
}

/// The id of `?id=`, checked.
pub(crate) fn id_of(query: QueryResult<IdQuery>) -> Result<String, VideoError> {
    let id = malformed_query(query)?
        .id
        .ok_or_else(|| VideoError::BadRequest("id is required (?id=<video id>)".into()))?;
    checked(id)
}

fn checked(id: String) -> Result<String, VideoError> {
    if valid_id(&id) {
        Ok(id)
    } else {
        Err(VideoError::BadRequest(
            "id must be 1 to 64 letters, digits, - or _".into(),
        ))
    }
}

/// A catalog entry, or 404.
pub(crate) async fn find(state: &AppState, id: &str) -> Result<Video, VideoError> {
    state
        .catalog
        .get(id)
        .await?
        .ok_or_else(|| VideoError::NotFound(id.to_string()))
}

/// Whether a request plays from the start (no range, or one from byte 0): a view. The
/// requests a player makes to seek are not.
fn from_the_start(headers: &HeaderMap) -> bool {
    match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(range) => range.trim().starts_with("bytes=0-"),
    }
}

/// Streams an object from storage to the viewer: storage's status (200, 206, 304, 412, 416)
/// and headers, and its body as it comes.
pub(crate) async fn relay(
    state: &AppState,
    path: &str,
    headers: &HeaderMap,
    head: bool,
) -> Result<(StatusCode, Response), VideoError> {
    let answer = state.storage.read(path, headers, head).await?;
    let status = answer.status();
    if status == StatusCode::NOT_FOUND {
        return Err(VideoError::Storage(crate::storage::StorageError::Refused {
            status: 404,
            message: "the video's file is missing from storage".into(),
        }));
    }
    let mut response = Response::builder().status(status);
    for name in ANSWER_HEADERS {
        if let Some(value) = answer.headers().get(*name) {
            response = response.header(*name, value);
        }
    }
    let body = if head {
        Body::empty()
    } else {
        Body::from_stream(answer.bytes_stream().map_err(std::io::Error::other))
    };
    let response = response.body(body).map_err(|_| {
        VideoError::BadRequest("storage answered headers that cannot be passed on".into())
    })?;
    Ok((status, response))
}

/// `GET`/`HEAD /video?id=`.
pub(crate) async fn stream(
    State(state): State<Arc<AppState>>,
    method: Method,
    query: QueryResult<IdQuery>,
    headers: HeaderMap,
) -> Result<Response, VideoError> {
    let id = id_of(query)?;
    let video = find(&state, &id).await?;
    let head = method == Method::HEAD;
    let (status, response) = relay(&state, &video.path, &headers, head).await?;
    if !head && status.is_success() && from_the_start(&headers) {
        state.events.publish(Event::Viewed {
            video_id: video.id,
            at: crate::now(),
        });
    }
    Ok(response)
}

/// `GET /thumbnail?id=`: the video's still.
pub(crate) async fn thumbnail(
    State(state): State<Arc<AppState>>,
    query: QueryResult<IdQuery>,
    headers: HeaderMap,
) -> Result<Response, VideoError> {
    let id = id_of(query)?;
    let video = find(&state, &id).await?;
    let still = video
        .thumbnail
        .ok_or_else(|| VideoError::NotFound(format!("{id} (no still)")))?;
    Ok(relay(&state, &still, &headers, false).await?.1)
}

/// `POST /api/videos`.
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, VideoError> {
    let form = form.map_err(|_| {
        VideoError::BadRequest("send multipart/form-data with a title and a file".into())
    })?;
    let video = upload::receive(&state, form).await?;
    let mut response = (StatusCode::CREATED, Json(&video)).into_response();
    // Relative to /api/videos, so it stays right behind a gateway's prefix.
    if let Ok(location) = HeaderValue::from_str(&format!("videos/{}", video.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// A page's limit and cursor, checked.
pub(crate) fn page_of(
    query: QueryResult<ListQuery>,
    default: usize,
) -> Result<(usize, Option<Cursor>), VideoError> {
    let query = malformed_query(query)?;
    let limit = match query.limit.as_deref() {
        None => default,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                VideoError::BadRequest(format!("limit must be a whole number from 1 to {MAX_PAGE}"))
            })?,
    };
    let cursor = match query.cursor.as_deref() {
        None => None,
        Some(text) => Some(parse_cursor(text).ok_or_else(|| {
            VideoError::BadRequest("cursor must be one from a Link header".into())
        })?),
    };
    Ok((limit, cursor))
}

/// `<created>~<id>`.
pub(crate) fn cursor_text(video: &Video) -> String {
    format!("{}~{}", video.created, video.id)
}

fn parse_cursor(text: &str) -> Option<Cursor> {
    let (created, id) = text.rsplit_once('~')?;
    time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339).ok()?;
    valid_id(id).then(|| Cursor {
        created: created.to_string(),
        id: id.to_string(),
    })
}

pub(crate) fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `GET /api/videos`: newest first; a `Link: <...>; rel="next"` header when there are more.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    query: QueryResult<ListQuery>,
) -> Result<Response, VideoError> {
    let (limit, cursor) = page_of(query, 20)?;
    let (videos, more) = state.catalog.list(limit, cursor).await?;
    let mut response = Json(&videos).into_response();
    if more && let Some(last) = videos.last() {
        let link = format!(
            "<?limit={limit}&cursor={}>; rel=\"next\"",
            encode(&cursor_text(last))
        );
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}

/// `GET /api/videos/{id}`.
pub(crate) async fn one(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Video>, VideoError> {
    let id = checked(id)?;
    Ok(Json(find(&state, &id).await?))
}

/// `DELETE /api/videos/{id}`: the file (and still) from storage first, then the catalog row;
/// if storage cannot delete, nothing changes.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, VideoError> {
    let id = checked(id)?;
    let video = find(&state, &id).await?;
    state.storage.delete(&video.path).await?;
    if let Some(still) = &video.thumbnail {
        state.storage.delete(still).await?;
    }
    state.catalog.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
