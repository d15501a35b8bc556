//! Reading one instance's `/metrics`: the families the dashboard shows, pulled out of the
//! Prometheus text line by line (`exposition`).
//!
//! Only two kinds of thing become tiles: a caller's circuit to a target (`flotilla_call_*`, from
//! the platform's protected client) and a gateway's upstream (`gateway_upstream_*`). Lines of
//! other families are checked and skipped without allocating. An answer that is not Prometheus text (an HTML page, binary noise, a body over the
//! limit) makes the instance *unreadable*, with the reason, and nothing else.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::exposition;

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

/// The tiles' numbers in a Prometheus text body; any line that is not a comment or a sample
/// makes the whole body unreadable (the rest of it cannot be trusted either).
pub fn parse(text: &str) -> Result<Readings, String> {
    let mut readings = Readings::new();
    for (number, text) in text.lines().enumerate() {
        let sample = exposition::line(text).map_err(|()| {
            format!(
                "not Prometheus text (line {} is neither a comment nor a sample)",
                number + 1
            )
        })?;
        let Some(sample) = sample else { continue };
        let (kind, key, part) = match sample.name {
            "flotilla_calls_total" => (Kind::Circuit, "target", "outcome"),
            "flotilla_call_duration_seconds_bucket" => (Kind::Circuit, "target", "le"),
            "flotilla_call_circuit_state" => (Kind::Circuit, "target", "state"),
            "gateway_upstream_responses_total" => (Kind::Upstream, "upstream", "class"),
            "gateway_upstream_response_duration_seconds_bucket" => {
                (Kind::Upstream, "upstream", "le")
            }
            "gateway_upstream_servers" => (Kind::Upstream, "upstream", "state"),
            _ => continue,
        };
        let (Some(name), Some(part)) = (sample.label(key), sample.label(part)) else {
            continue;
        };
        let reading = readings.entry((kind, name.into_owned())).or_default();
        if sample.name.ends_with("_bucket") {
            let Ok(bound) = exposition::bound(&part) else {
                return Err(format!(
                    "line {}: a bucket bound that is not a number",
                    number + 1
                ));
            };
            add_bucket(&mut reading.buckets, bound, sample.value);
        } else if sample.name.ends_with("_total") {
            *reading.counts.entry(part.into_owned()).or_default() += sample.value;
        } else {
            reading.state.insert(part.into_owned(), sample.value);
        }
    }
    for reading in readings.values_mut() {
        reading.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Ok(readings)
}

/// Adds one cumulative bucket into `into` (the same bound of another outcome adds up).
fn add_bucket(into: &mut Vec<(f64, f64)>, bound: f64, count: f64) {
    match into.iter_mut().find(|(b, _)| *b == bound) {
        Some((_, total)) => *total += count,
        None => into.push((bound, count)),
    }
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
