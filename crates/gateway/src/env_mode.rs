//! The gateway's settings, and the seeds' env contract: without a config file, the variables of
//! the todonginx image build the equivalent of its `public.conf` (one listener, `location /`
//! proxying to `upstream backend { server $BACKEND_HOST max_fails=... fail_timeout=...; }`).

use std::collections::BTreeMap;

use platform::config::{parse_bind, parse_count, parse_duration};
use platform::{ConfigError, Setting, Source};
use toml::Spanned;

use crate::config::{
    self, ConfigFileError, Dur, FileConfig, Listener, Policy, Route, Server, Upstream,
};
use crate::load::{self, Loaded};

pub const CONFIG: Setting = Setting::new(
    "GATEWAY_CONFIG",
    "config",
    "FILE",
    "TOML config file; without one, the nginx variables below configure the gateway",
);

pub const PRINT_CONFIG: Setting = Setting::new(
    "GATEWAY_PRINT_CONFIG",
    "print-config",
    "",
    "print the effective config as TOML and exit",
)
.switch();

pub const RELOAD: Setting = Setting::new(
    "GATEWAY_RELOAD",
    "reload",
    "",
    "ask the running gateway (through its admin listener) to read its config again, and exit",
)
.switch();

pub const BIND: Setting = Setting::new(
    "GATEWAY_BIND",
    "bind",
    "HOST:PORT",
    "address to listen on (default 0.0.0.0:SERVER_PORT; replaces a config file's first listener)",
);

pub const ADMIN_BIND: Setting = Setting::new(
    "GATEWAY_ADMIN_BIND",
    "admin-bind",
    "HOST:PORT|off",
    "admin listener for /hc, /ready, /metrics (default 127.0.0.1:9901)",
);

pub const WORKER_PROCESSES: Setting = Setting::new(
    "WORKER_PROCESSES",
    "worker-processes",
    "N|auto",
    "worker threads (nginx's worker processes)",
)
.default("auto");

pub const SERVER_PORT: Setting =
    Setting::new("SERVER_PORT", "server-port", "PORT", "port to listen on").default("80");

pub const LOG_STDOUT: Setting = Setting::new(
    "LOG_STDOUT",
    "log-stdout",
    "ANY",
    "any value: the access log goes to stdout (as the seeds' nginx); unset: to GATEWAY_ACCESS_LOG",
)
.env_only();

pub const ACCESS_LOG: Setting = Setting::new(
    "GATEWAY_ACCESS_LOG",
    "access-log",
    "PATH|stdout|stderr|off",
    "where the access log goes in env mode when LOG_STDOUT is unset",
)
.default("access.log");

pub const GZIP: Setting = Setting::new(
    "GZIP",
    "gzip",
    "on|off",
    "compress answers (brotli, zstd or gzip, as the client accepts), as nginx's gzip",
)
.default("on");

pub const SERVER_NAME: Setting = Setting::new(
    "SERVER_NAME",
    "server-name",
    "NAME",
    "server name (informational: every host is served)",
)
.default("localhost");

pub const BACKEND_HOST: Setting = Setting::new(
    "BACKEND_HOST",
    "backend-host",
    "HOST:PORT[,...]",
    "upstream server(s), comma-separated; required without a config file",
);

pub const BACKEND_MAX_FAILS: Setting = Setting::new(
    "BACKEND_MAX_FAILS",
    "backend-max-fails",
    "N",
    "failures within the fail timeout that take a server out (0: never)",
)
.default("3");

pub const BACKEND_FAIL_TIMEOUT: Setting = Setting::new(
    "BACKEND_FAIL_TIMEOUT",
    "backend-fail-timeout",
    "DURATION",
    "window for counting failures, and how long a failed server stays out",
)
.default("10s");

pub const BACKEND_POLICY: Setting = Setting::new(
    "BACKEND_POLICY",
    "backend-policy",
    "POLICY",
    "round_robin, least_conn or p2c_ewma",
)
.default("round_robin");

