//! The gateway's configuration file: listeners, routes and upstream pools, in TOML.
//!
//! ```toml
//! [[listener]]
//! bind = "0.0.0.0:${PORT:-8080}"
//!
//! [[route]]
//! path = "/api/"
//! strip_prefix = true
//! upstream = "api"
//!
//! [upstream.api]
//! policy = "least_conn"
//! health_check = { path = "/ready", interval = "1s" }
//! server = [{ address = "127.0.0.1:8081" }, { address = "127.0.0.1:8082", weight = 2 }]
//! ```
//!
//! `${VAR}` and `${VAR:-default}` are replaced before the file is parsed (inside a double-quoted
//! string the value is escaped; `$${` is a literal `${`). Every error names the file, the line and
//! the key. The same structures, built from the seeds' nginx variables instead of a file, are the
//! env mode; `--print-config` prints them back as TOML.
//!
//! This module is the config as data, and its parsing. Checking it and opening the files it names
//! is the load step's (`load`), which both a file and env mode go through.

use std::collections::BTreeMap;

use platform::Source;
use serde::{Deserialize, Serialize};
use toml::Spanned;

mod units;

pub use units::{Dur, Size};

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where the JSON access log goes: `stdout`, `stderr`, `off`, or a file path.
    #[serde(default = "default_access_log")]
    pub access_log: String,
    #[serde(default)]
    pub admin: Admin,
    #[serde(rename = "listener", default)]
    pub listeners: Vec<Listener>,
    #[serde(rename = "route", default)]
    pub routes: Vec<Route>,
    #[serde(rename = "upstream", default)]
    pub upstreams: BTreeMap<String, Upstream>,
    /// The service registry to follow, for `discovery = "registry:APP"` upstreams and
    /// `/{service}/` routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistrySection>,
}

/// `[registry]`: where the registry is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    /// Registry URLs, comma-separated: `http://registry:8761/eureka/`.
    pub url: String,
}

/// The placeholder a route's path may end with (`/api/{service}/`): Zuul's convention, one route
/// per app in the registry, named in lower case, prefix stripped.
pub const SERVICE_PLACEHOLDER: &str = "{service}/";

/// The admin listener: the service contract (`/hc`, `/ready`, `/metrics`), never on the public
/// port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `HOST:PORT`, or `off`.
    #[serde(default = "default_admin_bind")]
    pub bind: String,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            bind: default_admin_bind(),
        }
    }
}

/// One public listening address.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub bind: Spanned<String>,
    /// Open client connections; more wait in the accept queue (nginx's `worker_connections`).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long an idle keep-alive connection stays open; also the time a client has to send a
    /// request head.
    #[serde(default = "default_keepalive")]
    pub keepalive_timeout: Dur,
    /// Longest pause between two reads of a request body before the answer is 408.
    #[serde(default = "default_client_body_timeout")]
    pub client_body_timeout: Dur,
    /// Largest request head; larger ones get 431.
    #[serde(default = "default_max_header_size")]
    pub max_header_size: usize,
    /// Longest wait for a client to take more of a response (between two writes), as nginx's
    /// `send_timeout`; a client that takes nothing for longer is disconnected.
    #[serde(default = "default_send_timeout")]
    pub send_timeout: Dur,
    /// Terminate TLS here, HTTP/2 or HTTP/1.1 by ALPN; the files are read again on reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
}

/// PEM files of a TLS listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// The certificate chain, leaf first.
    pub cert: String,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

/// Which upstream serves a request, by host and path prefix. The longest matching prefix wins; at
/// equal length a route with a host wins over one without.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Label in logs and metrics; defaults to the path prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Host` to match (without port, any case); any host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default = "default_path")]
    pub path: Spanned<String>,
    /// Remove the prefix before forwarding (`/api/todo` -> `/todo` for prefix `/api/`).
    #[serde(default)]
    pub strip_prefix: bool,
    /// Compress answers with brotli, zstd or gzip as the client accepts (see `compress`).
    #[serde(default)]
    pub compress: bool,
    /// Pass TRACE requests on; refused with 405 otherwise (as nginx does).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_trace: bool,
    /// Send the client's `Authorization` header upstream on a route with `basic_auth_file`
    /// (it is removed by default: the credentials were for the gateway).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pass_authorization: bool,
    /// Read the whole request body before a server is chosen (in memory up to the upstream's
    /// `retry_buffer`, then in a temporary file), as nginx's `proxy_request_buffering`: a slow
    /// upload then holds no server connection, and the request can be retried. Bounded by
    /// `max_body_size` when set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub request_buffering: bool,
    /// Ask for a user of this htpasswd file (bcrypt, `{SHA}` or `$apr1$` entries), read when the
    /// config is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth_file: Option<Spanned<String>>,
    /// The realm named in `WWW-Authenticate`.
    #[serde(default = "default_realm")]
    pub basic_auth_realm: String,
    /// Largest request body (`10m`, `512k`, or bytes); larger ones get 413. No limit when absent
    /// (nginx's default is `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_size: Option<Size>,
    /// Requests per client address: at most `per_second` on average, `burst` at once; more get
    /// 429 with `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// The upstream pool to send requests to; or, instead:
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Spanned<String>>,
    /// ...a directory to serve files from (the path after the route's prefix names the file),
    /// opened when the config is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<Spanned<String>>,
    /// `Cache-Control` for files whose names are not content-hashed (those get a year, immutable).
    #[serde(default = "default_cache_control")]
    pub cache_control: String,
}

