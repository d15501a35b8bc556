//! What `flotilla up` runs: the services, how each is started, and the gateways' configs.

use std::fmt::Write as _;
use std::path::Path;

/// The services of the TODO system, in start order (stop order is the reverse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Service {
    Traces,
    Registry,
    TodoApi,
    ApiGateway,
    TodoWeb,
    VideoStorage,
    VideoStreaming,
    FrontGateway,
    Dashboard,
}

impl Service {
    pub(crate) const ALL: [Service; 9] = [
        Service::Traces,
        Service::Registry,
        Service::TodoApi,
        Service::ApiGateway,
        Service::TodoWeb,
        Service::VideoStorage,
        Service::VideoStreaming,
        Service::FrontGateway,
        Service::Dashboard,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Service::Traces => "traces",
            Service::Registry => "registry",
            Service::TodoApi => "todo-api",
            Service::ApiGateway => "api-gateway",
            Service::TodoWeb => "todo-web",
            Service::VideoStorage => "video-storage",
            Service::VideoStreaming => "video-streaming",
            Service::FrontGateway => "front-gateway",
            Service::Dashboard => "dashboard",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The path that says a replica can take traffic.
    pub(crate) fn ready_path(self) -> &'static str {
        match self {
            Service::Traces
            | Service::Registry
            | Service::TodoApi
            | Service::TodoWeb
            | Service::VideoStorage
            | Service::VideoStreaming
            | Service::Dashboard => "/ready",
            Service::ApiGateway | Service::FrontGateway => "/hc",
        }
    }

    /// The name the service registers under (upper case in the registry).
    pub(crate) fn app(self) -> &'static str {
        self.name()
    }

    /// The gateway that sends traffic to this service, if any.
    pub(crate) fn fronted_by(self) -> Option<Service> {
        match self {
            Service::TodoApi => Some(Service::ApiGateway),
            Service::TodoWeb => Some(Service::FrontGateway),
            _ => None,
        }
    }
}

/// Where the system's data lives and how it connects to its database.
#[derive(Debug, Clone)]
pub(crate) struct Database {
    pub(crate) primary: String,
    pub(crate) replicas: Vec<String>,
}

/// The registry's URL, for a registry on `port`.
pub(crate) fn registry_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/eureka/")
}

/// The fixed ports of the system's singletons.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Singletons {
    pub(crate) api_gateway: u16,
    pub(crate) registry: u16,
    pub(crate) traces: u16,
    pub(crate) video_storage: u16,
    pub(crate) dashboard: u16,
}

/// The command line of one replica (after the binary).
#[allow(clippy::too_many_arguments)]
pub(crate) fn args(
    service: Service,
    port: u16,
    admin_port: u16,
    gateway_admin_ports: &[(Service, u16)],
    run_dir: &Path,
    database: &Database,
    singletons: Singletons,
    seed: bool,
) -> Vec<String> {
    let bind = format!("127.0.0.1:{port}");
    let data_dir = run_dir.parent().unwrap_or(run_dir);
    let mut args: Vec<String> = match service {
        Service::Traces => vec![
            "traces".into(),
            "--bind".into(),
            bind,
            "--data".into(),
            data_dir.join("traces.db").display().to_string(),
        ],
        Service::Registry => vec!["registry".into(), "--bind".into(), bind],
        Service::TodoApi => {
            let mut args = vec![
                "todo-api".into(),
                "--bind".into(),
                bind,
                "--primary-url".into(),
                database.primary.clone(),
            ];
            if !database.replicas.is_empty() {
                args.extend(["--replica-urls".into(), database.replicas.join(",")]);
            }
            if seed {
                args.push("--seed".into());
            }
            args
        }
        Service::TodoWeb => vec![
            "todo-web".into(),
            "--bind".into(),
            bind,
            "--api-url".into(),
            format!("http://127.0.0.1:{}", singletons.api_gateway),
        ],
        Service::VideoStorage => vec![
            "video-storage".into(),
            "--bind".into(),
            bind,
            "--store".into(),
            data_dir.join("videos").display().to_string(),
        ],
        Service::VideoStreaming => vec![
            "video-streaming".into(),
            "--bind".into(),
            bind,
            "--storage-url".into(),
            format!("http://127.0.0.1:{}", singletons.video_storage),
            "--db-url".into(),
            format!("sqlite://{}", data_dir.join("video.db").display()),
        ],
        // Every registered service, and the gateways (which do not register) by their admin
        // listeners, where their metrics are.
        Service::Dashboard => vec![
            "dashboard".into(),
            "--bind".into(),
            bind,
            "--registry".into(),
            registry_url(singletons.registry),
            "--targets".into(),
            gateway_admin_ports
                .iter()
                .map(|(gateway, port)| format!("{}=http://127.0.0.1:{port}", gateway.name()))
                .collect::<Vec<_>>()
                .join(","),
        ],
        Service::ApiGateway | Service::FrontGateway => vec![
            "gateway".into(),
            "--config".into(),
            gateway_config_path(run_dir, service).display().to_string(),
            "--bind".into(),
            bind,
            "--admin-bind".into(),
            format!("127.0.0.1:{admin_port}"),
        ],
    };
    if matches!(
        service,
        Service::TodoApi | Service::TodoWeb | Service::VideoStreaming
    ) {
        // They register themselves, renew every 5 s (a lease of 15 s), and on SIGTERM leave the
        // registry first, then serve half a second more while the gateways let go of them.
        args.extend([
            "--registry-url".into(),
            registry_url(singletons.registry),
            "--registry-renewal".into(),
            "5s".into(),
            "--shutdown-delay".into(),
            "500ms".into(),
        ]);
    }
    // Each under its own name (the two gateways are both `gateway` otherwise): in the registry,
    // and on its spans, which go to the trace collector. Not the collector's own (it would
    // trace its own ingest of them, without end), nor the registry's (heartbeats and watches
    // every few seconds would bury the requests people look for).
    args.extend(["--app-name".into(), service.app().into()]);
    if !matches!(
        service,
        Service::Traces | Service::Registry | Service::Dashboard
    ) {
        args.extend([
            "--traces-url".into(),
            format!("http://127.0.0.1:{}", singletons.traces),
        ]);
    }
    // Replicas get a short shutdown window: the gateway stops sending to them before they stop.
    args.extend(["--drain-timeout".into(), "10s".into()]);
    args
}

