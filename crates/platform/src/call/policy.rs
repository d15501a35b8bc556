//! How calls to one target are protected, configured per target.
//!
//! A service gives its defaults for each target; a TOML file (`FLOTILLA_CALLS_FILE`) may change
//! them for every target (`[defaults]`) or one (`[targets.todo-api]`), and environment variables
//! `FLOTILLA_CALL_<TARGET>_<KEY>` (target upper-cased, `-` as `_`) win over both. Every value is
//! checked at startup; a bad one stops the service with a line naming the key.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::cli::CALLS_FILE;
use crate::config::{ConfigError, Source, parse_duration};

/// The breaker's sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// The last N calls.
    Count(u32),
    /// The calls of the last N seconds.
    Time(u32),
}

/// Protection for the calls to one target. Resilience4j's names are in docs/resilience.md.
#[derive(Debug, Clone, PartialEq)]
pub struct CallPolicy {
    /// The whole call, retries included, within this.
    pub timeout: Duration,
    /// Further attempts after a failed one, for idempotent calls only.
    pub retries: u32,
    /// Retries allowed as a share of calls (tower's retry budget), in percent.
    pub retry_budget: f64,
    /// Retries always allowed per second, whatever the share.
    pub retry_min_per_second: u32,
    pub window: WindowKind,
    /// Calls in the window before its rates count.
    pub minimum_calls: u32,
    /// Percent of failed calls that opens the circuit.
    pub failure_rate: f64,
    /// Percent of slow calls that opens the circuit.
    pub slow_call_rate: f64,
    /// A call taking this long or longer is slow.
    pub slow_call_duration: Duration,
    pub wait_in_open: Duration,
    pub half_open_calls: u32,
    /// Calls in flight at once (the bulkhead).
    pub max_concurrent: u32,
    /// How long a call may wait for a place in the bulkhead; zero: refused at once.
    pub max_wait: Duration,
    /// Off: every call is one attempt within `timeout`, nothing else (no breaker, bulkhead,
    /// retries or metrics) — Resilience4j's disabled state, and the baseline of the overhead
    /// benchmark.
    pub protection: bool,
}

impl Default for CallPolicy {
    fn default() -> Self {
        CallPolicy {
            timeout: Duration::from_secs(2),
            retries: 1,
            retry_budget: 20.0,
            retry_min_per_second: 10,
            window: WindowKind::Count(20),
            minimum_calls: 5,
            failure_rate: 50.0,
            slow_call_rate: 80.0,
            slow_call_duration: Duration::from_secs(1),
            wait_in_open: Duration::from_secs(5),
            half_open_calls: 3,
            max_concurrent: 512,
            max_wait: Duration::ZERO,
            protection: true,
        }
    }
}

/// The keys of a policy, as in the TOML file; upper-cased in environment variables.
pub const KEYS: &[&str] = &[
    "timeout",
    "retries",
    "retry_budget",
    "retry_min_per_second",
    "window_type",
    "window_size",
    "minimum_calls",
    "failure_rate",
    "slow_call_rate",
    "slow_call_duration",
    "wait_in_open",
    "half_open_calls",
    "max_concurrent",
    "max_wait",
    "protection",
];

/// The call settings given to a process: the TOML file's tables, and the environment.
#[derive(Debug, Clone, Default)]
pub struct CallSettings {
    /// (`[defaults]` or `[targets.NAME]`, its key-value pairs), from the file.
    file: Vec<(String, BTreeMap<String, String>)>,
    file_name: String,
    env: BTreeMap<String, String>,
}

