//! Settings of `flotilla todo-api`, with the seeds' variable names kept as aliases.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use platform::config::{parse_bind, parse_duration};
use platform::{CommonConfig, ConfigError, Setting, Source};

/// Where the embedded database lives when no URL is given.
pub const DEFAULT_SQLITE_PATH: &str = "./data/todo.db";

pub const BIND: Setting = Setting::bind("TODO_BIND", "0.0.0.0:8080");
pub const PRIMARY_URL: Setting = Setting::new(
    "TODO_PRIMARY_URL",
    "primary-url",
    "URL",
    "database all writes go to (default: embedded SQLite at ./data/todo.db)",
)
.aliases(&["TODO_MASTER_URL"]);
pub const REPLICA_URLS: Setting = Setting::new(
    "TODO_REPLICA_URLS",
    "replica-urls",
    "URL[,URL...]",
    "databases reads go to, in turn (default: the primary)",
)
.aliases(&["TODO_SLAVE_URL"]);
pub const DB_TIMEOUT: Setting = Setting::new(
    "TODO_DB_TIMEOUT",
    "db-timeout",
    "DURATION",
    "how long a query may wait for a connection or lock before the API answers 503",
)
.default("2s");
pub const SEED: Setting = Setting::new(
    "TODO_SEED",
    "seed",
    "",
    "fill an empty table with the original tododb's 8 sample rows",
)
.switch();

pub const SETTINGS: &[Setting] = &[BIND, PRIMARY_URL, REPLICA_URLS, DB_TIMEOUT, SEED];

/// A database the API can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An embedded SQLite file.
    Sqlite(PathBuf),
    /// A MySQL or MariaDB server.
    MySql(MySqlTarget),
}

/// Where and how to reach a MySQL/MariaDB database.
#[derive(Clone, PartialEq, Eq)]
pub struct MySqlTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: String,
}

impl std::fmt::Debug for MySqlTarget {
    // Passwords stay out of logs and error messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mysql://{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }
}

impl MySqlTarget {
    /// `host:port/database`, for logs and readiness reports.
    pub fn label(&self) -> String {
        format!("mysql://{}:{}/{}", self.host, self.port, self.database)
    }
}

const EXPECTED_URL: &str = "a database URL: sqlite://PATH, mysql://USER:PASSWORD@HOST:PORT/DB, \
     or the Go form USER:PASSWORD@tcp(HOST:PORT)/DB";

/// `mysql://user:pass@host:port/db` (user and password percent-encoded, as in any URL).
fn parse_mysql_url(rest: &str) -> Result<MySqlTarget, String> {
    let expected = || EXPECTED_URL.to_string();
    let (authority, path) = rest.split_once('/').ok_or_else(expected)?;
    let database = path.split(['?', '#']).next().unwrap_or_default();
    let (credentials, host_port) = match authority.rsplit_once('@') {
        Some((credentials, host_port)) => (Some(credentials), host_port),
        None => (None, authority),
    };
    let (user, password) = match credentials {
        Some(credentials) => {
            let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
            (
                percent_decode(user).ok_or_else(expected)?,
                percent_decode(password).ok_or_else(expected)?,
            )
        }
        None => ("root".to_string(), String::new()),
    };
    target(host_port, user, password, database)
}

/// Go's `user:pass@tcp(host:port)/db?params`, as the seeds' stack files write it. The password
/// is taken as written (Go's driver does not percent-decode it).
fn parse_go_dsn(value: &str) -> Result<MySqlTarget, String> {
    let expected = || EXPECTED_URL.to_string();
    let (credentials, rest) = value.rsplit_once("@tcp(").ok_or_else(expected)?;
    let (host_port, path) = rest.split_once(")/").ok_or_else(expected)?;
    let database = path.split('?').next().unwrap_or_default();
    let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
    target(host_port, user.to_string(), password.to_string(), database)
}

