//! The control endpoint of a running `flotilla up` (HTTP on a loopback port written to
//! `<data-dir>/run/control.addr`), the rolling replacement it performs, and the `flotilla ps` /
//! `flotilla rollout` clients.
//!
//! A rollout is Swarm's `update_config` with parallelism 1, `order: start-first` and a delay: for
//! each replica, start the new one, wait until it is ready, add it to the gateway's rotation (the
//! gateway reloads its config), take the old one out, and only then stop it, letting it finish what
//! it has in flight.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{self, Context, StackError, failed};
use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::plan::Service;
use crate::{Stack, control_file, display, start_replica, wait_ready, write_gateway_config};

/// Pause between two replicas of a rollout (Swarm's `delay`).
const ROLLOUT_DELAY: Duration = Duration::from_secs(1);

/// Starts the endpoint and records its address.
pub(crate) async fn serve(
    stack: Arc<Stack>,
    data_dir: &Path,
) -> error::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    std::fs::write(control_file(data_dir), addr.to_string())?;
    let router = Router::new()
        .route("/ps", get(table))
        .route("/rollout/{service}", post(start_rollout))
        .with_state(stack);
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    }))
}

async fn table(State(stack): State<Arc<Stack>>) -> Response {
    Json(stack.supervisor.table()).into_response()
}

async fn start_rollout(
    State(stack): State<Arc<Stack>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let Some(service) = Service::parse(&name).filter(|s| s.fronted_by().is_some()) else {
        let message = format!("cannot roll out {name:?}: only todo-api and todo-web can be");
        return platform::error_response(StatusCode::BAD_REQUEST, message);
    };
    let Ok(_guard) = stack.rollout_lock.try_lock() else {
        return platform::error_response(StatusCode::CONFLICT, "a rollout is already running");
    };
    match roll(&stack, service).await {
        Ok(replaced) => {
            Json(serde_json::json!({ "service": name, "replaced": replaced })).into_response()
        }
        Err(error) => {
            platform::error_response(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
        }
    }
}

/// Replaces every replica of `service`, one at a time. Returns how many were replaced.
async fn roll(stack: &Stack, service: Service) -> error::Result<usize> {
    let gateway = service.fronted_by().expect("only fronted services roll");
    let old: Vec<(u64, u16)> = stack
        .rotation
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&service)
        .cloned()
        .unwrap_or_default();
    for (index, (old_id, old_port)) in old.iter().enumerate() {
        let replica = stack
            .supervisor
            .status(*old_id)
            .map_or(index + 1, |s| s.replica);
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let new_id = start_replica(stack, service, replica, port, false)?;
        if let Err(error) = wait_ready(stack, new_id, service).await {
            // Like failure_action: rollback — the new replica goes, the old one keeps serving.
            remove_from_rotation(stack, service, new_id);
            stack.supervisor.stop(new_id, true).await;
            return Err(StackError::Step {
                what: format!(
                    "rollout of {} stopped; the old replicas keep serving",
                    service.name()
                ),
                source: Box::new(error),
            });
        }
        reload_gateway(stack, gateway, service).await?;
        remove_from_rotation(stack, service, *old_id);
        // Out of service in the registry: the gateway stops sending it work before it stops.
        take_out_of_service(stack, service, *old_port).await;
        reload_gateway(stack, gateway, service).await?;
        stack.supervisor.stop(*old_id, false).await;
        if index + 1 < old.len() {
            tokio::time::sleep(ROLLOUT_DELAY).await;
        }
    }
    Ok(old.len())
}

