//! Self-registration with a service registry (Flotilla's, or any Eureka): a service given
//! `FLOTILLA_REGISTRY_URL` (or Spring's `EUREKA_CLIENT_SERVICEURL_DEFAULTZONE`) registers once it
//! is ready, renews its lease, registers again when the registry has forgotten it (a 404), and
//! on shutdown marks itself OUT_OF_SERVICE and cancels *before* it drains, so no router sends it
//! new work while it finishes what it has.
//!
//! Several registry URLs are tried in turn: the one that last answered first. The address
//! registered is chosen by [`advertise`] (the seed-004 bug was registering the wrong one).

pub mod advertise;
pub mod watch;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::json;

use crate::config::{ConfigError, Setting, Source, parse_duration};
use crate::health::{Phase, Readiness};
use advertise::Network;

pub const REGISTRY_URL: Setting = Setting::new(
    "FLOTILLA_REGISTRY_URL",
    "registry-url",
    "URLS",
    "registries to register with, comma-separated (http://registry:8761/eureka/); none: no registration",
)
.aliases(&["EUREKA_CLIENT_SERVICEURL_DEFAULTZONE"]);
pub const APP_NAME: Setting = Setting::new(
    "FLOTILLA_APP_NAME",
    "app-name",
    "NAME",
    "the name to register under (default: the service's name)",
);
pub const ADVERTISE_NETWORK: Setting = Setting::new(
    "FLOTILLA_ADVERTISE_NETWORK",
    "advertise-network",
    "CIDR|INTERFACE",
    "register the address in this network (10.0.9.0/24) or on this interface (eth1)",
);
pub const ADVERTISE_ADDR: Setting = Setting::new(
    "FLOTILLA_ADVERTISE_ADDR",
    "advertise-addr",
    "IP",
    "register this address, whatever the interfaces say",
);
pub const RENEWAL: Setting = Setting::new(
    "FLOTILLA_REGISTRY_RENEWAL",
    "registry-renewal",
    "DURATION",
    "how often to renew the registration; the lease lasts three times as long",
)
.default("30s");

/// The registration settings.
pub const SETTINGS: [Setting; 5] = [
    REGISTRY_URL,
    APP_NAME,
    ADVERTISE_NETWORK,
    ADVERTISE_ADDR,
    RENEWAL,
];

/// How long one call to a registry may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how to register; `None` in [`crate::CommonConfig`] when no registry is given.
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    pub urls: Vec<String>,
    /// Upper-cased when registered; `None`: the service's own name.
    pub app: Option<String>,
    pub network: Option<Network>,
    pub addr: Option<IpAddr>,
    pub renewal: Duration,
}

impl RegistrationConfig {
    pub fn from_source(source: &Source) -> Result<Option<Self>, ConfigError> {
        let Some(urls) = source.parse(&REGISTRY_URL, parse_urls)? else {
            return Ok(None);
        };
        let renewal = source.parse_or_default(&RENEWAL, |v| {
            parse_duration(v).and_then(|d| {
                if d < Duration::from_secs(1) || d > Duration::from_secs(300) {
                    Err("a duration from 1s to 300s, such as 30s".to_string())
                } else {
                    Ok(d)
                }
            })
        })?;
        Ok(Some(RegistrationConfig {
            urls,
            app: source.parse(&APP_NAME, parse_app)?,
            network: source.parse(&ADVERTISE_NETWORK, Network::parse)?,
            addr: source.parse(&ADVERTISE_ADDR, |v| {
                v.trim()
                    .parse()
                    .map_err(|_| "an IP address, such as 10.0.9.5".to_string())
            })?,
            renewal,
        }))
    }
}

/// Registry URLs, comma-separated, each `http://` with a host; each given a trailing slash.
pub fn parse_urls(value: &str) -> Result<Vec<String>, String> {
    let urls: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            let uri: http::Uri = u.parse().map_err(|_| format!("{u:?} is not a URL"))?;
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                return Err(format!(
                    "{u:?}: an http:// URL such as http://registry:8761/eureka/"
                ));
            }
            Ok(if u.ends_with('/') {
                u.to_string()
            } else {
                format!("{u}/")
            })
        })
        .collect::<Result<_, _>>()?;
    if urls.is_empty() {
        return Err("at least one http:// URL".to_string());
    }
    Ok(urls)
}

fn parse_app(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty()
        || value.len() > 128
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("letters, digits, '-', '_' or '.', at most 128".to_string());
    }
    Ok(value.to_string())
}

/// The id a service registers under: Spring's `host:app:port`, app in lower case.
pub fn instance_id(app: &str, port: u16) -> String {
    format!("{}:{}:{port}", crate::hostname(), app.to_ascii_lowercase())
}

/// A registration in progress: it renews until [`Registered::leave`].
pub struct Registered {
    task: tokio::task::JoinHandle<()>,
    client: Client,
}

/// What is registered, and where.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    urls: Vec<String>,
    /// Upper case.
    app: String,
    id: String,
    document: serde_json::Value,
    /// Index of the URL that last answered.
    preferred: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Starts registering `service` (listening on `bound`) once `readiness` says ready. An error when
