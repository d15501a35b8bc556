//! Primary/replica behaviour on real MariaDB servers: where reads and writes go, what happens
//! when a node stops or lags, adopting an original tododb, the seeds' Go DSNs.

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::MySqlPool;

use crate::cluster::Cluster;
use crate::helpers::{Options, TestApp, assert_error, spawn_with};

/// An API on `database` of `cluster`: writes to the primary, reads from the replicas.
async fn app_on(cluster: &Cluster, database: &str, extra: &[(&str, &str)]) -> TestApp {
    let replicas: Vec<String> = cluster
        .replica_ports
        .iter()
        .map(|p| cluster.url(*p, database))
        .collect();
    let mut options = Options::default()
        .env(
            "TODO_PRIMARY_URL",
            cluster.url(cluster.primary_port, database),
        )
        .env("TODO_REPLICA_URLS", replicas.join(","));
    for (key, value) in extra {
        options = options.env(key, *value);
    }
    spawn_with(options).await
}

/// Polls `check` until it returns `Some`, at most `limit`.
async fn eventually<T, F: Future<Output = Option<T>>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The title of item `id` read directly on a server, if it has it.
async fn title_on(pool: &MySqlPool, database: &str, id: i64) -> Option<String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT title FROM `{database}`.todo WHERE id = ?"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
    .ok()
    .flatten()
}

async fn wait_replicated(cluster: &Cluster, database: &str, id: i64) {
    let replica = cluster.admin(cluster.replica_ports[0]).await;
    eventually(
        Duration::from_secs(15),
        "the replica to apply the write",
        || async { title_on(&replica, database, id).await },
    )
    .await;
}

