//! `GET /openapi.json` documents every route, and every documented operation exists.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::spawn_app;

/// Every route the API serves. A new route must be added here and to the document.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/todo"),
    ("post", "/todo"),
    ("put", "/todo"),
    ("get", "/todo/{id}"),
    ("put", "/todo/{id}"),
    ("patch", "/todo/{id}"),
    ("delete", "/todo/{id}"),
    ("get", "/openapi.json"),
    // The seeds' API answered /hc on any method; the document says which.
    ("get", "/hc"),
    ("post", "/hc"),
    ("put", "/hc"),
    ("patch", "/hc"),
    ("delete", "/hc"),
    ("get", "/ready"),
    ("get", "/metrics"),
];

#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_exists() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with('3'),
        "OpenAPI 3: {}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();

    for (method, path) in ROUTES {
        let operation = &paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is not documented"))[*method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert!(
            operation["responses"]
                .as_object()
                .is_some_and(|r| !r.is_empty()),
            "{method} {path} has no responses"
        );
    }

    let mut documented = 0;
    for (path, item) in paths {
        for (method, _) in item
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
        {
            documented += 1;
            assert!(
                ROUTES.contains(&(method.as_str(), path.as_str())),
                "{method} {path} is documented but not listed"
            );
            // Calling it must reach a handler: not the router's 404 or 405.
            let concrete = path.replace("{id}", "1");
            let response = app
                .raw(
                    &method.to_uppercase(),
                    &concrete,
                    Some("application/json"),
                    "{}",
                )
                .await;
            let status = response.status();
            let body = response.text().await.unwrap();
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {body}"
            );
            assert!(
                !body.contains("no resource at"),
                "{method} {path} is not routed: {body}"
            );
        }
    }
    assert_eq!(documented, ROUTES.len());

    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for schema in [
        "Todo",
        "CreateTodo",
        "ReplaceTodo",
        "ReplaceTodoAt",
        "PatchTodo",
        "ErrorBody",
        "Status",
    ] {
        assert!(schemas.contains_key(schema), "schema {schema} missing");
    }
}
