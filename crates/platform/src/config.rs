//! Configuration from environment variables and command-line flags.
//!
//! A service declares its settings once, as a table of [`Setting`]s: the environment variable
//! (the seeds' name where one exists), any older aliases, the flag, the default and a help line.
//! The binary turns that table into clap flags (the `cli` module); values given as flags override the
//! environment. Both end up in one [`Source`], which a service parses into its typed `Config`.
//! Tests build a `Source` from a map and never touch the process environment.
//!
//! Every parse error names where the bad value came from (`TODO_BIND`, or `--bind`) and what was
//! expected, in one line.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// One configurable value of a service.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The environment variable, also the key in [`Source`].
    pub env: &'static str,
    /// Other environment variables accepted for the same value (older names from the seeds).
    pub aliases: &'static [&'static str],
    /// The long flag, without dashes; `None` for env-only settings.
    pub flag: Option<&'static str>,
    /// Placeholder shown in `--help`, such as `HOST:PORT`.
    pub value_name: &'static str,
    /// The default as documented; `None` when the setting is optional or required.
    pub default: Option<&'static str>,
    /// One line for `--help` and the README.
    pub help: &'static str,
    /// A switch flag takes no value; giving it sets the variable to `1`.
    pub switch: bool,
}

impl Setting {
    /// A setting with a value, an env var and a flag of the same meaning.
    pub const fn new(
        env: &'static str,
        flag: &'static str,
        value_name: &'static str,
        help: &'static str,
    ) -> Self {
        Setting {
            env,
            aliases: &[],
            flag: Some(flag),
            value_name,
            default: None,
            help,
            switch: false,
        }
    }

    /// The `--bind HOST:PORT` setting every service has, under the service's own env var.
    pub const fn bind(env: &'static str, default: &'static str) -> Self {
        Setting::new(env, "bind", "HOST:PORT", "address to listen on").default(default)
    }

    pub const fn default(mut self, default: &'static str) -> Self {
        self.default = Some(default);
        self
    }

    pub const fn aliases(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }

    pub const fn switch(mut self) -> Self {
        self.switch = true;
        self
    }

    pub const fn env_only(mut self) -> Self {
        self.flag = None;
        self
    }
}

/// A bad configuration value, reported as one line naming its origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {origin}={value:?}: expected {expected}")]
    Invalid {
        origin: String,
        value: String,
        expected: String,
    },
    #[error("{origin} is required: {help}")]
    Missing { origin: String, help: String },
    #[error("{first} and {second} are both set, to different values; set only one")]
    Conflict { first: String, second: String },
    /// A problem found elsewhere than in one variable, such as in a config file, already worded
    /// as one line that says where.
    #[error("{0}")]
    Other(String),
}

/// Where configuration values come from: command-line flags first, then environment variables.
/// Empty values count as unset, as with the seeds' nginx templates (`LOG_STDOUT=`).
///
/// Any setting `NAME` may instead be given as `NAME_FILE`, the path of a file holding the value
/// (how Docker secrets reach a process: `/run/secrets/...`). One trailing newline is dropped.
/// Values from files are never repeated in error messages.
#[derive(Debug, Clone, Default)]
pub struct Source {
    env: HashMap<String, String>,
    /// For each `NAME_FILE` variable: `NAME` -> (`NAME_FILE`, the file's contents or why not).
    files: HashMap<String, (String, Result<String, String>)>,
    flags: HashMap<&'static str, String>,
}

/// A value together with the name it was found under, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found<'a> {
    pub origin: &'a str,
    pub value: &'a str,
}

impl Found<'_> {
    /// The value as error messages may show it: not at all when it came from a file.
    fn shown(&self) -> String {
        if self.origin.ends_with(FILE_SUFFIX) {
            "(the file's contents)".to_string()
        } else {
            self.value.to_string()
        }
    }
}

const FILE_SUFFIX: &str = "_FILE";

/// The value in a `NAME_FILE` file: its text without one trailing newline. Values are short
/// (passwords, URLs); a file over 64 KiB is refused rather than read.
fn read_value_file(variable: &str, path: &str) -> Result<String, String> {
    use std::io::Read;
    const LIMIT: u64 = 64 * 1024;
    let cannot = |e: &dyn std::fmt::Display| format!("{variable}={path:?}: cannot read: {e}");
    let mut value = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(LIMIT + 1).read_to_string(&mut value))
        .map_err(|e| cannot(&e))?;
    if value.len() as u64 > LIMIT {
        return Err(cannot(&"larger than 64 KiB"));
    }
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

