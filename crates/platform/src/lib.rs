//! What every Flotilla service shares, so that each service is only its own logic.
//!
//! A service declares its settings, builds an axum `Router` of its own routes, wraps it with
//! [`contract_router`] (health, readiness, metrics, request ids, request logs) and hands it to
//! [`serve`], which runs it until [`shutdown_signal`] and then drains.
//!
//! Layout:
//! - [`config`]: settings from env vars and flags, typed parsing with one-line errors.
//! - [`cli`]: clap flags generated from a service's settings; the settings all services share.
//! - [`telemetry`]: log setup (text or JSON lines) and the Prometheus recorder.
//! - [`health`]: liveness and readiness with dependency checks.
//! - [`contract`]: the router every service is wrapped in.
//! - [`observe`]: per-request log line and metrics.
//! - [`otel`]: distributed tracing: a span per request, W3C and B3 propagation, export to
//!   Zipkin or OTLP.
//! - [`errors`]: the JSON error body of the JSON APIs.
//! - [`server`]: HTTP/1.1 + HTTP/2 server on hyper with limits (connection cap with recycling,
//!   first-request, idle and send timeouts) and graceful shutdown; its parts also serve the
//!   gateway's listeners.
//! - [`tls`]: rustls for a listener, certificates swapped on reload, HTTP/2 by ALPN.
//! - [`call`]: calls to other services, protected: timeout, retries within a budget, circuit
//!   breaker, bulkhead, fallback, with metrics.
//! - [`registration`]: registering with a service registry (Eureka's API), and which address to
//!   advertise.

pub mod call;
pub mod cli;
pub mod config;
pub mod contract;
pub mod errors;
pub mod health;
pub mod observe;
pub mod otel;
pub mod registration;
pub mod server;
pub mod telemetry;
pub mod tls;

use std::time::Duration;

pub use call::{CallError, CallPolicy, CallTarget, CircuitState, Verdict};
pub use config::{ConfigError, Setting, Source};
pub use contract::{
    Contracted, ErrorStyle, Handler, RequestLayers, RouterHandler, contract_openapi,
    contract_router,
};
pub use errors::{ErrorBody, error_response};
pub use health::{Phase, Readiness};
pub use server::{ServeOptions, bind, serve, shutdown_signal};
pub use telemetry::{LogConfig, init_logging};

/// The settings every service has: how it logs and how it shuts down.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    pub log: LogConfig,
    pub drain_timeout: Duration,
    pub shutdown_delay: Duration,
    /// Where to register, when a registry is given.
    pub registration: Option<registration::RegistrationConfig>,
    /// Where spans go, when a collector is given.
    pub tracing: otel::TracingConfig,
    /// How calls to other services are protected, per target.
    pub calls: call::CallSettings,
}

impl CommonConfig {
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        Ok(CommonConfig {
            log: LogConfig::from_source(source)?,
            drain_timeout: source.parse_or_default(&cli::DRAIN_TIMEOUT, config::parse_duration)?,
            shutdown_delay: source
                .parse_or_default(&cli::SHUTDOWN_DELAY, config::parse_duration)?,
            registration: registration::RegistrationConfig::from_source(source)?,
            tracing: otel::TracingConfig::from_source(source)?,
            calls: call::CallSettings::from_source(source)?,
        })
    }

    /// Server options with this config's shutdown timings.
    pub fn serve_options(&self) -> ServeOptions {
        ServeOptions {
            drain_timeout: self.drain_timeout,
            shutdown_delay: self.shutdown_delay,
            registration: self.registration.clone(),
            ..ServeOptions::default()
        }
    }
}

/// This machine's host name (the container id on Docker), for instance ids and logs.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}
