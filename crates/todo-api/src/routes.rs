//! The HTTP routes of the API. Each handler carries its OpenAPI description, and routes are
//! registered through `utoipa_axum::routes!`, so the served document is generated from the same
//! code that routes requests.

use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use platform::ErrorBody;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, JsonBody, MAX_BODY_BYTES, QueryParams, TodoId};
use crate::model::{CreateTodo, PatchTodo, ReplaceTodo, Status, Timestamp, Todo};
use crate::store::{Cursor, ListQuery, Position, Store, StoreSlot, Written};

/// Items per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest page a client may ask for.
pub const MAX_LIMIT: u32 = 1000;

#[derive(Clone)]
pub struct AppState {
    store: StoreSlot,
    openapi: Arc<OnceLock<String>>,
}

impl AppState {
    /// The store, or 503 while startup is still opening it.
    fn store(&self) -> Result<&Arc<Store>, ApiError> {
        self.store.get().ok_or(ApiError::Starting)
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Flotilla TODO API",
        description = "The TODO board's REST API. Errors are `{\"status\", \"message\"}`."
    ),
    tags((name = "todo", description = "TODO items"), (name = "contract", description = "Service contract"))
)]
struct ApiDoc;

/// The API's routes and their OpenAPI document.
pub fn router(store: StoreSlot) -> (axum::Router, utoipa::openapi::OpenApi) {
    let state = AppState {
        store,
        openapi: Arc::new(OnceLock::new()),
    };
    let (router, mut api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_todos, create_todo, replace_todo_by_body))
        .routes(routes!(get_todo, replace_todo, patch_todo, delete_todo))
        .routes(routes!(openapi_json))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state.clone())
        .split_for_parts();
    api.merge(platform::contract_openapi());
    let json = api
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    state.openapi.set(json).expect("set once, here");
    (router, api)
}

/// Query of `GET /todo`. Strings here so that a bad value gets a message naming it.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Column to list: TODO (default), PROGRESS or DONE.
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// Items per page, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Where the page starts: the `cursor` of the previous page's `Link: rel="next"` URL.
    cursor: Option<String>,
}

impl ListParams {
    fn validate(self) -> Result<ListQuery, ApiError> {
        let status = match self.status.as_deref() {
            None | Some("") => Status::Todo,
            Some(s) => s
                .parse()
                .map_err(|e: crate::model::UnknownStatus| ApiError::BadRequest(e.to_string()))?,
        };
        let limit = match self.limit.as_deref() {
            None | Some("") => DEFAULT_LIMIT,
            Some(s) => match s.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "limit must be a whole number from 1 to {MAX_LIMIT}, got {s:?}"
                    )));
                }
            },
        };
        let after = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(s) => Some(decode_cursor(s).ok_or_else(|| {
                ApiError::BadRequest(
                    "cursor is not valid; pass the cursor of a Link header unchanged".to_string(),
                )
            })?),
        };
        Ok(ListQuery {
            status,
            after,
            limit,
        })
    }
}

/// Header carrying a replication position: on a write's answer, where the write landed; on a
/// read, what the answer must include (read-your-writes across API replicas).
pub const POSITION_HEADER: &str = "x-todo-position";

/// The `X-Todo-Position` a read must see, if the client sent one.
struct ReadAfter(Option<Position>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ReadAfter {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        match parts.headers.get(POSITION_HEADER) {
            None => Ok(ReadAfter(None)),
            Some(value) => {
                let text = value
                    .to_str()
                    .map_err(|_| ApiError::BadRequest("X-Todo-Position is not text".into()))?;
                Ok(ReadAfter(Some(text.parse()?)))
            }
        }
    }
}

/// Adds `X-Todo-Position` to a write's answer.
fn with_position(mut response: Response, position: Option<&Position>) -> Response {
    if let Some(value) = position.and_then(|p| HeaderValue::try_from(p.to_string()).ok()) {
        response.headers_mut().insert(POSITION_HEADER, value);
    }
    response
}

