//! Eureka's REST operations, under `/eureka/` and `/eureka/v2/`, with or without a trailing
//! slash (docs/registry.md lists them). App names are matched in upper case; ids arrive
//! percent-decoded from the path and are checked before use. Every refusal is a JSON
//! `{"status", "message"}` naming the problem, and leaves the registry as it was.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use platform::error_response;

use crate::instance::{self, Status};
use crate::peers::{Op, Peers, REPLICATION_HEADER};
use crate::registry::{Outcome, Registry, Renewal, now_ms};
use crate::render::{self, App, Format};

/// Largest register body: an instance with the most metadata allowed fits many times over.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Longest a watch may wait for a change.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// What the handlers share.
#[derive(Clone)]
pub struct Shared {
    pub registry: Arc<Registry>,
    pub peers: Arc<Peers>,
}

/// The Eureka routes under both prefixes.
pub fn eureka(shared: Shared) -> Router {
    let mut router = Router::new();
    for prefix in ["/eureka", "/eureka/v2"] {
        let routes: [(&str, MethodRouter<Shared>); 9] = [
            ("/apps", get(all_apps)),
            ("/apps/delta", get(delta)),
            ("/apps/{app}", post(register).get(one_app)),
            (
                "/apps/{app}/{id}",
                put(heartbeat).delete(cancel).get(one_instance),
            ),
            (
                "/apps/{app}/{id}/status",
                put(override_status).delete(remove_override),
            ),
            ("/apps/{app}/{id}/metadata", put(metadata)),
            ("/instances/{id}", get(instance_by_id)),
            ("/vips/{vip}", get(vip)),
            ("/svips/{vip}", get(svip)),
        ];
        for (path, route) in routes {
            router = router
                .route(&format!("{prefix}{path}"), route.clone())
                .route(&format!("{prefix}{path}/"), route);
        }
    }
    router
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

/// Why a request is refused: its status and a message naming the problem.
#[derive(Debug)]
pub struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        error_response(self.0, self.1)
    }
}

type Answer = Result<Response, Refused>;

fn bad_request(message: impl Into<String>) -> Refused {
    Refused(StatusCode::BAD_REQUEST, message.into())
}

fn not_found(what: String) -> Refused {
    Refused(StatusCode::NOT_FOUND, format!("{what} is not registered"))
}

fn format(headers: &HeaderMap) -> Format {
    Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()))
}

fn document(format: Format, body: impl Into<axum::body::Body>) -> Response {
    ([(header::CONTENT_TYPE, format.content_type())], body.into()).into_response()
}