impl CallSettings {
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let env = source
            .vars_with_prefix("FLOTILLA_CALL_")
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let Some(path) = source.parse(&CALLS_FILE, |v| Ok(v.to_string()))? else {
            return Ok(CallSettings {
                env,
                ..CallSettings::default()
            });
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::Other(format!("FLOTILLA_CALLS_FILE={path:?}: {e}")))?;
        let mut settings = CallSettings::from_toml(&path, &text)?;
        settings.env = env;
        Ok(settings)
    }

    /// The tables of a calls file; anything but `[defaults]` and `[targets.NAME]` with known
    /// keys is an error naming it.
    pub fn from_toml(file_name: &str, text: &str) -> Result<Self, ConfigError> {
        let bad = |what: String| ConfigError::Other(format!("{file_name}: {what}"));
        let document: toml::Table = text.parse().map_err(|e| bad(format!("{e}")))?;
        let mut file = Vec::new();
        for (section, value) in document {
            let table = value
                .as_table()
                .ok_or_else(|| bad(format!("{section} must be a table")))?;
            match section.as_str() {
                "defaults" => {
                    file.push(("defaults".to_string(), pairs(table, "[defaults]", &bad)?))
                }
                "targets" => {
                    for (target, value) in table {
                        let table = value
                            .as_table()
                            .ok_or_else(|| bad(format!("targets.{target} must be a table")))?;
                        let name = format!("[targets.{target}]");
                        file.push((format!("targets.{target}"), pairs(table, &name, &bad)?));
                    }
                }
                other => {
                    return Err(bad(format!(
                        "unknown table [{other}]: expected [defaults] or [targets.NAME]"
                    )));
                }
            }
        }
        Ok(CallSettings {
            file,
            file_name: file_name.to_string(),
            env: BTreeMap::new(),
        })
    }

    /// The policy for `target`: the service's `defaults`, then the file's `[defaults]`, its
    /// `[targets.<target>]`, then `FLOTILLA_CALL_<TARGET>_*`.
    pub fn policy(&self, target: &str, defaults: CallPolicy) -> Result<CallPolicy, ConfigError> {
        let mut given: BTreeMap<&str, (String, &str)> = BTreeMap::new();
        let own = format!("targets.{target}");
        for wanted in ["defaults", own.as_str()] {
            for (section, table) in &self.file {
                if section == wanted {
                    for (key, value) in table {
                        let origin = format!("{} [{section}] {key}", self.file_name);
                        given.insert(key, (origin, value));
                    }
                }
            }
        }
        let prefix = format!("FLOTILLA_CALL_{}_", env_name(target));
        for key in KEYS {
            let variable = format!("{prefix}{}", key.to_ascii_uppercase());
            if let Some(value) = self.env.get(&variable) {
                given.insert(key, (variable, value));
            }
        }
        let mut policy = defaults;
        let mut window_type = None;
        let mut window_size = None;
        for (key, (origin, value)) in &given {
            let invalid = |expected: String| ConfigError::Invalid {
                origin: origin.clone(),
                value: value.to_string(),
                expected,
            };
            match *key {
                "timeout" => policy.timeout = duration(value, false).map_err(invalid)?,
                "retries" => policy.retries = whole(value, 0, 10).map_err(invalid)?,
                "retry_budget" => policy.retry_budget = percent(value, 0.0).map_err(invalid)?,
                "retry_min_per_second" => {
                    policy.retry_min_per_second = whole(value, 0, 10_000).map_err(invalid)?
                }
                "window_type" => {
                    window_type = Some(match value.trim().to_ascii_lowercase().as_str() {
                        "count" | "count_based" => "count",
                        "time" | "time_based" => "time",
                        _ => return Err(invalid("count or time".into())),
                    })
                }
                "window_size" => window_size = Some((origin, *value)),
                "minimum_calls" => {
                    policy.minimum_calls = whole(value, 1, 100_000).map_err(invalid)?
                }
                "failure_rate" => {
                    policy.failure_rate = percent(value, f64::MIN_POSITIVE).map_err(invalid)?
                }
                "slow_call_rate" => {
                    policy.slow_call_rate = percent(value, f64::MIN_POSITIVE).map_err(invalid)?
                }
                "slow_call_duration" => {
                    policy.slow_call_duration = duration(value, false).map_err(invalid)?
                }
                "wait_in_open" => policy.wait_in_open = duration(value, false).map_err(invalid)?,
                "half_open_calls" => {
                    policy.half_open_calls = whole(value, 1, 1000).map_err(invalid)?
                }
                "max_concurrent" => {
                    policy.max_concurrent = whole(value, 1, 100_000).map_err(invalid)?
                }
                "max_wait" => policy.max_wait = duration(value, true).map_err(invalid)?,
                "protection" => {
                    policy.protection = crate::config::parse_bool(value).map_err(invalid)?
                }
                other => unreachable!("key {other} is checked against KEYS when read"),
            }
        }
        let (kind, size) = match policy.window {
            WindowKind::Count(n) => ("count", n),
            WindowKind::Time(n) => ("time", n),
        };
        let kind = window_type.unwrap_or(kind);
        let size = match window_size {
            Some((origin, value)) => {
                let max = if kind == "count" { 10_000 } else { 3_600 };
                whole(value, 1, max).map_err(|expected| ConfigError::Invalid {
                    origin: origin.clone(),
                    value: value.to_string(),
                    expected: format!("{expected} ({kind}-based window)"),
                })?
            }
            None => size,
        };
        policy.window = if kind == "count" {
            WindowKind::Count(size)
        } else {
            WindowKind::Time(size)
        };
        Ok(policy)
    }
}

/// `todo-api` → `TODO_API`.
pub fn env_name(target: &str) -> String {
    target
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn pairs(
    table: &toml::Table,
    name: &str,
    bad: &dyn Fn(String) -> ConfigError,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut pairs = BTreeMap::new();
    for (key, value) in table {
        if !KEYS.contains(&key.as_str()) {
            return Err(bad(format!(
                "unknown key {key} in {name}; known keys: {}",
                KEYS.join(", ")
            )));
        }
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            _ => return Err(bad(format!("{name} {key}: expected a string or a number"))),
        };
        pairs.insert(key.clone(), text);
    }
    Ok(pairs)
}

