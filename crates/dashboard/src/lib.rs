//! `flotilla dashboard`: the whole system's circuits and upstreams on one live page — what the
//! Hystrix dashboard showed for the seeds' Spring services, with Turbine's aggregation across
//! replicas built in.
//!
//! It finds services through the registry (every app's UP instances) and/or a fixed list of
//! URLs, scrapes each instance's `/metrics` every interval, and shows one tile per circuit
//! (a caller's protected calls to a target) and per gateway upstream: request rate, error %,
//! p50/p99, state with its colour, hosts reporting. The page is server-rendered and refreshes
//! itself without JavaScript; with it, tiles update from server-sent events every interval.
//! `/api/tiles` gives the same data as JSON.
//!
//! Layout:
//! - [`scrape`]: one instance's metrics, read and checked; `exposition`: one line of
//!   Prometheus text, strictly.
//! - [`aggregate`]: rates, error %, percentiles and states across instances.
//! - `routes`: the page, the event stream, the JSON.

pub mod aggregate;
pub mod scrape;

mod exposition;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use platform::config::{parse_bind, parse_duration};
use platform::{CommonConfig, ConfigError, ErrorStyle, Readiness, Setting, Source};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub const BIND: Setting = Setting::bind("DASHBOARD_BIND", "0.0.0.0:7979");
pub const REGISTRY_URL: Setting = Setting::new(
    "DASHBOARD_REGISTRY_URL",
    "registry",
    "URLS",
    "registry to find services in (http://registry:8761/eureka/, comma-separated); default: FLOTILLA_REGISTRY_URL",
);
pub const TARGETS: Setting = Setting::new(
    "DASHBOARD_TARGETS",
    "targets",
    "LIST",
    "services to scrape besides the registry's: NAME=http://host:port, comma-separated",
);
pub const INTERVAL: Setting = Setting::new(
    "DASHBOARD_INTERVAL",
    "interval",
    "DURATION",
    "how often every instance is scraped and the page updated",
)
.default("1s");

pub const SETTINGS: &[Setting] = &[BIND, REGISTRY_URL, TARGETS, INTERVAL];

/// A service to scrape, given by URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub service: String,
    /// `http://host:port`, no trailing slash.
    pub url: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub registry: Vec<String>,
    pub targets: Vec<Target>,
    pub interval: Duration,
    pub common: CommonConfig,
}

impl Config {
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_source(source)?;
        let registry = match source.parse(&REGISTRY_URL, platform::registration::parse_urls)? {
            Some(urls) => urls,
            None => common
                .registration
                .as_ref()
                .map(|r| r.urls.clone())
                .unwrap_or_default(),
        };
        let targets = source.parse(&TARGETS, parse_targets)?.unwrap_or_default();
        if registry.is_empty() && targets.is_empty() {
            return Err(ConfigError::Missing {
                origin: format!("{} or {}", REGISTRY_URL.env, TARGETS.env),
                help: "where to find the services to show: a registry, or a list of NAME=URL"
                    .into(),
            });
        }
        Ok(Config {
            bind: source.parse_or_default(&BIND, parse_bind)?,
            registry,
            targets,
            interval: source.parse_or_default(&INTERVAL, |v| {
                parse_duration(v).and_then(|d| {
                    if (Duration::from_millis(200)..=Duration::from_secs(60)).contains(&d) {
                        Ok(d)
                    } else {
                        Err("a duration from 200ms to 60s, such as 1s".into())
                    }
                })
            })?,
            common,
        })
    }
}

/// `todo-web=http://127.0.0.1:3000,http://10.0.0.5:8080`: a name is optional (the address is
/// the name then).
pub fn parse_targets(value: &str) -> Result<Vec<Target>, String> {
    let expected = "NAME=http://host:port, comma-separated".to_string();
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (name, url) = match item.split_once('=') {
                Some((name, url)) => (Some(name.trim()), url.trim()),
                None => (None, item),
            };
            let parsed = reqwest::Url::parse(url).map_err(|_| expected.clone())?;
            let host = parsed.host_str().ok_or_else(|| expected.clone())?;
            if parsed.scheme() != "http" || parsed.path() != "/" && !parsed.path().is_empty() {
                return Err(expected.clone());
            }
            let address = match parsed.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_string(),
            };
            let service = match name {
                Some(name)
                    if !name.is_empty()
                        && name.len() <= 64
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
                {
                    name.to_string()
                }
                Some(_) => return Err(format!("{expected} (names: letters, digits, - _ .)")),
                None => address.clone(),
            };
            Ok(Target {
                service,
                url: format!("http://{address}"),
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|targets| {
            if targets.is_empty() {
                Err(expected)
            } else {
                Ok(targets)
            }
        })
}

