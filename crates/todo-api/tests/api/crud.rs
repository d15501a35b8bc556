//! Create, read, update, delete.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_error, spawn_app};

fn is_rfc3339_utc(text: &Value) -> bool {
    let text = text.as_str().unwrap_or_default();
    text.len() == 20
        && text.ends_with('Z')
        && time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok()
}

#[tokio::test]
async fn post_returns_201_with_the_item_and_its_location() {
    let app = spawn_app().await;
    let response = app
        .post_json(
            "/todo",
            &json!({"title": "Write tests", "content": "over real HTTP"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let item: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/todo/{}", item["id"]));
    assert_eq!(item["title"], "Write tests");
    assert_eq!(item["content"], "over real HTTP");
    assert_eq!(item["status"], "TODO", "new items start in TODO");
    assert!(is_rfc3339_utc(&item["created"]), "{item}");
    assert_eq!(item["created"], item["updated"]);
    let keys: Vec<&str> = item
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 6, "{keys:?}");

    let fetched: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(fetched, item);
}

#[tokio::test]
async fn content_is_optional_and_titles_are_trimmed() {
    let app = spawn_app().await;
    let item: Value = app
        .post_json("/todo", &json!({"title": "  spaced  "}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(item["title"], "spaced");
    assert_eq!(item["content"], "");
}

#[tokio::test]
async fn get_by_id_answers_404_for_an_unknown_item() {
    let app = spawn_app().await;
    assert_error(app.get("/todo/4242").await, 404, "id=4242 is not found").await;
}

#[tokio::test]
async fn put_in_the_original_form_replaces_every_field() {
    let app = spawn_app().await;
    let item = app.create("before", "old content").await;
    let id = item["id"].as_i64().unwrap();
    let response = app
        .put_json(
            "/todo",
            &json!({"id": id, "title": "after", "content": "new", "status": "DONE"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["title"], "after");
    assert_eq!(updated["content"], "new");
    assert_eq!(updated["status"], "DONE");
    assert_eq!(updated["created"], item["created"]);
    let fetched: Value = app.get(&format!("/todo/{id}")).await.json().await.unwrap();
    assert_eq!(fetched, updated);
}

#[tokio::test]
async fn put_by_path_replaces_and_a_missing_content_becomes_empty() {
    let app = spawn_app().await;
    let id = app.create("t", "c").await["id"].as_i64().unwrap();
    let response = app
        .put_json(
            &format!("/todo/{id}"),
            &json!({"title": "t2", "status": "PROGRESS"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(
        (updated["title"].as_str(), updated["content"].as_str()),
        (Some("t2"), Some(""))
    );
    assert_eq!(updated["status"], "PROGRESS");
}

#[tokio::test]
async fn put_of_an_unknown_id_is_404_with_the_original_message() {
    let app = spawn_app().await;
    let body = json!({"id": 99, "title": "t", "content": "c", "status": "TODO"});
    let message = assert_error(app.put_json("/todo", &body).await, 404, "").await;
    assert_eq!(message, "id=99 is not found");
    assert_error(app.put_json("/todo/98", &body).await, 400, "does not match").await;
    let body = json!({"title": "t", "status": "TODO"});
    assert_error(
        app.put_json("/todo/98", &body).await,
        404,
        "id=98 is not found",
    )
    .await;
}

#[tokio::test]
async fn patch_changes_only_the_given_fields() {
    let app = spawn_app().await;
    let item = app.create("keep me", "and me").await;
    let id = item["id"].as_i64().unwrap();
    let moved = app.set_status(id, "PROGRESS").await;
    assert_eq!(moved["status"], "PROGRESS");
    assert_eq!(moved["title"], "keep me");
    assert_eq!(moved["content"], "and me");

    let response = app
        .patch_json(&format!("/todo/{id}"), &json!({"content": "changed"}))
        .await;
    let changed: Value = response.json().await.unwrap();
    assert_eq!(
        (changed["status"].as_str(), changed["content"].as_str()),
        (Some("PROGRESS"), Some("changed"))
    );

    assert_error(
        app.patch_json("/todo/777", &json!({"status": "DONE"}))
            .await,
        404,
        "id=777",
    )
    .await;
}

#[tokio::test]
async fn delete_removes_the_item_once() {
    let app = spawn_app().await;
    let id = app.create("short-lived", "").await["id"].as_i64().unwrap();
    assert_eq!(
        app.delete(&format!("/todo/{id}")).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_error(app.get(&format!("/todo/{id}")).await, 404, "is not found").await;
    assert_error(
        app.delete(&format!("/todo/{id}")).await,
        404,
        &format!("id={id}"),
    )
    .await;
    // Ids are never handed out again.
    let next = app.create("next", "").await["id"].as_i64().unwrap();
    assert!(next > id);
}

#[tokio::test]
async fn titles_and_contents_keep_every_character() {
    let app = spawn_app().await;
    let title = "<script>alert(\"x\")</script> & 日本語 🚢";
    let content = "line 1\nline 2\t\u{1}\\ \"quoted\"";
    let item = app.create(title, content).await;
    let fetched: Value = app
        .get(&format!("/todo/{}", item["id"]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["title"], title);
    assert_eq!(fetched["content"], content);
    let listed: Vec<Value> = app.get("/todo").await.json().await.unwrap();
    assert_eq!(listed[0], fetched);
}

#[tokio::test]
async fn post_may_choose_the_starting_column() {
    let app = spawn_app().await;
    let response = app
        .post_json(
            "/todo",
            &json!({"title": "straight to done", "status": "DONE"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let item: Value = response.json().await.unwrap();
    assert_eq!(item["status"], "DONE");
}
