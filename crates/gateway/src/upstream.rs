//! An upstream pool at run time: its servers, their health, and which one gets the next request.
//!
//! A server is available when the active health check (if any) says it is up, no passive mark has
//! taken it out (`max_fails` failures within `fail_timeout` take it out for `fail_timeout`, as in
//! nginx), and it is under `max_conns`. Backups are picked only while no primary is available.
//! Picking takes the servers a request already tried, so a retry goes somewhere else.
//!
//! The hot path takes no lock except the round-robin weights (a few integers); failures, which
//! are rare, take a per-server lock.
//!
//! A pool is immutable: a reload or a change in DNS builds a new one. What a server has learned
//! (requests in flight, health, failures, latency) lives in a [`ServerState`] that the new pool
//! takes over from the old one for every address both have, so nothing resets on a rebuild.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::Authority;
use metrics::{Counter, Histogram};

use crate::client::Client;
use crate::config::{self, HealthCheck, Policy};
use crate::discovery::Resolved;
use crate::per_thread;

/// How fast the latency average forgets (linkerd2-proxy uses 10 s too).
const EWMA_DECAY: Duration = Duration::from_secs(10);

pub(crate) struct Upstream {
    pub(crate) name: Arc<str>,
    pub(crate) servers: Vec<Server>,
    policy: Policy,
    /// Smooth weighted round robin: each server's current weight.
    current_weights: Mutex<Vec<i64>>,
    /// Where least_conn starts looking, so ties rotate.
    cursor: AtomicUsize,
    /// With one server and no backup, passive marks are skipped (as nginx does): taking out the
    /// only server can only turn a few failures into many.
    single: bool,
    pub(crate) client: Client,
    pub(crate) response_timeout: Duration,
    /// Longest wait between two reads of a response body, and the longest a tunnel stays quiet.
    pub(crate) read_timeout: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) retry_buffer: usize,
    /// Envoy-style limits on the whole pool (0: none), and what is in flight against them. Only
    /// a pool with a limit pays for the shared counters.
    max_requests: u32,
    max_retries: u32,
    active_requests: AtomicU32,
    active_retries: AtomicU32,
    /// Retries within the last 10 s may add at most `retry_budget` of the requests, plus
    /// `min_retries_per_second` (tower's budget).
    pub(crate) budget: tower::retry::budget::TpsBudget,
    pub(crate) health_check: Option<HealthCheck>,
    pub(crate) metrics: UpstreamMetrics,
}

/// The upstream's Prometheus series, looked up once per pool rather than once per request.
pub(crate) struct UpstreamMetrics {
    /// Answers by status class: 1xx..5xx.
    responses: [Counter; 5],
    /// Attempts that got no answer (no connection, broken, timed out).
    errors: Counter,
    latency: Histogram,
    pub(crate) retries: Counter,
    /// Refused by the pool's limits: `max_requests`, `max_retries`.
    overflow: [Counter; 2],
}

/// The help lines of the upstream metrics, given to the recorder once.
fn describe_once() {
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(|| {
        metrics::describe_counter!(
            "gateway_upstream_responses_total",
            "Attempts sent to an upstream, by the class of their answer (error: none)"
        );
        metrics::describe_histogram!(
            "gateway_upstream_response_duration_seconds",
            metrics::Unit::Seconds,
            "Time from sending a request upstream to receiving its response head"
        );
        metrics::describe_counter!(
            "gateway_retries_total",
            "Attempts retried on another server"
        );
        metrics::describe_counter!(
            "gateway_upstream_overflow_total",
            "Attempts refused by an upstream's limits: limit=requests (max_requests: the request got a 503), limit=retries (max_retries: not retried)"
        );
    });
}

