//! Logs and metrics.
//!
//! Logs go to stderr through `tracing`: readable text by default, one JSON object per line with
//! `LOG_FORMAT=json` (what the container image sets). Metrics are recorded through the `metrics`
//! facade into one process-wide Prometheus recorder, which `GET /metrics` renders.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{ConfigError, Source};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// How a process logs: `LOG_FORMAT` and `LOG_LEVEL`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
}

impl LogConfig {
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let format = source.parse_or_default(&crate::cli::LOG_FORMAT, |v| {
            match v.to_ascii_lowercase().as_str() {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err("text or json".to_string()),
            }
        })?;
        let filter = source.parse_or_default(&crate::cli::LOG_LEVEL, parse_filter)?;
        Ok(LogConfig { format, filter })
    }
}

const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// A level, or comma-separated directives each a level or `target=level`. A bare word that is
/// not a level is refused, although the filter syntax would read it as a target name: `loud`
/// is a typo, not a wish to log only the module `loud`.
fn parse_filter(value: &str) -> Result<String, String> {
    let expected = || {
        "a level (error, warn, info, debug, trace, off) or directives like info,todo_api=debug"
            .to_string()
    };
    let valid = value.split(',').all(|directive| {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        LEVELS.contains(&level.trim().to_ascii_lowercase().as_str())
    });
    if !valid || EnvFilter::try_new(value).is_err() {
        return Err(expected());
    }
    Ok(value.to_string())
}

/// Keeps the log writer running; dropping it flushes what is still queued. Hold it until exit.
#[must_use = "dropping the guard stops log output"]
pub struct LogGuard {
    _writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Installs the global log subscriber. Lines are written by a background thread, batched into
/// few writes, so a request never waits on stderr; when the queue is full, logging blocks rather
/// than losing lines. Safe to call more than once (tests): later calls do nothing.
pub fn init_logging(config: &LogConfig) -> LogGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        // Bounds the memory held by lines not yet written (the default, 128k lines, let a busy
        // API's peak RSS grow by several MB); past it, logging waits for the writer.
        .buffered_lines_limit(8_192)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let filter = EnvFilter::new(&config.filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    let installed = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    LogGuard {
        _writer: installed.is_ok().then_some(guard),
    }
}

/// Bucket bounds of every latency histogram (`*_duration_seconds`), in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often buffered histogram samples are folded into their buckets. Samples wait as ~17 bytes
/// each: at 30,000 requests a second, a second's worth is about 0.5 MB.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), &LATENCY_BUCKETS)
            .expect("latency buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder can only exist if something else in the process installed one; metrics
        // then go there and ours renders empty, which is visible rather than fatal.
        let _ = metrics::set_global_recorder(recorder);
        metrics::describe_gauge!(
            "http_connections_open",
            "Client connections open, by listener"
        );
        // Histogram samples queue in the recorder until upkeep drains them into buckets; without
        // it, a process that is never scraped grew by ~17 bytes a request, without bound.
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                }
            });
        handle
    })
}

/// Every metric of the process in Prometheus text format.
pub fn render_metrics() -> String {
    let handle = metrics_handle();
    handle.run_upkeep();
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::parse_filter;

    /// Regression: without periodic upkeep, histogram samples piled up in memory forever.
    #[test]
    fn installing_the_recorder_starts_its_upkeep_thread() {
        super::metrics_handle();
        let thread_names = || -> Vec<String> {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
                .map(|name| name.trim().to_string())
                .collect()
        };
        // A new thread names itself once it runs; wait for that, within bounds.
        for _ in 0..200 {
            if thread_names().iter().any(|n| n == "metrics-upkeep") {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("no metrics-upkeep thread among {:?}", thread_names());
    }

    #[test]
    fn log_filters_are_levels_or_directives() {
        for good in [
            "info",
            "DEBUG",
            "warn,todo_api=debug",
            "platform::server=trace",
            "off",
        ] {
            assert!(parse_filter(good).is_ok(), "{good}");
        }
        for bad in ["loud", "", "info,", "todo_api=loud", "=info="] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }
}
