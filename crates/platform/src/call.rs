//! The client side of every call one Flotilla service makes to another: what Hystrix and
//! Resilience4j gave the seeds' Spring services, in one place.
//!
//! A [`CallTarget`] protects the calls to one target (`todo-api`, `video-storage`). A call
//! passes, in order:
//! 1. the bulkhead: at most `max_concurrent` calls in flight, so a slow target cannot take every
//!    task of the caller with it; over it, the call is *rejected*;
//! 2. the circuit breaker (`breaker`): while open, the call is *short-circuited*, costing
//!    nothing;
//! 3. the deadline: the whole call, retries included, within `timeout`, so no caller waits
//!    longer than that (*timeout*);
//! 4. retries: an idempotent call that failed in a way worth retrying goes again, while tower's
//!    retry budget allows (a share of calls, so retries cannot multiply an overload).
//!
//! Each call ends in one outcome: `success`, `failure`, `timeout`, `rejected` or
//! `short_circuited`, counted in `/metrics` with its latency (names in docs/resilience.md). The
//! caller decides what a failure is ([`Verdict`]), and may answer with a fallback
//! ([`CallTarget::call_or_else`]).
//!
//! Layout: `policy` (settings per target, from TOML and env), `breaker` (the state machine),
//! `window` (its sliding windows).

mod breaker;
mod policy;
mod window;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tower::retry::budget::{Budget, TpsBudget};

pub use breaker::CircuitState;
pub use policy::{CallPolicy, CallSettings, KEYS, WindowKind, env_name};

/// How a finished attempt counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The target did its part (a 404 is the caller's business, not the target's failure).
    Success,
    /// The target failed; `retry`: another attempt may succeed (a refused connection, a 503).
    Failure { retry: bool },
}

/// Why a call gave no answer of the target's.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    #[error("{target} is failing: its circuit is open, so it is not being called for a while")]
    ShortCircuited { target: Arc<str> },
    #[error("{target} has too many calls in progress")]
    Rejected { target: Arc<str> },
    #[error("{target} did not answer within {timeout:?}")]
    Timeout { target: Arc<str>, timeout: Duration },
    #[error(transparent)]
    Failed(E),
}

/// Outcome labels, in `/metrics` as `outcome`.
const OUTCOMES: [&str; 5] = [
    "success",
    "failure",
    "timeout",
    "rejected",
    "short_circuited",
];

struct Meters {
    calls: [metrics::Counter; 5],
    durations: [metrics::Histogram; 5],
    retries: metrics::Counter,
    fallbacks: metrics::Counter,
    in_flight: metrics::Gauge,
}

impl Meters {
    fn new(target: &str) -> Meters {
        // Handles made before the recorder is installed would record nowhere.
        crate::telemetry::metrics_handle();
        describe();
        let label = target.to_string();
        Meters {
            calls: OUTCOMES.map(|outcome| {
                metrics::counter!("flotilla_calls_total", "target" => label.clone(), "outcome" => outcome)
            }),
            durations: OUTCOMES.map(|outcome| {
                metrics::histogram!("flotilla_call_duration_seconds", "target" => label.clone(), "outcome" => outcome)
            }),
            retries: metrics::counter!("flotilla_call_retries_total", "target" => label.clone()),
            fallbacks: metrics::counter!("flotilla_call_fallbacks_total", "target" => label.clone()),
            in_flight: metrics::gauge!("flotilla_call_in_flight", "target" => label),
        }
    }

    fn outcome(&self, index: usize, started: Instant) {
        self.calls[index].increment(1);
        self.durations[index].record(started.elapsed().as_secs_f64());
    }
}

fn describe() {
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(|| {
        metrics::describe_counter!(
            "flotilla_calls_total",
            "Calls to other services, by target and outcome (success, failure, timeout, rejected, short_circuited)"
        );
        metrics::describe_histogram!(
            "flotilla_call_duration_seconds",
            metrics::Unit::Seconds,
            "Time a call to another service took, retries included, by target and outcome"
        );
        metrics::describe_gauge!(
            "flotilla_call_circuit_state",
            "1 for the state each target's circuit is in (closed, open, half_open), 0 for the others"
        );
        metrics::describe_counter!(
            "flotilla_call_retries_total",
            "Attempts made again after a failed one"
        );
        metrics::describe_counter!(
            "flotilla_call_fallbacks_total",
            "Calls answered by the caller's fallback"
        );
        metrics::describe_gauge!(
            "flotilla_call_in_flight",
            "Calls to a target in progress now (the bulkhead's use)"
        );
    });
}

fn publish_state(target: &str, state: CircuitState) {
    for each in CircuitState::ALL {
        metrics::gauge!("flotilla_call_circuit_state", "target" => target.to_string(), "state" => each.as_str())
            .set(if each == state { 1.0 } else { 0.0 });
    }
}

