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
use serde_json::{Map, Value, json};

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

/// One span as Zipkin v2 JSON.
pub(crate) fn to_zipkin(span: &SpanData, service: &str) -> Value {
    let mut out = Map::new();
    out.insert(
        "traceId".into(),
        span.span_context.trace_id().to_string().into(),
    );
    out.insert("id".into(), span.span_context.span_id().to_string().into());
    if span.parent_span_id != SpanId::INVALID {
        out.insert("parentId".into(), span.parent_span_id.to_string().into());
    }
    let kind = match span.span_kind {
        SpanKind::Server => Some("SERVER"),
        SpanKind::Client => Some("CLIENT"),
        SpanKind::Producer => Some("PRODUCER"),
        SpanKind::Consumer => Some("CONSUMER"),
        SpanKind::Internal => None,
    };
    if let Some(kind) = kind {
        out.insert("kind".into(), kind.into());
    }
    out.insert("name".into(), span.name.to_string().into());
    let start = micros(span.start_time);
    out.insert("timestamp".into(), start.into());
    out.insert(
        "duration".into(),
        micros(span.end_time).saturating_sub(start).max(1).into(),
    );
    out.insert("localEndpoint".into(), json!({ "serviceName": service }));
    let mut tags = Map::new();
    let mut remote = None;
    for kv in &span.attributes {
        let key = kv.key.as_str();
        let value = kv.value.to_string();
        match key {
            "peer.service" => remote = Some(value.clone()),
            "server.address" if remote.is_none() => remote = Some(value.clone()),
            _ => {}
        }
        tags.insert(key.to_string(), value.into());
    }
    if let Status::Error { description } = &span.status {
        let text = if description.is_empty() {
            "true".to_string()
        } else {
            description.to_string()
        };
        tags.insert("error".into(), text.into());
    }
    if let Some(remote) = remote {
        out.insert("remoteEndpoint".into(), json!({ "serviceName": remote }));
    }
    if !tags.is_empty() {
        out.insert("tags".into(), tags.into());
    }
    let annotations: Vec<Value> = span
        .events
        .iter()
        .map(|event| json!({"timestamp": micros(event.timestamp), "value": event.name.to_string()}))
        .collect();
    if !annotations.is_empty() {
        out.insert("annotations".into(), annotations.into());
    }
    Value::Object(out)
}

impl SpanExporter for ZipkinExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let count = batch.len() as u64;
        let body: Vec<Value> = batch.iter().map(|s| to_zipkin(s, &self.service)).collect();
        // The batch processor runs exports on a thread of its own, outside any runtime: a
        // blocking call is what it expects.
        let sent = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap_or_default())
            .send();
        let outcome = match &sent {
            Ok(answer) if answer.status().is_success() => "exported",
            _ => "failed",
        };
        metrics::counter!("traces_export_spans_total", "outcome" => outcome).increment(count);
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