async fn replica_reads(app: &TestApp) -> f64 {
    let metrics = app.get("/metrics").await.text().await.unwrap();
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("todo_db_queries_total")
                && l.contains(r#"node="replica-1""#)
                && l.contains(r#"kind="read""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn node_status(app: &TestApp, node: &str) -> String {
    let body: Value = app.get("/ready").await.json().await.unwrap();
    body["checks"][node]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_write_through_the_api_reaches_the_replica() {
    let cluster = Cluster::shared().await;
    let database = cluster.create_database().await;
    let app = app_on(cluster, &database, &[]).await;
    let response = app
        .post_json("/todo", &json!({"title": "replicated"}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let position = response.headers()["x-todo-position"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(position.starts_with("0-1-"), "a MariaDB GTID: {position}");
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    wait_replicated(cluster, &database, id).await;
}

#[tokio::test]
async fn reads_are_served_by_the_replica() {
    let cluster = Cluster::dedicated(1).await;
    let database = cluster.create_database().await;
    let app = app_on(&cluster, &database, &[]).await;
    let id = app.create("through the API", "").await["id"]
        .as_i64()
        .unwrap();
    wait_replicated(&cluster, &database, id).await;

    // Stop replication, then write on the primary behind the API's back.
    let replica = cluster.admin(cluster.replica_ports[0]).await;
    sqlx::query("STOP SLAVE").execute(&replica).await.unwrap();
    let primary = cluster.admin(cluster.primary_port).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO `{database}`.todo (title, content, status, created, updated) VALUES ('behind the API', '', 'TODO', UTC_TIMESTAMP(), UTC_TIMESTAMP())"
    )))
    .execute(&primary)
    .await
    .unwrap();

    let before = replica_reads(&app).await;
    for _ in 0..5 {
        let list: Vec<Value> = app.get("/todo").await.json().await.unwrap();
        assert!(
            list.iter().all(|i| i["title"] != "behind the API"),
            "a read reached the primary: {list:?}"
        );
    }
    assert!(
        replica_reads(&app).await >= before + 5.0,
        "the replica served the reads"
    );

    sqlx::query("START SLAVE").execute(&replica).await.unwrap();
    eventually(
        Duration::from_secs(15),
        "the row to reach the replica",
        || async {
            let list: Vec<Value> = app.get("/todo").await.json().await.unwrap();
            list.iter()
                .any(|i| i["title"] == "behind the API")
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_lagging_replica_does_not_hide_a_write() {
    let cluster = Cluster::dedicated(1).await;
    let database = cluster.create_database().await;
    let writer = app_on(&cluster, &database, &[]).await;
    // A second API process, as behind a gateway: it has not seen the write itself.
    let other = app_on(&cluster, &database, &[]).await;
    let first = writer.create("first", "").await["id"].as_i64().unwrap();
    wait_replicated(&cluster, &database, first).await;

    let replica = cluster.admin(cluster.replica_ports[0]).await;
    sqlx::query("STOP SLAVE SQL_THREAD")
        .execute(&replica)
        .await
        .unwrap();
    let response = writer.post_json("/todo", &json!({"title": "fresh"})).await;
    let position = response.headers()["x-todo-position"]
        .to_str()
        .unwrap()
        .to_string();
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();

    // The API that wrote reads its own write at once (from the primary).
    assert_eq!(
        writer.get(&format!("/todo/{id}")).await.status(),
        StatusCode::OK
    );
    let list: Vec<Value> = writer.get("/todo").await.json().await.unwrap();
    assert!(list.iter().any(|i| i["id"] == id));
    // The other API reads the lagging replica: the lag is real...
    assert_eq!(
        other.get(&format!("/todo/{id}")).await.status(),
        StatusCode::NOT_FOUND
    );
    // ...but a client carrying the write's position sees it there too.
    let seen = other
        .client
        .get(other.url(&format!("/todo/{id}")))
        .header("x-todo-position", &position)
        .send()
        .await
        .unwrap();
    assert_eq!(seen.status(), StatusCode::OK);
    let bad = other
        .client
        .get(other.url("/todo"))
        .header("x-todo-position", "yesterday")
        .send()
        .await
        .unwrap();
    assert_error(bad, 400, "not a GTID position").await;

    sqlx::query("START SLAVE SQL_THREAD")
        .execute(&replica)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(15),
        "the replica to catch up",
        || async {
            (other.get(&format!("/todo/{id}")).await.status() == StatusCode::OK).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_replica_down_keeps_reads_working_and_reads_return_when_it_is_back() {
    let cluster = Cluster::dedicated(1).await;
    let database = cluster.create_database().await;
    let app = app_on(&cluster, &database, &[]).await;
    let id = app.create("survivor", "").await["id"].as_i64().unwrap();
    wait_replicated(&cluster, &database, id).await;

    cluster.stop("replica1").await;
    for _ in 0..10 {
        assert_eq!(
            app.get(&format!("/todo/{id}")).await.status(),
            StatusCode::OK
        );
        assert_eq!(app.get("/todo").await.status(), StatusCode::OK);
    }
    eventually(
        Duration::from_secs(5),
        "replica-1 reported down",
        || async { (node_status(&app, "replica-1").await == "down").then_some(()) },
    )
    .await;
    assert_eq!(
        app.get("/ready").await.status(),
        StatusCode::OK,
        "the primary still serves reads"
    );

    cluster.start("replica1").await;
    eventually(Duration::from_secs(10), "replica-1 back up", || async {
        (node_status(&app, "replica-1").await == "up").then_some(())
    })
    .await;
    let before = replica_reads(&app).await;
    for _ in 0..5 {
        assert_eq!(app.get("/todo").await.status(), StatusCode::OK);
    }
    assert!(
        replica_reads(&app).await >= before + 5.0,
        "reads returned to the replica"
    );
}

#[tokio::test]
async fn a_primary_down_refuses_writes_quickly_keeps_reads_and_recovers() {
    let cluster = Cluster::dedicated(1).await;
    let database = cluster.create_database().await;
    let app = app_on(&cluster, &database, &[]).await;
    let id = app.create("readable", "").await["id"].as_i64().unwrap();
    wait_replicated(&cluster, &database, id).await;

    cluster.stop("primary").await;
    for attempt in 0..3 {
        let started = Instant::now();
        let message = assert_error(
            app.post_json("/todo", &json!({"title": "lost?"})).await,
            503,
            "primary database unavailable",
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "attempt {attempt} took {:?}: {message}",
            started.elapsed()
        );
    }
    assert_error(
        app.patch_json(&format!("/todo/{id}"), &json!({"status": "DONE"}))
            .await,
        503,
        "primary database unavailable",
    )
    .await;
    assert_error(
        app.put_json("/todo", &json!({"id": id, "title": "t", "status": "DONE"}))
            .await,
        503,
        "primary",
    )
    .await;
    assert_error(app.delete(&format!("/todo/{id}")).await, 503, "primary").await;
    for _ in 0..5 {
        assert_eq!(
            app.get(&format!("/todo/{id}")).await.status(),
            StatusCode::OK
        );
        assert_eq!(app.get("/todo").await.status(), StatusCode::OK);
    }
    assert_eq!(app.get("/ready").await.status(), StatusCode::OK);
    assert_eq!(node_status(&app, "primary").await, "down");

    cluster.start("primary").await;
    let created = eventually(Duration::from_secs(15), "writes to work again", || async {
        let response = app
            .post_json("/todo", &json!({"title": "after the outage"}))
            .await;
        (response.status() == StatusCode::CREATED)
            .then_some(response.json::<Value>().await.unwrap())
    })
    .await;
    assert_eq!(
        app.get(&format!("/todo/{}", created["id"])).await.status(),
        StatusCode::OK
    );
    let item: Value = app.get(&format!("/todo/{id}")).await.json().await.unwrap();
    assert_eq!(item["status"], "TODO", "the refused PATCH changed nothing");
}

#[tokio::test]
async fn the_api_adopts_a_database_the_original_scripts_created() {
    let cluster = Cluster::shared().await;
    let database = cluster.create_database().await;
    let primary = cluster.admin(cluster.primary_port).await;
    // The original tododb schema and rows, no migration table.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE `{database}`.todo (id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY, title VARCHAR(188) NOT NULL,
         content TEXT, status ENUM('TODO','PROGRESS','DONE'), created DATETIME NOT NULL, updated DATETIME NOT NULL)
         ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
    )))
    .execute(&primary)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO `{database}`.todo (title, content, status, created, updated) VALUES
         ('MySQLのStackを構築する', 'replicas', 'DONE', '2018-05-24 12:00:00', '2018-05-24 12:00:00'),
         ('APIを実装する', NULL, 'PROGRESS', '2018-05-24 12:00:00', '2018-05-25 09:30:00'),
         ('Ingressを構築する', 'HAProxy', 'TODO', '2018-05-24 12:00:00', '2018-05-24 12:00:00')"
    )))
    .execute(&primary)
    .await
    .unwrap();

    let app = app_on(cluster, &database, &[]).await;
    assert_eq!(app.row_count().await, 3, "no row lost");
    let progress: Vec<Value> = app.get("/todo?status=PROGRESS").await.json().await.unwrap();
    assert_eq!(progress.len(), 1);
    assert_eq!(progress[0]["content"], "", "NULL content reads as empty");
    assert_eq!(progress[0]["updated"], "2018-05-25T09:30:00Z");
    let index: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = '{database}' AND INDEX_NAME = 'todo_status_updated' LIMIT 1"
    )))
    .fetch_optional(&primary)
    .await
    .unwrap();
    assert!(index.is_some(), "the list index was added");
    let created = app.create("new after adoption", "").await;
    assert_eq!(created["id"], 4, "AUTO_INCREMENT carries on");
}