impl UpstreamMetrics {
    fn new(upstream: &str) -> Self {
        // Handles made before the recorder is installed would record nowhere.
        platform::telemetry::metrics_handle();
        describe_once();
        let upstream = upstream.to_owned();
        let responses = ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| {
            metrics::counter!(
                "gateway_upstream_responses_total",
                "upstream" => upstream.clone(),
                "class" => class,
            )
        });
        UpstreamMetrics {
            responses,
            errors: metrics::counter!(
                "gateway_upstream_responses_total",
                "upstream" => upstream.clone(),
                "class" => "error",
            ),
            latency: metrics::histogram!(
                "gateway_upstream_response_duration_seconds",
                "upstream" => upstream.clone(),
            ),
            overflow: ["requests", "retries"].map(|limit| {
                metrics::counter!("gateway_upstream_overflow_total", "upstream" => upstream.clone(), "limit" => limit)
            }),
            retries: metrics::counter!("gateway_retries_total", "upstream" => upstream),
        }
    }

    /// An attempt's answer (its status) or its failure (`None`), and how long the head took.
    pub(crate) fn record(&self, status: Option<http::StatusCode>, head_time: Duration) {
        match status {
            Some(status) => {
                let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
                self.responses[class].increment(1);
                self.latency.record(head_time.as_secs_f64());
            }
            None => self.errors.increment(1),
        }
    }
}

pub(crate) struct Server {
    /// `ip:port` for a name that was looked up, else the address as configured.
    pub(crate) address: Arc<str>,
    pub(crate) authority: Authority,
    pub(crate) backup: bool,
    weight: u32,
    max_fails: u32,
    fail_timeout: Duration,
    max_conns: u32,
    state: Arc<ServerState>,
}

/// What the gateway knows about one server address, kept across pool rebuilds.
#[derive(Default)]
pub(crate) struct ServerState {
    /// Attempts sent to the server, and those that failed, since the gateway started. Every
    /// request updates the first two, so they are counted per thread.
    requests: per_thread::Counter,
    failed: AtomicU64,
    /// Requests in flight, until their response body ends.
    active: per_thread::Gauge,
    /// The active health check's verdict; up until a check says otherwise.
    healthy: AtomicBool,
    /// Taken out by passive health until this time ([`now_ms`]); 0 when in.
    down_until: AtomicU64,
    failures: Mutex<Failures>,
    /// Peak-EWMA of response-head latency, in nanoseconds, and when it was last updated.
    latency: Mutex<(f64, Option<Instant>)>,
}

impl ServerState {
    fn new() -> Self {
        ServerState {
            healthy: AtomicBool::new(true),
            ..ServerState::default()
        }
    }
}

#[derive(Default)]
struct Failures {
    count: u32,
    window_start: u64,
}

impl Upstream {
    /// The pool for `config`: one server per configured address, or per address a configured name
    /// resolved to (`resolved`, see [`crate::discovery`]). State carries over from `previous`.
    pub(crate) fn new(
        name: &str,
        config: &config::Upstream,
        resolved: &Resolved,
        previous: Option<&Upstream>,
    ) -> Self {
        let state_of = |address: &str| {
            previous
                .and_then(|p| p.servers.iter().find(|s| &*s.address == address))
                .map_or_else(|| Arc::new(ServerState::new()), |s| Arc::clone(&s.state))
        };
        // Instances found in the registry are servers with nginx's default parameters.
        let discovered: Vec<config::Server> = config
            .discovery
            .as_ref()
            .and_then(|d| resolved.get(&crate::discovery::registry_key(d.get_ref())))
            .into_iter()
            .flatten()
            .map(|address| config::Server::at(address.to_string()))
            .collect();
        let servers: Vec<Server> = config
            .server
            .iter()
            .chain(&discovered)
            .flat_map(|s| {
                let configured = s.address.get_ref();
                let addresses: Vec<String> = match resolved.get(configured) {
                    Some(addrs) => addrs.iter().map(|a| a.to_string()).collect(),
                    None => vec![configured.clone()],
                };
                addresses.into_iter().map(move |address| Server {
                    authority: crate::validate::parse_authority(&address)
                        .expect("addresses are validated when the config is loaded"),
                    state: state_of(&address),
                    address: Arc::from(address),
                    backup: s.backup,
                    weight: s.weight,
                    max_fails: s.max_fails,
                    fail_timeout: s.fail_timeout.0,
                    max_conns: s.max_conns,
                })
            })
            .collect();
        Upstream {
            name: Arc::from(name),
            single: servers.len() == 1,
            current_weights: Mutex::new(vec![0; servers.len()]),
            servers,
            policy: config.policy,
            cursor: AtomicUsize::new(0),
            client: Client::new(
                config.connect_timeout.0,
                config.idle_timeout.0,
                config.read_timeout.0,
            ),
            response_timeout: config.response_timeout.0,
            read_timeout: config.read_timeout.0,
            max_attempts: config.max_attempts,
            retry_buffer: config.retry_buffer,
            max_requests: config.max_requests,
            max_retries: config.max_retries,
            active_requests: AtomicU32::new(0),
            active_retries: AtomicU32::new(0),
            budget: tower::retry::budget::TpsBudget::new(
                Duration::from_secs(10),
                config.min_retries_per_second,
                config.retry_budget,
            ),
            health_check: config.health_check.clone(),
            metrics: UpstreamMetrics::new(name),
        }
    }

