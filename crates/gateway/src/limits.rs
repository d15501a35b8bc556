//! Per-route request limits: a request rate per client address (429 with `Retry-After`) and a
//! largest request body (413, see `proxy`).
//!
//! The rate limit is the `governor` crate's keyed GCRA limiter, which behaves as nginx's
//! `limit_req` with `burst` and `nodelay`: a client may send `burst` requests at once, then
//! `per_second` on average; the next one is refused with the number of seconds until it would
//! pass. The client address is the connection's peer (never `X-Forwarded-For`, which a client
//! can write itself). The limiter lives with the route table, so a reload starts it afresh. Its
//! state is a concurrent map (one entry per client address); entries of clients that would be
//! back at their full burst are dropped by [`RateLimiter::sweep`], which the gateway runs every
//! few seconds off the request path, so memory stays bounded by the clients active within a
//! few seconds, and no request pays for the sweep.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;

use crate::config::RateLimit;

pub(crate) struct RateLimiter<C: Clock = DefaultClock> {
    limiter: governor::RateLimiter<
        IpAddr,
        DefaultKeyedStateStore<IpAddr>,
        C,
        NoOpMiddleware<<C as Clock>::Instant>,
    >,
    clock: C,
}

/// The quota of `limit`; validated configs have a positive rate and burst.
fn quota(limit: RateLimit) -> governor::Quota {
    let period = Duration::from_secs_f64(1.0 / limit.per_second.max(f64::MIN_POSITIVE))
        .max(Duration::from_nanos(1));
    governor::Quota::with_period(period)
        .expect("a period of at least a nanosecond")
        .allow_burst(NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN))
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self::with_clock(limit, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    fn with_clock(limit: RateLimit, clock: C) -> Self {
        RateLimiter {
            limiter: governor::RateLimiter::new(
                quota(limit),
                DefaultKeyedStateStore::default(),
                clock.clone(),
            ),
            clock,
        }
    }

    /// Takes a request for `client`: `Ok`, or `Err(seconds)` until one would pass.
    pub(crate) fn check(&self, client: IpAddr) -> Result<(), u64> {
        self.limiter.check_key(&client).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.as_secs_f64().ceil().max(1.0) as u64
        })
    }

    /// Drops the state of clients that are back at their full burst.
    pub(crate) fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Clients with state, for tests.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limiter(per_second: f64, burst: u32) -> (RateLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::with_clock(RateLimit { per_second, burst }, clock.clone());
        (limiter, clock)
    }

    #[test]
    fn a_burst_passes_then_the_rate_and_clients_are_counted_apart() {
        let (limiter, clock) = limiter(2.0, 3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert_eq!(limiter.check(a), Ok(()));
        }
        assert_eq!(limiter.check(a), Err(1), "retry after a second");
        assert_eq!(
            limiter.check(b),
            Ok(()),
            "another client has its own bucket"
        );
        // Half a second later one request may pass (2 per second), and only one.
        clock.advance(Duration::from_millis(500));
        assert_eq!(limiter.check(a), Ok(()));
        assert!(limiter.check(a).is_err());
        // Long idle: back to the burst, never more.
        clock.advance(Duration::from_secs(60));
        for _ in 0..3 {
            assert_eq!(limiter.check(a), Ok(()));
        }
        assert!(limiter.check(a).is_err());
    }

    #[test]
    fn slow_rates_say_how_long_to_wait() {
        let (limiter, _clock) = limiter(0.1, 1);
        let client: IpAddr = "::1".parse().unwrap();
        assert_eq!(limiter.check(client), Ok(()));
        assert_eq!(limiter.check(client), Err(10));
    }

    #[test]
    fn the_sweep_forgets_clients_back_at_their_burst() {
        let (limiter, clock) = limiter(10.0, 2);
        for i in 0..100u8 {
            let _ = limiter.check(IpAddr::from([10, 0, 0, i]));
        }
        assert_eq!(limiter.tracked(), 100);
        clock.advance(Duration::from_secs(1));
        let busy: IpAddr = "10.0.1.1".parse().unwrap();
        let _ = limiter.check(busy);
        limiter.sweep();
        assert_eq!(
            limiter.tracked(),
            1,
            "only the client active just now is kept"
        );
    }
}