#[tokio::test]
async fn the_seeds_go_dsns_work_unchanged() {
    let cluster = Cluster::shared().await;
    let database = cluster.create_database().await;
    let dsn = |port: u16| format!("root:gihyo@tcp(127.0.0.1:{port})/{database}?parseTime=true");
    let app = spawn_with(
        Options::default()
            .env("TODO_MASTER_URL", dsn(cluster.primary_port))
            .env("TODO_SLAVE_URL", dsn(cluster.replica_ports[0])),
    )
    .await;
    let id = app.create("via Go DSN", "").await["id"].as_i64().unwrap();
    assert_eq!(
        app.get(&format!("/todo/{id}")).await.status(),
        StatusCode::OK
    );
    let ready: Value = app.get("/ready").await.json().await.unwrap();
    assert_eq!(ready["checks"]["replica-1"]["status"], "up", "{ready}");
}

#[tokio::test]
async fn seeding_two_apis_at_once_inserts_the_rows_once() {
    let cluster = Cluster::shared().await;
    let database = cluster.create_database().await;
    let seed = [("TODO_SEED", "1")];
    let (a, b) = tokio::join!(
        app_on(cluster, &database, &seed),
        app_on(cluster, &database, &seed)
    );
    assert_eq!(a.row_count().await, 8);
    assert_eq!(b.list_all("PROGRESS", 100).await.len(), 5);
    a.shut_down().await;
    b.shut_down().await;
}

