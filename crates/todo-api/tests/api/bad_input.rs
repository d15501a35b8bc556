//! Hostile input beyond what the document describes: huge, deeply nested or non-UTF-8 bodies,
//! ids past 32 bits, cursors from another column. Each gets a 4xx naming the problem, and no
//! 5xx ever.

use serde_json::json;

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn a_10_mb_body_is_413() {
    let app = spawn_app().await;
    let body = format!(r#"{{"title": "t", "content": "{}"}}"#, "x".repeat(10 << 20));
    let response = app
        .raw("POST", "/todo", Some("application/json"), body)
        .await;
    assert_error(response, 413, "larger than").await;
}

#[tokio::test]
async fn deeply_nested_json_is_400() {
    let app = spawn_app().await;
    let nested = format!(
        r#"{{"title": "t", "x": {}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let response = app
        .raw("POST", "/todo", Some("application/json"), nested)
        .await;
    assert_error(response, 400, "nested deeper than 128 levels").await;
    let before = app.row_count().await;
    let shallow = format!(
        r#"{{"title": "t", "x": {}{}}}"#,
        "[".repeat(127),
        "]".repeat(127)
    );
    let response = app
        .raw("POST", "/todo", Some("application/json"), shallow)
        .await;
    assert_eq!(
        response.status(),
        201,
        "fields the API ignores may nest 128 deep"
    );
    assert_eq!(app.row_count().await, before + 1);
}

#[tokio::test]
async fn invalid_utf8_is_400() {
    let app = spawn_app().await;
    let body = b"{\"title\": \"\xff\xfe\"}".to_vec();
    let response = app
        .raw("POST", "/todo", Some("application/json"), body)
        .await;
    assert_error(response, 400, "malformed JSON").await;
}

#[tokio::test]
async fn ids_past_32_bits_are_400() {
    let app = spawn_app().await;
    for id in [
        "2147483648",
        "4294967296",
        "9223372036854775808",
        "+1",
        "1e3",
        "0x10",
    ] {
        assert_error(
            app.get(&format!("/todo/{id}")).await,
            400,
            "id must be a positive integer up to 2147483647",
        )
        .await;
    }
    assert_eq!(app.get("/todo/2147483647").await.status(), 404);
    // JSON Schema's integers include 7.0; Python writes a float id that way.
    let id = app.create("t", "").await["id"].as_i64().unwrap();
    assert_eq!(app.get(&format!("/todo/{id}.0")).await.status(), 200);
    let body = json!({"id": 2_147_483_648_i64, "title": "t", "status": "DONE"});
    assert_error(
        app.put_json("/todo", &body).await,
        400,
        "id must be a positive integer up to 2147483647",
    )
    .await;
}

#[tokio::test]
async fn a_cursor_names_its_column() {
    let app = spawn_app().await;
    for i in 0..3 {
        let id = app.create(&format!("item {i}"), "").await["id"]
            .as_i64()
            .unwrap();
        app.set_status(id, "DONE").await;
    }
    let first = app.get("/todo?status=DONE&limit=2").await;
    let link = crate::helpers::next_link(&first).expect("a next page");
    let cursor = link.split("cursor=").nth(1).unwrap().to_string();
    assert!(cursor.starts_with("DONE."), "{cursor}");
    assert_error(
        app.get(&format!("/todo?status=TODO&cursor={cursor}")).await,
        400,
        "cursor is from the DONE column, but status is TODO",
    )
    .await;
    // Without a status, the cursor's column is listed.
    let rest: Vec<serde_json::Value> = app
        .get(&format!("/todo?limit=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["status"], "DONE");
    // Empty values are not defaults: the document says what each parameter holds.
    for query in ["status=", "limit=", "cursor="] {
        let response = app.get(&format!("/todo?{query}")).await;
        assert_eq!(response.status(), 400, "{query}");
    }
}
