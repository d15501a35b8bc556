//! `flotilla up`: the whole TODO system on one machine, as supervised processes of this binary.
//!
//! `todo-api` ×N behind an internal API gateway, `todo-web` ×N, and a front gateway on
//! `127.0.0.1:<port>` that sends `/api/` to the API gateway (prefix stripped) and everything else
//! to the boards. Internal services listen on free loopback ports. Data lives in an SQLite file in
//! the data directory (seeded with the original rows on first run) unless `--db` names a MariaDB.
//! `flotilla rollout <service>` replaces a service's replicas one at a time, start-first, through
//! the control endpoint whose address is in `<data-dir>/run/control.addr`; `flotilla ps` shows the
//! table.
//!
//! Layout:
//! - `plan`: the services, their command lines, the gateways' configs.
//! - `supervisor`: child processes, logs, restarts, stopping.
//! - `control`: the control endpoint, rollouts, and the `ps`/`rollout` clients.
//! - `display`: the status table.
//! - [`child`]: a child's link back to its supervisor (it stops when the supervisor dies).
//! - [`error`]: what can go wrong, worded for the person who ran it.

pub mod child;
mod control;
mod display;
pub mod error;
mod plan;
mod supervisor;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use error::{Context, StackError, failed};
use platform::config::parse_count;
use platform::{ConfigError, Setting, Source};

pub use control::{ps, rollout};
use plan::{Database, Service};
use supervisor::Supervisor;

pub const PORT: Setting = Setting::new(
    "FLOTILLA_UP_PORT",
    "port",
    "PORT",
    "port of the front gateway on 127.0.0.1",
)
.default("8080");
pub const API_REPLICAS: Setting = Setting::new(
    "FLOTILLA_API_REPLICAS",
    "api-replicas",
    "N",
    "TODO API processes",
)
.default("2");
pub const WEB_REPLICAS: Setting = Setting::new(
    "FLOTILLA_WEB_REPLICAS",
    "web-replicas",
    "N",
    "board processes",
)
.default("2");
pub const DB: Setting = Setting::new(
    "FLOTILLA_DB",
    "db",
    "URL",
    "primary database, mysql://... (default: SQLite in the data directory)",
);
pub const DB_REPLICAS: Setting = Setting::new(
    "FLOTILLA_DB_REPLICAS",
    "replica",
    "URL[,URL]",
    "read replicas of --db, comma-separated",
);

pub const VIDEO: Setting = Setting::new(
    "FLOTILLA_UP_VIDEO",
    "video",
    "",
    "also run the video services (video-storage and video-streaming, at /videos/)",
)
.switch();

pub const SETTINGS: &[Setting] = &[
    PORT,
    API_REPLICAS,
    WEB_REPLICAS,
    DATA_DIR,
    DB,
    DB_REPLICAS,
    VIDEO,
];

/// The data directory, shared by `up`, `ps` and `rollout`.
pub const DATA_DIR: Setting = Setting::new(
    "FLOTILLA_DATA_DIR",
    "data-dir",
    "DIR",
    "where the SQLite file and the run state live",
)
.default("./data");

#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub api_replicas: usize,
    pub web_replicas: usize,
    pub data_dir: PathBuf,
    pub db: Option<String>,
    pub db_replicas: Vec<String>,
    /// Run the video pair too.
    pub video: bool,
    pub common: platform::CommonConfig,
}

impl Config {
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let db: Option<String> = source.parse(&DB, |v| Ok(v.to_string()))?;
        let db_replicas: Vec<String> = source
            .parse(&DB_REPLICAS, |v| {
                Ok(v.split(',').map(|s| s.trim().to_string()).collect())
            })?
            .unwrap_or_default();
        if db.is_none() && !db_replicas.is_empty() {
            return Err(ConfigError::Other(
                "--replica needs --db: read replicas of the embedded SQLite file make no sense"
                    .into(),
            ));
        }
        Ok(Config {
            port: source.parse_or_default(&PORT, |v| {
                v.parse::<u16>().map_err(|_| "a port number".to_string())
            })?,
            api_replicas: source.parse_or_default(&API_REPLICAS, |v| parse_count(v, 16))? as usize,
            web_replicas: source.parse_or_default(&WEB_REPLICAS, |v| parse_count(v, 16))? as usize,
            data_dir: source.parse_or_default(&DATA_DIR, |v| Ok(PathBuf::from(v)))?,
            db,
            db_replicas,
            video: source.switch(&VIDEO)?,
            common: platform::CommonConfig::from_source(source)?,
        })
    }
}