/// A 201 means the row is committed on the primary: writers keep posting while the primary is
/// killed with SIGKILL; after it restarts (InnoDB crash recovery), every acknowledged item is
/// there with its title. Writes that were refused or cut off may or may not have landed; none
/// is half-applied (the title check covers every row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_the_primary_being_killed() {
    let cluster = Cluster::dedicated(0).await;
    let database = cluster.create_database().await;
    let app = app_on(&cluster, &database, &[("TODO_DB_TIMEOUT", "500ms")]).await;
    app.wait_ready().await;
    // A primary alone: no replica to wait for, so a write does not read its position.
    let first = app.post_json("/todo", &json!({"title": "first"})).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("x-todo-position").is_none());
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(i64, String)>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..16 {
        let (client, url) = (app.client.clone(), app.url("/todo"));
        let (acked, stop) = (acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut failed = 0u32;
            for n in 0..100_000u32 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let title = format!("writer {writer} item {n}");
                match client
                    .post(&url)
                    .json(&json!({"title": title}))
                    .send()
                    .await
                {
                    Ok(response) if response.status() == StatusCode::CREATED => {
                        let item: Value = response.json().await.unwrap();
                        assert_eq!(item["title"], title.as_str());
                        acked
                            .lock()
                            .unwrap()
                            .push((item["id"].as_i64().unwrap(), title));
                    }
                    // Refused or cut off by the crash: no promise either way.
                    _ => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            failed
        }));
    }
    eventually(Duration::from_secs(30), "300 acknowledged writes", || {
        let count = acked.lock().unwrap().len();
        async move { (count >= 300).then_some(()) }
    })
    .await;
    cluster.kill("primary");
    let at_kill = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut failed = 0;
    for writer in writers {
        failed += writer.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        failed > 0,
        "the writers were still writing when the primary died"
    );
    println!(
        "acknowledged {} ({} before the kill was sent), refused or cut off {failed}",
        acked.len(),
        at_kill
    );

    cluster.start("primary").await;
    let pool = cluster.admin(cluster.primary_port).await;
    let rows: Vec<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(id AS SIGNED), title FROM `{database}`.todo"
    )))
    .fetch_all(&pool)
    .await
    .unwrap();
    let stored: std::collections::HashMap<i64, String> = rows.into_iter().collect();
    for (id, title) in &acked {
        assert_eq!(
            stored.get(id),
            Some(title),
            "acknowledged item {id} after the crash"
        );
    }
    for (id, title) in &stored {
        assert!(
            title.starts_with("writer ") || title == "first",
            "item {id} is whole: {title:?}"
        );
    }
}