/// A pool of servers and how requests are spread over it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    #[serde(default)]
    pub policy: Policy,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// How long a server may take to send its response head.
    #[serde(default = "default_response_timeout")]
    pub response_timeout: Dur,
    /// Longest wait between two reads of a response body (nginx's `proxy_read_timeout`), and
    /// the longest a tunnel (a WebSocket) stays open with no byte either way.
    #[serde(default = "default_read_timeout")]
    pub read_timeout: Dur,
    /// How long an idle pooled connection to a server is kept.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
    /// Attempts per request, the first included, each on a different server.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Envoy's `max_requests`: attempts in flight to the pool at once, until their answers'
    /// bodies end; past it a request is refused at once (503) and counted. 0: no limit.
    #[serde(default)]
    pub max_requests: u32,
    /// Envoy's `max_retries`: retries in flight to the pool at once; past it a failed attempt is
    /// not retried, and that is counted. 0: no limit (the retry budget still applies).
    #[serde(default)]
    pub max_retries: u32,
    /// Retries may add at most this fraction of requests (over a 10 s window)...
    #[serde(default = "default_retry_budget")]
    pub retry_budget: f32,
    /// ...plus this many retries per second, so a quiet gateway can still retry.
    #[serde(default = "default_min_retries")]
    pub min_retries_per_second: u32,
    /// Request bodies up to this size are kept so the request can be retried.
    #[serde(default = "default_retry_buffer")]
    pub retry_buffer: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// How often host names in server addresses are looked up again (each address a name
    /// resolves to is a server of its own); `0s` looks them up once, at load.
    #[serde(default = "default_resolve_interval")]
    pub resolve_interval: Dur,
    /// `registry:APP`: the UP instances of APP in the registry are servers of this pool, besides
    /// any listed in `server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Spanned<String>>,
    #[serde(default)]
    pub server: Vec<Server>,
}

impl Default for Upstream {
    /// An upstream with every setting at its default and no servers.
    fn default() -> Self {
        Upstream {
            policy: Policy::default(),
            connect_timeout: default_connect_timeout(),
            response_timeout: default_response_timeout(),
            read_timeout: default_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_attempts: default_max_attempts(),
            max_requests: 0,
            max_retries: 0,
            retry_budget: default_retry_budget(),
            min_retries_per_second: default_min_retries(),
            retry_buffer: default_retry_buffer(),
            health_check: None,
            resolve_interval: default_resolve_interval(),
            discovery: None,
            server: Vec::new(),
        }
    }
}

impl Server {
    /// A server at `address` with nginx's defaults (what discovered instances get).
    pub fn at(address: String) -> Self {
        Server {
            address: Spanned::new(0..0, address),
            weight: default_weight(),
            max_fails: default_max_fails(),
            fail_timeout: default_fail_timeout(),
            max_conns: 0,
            backup: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Smooth weighted round robin, as nginx: the default, fair and predictable.
    #[default]
    RoundRobin,
    /// Fewest requests in flight relative to weight.
    LeastConn,
    /// Power of two choices over a peak-sensitive moving average of latency.
    P2cEwma,
}

/// A request-rate limit per client address (a token bucket, as nginx's `limit_req` with `burst`
/// and `nodelay`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_burst() -> u32 {
    1
}

/// Active health checks: the gateway asks each server itself instead of waiting for requests to
/// fail.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_health_interval")]
    pub interval: Dur,
    #[serde(default = "default_health_timeout")]
    pub timeout: Dur,
    /// Consecutive passes that bring a server back.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that take a server out.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

/// One server of a pool, with nginx's `server` parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// `host:port`.
    pub address: Spanned<String>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Failures within `fail_timeout` that take the server out for `fail_timeout`; 0 disables.
    #[serde(default = "default_max_fails")]
    pub max_fails: u32,
    #[serde(default = "default_fail_timeout")]
    pub fail_timeout: Dur,
    /// Requests in flight to this server at most; 0 is no limit.
    #[serde(default)]
    pub max_conns: u32,
    /// Used only while no other server is available.
    #[serde(default)]
    pub backup: bool,
}

