//! Reading one instance's `/metrics`: the families the dashboard shows, pulled out of the
//! Prometheus text by `prometheus-parse`.
//!
//! Only two kinds of thing become tiles: a caller's circuit to a target (`flotilla_call_*`, from
//! the platform's protected client) and a gateway's upstream (`gateway_upstream_*`). Lines of
//! other families are skipped before parsing, so a service with a thousand other series costs
//! little. An answer that is not Prometheus text (an HTML page, binary noise, a body over the
//! limit) makes the instance *unreadable*, with the reason, and nothing else.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};

/// Largest `/metrics` body read.
const BODY_LIMIT: usize = 8 << 20;
/// How long one scrape may take.
pub(crate) const SCRAPE_TIMEOUT: Duration = Duration::from_millis(900);

/// What a tile is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A caller's circuit to a target (`flotilla_call_*`).
    Circuit,
    /// A gateway's pool of servers (`gateway_upstream_*`).
    Upstream,
}

/// One tile's numbers as one instance reports them (counters are totals since it started).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Calls by outcome (circuits) or answers by class (upstreams).
    pub counts: BTreeMap<String, f64>,
    /// Latency histogram, summed over outcomes: (upper bound in seconds, cumulative count).
    pub buckets: Vec<(f64, f64)>,
    /// The circuit's state (the label whose gauge is 1), or servers by state (upstreams).
    pub state: BTreeMap<String, f64>,
}

/// Everything one instance reports, by (kind, name).
pub type Readings = BTreeMap<(Kind, String), Reading>;

const FAMILIES: [&str; 5] = [
    "flotilla_calls_total",
    "flotilla_call_duration_seconds",
    "flotilla_call_circuit_state",
    "gateway_upstream_responses_total",
    "gateway_upstream_response_duration_seconds",
];
const SERVERS: &str = "gateway_upstream_servers";

/// Reads `base`/metrics.
pub(crate) async fn scrape(client: &reqwest::Client, base: &str) -> Result<Readings, String> {
    let answer = client
        .get(format!("{base}/metrics"))
        .timeout(SCRAPE_TIMEOUT)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "no answer in time".to_string()
            } else if e.is_connect() {
                "cannot connect".to_string()
            } else {
                "the request failed".to_string()
            }
        })?;
    if !answer.status().is_success() {
        return Err(format!("/metrics answered {}", answer.status().as_u16()));
    }
    if answer
        .content_length()
        .is_some_and(|n| n > BODY_LIMIT as u64)
    {
        return Err("metrics larger than 8 MiB".to_string());
    }
    let mut body = Vec::new();
    let mut answer = answer;
    while let Some(chunk) = answer
        .chunk()
        .await
        .map_err(|_| "the body was cut off".to_string())?
    {
        if body.len() + chunk.len() > BODY_LIMIT {
            return Err("metrics larger than 8 MiB".to_string());
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).map_err(|_| "metrics are not UTF-8 text".to_string())?;
    parse(&text)
}

/// The tiles' numbers in a Prometheus text body.
pub fn parse(text: &str) -> Result<Readings, String> {
    check_format(text)?;
    let wanted = |line: &&str| {
        let name = line
            .strip_prefix("# TYPE ")
            .unwrap_or(line)
            .split(['{', ' '])
            .next()
            .unwrap_or("");
        FAMILIES
            .iter()
            .chain(std::iter::once(&SERVERS))
            .any(|family| name.starts_with(family))
    };
    let lines = text.lines().filter(wanted).map(|line| Ok(line.to_string()));
    let scrape = Scrape::parse(lines).map_err(|e| format!("unreadable metrics: {e}"))?;
    let mut readings = Readings::new();
    for sample in scrape.samples {
        let metric = sample.metric.as_str();
        let (kind, name_label) = if metric.starts_with("flotilla_call") {
            (Kind::Circuit, "target")
        } else {
            (Kind::Upstream, "upstream")
        };
        let Some(name) = sample.labels.get(name_label) else {
            continue;
        };
        let reading = readings.entry((kind, name.to_string())).or_default();
        match (metric, &sample.value) {
            ("flotilla_calls_total", Value::Counter(n) | Value::Untyped(n)) => {
                if let Some(outcome) = sample.labels.get("outcome") {
                    *reading.counts.entry(outcome.to_string()).or_default() += n;
                }
            }
            ("gateway_upstream_responses_total", Value::Counter(n) | Value::Untyped(n)) => {
                if let Some(class) = sample.labels.get("class") {
                    *reading.counts.entry(class.to_string()).or_default() += n;
                }
            }
            (
                "flotilla_call_duration_seconds" | "gateway_upstream_response_duration_seconds",
                Value::Histogram(buckets),
            ) => add_buckets(
                &mut reading.buckets,
                buckets.iter().map(|b| (b.less_than, b.count)),
            ),
            ("flotilla_call_circuit_state" | SERVERS, Value::Gauge(n) | Value::Untyped(n)) => {
                if let Some(state) = sample.labels.get("state") {
                    reading.state.insert(state.to_string(), *n);
                }
            }
            _ => {}
        }
    }
    Ok(readings)
}