/// The protected calls to one target. Cheap to share (`Arc`); one per target per process, so
/// that every caller in the process feeds the same breaker.
pub struct CallTarget {
    name: Arc<str>,
    policy: CallPolicy,
    breaker: breaker::Breaker,
    bulkhead: Arc<Semaphore>,
    budget: TpsBudget,
    meters: Meters,
}

impl std::fmt::Debug for CallTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallTarget")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field("state", &self.state())
            .finish()
    }
}

impl CallTarget {
    pub fn new(name: &str, policy: CallPolicy) -> CallTarget {
        // First: it installs the recorder the breaker's state gauge is set in.
        let meters = Meters::new(name);
        CallTarget {
            name: Arc::from(name),
            breaker: breaker::Breaker::new(name, &policy, publish_state),
            bulkhead: Arc::new(Semaphore::new(policy.max_concurrent as usize)),
            budget: TpsBudget::new(
                Duration::from_secs(10),
                policy.retry_min_per_second,
                (policy.retry_budget / 100.0) as f32,
            ),
            meters,
            policy,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn policy(&self) -> &CallPolicy {
        &self.policy
    }

    pub fn state(&self) -> CircuitState {
        self.breaker.state()
    }

    /// Makes the call: `attempt` is run once, or again for a retry. `idempotent`: whether
    /// running it twice is harmless (GET, PUT, DELETE); only those are retried. `judge` says
    /// how an attempt's result counts.
    pub async fn call<T, E, F, Fut>(
        &self,
        idempotent: bool,
        judge: impl Fn(&Result<T, E>) -> Verdict,
        attempt: F,
    ) -> Result<T, CallError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_within(self.policy.timeout, idempotent, judge, attempt)
            .await
    }

    /// [`CallTarget::call`] with its own deadline instead of the policy's, for the calls that
    /// legitimately take longer (an upload sends its whole body before the answer comes).
    pub async fn call_within<T, E, F, Fut>(
        &self,
        timeout: Duration,
        idempotent: bool,
        judge: impl Fn(&Result<T, E>) -> Verdict,
        mut attempt: F,
    ) -> Result<T, CallError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if !self.policy.protection {
            return match tokio::time::timeout(timeout, attempt()).await {
                Ok(result) => result.map_err(CallError::Failed),
                Err(_) => Err(CallError::Timeout {
                    target: self.name.clone(),
                    timeout,
                }),
            };
        }
        let started = Instant::now();
        let Some(_place) = self.enter().await else {
            self.meters.outcome(3, started);
            return Err(CallError::Rejected {
                target: self.name.clone(),
            });
        };
        self.meters.in_flight.increment(1.0);
        let _leave = Leave(&self.meters.in_flight);
        let deadline = tokio::time::Instant::now() + timeout;
        self.budget.deposit();
        let mut retries = 0;
        loop {
            let Some(permit) = self.breaker.try_acquire() else {
                self.meters.outcome(4, started);
                return Err(CallError::ShortCircuited {
                    target: self.name.clone(),
                });
            };
            let began = Instant::now();
            let Ok(result) = tokio::time::timeout_at(deadline, attempt()).await else {
                self.breaker.record(permit, true, true);
                self.meters.outcome(2, started);
                return Err(CallError::Timeout {
                    target: self.name.clone(),
                    timeout,
                });
            };
            let slow = began.elapsed() >= self.policy.slow_call_duration;
            match judge(&result) {
                Verdict::Success => {
                    self.breaker.record(permit, false, slow);
                    self.meters.outcome(0, started);
                    return result.map_err(CallError::Failed);
                }
                Verdict::Failure { retry } => {
                    self.breaker.record(permit, true, slow);
                    let again = retry
                        && idempotent
                        && retries < self.policy.retries
                        && tokio::time::Instant::now() < deadline
                        && self.budget.withdraw();
                    if !again {
                        self.meters.outcome(1, started);
                        return result.map_err(CallError::Failed);
                    }
                    retries += 1;
                    self.meters.retries.increment(1);
                }
            }
        }
    }

    /// [`CallTarget::call`], answered by `fallback` when it fails: the hook for a default
    /// answer (an empty list, the last good copy). Fallback answers are counted.
    pub async fn call_or_else<T, E, F, Fut>(
        &self,
        idempotent: bool,
        judge: impl Fn(&Result<T, E>) -> Verdict,
        attempt: F,
        fallback: impl FnOnce(CallError<E>) -> Result<T, CallError<E>>,
    ) -> Result<T, CallError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        match self.call(idempotent, judge, attempt).await {
            Ok(value) => Ok(value),
            Err(error) => {
                let answer = fallback(error);
                if answer.is_ok() {
                    self.meters.fallbacks.increment(1);
                }
                answer
            }
        }
    }

    async fn enter(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if self.policy.max_wait.is_zero() {
            return self.bulkhead.clone().try_acquire_owned().ok();
        }
        tokio::time::timeout(self.policy.max_wait, self.bulkhead.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

/// Takes a call off the in-flight gauge however the call ends (answered, or abandoned).
struct Leave<'a>(&'a metrics::Gauge);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests;