pub const BACKEND_HEALTH_PATH: Setting = Setting::new(
    "BACKEND_HEALTH_PATH",
    "backend-health-path",
    "PATH",
    "path for active health checks of each backend every 2s (off when unset)",
);

pub const KEEPALIVE_TIMEOUT: Setting = Setting::new(
    "KEEPALIVE_TIMEOUT",
    "keepalive-timeout",
    "DURATION",
    "how long an idle client connection stays open",
)
.default("65");

pub const WORKER_CONNECTIONS: Setting = Setting::new(
    "WORKER_CONNECTIONS",
    "worker-connections",
    "N",
    "open client connections at most; more wait in the accept queue",
)
.default("1024");

pub const BASIC_AUTH_FILE: Setting = Setting::new(
    "BASIC_AUTH_FILE",
    "",
    "",
    "htpasswd file (bcrypt, {SHA} or $apr1$ entries): every request needs one of its users, realm \"Restricted\"",
)
.env_only();

/// Every setting of the gateway, for its flags and help.
pub const SETTINGS: &[Setting] = &[
    CONFIG,
    PRINT_CONFIG,
    RELOAD,
    BIND,
    ADMIN_BIND,
    WORKER_PROCESSES,
    SERVER_PORT,
    LOG_STDOUT,
    ACCESS_LOG,
    GZIP,
    SERVER_NAME,
    BACKEND_HOST,
    BACKEND_MAX_FAILS,
    BACKEND_FAIL_TIMEOUT,
    BACKEND_POLICY,
    BACKEND_HEALTH_PATH,
    KEEPALIVE_TIMEOUT,
    WORKER_CONNECTIONS,
    BASIC_AUTH_FILE,
];

/// The config to run: the file `GATEWAY_CONFIG` names, or one built from the nginx variables,
/// through the load step either way. `GATEWAY_BIND` and `GATEWAY_ADMIN_BIND` override both.
pub(crate) fn load(source: &Source) -> Result<Loaded, ConfigError> {
    let (mut file, origin, text) = match source.parse(&CONFIG, |v| Ok(v.to_string()))? {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::Other(format!("{path}: cannot read: {e}")))?;
            let (file, expanded) = config::parse_expanded(&path, &text, source)
                .map_err(|e| ConfigError::Other(e.to_string()))?;
            (file, path, Some(expanded))
        }
        None => (
            from_nginx_variables(source)?,
            "environment".to_string(),
            None,
        ),
    };
    // The registry a file names wins; else the one every service is given.
    if file.registry.is_none()
        && let Some(url) =
            source.parse(&platform::registration::REGISTRY_URL, |v| Ok(v.to_string()))?
    {
        file.registry = Some(config::RegistrySection { url });
    }
    if let Some(bind) = source.parse(&BIND, |v| parse_bind(v).map(|_| v.to_string()))? {
        match file.listeners.first_mut() {
            Some(listener) => listener.bind = Spanned::new(0..0, bind),
            None => {
                let listener: Listener = toml::from_str(&format!("bind = {bind:?}"))
                    .expect("a listener needs only its address");
                file.listeners.push(listener);
            }
        }
    }
    if let Some(admin) = source.parse(&ADMIN_BIND, |v| {
        if v == "off" {
            Ok(v.to_string())
        } else {
            parse_bind(v).map(|_| v.to_string())
        }
    })? {
        file.admin.bind = admin;
    }
    let loaded = match text {
        Some(text) => load::checked(file, &origin, &text),
        None => load::from_config(file, &origin),
    };
    loaded.map_err(|error| match error {
        // In env mode, the file came from a variable: name it.
        ConfigFileError::Invalid { key, message, .. }
            if text_less(&origin) && key == "route[0].basic_auth_file" =>
        {
            ConfigError::Other(format!("{}: {message}", BASIC_AUTH_FILE.env))
        }
        error => ConfigError::Other(error.to_string()),
    })
}

