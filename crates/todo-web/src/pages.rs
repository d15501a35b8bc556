//! The board page and its forms. Every form posts and redirects back to the board (303), so the
//! board works without JavaScript; a failed form re-renders the board with the error next to the
//! field and the input kept.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::AppState;
use crate::api::{ApiError, Caller, Changes, Listed, STATUSES, Todo};
use crate::assets;

#[derive(Template)]
#[template(path = "board.html")]
struct BoardPage {
    css: String,
    js: String,
    icon: String,
    notice: Option<String>,
    auto_refresh: bool,
    new: FormState,
    columns: Vec<Column>,
}

struct Column {
    status: &'static str,
    items: Vec<Card>,
    more: bool,
    /// The last good copy, shown while the API cannot answer.
    stale: bool,
}

struct Card {
    id: i64,
    title: String,
    content: String,
    updated: String,
    updated_text: String,
    moves: Vec<&'static str>,
    edit: FormState,
}

/// A form's values, and its error if the last submission failed.
#[derive(Default)]
struct FormState {
    title: String,
    content: String,
    error: Option<String>,
    /// The field the error is about (`title`, `content`), for `aria-invalid`.
    field: &'static str,
}

impl FormState {
    fn failed(title: &str, content: &str, error: &ApiError) -> Self {
        let message = match error {
            ApiError::Unavailable(_) | ApiError::Unreachable(_) => {
                "TODO API unavailable — nothing was saved; please try again".to_string()
            }
            ApiError::Refused(_) => {
                "TODO API is failing, so changes are refused for a few seconds — nothing was saved"
                    .to_string()
            }
            // The request may have reached the API: do not claim either way.
            ApiError::TimedOut => {
                "TODO API did not answer in time — the change may not have been saved; check the board"
                    .to_string()
            }
            ApiError::Rejected { message, .. } => message.clone(),
        };
        FormState {
            title: title.to_string(),
            content: content.to_string(),
            field: if message.contains("content") {
                "content"
            } else {
                "title"
            },
            error: Some(message),
        }
    }
}

/// A failed edit: which card, and its form.
struct FailedEdit {
    id: i64,
    form: FormState,
}

/// Who the page's calls to the API are made for: its request id and trace context.
fn caller(headers: &HeaderMap) -> Caller<'_> {
    Caller {
        request_id: headers
            .get(platform::observe::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-"),
        trace: Some(headers),
    }
}

/// `GET /`.
pub(crate) async fn board(State(state): State<AppState>, headers: HeaderMap) -> Response {
    render(
        &state,
        &caller(&headers),
        FormState::default(),
        None,
        StatusCode::OK,
    )
    .await
}

/// Loads the three columns concurrently and renders the board.
async fn render(
    state: &AppState,
    caller: &Caller<'_>,
    new: FormState,
    failed_edit: Option<FailedEdit>,
    status: StatusCode,
) -> Response {
    let lists = futures_util::future::join_all(
        STATUSES.iter().map(|status| state.api.list(status, caller)),
    )
    .await;
    let mut notice = None;
    let mut oldest: Option<std::time::Duration> = None;
    let mut failed_edit = failed_edit;
    let columns = STATUSES
        .iter()
        .zip(lists)
        .map(|(status, list)| {
            let listed = list.unwrap_or_else(|error| {
                tracing::warn!(%error, column = status, "cannot load a column");
                notice = Some("TODO API unavailable — showing nothing; retrying".to_string());
                Listed {
                    items: std::sync::Arc::from([]),
                    more: false,
                    stale: None,
                }
            });
            if let Some(age) = listed.stale {
                oldest = Some(oldest.map_or(age, |o| o.max(age)));
            }
            let items = listed
                .items
                .iter()
                .map(|todo| card(todo, &mut failed_edit))
                .collect();
            Column {
                status,
                items,
                more: listed.more,
                stale: listed.stale.is_some(),
            }
        })
        .collect();
    if let (None, Some(age)) = (&notice, oldest) {
        notice = Some(format!(
            "TODO API unavailable — showing the board as it was {} ago; retrying",
            age_text(age)
        ));
    }
    let auto_refresh = notice.is_some() && new.error.is_none();
    let page = BoardPage {
        css: assets::url("app.css"),
        js: assets::url("app.js"),
        icon: assets::url("icon.svg"),
        notice,
        auto_refresh,
        new,
        columns,
    };
    // Sized for the whole page up front, so a long board's HTML is not regrown by doubling.
    let cards: usize = page.columns.iter().map(|c| c.items.len()).sum();
    let mut html = String::with_capacity(4096 + cards * 1600);
    match page.render_into(&mut html) {
        Ok(()) => (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render the board");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render the board").into_response()
        }
    }
}

