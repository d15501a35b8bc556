//! Per-route request limits: a request rate per client address (429 with `Retry-After`) and a
//! largest request body (413, see `proxy`).
//!
//! The rate limit is a token bucket per client address, as nginx's `limit_req` with `burst` and
//! `nodelay`: a client may send `burst` requests at once, then `per_second` on average; the next
//! one is refused with the number of seconds until it would pass. The client address is the
//! connection's peer (never `X-Forwarded-For`, which a client can write itself). Buckets live with
//! the route table, so a reload starts them afresh; idle full buckets are dropped as the table
//! grows, so memory stays bounded by the clients active within a few seconds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::RateLimit;

/// Above this many tracked addresses, buckets that have refilled are dropped.
const SWEEP_ABOVE: usize = 10_000;

pub(crate) struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        RateLimiter {
            per_second: limit.per_second,
            burst: f64::from(limit.burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `client`: `Ok`, or `Err(seconds)` until one is available.
    pub(crate) fn check(&self, client: IpAddr) -> Result<(), u64> {
        self.check_at(client, Instant::now())
    }

    fn check_at(&self, client: IpAddr, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > SWEEP_ABOVE {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refilled = now.duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refilled).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / self.per_second).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_and_clients_are_counted_apart() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst: 3,
        });
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check_at(a, start), Ok(()));
        }
        assert_eq!(limiter.check_at(a, start), Err(1), "retry after a second");
        assert_eq!(
            limiter.check_at(b, start),
            Ok(()),
            "another client has its own bucket"
        );
        // Half a second later one token is back (2 per second), and only one.
        let later = start + Duration::from_millis(500);
        assert_eq!(limiter.check_at(a, later), Ok(()));
        assert!(limiter.check_at(a, later).is_err());
        // Long idle: back to the burst, never more.
        let idle = later + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(limiter.check_at(a, idle), Ok(()));
        }
        assert!(limiter.check_at(a, idle).is_err());
    }

    #[test]
    fn slow_rates_say_how_long_to_wait() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 0.1,
            burst: 1,
        });
        let client: IpAddr = "::1".parse().unwrap();
        let now = Instant::now();
        assert_eq!(limiter.check_at(client, now), Ok(()));
        assert_eq!(limiter.check_at(client, now), Err(10));
    }
}
