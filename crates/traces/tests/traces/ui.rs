//! The pages, as a browser without JavaScript gets them: search with its filters, one trace as a
//! waterfall (spans nested under their parents, errors marked), the dependency graph; bad input
//! answered on the page.

use crate::api::{TRACE_A, batch};
use crate::helpers::{now_us, spawn_collector};

#[tokio::test]
async fn the_pages_search_show_a_waterfall_and_the_dependencies_without_javascript() {
    let collector = spawn_collector(&[]).await;
    assert_eq!(
        collector.post_spans(batch(now_us()).to_string()).await.0,
        202
    );

    // Search: the last hour holds trace A only; its root span leads, with an error badge.
    let (status, page) = collector.get("/").await;
    assert_eq!(status, 200);
    assert!(!page.contains("<script"), "the pages need no JavaScript");
    assert!(
        page.contains(&format!("href=\"/traces/{TRACE_A}\"")),
        "{page}"
    );
    assert!(page.contains("frontend: get /"));
    assert!(page.contains("backend ×2, frontend ×2"));
    assert!(page.contains("50.000 ms"));
    assert!(page.contains("class=\"error-badge\""));
    assert!(!page.contains("get /health"));
    // A day back finds the health check too; a filter narrows it again.
    let (_, page) = collector.get("/?lookback=86400000").await;
    assert!(page.contains("frontend: get /health"));
    let (_, page) = collector
        .get("/?lookback=86400000&serviceName=frontend&minDuration=10ms")
        .await;
    assert!(page.contains("frontend: get /<"));
    assert!(!page.contains("get /health"));
    let (_, page) = collector.get("/?lookback=86400000&spanName=nothing").await;
    assert!(page.contains("No trace matches."));
    let (status, page) = collector.get("/?minDuration=soon").await;
    assert_eq!(status, 400);
    assert!(page.contains("minimum duration &#34;soon&#34;"), "{page}");

    // The waterfall: each span under its parent, in order, the failed one marked.
    let (status, page) = collector.get(&format!("/traces/{TRACE_A}")).await;
    assert_eq!(status, 200);
    let order: Vec<usize> = [
        "span-00000000000000a1",
        "span-00000000000000a2",
        "span-00000000000000a3",
        "span-00000000000000a4",
    ]
    .iter()
    .map(|id| page.find(id).unwrap_or_else(|| panic!("{id} in {page}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    let indents: Vec<&str> = page
        .match_indices("padding-left: ")
        .map(|(at, _)| &page[at + 14..at + 18])
        .collect();
    assert_eq!(indents, ["14px", "28px", "42px", "56px"]);
    assert_eq!(page.matches("class=\"row error\"").count(), 1);
    assert!(page.contains("CLIENT → backend"));
    assert!(page.contains("retry"), "annotations are shown");
    let (status, _) = collector.get("/traces/0123456789abcdef").await;
    assert_eq!(status, 404);
    let (status, page) = collector.get("/traces/%3Cscript%3E").await;
    assert_eq!(status, 404);
    assert!(!page.contains("<script>"), "{page}");

    // The dependency graph: both links, drawn and listed, the failing one in red.
    let (status, page) = collector.get("/dependencies").await;
    assert_eq!(status, 200);
    assert!(page.contains("<svg"));
    assert_eq!(page.matches("<circle").count(), 3);
    assert!(page.contains("<td>frontend</td><td>backend</td>"));
    assert!(page.contains("<td>backend</td><td>sqlite</td>"));
    assert!(page.contains("arrow-error"));
}
