//! From readings to tiles: each instance's counters differenced against its previous scrape
//! (a counter that went down means the instance restarted: its new total is the delta), then
//! summed across the instances of a service, as Turbine aggregated Hystrix streams. Rates are
//! per second over the scrape interval; percentiles come from the summed histogram deltas.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use crate::scrape::{Kind, Reading, Readings};

/// Outcomes (circuits) and classes (upstreams) that count as errors.
const ERRORS: [&str; 6] = [
    "failure",
    "timeout",
    "rejected",
    "short_circuited",
    "5xx",
    "error",
];

/// What the dashboard knows of one instance.
#[derive(Debug, Default)]
struct Seen {
    service: String,
    last: Option<(Instant, Readings)>,
    /// Per second, over the last interval.
    rates: Readings,
    error: Option<String>,
}

/// Every instance's latest scrape, by its base URL.
#[derive(Debug, Default)]
pub struct Board {
    instances: BTreeMap<String, Seen>,
}

/// One tile: a circuit or an upstream of one service, all its instances together.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Tile {
    pub service: String,
    pub kind: Kind,
    pub name: String,
    /// Instances reporting it.
    pub hosts: usize,
    /// Calls (or answers) per second.
    pub rate: f64,
    /// Share of them that failed, in percent; `None` with no traffic.
    pub error_percent: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Per second, by outcome or class.
    pub outcomes: BTreeMap<String, f64>,
    /// Circuits: the worst state any host reports (`open` > `half_open` > `closed`).
    /// Upstreams: `healthy`, `degraded` (some servers down) or `down` (none up, or none).
    pub state: String,
    /// Circuits: hosts per state. Upstreams: servers per state, summed.
    pub states: BTreeMap<String, f64>,
}

