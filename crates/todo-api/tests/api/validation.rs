//! Bad input gets a precise 4xx, and writes nothing.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, assert_error, spawn_app};

/// Sends `body` to every write route and checks the answer and that the table did not change.
async fn rejected_everywhere(
    app: &TestApp,
    id: i64,
    content_type: Option<&str>,
    body: &str,
    status: u16,
    needle: &str,
) {
    rejected_by_every_route(app, id, content_type, |_| body.to_string(), status, needle).await;
}

/// The fields of an item as a JSON object, with the `id` only for `PUT /todo` (the route that
/// needs it; PATCH refuses it as an unknown field).
fn item_body(
    title: serde_json::Value,
    content: serde_json::Value,
    status: serde_json::Value,
) -> impl Fn(Option<i64>) -> String {
    move |id| match id {
        Some(id) => {
            format!(r#"{{"title": {title}, "content": {content}, "status": {status}, "id": {id}}}"#)
        }
        None => format!(r#"{{"title": {title}, "content": {content}, "status": {status}}}"#),
    }
}

/// [`rejected_everywhere`] with a body per route: `body(Some(id))` for `PUT /todo`, `body(None)`
/// for the others.
async fn rejected_by_every_route(
    app: &TestApp,
    id: i64,
    content_type: Option<&str>,
    body: impl Fn(Option<i64>) -> String,
    status: u16,
    needle: &str,
) {
    let before = app.row_count().await;
    let snapshot = app.get(&format!("/todo/{id}")).await.text().await.unwrap();
    for (method, path) in [
        ("POST", "/todo".to_string()),
        ("PUT", "/todo".to_string()),
        ("PUT", format!("/todo/{id}")),
        ("PATCH", format!("/todo/{id}")),
    ] {
        let with_id = (method == "PUT" && path == "/todo").then_some(id);
        let response = app.raw(method, &path, content_type, body(with_id)).await;
        assert_error(response, status, needle).await;
    }
    assert_eq!(
        app.row_count().await,
        before,
        "a rejected request wrote a row"
    );
    assert_eq!(
        app.get(&format!("/todo/{id}")).await.text().await.unwrap(),
        snapshot,
        "a rejected request changed the item"
    );
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    let id = app.create("x", "y").await["id"].as_i64().unwrap();
    for body in [
        "{",
        "",
        "not json",
        "{\"title\": \"a\",}",
        "{\"title\": \"a\"",
        "\"just a string",
    ] {
        rejected_everywhere(
            &app,
            id,
            Some("application/json"),
            body,
            400,
            "malformed JSON",
        )
        .await;
    }
}

#[tokio::test]
async fn wrong_types_name_the_field() {
    let app = spawn_app().await;
    let id = app.create("x", "y").await["id"].as_i64().unwrap();
    rejected_everywhere(
        &app,
        id,
        Some("application/json"),
        r#"{"title": 5, "status": "TODO", "id": 1}"#,
        400,
        "title",
    )
    .await;
    rejected_everywhere(
        &app,
        id,
        Some("application/json"),
        r#"{"title": "t", "content": ["a"], "status": "TODO", "id": 1}"#,
        400,
        "content",
    )
    .await;
    rejected_everywhere(
        &app,
        id,
        Some("application/json"),
        "[]",
        400,
        "invalid body",
    )
    .await;
}

#[tokio::test]
async fn titles_must_be_present_non_empty_and_at_most_188_characters() {
    let app = spawn_app().await;
    let before = app.row_count().await;
    assert_error(
        app.post_json("/todo", &json!({"content": "no title"}))
            .await,
        400,
        "title is required",
    )
    .await;
    assert_error(
        app.post_json("/todo", &json!({"title": ""})).await,
        400,
        "title must not be empty",
    )
    .await;
    assert_error(
        app.post_json("/todo", &json!({"title": "   "})).await,
        400,
        "title must not be empty",
    )
    .await;
    assert_error(
        app.post_json("/todo", &json!({"title": null})).await,
        400,
        "title must not be null",
    )
    .await;
    let long = "長".repeat(189);
    assert_error(
        app.post_json("/todo", &json!({"title": long})).await,
        400,
        "title must be at most 188 characters, got 189",
    )
    .await;
    assert_eq!(app.row_count().await, before);
    // Exactly 188 characters (564 bytes here) is fine.
    let max = "長".repeat(188);
    assert_eq!(app.create(&max, "").await["title"], max.as_str());

    let id = app.create("t", "").await["id"].as_i64().unwrap();
    assert_error(
        app.patch_json(&format!("/todo/{id}"), &json!({"title": ""}))
            .await,
        400,
        "title must not be empty",
    )
    .await;
    assert_error(
        app.put_json("/todo", &json!({"id": id, "status": "DONE"}))
            .await,
        400,
        "title is required",
    )
    .await;
}

#[tokio::test]
async fn unknown_status_is_400() {
    let app = spawn_app().await;
    let id = app.create("t", "").await["id"].as_i64().unwrap();
    rejected_everywhere(
        &app,
        id,
        Some("application/json"),
        r#"{"id": 1, "title": "t", "status": "LATER"}"#,
        400,
        "status",
    )
    .await;
    assert_error(
        app.put_json("/todo", &json!({"id": id, "title": "t"}))
            .await,
        400,
        "status is required",
    )
    .await;
}

#[tokio::test]
async fn patch_rejects_unknown_fields_and_empty_bodies() {
    let app = spawn_app().await;
    let id = app.create("t", "").await["id"].as_i64().unwrap();
    assert_error(
        app.patch_json(&format!("/todo/{id}"), &json!({"titel": "typo"}))
            .await,
        400,
        "titel",
    )
    .await;
    assert_error(
        app.patch_json(&format!("/todo/{id}"), &json!({})).await,
        400,
        "at least one of title, content, status",
    )
    .await;
}

#[tokio::test]
async fn ids_must_be_positive_integers() {
    let app = spawn_app().await;
    for id in ["abc", "0", "-3", "1.5", "99999999999999999999"] {
        assert_error(
            app.get(&format!("/todo/{id}")).await,
            400,
            "id must be a positive integer",
        )
        .await;
        assert_error(
            app.delete(&format!("/todo/{id}")).await,
            400,
            "id must be a positive integer",
        )
        .await;
    }
    assert_error(
        app.put_json("/todo", &json!({"id": 0, "title": "t", "status": "TODO"}))
            .await,
        400,
        "id must be a positive integer",
    )
    .await;
    assert_error(
        app.put_json("/todo", &json!({"title": "t", "status": "TODO"}))
            .await,
        400,
        "id is required",
    )
    .await;
}

#[tokio::test]
async fn a_wrong_content_type_is_415() {
    let app = spawn_app().await;
    let id = app.create("t", "").await["id"].as_i64().unwrap();
    let body = r#"{"id": 1, "title": "t", "status": "TODO"}"#;
    rejected_everywhere(
        &app,
        id,
        None,
        body,
        415,
        "Content-Type must be application/json",
    )
    .await;
    rejected_everywhere(&app, id, Some("text/plain"), body, 415, "Content-Type").await;
    rejected_everywhere(
        &app,
        id,
        Some("application/x-www-form-urlencoded"),
        "title=t",
        415,
        "Content-Type",
    )
    .await;
}

#[tokio::test]
async fn a_body_over_256_kib_is_413() {
    let app = spawn_app().await;
    let id = app.create("t", "").await["id"].as_i64().unwrap();
    let body = json!({"id": 1, "title": "t", "status": "TODO", "content": "x".repeat(256 * 1024)})
        .to_string();
    rejected_everywhere(
        &app,
        id,
        Some("application/json"),
        &body,
        413,
        "larger than 262144 bytes",
    )
    .await;
}

#[tokio::test]
async fn content_is_at_most_16383_characters_and_never_nul() {
    let app = spawn_app().await;
    let id = app.create("t", "").await["id"].as_i64().unwrap();
    // The longest content, in 4-byte characters each written as a JSON escape pair (12 bytes):
    // the body limit leaves room for it.
    let content = "🚢".repeat(16_383);
    let body = format!(
        "{{\"title\": \"big\", \"content\": {}}}",
        serde_json::to_string(&content)
            .unwrap()
            .replace('🚢', "\\ud83d\\udea2")
    );
    assert!(body.len() > 190_000, "{}", body.len());
    let response = app
        .raw("POST", "/todo", Some("application/json"), body)
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: serde_json::Value = response.json().await.unwrap();
    assert_eq!(created["content"], content.as_str());
    rejected_by_every_route(
        &app,
        id,
        Some("application/json"),
        item_body(json!("t"), json!("x".repeat(16_384)), json!("TODO")),
        400,
        "content must be at most 16383 characters, got 16384",
    )
    .await;
    rejected_by_every_route(
        &app,
        id,
        Some("application/json"),
        item_body(json!("t"), json!("a\u{0}b"), json!("TODO")),
        400,
        "content must not contain the NUL character",
    )
    .await;
    rejected_by_every_route(
        &app,
        id,
        Some("application/json"),
        item_body(json!("\u{0}"), json!(""), json!("TODO")),
        400,
        "title must not contain the NUL character",
    )
    .await;
}

#[tokio::test]
async fn null_fields_and_non_object_bodies_are_400_by_name() {
    let app = spawn_app().await;
    let id = app.create("t", "").await["id"].as_i64().unwrap();
    for field in ["title", "content", "status"] {
        let value = |name: &str, value| if name == field { json!(null) } else { value };
        let body = item_body(
            value("title", json!("t")),
            value("content", json!("")),
            value("status", json!("TODO")),
        );
        rejected_by_every_route(
            &app,
            id,
            Some("application/json"),
            body,
            400,
            &format!("{field} must not be null"),
        )
        .await;
    }
    for body in ["[]", r#"["t", "c", "DONE"]"#, "\"t\"", "1", "null"] {
        rejected_everywhere(
            &app,
            id,
            Some("application/json"),
            body,
            400,
            "invalid body: expected a JSON object",
        )
        .await;
    }
}

#[tokio::test]
async fn unsupported_methods_are_405_with_allow() {
    let app = spawn_app().await;
    let response = app.raw("DELETE", "/todo", None, "").await;
    let allow = response.headers()["allow"].to_str().unwrap().to_string();
    for method in ["GET", "POST", "PUT"] {
        assert!(allow.contains(method), "{allow}");
    }
    // The message names the allowed methods too (it once said "allowed: " with none: the
    // header was added after the layer that writes the body had run).
    assert_error(
        response,
        405,
        &format!("DELETE is not allowed on /todo; allowed: {allow}"),
    )
    .await;
    let response = app
        .raw("POST", "/todo/1", Some("application/json"), "{}")
        .await;
    let allow = response.headers()["allow"].to_str().unwrap().to_string();
    for method in ["GET", "PUT", "PATCH", "DELETE"] {
        assert!(allow.contains(method), "{allow}");
    }
    assert_error(response, 405, "POST is not allowed").await;
    assert_error(app.get("/todos").await, 404, "no resource at /todos").await;
}

/// Odd requests never produce a 5xx, a hang, or a dead server.
#[tokio::test]
async fn odd_input_never_breaks_the_server() {
    let app = spawn_app().await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let bodies = [
        deep.as_str(),
        "{\"title\": \"\\ud800\"}",
        "{\"title\": \"a\", \"title\": \"b\"}",
        "\u{0}\u{1}\u{2}",
        "{\"title\": 1e999}",
        "{\"id\": 1e3, \"title\": \"t\", \"status\": \"TODO\"}",
    ];
    for body in bodies {
        for (method, path) in [("POST", "/todo"), ("PUT", "/todo"), ("PATCH", "/todo/1")] {
            let response = app
                .raw(method, path, Some("application/json"), body.to_string())
                .await;
            assert!(
                !response.status().is_server_error(),
                "{method} {path} {body:.40}: {}",
                response.status()
            );
        }
    }
    for path in [
        "/todo/%00",
        "/todo/%2e%2e",
        "/todo/1/2",
        "/todo?limit=%00",
        "/%ff",
        "/todo?cursor=%E2%82",
    ] {
        let response = app.get(path).await;
        assert!(
            response.status().is_client_error(),
            "{path}: {}",
            response.status()
        );
    }
    assert_eq!(app.get("/hc").await.status(), StatusCode::OK);
}
