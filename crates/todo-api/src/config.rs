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
}

impl DatabaseUrl {
    /// Accepts `sqlite://PATH` and `sqlite:PATH`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let expected = || "a database URL such as sqlite://./data/todo.db".to_string();
        let value = value.trim();
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