    /// The server for the next attempt, skipping those in `tried`; `None` when no server is
    /// available.
    pub(crate) fn pick(&self, tried: &[usize]) -> Option<usize> {
        let now = now_ms();
        // One server: every policy picks it when it is available, and skipping the policy skips
        // the shared state it would update (round robin's lock, least_conn's cursor).
        if let [only] = &self.servers[..] {
            return (tried.is_empty() && only.available(now)).then_some(0);
        }
        for backup in [false, true] {
            let eligible = |i: usize| {
                let server = &self.servers[i];
                server.backup == backup && !tried.contains(&i) && server.available(now)
            };
            let picked = match self.policy {
                Policy::RoundRobin => self.pick_round_robin(eligible),
                Policy::LeastConn => self.pick_least_conn(eligible),
                Policy::P2cEwma => self.pick_p2c(eligible),
            };
            if picked.is_some() {
                return picked;
            }
        }
        None
    }

    /// nginx's smooth weighted round robin: every eligible server gains its weight, the richest
    /// is picked and pays the total. Weights 5,1,1 give a,a,b,a,c,a,a rather than a,a,a,a,a,b,c.
    fn pick_round_robin(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let mut current = self
            .current_weights
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for i in (0..self.servers.len()).filter(|&i| eligible(i)) {
            current[i] += i64::from(self.servers[i].weight);
            total += i64::from(self.servers[i].weight);
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        current[best] -= total;
        Some(best)
    }

    /// Fewest requests in flight per unit of weight; ties rotate.
    fn pick_least_conn(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.servers.len();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(usize, u64, u64)> = None;
        for offset in 0..n {
            let i = (start + offset) % n;
            if !eligible(i) {
                continue;
            }
            let server = &self.servers[i];
            let (active, weight) = (u64::from(server.active()), u64::from(server.weight));
            // active/weight < best_active/best_weight, without division.
            if best.is_none_or(|(_, a, w)| active * w < a * weight) {
                best = Some((i, active, weight));
            }
        }
        best.map(|(i, _, _)| i)
    }

    /// Two eligible servers at random; the one with the lower expected wait (latency average
    /// times requests queued) wins. Cheap, and it avoids the herd that "always the fastest" makes.
    fn pick_p2c(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let count = (0..self.servers.len()).filter(|&i| eligible(i)).count();
        let nth = |n: usize| (0..self.servers.len()).filter(|&i| eligible(i)).nth(n);
        match count {
            0 => None,
            1 => nth(0),
            _ => {
                let a = fastrand::usize(..count);
                let mut b = fastrand::usize(..count - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = (nth(a)?, nth(b)?);
                let cost = |i: usize| self.servers[i].cost();
                Some(if cost(a) <= cost(b) { a } else { b })
            }
        }
    }

    /// Counts a request against a server, in flight until [`Upstream::end`] (see
    /// `proxy::InFlight`).
    pub(crate) fn begin(&self, index: usize) {
        let state = &self.servers[index].state;
        state.active.increment();
        state.requests.increment();
    }

    /// The request that [`Upstream::begin`] counted is no longer in flight.
    pub(crate) fn end(&self, index: usize) {
        self.servers[index].state.active.decrement();
    }

    /// Takes a place among the pool's `max_requests` (always, without a limit); `false` when
    /// the pool is full, which is counted. A taken place is given back by [`Upstream::leave`].
    pub(crate) fn enter(&self, retry: bool) -> bool {
        if !take(&self.active_requests, self.max_requests) {
            self.metrics.overflow[0].increment(1);
            return false;
        }
        if retry && !take(&self.active_retries, self.max_retries) {
            give_back(&self.active_requests, self.max_requests);
            self.metrics.overflow[1].increment(1);
            return false;
        }
        true
    }

    /// Whether `max_retries` leaves room for one more retry now (counted when not); checked
    /// before giving up an answer to retry, and taken for good by [`Upstream::enter`].
    pub(crate) fn retry_allowed(&self) -> bool {
        if self.max_retries == 0 || self.active_retries.load(Ordering::Acquire) < self.max_retries {
            return true;
        }
        self.metrics.overflow[1].increment(1);
        false
    }

    pub(crate) fn leave(&self, retry: bool) {
        give_back(&self.active_requests, self.max_requests);
        if retry {
            give_back(&self.active_retries, self.max_retries);
        }
    }

    /// A failed attempt (no connection, no answer in time, or 502/503/504).
    pub(crate) fn record_failure(&self, index: usize, why: &str) {
        let server = &self.servers[index];
        server.state.failed.fetch_add(1, Ordering::Relaxed);
        if self.single {
            return;
        }
        if server.max_fails == 0 {
            return;
        }
        let now = now_ms();
        let fail_timeout = server.fail_timeout.as_millis() as u64;
        let mut failures = server
            .state
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if now.saturating_sub(failures.window_start) > fail_timeout {
            *failures = Failures {
                count: 0,
                window_start: now,
            };
        }
        failures.count += 1;
        if failures.count >= server.max_fails {
            failures.count = 0;
            server
                .state
                .down_until
                .store(now + fail_timeout, Ordering::Release);
            tracing::warn!(
                upstream = %self.name, server = %server.address, reason = why,
                out_for = ?server.fail_timeout, "server taken out after failures"
            );
        }
    }

    /// A successful attempt and how long the response head took.
    pub(crate) fn record_success(&self, index: usize, latency: Duration) {
        let server = &self.servers[index];
        if self.policy == Policy::P2cEwma {
            server.observe_latency(latency);
        }
    }

    /// What `/status` shows of this pool: every server with its state.
    pub(crate) fn status(&self) -> serde_json::Value {
        let now = now_ms();
        let servers: Vec<serde_json::Value> = self
            .servers
            .iter()
            .map(|server| {
                let state = &server.state;
                let available = server.available(now);
                let (ewma, _) = *state.latency.lock().unwrap_or_else(|e| e.into_inner());
                serde_json::json!({
                    "address": &*server.address,
                    "state": match (available, server.backup) {
                        (false, _) => "down",
                        (true, true) => "backup",
                        (true, false) => "up",
                    },
                    "backup": server.backup,
                    "health_check": if self.health_check.is_none() { "off" }
                        else if server.is_healthy() { "passing" } else { "failing" },
                    "passively_down": server.passively_down(),
                    "weight": server.weight,
                    "active": server.active(),
                    "requests": state.requests.value(),
                    "failures": state.failed.load(Ordering::Relaxed),
                    "latency_ms": (ewma > 0.0).then(|| (ewma / 1e4).round() / 100.0),
                })
            })
            .collect();
        let (up, backups) = self.available_count();
        serde_json::json!({
            "policy": self.policy,
            "available": up,
            "backups_available": backups,
            "servers": servers,
        })
    }

    /// How many servers can take requests now, primaries and backups.
    pub(crate) fn available_count(&self) -> (usize, usize) {
        let now = now_ms();
        let up = |backup: bool| {
            self.servers
                .iter()
                .filter(|s| s.backup == backup && s.available(now))
                .count()
        };
        (up(false), up(true))
    }
}

impl Server {
    fn available(&self, now: u64) -> bool {
        self.is_healthy()
            && self.state.down_until.load(Ordering::Acquire) <= now
            && (self.max_conns == 0 || self.active() < self.max_conns)
    }

    pub(crate) fn active(&self) -> u32 {
        u32::try_from(self.state.active.value()).unwrap_or(0)
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.state.healthy.load(Ordering::Acquire)
    }

    /// The active health check's verdict. A passing check also clears a passive mark: the server
    /// answers again, so there is no reason to wait out `fail_timeout`.
    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::Release);
        if healthy {
            self.state.down_until.store(0, Ordering::Release);
        }
    }

