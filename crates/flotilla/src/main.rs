//! `flotilla`: one binary, one subcommand per service. This file only parses the command line and
//! hands each subcommand to its crate's `run`.

use std::future::Future;
use std::process::ExitCode;

use clap::{ArgMatches, Command};
use platform::cli::{COMMON_SETTINGS, apply_flags, with_settings};
use platform::registration;
use platform::{CommonConfig, ConfigError, Setting, Source};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn command() -> Command {
    let service = |name: &'static str, about: &'static str, settings: &[Setting]| {
        with_settings(
            with_settings(Command::new(name).about(about), settings),
            COMMON_SETTINGS,
        )
    };
    Command::new("flotilla")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Flotilla: the TODO microservice system, one binary for every service")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(service(
            "todo-api",
            "The TODO REST API (embedded SQLite unless TODO_PRIMARY_URL is set)",
            todo_api::SETTINGS,
        ))
        .subcommand(service(
            "todo-web",
            "The TODO board, rendered on the server from the TODO API (TODO_API_URL)",
            todo_web::SETTINGS,
        ))
        .subcommand(service(
            "gateway",
            "The reverse proxy: routes, load balancing, health checks, retries (GATEWAY_CONFIG, or the nginx variables)",
            gateway::SETTINGS,
        ))
        .subcommand(service(
            "up",
            "Run the whole TODO system on this machine: APIs, boards, gateways (no Docker, no database server)",
            stack::SETTINGS,
        ))
        .subcommand(with_settings(
            Command::new("ps").about("Show the processes of the running `flotilla up`"),
            &[stack::DATA_DIR],
        ))
        .subcommand(with_settings(
            Command::new("rollout")
                .about("Replace a service's replicas one at a time, with no failed request (todo-api or todo-web)")
                .arg(clap::Arg::new("service").required(true).value_name("SERVICE")),
            &[stack::DATA_DIR],
        ))
        .subcommand(
            Command::new("healthcheck")
                .about("Exit 0 if URL answers 2xx within the timeout, 1 if not (for container health checks; no curl needed)")
                .arg(
                    clap::Arg::new("url")
                        .value_name("URL")
                        .help("What to ask; default: $HEALTHCHECK_URL"),
                )
                .arg(
                    clap::Arg::new("timeout")
                        .long("timeout")
                        .value_name("DURATION")
                        .default_value("3s")
                        .help("How long to wait for the answer (e.g. 500ms, 3s)"),
                ),
        )
        .subcommand(service(
            "registry",
            "The service registry: Eureka's REST API, changes pushed to watchers at once (REGISTRY_BIND)",
            registry::SETTINGS,
        ))
        .subcommand(service(
            "traces",
            "The trace collector: Zipkin's v2 API on an embedded SQLite store (TRACES_BIND)",
            traces::SETTINGS,
        ))
        .subcommand(service(
            "dashboard",
            "The live dashboard: every circuit and upstream, all replicas together, from their metrics (DASHBOARD_BIND)",
            dashboard::SETTINGS,
        ))
        .subcommand(service(
            "video-storage",
            "FlixTube's storage service: videos with Range and atomic uploads, on a directory, Azure Blob or S3 (VIDEO_STORAGE_BIND)",
            video_storage::SETTINGS,
        ))
        .subcommand(service(
            "video-streaming",
            "FlixTube's streaming service: video pages, a JSON API and streaming with seeking from video-storage (VIDEO_STREAMING_BIND)",
            video_streaming::SETTINGS,
        ))
        .subcommand(service(
            "echo",
            "A tiny backend answering '<hostname>, current time : <millis>' (the seeds' test-web)",
            echo::SETTINGS,
        ))
}