fn target(
    host_port: &str,
    user: String,
    password: String,
    database: &str,
) -> Result<MySqlTarget, String> {
    let expected = || EXPECTED_URL.to_string();
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (
            host,
            port.parse::<u16>()
                .map_err(|_| format!("{} (bad port {port:?})", expected()))?,
        ),
        _ => (host_port, 3306),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || user.is_empty() || database.is_empty() {
        return Err(format!(
            "{} (host, user and database are required)",
            expected()
        ));
    }
    Ok(MySqlTarget {
        host: host.to_string(),
        port,
        user,
        password,
        database: database.to_string(),
    })
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl DatabaseUrl {
    /// Accepts `sqlite://PATH`, `sqlite:PATH`, `mysql://USER:PASSWORD@HOST:PORT/DB` and Go's
    /// `USER:PASSWORD@tcp(HOST:PORT)/DB?parseTime=true`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let expected = || EXPECTED_URL.to_string();
        let value = value.trim();
        if let Some(rest) = value
            .strip_prefix("mysql://")
            .or_else(|| value.strip_prefix("mariadb://"))
        {
            return parse_mysql_url(rest).map(DatabaseUrl::MySql);
        }
        if value.contains("@tcp(") {
            return parse_go_dsn(value).map(DatabaseUrl::MySql);
        }
        if let Some(path) = value
            .strip_prefix("sqlite://")
            .or_else(|| value.strip_prefix("sqlite:"))
        {
            if path.is_empty() || path.starts_with(':') {
                return Err(format!(
                    "{} (a file path; in-memory databases are not shared between connections)",
                    expected()
                ));
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        Err(expected())
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub primary: DatabaseUrl,
    pub replicas: Vec<DatabaseUrl>,
    pub db_timeout: Duration,
    pub seed: bool,
    pub common: CommonConfig,
}

impl Config {
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let primary = source
            .parse(&PRIMARY_URL, DatabaseUrl::parse)?
            .unwrap_or_else(|| DatabaseUrl::Sqlite(PathBuf::from(DEFAULT_SQLITE_PATH)));
        let replicas = source
            .parse(&REPLICA_URLS, |list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|url| !url.is_empty())
                    .map(DatabaseUrl::parse)
                    .collect::<Result<Vec<_>, _>>()
            })?
            .unwrap_or_default();
        let mixed = replicas.iter().any(|r| {
            matches!(r, DatabaseUrl::Sqlite(_)) != matches!(primary, DatabaseUrl::Sqlite(_))
        });
        if mixed {
            return Err(platform::ConfigError::Invalid {
                origin: REPLICA_URLS.env.to_string(),
                value: "(mixed)".to_string(),
                expected: "replicas of the same kind as the primary (all sqlite, or all mysql)"
                    .to_string(),
            });
        }
        Ok(Config {
            bind: source.parse_or_default(&BIND, parse_bind)?,
            primary,
            replicas,
            db_timeout: source.parse_or_default(&DB_TIMEOUT, parse_duration)?,
            seed: source.switch(&SEED)?,
            common: CommonConfig::from_source(source)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_use_embedded_sqlite_on_8080() {
        let config = Config::from_source(&Source::default()).unwrap();
        assert_eq!(config.bind, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(
            config.primary,
            DatabaseUrl::Sqlite(DEFAULT_SQLITE_PATH.into())
        );
        assert!(config.replicas.is_empty());
        assert_eq!(config.db_timeout, Duration::from_secs(2));
        assert!(!config.seed);
    }

    #[test]
    fn seeds_names_are_accepted() {
        let source = Source::from_pairs([
            ("TODO_BIND", ":9000"),
            ("TODO_MASTER_URL", "sqlite://a.db"),
            ("TODO_SLAVE_URL", "sqlite:b.db, sqlite:c.db"),
            ("TODO_SEED", "1"),
        ]);
        let config = Config::from_source(&source).unwrap();
        assert_eq!(config.bind.port(), 9000);
        assert_eq!(config.primary, DatabaseUrl::Sqlite("a.db".into()));
        assert_eq!(
            config.replicas,
            vec![
                DatabaseUrl::Sqlite("b.db".into()),
                DatabaseUrl::Sqlite("c.db".into())
            ]
        );
        assert!(config.seed);
    }

    fn mysql(value: &str) -> MySqlTarget {
        match DatabaseUrl::parse(value).unwrap() {
            DatabaseUrl::MySql(target) => target,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mysql_urls_and_go_dsns() {
        let t = mysql("mysql://gihyo:gihyo@127.0.0.1:3307/tododb");
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.user.as_str(),
                t.password.as_str(),
                t.database.as_str()
            ),
            ("127.0.0.1", 3307, "gihyo", "gihyo", "tododb")
        );
        // The seeds' stack files, unchanged.
        let t = mysql("gihyo:gihyo@tcp(todo_mysql_master:3306)/tododb?parseTime=true");
        assert_eq!(
            (t.host.as_str(), t.port, t.database.as_str()),
            ("todo_mysql_master", 3306, "tododb")
        );
        let t = mysql("u:p@ss:w@rd@tcp(db)/x");
        assert_eq!((t.password.as_str(), t.port), ("p@ss:w@rd", 3306));
        let t = mysql("mysql://u:p%40ss@[::1]:3306/x");
        assert_eq!((t.host.as_str(), t.password.as_str()), ("::1", "p@ss"));
        assert_eq!(
            format!("{t:?}"),
            "mysql://u@::1:3306/x",
            "no password in Debug"
        );
        for bad in [
            "mysql://u:p@host:notaport/db",
            "mysql://u:p@host:3306",
            "mysql://u:p@:3306/db",
            "u:p@tcp(h:1)",
            "mysql://u:%zz@h/db",
        ] {
            assert!(DatabaseUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn replicas_must_match_the_primary_kind() {
        let source = Source::from_pairs([
            ("TODO_PRIMARY_URL", "sqlite://a.db"),
            ("TODO_REPLICA_URLS", "mysql://u:p@h/db"),
        ]);
        assert!(
            Config::from_source(&source)
                .unwrap_err()
                .to_string()
                .contains("TODO_REPLICA_URLS")
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = |pairs: &[(&str, &str)]| {
            Config::from_source(&Source::from_pairs(pairs.iter().copied()))
                .unwrap_err()
                .to_string()
        };
        assert!(
            err(&[("TODO_PRIMARY_URL", "postgres://x")]).starts_with("invalid TODO_PRIMARY_URL=")
        );
        assert!(err(&[("TODO_SLAVE_URL", "sqlite:")]).starts_with("invalid TODO_SLAVE_URL="));
        assert!(err(&[("TODO_DB_TIMEOUT", "soon")]).starts_with("invalid TODO_DB_TIMEOUT="));
        assert!(err(&[("TODO_SEED", "perhaps")]).starts_with("invalid TODO_SEED="));
        assert!(
            err(&[("FLOTILLA_DRAIN_TIMEOUT", "x")]).starts_with("invalid FLOTILLA_DRAIN_TIMEOUT=")
        );
        assert!(err(&[("LOG_FORMAT", "xml")]).starts_with("invalid LOG_FORMAT="));
    }
}