/// The latest view, rendered once per interval for every viewer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Latest {
    pub(crate) view: aggregate::View,
    /// The tiles as HTML, for the page and the event stream.
    pub(crate) html: Arc<str>,
}

/// Instances to scrape now: the fixed targets and the registry's.
fn instances(
    targets: &[Target],
    registry: Option<&watch::Receiver<platform::registration::watch::Instances>>,
) -> Vec<Target> {
    let mut all = targets.to_vec();
    if let Some(registry) = registry {
        for (app, addresses) in registry.borrow().iter() {
            for address in addresses {
                all.push(Target {
                    service: app.to_ascii_lowercase(),
                    url: format!("http://{address}"),
                });
            }
        }
    }
    all.sort_by(|a, b| a.url.cmp(&b.url));
    all.dedup_by(|a, b| a.url == b.url);
    all
}

/// Scrapes every instance each interval and publishes the view, until every receiver is gone.
async fn scrape_loop(config: Config, latest: watch::Sender<Latest>) {
    let client = reqwest::Client::builder()
        .connect_timeout(scrape::SCRAPE_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .expect("a plain HTTP client builds");
    let registry = if config.registry.is_empty() {
        None
    } else {
        let (sender, receiver) = watch::channel(Default::default());
        tokio::spawn(platform::registration::watch::follow(
            config.registry.clone(),
            sender,
        ));
        Some(receiver)
    };
    let mut board = aggregate::Board::default();
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !latest.is_closed() {
        ticks.tick().await;
        let instances = instances(&config.targets, registry.as_ref());
        let results: Vec<_> = futures_util::stream::iter(instances.clone())
            .map(|target| {
                let client = client.clone();
                async move {
                    let scraped = scrape::scrape(&client, &target.url).await;
                    (target, scraped, Instant::now())
                }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        for (target, scraped, at) in results {
            board.record(&target.url, &target.service, at, scraped);
        }
        board.retain(&|url| instances.iter().any(|t| t.url == url));
        let view = board.view();
        let html = routes::render_tiles(&view);
        latest.send_replace(Latest {
            view,
            html: Arc::from(html),
        });
    }
}

/// The dashboard's routes, wrapped in the service contract; starts its scraping.
pub fn app(config: &Config, readiness: &Readiness) -> platform::Contracted {
    let (sender, receiver) = watch::channel(Latest::default());
    tokio::spawn(scrape_loop(config.clone(), sender));
    let routes = routes::router(receiver, config.interval);
    platform::contract_router(routes, readiness, ErrorStyle::Json)
}

/// Serves until `shutdown` resolves, then drains.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let readiness = Readiness::new();
    let router = app(&config, &readiness);
    readiness.started();
    platform::serve(
        listener,
        router,
        config.common.serve_options(),
        readiness,
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_named_urls_and_bad_ones_are_refused() {
        let targets =
            parse_targets("todo-web=http://127.0.0.1:3000, http://10.0.0.5:8080").unwrap();
        assert_eq!(targets[0].service, "todo-web");
        assert_eq!(targets[0].url, "http://127.0.0.1:3000");
        assert_eq!(targets[1].service, "10.0.0.5:8080");
        for bad in [
            "",
            "ftp://x",
            "a=http://x/metrics",
            "bad name=http://x:1",
            "http://",
        ] {
            assert!(parse_targets(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nothing_to_watch_is_an_error_naming_both_settings() {
        let error = Config::from_source(&Source::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("DASHBOARD_REGISTRY_URL") && error.contains("DASHBOARD_TARGETS"),
            "{error}"
        );
        let error = Config::from_source(&Source::from_pairs([
            ("DASHBOARD_TARGETS", "http://127.0.0.1:1"),
            ("DASHBOARD_INTERVAL", "0s"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(error.contains("DASHBOARD_INTERVAL"), "{error}");
    }
}
