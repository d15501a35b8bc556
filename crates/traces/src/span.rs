//! Zipkin v2 spans as clients send them, read strictly and normalised the way Zipkin stores them:
//! ids in lower-case hex of their canonical length (a 128-bit trace id whose high half is zero is
//! its 64-bit form, so a trace is found by either), names and service names in lower case. Every
//! size is bounded; a batch with one bad span is refused whole, naming the span and the problem.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most spans one request may carry.
pub const MAX_SPANS_PER_BATCH: usize = 10_000;
/// Longest name, service name or tag key.
const MAX_NAME: usize = 256;
/// Longest tag value or annotation value.
const MAX_VALUE: usize = 64 * 1024;
/// Most tags, and most annotations, on one span.
const MAX_ENTRIES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Kind {
    Client,
    Server,
    Producer,
    Consumer,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotation {
    pub timestamp: u64,
    pub value: String,
}

/// One span, as Zipkin's v2 JSON has it (timestamps and durations in microseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    pub trace_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_endpoint: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_endpoint: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<Annotation>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
}

impl Span {
    /// The service that recorded the span.
    pub fn service(&self) -> Option<&str> {
        self.local_endpoint.as_ref()?.service_name.as_deref()
    }

    /// The service on the other side of the call, when recorded.
    pub fn remote_service(&self) -> Option<&str> {
        self.remote_endpoint.as_ref()?.service_name.as_deref()
    }

    /// Whether the span failed: it has an `error` tag, as Zipkin marks errors.
    pub fn is_error(&self) -> bool {
        self.tags.contains_key("error")
    }
}

/// Reads a batch: a JSON array of v2 spans, each checked and normalised. Read straight into
/// spans (not through a JSON tree first: that doubled the collector's cost per span); an error
/// names the span by its place in the array.
pub fn parse_batch(body: &[u8]) -> Result<Vec<Span>, String> {
    let mut reader = serde_json::Deserializer::from_slice(body);
    let spans: Vec<Span> = match serde_path_to_error::deserialize(&mut reader) {
        Ok(spans) => spans,
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(format!("malformed JSON: {inner}"));
            }
            // `[3].localEndpoint.port`: span 3.
            let index = path
                .strip_prefix('[')
                .and_then(|rest| rest.split(']').next())
                .and_then(|i| i.parse::<usize>().ok());
            return Err(match index {
                Some(index) => format!("span {index}: {inner} (expected Zipkin v2 JSON)"),
                None => "expected a JSON array of v2 spans".to_string(),
            });
        }
    };
    if reader.end().is_err() {
        return Err("malformed JSON: trailing characters after the array".to_string());
    }
    if spans.len() > MAX_SPANS_PER_BATCH {
        return Err(format!(
            "{} spans in one request; at most {MAX_SPANS_PER_BATCH}",
            spans.len()
        ));
    }
    spans
        .into_iter()
        .enumerate()
        .map(|(index, span)| normalise(span).map_err(|e| format!("span {index}: {e}")))
        .collect()
}

/// Checks a span's bounds and brings it to the form it is stored and answered in.
pub fn normalise(mut span: Span) -> Result<Span, String> {
    span.trace_id = trace_id(&span.trace_id).map_err(|e| format!("traceId {e}"))?;
    span.id = span_id(&span.id).map_err(|e| format!("id {e}"))?;
    span.parent_id = match span.parent_id.as_deref() {
        // All zeros is "no parent" to Zipkin (OpenTelemetry's Zipkin exporter sends it so).
        None | Some("") => None,
        Some(parent) if parent.bytes().all(|b| b == b'0') => None,
        Some(parent) => Some(span_id(parent).map_err(|e| format!("parentId {e}"))?),
    };
    span.name = lower_name(span.name.take(), "name")?;
    for endpoint in [&mut span.local_endpoint, &mut span.remote_endpoint]
        .into_iter()
        .flatten()
    {
        endpoint.service_name = lower_name(endpoint.service_name.take(), "serviceName")?;
        bounded(endpoint.ipv4.as_deref(), 64, "ipv4")?;
        bounded(endpoint.ipv6.as_deref(), 64, "ipv6")?;
    }
    if span.tags.len() > MAX_ENTRIES || span.annotations.len() > MAX_ENTRIES {
        return Err(format!(
            "{} tags and {} annotations; at most {MAX_ENTRIES} of each",
            span.tags.len(),
            span.annotations.len()
        ));
    }
    for (key, value) in &span.tags {
        if key.is_empty() {
            return Err("a tag with an empty key".to_string());
        }
        bounded(Some(key), MAX_NAME, "a tag key")?;
        bounded(Some(value), MAX_VALUE, "a tag value")?;
    }
    for annotation in &span.annotations {
        bounded(Some(&annotation.value), MAX_VALUE, "an annotation value")?;
    }
    if span.timestamp == Some(0) {
        span.timestamp = None;
    }
    if span.duration == Some(0) {
        span.duration = None;
    }
    Ok(span)
}

