//! `flotilla`: one binary, one subcommand per service. This file only parses the command line and
//! hands each subcommand to its crate's `run`.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{ArgMatches, Command};
use platform::cli::{COMMON_SETTINGS, apply_flags, with_settings};
use platform::{CommonConfig, ConfigError, Setting, Source};
use tokio::net::TcpListener;

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
            "echo",
            "A tiny backend answering '<hostname>, current time : <millis>' (the seeds' test-web)",
            echo::SETTINGS,
        ))
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    let (name, sub) = matches.subcommand().expect("a subcommand is required");
    match name {
        "todo-api" => launch(
            name,
            sub,
            todo_api::SETTINGS,
            todo_api::Config::from_source,
            |c| (c.bind, &c.common),
            |listener, config| async move {
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
            |c| (c.bind, &c.common),
            |listener, config| async move {
                echo::run(listener, config, platform::shutdown_signal())
                    .await
                    .map_err(anyhow::Error::from)
            },
        ),
        other => unreachable!("clap accepted an unknown subcommand {other}"),
    }
}

/// Reads the service's config from env and flags, sets up logging, binds, and runs it.
/// Exit codes: 0 after a clean shutdown, 2 for bad configuration, 1 for anything else.
fn launch<C, F, Fut>(
    name: &str,
    matches: &ArgMatches,
    settings: &[Setting],
    parse: fn(&Source) -> Result<C, ConfigError>,
    bind_and_common: fn(&C) -> (SocketAddr, &CommonConfig),
    run: F,
) -> ExitCode
where
    F: FnOnce(TcpListener, C) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut source = Source::from_env();
    apply_flags(&mut source, matches, settings);
    apply_flags(&mut source, matches, COMMON_SETTINGS);
    let config = match parse(&source) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("flotilla {name}: {error}");
            return ExitCode::from(2);
        }
    };
    let (bind, common) = bind_and_common(&config);
    let _log = platform::init_logging(&common.log);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("flotilla {name}: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listener = platform::bind(bind).await?;
        run(listener, config).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("flotilla {name}: {error:#}");
            ExitCode::FAILURE
        }
    }
}
