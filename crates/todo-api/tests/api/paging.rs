//! `GET /todo`: filtering by status, ordering, pages.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{assert_error, next_link, spawn_app};

#[tokio::test]
async fn lists_one_column_newest_change_first_defaulting_to_todo() {
    let app = spawn_app().await;
    let a = app.create("a", "").await["id"].as_i64().unwrap();
    let b = app.create("b", "").await["id"].as_i64().unwrap();
    let c = app.create("c", "").await["id"].as_i64().unwrap();
    app.set_status(b, "DONE").await;

    let todo: Vec<Value> = app.get("/todo").await.json().await.unwrap();
    let ids: Vec<i64> = todo.iter().map(|i| i["id"].as_i64().unwrap()).collect();
    // Same-second updates fall back to id, newest first.
    assert_eq!(ids, vec![c, a]);
    let explicit: Vec<Value> = app.get("/todo?status=TODO").await.json().await.unwrap();
    assert_eq!(explicit, todo);
    let done: Vec<Value> = app.get("/todo?status=DONE").await.json().await.unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["id"], b);
    let empty = app.get("/todo?status=PROGRESS").await;
    assert_eq!(empty.status(), StatusCode::OK);
    assert!(empty.headers().get("link").is_none());
    assert_eq!(empty.text().await.unwrap(), "[]");
}

#[tokio::test]
async fn an_update_moves_an_item_to_the_top() {
    let app = spawn_app().await;
    let first = app.create("first", "").await["id"].as_i64().unwrap();
    app.create("second", "").await;
    // Timestamps have whole seconds; wait for the next one so the update is strictly newer.
    let created: Vec<Value> = app.get("/todo").await.json().await.unwrap();
    let before = created[0]["updated"].as_str().unwrap().to_string();
    loop {
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        if now[..19] != before[..19] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    app.patch_json(
        &format!("/todo/{first}"),
        &serde_json::json!({"content": "touched"}),
    )
    .await;
    let list: Vec<Value> = app.get("/todo").await.json().await.unwrap();
    assert_eq!(list[0]["id"], first);
}

#[tokio::test]
async fn pages_cover_every_item_exactly_once() {
    let app = spawn_app().await;
    let mut created = HashSet::new();
    for i in 0..23 {
        created.insert(
            app.create(&format!("item {i}"), "").await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let first = app.get("/todo?limit=10").await;
    let link = next_link(&first).expect("a next link after a full page");
    assert!(link.starts_with("?status=TODO&limit=10&cursor="), "{link}");

    let items = app.list_all("TODO", 10).await;
    let ids: Vec<i64> = items.iter().map(|i| i["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 23);
    assert_eq!(ids.iter().copied().collect::<HashSet<_>>(), created);
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "same-second items page by id, newest first");

    // A page that exactly ends the column has no next link.
    let all = app.get("/todo?limit=23").await;
    assert!(all.headers().get("link").is_none());
}

#[tokio::test]
async fn the_default_page_is_100_and_the_maximum_1000() {
    let app = spawn_app().await;
    for i in 0..101 {
        app.create(&format!("n{i}"), "").await;
    }
    let page = app.get("/todo").await;
    assert!(next_link(&page).is_some());
    let items: Vec<Value> = page.json().await.unwrap();
    assert_eq!(items.len(), 100);
    let big: Vec<Value> = app.get("/todo?limit=1000").await.json().await.unwrap();
    assert_eq!(big.len(), 101);
}

#[tokio::test]
async fn bad_status_limit_or_cursor_is_400() {
    let app = spawn_app().await;
    assert_error(
        app.get("/todo?status=LATER").await,
        400,
        "status must be one of TODO, PROGRESS, DONE",
    )
    .await;
    assert_error(app.get("/todo?status=todo").await, 400, "status").await;
    for limit in ["0", "1001", "-1", "ten", "1.5"] {
        assert_error(
            app.get(&format!("/todo?limit={limit}")).await,
            400,
            "limit must be",
        )
        .await;
    }
    for cursor in [
        "x",
        "%FF",
        "bm9wZQ",
        "MS4w",
        "DONE.1.0",
        "TODO.01.2",
        "LATER.1.2",
    ] {
        assert_error(
            app.get(&format!("/todo?cursor={cursor}")).await,
            400,
            "cursor is not valid",
        )
        .await;
    }
    assert_error(
        app.get("/todo?status=TODO&status=DONE").await,
        400,
        "query string",
    )
    .await;
}