/// The running system: the supervisor, which replicas each gateway sends to, and the ports.
pub(crate) struct Stack {
    pub(crate) supervisor: Supervisor,
    /// Per fronted service, the replicas in rotation: (replica id, port).
    pub(crate) rotation: Mutex<HashMap<Service, Vec<(u64, u16)>>>,
    pub(crate) run_dir: PathBuf,
    pub(crate) database: Database,
    pub(crate) singletons: plan::Singletons,
    /// Admin ports of the two gateways.
    pub(crate) admin_ports: HashMap<Service, u16>,
    pub(crate) rollout_lock: tokio::sync::Mutex<()>,
    /// Whether the video services run (the front gateway routes `/videos/` to them).
    pub(crate) video: bool,
}

/// Runs the system until `shutdown`; a second SIGINT/SIGTERM during the graceful stop kills
/// everything at once.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> error::Result<()> {
    // Listening from the start, so a second Ctrl-C that comes right after the first is not missed.
    let mut interrupts = Interrupts::new()?;
    std::fs::create_dir_all(&config.data_dir).for_what(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let data_dir = config.data_dir.canonicalize()?;
    let run_dir = data_dir.join("run");
    std::fs::create_dir_all(&run_dir)?;
    if control::running(&data_dir).await {
        failed!(
            "flotilla up is already running with the data directory {}",
            data_dir.display()
        );
    }
    let front = std::net::TcpListener::bind(("127.0.0.1", config.port))
        .for_what(|| format!("cannot listen on 127.0.0.1:{}", config.port))?;
    drop(front);
    let database = Database {
        primary: config
            .db
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("todo.db").display())),
        replicas: config.db_replicas.clone(),
    };
    let stack = Arc::new(Stack {
        supervisor: Supervisor::new(
            std::env::current_exe()?,
            !std::io::IsTerminal::is_terminal(&std::io::stdout()),
        ),
        rotation: Mutex::new(HashMap::new()),
        run_dir,
        database,
        singletons: plan::Singletons {
            api_gateway: free_port()?,
            registry: free_port()?,
            traces: free_port()?,
            video_storage: free_port()?,
            dashboard: free_port()?,
        },
        admin_ports: HashMap::from([
            (Service::ApiGateway, free_port()?),
            (Service::FrontGateway, free_port()?),
        ]),
        rollout_lock: tokio::sync::Mutex::new(()),
        video: config.video,
    });
    let display = tokio::spawn(display::run(stack.supervisor.clone(), config.port));

    let mut shutdown = std::pin::pin!(shutdown);
    let started = tokio::select! {
        result = start_all(&stack, &config) => result,
        () = &mut shutdown => Err(StackError::Failed("interrupted while starting".into())),
    };
    let control = match started {
        Ok(()) => Some(control::serve(Arc::clone(&stack), &data_dir).await?),
        Err(error) => {
            eprintln!("flotilla up: {error}; stopping what started");
            None
        }
    };
    if control.is_some() {
        println!(
            "flotilla up: the TODO system is on http://127.0.0.1:{} (Ctrl-C stops it)",
            config.port
        );
        if config.video {
            println!(
                "flotilla up: the videos are on http://127.0.0.1:{}/videos/",
                config.port
            );
        }
        println!(
            "flotilla up: its traces are on http://127.0.0.1:{}",
            stack.singletons.traces
        );
        println!(
            "flotilla up: its circuits and upstreams, live, are on http://127.0.0.1:{}",
            stack.singletons.dashboard
        );
        shutdown.await;
    }
    println!("flotilla up: stopping (Ctrl-C again to kill everything now)");
    interrupts.forget_pending();
    tokio::select! {
        () = stop_all(&stack) => println!("flotilla up: everything stopped"),
        () = interrupts.next() => {
            stack.supervisor.kill_all();
            // Reap them, so nothing is left behind even as a zombie.
            for _ in 0..100 {
                if stack.supervisor.table().iter().all(|r| r.pid.is_none()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            println!("flotilla up: killed");
        }
    }
    let _ = std::fs::remove_file(data_dir.join("run/control.addr"));
    display.abort();
    if let Some(control) = control {
        control.abort();
    }
    Ok(())
}

async fn start_all(stack: &Arc<Stack>, config: &Config) -> error::Result<()> {
    let id = start_replica(stack, Service::Traces, 1, stack.singletons.traces, false)?;
    wait_ready(stack, id, Service::Traces).await?;
    let id = start_replica(
        stack,
        Service::Registry,
        1,
        stack.singletons.registry,
        false,
    )?;
    wait_ready(stack, id, Service::Registry).await?;
    for replica in 1..=config.api_replicas {
        // The first replica seeds an empty table; the others start once it has.
        let id = start_replica(stack, Service::TodoApi, replica, free_port()?, replica == 1)?;
        wait_ready(stack, id, Service::TodoApi).await?;
    }
    write_gateway_config(stack, Service::ApiGateway)?;
    let id = start_replica(
        stack,
        Service::ApiGateway,
        1,
        stack.singletons.api_gateway,
        false,
    )?;
    wait_ready(stack, id, Service::ApiGateway).await?;
    let mut web = Vec::new();
    for replica in 1..=config.web_replicas {
        web.push(start_replica(
            stack,
            Service::TodoWeb,
            replica,
            free_port()?,
            false,
        )?);
    }
    for id in web {
        wait_ready(stack, id, Service::TodoWeb).await?;
    }
    if config.video {
        let port = stack.singletons.video_storage;
        let id = start_replica(stack, Service::VideoStorage, 1, port, false)?;
        wait_ready(stack, id, Service::VideoStorage).await?;
        let id = start_replica(stack, Service::VideoStreaming, 1, free_port()?, false)?;
        wait_ready(stack, id, Service::VideoStreaming).await?;
    }
    write_gateway_config(stack, Service::FrontGateway)?;
    let id = start_replica(stack, Service::FrontGateway, 1, config.port, false)?;
    wait_ready(stack, id, Service::FrontGateway).await?;
    let port = stack.singletons.dashboard;
    let id = start_replica(stack, Service::Dashboard, 1, port, false)?;
    wait_ready(stack, id, Service::Dashboard).await?;
    Ok(())
}

/// SIGINT and SIGTERM, for the second one.
struct Interrupts {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Interrupts {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// Drops the signal that began the shutdown, which these streams saw too.
    fn forget_pending(&mut self) {
        use futures_util::FutureExt;
        while let Some(Some(())) = self.int.recv().now_or_never() {}
        while let Some(Some(())) = self.term.recv().now_or_never() {}
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Stops everything in dependency order: front gateway, video services, boards, API gateway,
/// APIs.
async fn stop_all(stack: &Stack) {
    for service in Service::ALL.into_iter().rev() {
        println!("flotilla up: stopping {}", service.name());
        let ids: Vec<u64> = stack
            .supervisor
            .table()
            .into_iter()
            .filter(|r| r.service == service)
            .map(|r| r.id)
            .collect();
        futures_util::future::join_all(ids.into_iter().map(|id| stack.supervisor.stop(id, false)))
            .await;
    }
}

/// Starts a replica; fronted services join their gateway's rotation.
pub(crate) fn start_replica(
    stack: &Stack,
    service: Service,
    replica: usize,
    port: u16,
    seed: bool,
) -> error::Result<u64> {
    let admin = stack.admin_ports.get(&service).copied().unwrap_or(0);
    let mut gateways: Vec<(Service, u16)> =
        stack.admin_ports.iter().map(|(s, p)| (*s, *p)).collect();
    gateways.sort_unstable_by_key(|(s, _)| s.name());
    let args = plan::args(
        service,
        port,
        admin,
        &gateways,
        &stack.run_dir,
        &stack.database,
        stack.singletons,
        seed,
    );
    let probe_port = stack.admin_ports.get(&service).copied().unwrap_or(port);
    let probe = format!("http://127.0.0.1:{probe_port}{}", service.ready_path());
    let id = stack.supervisor.start(service, replica, port, probe, args);
    if service.fronted_by().is_some() {
        stack
            .rotation
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(service)
            .or_default()
            .push((id, port));
    }
    Ok(id)
}

/// Waits until a replica is ready (its probe answered), at most 60 s, less if it gives up.
pub(crate) async fn wait_ready(stack: &Stack, id: u64, service: Service) -> error::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let Some(status) = stack.supervisor.status(id) else {
            failed!("{} was stopped while starting", service.name());
        };
        match status.state {
            "ready" => return Ok(()),
            "crashing" | "failed" => {
                failed!(
                    "{}.{} does not start (see its log lines above)",
                    service.name(),
                    status.replica
                )
            }
            _ if Instant::now() > deadline => {
                failed!(
                    "{}.{} did not become ready within 60 s",
                    service.name(),
                    status.replica
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// Writes a gateway's config (its servers come from the registry).
pub(crate) fn write_gateway_config(stack: &Stack, gateway: Service) -> error::Result<()> {
    let text = match gateway {
        Service::ApiGateway => plan::api_gateway_config(stack.singletons.registry),
        Service::FrontGateway => plan::front_gateway_config(
            stack.singletons.registry,
            stack.singletons.api_gateway,
            stack.video,
        ),
        other => failed!("{} is not a gateway", other.name()),
    };
    let path = plan::gateway_config_path(&stack.run_dir, gateway);
    // Write then rename, so a gateway never reads half a file.
    let partial = path.with_extension("toml.partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, &path)?;
    Ok(())
}

fn free_port() -> error::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `<data-dir>/run/control.addr`.
pub(crate) fn control_file(data_dir: &Path) -> PathBuf {
    data_dir.join("run").join("control.addr")
}
