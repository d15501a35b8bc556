//! Turns a service's [`Setting`] table into clap flags, and the parsed flags back into a [`Source`].
//!
//! The binary builds each subcommand from the same table the service parses, so a flag, its env
//! var, its default and its help line can never drift apart.

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::config::{Setting, Source};
use crate::registration;

/// `LOG_FORMAT`: readable text, or one JSON object per line.
pub const LOG_FORMAT: Setting = Setting::new(
    "LOG_FORMAT",
    "log-format",
    "text|json",
    "log format: readable text, or one JSON object per line",
)
.default("text");

/// `LOG_LEVEL`: the log filter.
pub const LOG_LEVEL: Setting = Setting::new(
    "LOG_LEVEL",
    "log-level",
    "FILTER",
    "log filter: error, warn, info, debug, trace, or per-module directives",
)
.default("info");

/// `FLOTILLA_DRAIN_TIMEOUT`: how long in-flight requests may take once shutdown begins.
pub const DRAIN_TIMEOUT: Setting = Setting::new(
    "FLOTILLA_DRAIN_TIMEOUT",
    "drain-timeout",
    "DURATION",
    "on SIGTERM/SIGINT, how long in-flight requests may take to finish",
)
.default("10s");

/// `FLOTILLA_SHUTDOWN_DELAY`: how long to keep serving, unready, before draining.
pub const SHUTDOWN_DELAY: Setting = Setting::new(
    "FLOTILLA_SHUTDOWN_DELAY",
    "shutdown-delay",
    "DURATION",
    "on SIGTERM/SIGINT, how long to keep serving while /ready says 503, before draining",
)
.default("0s");

/// `FLOTILLA_CALLS_FILE`: per-target settings of calls to other services, in TOML.
pub const CALLS_FILE: Setting = Setting::new(
    "FLOTILLA_CALLS_FILE",
    "calls-file",
    "FILE",
    "TOML file of settings for calls to other services ([defaults], [targets.NAME]); see docs/resilience.md",
);

/// Settings every service has, provided by the platform.
pub const COMMON_SETTINGS: &[Setting] = &[
    LOG_FORMAT,
    LOG_LEVEL,
    DRAIN_TIMEOUT,
    SHUTDOWN_DELAY,
    registration::REGISTRY_URL,
    registration::APP_NAME,
    registration::ADVERTISE_NETWORK,
    registration::ADVERTISE_ADDR,
    registration::RENEWAL,
    crate::otel::TRACES_URL,
    crate::otel::OTLP_ENDPOINT,
    crate::otel::SERVICE_NAME,
    crate::otel::SAMPLER,
    crate::otel::SAMPLER_ARG,
    crate::otel::QUEUE_SIZE,
    CALLS_FILE,
];

/// Adds one flag per setting that has one, with the env var and default in its help.
pub fn with_settings(mut command: Command, settings: &[Setting]) -> Command {
    for setting in settings {
        let Some(flag) = setting.flag else { continue };
        let mut help = format!("{} [env: {}", setting.help, setting.env);
        for alias in setting.aliases {
            help.push_str(", ");
            help.push_str(alias);
        }
        help.push(']');
        if let Some(default) = setting.default {
            help.push_str(&format!(" [default: {default}]"));
        }
        let arg = Arg::new(setting.env).long(flag).help(help);
        command = command.arg(if setting.switch {
            arg.action(ArgAction::SetTrue)
        } else {
            arg.value_name(setting.value_name).action(ArgAction::Set)
        });
    }
    command
}

/// Overlays the flags a user gave onto `source`.
pub fn apply_flags(source: &mut Source, matches: &ArgMatches, settings: &[Setting]) {
    for setting in settings.iter().filter(|s| s.flag.is_some()) {
        if setting.switch {
            if matches.get_flag(setting.env) {
                source.set_flag(setting, "1");
            }
        } else if let Some(value) = matches.get_one::<String>(setting.env) {
            source.set_flag(setting, value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: &[Setting] = &[
        Setting::bind("X_BIND", "0.0.0.0:1"),
        Setting::new("X_SEED", "seed", "", "fill the table").switch(),
        Setting::new("X_SECRET", "", "", "env only").env_only(),
    ];

    #[test]
    fn flags_round_trip_into_the_source() {
        let command = with_settings(Command::new("x"), SETTINGS);
        let matches = command
            .try_get_matches_from(["x", "--bind", ":7", "--seed"])
            .unwrap();
        let mut source = Source::from_pairs([("X_BIND", ":6")]);
        apply_flags(&mut source, &matches, SETTINGS);
        assert_eq!(source.get(&SETTINGS[0]).unwrap().unwrap().value, ":7");
        assert!(source.switch(&SETTINGS[1]).unwrap());
    }

    #[test]
    fn help_names_the_env_var_and_default() {
        let mut command = with_settings(Command::new("x"), SETTINGS);
        let help = command.render_help().to_string();
        assert!(help.contains("--bind <HOST:PORT>"), "{help}");
        assert!(help.contains("[env: X_BIND]"), "{help}");
        assert!(help.contains("[default: 0.0.0.0:1]"), "{help}");
        assert!(!help.contains("X_SECRET"), "{help}");
    }
}