/// A service, with its instances that could not be read.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Service {
    pub name: String,
    pub hosts: usize,
    pub unreadable: Vec<Unreadable>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Unreadable {
    pub instance: String,
    pub error: String,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct View {
    pub services: Vec<Service>,
    pub tiles: Vec<Tile>,
}

impl Board {
    /// Records a scrape of `instance` (of `service`) made at `at`.
    pub fn record(
        &mut self,
        instance: &str,
        service: &str,
        at: Instant,
        scraped: Result<Readings, String>,
    ) {
        let seen = self.instances.entry(instance.to_string()).or_default();
        seen.service = service.to_string();
        match scraped {
            Err(error) => {
                seen.error = Some(error);
                seen.rates.clear();
            }
            Ok(readings) => {
                seen.error = None;
                seen.rates = match &seen.last {
                    Some((then, before)) => {
                        let seconds = at.saturating_duration_since(*then).as_secs_f64();
                        rates(before, &readings, seconds)
                    }
                    // First sight: no rates yet, but the states are already true.
                    None => readings
                        .iter()
                        .map(|(key, r)| {
                            let reading = Reading {
                                state: r.state.clone(),
                                ..Reading::default()
                            };
                            (key.clone(), reading)
                        })
                        .collect(),
                };
                seen.last = Some((at, readings));
            }
        }
    }

    /// Forgets instances no longer listed (scaled down, deregistered).
    pub fn retain(&mut self, listed: &dyn Fn(&str) -> bool) {
        self.instances.retain(|instance, _| listed(instance));
    }

    pub fn view(&self) -> View {
        let mut services: BTreeMap<&str, Service> = BTreeMap::new();
        let mut grouped: BTreeMap<(&str, &Kind, &str), Vec<&Reading>> = BTreeMap::new();
        for (instance, seen) in &self.instances {
            let service = services
                .entry(seen.service.as_str())
                .or_insert_with(|| Service {
                    name: seen.service.clone(),
                    hosts: 0,
                    unreadable: Vec::new(),
                });
            service.hosts += 1;
            if let Some(error) = &seen.error {
                service.unreadable.push(Unreadable {
                    instance: instance.clone(),
                    error: error.clone(),
                });
            }
            for ((kind, name), reading) in &seen.rates {
                grouped
                    .entry((seen.service.as_str(), kind, name.as_str()))
                    .or_default()
                    .push(reading);
            }
        }
        let tiles = grouped
            .into_iter()
            .map(|((service, kind, name), readings)| tile(service, kind, name, &readings))
            .collect();
        View {
            services: services.into_values().collect(),
            tiles,
        }
    }
}

/// Per-second rates between two readings `seconds` apart.
fn rates(before: &Readings, now: &Readings, seconds: f64) -> Readings {
    let per_second = |then: Option<f64>, now: f64| {
        // A counter that went down: the instance restarted and counted from zero.
        let delta = match then {
            Some(then) if now >= then => now - then,
            _ => now,
        };
        if seconds > 0.0 { delta / seconds } else { 0.0 }
    };
    now.iter()
        .map(|(key, reading)| {
            let old = before.get(key);
            let counts = reading
                .counts
                .iter()
                .map(|(k, v)| {
                    let then = old.and_then(|o| o.counts.get(k).copied());
                    (k.clone(), per_second(then, *v))
                })
                .collect();
            let buckets = reading
                .buckets
                .iter()
                .map(|(bound, v)| {
                    let then = old
                        .and_then(|o| o.buckets.iter().find(|(b, _)| b == bound).map(|(_, c)| *c));
                    (*bound, per_second(then, *v))
                })
                .collect();
            let rates = Reading {
                counts,
                buckets,
                state: reading.state.clone(),
            };
            (key.clone(), rates)
        })
        .collect()
}

fn tile(service: &str, kind: &Kind, name: &str, readings: &[&Reading]) -> Tile {
    let mut outcomes: BTreeMap<String, f64> = BTreeMap::new();
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let mut states: BTreeMap<String, f64> = BTreeMap::new();
    for reading in readings {
        for (k, v) in &reading.counts {
            *outcomes.entry(k.clone()).or_default() += v;
        }
        for (bound, v) in &reading.buckets {
            match buckets.iter_mut().find(|(b, _)| b == bound) {
                Some((_, total)) => *total += v,
                None => buckets.push((*bound, *v)),
            }
        }
        match kind {
            // A host is in the state whose gauge is 1.
            Kind::Circuit => {
                if let Some((state, _)) = reading.state.iter().find(|(_, v)| **v >= 1.0) {
                    *states.entry(state.clone()).or_default() += 1.0;
                }
            }
            Kind::Upstream => {
                for (state, servers) in &reading.state {
                    *states.entry(state.clone()).or_default() += servers;
                }
            }
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let rate: f64 = outcomes.values().sum();
    let errors: f64 = outcomes
        .iter()
        .filter(|(k, _)| ERRORS.contains(&k.as_str()))
        .map(|(_, v)| v)
        .sum();
    let state = match kind {
        Kind::Circuit => ["open", "half_open", "closed"]
            .into_iter()
            .find(|s| states.get(*s).is_some_and(|n| *n > 0.0))
            .unwrap_or("unknown"),
        Kind::Upstream => {
            let up = states.get("up").copied().unwrap_or(0.0)
                + states.get("backup").copied().unwrap_or(0.0);
            let down = states.get("down").copied().unwrap_or(0.0);
            // No server at all (a registry pool whose instances all left) is down too.
            if up == 0.0 {
                "down"
            } else if down > 0.0 {
                "degraded"
            } else {
                "healthy"
            }
        }
    };
    Tile {
        service: service.to_string(),
        kind: kind.clone(),
        name: name.to_string(),
        hosts: readings.len(),
        rate,
        error_percent: (rate > 0.0).then(|| errors * 100.0 / rate),
        p50_ms: quantile(&buckets, 0.5).map(|s| s * 1000.0),
        p99_ms: quantile(&buckets, 0.99).map(|s| s * 1000.0),
        outcomes,
        state: state.to_string(),
        states,
    }
}

/// The `q` quantile of cumulative buckets, interpolated within the bucket it falls in (as
/// Prometheus' `histogram_quantile`); in the `+Inf` bucket, the largest finite bound.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let within = count - lower.1;
            let share = if within > 0.0 {
                (rank - lower.1) / within
            } else {
                1.0
            };
            return Some(lower.0 + (bound - lower.0) * share);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn reading(success: f64, failure: f64, state: &str) -> Readings {
        let mut r = Reading::default();
        r.counts.insert("success".into(), success);
        r.counts.insert("failure".into(), failure);
        r.buckets = vec![
            (0.01, success),
            (0.1, success + failure),
            (f64::INFINITY, success + failure),
        ];
        for s in ["closed", "open", "half_open"] {
            r.state.insert(s.into(), if s == state { 1.0 } else { 0.0 });
        }
        [((Kind::Circuit, "todo-api".to_string()), r)]
            .into_iter()
            .collect()
    }

    #[test]
    fn replicas_add_up_and_the_worst_state_shows() {
        let mut board = Board::default();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        board.record(
            "http://a",
            "todo-web",
            t0,
            Ok(reading(100.0, 0.0, "closed")),
        );
        board.record("http://b", "todo-web", t0, Ok(reading(50.0, 0.0, "closed")));
        board.record(
            "http://a",
            "todo-web",
            t1,
            Ok(reading(190.0, 10.0, "closed")),
        );
        board.record("http://b", "todo-web", t1, Ok(reading(50.0, 100.0, "open")));
        let view = board.view();
        let tile = &view.tiles[0];
        assert_eq!(tile.hosts, 2);
        assert_eq!(tile.rate, 200.0, "90 + 10 + 0 + 100 per second");
        assert_eq!(tile.error_percent, Some(55.0));
        assert_eq!(tile.state, "open");
        assert_eq!(tile.states["open"], 1.0);
        assert_eq!(tile.states["closed"], 1.0);
        // 90 of 200 under 10 ms, all under 100 ms.
        let p50 = tile.p50_ms.unwrap();
        assert!(p50 > 10.0 && p50 < 100.0, "{p50}");
    }

    #[test]
    fn a_restarted_instance_is_not_a_negative_rate() {
        let mut board = Board::default();
        let t0 = Instant::now();
        board.record("http://a", "s", t0, Ok(reading(1000.0, 0.0, "closed")));
        board.record(
            "http://a",
            "s",
            t0 + Duration::from_secs(2),
            Ok(reading(20.0, 0.0, "closed")),
        );
        assert_eq!(board.view().tiles[0].rate, 10.0);
    }

    #[test]
    fn an_unreadable_instance_is_named_and_the_rest_still_shows() {
        let mut board = Board::default();
        let t0 = Instant::now();
        board.record("http://a", "s", t0, Ok(reading(1.0, 0.0, "closed")));
        board.record("http://b", "s", t0, Err("not Prometheus text".into()));
        let view = board.view();
        assert_eq!(view.services[0].hosts, 2);
        assert_eq!(view.services[0].unreadable[0].instance, "http://b");
        assert_eq!(view.tiles.len(), 1);
    }

    #[test]
    fn an_upstream_without_servers_up_is_down() {
        let upstream = |up: f64, down: f64| {
            let mut r = Reading::default();
            r.state.insert("up".into(), up);
            r.state.insert("down".into(), down);
            tile("gw", &Kind::Upstream, "api", &[&r]).state
        };
        assert_eq!(upstream(2.0, 0.0), "healthy");
        assert_eq!(upstream(1.0, 1.0), "degraded");
        assert_eq!(upstream(0.0, 2.0), "down");
        assert_eq!(upstream(0.0, 0.0), "down", "an empty pool routes nowhere");
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let buckets = [(0.1, 50.0), (0.2, 100.0), (f64::INFINITY, 100.0)];
        assert!((quantile(&buckets, 0.5).unwrap() - 0.1).abs() < 1e-9);
        assert!((quantile(&buckets, 0.75).unwrap() - 0.15).abs() < 1e-9);
        assert_eq!(quantile(&[(0.1, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
        assert_eq!(
            quantile(&[(0.1, 0.0), (f64::INFINITY, 4.0)], 0.5),
            Some(0.1)
        );
    }
}