/// Whether a config of this origin was built from the variables rather than read from a file.
fn text_less(origin: &str) -> bool {
    origin == "environment"
}

/// Worker threads: a number, or `auto` for one per core.
pub(crate) fn worker_threads(source: &Source) -> Result<Option<usize>, ConfigError> {
    source.parse_or_default(&WORKER_PROCESSES, |v| {
        if v == "auto" {
            Ok(None)
        } else {
            parse_count(v, 1024)
                .map(|n| Some(n as usize))
                .map_err(|e| format!("auto or {e}"))
        }
    })
}

fn from_nginx_variables(source: &Source) -> Result<FileConfig, ConfigError> {
    let port = source.parse_or_default(&SERVER_PORT, |v| {
        v.parse::<u16>().map_err(|_| "a port number".to_string())
    })?;
    let max_fails = source.parse_or_default(&BACKEND_MAX_FAILS, |v| {
        v.parse::<u32>().map_err(|_| "a whole number".to_string())
    })?;
    let fail_timeout = source.parse_or_default(&BACKEND_FAIL_TIMEOUT, parse_duration)?;
    let policy = source.parse_or_default(&BACKEND_POLICY, |v| {
        toml::Value::String(v.to_string())
            .try_into::<Policy>()
            .map_err(|_| "round_robin, least_conn or p2c_ewma".to_string())
    })?;
    let keepalive = source.parse_or_default(&KEEPALIVE_TIMEOUT, parse_duration)?;
    // Opened by the load step, which names the variable if it cannot be read.
    let basic_auth_file = source.parse(&BASIC_AUTH_FILE, |v| Ok(v.to_string()))?;
    let compress = source.parse_or_default(&GZIP, |v| {
        platform::config::parse_bool(v).map_err(|_| "on or off".to_string())
    })?;
    let connections = source.parse_or_default(&WORKER_CONNECTIONS, |v| parse_count(v, 1 << 20))?;
    let health_path = source.parse(&BACKEND_HEALTH_PATH, |v| {
        if v.starts_with('/') {
            Ok(v.to_string())
        } else {
            Err("a path starting with /".to_string())
        }
    })?;
    let backends = source.require(&BACKEND_HOST, |v| {
        let hosts: Vec<String> = v
            .split(',')
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .collect();
        for host in &hosts {
            crate::validate::parse_authority(host)?;
        }
        if hosts.is_empty() {
            Err("host:port".to_string())
        } else {
            Ok(hosts)
        }
    })?;

    let defaults: Upstream = toml::from_str("").expect("every upstream field has a default");
    let server = backends
        .into_iter()
        .map(|address| Server {
            address: Spanned::new(0..0, address),
            weight: 1,
            max_fails,
            fail_timeout: Dur(fail_timeout),
            max_conns: 0,
            backup: false,
        })
        .collect();
    let health_check = health_path.map(|path| {
        let mut check: config::HealthCheck = toml::from_str("").expect("defaults");
        check.path = path;
        check
    });
    let listener: Listener = toml::from_str(&format!("bind = \"0.0.0.0:{port}\""))
        .expect("a listener needs only its address");
    let access_log = if source.get(&LOG_STDOUT)?.is_some() {
        "stdout".to_string()
    } else {
        source.parse_or_default(&ACCESS_LOG, |v| Ok(v.to_string()))?
    };
    Ok(FileConfig {
        access_log,
        admin: config::Admin::default(),
        listeners: vec![Listener {
            keepalive_timeout: Dur(keepalive),
            max_connections: connections as usize,
            ..listener
        }],
        routes: vec![Route {
            name: None,
            host: None,
            path: Spanned::new(0..0, "/".into()),
            strip_prefix: false,
            compress,
            allow_trace: false,
            pass_authorization: false,
            request_buffering: false,
            basic_auth_file: basic_auth_file.map(|path| Spanned::new(0..0, path)),
            basic_auth_realm: "Restricted".into(),
            max_body_size: None,
            rate_limit: None,
            upstream: Some(Spanned::new(0..0, "backend".into())),
            root: None,
            cache_control: "no-cache".into(),
        }],
        upstreams: BTreeMap::from([(
            "backend".to_string(),
            Upstream {
                policy,
                health_check,
                server,
                ..defaults
            },
        )]),
        registry: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_variables_build_public_conf() {
        let source = Source::from_pairs([
            ("BACKEND_HOST", "api:8080"),
            ("SERVER_PORT", "8000"),
            ("BACKEND_FAIL_TIMEOUT", "2s"),
        ]);
        let loaded = load(&source).unwrap();
        assert_eq!(loaded.origin, "environment");
        let config = loaded.file;
        assert_eq!(config.listeners[0].bind.get_ref(), "0.0.0.0:8000");
        assert_eq!(config.listeners[0].max_connections, 1024);
        assert_eq!(config.listeners[0].keepalive_timeout, Dur::secs(65));
        let backend = &config.upstreams["backend"];
        assert_eq!(backend.server[0].address.get_ref(), "api:8080");
        assert_eq!(backend.server[0].max_fails, 3);
        assert_eq!(backend.server[0].fail_timeout, Dur::secs(2));
        assert!(backend.health_check.is_none());
        assert!(
            config.routes[0].compress,
            "GZIP defaults to on, as in the seeds"
        );
    }

    #[test]
    fn gzip_turns_compression_on_and_off() {
        let with = |gzip: &str| {
            let source = Source::from_pairs([("BACKEND_HOST", "api:8080"), ("GZIP", gzip)]);
            load(&source).map(|loaded| loaded.file.routes[0].compress)
        };
        assert!(with("on").unwrap());
        assert!(!with("off").unwrap());
        let error = with("maybe").unwrap_err().to_string();
        assert!(
            error.contains("GZIP") && error.contains("on or off"),
            "{error}"
        );
    }

    #[test]
    fn backend_host_is_required_and_checked() {
        let error = load(&Source::default()).unwrap_err().to_string();
        assert!(error.starts_with("BACKEND_HOST is required"), "{error}");
        let source = Source::from_pairs([("BACKEND_HOST", "api")]);
        let error = load(&source).unwrap_err().to_string();
        assert!(
            error.contains("BACKEND_HOST") && error.contains("host:port"),
            "{error}"
        );
    }

    #[test]
    fn several_backends_and_a_bind_override() {
        let source = Source::from_pairs([
            ("BACKEND_HOST", "a:1, b:2"),
            ("GATEWAY_BIND", "127.0.0.1:7000"),
            ("GATEWAY_ADMIN_BIND", "off"),
        ]);
        let config = load(&source).unwrap().file;
        assert_eq!(config.upstreams["backend"].server.len(), 2);
        assert_eq!(config.listeners[0].bind.get_ref(), "127.0.0.1:7000");
        assert_eq!(config.admin.bind, "off");
    }

    #[test]
    fn basic_auth_file_protects_the_route_and_a_bad_file_stops_startup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, "carol:{SHA}l5/jO3DHu6SJl12UvUCHRgci/IU=\n").unwrap();
        let path = path.to_str().unwrap();
        let source = Source::from_pairs([("BACKEND_HOST", "a:1"), ("BASIC_AUTH_FILE", path)]);
        let loaded = load(&source).unwrap();
        assert!(loaded.opened[0].users.is_some());
        assert_eq!(loaded.file.routes[0].basic_auth_realm, "Restricted");
        let source = Source::from_pairs([("BACKEND_HOST", "a:1"), ("BASIC_AUTH_FILE", "/x")]);
        let error = load(&source).unwrap_err().to_string();
        assert!(
            error.starts_with("BASIC_AUTH_FILE: /x: cannot read"),
            "{error}"
        );
    }
}