/// Cursors are opaque to clients: `updated.id`, base64url-encoded.
fn encode_cursor(cursor: Cursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}.{}", cursor.updated.0, cursor.id))
}

fn decode_cursor(text: &str) -> Option<Cursor> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let (updated, id) = text.split_once('.')?;
    let cursor = Cursor {
        updated: Timestamp(updated.parse().ok()?),
        id: id.parse().ok()?,
    };
    (cursor.id > 0).then_some(cursor)
}

/// List one column, newest change first.
#[utoipa::path(get, path = "/todo", tag = "todo", params(ListParams), responses(
    (status = 200, description = "Items ordered by `updated` then `id`, newest first", body = [Todo],
        headers(("Link" = String, description = "`<?status=...&limit=...&cursor=...>; rel=\"next\"` when more items remain"))),
    (status = 400, description = "Unknown status, bad limit or cursor", body = ErrorBody),
    (status = 503, description = "Database unavailable", body = ErrorBody)))]
async fn list_todos(
    State(state): State<AppState>,
    ReadAfter(after): ReadAfter,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Response, ApiError> {
    let query = params.validate()?;
    let page = state.store()?.list(&query, after.as_ref()).await?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(next) = page.next {
        // A query-only reference resolves against the request's own path, so it stays right
        // behind a gateway that strips a prefix such as /api.
        let link = format!(
            "<?status={}&limit={}&cursor={}>; rel=\"next\"",
            query.status,
            query.limit,
            encode_cursor(next)
        );
        headers.insert(
            header::LINK,
            HeaderValue::try_from(link).expect("ASCII only"),
        );
    }
    Ok((headers, page.json).into_response())
}

/// One item.
#[utoipa::path(get, path = "/todo/{id}", tag = "todo",
    params(("id" = i64, Path, description = "Item id", minimum = 1)), responses(
    (status = 200, description = "The item", body = Todo),
    (status = 400, description = "The id is not a positive integer", body = ErrorBody),
    (status = 404, description = "No such item", body = ErrorBody),
    (status = 503, description = "Database unavailable", body = ErrorBody)))]
async fn get_todo(
    State(state): State<AppState>,
    ReadAfter(after): ReadAfter,
    TodoId(id): TodoId,
) -> Result<Json<Todo>, ApiError> {
    state
        .store()?
        .get(id, after.as_ref())
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound(id))
}

/// Create an item, in the TODO column unless `status` names another.
#[utoipa::path(post, path = "/todo", tag = "todo", request_body = CreateTodo, responses(
    (status = 201, description = "Created", body = Todo,
        headers(("Location" = String, description = "`/todo/{id}` of the new item"))),
    (status = 400, description = "Malformed JSON, or a missing, empty or too long title", body = ErrorBody),
    (status = 413, description = "Body over 64 KiB", body = ErrorBody),
    (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
    (status = 503, description = "Database unavailable", body = ErrorBody)))]
async fn create_todo(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateTodo>,
) -> Result<Response, ApiError> {
    let new = body.validate()?;
    let Written {
        value: todo,
        position,
    } = state.store()?.create(&new, Timestamp::now()).await?;
    let location = HeaderValue::try_from(format!("/todo/{}", todo.id)).expect("digits only");
    let response = (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(todo),
    )
        .into_response();
    Ok(with_position(response, position.as_ref()))
}

/// Replace every field of the item whose `id` is in the body (the original API's form).
#[utoipa::path(put, path = "/todo", tag = "todo", request_body = ReplaceTodo, responses(
    (status = 200, description = "The updated item", body = Todo),
    (status = 400, description = "Malformed JSON or an invalid field", body = ErrorBody),
    (status = 404, description = "No such item", body = ErrorBody),
    (status = 413, description = "Body over 64 KiB", body = ErrorBody),
    (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
    (status = 503, description = "Database unavailable", body = ErrorBody)))]