fn is_replication(headers: &HeaderMap) -> bool {
    headers
        .get(REPLICATION_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
}

/// The app name from a path, upper-cased and checked.
fn app_name(app: &str) -> Result<String, Refused> {
    instance::check_id("app", app).map_err(|e| bad_request(e.0))?;
    Ok(app.to_ascii_uppercase())
}

fn names(app: &str, id: &str) -> Result<(String, String), Refused> {
    let app = app_name(app)?;
    instance::check_id("instance id", id).map_err(|e| bad_request(e.0))?;
    Ok((app, id.to_string()))
}

fn query_value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn status_param(pairs: &[(String, String)], name: &str) -> Result<Option<Status>, Refused> {
    match query_value(pairs, name) {
        None => Ok(None),
        Some(value) => Status::parse(value)
            .map(Some)
            .ok_or_else(|| bad_request(format!("{name} {value:?} is not a status"))),
    }
}

async fn register(
    State(shared): State<Shared>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let app = app_name(&app)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            let limit = MAX_BODY_BYTES / 1024;
            Refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {limit} KiB"),
            )
        } else {
            bad_request(rejection.body_text())
        }
    })?;
    let instance = instance::parse_body(&body, now_ms()).map_err(|e| bad_request(e.0))?;
    if instance.app != app {
        return Err(bad_request(format!(
            "the body's app {:?} is not the app in the path, {app:?}",
            instance.app
        )));
    }
    shared.registry.register(instance.clone());
    if !is_replication(&headers) {
        shared.peers.replicate(Op::Register(Box::new(instance)));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn heartbeat(
    State(shared): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Answer {
    let (app, id) = names(&app, &id)?;
    let status = status_param(&pairs, "status")?;
    let dirty = query_value(&pairs, "lastDirtyTimestamp")
        .map(str::parse::<u64>)
        .transpose()
        .map_err(|_| bad_request("lastDirtyTimestamp must be epoch milliseconds"))?;
    match shared.registry.renew(&app, &id, status, dirty) {
        Renewal::Renewed => done(
            Outcome::Done,
            &shared,
            &headers,
            Op::Heartbeat { app, id, status },
        ),
        Renewal::NotFound => Err(not_found(format!("instance {id:?} of {app}"))),
    }
}

/// Answers an operation on one instance, replicating it when it came from a client.
fn done(outcome: Outcome, shared: &Shared, headers: &HeaderMap, op: Op) -> Answer {
    match outcome {
        Outcome::Done => {
            if !is_replication(headers) {
                shared.peers.replicate(op);
            }
            Ok(StatusCode::OK.into_response())
        }
        Outcome::NotFound => {
            let (app, id) = op.names();
            Err(not_found(format!("instance {id:?} of {app}")))
        }
    }
}

async fn cancel(
    State(shared): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let (app, id) = names(&app, &id)?;
    let outcome = shared.registry.cancel(&app, &id);
    done(outcome, &shared, &headers, Op::Cancel { app, id })
}

async fn override_status(
    State(shared): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Answer {
    let (app, id) = names(&app, &id)?;
    let status = status_param(&pairs, "value")?
        .ok_or_else(|| bad_request("value is required: the status to set"))?;
    let outcome = shared.registry.override_status(&app, &id, status);
    done(outcome, &shared, &headers, Op::Status { app, id, status })
}

async fn remove_override(
    State(shared): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Answer {
    let (app, id) = names(&app, &id)?;
    let status = status_param(&pairs, "value")?;
    let outcome = shared.registry.remove_override(&app, &id, status);
    done(
        outcome,
        &shared,
        &headers,
        Op::RemoveStatus { app, id, status },
    )
}

async fn metadata(
    State(shared): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Answer {
    let (app, id) = names(&app, &id)?;
    let entries: Vec<(String, String)> = pairs.into_iter().filter(|(k, _)| !k.is_empty()).collect();
    if entries.is_empty() {
        return Err(bad_request(
            "give the metadata as query parameters: ?key=value&...",
        ));
    }
    let outcome = shared
        .registry
        .update_metadata(&app, &id, entries.clone())
        .map_err(|invalid| bad_request(invalid.0))?;
    done(
        outcome,
        &shared,
        &headers,
        Op::Metadata { app, id, entries },
    )
}

/// The full registry; with `?version=N` (and `wait=SECONDS`, at most 60, default 30) it waits
/// until the registry's version is no longer N: Flotilla's watch.
async fn all_apps(
    State(shared): State<Shared>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Answer {
    if let Some(version) = query_value(&pairs, "version") {
        let version: u64 = version.parse().map_err(|_| {
            bad_request("version must be a whole number (versions__delta of an answer)")
        })?;
        let wait = query_value(&pairs, "wait")
            .map(str::parse::<u64>)
            .transpose()
            .map_err(|_| bad_request("wait must be a whole number of seconds"))?
            .map_or(Duration::from_secs(30), Duration::from_secs)
            .min(MAX_WAIT);
        let mut watch = shared.registry.watch();
        let changed = watch.wait_for(|current| *current != version);
        // Nothing new within the wait: the same document, which the watcher compares and ignores.
        let _ = tokio::time::timeout(wait, changed).await;
    }
    let format = format(&headers);
    let (_, body) = shared.registry.full(format);
    Ok(document(format, body))
}

async fn delta(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    let format = format(&headers);
    document(format, shared.registry.delta(format))
}

async fn one_app(
    State(shared): State<Shared>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let app = app_name(&app)?;
    let (_, apps) = shared.registry.snapshot();
    let instances = apps
        .get(&app)
        .ok_or_else(|| not_found(format!("application {app}")))?;
    let format = format(&headers);
    let app = App {
        name: &app,
        instances: instances.iter().collect(),
    };
    Ok(document(format, render::application(format, &app)))
}

async fn one_instance(
    State(shared): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let (app, id) = names(&app, &id)?;
    let instance = shared
        .registry
        .instance(&app, &id)
        .ok_or_else(|| not_found(format!("instance {id:?} of {app}")))?;
    let format = format(&headers);
    Ok(document(format, render::instance(format, &instance)))
}

async fn instance_by_id(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    instance::check_id("instance id", &id).map_err(|e| bad_request(e.0))?;
    let instance = shared
        .registry
        .instance_by_id(&id)
        .ok_or_else(|| not_found(format!("instance {id:?}")))?;
    let format = format(&headers);
    Ok(document(format, render::instance(format, &instance)))
}

async fn vip(state: State<Shared>, Path(vip): Path<String>, headers: HeaderMap) -> Answer {
    by_vip(state, vip, headers, false)
}

async fn svip(state: State<Shared>, Path(vip): Path<String>, headers: HeaderMap) -> Answer {
    by_vip(state, vip, headers, true)
}

fn by_vip(State(shared): State<Shared>, vip: String, headers: HeaderMap, secure: bool) -> Answer {
    instance::check_id("VIP address", &vip).map_err(|e| bad_request(e.0))?;
    let format = format(&headers);
    let body = shared
        .registry
        .by_vip(format, &vip, secure)
        .ok_or_else(|| not_found(format!("VIP address {vip:?}")))?;
    Ok(document(format, body))
}
