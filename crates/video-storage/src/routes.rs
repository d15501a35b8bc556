//! The routes: one object at `/video?path=` (the seed's path) and the listing at `/videos`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::TryStreamExt;
use object_store::{ObjectMeta, ObjectStoreExt as _};
use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::key;
use crate::read::{self, Version};
use crate::store::Store;
use crate::upload;

/// What a path keeps unencoded in a `Location` query: RFC 3986's unreserved characters and `/`.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Objects a listing looks at, at most (it sorts them: the local store lists in no order).
pub const MAX_LISTED: usize = 100_000;
/// Most objects in one page of a listing.
pub const MAX_PAGE: usize = 1000;

#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) store: Store,
    pub(crate) max_upload: u64,
}

pub(crate) fn routes(state: AppState) -> Router {
    Router::new()
        .route(
            "/video",
            get(get_object)
                .head(head_object)
                .put(put_object)
                .delete(delete_object),
        )
        .route("/videos", get(list))
        // Uploads are bounded by the service's own limit, counted as they stream.
        .layer(DefaultBodyLimit::disable())
        .with_state(Arc::new(state))
}

#[derive(Debug, Deserialize)]
struct PathQuery {
    path: Option<String>,
}

fn object_path(
    query: Result<Query<PathQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<object_store::path::Path, StorageError> {
    let Query(query) =
        query.map_err(|_| StorageError::BadRequest("the query string is malformed".into()))?;
    let raw = query
        .path
        .ok_or_else(|| StorageError::BadRequest("path is required (?path=<name>)".into()))?;
    Ok(key::object_path(&raw)?)
}

async fn get_object(
    State(state): State<Arc<AppState>>,
    query: Result<Query<PathQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, StorageError> {
    read::read(&state.store, &object_path(query)?, &headers, true).await
}

async fn head_object(
    State(state): State<Arc<AppState>>,
    query: Result<Query<PathQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, StorageError> {
    read::read(&state.store, &object_path(query)?, &headers, false).await
}

/// An object as listings and uploads describe it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub path: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: String,
    pub content_type: String,
}

impl ObjectInfo {
    fn of(meta: &ObjectMeta) -> ObjectInfo {
        let path = key::display(&meta.location);
        let version = Version::of(meta);
        ObjectInfo {
            content_type: mime_guess::from_path(&path)
                .first_or_octet_stream()
                .to_string(),
            path,
            size: meta.size,
            etag: version.etag,
            last_modified: httpdate::fmt_http_date(version.modified),
        }
    }
}

async fn put_object(
    State(state): State<Arc<AppState>>,
    query: Result<Query<PathQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, StorageError> {
    let path = object_path(query)?;
    // Before anything touches the path: a link out of the store is not even looked at.
    state.store.check_inside(&path).await?;
    let existed = match state.store.objects.head(&path).await {
        Ok(_) => true,
        Err(object_store::Error::NotFound { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    let meta = upload::upload(state.store.clone(), path, headers, body, state.max_upload).await?;
    let info = ObjectInfo::of(&meta);
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut response = (status, Json(&info)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!(
        "/video?path={}",
        percent_encoding::utf8_percent_encode(&info.path, QUERY_VALUE)
    )) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn delete_object(
    State(state): State<Arc<AppState>>,
    query: Result<Query<PathQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<StatusCode, StorageError> {
    let path = object_path(query)?;
    state.store.check_inside(&path).await?;
    // Stores delete a missing object without complaint; a client wants to know.
    state.store.objects.head(&path).await?;
    state.store.objects.delete(&path).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    prefix: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Serialize, Deserialize)]
pub struct Listing {
    pub objects: Vec<ObjectInfo>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

async fn list(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Listing>, StorageError> {
    let Query(query) =
        query.map_err(|_| StorageError::BadRequest("the query string is malformed".into()))?;
    let prefix = key::prefix(query.prefix.as_deref())?;
    let after = query.after.as_deref().map(key::object_path).transpose()?;
    let limit = match query.limit.as_deref() {
        None => MAX_PAGE,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                StorageError::BadRequest(format!(
                    "limit must be a whole number from 1 to {MAX_PAGE}"
                ))
            })?,
    };
    if let Some(prefix) = &prefix {
        state.store.check_inside(prefix).await?;
    }
    let mut stream = match &after {
        Some(after) => state.store.objects.list_with_offset(prefix.as_ref(), after),
        None => state.store.objects.list(prefix.as_ref()),
    };
    let mut found = Vec::new();
    while let Some(meta) = stream.try_next().await? {
        if found.len() == MAX_LISTED {
            return Err(StorageError::BadRequest(format!(
                "more than {MAX_LISTED} objects to list; give a narrower prefix"
            )));
        }
        found.push(meta);
    }
    found.sort_unstable_by(|a, b| a.location.cmp(&b.location));
    let next = (found.len() > limit).then(|| key::display(&found[limit - 1].location));
    found.truncate(limit);
    Ok(Json(Listing {
        objects: found.iter().map(ObjectInfo::of).collect(),
        next,
    }))
}