impl Source {
    /// The process environment.
    pub fn from_env() -> Self {
        Self::from_pairs(std::env::vars())
    }

    /// A fixed set of variables, for tests and for children started by `flotilla up`.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let env: HashMap<String, String> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let files = env
            .iter()
            .filter(|(_, path)| !path.is_empty())
            .filter_map(|(variable, path)| {
                let name = variable.strip_suffix(FILE_SUFFIX)?;
                Some((
                    name.to_string(),
                    (variable.clone(), read_value_file(variable, path)),
                ))
            })
            .collect();
        Source {
            env,
            files,
            flags: HashMap::new(),
        }
    }

    /// The raw value of an environment variable (empty counts as unset), for values that are not
    /// settings, such as `${VAR}` references in a config file.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Environment variables whose names start with `prefix` (empty values left out), for
    /// settings whose names are made from other names (`FLOTILLA_CALL_<TARGET>_<KEY>`).
    pub fn vars_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.env
            .iter()
            .filter(move |(name, value)| name.starts_with(prefix) && !value.is_empty())
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// Records a value given on the command line; it wins over the environment.
    pub fn set_flag(&mut self, setting: &Setting, value: impl Into<String>) {
        self.flags.insert(setting.env, value.into());
    }

    /// The raw value of a setting. A flag wins; otherwise the primary env var and its aliases must
    /// not disagree.
    pub fn get(&self, setting: &Setting) -> Result<Option<Found<'_>>, ConfigError> {
        if let Some(value) = self.flags.get(setting.env) {
            return Ok(Some(Found {
                origin: setting.flag.unwrap_or(setting.env),
                value,
            }));
        }
        let mut found: Option<Found<'_>> = None;
        for name in std::iter::once(&setting.env).chain(setting.aliases) {
            if let Some((variable, read)) = self.files.get(*name) {
                let value = read.as_deref().map_err(|e| ConfigError::Other(e.clone()))?;
                if let Some(first) = found.or_else(|| {
                    self.var(name).map(|value| Found {
                        origin: name,
                        value,
                    })
                }) {
                    return Err(ConfigError::Conflict {
                        first: first.origin.to_string(),
                        second: variable.clone(),
                    });
                }
                found = Some(Found {
                    origin: variable,
                    value,
                });
                continue;
            }
            let Some(value) = self.env.get(*name).filter(|v| !v.is_empty()) else {
                continue;
            };
            match found {
                Some(first) if first.value != value => {
                    return Err(ConfigError::Conflict {
                        first: first.origin.to_string(),
                        second: (*name).to_string(),
                    });
                }
                Some(_) => {}
                None => {
                    found = Some(Found {
                        origin: name,
                        value,
                    })
                }
            }
        }
        Ok(found)
    }

    /// Parses a setting with `parse`, which returns what it expected on failure.
    pub fn parse<T>(
        &self,
        setting: &Setting,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(found) = self.get(setting)? else {
            return Ok(None);
        };
        parse(found.value)
            .map(Some)
            .map_err(|expected| ConfigError::Invalid {
                origin: origin_label(setting, found.origin),
                value: found.shown(),
                expected,
            })
    }

    /// Parses a setting, falling back to its documented default.
    pub fn parse_or_default<T>(
        &self,
        setting: &Setting,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        if let Some(value) = self.parse(setting, &parse)? {
            return Ok(value);
        }
        let default = setting
            .default
            .unwrap_or_else(|| panic!("setting {} has no default", setting.env));
        Ok(parse(default).unwrap_or_else(|e| panic!("default of {} is invalid: {e}", setting.env)))
    }

    /// A setting that must be present.
    pub fn require<T>(
        &self,
        setting: &Setting,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        self.parse(setting, parse)?
            .ok_or_else(|| ConfigError::Missing {
                origin: setting.env.to_string(),
                help: setting.help.to_string(),
            })
    }

    /// Whether a switch is on (`1`, `true`, `yes`, `on`); an unrecognised value is an error.
    pub fn switch(&self, setting: &Setting) -> Result<bool, ConfigError> {
        Ok(self.parse(setting, parse_bool)?.unwrap_or(false))
    }
}