fn default_cache_control() -> String {
    "no-cache".into()
}
fn default_realm() -> String {
    "Restricted".into()
}
fn default_resolve_interval() -> Dur {
    Dur::secs(5)
}
fn default_access_log() -> String {
    "stdout".into()
}
fn default_admin_bind() -> String {
    "127.0.0.1:9901".into()
}
fn default_max_connections() -> usize {
    1024
}
fn default_keepalive() -> Dur {
    Dur::secs(65)
}
fn default_send_timeout() -> Dur {
    Dur::secs(60)
}
fn default_client_body_timeout() -> Dur {
    Dur::secs(60)
}
fn default_max_header_size() -> usize {
    32 * 1024
}
fn default_path() -> Spanned<String> {
    Spanned::new(0..0, "/".into())
}
fn default_connect_timeout() -> Dur {
    Dur::secs(3)
}
fn default_response_timeout() -> Dur {
    Dur::secs(60)
}
fn default_read_timeout() -> Dur {
    Dur::secs(60)
}
fn default_idle_timeout() -> Dur {
    Dur::secs(60)
}
fn default_max_attempts() -> u32 {
    3
}
fn default_retry_budget() -> f32 {
    0.2
}
fn default_min_retries() -> u32 {
    10
}
fn default_retry_buffer() -> usize {
    64 * 1024
}
fn default_health_path() -> String {
    "/hc".into()
}
fn default_health_interval() -> Dur {
    Dur::secs(2)
}
fn default_health_timeout() -> Dur {
    Dur::secs(1)
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}
fn default_weight() -> u32 {
    1
}
fn default_max_fails() -> u32 {
    1
}
fn default_fail_timeout() -> Dur {
    Dur::secs(10)
}

/// Why a config file cannot be used; each names the file and, where it can, the line and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A variable that cannot be expanded, or TOML that does not parse.
    #[error("{at}: {message}")]
    Syntax { at: String, message: String },
    /// A value of the wrong type, a check that failed, a file it names that cannot be opened.
    #[error("{at}: {key}: {message}")]
    Invalid {
        at: String,
        key: String,
        message: String,
    },
}

/// Expands and parses config text, unchecked; `name` names it in errors.
pub fn parse(name: &str, text: &str, env: &Source) -> Result<FileConfig, ConfigFileError> {
    parse_expanded(name, text, env).map(|(config, _)| config)
}

/// [`parse`], with the expanded text (which the spans in the config point into).
pub(crate) fn parse_expanded(
    name: &str,
    text: &str,
    env: &Source,
) -> Result<(FileConfig, String), ConfigFileError> {
    let text = expand_env(text, env).map_err(|(line, message)| ConfigFileError::Syntax {
        at: format!("{name}:{line}"),
        message,
    })?;
    let at = |span| location(name, Some(&text), span);
    let deserializer = toml::Deserializer::parse(&text).map_err(|e| ConfigFileError::Syntax {
        at: at(e.span()),
        message: e.message().trim().to_string(),
    })?;
    let config: FileConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let (at, message) = (at(inner.span()), inner.message().trim().to_string());
        if key == "." {
            ConfigFileError::Syntax { at, message }
        } else {
            ConfigFileError::Invalid { at, key, message }
        }
    })?;
    Ok((config, text))
}

/// `name:line` of `span` in `text`, or `name` alone.
pub(crate) fn location(
    name: &str,
    text: Option<&str>,
    span: Option<std::ops::Range<usize>>,
) -> String {
    match (text, span) {
        (Some(text), Some(span)) => format!("{name}:{}", line_of(text, span.start)),
        _ => name.to_string(),
    }
}

