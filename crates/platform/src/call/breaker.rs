//! The circuit breaker, with Resilience4j's state machine.
//!
//! Closed: calls go through and land in a sliding window; once it holds `minimum_calls` and the
//! failure rate or the slow-call rate reaches its threshold, the circuit opens. Open: calls are
//! refused without touching the network for `wait_in_open`. Then the next call turns it
//! half-open: `half_open_calls` trial calls go through (others are refused); when they have all
//! reported, the same thresholds over them decide between open again and closed.
//!
//! Each admitted call holds a [`Permit`] stamped with the state's generation, so an answer that
//! arrives after the state moved on (a slow call from before the circuit opened) does not count
//! twice, and a trial call whose caller went away gives its slot back instead of wedging the
//! circuit half-open.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::policy::{CallPolicy, WindowKind};
use super::window::{Tally, Window};

/// The state a breaker reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub const ALL: [CircuitState; 3] = [
        CircuitState::Closed,
        CircuitState::Open,
        CircuitState::HalfOpen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// What the breaker needs from a [`CallPolicy`].
#[derive(Debug, Clone, Copy)]
struct Thresholds {
    minimum_calls: u32,
    failure_rate: f64,
    slow_call_rate: f64,
    wait_in_open: Duration,
    half_open_calls: u32,
}

impl Thresholds {
    fn tripped(&self, tally: &Tally) -> bool {
        tally.reaches(tally.failures, self.failure_rate)
            || tally.reaches(tally.slow, self.slow_call_rate)
    }
}

#[derive(Debug)]
enum Phase {
    Closed(Window),
    Open { until: Instant },
    HalfOpen { admitted: u32, tally: Tally },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    generation: u64,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    target: String,
    window: WindowKind,
    thresholds: Thresholds,
    inner: Mutex<Inner>,
    on_change: fn(&str, CircuitState),
}

/// Leave to make one call; report its outcome with [`Breaker::record`]. Dropped without a
/// report (the caller went away), it counts for nothing.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    generation: u64,
    reported: bool,
}

impl Breaker {
    /// `on_change` hears every state change (metrics, logs).
    pub(crate) fn new(
        target: &str,
        policy: &CallPolicy,
        on_change: fn(&str, CircuitState),
    ) -> Breaker {
        let breaker = Breaker {
            target: target.to_string(),
            window: policy.window,
            thresholds: Thresholds {
                minimum_calls: policy.minimum_calls,
                failure_rate: policy.failure_rate,
                slow_call_rate: policy.slow_call_rate,
                wait_in_open: policy.wait_in_open,
                half_open_calls: policy.half_open_calls,
            },
            inner: Mutex::new(Inner {
                phase: Phase::Closed(Window::count(1)),
                generation: 0,
            }),
            on_change,
        };
        breaker.lock().phase = Phase::Closed(breaker.new_window());
        on_change(target, CircuitState::Closed);
        breaker
    }

    fn new_window(&self) -> Window {
        match self.window {
            WindowKind::Count(calls) => Window::count(calls),
            WindowKind::Time(seconds) => Window::time(seconds),
        }
    }

