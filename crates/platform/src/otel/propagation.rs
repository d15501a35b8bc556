//! How a trace context travels in HTTP headers: read as W3C Trace Context, else B3 (single
//! header, then multi-header); written as W3C and multi-header B3.

use std::sync::OnceLock;

use opentelemetry::Context;
use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;

use super::tracer;

/// The propagation every service uses: it reads B3 (single header, then multi-header) and W3C
/// Trace Context, W3C winning when both are there; it writes W3C and multi-header B3 (what
/// Sleuth and the Zipkin clients read; the single `b3` header would say the same again).
// opentelemetry-zipkin is marked deprecated in favour of OTLP; its B3 propagator is still
// released with the SDK and is the one there is (B3 is what Sleuth sends). Its exporter is not
// used: see `super::zipkin`.
#[allow(deprecated)]
fn propagator(reading: bool) -> &'static TextMapCompositePropagator {
    static READING: OnceLock<TextMapCompositePropagator> = OnceLock::new();
    static WRITING: OnceLock<TextMapCompositePropagator> = OnceLock::new();
    let (cell, encoding) = if reading {
        (
            &READING,
            opentelemetry_zipkin::B3Encoding::SingleAndMultiHeader,
        )
    } else {
        (&WRITING, opentelemetry_zipkin::B3Encoding::MultipleHeader)
    };
    cell.get_or_init(|| {
        TextMapCompositePropagator::new(vec![
            Box::new(opentelemetry_zipkin::Propagator::with_encoding(encoding)),
            Box::new(TraceContextPropagator::new()),
        ])
    })
}

struct HeaderReader<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

pub(super) struct HeaderWriter<'a>(pub(super) &'a mut http::HeaderMap);

impl opentelemetry::propagation::Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` (the usual one) is left out, as W3C allows.
        if value.is_empty() {
            return;
        }
        // The propagators' own names, without parsing them each time.
        let name = match key {
            "traceparent" => http::HeaderName::from_static("traceparent"),
            "tracestate" => http::HeaderName::from_static("tracestate"),
            "x-b3-traceid" => http::HeaderName::from_static("x-b3-traceid"),
            "x-b3-spanid" => http::HeaderName::from_static("x-b3-spanid"),
            "x-b3-parentspanid" => http::HeaderName::from_static("x-b3-parentspanid"),
            "x-b3-sampled" => http::HeaderName::from_static("x-b3-sampled"),
            "x-b3-flags" => http::HeaderName::from_static("x-b3-flags"),
            other => match http::HeaderName::from_bytes(other.as_bytes()) {
                Ok(name) => name,
                Err(_) => return,
            },
        };
        if let Ok(value) = http::HeaderValue::try_from(value) {
            self.0.insert(name, value);
        }
    }
}

/// The trace context a request carries (W3C, else B3); an empty context when it carries none
/// or only malformed headers, so a new trace starts.
pub fn extract(headers: &http::HeaderMap) -> Context {
    propagator(true).extract(&HeaderReader(headers))
}

/// Writes `context`'s span into `headers` as W3C and B3, for an outgoing call.
pub fn inject(context: &Context, headers: &mut http::HeaderMap) {
    propagator(false).inject_context(context, &mut HeaderWriter(headers));
}

/// The trace context `headers` carry, to pass on with a call made for a request that is not
/// sampled (its decision goes with it); empty when tracing is off.
pub fn propagation_headers(headers: &http::HeaderMap) -> http::HeaderMap {
    let mut out = http::HeaderMap::new();
    if tracer().is_none() {
        return out;
    }
    for name in PROPAGATION_HEADERS {
        if let Some(value) = headers.get(*name) {
            out.insert(*name, value.clone());
        }
    }
    out
}

/// The headers that carry a trace context, in either format.
pub(super) const PROPAGATION_HEADERS: &[&str] = &[
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

/// Whether `headers` carry a trace context in either format (one pass over the names; most
/// requests, the first hop's, carry none, and then nothing is parsed).
pub(super) fn has_propagation_headers(headers: &http::HeaderMap) -> bool {
    headers
        .keys()
        .any(|name| PROPAGATION_HEADERS.contains(&name.as_str()))
}