/// Adds a histogram's cumulative buckets into `into` (same bounds expected; the union kept).
fn add_buckets(into: &mut Vec<(f64, f64)>, buckets: impl Iterator<Item = (f64, f64)>) {
    for (bound, count) in buckets {
        match into.iter_mut().find(|(b, _)| *b == bound) {
            Some((_, total)) => *total += count,
            None => into.push((bound, count)),
        }
    }
    into.sort_by(|a, b| a.0.total_cmp(&b.0));
}

/// Whether `text` is Prometheus text at all: every line a comment or `name{labels} value`.
/// The parser skips lines it does not understand, so garbage would otherwise read as "no data".
fn check_format(text: &str) -> Result<(), String> {
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(line.len());
        let rest = line[name_end..].trim_start();
        let value = if let Some(labels) = rest.strip_prefix('{') {
            match labels.rfind('}') {
                Some(end) => labels[end + 1..].trim(),
                None => "",
            }
        } else {
            rest
        };
        let value = value.split_whitespace().next().unwrap_or("");
        let number_ok = value.parse::<f64>().is_ok() || matches!(value, "+Inf" | "-Inf" | "NaN");
        if name_end == 0 || !number_ok {
            return Err(format!(
                "not Prometheus text (line {} is neither a comment nor a sample)",
                number + 1
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"# HELP flotilla_calls_total Calls
# TYPE flotilla_calls_total counter
flotilla_calls_total{target="todo-api",outcome="success"} 90
flotilla_calls_total{target="todo-api",outcome="failure"} 10
# TYPE flotilla_call_circuit_state gauge
flotilla_call_circuit_state{target="todo-api",state="closed"} 0
flotilla_call_circuit_state{target="todo-api",state="open"} 1
# TYPE flotilla_call_duration_seconds histogram
flotilla_call_duration_seconds_bucket{target="todo-api",outcome="success",le="0.01"} 80
flotilla_call_duration_seconds_bucket{target="todo-api",outcome="success",le="+Inf"} 90
flotilla_call_duration_seconds_sum{target="todo-api",outcome="success"} 0.5
flotilla_call_duration_seconds_count{target="todo-api",outcome="success"} 90
flotilla_call_duration_seconds_bucket{target="todo-api",outcome="failure",le="0.01"} 0
flotilla_call_duration_seconds_bucket{target="todo-api",outcome="failure",le="+Inf"} 10
flotilla_call_duration_seconds_sum{target="todo-api",outcome="failure"} 2
flotilla_call_duration_seconds_count{target="todo-api",outcome="failure"} 10
# TYPE http_requests_total counter
http_requests_total{route="/",status="200"} 5
# TYPE gateway_upstream_servers gauge
gateway_upstream_servers{upstream="api",state="up"} 2
gateway_upstream_servers{upstream="api",state="down"} 1
"#;

    #[test]
    fn circuits_and_upstreams_are_read_and_the_rest_skipped() {
        let readings = parse(BODY).unwrap();
        let circuit = &readings[&(Kind::Circuit, "todo-api".to_string())];
        assert_eq!(circuit.counts["success"], 90.0);
        assert_eq!(circuit.counts["failure"], 10.0);
        assert_eq!(circuit.state["open"], 1.0);
        assert_eq!(circuit.buckets.len(), 2);
        assert_eq!(circuit.buckets[0], (0.01, 80.0));
        assert_eq!(circuit.buckets[1].1, 100.0);
        let upstream = &readings[&(Kind::Upstream, "api".to_string())];
        assert_eq!(upstream.state["up"], 2.0);
        assert_eq!(readings.len(), 2);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        for garbage in [
            "<html><body>hello</body></html>",
            "flotilla_calls_total{target=\"x\"} lots",
            "\u{1}\u{2}\u{3}",
        ] {
            let error = parse(garbage).unwrap_err();
            assert!(error.contains("not Prometheus text"), "{garbage}: {error}");
        }
        assert_eq!(parse("").unwrap().len(), 0, "no metrics is not an error");
    }
}
