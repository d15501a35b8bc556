//! The retry budget: retries within the last [`WINDOW_SECONDS`] may not exceed a fraction of the
//! requests within it, plus a small reserve, so a failing upstream never sees much more than its
//! usual load.
//!
//! Every request deposits, and only the rare retry withdraws. So deposits are a per-thread count
//! (no lock, no cache line that the threads share a write to), and the window is kept by sampling
//! that count once a second: the requests within the window are the count now less the count when
//! the window began. Withdrawals take a lock.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use platform::hot_metrics::Counter;

/// How far back the budget looks.
pub(crate) const WINDOW_SECONDS: u64 = 10;

pub(crate) struct RetryBudget {
    requests: Counter,
    /// The second of the latest sample, so a deposit sees without the lock whether to sample.
    sampled: AtomicU64,
    window: Mutex<Window>,
    /// The coarse clock's milliseconds when it was made (signed, so a test can move it back).
    started: i64,
    /// Retries allowed whatever the traffic (`min_retries_per_second` times the window).
    reserve: f64,
    ratio: f64,
}

#[derive(Default)]
struct Window {
    /// (second, requests deposited before it began), oldest first, one per second that had
    /// requests.
    samples: VecDeque<(u64, u64)>,
    /// The second of each retry within the window, oldest first.
    retries: VecDeque<u64>,
}

impl RetryBudget {
    pub(crate) fn new(min_per_second: u32, ratio: f32) -> Self {
        RetryBudget {
            requests: Counter::default(),
            sampled: AtomicU64::new(u64::MAX),
            window: Mutex::default(),
            started: platform::coarse_timer::millis() as i64,
            reserve: f64::from(min_per_second) * WINDOW_SECONDS as f64,
            ratio: f64::from(ratio),
        }
    }

    /// Seconds since the budget was made, on the coarse clock.
    fn second(&self) -> u64 {
        let elapsed = platform::coarse_timer::millis() as i64 - self.started;
        (elapsed.max(0) / 1000) as u64
    }

    /// Counts a request.
    pub(crate) fn deposit(&self) {
        let second = self.second();
        if self.sampled.load(Ordering::Relaxed) != second {
            // The first request of a second marks where the second begins.
            let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
            if window.samples.back().is_none_or(|&(s, _)| s != second) {
                window.samples.push_back((second, self.requests.value()));
                self.sampled.store(second, Ordering::Relaxed);
            }
        }
        self.requests.increment(1);
    }

    /// Takes one retry from the budget; `false` when there is none left.
    pub(crate) fn withdraw(&self) -> bool {
        let second = self.second();
        let first = second.saturating_sub(WINDOW_SECONDS - 1);
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        while window.retries.front().is_some_and(|&s| s < first) {
            window.retries.pop_front();
        }
        while window.samples.front().is_some_and(|&(s, _)| s < first) {
            window.samples.pop_front();
        }
        // What was deposited before the window's first second with requests.
        let requests = match window.samples.front() {
            Some(&(_, before)) => self.requests.value().saturating_sub(before),
            None => 0,
        };
        let allowed = self.reserve + self.ratio * requests as f64;
        if (window.retries.len() as f64) + 1.0 <= allowed {
            window.retries.push_back(second);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_a_fraction_of_requests() {
        let budget = RetryBudget::new(0, 0.2);
        assert!(!budget.withdraw(), "no requests, no reserve: no retry");
        for _ in 0..10 {
            budget.deposit();
        }
        assert!(budget.withdraw());
        assert!(budget.withdraw());
        assert!(!budget.withdraw(), "20% of 10 is 2");
        for _ in 0..5 {
            budget.deposit();
        }
        assert!(budget.withdraw(), "20% of 15 is 3");
        assert!(!budget.withdraw());
    }

    #[test]
    fn the_reserve_allows_retries_without_traffic() {
        let budget = RetryBudget::new(1, 0.0);
        for _ in 0..WINDOW_SECONDS {
            assert!(budget.withdraw());
        }
        assert!(!budget.withdraw());
    }

    #[test]
    fn deposits_from_every_thread_count() {
        let budget = RetryBudget::new(0, 0.5);
        std::thread::scope(|scope| {
            for _ in 0..12 {
                scope.spawn(|| {
                    for _ in 0..10 {
                        budget.deposit();
                    }
                });
            }
        });
        let granted = (0..100).filter(|_| budget.withdraw()).count();
        assert_eq!(granted, 60);
    }

    #[test]
    fn requests_and_retries_older_than_the_window_no_longer_count() {
        let mut budget = RetryBudget::new(0, 0.5);
        for _ in 0..4 {
            budget.deposit();
        }
        assert!(budget.withdraw());
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
        // Move the budget's clock a window and a second ahead.
        budget.started -= (WINDOW_SECONDS as i64 + 1) * 1000;
        assert!(!budget.withdraw(), "the old requests have left the window");
        budget.deposit();
        budget.deposit();
        assert!(budget.withdraw(), "the old retries have left it too");
        assert!(!budget.withdraw());
    }
}