    pub(crate) fn passively_down(&self) -> bool {
        self.state.down_until.load(Ordering::Acquire) > now_ms()
    }

    fn cost(&self) -> f64 {
        let (ewma, _) = *self.state.latency.lock().unwrap_or_else(|e| e.into_inner());
        // An unmeasured server costs as much as a 1 ms one, so it gets tried soon.
        ewma.max(1_000_000.0) * f64::from(self.active() + 1)
    }

    /// Peak EWMA: a slower response raises the average at once; faster ones lower it gradually.
    fn observe_latency(&self, latency: Duration) {
        let rtt = latency.as_nanos() as f64;
        let mut state = self.state.latency.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (ewma, last) = *state;
        let next = if rtt > ewma {
            rtt
        } else {
            let elapsed = last.map_or(0.0, |last| now.duration_since(last).as_secs_f64());
            let keep = (-elapsed / EWMA_DECAY.as_secs_f64()).exp();
            ewma * keep + rtt * (1.0 - keep)
        };
        *state = (next, Some(now));
    }
}

/// Milliseconds on the coarse clock (read without a clock call), starting at 1 so that 0 can
/// mean "never".
fn now_ms() -> u64 {
    crate::coarse_timer::millis() + 1
}

/// One more of `limit` in `active`, unless it is full; a zero limit is none (nothing counted).
fn take(active: &AtomicU32, limit: u32) -> bool {
    if limit == 0 {
        return true;
    }
    active
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

fn give_back(active: &AtomicU32, limit: u32) {
    if limit != 0 {
        active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(policy: &str, servers: &str) -> Arc<Upstream> {
        let text = format!("policy = \"{policy}\"\nserver = [{servers}]\n");
        let config: config::Upstream = toml::from_str(&text).unwrap();
        Arc::new(Upstream::new("test", &config, &Resolved::new(), None))
    }

    fn sequence(upstream: &Upstream, n: usize) -> String {
        (0..n)
            .map(|_| {
                let i = upstream.pick(&[]).unwrap();
                upstream.servers[i]
                    .address
                    .split(':')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn smooth_round_robin_interleaves_by_weight() {
        let pool = upstream(
            "round_robin",
            r#"{address="a:1", weight=5}, {address="b:1"}, {address="c:1"}"#,
        );
        assert_eq!(sequence(&pool, 7), "a,a,b,a,c,a,a");
    }

    #[test]
    fn backups_serve_only_while_no_primary_is_available() {
        let pool = upstream(
            "least_conn",
            r#"{address="a:1"}, {address="b:1"}, {address="z:1", backup=true}"#,
        );
        assert!(!sequence(&pool, 10).contains('z'));
        pool.servers[0].set_healthy(false);
        assert_eq!(sequence(&pool, 3), "b,b,b");
        pool.record_failure(1, "test");
        assert_eq!(sequence(&pool, 3), "z,z,z");
        pool.servers[0].set_healthy(true);
        assert_eq!(sequence(&pool, 2), "a,a");
    }

    #[test]
    fn retries_skip_servers_already_tried() {
        let pool = upstream("round_robin", r#"{address="a:1"}, {address="b:1"}"#);
        let first = pool.pick(&[]).unwrap();
        let second = pool.pick(&[first]).unwrap();
        assert_ne!(first, second);
        assert_eq!(pool.pick(&[first, second]), None);
    }

    #[test]
    fn least_conn_prefers_the_idler_server_and_max_conns_caps() {
        let pool = upstream(
            "least_conn",
            r#"{address="a:1", max_conns=1}, {address="b:1"}"#,
        );
        pool.begin(0);
        assert_eq!(pool.pick(&[]), Some(1));
        pool.begin(1);
        pool.begin(1);
        // a has one in flight and a cap of one: b gets it despite having more.
        assert_eq!(pool.pick(&[]), Some(1));
        pool.end(0);
        assert_eq!(pool.pick(&[]), Some(0));
    }

    #[test]
    fn max_fails_within_fail_timeout_take_a_server_out() {
        let pool = upstream(
            "round_robin",
            r#"{address="a:1", max_fails=2}, {address="b:1"}"#,
        );
        pool.record_failure(0, "test");
        assert!(!pool.servers[0].passively_down());
        pool.record_failure(0, "test");
        assert!(pool.servers[0].passively_down());
        assert_eq!(sequence(&pool, 3), "b,b,b");
    }

    #[test]
    fn a_lone_server_is_never_taken_out_passively() {
        let pool = upstream("round_robin", r#"{address="a:1"}"#);
        pool.record_failure(0, "test");
        assert_eq!(pool.pick(&[]), Some(0));
    }

    #[test]
    fn p2c_avoids_the_slow_server() {
        let pool = upstream("p2c_ewma", r#"{address="a:1"}, {address="b:1"}"#);
        pool.record_success(0, Duration::from_millis(200));
        pool.record_success(1, Duration::from_millis(2));
        let slow = (0..100).filter(|_| pool.pick(&[]) == Some(0)).count();
        assert_eq!(
            slow, 0,
            "with two servers, p2c compares both and picks the fast one"
        );
    }

    #[test]
    fn names_become_one_server_per_address_and_rebuilds_keep_server_state() {
        let text = r#"server = [{address="api:80", max_fails=1}, {address="127.0.0.5:80"}]"#;
        let config: config::Upstream = toml::from_str(text).unwrap();
        let addrs = |list: &[&str]| list.iter().map(|a| a.parse().unwrap()).collect();
        let resolved = Resolved::from([("api:80".into(), addrs(&["10.0.0.1:80", "10.0.0.2:80"]))]);
        let first = Upstream::new("t", &config, &resolved, None);
        let names = |u: &Upstream| {
            u.servers
                .iter()
                .map(|s| s.address.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&first),
            ["10.0.0.1:80", "10.0.0.2:80", "127.0.0.5:80"]
        );
        first.begin(1);
        first.record_failure(1, "test");
        assert!(first.servers[1].passively_down());

        let resolved = Resolved::from([("api:80".into(), addrs(&["10.0.0.2:80", "10.0.0.3:80"]))]);
        let second = Upstream::new("t", &config, &resolved, Some(&first));
        assert_eq!(
            names(&second),
            ["10.0.0.2:80", "10.0.0.3:80", "127.0.0.5:80"]
        );
        assert!(second.servers[0].passively_down(), "the mark carries over");
        assert_eq!(
            second.servers[0].active(),
            1,
            "so does the request in flight"
        );
        assert!(!second.servers[1].passively_down());
        first.end(1);
        assert_eq!(second.servers[0].active(), 0);

        let unresolved = Resolved::from([("api:80".into(), Vec::new())]);
        let third = Upstream::new("t", &config, &unresolved, Some(&second));
        assert_eq!(names(&third), ["127.0.0.5:80"]);
    }
}
