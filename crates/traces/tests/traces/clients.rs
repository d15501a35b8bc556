//! Real Zipkin clients, as `scripts/setup.sh` installs them into `target/clients`: py_zipkin
//! records seed 003's story-service (a SERVER span, a CLIENT call to catalog-service, a failed
//! local span) and zipkin-js records catalog-service's side of that call, joining the trace by
//! the ids the story service would send as B3 headers. The collector shows one trace, both
//! services, and the call between them.

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;

use crate::helpers::spawn_collector;

fn clients_dir() -> PathBuf {
    let dir = std::env::var_os("FLOTILLA_CLIENTS_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/clients"),
        PathBuf::from,
    );
    assert!(
        dir.join("py/bin/python").exists()
            && dir.join("js/node_modules/zipkin-transport-http").exists(),
        "the Zipkin clients are not installed in {}: run scripts/setup.sh",
        dir.display()
    );
    dir
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

async fn run(command: &mut tokio::process::Command) -> Output {
    let output = tokio::time::timeout(std::time::Duration::from_secs(30), command.output())
        .await
        .expect("the client finished within 30 s")
        .expect("the client runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test]
async fn py_zipkin_and_zipkin_js_report_one_trace_across_two_services() {
    let clients = clients_dir();
    let collector = spawn_collector(&[]).await;
    let port = collector.addr.port().to_string();
    let story = run(tokio::process::Command::new(clients.join("py/bin/python"))
        .arg(script("story_service.py"))
        .arg(&port))
    .await;
    let ids: Value = serde_json::from_slice(&story.stdout).unwrap();
    let trace_id = ids["traceId"].as_str().unwrap();
    let client_span = ids["spanId"].as_str().unwrap();
    let catalog = run(tokio::process::Command::new("node")
        .env("NODE_PATH", clients.join("js/node_modules"))
        .arg(script("catalog_service.js"))
        .arg(format!("http://{}", collector.addr))
        .arg(trace_id)
        .arg(client_span))
    .await;
    assert_eq!(String::from_utf8_lossy(&catalog.stdout).trim(), "sent");

    let trace = collector
        .get_json(&format!("/api/v2/trace/{trace_id}"))
        .await;
    let spans = trace.as_array().unwrap();
    let summary: Vec<(String, String, String)> = spans
        .iter()
        .map(|s| {
            (
                s["localEndpoint"]["serviceName"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                s["kind"].as_str().unwrap_or("-").to_string(),
                s["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for expected in [
        ("story-service", "SERVER", "get /story"),
        ("story-service", "CLIENT", "get /catalog"),
        ("story-service", "-", "select stories"),
        ("catalog-service", "SERVER", "get /catalog"),
    ] {
        let expected = (
            expected.0.to_string(),
            expected.1.to_string(),
            expected.2.to_string(),
        );
        assert!(summary.contains(&expected), "{expected:?} in {summary:?}");
    }
    let server = spans
        .iter()
        .find(|s| s["localEndpoint"]["serviceName"] == "catalog-service")
        .unwrap();
    assert_eq!(server["parentId"], client_span);

    assert_eq!(
        collector.get_json("/api/v2/services").await,
        serde_json::json!(["catalog-service", "story-service"])
    );
    assert_eq!(
        collector
            .get_json("/api/v2/remoteServices?serviceName=story-service")
            .await,
        serde_json::json!(["catalog-service"])
    );
    let failed = collector
        .get_json("/api/v2/traces?serviceName=story-service&annotationQuery=error")
        .await;
    assert_eq!(failed.as_array().unwrap().len(), 1);
    let end = crate::helpers::now_us() / 1000 + 1000;
    assert_eq!(
        collector
            .get_json(&format!("/api/v2/dependencies?endTs={end}"))
            .await,
        serde_json::json!([{"parent": "story-service", "child": "catalog-service", "callCount": 1, "errorCount": 0}])
    );
}