fn whole(value: &str, min: u32, max: u32) -> Result<u32, String> {
    match value.trim().parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("a whole number from {min} to {max}")),
    }
}

/// A percentage above `floor` and at most 100; a trailing `%` is allowed.
fn percent(value: &str, floor: f64) -> Result<f64, String> {
    let expected = || {
        if floor > 0.0 {
            "a percentage above 0 and at most 100, such as 50".to_string()
        } else {
            "a percentage from 0 to 100, such as 20".to_string()
        }
    };
    let number: f64 = value
        .trim()
        .trim_end_matches('%')
        .trim()
        .parse()
        .map_err(|_| expected())?;
    if number.is_finite() && number >= floor && number <= 100.0 {
        Ok(number)
    } else {
        Err(expected())
    }
}

fn duration(value: &str, zero_allowed: bool) -> Result<Duration, String> {
    let expected = |what: &str| format!("{what} up to 1h, such as 2s or 500ms");
    let parsed = parse_duration(value).map_err(|_| {
        expected(if zero_allowed {
            "a duration"
        } else {
            "a duration above zero"
        })
    })?;
    if (parsed.is_zero() && !zero_allowed) || parsed > Duration::from_secs(3600) {
        return Err(expected(if zero_allowed {
            "a duration"
        } else {
            "a duration above zero"
        }));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> CallSettings {
        CallSettings::from_source(&Source::from_pairs(pairs.iter().copied())).unwrap()
    }

    #[test]
    fn the_service_defaults_hold_when_nothing_is_given() {
        let policy = env(&[]).policy("todo-api", CallPolicy::default()).unwrap();
        assert_eq!(policy, CallPolicy::default());
    }

    #[test]
    fn the_environment_wins_over_the_file_which_wins_over_the_defaults() {
        let mut settings = CallSettings::from_toml(
            "calls.toml",
            "[defaults]\ntimeout = \"3s\"\nfailure_rate = 40\n\n[targets.todo-api]\nfailure_rate = 30\nwindow_type = \"time\"\nwindow_size = 10\n",
        )
        .unwrap();
        settings.env = [(
            "FLOTILLA_CALL_TODO_API_FAILURE_RATE".to_string(),
            "25%".to_string(),
        )]
        .into_iter()
        .collect();
        let policy = settings.policy("todo-api", CallPolicy::default()).unwrap();
        assert_eq!(policy.timeout, Duration::from_secs(3));
        assert_eq!(policy.failure_rate, 25.0);
        assert_eq!(policy.window, WindowKind::Time(10));
        let other = settings
            .policy("video-storage", CallPolicy::default())
            .unwrap();
        assert_eq!(other.failure_rate, 40.0);
        assert_eq!(other.window, WindowKind::Count(20));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (key, value) in [
            ("FLOTILLA_CALL_TODO_API_FAILURE_RATE", "-5"),
            ("FLOTILLA_CALL_TODO_API_FAILURE_RATE", "150"),
            ("FLOTILLA_CALL_TODO_API_SLOW_CALL_RATE", "0"),
            ("FLOTILLA_CALL_TODO_API_WINDOW_SIZE", "0"),
            ("FLOTILLA_CALL_TODO_API_TIMEOUT", "0s"),
            ("FLOTILLA_CALL_TODO_API_TIMEOUT", "-1s"),
            ("FLOTILLA_CALL_TODO_API_MINIMUM_CALLS", "0"),
            ("FLOTILLA_CALL_TODO_API_WINDOW_TYPE", "sliding"),
            ("FLOTILLA_CALL_TODO_API_MAX_CONCURRENT", "0"),
        ] {
            let error = env(&[(key, value)])
                .policy("todo-api", CallPolicy::default())
                .unwrap_err()
                .to_string();
            assert!(error.contains(key), "{key}={value}: {error}");
        }
    }

    #[test]
    fn file_errors_name_the_table_and_key() {
        let error =
            CallSettings::from_toml("calls.toml", "[targets.todo-api]\nfailure_rates = 5\n")
                .unwrap_err()
                .to_string();
        assert!(
            error.contains("failure_rates") && error.contains("calls.toml"),
            "{error}"
        );
        let error = CallSettings::from_toml("calls.toml", "[breakers]\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("[breakers]"), "{error}");
        let error = CallSettings::from_toml("calls.toml", "[defaults]\nwindow_size = 0\n")
            .unwrap()
            .policy("x", CallPolicy::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("[defaults] window_size"), "{error}");
    }

    #[test]
    fn target_names_become_env_names() {
        assert_eq!(env_name("video-storage"), "VIDEO_STORAGE");
    }
}