    pub(crate) fn state(&self) -> CircuitState {
        match self.lock().phase {
            Phase::Closed(_) => CircuitState::Closed,
            Phase::Open { .. } => CircuitState::Open,
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Leave to call, or `None` while the circuit refuses calls.
    pub(crate) fn try_acquire(&self) -> Option<Permit<'_>> {
        let now = Instant::now();
        let mut inner = self.lock();
        match &mut inner.phase {
            Phase::Closed(_) => {}
            Phase::Open { until } if now < *until => return None,
            Phase::Open { .. } => {
                self.move_to(
                    &mut inner,
                    Phase::HalfOpen {
                        admitted: 1,
                        tally: Tally::default(),
                    },
                );
            }
            Phase::HalfOpen { admitted, .. } => {
                if *admitted >= self.thresholds.half_open_calls {
                    return None;
                }
                *admitted += 1;
            }
        }
        Some(Permit {
            breaker: self,
            generation: inner.generation,
            reported: false,
        })
    }

    /// The outcome of a call made under `permit`.
    pub(crate) fn record(&self, mut permit: Permit<'_>, failed: bool, slow: bool) {
        permit.reported = true;
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.generation != permit.generation {
            return;
        }
        let thresholds = self.thresholds;
        match &mut inner.phase {
            Phase::Closed(window) => {
                window.record(failed, slow, now);
                let total = window.total(now);
                if total.calls >= thresholds.minimum_calls && thresholds.tripped(&total) {
                    tracing::warn!(target = %self.target, calls = total.calls, failures = total.failures,
                        slow = total.slow, wait = ?thresholds.wait_in_open, "circuit opened: failing fast");
                    self.open(&mut inner, now);
                }
            }
            Phase::HalfOpen { tally, .. } => {
                tally.record(failed, slow);
                let tally = *tally;
                if tally.calls >= thresholds.half_open_calls {
                    if thresholds.tripped(&tally) {
                        tracing::warn!(target = %self.target, "circuit opened again: trial calls failed");
                        self.open(&mut inner, now);
                    } else {
                        tracing::info!(target = %self.target, "circuit closed: the target answers again");
                        let window = self.new_window();
                        self.move_to(&mut inner, Phase::Closed(window));
                    }
                }
            }
            // Cannot happen within one generation; nothing to count.
            Phase::Open { .. } => {}
        }
    }

    fn open(&self, inner: &mut Inner, now: Instant) {
        let until = now + self.thresholds.wait_in_open;
        self.move_to(inner, Phase::Open { until });
    }

    fn move_to(&self, inner: &mut Inner, phase: Phase) {
        inner.phase = phase;
        inner.generation += 1;
        let state = match inner.phase {
            Phase::Closed(_) => CircuitState::Closed,
            Phase::Open { .. } => CircuitState::Open,
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        };
        (self.on_change)(&self.target, state);
    }

    fn release(&self, generation: u64) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if let Phase::HalfOpen { admitted, .. } = &mut inner.phase {
            *admitted = admitted.saturating_sub(1);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update leaves whole values behind: a panic elsewhere leaves a usable state.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.release(self.generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(wait: Duration) -> CallPolicy {
        CallPolicy {
            window: WindowKind::Count(10),
            minimum_calls: 4,
            failure_rate: 50.0,
            slow_call_rate: 100.0,
            wait_in_open: wait,
            half_open_calls: 2,
            ..CallPolicy::default()
        }
    }

    fn breaker(wait: Duration) -> Breaker {
        Breaker::new("test", &policy(wait), |_, _| {})
    }

    fn call(b: &Breaker, failed: bool) -> bool {
        match b.try_acquire() {
            Some(permit) => {
                b.record(permit, failed, false);
                true
            }
            None => false,
        }
    }

    #[test]
    fn opens_at_the_failure_rate_once_it_has_the_minimum_calls() {
        let b = breaker(Duration::from_secs(60));
        assert!(call(&b, true));
        assert!(call(&b, true));
        assert!(call(&b, true));
        assert_eq!(b.state(), CircuitState::Closed, "3 calls < minimum 4");
        assert!(call(&b, false));
        assert_eq!(b.state(), CircuitState::Open, "3 of 4 failed: 75% >= 50%");
        assert!(!call(&b, false), "an open circuit refuses");
    }

    #[test]
    fn stays_closed_below_the_rate() {
        let b = breaker(Duration::from_secs(60));
        for failed in [true, false, false, false, true, false, false, false] {
            assert!(call(&b, failed));
        }
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn slow_calls_open_it_too() {
        let mut p = policy(Duration::from_secs(60));
        p.slow_call_rate = 50.0;
        let b = Breaker::new("test", &p, |_, _| {});
        for _ in 0..4 {
            let permit = b.try_acquire().unwrap();
            b.record(permit, false, true);
        }
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn half_open_admits_the_trial_calls_and_their_outcome_decides() {
        let b = breaker(Duration::from_millis(20));
        for _ in 0..4 {
            call(&b, true);
        }
        std::thread::sleep(Duration::from_millis(30));
        let first = b.try_acquire().expect("the wait is over: a trial");
        assert_eq!(b.state(), CircuitState::HalfOpen);
        let second = b.try_acquire().expect("two trials allowed");
        assert!(b.try_acquire().is_none(), "a third is refused");
        b.record(first, true, false);
        b.record(second, true, false);
        assert_eq!(b.state(), CircuitState::Open, "trials failed");

        std::thread::sleep(Duration::from_millis(30));
        assert!(call(&b, false));
        assert!(call(&b, false));
        assert_eq!(b.state(), CircuitState::Closed, "trials succeeded");
        assert!(call(&b, true), "closed again, with a fresh window");
        assert_eq!(b.state(), CircuitState::Closed);
    }

    /// Regression: a trial call whose caller went away kept the circuit half-open for good.
    #[test]
    fn an_abandoned_trial_gives_its_slot_back() {
        let b = breaker(Duration::from_millis(10));
        for _ in 0..4 {
            call(&b, true);
        }
        std::thread::sleep(Duration::from_millis(20));
        drop(b.try_acquire().unwrap());
        drop(b.try_acquire().unwrap());
        assert!(call(&b, false));
        assert!(call(&b, false));
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn answers_from_before_a_change_do_not_count_after_it() {
        let b = breaker(Duration::from_secs(60));
        let late = b.try_acquire().unwrap();
        for _ in 0..4 {
            call(&b, true);
        }
        assert_eq!(b.state(), CircuitState::Open);
        b.record(late, false, false);
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn a_time_window_opens_on_the_rate_within_its_seconds() {
        let mut p = policy(Duration::from_secs(60));
        p.window = WindowKind::Time(5);
        let b = Breaker::new("test", &p, |_, _| {});
        for failed in [false, true, true, true] {
            call(&b, failed);
        }
        assert_eq!(b.state(), CircuitState::Open);
    }
}
