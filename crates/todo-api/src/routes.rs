//! The HTTP routes of the API. Each handler carries its OpenAPI description, and routes are
//! registered through `utoipa_axum::routes!`, so the served document is generated from the same
//! code that routes requests.

use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use platform::ErrorBody;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::conditional;
use crate::error::{ApiError, JsonBody, MAX_BODY_BYTES, QueryParams, TodoId};
use crate::model::{
    CreateTodo, NewTodo, PatchTodo, ReplaceTodo, ReplaceTodoAt, Status, Timestamp, Todo,
};
use crate::store::{Cursor, ListQuery, Position, Store, StoreError, StoreSlot, Written};

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
    /// Column to list: TODO (default, or the cursor's column), PROGRESS or DONE.
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// Items per page, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Where the page starts: pass the `cursor` of the previous page's `Link: rel="next"` URL
    /// unchanged. It names its column: with a `status` that differs, the request is refused (400).
    #[param(schema_with = cursor_schema)]
    cursor: Option<String>,
}

impl ListParams {
    fn validate(self) -> Result<ListQuery, ApiError> {
        let after = match self.cursor.as_deref() {
            None => None,
            Some(s) => Some(decode_cursor(s).ok_or_else(|| {
                ApiError::BadRequest(
                    "cursor is not valid; pass the cursor of a Link header unchanged".to_string(),
                )
            })?),
        };
        let status = match (self.status.as_deref(), after) {
            (None, None) => Status::Todo,
            (None, Some((status, _))) => status,
            (Some(s), _) => s
                .parse()
                .map_err(|e: crate::model::UnknownStatus| ApiError::BadRequest(e.to_string()))?,
        };
        if let Some((from, _)) = after
            && from != status
        {
            return Err(ApiError::BadRequest(format!(
                "cursor is from the {from} column, but status is {status}"
            )));
        }
        let limit = match self.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(s) => match whole_number(s).and_then(|n| u32::try_from(n).ok()) {
                Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "limit must be a whole number from 1 to {MAX_LIMIT}, got {s:?}"
                    )));
                }
            },
        };
        Ok(ListQuery {
            status,
            after: after.map(|(_, cursor)| cursor),
            limit,
        })
    }
}

/// Digits only (no sign, no spaces), at most 18 of them so the value fits an `i64`.
fn whole_number(text: &str) -> Option<i64> {
    (!text.is_empty() && text.len() <= 18 && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
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

/// What [`decode_cursor`] accepts, for the document.
const CURSOR_PATTERN: &str = r"^(TODO|PROGRESS|DONE)\.(0|[1-9][0-9]{0,17})\.[1-9][0-9]{0,17}$";

fn cursor_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(CURSOR_PATTERN))
        .build()
}

/// A cursor is `COLUMN.updated.id` of the last item of a page: clients pass it back unchanged
/// (the document gives its pattern, which [`decode_cursor`] enforces exactly).
fn encode_cursor(status: Status, cursor: Cursor) -> String {
    format!("{status}.{}.{}", cursor.updated.0, cursor.id)
}

fn decode_cursor(text: &str) -> Option<(Status, Cursor)> {
    let mut parts = text.splitn(3, '.');
    let status = parts.next()?.parse().ok()?;
    let (updated, id) = (parts.next()?, parts.next()?);
    let canonical = |digits: &str| !digits.starts_with('0') || digits == "0";
    let cursor = Cursor {
        updated: Timestamp(whole_number(updated).filter(|_| canonical(updated))?),
        id: whole_number(id).filter(|_| canonical(id))?,
    };
    (cursor.id > 0).then_some((status, cursor))
}

/// List one column, newest change first.
#[utoipa::path(get, path = "/todo", tag = "todo", params(ListParams), responses(
    (status = 200, description = "Items ordered by `updated` then `id`, newest first", body = [Todo],
        headers(("Link" = String, description = "`<?status=...&limit=...&cursor=...>; rel=\"next\"` when more items remain"),
            ("ETag" = String, description = "Tag of this answer; send it back in `If-None-Match`"))),
    (status = 304, description = "`If-None-Match` names the current answer's tag: nothing changed, no body",
        headers(("ETag" = String, description = "Tag of the current answer"))),
    (status = 400, description = "Unknown status, a bad limit or cursor, or a cursor from another column than `status`", body = ErrorBody),
    (status = 503, description = "Database unavailable", body = ErrorBody)))]