fn lower_name(name: Option<String>, what: &str) -> Result<Option<String>, String> {
    match name {
        None => Ok(None),
        Some(name) if name.is_empty() => Ok(None),
        Some(name) => {
            bounded(Some(&name), MAX_NAME, what)?;
            Ok(Some(name.to_lowercase()))
        }
    }
}

fn bounded(value: Option<&str>, max: usize, what: &str) -> Result<(), String> {
    match value {
        Some(value) if value.len() > max => Err(format!(
            "{what} is {} bytes long; at most {max}",
            value.len()
        )),
        _ => Ok(()),
    }
}

/// A trace id in its stored form: 16 or 32 lower-case hex digits (shorter ones padded), a
/// 128-bit id with a zero high half as its 64-bit form. Not all zeros.
pub fn trace_id(id: &str) -> Result<String, String> {
    let id = hex(id, 32)?;
    let padded = if id.len() <= 16 {
        format!("{id:0>16}")
    } else {
        format!("{id:0>32}")
    };
    Ok(match padded.strip_prefix("0000000000000000") {
        Some(low) if padded.len() == 32 => low.to_string(),
        _ => padded,
    })
}

/// A span id in its stored form: 16 lower-case hex digits, not all zeros.
pub fn span_id(id: &str) -> Result<String, String> {
    Ok(format!("{:0>16}", hex(id, 16)?))
}

fn hex(id: &str, max: usize) -> Result<String, String> {
    if id.is_empty() || id.len() > max || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("must be 1 to {max} hex digits"));
    }
    if id.bytes().all(|b| b == b'0') {
        return Err("must not be all zeros".to_string());
    }
    Ok(id.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_take_their_canonical_form() {
        assert_eq!(trace_id("ABC").unwrap(), "0000000000000abc");
        assert_eq!(
            trace_id("00000000000000004d1e00c0db9010db").unwrap(),
            "4d1e00c0db9010db"
        );
        assert_eq!(
            trace_id("463ac35c9f6413ad48485a3953bb6124").unwrap(),
            "463ac35c9f6413ad48485a3953bb6124"
        );
        assert!(trace_id("").is_err());
        assert!(trace_id("0000").is_err());
        assert!(trace_id("xyz").is_err());
        assert!(trace_id(&"a".repeat(33)).is_err());
        assert_eq!(span_id("1").unwrap(), "0000000000000001");
        assert!(span_id(&"a".repeat(17)).is_err());
    }

    #[test]
    fn a_batch_is_normalised_or_refused_whole_naming_the_span() {
        let good = br#"[{"traceId":"ABC","id":"1","name":"GET /Todo","kind":"SERVER",
            "localEndpoint":{"serviceName":"Todo-API"},"tags":{"http.method":"GET"}}]"#;
        let spans = parse_batch(good).unwrap();
        assert_eq!(spans[0].name.as_deref(), Some("get /todo"));
        assert_eq!(spans[0].service(), Some("todo-api"));
        assert_eq!(spans[0].kind, Some(Kind::Server));

        let root = br#"[{"traceId":"a","id":"1","parentId":"0000000000000000"}]"#;
        assert_eq!(parse_batch(root).unwrap()[0].parent_id, None);

        let bad = br#"[{"traceId":"a","id":"1"},{"traceId":"a","id":"zz"}]"#;
        assert_eq!(
            parse_batch(bad).unwrap_err(),
            "span 1: id must be 1 to 16 hex digits"
        );
        assert!(parse_batch(b"{}").unwrap_err().contains("array"));
        assert!(parse_batch(b"[").unwrap_err().contains("malformed JSON"));
        let number_tag = br#"[{"traceId":"a","id":"1","tags":{"n":1}}]"#;
        assert!(parse_batch(number_tag).unwrap_err().starts_with("span 0: "));
        let kind = br#"[{"traceId":"a","id":"1","kind":"SIDEWAYS"}]"#;
        assert!(parse_batch(kind).is_err());
    }
}
