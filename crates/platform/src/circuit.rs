//! A circuit breaker for calls to another service, as Hystrix gave the seeds' Spring services.
//!
//! Closed: calls go through; `failure_threshold` failures in a row open the circuit. Open: calls
//! fail at once, without touching the network, for `open_for`. Then one trial call goes through
//! (half-open): success closes the circuit, failure opens it again. So a dead dependency costs a
//! caller nothing after the first few failures, and is tried again on its own schedule.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When a circuit opens and for how long.
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    pub failure_threshold: u32,
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failure_threshold: 5,
            open_for: Duration::from_secs(5),
        }
    }
}

/// The state a breaker reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        }
    }
}

/// A call's outcome: the call's own error, or a refusal because the circuit is open.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    #[error("circuit {0} is open: not calling it for a while after repeated failures")]
    Open(&'static str),
    #[error(transparent)]
    Failed(E),
}

#[derive(Debug)]
pub struct CircuitBreaker {
    name: &'static str,
    settings: BreakerSettings,
    state: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    failures: u32,
    /// When open: until when.
    open_until: Option<Instant>,
    /// A half-open trial is running.
    trial: bool,
}

impl CircuitBreaker {
    pub fn new(name: &'static str, settings: BreakerSettings) -> Self {
        CircuitBreaker {
            name,
            settings,
            state: Mutex::new(Inner {
                failures: 0,
                open_until: None,
                trial: false,
            }),
        }
    }

    pub fn state(&self) -> CircuitState {
        let inner = self.lock();
        match inner.open_until {
            None => CircuitState::Closed,
            Some(until) if Instant::now() < until && !inner.trial => CircuitState::Open,
            Some(_) => CircuitState::HalfOpen,
        }
    }

    /// Runs `call` unless the circuit is open. `is_failure` says which errors count against the
    /// dependency (a 404 is the caller's business, a timeout is the dependency's).
    pub async fn call<T, E, F>(
        &self,
        is_failure: impl Fn(&E) -> bool,
        call: F,
    ) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.admit()?;
        let result = call.await;
        match &result {
            Err(error) if is_failure(error) => self.record(false),
            _ => self.record(true),
        }
        result.map_err(CallError::Failed)
    }

    fn admit<E>(&self) -> Result<(), CallError<E>> {
        let mut inner = self.lock();
        match inner.open_until {
            None => Ok(()),
            Some(until) if Instant::now() < until => Err(CallError::Open(self.name)),
            // Time for one trial; others keep failing fast until it reports.
            Some(_) if inner.trial => Err(CallError::Open(self.name)),
            Some(_) => {
                inner.trial = true;
                Ok(())
            }
        }
    }

    fn record(&self, success: bool) {
        let mut inner = self.lock();
        if success {
            if inner.open_until.is_some() {
                tracing::info!(
                    circuit = self.name,
                    "circuit closed: the dependency answers again"
                );
            }
            *inner = Inner {
                failures: 0,
                open_until: None,
                trial: false,
            };
            return;
        }
        inner.failures += 1;
        if inner.trial || inner.failures >= self.settings.failure_threshold {
            if inner.open_until.is_none() {
                tracing::warn!(circuit = self.name, failures = inner.failures, open_for = ?self.settings.open_for,
                    "circuit opened: failing fast");
            }
            inner.open_until = Some(Instant::now() + self.settings.open_for);
            inner.trial = false;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(open_for: Duration) -> CircuitBreaker {
        CircuitBreaker::new(
            "test",
            BreakerSettings {
                failure_threshold: 3,
                open_for,
            },
        )
    }

    async fn fail(b: &CircuitBreaker) -> Result<(), CallError<&'static str>> {
        b.call(|_| true, async { Err::<(), _>("down") }).await
    }

    async fn succeed(b: &CircuitBreaker) -> Result<(), CallError<&'static str>> {
        b.call(|_| true, async { Ok(()) }).await
    }

    #[tokio::test]
    async fn opens_after_the_threshold_and_fails_fast() {
        let b = breaker(Duration::from_secs(60));
        for _ in 0..3 {
            assert!(matches!(fail(&b).await, Err(CallError::Failed("down"))));
        }
        assert_eq!(b.state(), CircuitState::Open);
        let mut called = false;
        let result = b
            .call(|_: &&str| true, async {
                called = true;
                Ok(())
            })
            .await;
        assert!(matches!(result, Err(CallError::Open("test"))));
        assert!(!called, "an open circuit does not call");
    }

    #[tokio::test]
    async fn a_success_resets_the_count() {
        let b = breaker(Duration::from_secs(60));
        fail(&b).await.unwrap_err();
        fail(&b).await.unwrap_err();
        succeed(&b).await.unwrap();
        fail(&b).await.unwrap_err();
        fail(&b).await.unwrap_err();
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[tokio::test]
    async fn after_open_for_one_trial_decides() {
        let b = breaker(Duration::from_millis(50));
        for _ in 0..3 {
            fail(&b).await.unwrap_err();
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(b.state(), CircuitState::HalfOpen);
        fail(&b).await.unwrap_err();
        assert_eq!(
            b.state(),
            CircuitState::Open,
            "a failed trial opens it again"
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        succeed(&b).await.unwrap();
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[tokio::test]
    async fn errors_that_are_not_failures_do_not_count() {
        let b = breaker(Duration::from_secs(60));
        for _ in 0..5 {
            let result = b
                .call(|_: &&str| false, async { Err::<(), _>("not found") })
                .await;
            assert!(matches!(result, Err(CallError::Failed(_))));
        }
        assert_eq!(b.state(), CircuitState::Closed);
    }
}
