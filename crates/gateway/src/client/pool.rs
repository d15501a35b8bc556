//! Idle connections to servers, per worker thread and server address.

use std::cell::{Cell, RefCell};
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::conn::Conn;

/// Idle connections kept per server address on one thread at most.
const MAX_IDLE_PER_SERVER: usize = 1024;

/// How often a thread's idle connections are checked for being closed or expired, at most (in
/// milliseconds of the coarse clock).
const SWEEP_EVERY_MS: u64 = 1000;

/// An idle connection in the pool.
struct Idle {
    conn: Conn,
    /// On the coarse clock's milliseconds.
    expires: u64,
}

impl Idle {
    /// Whether the connection can take a request: not expired, and the server has neither closed
    /// it nor sent anything unasked.
    fn usable(&mut self, now: u64) -> bool {
        if now >= self.expires {
            return false;
        }
        // Polling without a waker only looks.
        let mut cx = Context::from_waker(Waker::noop());
        match self.conn.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut byte = [0u8; 1];
                matches!(self.conn.stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

/// Idle connections by server address. The addresses come from the config, not from clients, so
/// a fast hash that an attacker could collide does no harm.
type Pool = rustc_hash::FxHashMap<Arc<str>, Vec<Idle>>;

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
    static LAST_SWEEP: Cell<Option<u64>> = const { Cell::new(None) };
}

/// The most recently used idle connection to `address` that is still usable.
pub(super) fn checkout(address: &str) -> Option<Conn> {
    let now = crate::coarse_timer::millis();
    POOL.with_borrow_mut(|pool| {
        let idle = pool.get_mut(address)?;
        while let Some(mut candidate) = idle.pop() {
            if candidate.usable(now) {
                return Some(candidate.conn);
            }
        }
        None
    })
}

pub(super) fn checkin(address: &Arc<str>, conn: Conn, idle_timeout: Duration) {
    let now = crate::coarse_timer::millis();
    let idle_timeout = u64::try_from(idle_timeout.as_millis()).unwrap_or(u64::MAX);
    POOL.with_borrow_mut(|pool| {
        let idle = pool.entry(Arc::clone(address)).or_default();
        if idle.len() < MAX_IDLE_PER_SERVER {
            idle.push(Idle {
                conn,
                expires: now.saturating_add(idle_timeout),
            });
        }
    });
    if LAST_SWEEP
        .get()
        .is_none_or(|last| now.saturating_sub(last) >= SWEEP_EVERY_MS)
    {
        LAST_SWEEP.set(Some(now));
        sweep();
    }
}

/// Closes this thread's idle connections that have expired or that their server has closed.
pub(crate) fn sweep() {
    let now = crate::coarse_timer::millis();
    POOL.with_borrow_mut(|pool| {
        for idle in pool.values_mut() {
            idle.retain_mut(|candidate| candidate.usable(now));
        }
        pool.retain(|_, idle| !idle.is_empty());
    });
}

/// Idle connections on this thread, for tests.
#[cfg(test)]
pub(super) fn idle_count(address: &str) -> usize {
    POOL.with_borrow(|pool| pool.get(address).map_or(0, Vec::len))
}