fn main() -> ExitCode {
    // A child of `flotilla up` stops when its supervisor dies, however it dies.
    match stack::child::follow_supervisor() {
        Ok(stack::child::Link::Orphaned) => {
            eprintln!("flotilla: the flotilla up that started this process is gone; stopping");
            return ExitCode::FAILURE;
        }
        Ok(_) => {}
        Err(error) => eprintln!("flotilla: cannot follow the supervisor: {error}"),
    }
    let matches = command().get_matches();
    let (name, sub) = matches.subcommand().expect("a subcommand is required");
    match name {
        "todo-api" => launch(
            name,
            sub,
            todo_api::SETTINGS,
            todo_api::Config::from_source,
            |c| &c.common,
            |_| None,
            |config| async move {
                let listener = platform::bind(config.bind).await?;
                todo_api::run(listener, config, platform::shutdown_signal())
                    .await
                    .map_err(anyhow::Error::from)
            },
        ),
        "echo" => launch(
            name,
            sub,
            echo::SETTINGS,
            echo::Config::from_source,
            |c| &c.common,
            |_| None,
            |config| async move {
                let listener = platform::bind(config.bind).await?;
                echo::run(listener, config, platform::shutdown_signal())
                    .await
                    .map_err(anyhow::Error::from)
            },
        ),
        "registry" => launch(
            name,
            sub,
            registry::SETTINGS,
            registry::Config::from_source,
            |c| &c.common,
            |_| None,
            |config| async move {
                let listener = platform::bind(config.bind).await?;
                registry::run(listener, config, platform::shutdown_signal())
                    .await
                    .map_err(anyhow::Error::from)
            },
        ),
        "traces" => launch(
            name,
            sub,
            traces::SETTINGS,
            traces::Config::from_source,
            |c| &c.common,
            |_| None,
            |config| async move {
                let listener = platform::bind(config.bind).await?;
                traces::run(listener, config, platform::shutdown_signal())
                    .await
                    .map_err(anyhow::Error::from)
            },
        ),
        "dashboard" => launch(
            name,
            sub,
            dashboard::SETTINGS,
            dashboard::Config::from_source,
            |c| &c.common,
            |_| None,
            |config| async move {
                let listener = platform::bind(config.bind).await?;
                dashboard::run(listener, config, platform::shutdown_signal())
                    .await
                    .map_err(anyhow::Error::from)
            },
        ),
        "video-storage" => launch(
            name,
            sub,
            video_storage::SETTINGS,
            video_storage::Config::from_source,
            |c| &c.common,
            |_| None,
            |config| async move {
                let listener = platform::bind(config.bind).await?;
                video_storage::run(listener, config, platform::shutdown_signal())
                    .await
                    .map_err(anyhow::Error::from)
            },
        ),
        "video-streaming" => launch(
            name,
            sub,
            video_streaming::SETTINGS,
            video_streaming::Config::from_source,
            |c| &c.common,
            |_| None,
            |config| async move {
                let listener = platform::bind(config.bind).await?;
                video_streaming::run(listener, config, platform::shutdown_signal())
                    .await
                    .map_err(anyhow::Error::from)
            },
        ),
        "todo-web" => launch(
            name,
            sub,
            todo_web::SETTINGS,
            todo_web::Config::from_source,
            |c| &c.common,
            |_| None,
            |config| async move {
                let listener = platform::bind(config.bind).await?;
                todo_web::run(listener, config, platform::shutdown_signal())
                    .await
                    .map_err(anyhow::Error::from)
            },
        ),
        "gateway" => launch(
            name,
            sub,
            gateway::SETTINGS,
            gateway::Config::from_source,
            |c| &c.common,
            // The gateway serves connections on worker threads of its own (WORKER_PROCESSES);
            // the main thread only accepts them and runs health checks, reloads and the admin
            // listener.
            |_| Some(0),
            |config| async move {
                gateway::run(config, platform::shutdown_signal())
                    .await
                    .map_err(anyhow::Error::from)
            },
        ),
        "up" => launch(
            name,
            sub,
            stack::SETTINGS,
            stack::Config::from_source,
            |c| &c.common,
            |_| None,
            |config| async move {
                stack::run(config, platform::shutdown_signal())
                    .await
                    .map_err(anyhow::Error::from)
            },
        ),
        "ps" | "rollout" => control(name, sub),
        "healthcheck" => healthcheck(sub),
        other => unreachable!("clap accepted an unknown subcommand {other}"),
    }
}

