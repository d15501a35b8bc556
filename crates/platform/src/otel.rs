//! Distributed tracing for every service, on the OpenTelemetry SDK: a SERVER span per request
//! (started by [`crate::RequestLayers`]), its parent taken from the request's W3C
//! `traceparent`/`tracestate`, else B3 (`b3`, then Sleuth's `X-B3-*` headers); outgoing calls
//! carry both W3C and B3 ([`inject`]). Spans go in batches to a Zipkin collector
//! (`FLOTILLA_TRACES_URL`, such as `flotilla traces`) or an OTLP endpoint
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`), from a bounded queue on a thread of their own: a request
//! never waits for the collector, and when it is down spans are dropped, not queued without end.
//!
//! Off (no URL given), nothing is set up and a request pays one branch.

use std::sync::OnceLock;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, SdkTracer,
    SdkTracerProvider, ShouldSample,
};

use crate::config::{ConfigError, Setting, Source};

mod propagation;
mod queue;
mod zipkin;

use propagation::{HeaderWriter, PROPAGATION_HEADERS, has_propagation_headers};
pub use propagation::{extract, inject, propagation_headers};

/// `FLOTILLA_TRACES_URL`: a Zipkin collector, as Sleuth's `spring.zipkin.base-url`.
pub const TRACES_URL: Setting = Setting::new(
    "FLOTILLA_TRACES_URL",
    "traces-url",
    "URL",
    "Zipkin collector to send spans to (http://traces:9411, or its full /api/v2/spans URL)",
);
/// `OTEL_EXPORTER_OTLP_ENDPOINT`: an OTLP/HTTP endpoint instead.
pub const OTLP_ENDPOINT: Setting = Setting::new(
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "otlp-endpoint",
    "URL",
    "OTLP/HTTP endpoint to send spans to instead (http://collector:4318)",
);
/// `OTEL_SERVICE_NAME`: the service name on spans (default: the service's own name).
pub const SERVICE_NAME: Setting = Setting::new(
    "OTEL_SERVICE_NAME",
    "otel-service-name",
    "NAME",
    "service name on the spans (default: FLOTILLA_APP_NAME, else the service's name)",
);
/// `OTEL_TRACES_SAMPLER`: OpenTelemetry's sampler names.
pub const SAMPLER: Setting = Setting::new(
    "OTEL_TRACES_SAMPLER",
    "traces-sampler",
    "SAMPLER",
    "parentbased_traceidratio, parentbased_always_on, always_on, always_off, traceidratio, ...",
)
.default("parentbased_always_on");
/// `OTEL_TRACES_SAMPLER_ARG`: the ratio of the ratio samplers.
pub const SAMPLER_ARG: Setting = Setting::new(
    "OTEL_TRACES_SAMPLER_ARG",
    "traces-sampler-arg",
    "RATIO",
    "ratio of traces sampled by the *traceidratio samplers, 0 to 1",
)
.default("1.0");

/// `OTEL_BSP_MAX_QUEUE_SIZE`: most spans waiting to be sent; past it new ones are dropped
/// (and counted).
pub const QUEUE_SIZE: Setting = Setting::new(
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "traces-queue-size",
    "SPANS",
    "most spans waiting to be sent; past it new ones are dropped and counted",
)
.default("4096");

/// Where spans go and which are kept.
#[derive(Debug, Clone)]
pub struct TracingConfig {
    pub exporter: Option<Exporter>,
    pub service_name: Option<String>,
    pub sampler: SamplerChoice,
    /// Most spans waiting to be sent.
    pub queue_size: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Exporter {
    /// The full `/api/v2/spans` URL.
    Zipkin(String),
    Otlp(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum SamplerChoice {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBased(Box<SamplerChoice>),
}

impl SamplerChoice {
    fn sampler(&self) -> Sampler {
        match self {
            SamplerChoice::AlwaysOn => Sampler::AlwaysOn,
            SamplerChoice::AlwaysOff => Sampler::AlwaysOff,
            SamplerChoice::Ratio(ratio) => Sampler::TraceIdRatioBased(*ratio),
            SamplerChoice::ParentBased(root) => Sampler::ParentBased(Box::new(root.sampler())),
        }
    }
}

fn http_url(value: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(value.trim())
        .map_err(|_| "an http:// URL such as http://traces:9411".to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("an http:// URL such as http://traces:9411".to_string());
    }
    Ok(url)
}

impl TracingConfig {
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let zipkin = source.parse(&TRACES_URL, |v| {
            let url = http_url(v)?;
            let text = url.as_str().trim_end_matches('/').to_string();
            Ok(if text.ends_with("/api/v2/spans") {
                text
            } else {
                format!("{text}/api/v2/spans")
            })
        })?;
        let otlp = source.parse(&OTLP_ENDPOINT, |v| {
            let url = http_url(v)?;
            let text = url.as_str().trim_end_matches('/').to_string();
            Ok(if text.ends_with("/v1/traces") {
                text
            } else {
                format!("{text}/v1/traces")
            })
        })?;
        let ratio = source.parse_or_default(&SAMPLER_ARG, |v| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| "a ratio from 0 to 1, such as 0.1".to_string())
        })?;
        let sampler = source.parse_or_default(&SAMPLER, |v| {
            use SamplerChoice::*;
            Ok(match v.trim() {
                "always_on" => AlwaysOn,
                "always_off" => AlwaysOff,
                "traceidratio" => Ratio(ratio),
                "parentbased_always_on" => ParentBased(Box::new(AlwaysOn)),
                "parentbased_always_off" => ParentBased(Box::new(AlwaysOff)),
                "parentbased_traceidratio" => ParentBased(Box::new(Ratio(ratio))),
                _ => {
                    return Err("one of always_on, always_off, traceidratio, \
                        parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
                        .to_string());
                }
            })
        })?;
        Ok(TracingConfig {
            exporter: zipkin.map(Exporter::Zipkin).or(otlp.map(Exporter::Otlp)),
            service_name: source.parse(&SERVICE_NAME, |v| Ok(v.trim().to_string()))?,
            sampler,
            queue_size: source.parse_or_default(&QUEUE_SIZE, |v| {
                v.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1_000_000).contains(n))
                    .ok_or_else(|| "a number of spans from 1 to 1000000".to_string())
            })?,
        })
    }
}

static TRACER: OnceLock<SdkTracer> = OnceLock::new();
/// The tracer's sampler, asked before a request's span is made.
static REQUEST_SAMPLER: OnceLock<Sampler> = OnceLock::new();

thread_local! {
    /// The trace id the next root span on this thread takes ([`PresetIds`]).
    static PRESET_TRACE_ID: std::cell::Cell<Option<TraceId>> = const { std::cell::Cell::new(None) };
}

/// The tracer's ids: random, except a root request span's trace id, which
/// [`RequestSpan::start`] chose before asking the sampler and sets just before starting it.
#[derive(Debug, Default)]
struct PresetIds(RandomIdGenerator);

impl IdGenerator for PresetIds {
    fn new_trace_id(&self) -> TraceId {
        PRESET_TRACE_ID
            .take()
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> opentelemetry::trace::SpanId {
        self.0.new_span_id()
    }
}

/// Flushes what is queued when dropped (at exit). Hold it until the process ends.
#[must_use = "dropping the guard stops tracing"]
pub struct TracingGuard(Option<SdkTracerProvider>);

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Starts exporting, when the config names a collector; `service` names the spans unless
/// `OTEL_SERVICE_NAME` does. Call once, before serving (later calls keep the first tracer).
pub fn init(config: &TracingConfig, service: &str) -> Result<TracingGuard, String> {
    let Some(exporter) = &config.exporter else {
        return Ok(TracingGuard(None));
    };
    let name = config
        .service_name
        .clone()
        .unwrap_or_else(|| service.to_ascii_lowercase());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(name)
        .build();
    let batch = opentelemetry_sdk::trace::BatchConfigBuilder::default()
        .with_max_queue_size(config.queue_size)
        .with_max_export_batch_size(512.min(config.queue_size))
        .with_scheduled_delay(std::time::Duration::from_millis(500))
        .build();
    let admission = queue::Admission::new(config.queue_size);
    let processor = match exporter {
        Exporter::Zipkin(url) => BatchSpanProcessor::builder(queue::Counted {
            inner: zipkin::ZipkinExporter::new(url.clone())?,
            admission: admission.clone(),
        })
        .with_batch_config(batch)
        .build(),
        Exporter::Otlp(url) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(url)
                .build()
                .map_err(|e| format!("the OTLP exporter: {e}"))?;
            BatchSpanProcessor::builder(queue::Counted {
                inner: exporter,
                admission: admission.clone(),
            })
            .with_batch_config(batch)
            .build()
        }
    };
    let processor = queue::Bounded {
        inner: processor,
        admission,
    };
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        // The configured sampler decides for each request (`RequestSpan::start`); a span is
        // only started under a sampled request.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_id_generator(PresetIds::default())
        .with_resource(resource)
        .build();
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "flotilla");
    let _ = REQUEST_SAMPLER.set(config.sampler.sampler());
    let _ = TRACER.set(tracer);
    Ok(TracingGuard(Some(provider)))
}

/// The tracer, when tracing is on.
pub fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

/// Whether the current context (the request being handled, while its handler runs) is a
/// sampled trace's: what spans started now would be recorded.
pub fn current_sampled() -> bool {
    tracer().is_some() && Context::current().span().span_context().is_sampled()
}

/// The current context's trace id (the request being handled, while its handler runs) as 32
/// lower-case hex digits, when it is sampled.
pub fn current_trace_id() -> Option<[u8; 32]> {
    tracer()?;
    let current = Context::current();
    let span = current.span();
    if !span.span_context().is_sampled() {
        return None;
    }
    let mut text = [0u8; 32];
    let id = span.span_context().trace_id().to_bytes();
    hex::encode_to_slice(id, &mut text).ok()?;
    Some(text)
}

/// The CLIENT span of one outgoing call, a child of the trace context `parent` headers carry
/// (a request's headers, which name its SERVER span).
pub struct ClientSpan {
    context: Context,
}

impl ClientSpan {
    /// Starts the span of a call to `peer` (the service's name, for the dependency graph) under
    /// the current context's span (the request being handled, while its handler runs); `None`
    /// when tracing is off, or the request is not sampled (its calls then pass on its
    /// [`propagation_headers`]).
    /// `url` is only made for a span that is started.
    pub fn start_current(method: &str, url: impl FnOnce() -> String, peer: &str) -> Option<Self> {
        if !current_sampled() {
            return None;
        }
        Self::start_under(Context::current(), method, url(), peer)
    }

    fn start_under(parent: Context, method: &str, url: String, peer: &str) -> Option<Self> {
        let tracer = tracer()?;
        let span = tracer
            .span_builder(format!("{method} {peer}"))
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("http.request.method", method.to_string()),
                KeyValue::new("url.full", url),
                KeyValue::new("peer.service", peer.to_string()),
            ])
            .start_with_context(tracer, &parent);
        Some(ClientSpan {
            context: parent.with_span(span),
        })
    }

    /// The W3C and B3 headers the call carries.
    pub fn headers(&self) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        inject(&self.context, &mut headers);
        headers
    }

    /// Replaces the propagation headers in `headers` (a request being passed on) with this
    /// span's.
    pub fn replace_headers(&self, headers: &mut http::HeaderMap) {
        for name in PROPAGATION_HEADERS {
            headers.remove(*name);
        }
        inject(&self.context, headers);
    }

    /// Records the answer's status (`None`: no answer) and ends the span; a failure to get an
    /// answer and a 5xx are errors.
    pub fn finish(self, status: Option<u16>) {
        let span = self.context.span();
        match status {
            Some(status) => {
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                if status >= 500 {
                    span.set_status(Status::error(format!("answered {status}")));
                }
            }
            None => span.set_status(Status::error("no answer")),
        }
        span.end();
    }
}

/// A span within a request (a database query, say): a child of the request's span, which is
/// the current context while its handler runs.
pub struct ChildSpan {
    context: Context,
}

impl ChildSpan {
    /// Starts a span of `kind` under the current request's span; `None` when tracing is off or
    /// no request is being traced (background work makes no orphan traces).
    pub fn start(name: &str, kind: SpanKind, attributes: Vec<KeyValue>) -> Option<Self> {
        let tracer = tracer()?;
        let parent = Context::current();
        if !parent.has_active_span() {
            return None;
        }
        let span = tracer
            .span_builder(name.to_string())
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        Some(ChildSpan {
            context: parent.with_span(span),
        })
    }

    /// Ends the span, as an error when `error` says what failed.
    pub fn finish(self, error: Option<String>) {
        let span = self.context.span();
        if let Some(error) = error {
            span.set_status(Status::error(error));
        }
        span.end();
    }
}

/// The SERVER span of one request, ended by [`RequestSpan::finish`] (or when dropped).
pub struct RequestSpan {
    /// The span's context; none for a request the sampler left out (no span is made).
    context: Option<Context>,
    trace_id: TraceId,
    method: &'static str,
}

/// A method's name without an allocation for the usual ones.
fn method_name(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

impl RequestSpan {
    /// Starts the span of `request`, a child of the context its headers carry, when tracing is
    /// on.
    ///
    /// With `forwards` (a service that passes the request's headers on, or makes calls for
    /// it: the gateway, the board), a request left out by the sampler that carries no trace
    /// context gets a W3C header saying so, which its calls pass on ([`propagation_headers`]).
    /// A sampled one's calls are [`ClientSpan`]s, whose headers replace the request's.
    ///
    /// Health checks and metric scrapes are not traced (as Sleuth skips its actuator paths):
    /// they would bury the requests people look for.
    pub fn start(
        request: &mut http::Request<axum::body::Body>,
        forwards: bool,
    ) -> Option<RequestSpan> {
        let tracer = tracer()?;
        if crate::health::PROBES.contains(&request.uri().path()) {
            return None;
        }
        let carried = has_propagation_headers(request.headers());
        let parent = if carried {
            extract(request.headers())
        } else {
            Context::new()
        };
        let method = method_name(request.method());
        // The configured sampler decides first, on the caller's trace id or a new one: a
        // request it leaves out (most of them at a low ratio) makes no span at all, only the id
        // its log line and, at the first hop of a forwarding service, its "not sampled" header
        // need. (The tracer's own sampler then keeps every span it is asked for under a sampled
        // parent, and every root: it is only asked for the sampled ones.)
        let parent_span = parent.span().span_context().clone();
        let trace_id = if parent_span.is_valid() {
            parent_span.trace_id()
        } else {
            RandomIdGenerator::default().new_trace_id()
        };
        let decision = REQUEST_SAMPLER.get().map(|sampler| {
            sampler
                .should_sample(Some(&parent), trace_id, method, &SpanKind::Server, &[], &[])
                .decision
        });
        if decision != Some(SamplingDecision::RecordAndSample) {
            if forwards && !parent_span.is_valid() {
                // Not sampled, and the first hop (no caller's context, or only malformed
                // headers): a W3C header saying so (flags 00), so the next services do not
                // sample a trace this one left out. (A caller's valid headers already carry its
                // decision, which this one followed.)
                let left_out = SpanContext::new(
                    trace_id,
                    RandomIdGenerator::default().new_span_id(),
                    TraceFlags::default(),
                    false,
                    Default::default(),
                );
                let context = Context::new().with_remote_span_context(left_out);
                let headers = request.headers_mut();
                TraceContextPropagator::new().inject_context(&context, &mut HeaderWriter(headers));
            }
            return Some(RequestSpan {
                context: None,
                trace_id,
                method,
            });
        }
        // A root span gets the trace id the sampler decided on, so that the decision stays a
        // function of the trace id (as `traceidratio` is, in every service).
        let root = !parent_span.is_valid();
        if root {
            PRESET_TRACE_ID.set(Some(trace_id));
        }
        let mut span = tracer
            .span_builder(method)
            .with_kind(SpanKind::Server)
            .start_with_context(tracer, &parent);
        if root {
            PRESET_TRACE_ID.set(None);
        }
        span.set_attribute(KeyValue::new("http.request.method", method));
        span.set_attribute(KeyValue::new("url.path", request.uri().path().to_string()));
        Some(RequestSpan {
            trace_id: span.span_context().trace_id(),
            context: Some(parent.with_span(span)),
            method,
        })
    }

    /// The span's context, the current one while the request's handler runs; none when the
    /// request is not sampled (it has no span, and its handler makes none).
    pub fn context(&self) -> Option<&Context> {
        self.context.as_ref()
    }

    /// The trace id, for the request's log line.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// Names the span by its route, records the status, marks 5xx answers as errors, and ends it.
    pub fn finish(self, route: &str, status: u16) {
        let Some(context) = self.context else {
            return;
        };
        let span = context.span();
        span.update_name(format!("{} {route}", self.method));
        span.set_attribute(KeyValue::new("http.route", route.to_string()));
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            span.set_status(Status::error(format!("answered {status}")));
        }
        span.end();
    }
}
