//! Spans to a Zipkin collector as Zipkin v2 JSON (`POST /api/v2/spans`).
//!
//! Written here rather than taken from `opentelemetry-zipkin` 0.33, which is deprecated
//! upstream and sends spans Zipkin cannot use: no `serviceName` in `localEndpoint` (it ignores
//! the resource) and `"parentId": "0000000000000000"` on root spans. The mapping follows the
//! OpenTelemetry specification's Zipkin exporter section: kind, timestamps in microseconds,
//! attributes as string tags, events as annotations, an error status as the `error` tag,
//! `peer.service` (else `server.address`) as the remote endpoint.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(crate) struct ZipkinExporter {
    url: String,
    service: String,
    client: reqwest::blocking::Client,
}

impl ZipkinExporter {
    pub(crate) fn new(url: String) -> Result<Self, String> {
        let client = reqwest::blocking::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| format!("the Zipkin exporter's HTTP client: {e}"))?;
        Ok(ZipkinExporter {
            url,
            service: "unknown_service".to_string(),
            client,
        })
    }
}

fn micros(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

/// A span id (16 hex digits) or trace id (32) as text, without an allocation.
struct Hex<const N: usize>([u8; N]);

impl<const N: usize> Hex<N> {
    fn of(bytes: &[u8]) -> Self {
        let mut out = [0u8; N];
        // `N` is twice the id's length: the hex crate writes every byte.
        let _ = hex::encode_to_slice(bytes, &mut out);
        Hex(out)
    }
}

impl<const N: usize> serde::Serialize for Hex<N> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Hex digits are ASCII.
        serializer.serialize_str(std::str::from_utf8(&self.0).unwrap_or_default())
    }
}

#[derive(serde::Serialize)]
struct Endpoint<'a> {
    #[serde(rename = "serviceName")]
    service_name: &'a str,
}

#[derive(serde::Serialize)]
struct Annotation<'a> {
    timestamp: u64,
    value: &'a str,
}

/// One span as Zipkin v2 JSON, borrowing the span's data.
#[derive(serde::Serialize)]
pub(crate) struct ZipkinSpan<'a> {
    #[serde(rename = "traceId")]
    trace_id: Hex<32>,
    id: Hex<16>,
    #[serde(rename = "parentId", skip_serializing_if = "Option::is_none")]
    parent_id: Option<Hex<16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    name: &'a str,
    timestamp: u64,
    duration: u64,
    #[serde(rename = "localEndpoint")]
    local_endpoint: Endpoint<'a>,
    #[serde(rename = "remoteEndpoint", skip_serializing_if = "Option::is_none")]
    remote_endpoint: Option<Endpoint<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "tags")]
    tags: Vec<(&'a str, std::borrow::Cow<'a, str>)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    annotations: Vec<Annotation<'a>>,
}

/// Tags as a JSON object, in the span's order.
fn tags<S: serde::Serializer>(
    tags: &[(&str, std::borrow::Cow<'_, str>)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(tags.iter().map(|(k, v)| (k, v)))
}

/// One span as Zipkin v2 JSON.
pub(crate) fn to_zipkin<'a>(span: &'a SpanData, service: &'a str) -> ZipkinSpan<'a> {
    use opentelemetry::Value as V;
    use std::borrow::Cow;
    let kind = match span.span_kind {
        SpanKind::Server => Some("SERVER"),
        SpanKind::Client => Some("CLIENT"),
        SpanKind::Producer => Some("PRODUCER"),
        SpanKind::Consumer => Some("CONSUMER"),
        SpanKind::Internal => None,
    };
    let start = micros(span.start_time);
    let mut tags = Vec::with_capacity(span.attributes.len() + 1);
    let mut remote = None;
    for kv in &span.attributes {
        let key = kv.key.as_str();
        let value: Cow<'a, str> = match &kv.value {
            V::String(text) => Cow::Borrowed(text.as_str()),
            other => Cow::Owned(other.to_string()),
        };
        match key {
            "peer.service" => remote = Some(kv),
            "server.address" if remote.is_none() => remote = Some(kv),
            _ => {}
        }
        tags.push((key, value));
    }
    if let Status::Error { description } = &span.status {
        let text = if description.is_empty() {
            "true"
        } else {
            description.as_ref()
        };
        tags.push(("error", Cow::Borrowed(text)));
    }
    let remote_endpoint = remote.and_then(|kv| match &kv.value {
        V::String(text) => Some(Endpoint {
            service_name: text.as_str(),
        }),
        _ => None,
    });
    ZipkinSpan {
        trace_id: Hex::of(&span.span_context.trace_id().to_bytes()),
        id: Hex::of(&span.span_context.span_id().to_bytes()),
        parent_id: (span.parent_span_id != SpanId::INVALID)
            .then(|| Hex::of(&span.parent_span_id.to_bytes())),
        kind,
        name: span.name.as_ref(),
        timestamp: start,
        duration: micros(span.end_time).saturating_sub(start).max(1),
        local_endpoint: Endpoint {
            service_name: service,
        },
        remote_endpoint,
        tags,
        annotations: span
            .events
            .iter()
            .map(|event| Annotation {
                timestamp: micros(event.timestamp),
                value: event.name.as_ref(),
            })
            .collect(),
    }
}

/// The batch as JSON, in a buffer sized for it (a span is about 400 bytes): growing it by
/// doubling would copy it several times.
fn encode(batch: &[ZipkinSpan]) -> Vec<u8> {
    let mut body = Vec::with_capacity(batch.len() * 512);
    // Serialising borrowed strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut body, batch);
    body
}

impl SpanExporter for ZipkinExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let body: Vec<ZipkinSpan> = batch.iter().map(|s| to_zipkin(s, &self.service)).collect();
        // The batch processor runs exports on a thread of its own, outside any runtime: a
        // blocking call is what it expects.
        let sent = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(encode(&body))
            .send();
        match sent {
            Ok(answer) if answer.status().is_success() => Ok(()),
            Ok(answer) => Err(OTelSdkError::InternalFailure(format!(
                "the Zipkin collector answered {}",
                answer.status()
            ))),
            Err(error) => Err(OTelSdkError::InternalFailure(format!(
                "the Zipkin collector: {error}"
            ))),
        }
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        if let Some(name) = resource.get(&opentelemetry::Key::new("service.name")) {
            self.service = name.to_string();
        }
    }
}
