//! The board over HTTP: rendering, forms, errors, assets, and the API being down.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;

use crate::helpers::{api_column, api_find, client, spawn_api, spawn_web};

#[tokio::test]
async fn the_board_shows_three_columns_with_counts_and_escaped_cards() {
    let dir = tempfile::tempdir().unwrap();
    let api = spawn_api(dir.path(), true).await;
    let web = spawn_web(&api.url("")).await;
    let form = [("title", "<script>alert(1)</script>"), ("content", "a & b")];
    let created = client()
        .post(web.url("/todo"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 303);
    assert_eq!(created.headers()["location"], "/");

    let page = client()
        .get(web.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The original sample rows: 1 TODO (plus ours), 5 PROGRESS, 2 DONE.
    assert!(
        page.contains(r#"TODO <span class="count">2</span>"#),
        "{page}"
    );
    assert!(page.contains(r#"PROGRESS <span class="count">5</span>"#));
    assert!(page.contains(r#"DONE <span class="count">2</span>"#));
    assert!(page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"));
    assert!(!page.contains("<script>alert(1)"));
    assert!(page.contains("a &#38; b"));
    assert!(page.contains("<label for=\"new-title\">Title</label>"));
}

#[tokio::test]
async fn forms_create_move_edit_and_delete_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let api = spawn_api(dir.path(), false).await;
    let web = spawn_web(&api.url("")).await;
    let post = |path: String, form: Vec<(&'static str, String)>| {
        let url = web.url(&path);
        async move { client().post(url).form(&form).send().await.unwrap() }
    };
    let created = post(
        "/todo".into(),
        vec![
            ("title", "Write docs".into()),
            ("content", "for the board".into()),
        ],
    )
    .await;
    assert_eq!(created.status(), 303);
    let id = api_find(&api, "Write docs").await.expect("created")["id"]
        .as_i64()
        .unwrap();

    let moved = post(
        format!("/todo/{id}/status"),
        vec![("status", "PROGRESS".into())],
    )
    .await;
    assert_eq!(moved.status(), 303);
    assert_eq!(api_column(&api, "PROGRESS").await[0]["id"], id);

    let edited = post(
        format!("/todo/{id}"),
        vec![
            ("title", "Write good docs".into()),
            ("content", "soon".into()),
        ],
    )
    .await;
    assert_eq!(edited.status(), 303);
    let item = api_find(&api, "Write good docs").await.expect("edited");
    assert_eq!(
        (item["content"].as_str(), item["status"].as_str()),
        (Some("soon"), Some("PROGRESS"))
    );

    let deleted = post(format!("/todo/{id}/delete"), vec![]).await;
    assert_eq!(deleted.status(), 303);
    assert!(api_find(&api, "Write good docs").await.is_none());
}

#[tokio::test]
async fn validation_errors_show_next_to_the_field_with_the_input_kept() {
    let dir = tempfile::tempdir().unwrap();
    let api = spawn_api(dir.path(), false).await;
    let web = spawn_web(&api.url("")).await;
    let answer = client()
        .post(web.url("/todo"))
        .form(&[("title", "  "), ("content", "my careful notes")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 422);
    let page = answer.text().await.unwrap();
    assert!(
        page.contains(r#"<p class="error" id="new-error">title must not be empty</p>"#),
        "{page}"
    );
    assert!(page.contains(">my careful notes</textarea>"));
    assert!(page.contains(r#"aria-invalid="true""#));

    let long = "x".repeat(189);
    let page = client()
        .post(web.url("/todo"))
        .form(&[("title", long.as_str()), ("content", "")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("188"), "the error names the limit: {page}");
    assert!(page.contains(&format!("value=\"{long}\"")));
    assert!(api_column(&api, "TODO").await.is_empty());
}

#[tokio::test]
async fn with_the_api_down_the_board_answers_at_once_with_a_notice() {
    let dir = tempfile::tempdir().unwrap();
    let mut api = spawn_api(dir.path(), true).await;
    let web = spawn_web(&api.url("")).await;
    assert_eq!(
        client()
            .get(web.url("/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    api.stop().await;

    for _ in 0..10 {
        let answer = client().get(web.url("/")).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        let page = answer.text().await.unwrap();
        assert!(
            page.contains("TODO API unavailable — showing nothing; retrying"),
            "{page}"
        );
        assert!(page.contains(r#"<meta http-equiv="refresh" content="5">"#));
    }
    let answer = client()
        .post(web.url("/todo"))
        .form(&[("title", "keep me"), ("content", "and me")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    let page = answer.text().await.unwrap();
    // The failed page loads opened the circuit: the write is refused without calling.
    assert!(
        page.contains(
            "TODO API is failing, so changes are refused for a few seconds — nothing was saved"
        ),
        "{page}"
    );
    assert!(page.contains(r#"value="keep me""#) && page.contains(">and me</textarea>"));
    assert_eq!(
        client()
            .get(web.url("/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
}

#[tokio::test]
async fn a_hanging_api_costs_at_most_the_timeout_and_then_the_circuit_opens() {
    // An API that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hang = Router::new().fallback(|| async {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    });
    tokio::spawn(async move { axum::serve(listener, hang).await });
    let web = spawn_web(&format!("http://{addr}")).await;
    // Up to two pages wait for the 1 s timeout (three calls each count against the circuit);
    // after that the circuit is open and the page needs no API call at all.
    for _ in 0..3 {
        let page = client()
            .get(web.url("/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("TODO API unavailable"));
    }
    let ready: serde_json::Value = client()
        .get(web.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let error = ready["checks"]["todo-api"]["error"].as_str().unwrap();
    assert!(
        error.contains("todo-api") && error.contains("circuit is open"),
        "{error}"
    );
}

#[tokio::test]
async fn every_api_call_carries_the_request_id() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    let fake = Router::new().route(
        "/todo",
        get(move |headers: HeaderMap| {
            let record = record.clone();
            async move {
                let id = headers
                    .get("x-request-id")
                    .map(|v| v.to_str().unwrap().to_string());
                record.lock().unwrap().push(id.unwrap_or_default());
                axum::Json(serde_json::json!([]))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, fake).await });
    let web = spawn_web(&format!("http://{addr}")).await;
    let answer = client()
        .get(web.url("/"))
        .header("x-request-id", "board-42")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["board-42"; 3],
        "three columns, one id"
    );
}

/// The API's count of `GET /todo` answers with `status`, from its metrics.
async fn list_answers(api: &crate::helpers::Service, status: &str) -> u64 {
    let metrics = client()
        .get(api.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("http_requests_total{")
                && line.contains("method=\"GET\"")
                && line.contains("route=\"/todo\"")
                && line.contains(&format!("status=\"{status}\""))
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[tokio::test]
async fn an_unchanged_column_is_asked_for_conditionally_and_a_change_shows_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let api = spawn_api(dir.path(), true).await;
    let web = spawn_web(&api.url("")).await;
    let page = || async {
        client()
            .get(web.url("/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let first = page().await;
    assert_eq!(list_answers(&api, "200").await, 3);
    assert_eq!(list_answers(&api, "304").await, 0);
    // Nothing changed: three 304s without a body, and the same board.
    assert_eq!(page().await, first);
    assert_eq!(list_answers(&api, "304").await, 3);
    assert_eq!(list_answers(&api, "200").await, 3);
    // A change made elsewhere (straight to the API) shows on the next page.
    let created = client()
        .post(api.url("/todo"))
        .json(&serde_json::json!({"title": "made elsewhere", "status": "DONE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let after = page().await;
    assert!(after.contains("made elsewhere"), "{after}");
    assert_eq!(list_answers(&api, "200").await, 4, "only DONE changed");
    assert_eq!(list_answers(&api, "304").await, 5);
}

#[tokio::test]
async fn assets_have_hashed_names_long_cache_headers_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let api = spawn_api(dir.path(), false).await;
    let web = spawn_web(&api.url("")).await;
    let page = client()
        .get(web.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let css = page
        .split("href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert!(
        css.starts_with("/assets/app.") && css.ends_with(".css"),
        "{css}"
    );
    let answer = client().get(web.url(css)).send().await.unwrap();
    assert_eq!(
        answer.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(answer.headers()["content-type"], "text/css; charset=utf-8");
    assert_eq!(
        client()
            .get(web.url("/assets/app.css"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let out = tempfile::tempdir().unwrap();
    let names = todo_web::assets::export(out.path()).unwrap();
    assert_eq!(names.len(), 3);
    let exported = std::fs::read(out.path().join(css.trim_start_matches("/assets/"))).unwrap();
    assert_eq!(exported, answer.bytes().await.unwrap());
}

#[tokio::test]
async fn with_the_api_down_the_board_shows_its_last_good_copy_marked_stale() {
    let dir = tempfile::tempdir().unwrap();
    let mut api = spawn_api(dir.path(), true).await;
    let web = spawn_web(&api.url("")).await;
    let created = client()
        .post(web.url("/todo"))
        .form(&[("title", "survives an outage"), ("content", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 303);
    let fresh = client()
        .get(web.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(fresh.contains("survives an outage") && !fresh.contains("data-stale"));
    api.stop().await;

    for _ in 0..8 {
        let answer = client().get(web.url("/")).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        let page = answer.text().await.unwrap();
        assert!(page.contains("survives an outage"), "{page}");
        assert!(
            page.contains("TODO API unavailable — showing the board as it was"),
            "{page}"
        );
        assert!(page.contains(r#"data-stale="true""#), "{page}");
    }
    let metrics = client()
        .get(web.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"flotilla_call_circuit_state{target="todo-api",state="open"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("flotilla_call_fallbacks_total{target=\"todo-api\"}"));
}