/// `flotilla ps` and `flotilla rollout`: ask the running `flotilla up`.
fn control(name: &str, matches: &ArgMatches) -> ExitCode {
    let mut source = Source::from_env();
    apply_flags(&mut source, matches, &[stack::DATA_DIR]);
    let data_dir =
        match source.parse_or_default(&stack::DATA_DIR, |v| Ok(std::path::PathBuf::from(v))) {
            Ok(dir) => dir,
            Err(error) => {
                eprintln!("flotilla {name}: {error}");
                return ExitCode::from(2);
            }
        };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = runtime.map_err(anyhow::Error::from).and_then(|runtime| {
        runtime.block_on(async {
            if name == "rollout" {
                let service = matches
                    .get_one::<String>("service")
                    .expect("clap requires it");
                stack::rollout(&data_dir, service)
                    .await
                    .map_err(anyhow::Error::from)
            } else {
                stack::ps(&data_dir).await.map_err(anyhow::Error::from)
            }
        })
    });
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("flotilla {name}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `flotilla healthcheck [URL]`: 0 when URL answers 2xx in time, 1 otherwise (with the reason on
/// stderr), 2 for a bad timeout.
fn healthcheck(matches: &ArgMatches) -> ExitCode {
    let source = Source::from_env();
    let url = match matches.get_one::<String>("url") {
        Some(url) => url.clone(),
        None => match source.get(&platform::health::HEALTHCHECK_URL) {
            Ok(Some(found)) => found.value.to_string(),
            Ok(None) => {
                eprintln!("flotilla healthcheck: give a URL, or set HEALTHCHECK_URL");
                return ExitCode::from(2);
            }
            Err(error) => {
                eprintln!("flotilla healthcheck: {error}");
                return ExitCode::from(2);
            }
        },
    };
    let url = &url;
    let timeout = matches.get_one::<String>("timeout").expect("has a default");
    let timeout = match platform::config::parse_duration(timeout) {
        Ok(timeout) => timeout,
        Err(error) => {
            eprintln!("flotilla healthcheck: --timeout: expected {error}, got {timeout:?}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let outcome = match runtime {
        Ok(runtime) => runtime.block_on(platform::health::probe(url, timeout)),
        Err(error) => Err(format!("cannot start the async runtime: {error}")),
    };
    match outcome {
        Ok(status) if status.is_success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("flotilla healthcheck: {url} answered {status}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("flotilla healthcheck: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the service's config from env and flags, sets up logging, and runs it on a runtime with
/// `threads` workers (one per core when `None`; `Some(0)`: on the main thread alone).
/// Exit codes: 0 after a clean shutdown, 2 for bad configuration, 1 for anything else.
fn launch<C, F, Fut>(
    name: &str,
    matches: &ArgMatches,
    settings: &[Setting],
    parse: fn(&Source) -> Result<C, ConfigError>,
    common: fn(&C) -> &CommonConfig,
    threads: fn(&C) -> Option<usize>,
    run: F,
) -> ExitCode
where
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
    C: OneShot,
{
    let mut source = Source::from_env();
    apply_flags(&mut source, matches, settings);
    apply_flags(&mut source, matches, COMMON_SETTINGS);
    // A service registers under its own name unless told otherwise.
    if matches!(source.get(&registration::APP_NAME), Ok(None)) {
        source.set_flag(&registration::APP_NAME, name);
    }
    let config = match parse(&source) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("flotilla {name}: {error}");
            return ExitCode::from(2);
        }
    };
    match config.one_shot() {
        None => {}
        Some(Ok(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Some(Err(error)) => {
            eprintln!("flotilla {name}: {error}");
            return ExitCode::FAILURE;
        }
    }
    let _log = platform::init_logging(&common(&config).log);
    let app = match source.get(&registration::APP_NAME) {
        Ok(Some(app)) => app.value.trim().to_string(),
        _ => name.to_string(),
    };
    // The collector does not trace itself: each batch it stores would make spans to send it.
    let tracing = match name {
        "traces" => platform::otel::TracingConfig {
            exporter: None,
            ..common(&config).tracing.clone()
        },
        _ => common(&config).tracing.clone(),
    };
    let _tracing = match platform::otel::init(&tracing, &app) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("flotilla {name}: {error}");
            return ExitCode::FAILURE;
        }
    };

    let mut runtime = match threads(&config) {
        Some(0) => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            runtime.worker_threads(threads);
            runtime
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("flotilla {name}: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("flotilla {name}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// A job some subcommands do instead of running (`gateway --print-config`,
/// `todo-web --export-assets`): its output, or what went wrong.
trait OneShot {
    fn one_shot(&self) -> Option<Result<String, String>> {
        None
    }
}

impl OneShot for todo_api::Config {}
impl OneShot for echo::Config {}
impl OneShot for video_storage::Config {}
impl OneShot for video_streaming::Config {}
impl OneShot for registry::Config {}
impl OneShot for traces::Config {}
impl OneShot for dashboard::Config {}
impl OneShot for stack::Config {}
impl OneShot for gateway::Config {
    fn one_shot(&self) -> Option<Result<String, String>> {
        if self.reload {
            return Some(
                self.request_reload()
                    .map(|answer| format!("{}\n", answer.trim()))
                    .map_err(|e| e.to_string()),
            );
        }
        self.print_config.then(|| Ok(self.to_toml()))
    }
}
impl OneShot for todo_web::Config {
    fn one_shot(&self) -> Option<Result<String, String>> {
        let dir = self.export_assets.as_ref()?;
        Some(
            todo_web::assets::export(std::path::Path::new(dir))
                .map(|names| names.iter().map(|n| format!("{dir}/{n}\n")).collect())
                .map_err(|e| format!("cannot export assets to {dir}: {e}")),
        )
    }
}