async fn replace_todo_by_body(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ReplaceTodo>,
) -> Result<Response, ApiError> {
    replace(&state, None, body).await
}

/// Replace every field of an item.
#[utoipa::path(put, path = "/todo/{id}", tag = "todo", request_body = ReplaceTodo,
    params(("id" = i64, Path, description = "Item id", minimum = 1)), responses(
    (status = 200, description = "The updated item", body = Todo),
    (status = 400, description = "Malformed JSON, an invalid field, or a body id that differs from the path", body = ErrorBody),
    (status = 404, description = "No such item", body = ErrorBody),
    (status = 413, description = "Body over 64 KiB", body = ErrorBody),
    (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
    (status = 503, description = "Database unavailable", body = ErrorBody)))]
async fn replace_todo(
    State(state): State<AppState>,
    TodoId(id): TodoId,
    JsonBody(body): JsonBody<ReplaceTodo>,
) -> Result<Response, ApiError> {
    replace(&state, Some(id), body).await
}

async fn replace(
    state: &AppState,
    path_id: Option<i64>,
    body: ReplaceTodo,
) -> Result<Response, ApiError> {
    let (id, todo) = body.validate(path_id)?;
    let written = state.store()?.replace(id, &todo, Timestamp::now()).await?;
    updated_item(id, written)
}

/// 200 with the item and where it was written, or 404.
fn updated_item(id: i64, written: Written<Option<Todo>>) -> Result<Response, ApiError> {
    let todo = written.value.ok_or(ApiError::NotFound(id))?;
    Ok(with_position(
        Json(todo).into_response(),
        written.position.as_ref(),
    ))
}

/// Change some fields of an item, such as only its `status`.
#[utoipa::path(patch, path = "/todo/{id}", tag = "todo", request_body = PatchTodo,
    params(("id" = i64, Path, description = "Item id", minimum = 1)), responses(
    (status = 200, description = "The updated item", body = Todo),
    (status = 400, description = "Malformed JSON, an unknown or invalid field, or no field at all", body = ErrorBody),
    (status = 404, description = "No such item", body = ErrorBody),
    (status = 413, description = "Body over 64 KiB", body = ErrorBody),
    (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
    (status = 503, description = "Database unavailable", body = ErrorBody)))]
async fn patch_todo(
    State(state): State<AppState>,
    TodoId(id): TodoId,
    JsonBody(body): JsonBody<PatchTodo>,
) -> Result<Response, ApiError> {
    let changes = body.validate()?;
    let written = state
        .store()?
        .update(id, &changes, Timestamp::now())
        .await?;
    updated_item(id, written)
}

/// Delete an item.
#[utoipa::path(delete, path = "/todo/{id}", tag = "todo",
    params(("id" = i64, Path, description = "Item id", minimum = 1)), responses(
    (status = 204, description = "Deleted"),
    (status = 400, description = "The id is not a positive integer", body = ErrorBody),
    (status = 404, description = "No such item", body = ErrorBody),
    (status = 503, description = "Database unavailable", body = ErrorBody)))]
async fn delete_todo(
    State(state): State<AppState>,
    TodoId(id): TodoId,
) -> Result<Response, ApiError> {
    let Written {
        value: deleted,
        position,
    } = state.store()?.delete(id).await?;
    if !deleted {
        return Err(ApiError::NotFound(id));
    }
    Ok(with_position(
        StatusCode::NO_CONTENT.into_response(),
        position.as_ref(),
    ))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "contract",
    responses((status = 200, description = "OpenAPI document of this API", body = Object)))]
async fn openapi_json(State(state): State<AppState>) -> Response {
    let json = state.openapi.get().cloned().unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = Cursor {
            updated: Timestamp(1_700_000_000),
            id: 42,
        };
        assert_eq!(decode_cursor(&encode_cursor(cursor)), Some(cursor));
        for bad in ["", "!!", "bm9wZQ", "MS4w", "YS5i"] {
            assert_eq!(decode_cursor(bad), None, "{bad:?}");
        }
    }
}
