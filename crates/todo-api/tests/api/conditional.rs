//! Reads carry an `ETag`; `If-None-Match` with it gets 304 and no body until the answer changes.

use reqwest::StatusCode;

use crate::helpers::spawn_app;

async fn get_if_none_match(
    app: &crate::helpers::TestApp,
    path: &str,
    tag: &str,
) -> reqwest::Response {
    reqwest::Client::new()
        .get(app.url(path))
        .header("if-none-match", tag)
        .send()
        .await
        .unwrap()
}

fn etag(response: &reqwest::Response) -> String {
    let tag = response.headers()["etag"].to_str().unwrap().to_string();
    assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    tag
}

#[tokio::test]
async fn a_list_is_304_until_it_changes() {
    let app = spawn_app().await;
    let id = app.create("first", "").await["id"].as_i64().unwrap();
    let first = app.get("/todo").await;
    assert_eq!(first.status(), StatusCode::OK);
    let tag = etag(&first);

    let unchanged = get_if_none_match(&app, "/todo", &tag).await;
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(etag(&unchanged), tag);
    assert!(unchanged.bytes().await.unwrap().is_empty());
    // Weak comparison, lists and `*`, as RFC 9110 says.
    for header in [format!("W/{tag}"), format!("\"other\", {tag}"), "*".into()] {
        let response = get_if_none_match(&app, "/todo", &header).await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{header}");
    }
    // Another column has another answer.
    let done = get_if_none_match(&app, "/todo?status=DONE", &tag).await;
    assert_eq!(done.status(), StatusCode::OK);

    app.create("second", "").await;
    let changed = get_if_none_match(&app, "/todo", &tag).await;
    assert_eq!(changed.status(), StatusCode::OK);
    let new_tag = etag(&changed);
    assert_ne!(new_tag, tag);
    let items: serde_json::Value = changed.json().await.unwrap();
    assert_eq!(items.as_array().unwrap().len(), 2);

    // The item itself, likewise.
    let item = app.get(&format!("/todo/{id}")).await;
    let item_tag = etag(&item);
    let unchanged = get_if_none_match(&app, &format!("/todo/{id}"), &item_tag).await;
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    app.set_status(id, "DONE").await;
    let changed = get_if_none_match(&app, &format!("/todo/{id}"), &item_tag).await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(
        changed.json::<serde_json::Value>().await.unwrap()["status"],
        "DONE"
    );
}
