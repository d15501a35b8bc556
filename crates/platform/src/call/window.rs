//! The breaker's memory of recent calls, as Resilience4j keeps it: either the last N calls
//! (count-based) or the calls of the last N seconds (time-based, one bucket per second), each
//! with a running total so asking for the rates costs nothing.

use std::time::Instant;

/// Calls, failed calls and slow calls (a call can be both failed and slow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) calls: u32,
    pub(crate) failures: u32,
    pub(crate) slow: u32,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.calls += other.calls;
        self.failures += other.failures;
        self.slow += other.slow;
    }

    fn remove(&mut self, other: Tally) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
    }

    fn one(failed: bool, slow: bool) -> Tally {
        Tally {
            calls: 1,
            failures: u32::from(failed),
            slow: u32::from(slow),
        }
    }

    pub(crate) fn record(&mut self, failed: bool, slow: bool) {
        self.add(Tally::one(failed, slow));
    }

    /// Whether `part` of these calls reaches `percent` of them.
    pub(crate) fn reaches(&self, part: u32, percent: f64) -> bool {
        self.calls > 0 && f64::from(part) * 100.0 >= percent * f64::from(self.calls)
    }
}

#[derive(Debug)]
pub(crate) enum Window {
    /// The last `ring.len()` calls.
    Count {
        ring: Vec<Tally>,
        next: usize,
        total: Tally,
    },
    /// The calls of the last `buckets.len()` seconds; each bucket knows which second it holds.
    Time {
        buckets: Vec<(u64, Tally)>,
        origin: Instant,
    },
}

impl Window {
    pub(crate) fn count(size: u32) -> Window {
        Window::Count {
            ring: vec![Tally::default(); size.max(1) as usize],
            next: 0,
            total: Tally::default(),
        }
    }

    pub(crate) fn time(seconds: u32) -> Window {
        Window::Time {
            buckets: vec![(u64::MAX, Tally::default()); seconds.max(1) as usize],
            origin: Instant::now(),
        }
    }

    pub(crate) fn record(&mut self, failed: bool, slow: bool, now: Instant) {
        let call = Tally::one(failed, slow);
        match self {
            Window::Count { ring, next, total } => {
                // An empty slot is an all-zero tally: removing it changes nothing.
                total.remove(ring[*next]);
                ring[*next] = call;
                total.add(call);
                *next = (*next + 1) % ring.len();
            }
            Window::Time { buckets, origin } => {
                let second = now.saturating_duration_since(*origin).as_secs();
                let index = (second % buckets.len() as u64) as usize;
                let slot = &mut buckets[index];
                if slot.0 != second {
                    *slot = (second, Tally::default());
                }
                slot.1.add(call);
            }
        }
    }

    /// The calls the window holds now.
    pub(crate) fn total(&self, now: Instant) -> Tally {
        match self {
            Window::Count { total, .. } => *total,
            Window::Time { buckets, origin } => {
                let second = now.saturating_duration_since(*origin).as_secs();
                let span = buckets.len() as u64;
                let mut total = Tally::default();
                for (at, tally) in buckets {
                    if *at <= second && second - at < span {
                        total.add(*tally);
                    }
                }
                total
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_count_window_forgets_the_oldest_call() {
        let now = Instant::now();
        let mut window = Window::count(3);
        window.record(true, false, now);
        window.record(false, true, now);
        window.record(false, false, now);
        assert_eq!(
            window.total(now),
            Tally {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        window.record(false, false, now);
        assert_eq!(
            window.total(now),
            Tally {
                calls: 3,
                failures: 0,
                slow: 1
            }
        );
    }

    #[test]
    fn a_time_window_forgets_seconds_that_have_passed() {
        let mut window = Window::time(2);
        let origin = match &window {
            Window::Time { origin, .. } => *origin,
            Window::Count { .. } => unreachable!(),
        };
        window.record(true, false, origin);
        window.record(true, false, origin + Duration::from_millis(1500));
        assert_eq!(
            window.total(origin + Duration::from_millis(1600)).failures,
            2
        );
        // At 2.5 s the first second is out of a 2-second window.
        assert_eq!(
            window.total(origin + Duration::from_millis(2500)).failures,
            1
        );
        assert_eq!(window.total(origin + Duration::from_secs(10)).calls, 0);
    }

    #[test]
    fn rates_compare_as_percentages() {
        let tally = Tally {
            calls: 4,
            failures: 2,
            slow: 1,
        };
        assert!(tally.reaches(tally.failures, 50.0));
        assert!(!tally.reaches(tally.failures, 50.1));
        assert!(!tally.reaches(tally.slow, 30.0));
        assert!(!Tally::default().reaches(0, 1.0));
    }
}
