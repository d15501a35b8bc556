//! The pages: the list of videos, a video's page with its player, and the upload form. They
//! are rendered on the server from the same code paths as the JSON API, and use relative links
//! only, so they work behind a gateway's prefix (`/videos/`). Without JavaScript the upload
//! form posts and is answered with the new video's page (303); with it, a progress bar.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Multipart, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::AppState;
use crate::api::{self, IdQuery, ListQuery};
use crate::catalog::Video;
use crate::error::VideoError;
use crate::upload;

const CSS: &str = include_str!("../templates/base.css");

/// A video as the pages show it.
struct Shown {
    id: String,
    title: String,
    duration: String,
    size: String,
    created: String,
    views: String,
    still: bool,
}

fn duration_text(seconds: Option<f64>) -> String {
    let Some(seconds) = seconds else {
        return "length unknown".into();
    };
    let total = seconds.round() as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

fn size_text(bytes: u64) -> String {
    const MB: f64 = 1024.0 * 1024.0;
    if bytes < 1024 * 1024 {
        format!("{:.0} KB", (bytes as f64 / 1024.0).ceil())
    } else if (bytes as f64) < 1024.0 * MB {
        format!("{:.1} MB", bytes as f64 / MB)
    } else {
        format!("{:.2} GB", bytes as f64 / MB / 1024.0)
    }
}

impl From<&Video> for Shown {
    fn from(v: &Video) -> Shown {
        // "2026-12-07T19:53:54.123Z" → "2026-12-07 19:53 UTC"
        let created = match (v.created.get(..10), v.created.get(11..16)) {
            (Some(day), Some(time)) => format!("{day} {time} UTC"),
            _ => v.created.clone(),
        };
        Shown {
            id: v.id.clone(),
            title: v.title.clone(),
            duration: duration_text(v.duration),
            size: size_text(v.size),
            created,
            views: if v.views == 1 {
                "1 view".into()
            } else {
                format!("{} views", v.views)
            },
            still: v.thumbnail.is_some(),
        }
    }
}

#[derive(Template)]
#[template(path = "list.html")]
struct ListPage {
    css: &'static str,
    videos: Vec<Shown>,
    next: Option<String>,
}

#[derive(Template)]
#[template(path = "watch.html")]
struct WatchPage {
    css: &'static str,
    video: Shown,
}

#[derive(Template)]
#[template(path = "upload.html")]
struct UploadPage {
    css: &'static str,
    title: String,
    error: Option<String>,
}

fn render(page: impl Template, status: StatusCode) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "rendering a page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// An error as a short page.
fn error_page(error: VideoError) -> Response {
    let status = error.status();
    let body = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>FlixTube</title>\
         <p>{}</p><p><a href=\"./\">All videos</a></p>",
        askama::filters::escape(error.to_string(), askama::filters::Html)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    (status, Html(body)).into_response()
}

/// `GET /`.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = async {
        let (limit, cursor) = api::page_of(query, 48)?;
        Ok::<_, VideoError>(state.catalog.list(limit, cursor).await?)
    }
    .await;
    match result {
        Ok((videos, more)) => {
            let next = more
                .then(|| videos.last().map(|v| api::encode(&api::cursor_text(v))))
                .flatten();
            render(
                ListPage {
                    css: CSS,
                    videos: videos.iter().map(Shown::from).collect(),
                    next,
                },
                StatusCode::OK,
            )
        }
        Err(error) => error_page(error),
    }
}

/// `GET /watch?id=`.
pub(crate) async fn watch(
    State(state): State<Arc<AppState>>,
    query: Result<Query<IdQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = async {
        let id = api::id_of(query)?;
        api::find(&state, &id).await
    }
    .await;
    match result {
        Ok(video) => render(
            WatchPage {
                css: CSS,
                video: Shown::from(&video),
            },
            StatusCode::OK,
        ),
        Err(error) => error_page(error),
    }
}

/// `GET /upload`.
pub(crate) async fn upload_form() -> Response {
    render(
        UploadPage {
            css: CSS,
            title: String::new(),
            error: None,
        },
        StatusCode::OK,
    )
}

/// `POST /upload` (the form without JavaScript): the new video's page, or the form again with
/// the error.
pub(crate) async fn upload(
    State(state): State<Arc<AppState>>,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let result = match form {
        Ok(form) => upload::receive(&state, form).await,
        Err(_) => Err(VideoError::BadRequest(
            "send the form with a title and a file".into(),
        )),
    };
    match result {
        Ok(video) => {
            let mut response = Redirect::to(&format!("watch?id={}", video.id)).into_response();
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            response
        }
        Err(error) => render(
            UploadPage {
                css: CSS,
                title: String::new(),
                error: Some(error.to_string()),
            },
            error.status(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_as_people_write_them() {
        assert_eq!(duration_text(Some(5.4)), "0:05");
        assert_eq!(duration_text(Some(754.0)), "12:34");
        assert_eq!(duration_text(Some(3_723.0)), "1:02:03");
        assert_eq!(duration_text(None), "length unknown");
        assert_eq!(size_text(1500), "2 KB");
        assert_eq!(size_text(5 * 1024 * 1024 + 1), "5.0 MB");
        assert_eq!(size_text(3 << 30), "3.00 GB");
    }
}