/// Where a `[upstream.NAME]`-style table starts, for errors about a table as a whole.
pub(crate) fn find_table(text: &str, key: &str) -> Option<std::ops::Range<usize>> {
    let table = key.split('.').take(2).collect::<Vec<_>>().join(".");
    text.find(&format!("[{table}]"))
        .or_else(|| text.find(&format!("[[{table}]]")))
        .map(|at| at..at)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Replaces `${VAR}` and `${VAR:-default}`, line by line so line numbers stay right.
fn expand_env(text: &str, env: &Source) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(text.len());
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at..];
            if let Some(literal) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = literal;
                continue;
            }
            let Some(reference) = after.strip_prefix("${") else {
                out.push('$');
                rest = &after[1..];
                continue;
            };
            let end = reference.find('}').ok_or_else(|| {
                (
                    number + 1,
                    "unclosed ${ (write $${ for a literal)".to_string(),
                )
            })?;
            let (name, default) = match reference[..end].split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (&reference[..end], None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err((number + 1, format!("${{{name}}} is not a variable name")));
            }
            let value = env.var(name).or(default).ok_or_else(|| {
                (
                    number + 1,
                    format!("${{{name}}} is not set (give a default as ${{{name}:-value}})"),
                )
            })?;
            if value.contains('\n') {
                return Err((number + 1, format!("${{{name}}} contains a line break")));
            }
            // Inside a basic string the value must stay one string, whatever it contains.
            let in_string = out[out.rfind('\n').map_or(0, |n| n + 1)..]
                .matches('"')
                .count()
                % 2
                == 1;
            if in_string {
                for c in value.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        c => out.push(c),
                    }
                }
            } else {
                out.push_str(value);
            }
            rest = &reference[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn env() -> Source {
        Source::from_pairs([("PORT", "9000"), ("NAME", "a\"b")])
    }

    const MINIMAL: &str = r#"
[[listener]]
bind = "127.0.0.1:${PORT}"

[[route]]
upstream = "web"

[upstream.web]
server = [{ address = "127.0.0.1:${BACKEND_PORT:-8081}" }]
"#;

    #[test]
    fn expands_variables_and_defaults() {
        let config = parse("gw.toml", MINIMAL, &env()).unwrap();
        assert_eq!(config.listeners[0].bind.get_ref(), "127.0.0.1:9000");
        let server = &config.upstreams["web"].server[0];
        assert_eq!(server.address.get_ref(), "127.0.0.1:8081");
        assert_eq!(server.max_fails, 1);
        assert_eq!(config.routes[0].path.get_ref(), "/");
    }

    #[test]
    fn values_with_quotes_stay_inside_their_string() {
        let text = MINIMAL.replace(
            "upstream = \"web\"",
            "name = \"${NAME}\"\nupstream = \"web\"",
        );
        let config = parse("gw.toml", &text, &env()).unwrap();
        assert_eq!(config.routes[0].name.as_deref(), Some("a\"b"));
    }

    #[test]
    fn a_missing_variable_names_the_line() {
        let text = MINIMAL.replace("${PORT}", "${NOPE}");
        let error = parse("gw.toml", &text, &env()).unwrap_err().to_string();
        assert!(
            error.starts_with("gw.toml:3: ${NOPE} is not set"),
            "{error}"
        );
    }

    #[test]
    fn a_bad_value_names_file_line_and_key() {
        let text = MINIMAL.replace("address = \"127", "weight = \"heavy\", address = \"127");
        let error = parse("gw.toml", &text, &env()).unwrap_err().to_string();
        assert!(
            error.starts_with("gw.toml:9: upstream.web.server[0].weight: "),
            "{error}"
        );

        let text = MINIMAL.replace("[upstream.web]", "[upstream.web]\npolicy = \"random\"");
        let error = parse("gw.toml", &text, &env()).unwrap_err().to_string();
        assert!(
            error.starts_with("gw.toml:9: upstream.web.policy: "),
            "{error}"
        );
        assert!(error.contains("round_robin"), "{error}");

        let text = MINIMAL.replace("[upstream.web]", "[upstream.web]\nfail_timeout = \"soon\"");
        let error = parse("gw.toml", &text, &env()).unwrap_err().to_string();
        assert!(
            error.starts_with("gw.toml:9: upstream.web.fail_timeout: "),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_upstream_is_an_error_at_the_route() {
        let text = MINIMAL.replace("upstream = \"web\"", "upstream = \"api\"");
        let error = crate::load::from_text("gw.toml", &text, &env()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "gw.toml:6: route[0].upstream: no upstream named \"api\" (defined: web)"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let error = parse("gw.toml", "[[listener]\nbind = 1\n", &env())
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("gw.toml:1: "), "{error}");
    }

    #[test]
    fn durations_print_back_the_way_they_were_written() {
        assert_eq!(Dur(Duration::from_millis(1500)).to_string(), "1500ms");
        assert_eq!(Dur::secs(10).to_string(), "10s");
    }

    #[test]
    fn sizes_are_written_as_nginx_does() {
        let size =
            |text: &str| toml::from_str::<RateAndSize>(&format!("size = {text}")).map(|r| r.size.0);
        #[derive(Deserialize)]
        struct RateAndSize {
            size: Size,
        }
        assert_eq!(size("512").unwrap(), 512);
        assert_eq!(size("\"1k\"").unwrap(), 1024);
        assert_eq!(size("\"10M\"").unwrap(), 10 << 20);
        assert_eq!(size("\"1g\"").unwrap(), 1 << 30);
        assert!(
            size("\"1x\"")
                .unwrap_err()
                .to_string()
                .contains("a size such as")
        );
        assert!(size("\"k\"").is_err());
        assert_eq!(Size(10 << 20).to_string(), "10m");
        assert_eq!(Size(1000).to_string(), "1000");
    }
}