/// no address to advertise can be found: a service told to register must not run unseen, nor
/// guess (the caller refuses to start, naming the addresses there are).
pub fn start(
    config: &RegistrationConfig,
    service: &str,
    bound: SocketAddr,
    readiness: Readiness,
) -> Result<Registered, String> {
    let ip = advertise::choose(config.addr, config.network.as_ref(), bound.ip())
        .map_err(|error| format!("cannot choose the address to register: {error}"))?;
    let app = config
        .app
        .clone()
        .unwrap_or_else(|| service.to_string())
        .to_ascii_uppercase();
    let port = bound.port();
    let host = crate::hostname();
    let id = instance_id(&app, port);
    let renewal = config.renewal.as_secs().max(1);
    let base = format!("http://{}/", SocketAddr::new(ip, port));
    let document = json!({"instance": {
        "instanceId": id,
        "hostName": ip.to_string(),
        "app": app,
        "ipAddr": ip.to_string(),
        "status": "UP",
        "port": {"$": port, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"},
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": renewal, "durationInSecs": renewal * 3},
        "metadata": {"service": service, "host": host},
        "homePageUrl": base,
        "statusPageUrl": format!("{base}hc"),
        "healthCheckUrl": format!("{base}ready"),
        "vipAddress": app.to_ascii_lowercase(),
        "secureVipAddress": app.to_ascii_lowercase(),
    }});
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .unwrap_or_default(),
        urls: config.urls.clone(),
        app,
        id,
        document,
        preferred: Default::default(),
    };
    let task = tokio::spawn(client.clone().keep_registered(config.renewal, readiness));
    Ok(Registered { task, client })
}

impl Registered {
    /// Takes the instance out of rotation (OUT_OF_SERVICE, then cancel), each call bounded, and
    /// stops renewing. Called before draining.
    pub async fn leave(self) {
        self.task.abort();
        let client = &self.client;
        let path = client.instance_path();
        let status = client
            .call(
                reqwest::Method::PUT,
                &format!("{path}/status?value=OUT_OF_SERVICE"),
                None,
            )
            .await;
        let cancel = client.call(reqwest::Method::DELETE, &path, None).await;
        match (status, cancel) {
            (_, Ok(code)) if code.is_success() => {
                tracing::info!(app = client.app, id = client.id, "deregistered")
            }
            (_, outcome) => {
                tracing::warn!(
                    app = client.app,
                    ?outcome,
                    "could not deregister; the lease will expire"
                )
            }
        }
    }
}

impl Client {
    fn instance_path(&self) -> String {
        format!("apps/{}/{}", self.app, percent_encode(&self.id))
    }

    /// One call to the registries (`path` relative to a registry URL), trying each from the
    /// preferred one until one answers; the status of the answer.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<reqwest::StatusCode, String> {
        use std::sync::atomic::Ordering;
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last_error = String::new();
        for offset in 0..self.urls.len() {
            let index = (first + offset) % self.urls.len();
            let url = format!("{}{path}", self.urls[index]);
            let mut request = self
                .http
                .request(method.clone(), &url)
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(body) = body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string());
            }
            match request.send().await {
                Ok(response) if !response.status().is_server_error() => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(response.status());
                }
                Ok(response) => last_error = format!("{url}: {}", response.status()),
                Err(error) => last_error = format!("{url}: {error}"),
            }
        }
        Err(last_error)
    }

    async fn register(&self) -> bool {
        match self
            .call(
                reqwest::Method::POST,
                &format!("apps/{}", self.app),
                Some(&self.document),
            )
            .await
        {
            Ok(status) if status.is_success() => {
                tracing::info!(app = self.app, id = self.id, "registered");
                true
            }
            outcome => {
                tracing::warn!(
                    app = self.app,
                    ?outcome,
                    "registration refused or no registry answered; will retry"
                );
                false
            }
        }
    }

    async fn keep_registered(self, renewal: Duration, readiness: Readiness) {
        // Registered only once ready: a router must not send work to a service still starting.
        while readiness.phase() != Phase::Serving {
            if readiness.phase() == Phase::Draining {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut registered = self.register().await;
        loop {
            // Until registered, retry sooner than a full renewal interval.
            let pause = if registered {
                renewal
            } else {
                renewal.min(Duration::from_secs(2))
            };
            tokio::time::sleep(pause).await;
            if !registered {
                registered = self.register().await;
                continue;
            }
            match self
                .call(reqwest::Method::PUT, &self.instance_path(), None)
                .await
            {
                Ok(status) if status == reqwest::StatusCode::NOT_FOUND => {
                    registered = self.register().await;
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(app = self.app, error, "heartbeat failed"),
            }
        }
    }
}

/// Percent-encodes what a path segment cannot hold as it is.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_and_bad_values_named() {
        let source = Source::from_pairs([(
            "EUREKA_CLIENT_SERVICEURL_DEFAULTZONE",
            "http://r1:8761/eureka/, http://r2:8761/eureka",
        )]);
        let config = RegistrationConfig::from_source(&source).unwrap().unwrap();
        assert_eq!(
            config.urls,
            ["http://r1:8761/eureka/", "http://r2:8761/eureka/"]
        );
        assert_eq!(config.renewal, Duration::from_secs(30));
        assert!(
            RegistrationConfig::from_source(&Source::from_pairs([("X", "1")]))
                .unwrap()
                .is_none()
        );
        for (name, value) in [
            ("FLOTILLA_REGISTRY_URL", "ftp://x/"),
            ("FLOTILLA_APP_NAME", "a b"),
            ("FLOTILLA_ADVERTISE_ADDR", "10.0.0"),
            ("FLOTILLA_REGISTRY_RENEWAL", "0s"),
        ] {
            let source =
                Source::from_pairs([("FLOTILLA_REGISTRY_URL", "http://r/eureka/"), (name, value)]);
            let error = RegistrationConfig::from_source(&source).unwrap_err();
            assert!(error.to_string().contains(name), "{error}");
        }
    }

    #[test]
    fn ids_are_encoded_for_the_path() {
        assert_eq!(percent_encode("host:app:80"), "host:app:80");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    }
}