pub(crate) fn gateway_config_path(run_dir: &Path, gateway: Service) -> std::path::PathBuf {
    run_dir.join(format!("{}.toml", gateway.name()))
}

/// The API gateway: every API replica the registry has, health-checked on `/ready`.
pub(crate) fn api_gateway_config(registry_port: u16) -> String {
    let mut text = header(registry_port);
    text.push_str("[[listener]]\nbind = \"127.0.0.1:0\"\n\n[[route]]\nupstream = \"todo-api\"\n\n");
    upstream(&mut text, Service::TodoApi, "/ready");
    text
}

fn header(registry_port: u16) -> String {
    format!(
        "# Written by `flotilla up`. Replicas come from the registry.\n[registry]\nurl = \"{}\"\n\n",
        registry_url(registry_port)
    )
}

/// The front gateway: `/api/` to the API gateway (prefix stripped), `/videos/` to
/// video-streaming when it runs (prefix stripped: its pages link relatively), everything else to
/// the board. The board is checked on `/hc`: its `/ready` is 503 while the API is down, and the
/// board's own "API unavailable" page is better than the gateway's 503.
pub(crate) fn front_gateway_config(
    registry_port: u16,
    api_gateway_port: u16,
    video: bool,
) -> String {
    let mut text = header(registry_port);
    text.push_str("[[listener]]\nbind = \"127.0.0.1:0\"\n\n");
    text.push_str("[[route]]\nupstream = \"todo-web\"\n\n");
    text.push_str("[[route]]\npath = \"/api/\"\nstrip_prefix = true\nupstream = \"api\"\n\n");
    if video {
        text.push_str(
            "[[route]]\npath = \"/videos/\"\nstrip_prefix = true\nupstream = \"video-streaming\"\n\n",
        );
        upstream(&mut text, Service::VideoStreaming, "/hc");
    }
    upstream(&mut text, Service::TodoWeb, "/hc");
    let _ = writeln!(
        text,
        "[upstream.api]\nserver = [{{ address = \"127.0.0.1:{api_gateway_port}\" }}]"
    );
    text
}

fn upstream(text: &mut String, service: Service, health: &str) {
    let (name, app) = (service.name(), service.app());
    let _ = writeln!(text, "[upstream.{name}]\npolicy = \"least_conn\"");
    let _ = writeln!(
        text,
        "health_check = {{ path = \"{health}\", interval = \"500ms\", timeout = \"1s\", rise = 1, fall = 2 }}"
    );
    let _ = writeln!(text, "discovery = \"registry:{app}\"\n");
}