/// Marks the replica of `service` on `port` OUT_OF_SERVICE in the registry (Eureka's way to take
/// an instance out of rotation); failures are left to the gateway's wait, which reports them.
async fn take_out_of_service(stack: &Stack, service: Service, port: u16) {
    let id = platform::registration::instance_id(service.app(), port);
    let url = format!(
        "{}apps/{}/{id}/status?value=OUT_OF_SERVICE",
        crate::plan::registry_url(stack.singletons.registry),
        service.app().to_ascii_uppercase()
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    if let Err(error) = client.put(url).send().await {
        eprintln!("flotilla up: cannot take a replica out of service in the registry: {error}");
    }
}

fn remove_from_rotation(stack: &Stack, service: Service, id: u64) {
    if let Some(rotation) = stack
        .rotation
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(&service)
    {
        rotation.retain(|(r, _)| *r != id);
    }
}

/// Rewrites the gateway's config, signals it, and waits until its admin `/ready` shows the new
/// number of servers for `service`.
async fn reload_gateway(stack: &Stack, gateway: Service, service: Service) -> error::Result<()> {
    write_gateway_config(stack, gateway)?;
    let expected = stack
        .rotation
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&service)
        .map_or(0, Vec::len);
    let Some(pid) = stack
        .supervisor
        .table()
        .into_iter()
        .find(|r| r.service == gateway)
        .and_then(|r| r.pid)
    else {
        failed!("{} is not running", gateway.name());
    };
    kill(Pid::from_raw(pid as i32), Signal::SIGHUP).for_what(|| "signal the gateway".into())?;
    let admin = stack.admin_ports[&gateway];
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|source| StackError::Control {
            what: "cannot make an HTTP client",
            source,
        })?;
    for _ in 0..200 {
        let report: Option<serde_json::Value> = match client
            .get(format!("http://127.0.0.1:{admin}/ready"))
            .send()
            .await
        {
            Ok(response) => response.json().await.ok(),
            Err(_) => None,
        };
        let servers = report.as_ref().and_then(|r| {
            r["checks"][format!("upstream {}", service.name())]["detail"]["servers"].as_u64()
        });
        if servers == Some(expected as u64) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    failed!("{} did not pick up its new config", gateway.name())
}

/// Whether a `flotilla up` answers on this data directory's control endpoint.
pub(crate) async fn running(data_dir: &Path) -> bool {
    let Ok(addr) = std::fs::read_to_string(control_file(data_dir)) else {
        return false;
    };
    reqwest::get(format!("http://{}/ps", addr.trim()))
        .await
        .is_ok()
}

fn control_url(data_dir: &Path, path: &str) -> error::Result<String> {
    let file = control_file(data_dir);
    let addr = std::fs::read_to_string(&file).for_what(|| {
        format!(
            "no flotilla up is running with the data directory {} ({} is missing)",
            data_dir.display(),
            file.display()
        )
    })?;
    Ok(format!("http://{}{path}", addr.trim()))
}

/// `flotilla ps`: the status table of the running system.
pub async fn ps(data_dir: &Path) -> error::Result<String> {
    let url = control_url(data_dir, "/ps")?;
    let rows: Vec<serde_json::Value> = reqwest::get(&url)
        .await
        .map_err(|source| StackError::Control {
            what: "flotilla up does not answer",
            source,
        })?
        .json()
        .await
        .map_err(|source| StackError::Control {
            what: "flotilla up answered something else than its table",
            source,
        })?;
    let text = display::table(rows.iter().map(|row| {
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".to_string(),
            other => other.to_string(),
        };
        ["service", "replica", "pid", "address", "state", "restarts"].map(|k| text(&row[k]))
    }));
    Ok(text)
}

/// `flotilla rollout <service>`: waits for the rollout to finish.
pub async fn rollout(data_dir: &Path, service: &str) -> error::Result<String> {
    let url = control_url(data_dir, &format!("/rollout/{service}"))?;
    let response = reqwest::Client::new()
        .post(&url)
        .send()
        .await
        .map_err(|source| StackError::Control {
            what: "flotilla up does not answer",
            source,
        })?;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .map_err(|source| StackError::Control {
            what: "flotilla up answered something else than a rollout's outcome",
            source,
        })?;
    if !status.is_success() {
        failed!("{}", body["message"].as_str().unwrap_or("rollout failed"));
    }
    Ok(format!(
        "{service}: replaced {} replicas, one at a time\n",
        body["replaced"]
    ))
}