async fn list_todos(
    State(state): State<AppState>,
    ReadAfter(after): ReadAfter,
    request: HeaderMap,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Response, ApiError> {
    let query = params.validate()?;
    let page = state.store()?.list(&query, after.as_ref()).await?;
    let mut headers = HeaderMap::new();
    if let Some(next) = page.next {
        // A query-only reference resolves against the request's own path, so it stays right
        // behind a gateway that strips a prefix such as /api.
        let link = format!(
            "<?status={}&limit={}&cursor={}>; rel=\"next\"",
            query.status,
            query.limit,
            encode_cursor(query.status, next)
        );
        headers.insert(
            header::LINK,
            HeaderValue::try_from(link).expect("ASCII only"),
        );
    }
    Ok(conditional::json(&request, headers, page.json))
}

/// One item.
#[utoipa::path(get, path = "/todo/{id}", tag = "todo",
    params(("id" = i32, Path, description = "Item id", minimum = 1)), responses(
    (status = 200, description = "The item", body = Todo,
        headers(("ETag" = String, description = "Tag of this answer; send it back in `If-None-Match`"))),
    (status = 304, description = "`If-None-Match` names the current answer's tag: nothing changed, no body",
        headers(("ETag" = String, description = "Tag of the current answer"))),
    (status = 400, description = "The id is not a positive 32-bit integer", body = ErrorBody),
    (status = 404, description = "No such item", body = ErrorBody),
    (status = 503, description = "Database unavailable", body = ErrorBody)))]
async fn get_todo(
    State(state): State<AppState>,
    ReadAfter(after): ReadAfter,
    request: HeaderMap,
    TodoId(id): TodoId,
) -> Result<Response, ApiError> {
    let todo = state
        .store()?
        .get(id, after.as_ref())
        .await?
        .ok_or(ApiError::NotFound(id))?;
    let body =
        serde_json::to_vec(&todo).map_err(|e| ApiError::Store(StoreError::Other(e.into())))?;
    Ok(conditional::json(&request, HeaderMap::new(), body))
}

/// Create an item, in the TODO column unless `status` names another.
#[utoipa::path(post, path = "/todo", tag = "todo", request_body = CreateTodo, responses(
    (status = 201, description = "Created", body = Todo,
        headers(("Location" = String, description = "`/todo/{id}` of the new item"))),
    (status = 400, description = "Malformed JSON, or a missing, empty or too long title", body = ErrorBody),
    (status = 413, description = "Body over 256 KiB", body = ErrorBody),
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
    (status = 413, description = "Body over 256 KiB", body = ErrorBody),
    (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
    (status = 503, description = "Database unavailable", body = ErrorBody)))]
async fn replace_todo_by_body(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ReplaceTodo>,
) -> Result<Response, ApiError> {
    let (id, todo) = body.validate()?;
    replace(&state, id, todo).await
}

/// Replace every field of an item.
#[utoipa::path(put, path = "/todo/{id}", tag = "todo", request_body = ReplaceTodoAt,
    params(("id" = i32, Path, description = "Item id", minimum = 1)), responses(
    (status = 200, description = "The updated item", body = Todo),
    (status = 400, description = "Malformed JSON, an invalid field, or a body id that differs from the path", body = ErrorBody),
    (status = 404, description = "No such item", body = ErrorBody),
    (status = 413, description = "Body over 256 KiB", body = ErrorBody),
    (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
    (status = 503, description = "Database unavailable", body = ErrorBody)))]
async fn replace_todo(
    State(state): State<AppState>,
    TodoId(id): TodoId,
    JsonBody(body): JsonBody<ReplaceTodoAt>,
) -> Result<Response, ApiError> {
    let todo = body.validate(id)?;
    replace(&state, id, todo).await
}

async fn replace(state: &AppState, id: i64, todo: NewTodo) -> Result<Response, ApiError> {
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
    params(("id" = i32, Path, description = "Item id", minimum = 1)), responses(
    (status = 200, description = "The updated item", body = Todo),
    (status = 400, description = "Malformed JSON, an unknown or invalid field, or no field at all", body = ErrorBody),
    (status = 404, description = "No such item", body = ErrorBody),
    (status = 413, description = "Body over 256 KiB", body = ErrorBody),
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
    params(("id" = i32, Path, description = "Item id", minimum = 1)), responses(
    (status = 204, description = "Deleted"),
    (status = 400, description = "The id is not a positive 32-bit integer", body = ErrorBody),
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
        let text = encode_cursor(Status::Done, cursor);
        assert_eq!(text, "DONE.1700000000.42");
        assert_eq!(decode_cursor(&text), Some((Status::Done, cursor)));
        let pattern = regex::Regex::new(CURSOR_PATTERN).unwrap();
        for bad in [
            "",
            "!!",
            "DONE",
            "DONE.1",
            "DONE.1.0",
            "DONE.01.2",
            "DONE.1.02",
            "DONE.-1.2",
            "DONE.+1.2",
            "done.1.2",
            "DONE.1.2.3",
            "DONE.1234567890123456789.2",
            "DONE. 1.2",
        ] {
            assert_eq!(decode_cursor(bad), None, "{bad:?}");
            assert!(!pattern.is_match(bad), "{bad:?}");
        }
        for good in ["TODO.0.1", "PROGRESS.123456789012345678.999999999999999999"] {
            assert!(decode_cursor(good).is_some(), "{good:?}");
            assert!(pattern.is_match(good), "{good:?}");
        }
    }
}