fn card(todo: &Todo, failed_edit: &mut Option<FailedEdit>) -> Card {
    let edit = match failed_edit.take() {
        Some(failed) if failed.id == todo.id => failed.form,
        other => {
            *failed_edit = other;
            FormState {
                title: todo.title.clone(),
                content: todo.content.clone(),
                ..FormState::default()
            }
        }
    };
    Card {
        id: todo.id,
        moves: STATUSES
            .iter()
            .copied()
            .filter(|s| *s != todo.status)
            .collect(),
        updated_text: readable_time(&todo.updated),
        updated: todo.updated.clone(),
        title: todo.title.clone(),
        content: todo.content.clone(),
        edit,
    }
}

/// `42 s`, `3 min`, `2 h`.
fn age_text(age: std::time::Duration) -> String {
    match age.as_secs() {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s => format!("{} h", s / 3600),
    }
}

/// `2026-11-22T05:04:00Z` -> `2026-11-22 05:04 UTC`.
fn readable_time(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..16)) {
        (Some(date), Some(time)) if rfc3339.as_bytes().get(10) == Some(&b'T') => {
            format!("{date} {time} UTC")
        }
        _ => rfc3339.to_string(),
    }
}

#[derive(Deserialize)]
pub(crate) struct TodoForm {
    #[serde(default)]
    title: String,
    #[serde(default)]
    content: String,
}

#[derive(Deserialize)]
pub(crate) struct StatusForm {
    status: String,
}

fn back_to_board() -> Response {
    Redirect::to("/").into_response()
}

fn failure_status(error: &ApiError) -> StatusCode {
    match error {
        ApiError::Rejected { status, .. } if *status < 500 => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// `POST /todo`: create.
pub(crate) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<TodoForm>,
) -> Response {
    let caller = caller(&headers);
    match state.api.create(&form.title, &form.content, &caller).await {
        Ok(_) => back_to_board(),
        Err(error) => {
            let new = FormState::failed(&form.title, &form.content, &error);
            render(&state, &caller, new, None, failure_status(&error)).await
        }
    }
}

/// `POST /todo/{id}`: edit title and content.
pub(crate) async fn edit(
    State(state): State<AppState>,
    Path(todo): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<TodoForm>,
) -> Response {
    let caller = caller(&headers);
    let changes = Changes {
        title: Some(&form.title),
        content: Some(&form.content),
        status: None,
    };
    match state.api.update(todo, &changes, &caller).await {
        Ok(_) => back_to_board(),
        Err(error) => {
            let failed = FailedEdit {
                id: todo,
                form: FormState::failed(&form.title, &form.content, &error),
            };
            let status = failure_status(&error);
            let notice_form = match &error {
                // The board may not show the card (deleted meanwhile): say so at the top.
                ApiError::Rejected {
                    status: 404,
                    message,
                } => FormState {
                    error: Some(message.clone()),
                    ..FormState::default()
                },
                _ => FormState::default(),
            };
            render(&state, &caller, notice_form, Some(failed), status).await
        }
    }
}

/// `POST /todo/{id}/status`: move to another column.
pub(crate) async fn move_to(
    State(state): State<AppState>,
    Path(todo): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<StatusForm>,
) -> Response {
    let caller = caller(&headers);
    let changes = Changes {
        title: None,
        content: None,
        status: Some(&form.status),
    };
    match state.api.update(todo, &changes, &caller).await {
        Ok(_) => back_to_board(),
        Err(error) => {
            let new = FormState {
                error: Some(FormState::failed("", "", &error).error.unwrap_or_default()),
                ..FormState::default()
            };
            render(&state, &caller, new, None, failure_status(&error)).await
        }
    }
}

/// `POST /todo/{id}/delete`: delete (the page asked for confirmation first).
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(todo): Path<i64>,
    headers: HeaderMap,
) -> Response {
    let caller = caller(&headers);
    match state.api.delete(todo, &caller).await {
        Ok(()) => back_to_board(),
        // Already gone is what the user wanted.
        Err(ApiError::Rejected { status: 404, .. }) => back_to_board(),
        Err(error) => {
            let new = FormState {
                error: Some(FormState::failed("", "", &error).error.unwrap_or_default()),
                ..FormState::default()
            };
            render(&state, &caller, new, None, failure_status(&error)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_date_and_minutes() {
        assert_eq!(
            readable_time("2026-11-22T05:04:09Z"),
            "2026-11-22 05:04 UTC"
        );
        assert_eq!(readable_time("garbage"), "garbage");
    }
}