/// `--bind` rather than `bind` when the value came from a flag.
fn origin_label(setting: &Setting, origin: &str) -> String {
    if setting.flag == Some(origin) && !setting.env.eq_ignore_ascii_case(origin) {
        format!("--{origin}")
    } else {
        origin.to_string()
    }
}

/// `HOST:PORT`, `:PORT` (Go's form, as in the seeds' `TODO_BIND=:8080`) or `localhost:PORT`.
pub fn parse_bind(value: &str) -> Result<SocketAddr, String> {
    let expected = || "HOST:PORT, such as 0.0.0.0:8080 or :8080".to_string();
    if let Some(port) = value.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| expected())?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = value.rsplit_once(':').ok_or_else(expected)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(expected());
    }
    (host, port.parse::<u16>().unwrap_or_default())
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("{} (host {host:?} does not resolve)", expected()))
}

/// nginx-style durations: `10s`, `500ms`, `2m`, `1h`; a bare number means seconds.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let expected = || "a duration such as 10s, 500ms or 2m".to_string();
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number.parse().map_err(|_| expected())?;
    let millis = match unit {
        "" | "s" => number.checked_mul(1_000),
        "ms" => Some(number),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        _ => None,
    };
    millis.map(Duration::from_millis).ok_or_else(expected)
}

pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("one of 1/0, true/false, yes/no, on/off".to_string()),
    }
}

/// A positive integer no larger than `max`.
pub fn parse_count(value: &str, max: u64) -> Result<u64, String> {
    match value.trim().parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("a whole number from 1 to {max}")),
    }
}

/// The seeds' Node services' `PORT`: listen on all interfaces on this port.
pub const SEED_PORT: Setting = Setting::new(
    "PORT",
    "port",
    "PORT",
    "the seed's port setting: 0.0.0.0:PORT, unless the service's own bind setting is given",
)
.env_only();

/// Where to listen: `bind` when given, else the seeds' `PORT` on all interfaces, else `bind`'s
/// default.
pub fn bind_or_seed_port(source: &Source, bind: &Setting) -> Result<SocketAddr, ConfigError> {
    if source.get(bind)?.is_none()
        && let Some(port) = source.parse(&SEED_PORT, |v| {
            v.trim()
                .parse::<u16>()
                .map(|port| SocketAddr::from(([0, 0, 0, 0], port)))
                .map_err(|_| "a port number from 0 to 65535".to_string())
        })?
    {
        return Ok(port);
    }
    source.parse_or_default(bind, parse_bind)
}

/// A size in bytes: `4G`, `500M`, `64k` (powers of 1024) or plain bytes; more than zero.
pub fn parse_size(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let (digits, unit) = match value.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&value[..i], c.to_ascii_lowercase()),
        _ => (value, 'b'),
    };
    let scale: u64 = match unit {
        'b' => 1,
        'k' => 1 << 10,
        'm' => 1 << 20,
        'g' => 1 << 30,
        't' => 1 << 40,
        _ => return Err("a size such as 4G, 500M or 1048576".into()),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|n| *n > 0)
        .ok_or_else(|| "a size such as 4G, 500M or 1048576".into())
}

impl fmt::Display for Found<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.origin, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIND: Setting = Setting::bind("TODO_BIND", "0.0.0.0:8080");
    const PRIMARY: Setting =
        Setting::new("TODO_PRIMARY_URL", "primary-url", "URL", "primary database")
            .aliases(&["TODO_MASTER_URL"]);

    #[test]
    fn flag_wins_over_env_and_errors_name_the_flag() {
        let mut source = Source::from_pairs([("TODO_BIND", ":9000")]);
        assert_eq!(
            source.parse_or_default(&BIND, parse_bind).unwrap().port(),
            9000
        );
        source.set_flag(&BIND, "nonsense");
        let err = source.parse_or_default(&BIND, parse_bind).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid --bind=\"nonsense\": expected HOST:PORT, such as 0.0.0.0:8080 or :8080"
        );
    }

    #[test]
    fn env_errors_name_the_variable() {
        let source = Source::from_pairs([("TODO_BIND", "8080")]);
        let err = source.parse_or_default(&BIND, parse_bind).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid TODO_BIND=\"8080\""),
            "{err}"
        );
    }

    #[test]
    fn unset_and_empty_use_the_default() {
        for source in [Source::default(), Source::from_pairs([("TODO_BIND", "")])] {
            let addr = source.parse_or_default(&BIND, parse_bind).unwrap();
            assert_eq!(addr, "0.0.0.0:8080".parse().unwrap());
        }
    }

    #[test]
    fn aliases_are_read_and_must_agree() {
        let source = Source::from_pairs([("TODO_MASTER_URL", "a")]);
        let found = source.get(&PRIMARY).unwrap().unwrap();
        assert_eq!((found.origin, found.value), ("TODO_MASTER_URL", "a"));

        let same = Source::from_pairs([("TODO_MASTER_URL", "a"), ("TODO_PRIMARY_URL", "a")]);
        assert_eq!(same.get(&PRIMARY).unwrap().unwrap().value, "a");

        let differ = Source::from_pairs([("TODO_MASTER_URL", "a"), ("TODO_PRIMARY_URL", "b")]);
        assert_eq!(
            differ.get(&PRIMARY).unwrap_err().to_string(),
            "TODO_PRIMARY_URL and TODO_MASTER_URL are both set, to different values; set only one"
        );
    }

    #[test]
    fn bind_forms() {
        assert_eq!(
            parse_bind(":8080").unwrap(),
            "0.0.0.0:8080".parse().unwrap()
        );
        assert_eq!(
            parse_bind("127.0.0.1:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(parse_bind("[::1]:80").unwrap(), "[::1]:80".parse().unwrap());
        assert_eq!(parse_bind("localhost:81").unwrap().port(), 81);
        for bad in ["", "8080", ":", ":99999", "host:", "a b:1"] {
            assert!(parse_bind(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "s", "-1s", "1.5s", "10x", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn switches() {
        let source = Source::from_pairs([("A", "yes"), ("B", "maybe")]);
        let a = Setting::new("A", "a", "", "").switch();
        let b = Setting::new("B", "b", "", "").switch();
        let c = Setting::new("C", "c", "", "").switch();
        assert!(source.switch(&a).unwrap());
        assert!(source.switch(&b).is_err());
        assert!(!source.switch(&c).unwrap());
    }

    #[test]
    fn a_setting_can_come_from_a_file_named_by_name_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("url");
        std::fs::write(&secret, "mysql://app:s3cret@db:3306/tododb\n").unwrap();
        let path = secret.to_str().unwrap();

        let source = Source::from_pairs([("TODO_PRIMARY_URL_FILE", path)]);
        let found = source.get(&PRIMARY).unwrap().unwrap();
        assert_eq!(found.value, "mysql://app:s3cret@db:3306/tododb");
        assert_eq!(found.origin, "TODO_PRIMARY_URL_FILE");
        // Aliases work the same way.
        let source = Source::from_pairs([("TODO_MASTER_URL_FILE", path)]);
        assert_eq!(source.get(&PRIMARY).unwrap().unwrap().value, found.value);

        let both = Source::from_pairs([("TODO_PRIMARY_URL", "x"), ("TODO_PRIMARY_URL_FILE", path)]);
        assert!(matches!(
            both.get(&PRIMARY),
            Err(ConfigError::Conflict { .. })
        ));

        let missing = Source::from_pairs([("TODO_PRIMARY_URL_FILE", "/nonexistent/secret")]);
        let error = missing.get(&PRIMARY).unwrap_err().to_string();
        assert!(
            error.starts_with("TODO_PRIMARY_URL_FILE=\"/nonexistent/secret\": cannot read"),
            "{error}"
        );

        // A bad value from a file is reported without repeating it.
        std::fs::write(&secret, "not a url with s3cret").unwrap();
        let source = Source::from_pairs([("TODO_PRIMARY_URL_FILE", path)]);
        let error = source
            .parse(&PRIMARY, |_| Err::<(), _>("a URL".to_string()))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("TODO_PRIMARY_URL_FILE") && !error.contains("s3cret"),
            "{error}"
        );
    }
}
