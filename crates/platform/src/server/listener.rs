//! Accepting connections: a cap on open connections, recycling at the cap, and draining.
//!
//! At most `max_connections` connections are open. When one more arrives at the cap, the
//! connection that has waited longest for a request head (an idle keep-alive connection, or one
//! whose head is only partly in) is closed to make room, as nginx reuses its "reusable"
//! connections when `worker_connections` runs out: a flood of connections that send half a head
//! (slowloris) then only ever displaces itself, and a client that sends a whole request gets a
//! place at once. A connection that is handling a request is never closed for this; when every
//! connection is busy, the new one waits until one ends.
//!
//! Shutdown: the listener closes, every connection is told to drain (finish what it is doing,
//! take no new request), and after `drain_timeout` the ones still open are told to close at
//! once, tunnels included.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::health::{Phase, Readiness};

/// How a listener takes and lets go of connections.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// Open connections at most; see the module docs for what happens at the cap.
    pub max_connections: usize,
    /// How long connections may take to finish once draining starts.
    pub drain_timeout: Duration,
    /// How long to keep serving, unready, after shutdown is requested and before the listener
    /// closes.
    pub shutdown_delay: Duration,
}

/// What the listener tells a connection, as bits of [`Slot::signals`]: recycled (only while
/// waiting for a head), draining (finish the request in flight, take no other), closing (the
/// drain timeout has passed: close now).
const RECYCLE: u8 = 1;
const DRAIN: u8 = 2;
const CLOSE: u8 = 4;

/// A connection just accepted, and its line to the listener.
pub struct Connection {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub control: Control,
}

/// A connection's line to its listener. While it lives the connection holds its place under the
/// cap; dropping it gives the place back.
///
/// Its signals (recycled, draining, closing) are for the connection's own task: each is kept in
/// the connection's own slot, so waiting for them touches nothing another connection uses.
pub struct Control {
    slot: Arc<Slot>,
    registry: Arc<Registry>,
    key: usize,
    open: metrics::Gauge,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("signals", &self.slot.signals.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Control {
    /// The connection waits for a request head: from now on it may be recycled.
    pub fn waiting(&self) {
        self.slot.waiting();
    }

    /// The connection has a request to handle: it is not recycled until it waits again. `false`
    /// when it was recycled already, and must close without handling the request.
    pub fn busy(&self) -> bool {
        self.slot.busy()
    }

    /// Resolves when the listener recycles the connection (only while it waits).
    pub fn recycled(&self) -> Signalled {
        self.signalled(RECYCLE)
    }

    /// A handle that marks the connection busy or waiting, for whatever serves its requests.
    pub fn presence(&self) -> Presence {
        Presence(Arc::clone(&self.slot))
    }

    /// Whether draining (or closing) has started: one atomic load.
    pub fn is_draining(&self) -> bool {
        self.slot.signals.load(Ordering::Acquire) & (DRAIN | CLOSE) != 0
    }

    /// Resolves when draining starts.
    pub fn draining(&self) -> Signalled {
        self.signalled(DRAIN | CLOSE)
    }

    /// Resolves when the drain timeout has passed: close now.
    pub fn closing(&self) -> Signalled {
        self.signalled(CLOSE)
    }

    fn signalled(&self, mask: u8) -> Signalled {
        Signalled {
            slot: Arc::clone(&self.slot),
            mask,
        }
    }
}

/// A signal from the listener to a connection (see [`Control`]), for the connection's own task.
#[derive(Debug)]
pub struct Signalled {
    slot: Arc<Slot>,
    mask: u8,
}

impl Future for Signalled {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let raised = || self.slot.signals.load(Ordering::Acquire) & self.mask != 0;
        if raised() {
            return Poll::Ready(());
        }
        self.slot.waker.register(cx.waker());
        // A signal raised before the registration is seen here.
        if raised() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.registry.remove(self.key);
        self.open.decrement(1.0);
    }
}

/// Marks a connection busy or waiting (see [`Control::busy`] and [`Control::waiting`]).
#[derive(Clone)]
pub struct Presence(Arc<Slot>);

impl Presence {
    pub fn waiting(&self) {
        self.0.waiting();
    }

    pub fn busy(&self) -> bool {
        self.0.busy()
    }
}

/// A connection's state as the listener sees it: busy, recycled, or waiting since a time.
#[derive(Debug)]
struct Slot {
    /// [`BUSY`], [`RECYCLED`], or the coarse clock's milliseconds when it began waiting.
    state: AtomicU64,
    /// The listener's signals ([`RECYCLE`], [`DRAIN`], [`CLOSE`]) and the task waiting for them.
    signals: AtomicU8,
    waker: AtomicWaker,
    /// The order of its connection's accept: among connections that began waiting within the
    /// same tick of the coarse clock, the one accepted first goes first.
    accepted: AtomicU64,
}

const BUSY: u64 = u64::MAX;
const RECYCLED: u64 = u64::MAX - 1;

impl Slot {
    fn new() -> Self {
        Slot {
            state: AtomicU64::new(super::clock::millis()),
            signals: AtomicU8::new(0),
            waker: AtomicWaker::new(),
            accepted: AtomicU64::new(0),
        }
    }

    fn waiting(&self) {
        // Only from busy: a recycled connection stays recycled.
        let _ = self.state.compare_exchange(
            BUSY,
            super::clock::millis(),
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    fn busy(&self) -> bool {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            match current {
                BUSY => return true,
                RECYCLED => return false,
                since => match self.state.compare_exchange(
                    since,
                    BUSY,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return true,
                    Err(now) => current = now,
                },
            }
        }
    }

    /// Recycles the slot if it still waits since `since`.
    fn recycle(&self, since: u64) -> bool {
        let recycled = self
            .state
            .compare_exchange(since, RECYCLED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if recycled {
            self.raise(RECYCLE);
        }
        recycled
    }

    fn raise(&self, signal: u8) {
        self.signals.fetch_or(signal, Ordering::AcqRel);
        self.waker.wake();
    }
}

/// Every open connection's slot.
#[derive(Default)]
struct Registry {
    slots: Mutex<slab::Slab<Arc<Slot>>>,
    /// Connections accepted so far.
    accepted: AtomicU64,
    /// The signals raised for every connection so far ([`DRAIN`], [`CLOSE`]).
    raised: AtomicU8,
}

impl Registry {
    fn insert(&self, slot: Arc<Slot>) -> usize {
        let order = self.accepted.fetch_add(1, Ordering::Relaxed);
        slot.accepted.store(order, Ordering::Relaxed);
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        // Under the lock, so that a signal for every connection reaches this one too.
        slot.signals
            .fetch_or(self.raised.load(Ordering::Acquire), Ordering::AcqRel);
        slots.insert(slot)
    }

    /// Raises `signal` on every connection, now and to come.
    fn raise_all(&self, signal: u8) {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        self.raised.fetch_or(signal, Ordering::AcqRel);
        for (_, slot) in slots.iter() {
            slot.raise(signal);
        }
    }

    fn open(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Waits until no connection is open, or `limit` passes: whether none is.
    async fn all_closed(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.open() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn remove(&self, key: usize) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.contains(key) {
            slots.remove(key);
        }
    }

    /// Recycles the connection that has waited longest for a head; whether there was one.
    fn recycle_oldest(&self) -> bool {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let oldest = slots
                .iter()
                .filter_map(|(_, slot)| {
                    let since = slot.state.load(Ordering::Acquire);
                    (since < RECYCLED).then_some((since, slot))
                })
                .min_by_key(|(since, slot)| (*since, slot.accepted.load(Ordering::Relaxed)));
            match oldest {
                None => return false,
                Some((since, slot)) if slot.recycle(since) => return true,
                // It turned busy meanwhile: look again.
                Some(_) => {}
            }
        }
    }
}

/// A connection's [`Control`] without a listener, for serving a connection on its own (tests,
/// fuzzing): it drains, closes and is recycled only when told.
pub struct Standalone {
    registry: Arc<Registry>,
}

impl Standalone {
    pub fn new() -> (Standalone, Control) {
        let registry = Arc::new(Registry::default());
        let slot = Arc::new(Slot::new());
        let key = registry.insert(Arc::clone(&slot));
        let permit = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("a fresh semaphore has a permit");
        let open = metrics::gauge!("http_connections_open", "listener" => "standalone");
        open.increment(1.0);
        let control = Control {
            slot,
            registry: Arc::clone(&registry),
            key,
            open,
            _permit: permit,
        };
        (Standalone { registry }, control)
    }

    /// Tells the connection to drain.
    pub fn drain(&self) {
        self.registry.raise_all(DRAIN);
    }

    /// Tells the connection to close now.
    pub fn close(&self) {
        self.registry.raise_all(CLOSE);
    }

    /// Recycles the connection if it waits for a head; whether it did.
    pub fn recycle(&self) -> bool {
        self.registry.recycle_oldest()
    }
}

/// How often a listener at its cap looks again for a connection to recycle, while every
/// connection is busy.
const RECYCLE_RETRY: Duration = Duration::from_millis(50);

/// Accepts connections on `listener` and hands each to `serve` (which runs it wherever it
/// likes, holding its [`Control`] until it ends) until `shutdown` resolves; then drains.
pub async fn accept_loop(
    listener: TcpListener,
    options: ListenOptions,
    readiness: Readiness,
    shutdown: impl Future<Output = ()>,
    mut serve: impl FnMut(Connection),
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let registry = Arc::new(Registry::default());
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    tracing::info!(address = %local, "listening");
    crate::telemetry::metrics_handle();
    let open = metrics::gauge!("http_connections_open", "listener" => local.to_string());

    // Resolves when the listener should close: the shutdown signal, then the shutdown delay
    // (during which readiness already says "draining").
    let stop_accepting = async {
        shutdown.await;
        readiness.set_phase(Phase::Draining);
        if !options.shutdown_delay.is_zero() {
            tracing::info!(delay = ?options.shutdown_delay, "unready; still serving during the shutdown delay");
            tokio::time::sleep(options.shutdown_delay).await;
        }
    };
    let mut shutdown = std::pin::pin!(stop_accepting);
    'accepting: loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => loop {
                // At the cap: make room, then wait for the place to free up.
                if registry.recycle_oldest() {
                    tracing::debug!(%peer, "at the connection cap; recycled a waiting connection");
                }
                tokio::select! {
                    permit = Arc::clone(&permits).acquire_owned() => {
                        break permit.expect("the semaphore is never closed");
                    }
                    () = tokio::time::sleep(RECYCLE_RETRY) => {}
                    () = &mut shutdown => break 'accepting,
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let slot = Arc::new(Slot::new());
        let key = registry.insert(Arc::clone(&slot));
        open.increment(1.0);
        serve(Connection {
            stream,
            peer,
            control: Control {
                slot,
                registry: Arc::clone(&registry),
                key,
                open: open.clone(),
                _permit: permit,
            },
        });
    }

    drop(listener);
    let open_connections = registry.open();
    tracing::info!(address = %local, open_connections, "shutting down, draining");
    registry.raise_all(DRAIN);
    if registry.all_closed(options.drain_timeout).await {
        tracing::info!("drained");
    } else {
        tracing::warn!(
            timeout = ?options.drain_timeout,
            open_connections = registry.open(),
            "drain timeout reached; closing the connections still open"
        );
        registry.raise_all(CLOSE);
        // Closing is immediate; this only bounds a connection that ignores it.
        registry.all_closed(Duration::from_secs(1)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn among_connections_waiting_since_the_same_tick_the_first_accepted_goes_first() {
        let registry = Registry::default();
        let slots: Vec<Arc<Slot>> = (0..3).map(|_| Arc::new(Slot::new())).collect();
        let keys: Vec<usize> = slots
            .iter()
            .map(|s| registry.insert(Arc::clone(s)))
            .collect();
        for slot in &slots {
            slot.state.store(7, Ordering::Relaxed);
        }
        assert!(registry.recycle_oldest());
        assert_eq!(slots[0].state.load(Ordering::Relaxed), RECYCLED);
        // The first one's place goes to a newcomer waiting since the same tick: the second
        // one, accepted before it, goes next.
        registry.remove(keys[0]);
        let newcomer = Arc::new(Slot::new());
        registry.insert(Arc::clone(&newcomer));
        newcomer.state.store(7, Ordering::Relaxed);
        assert!(registry.recycle_oldest());
        assert_eq!(slots[1].state.load(Ordering::Relaxed), RECYCLED);
        assert_eq!(newcomer.state.load(Ordering::Relaxed), 7);
    }

    #[test]
    fn the_longest_waiting_connection_is_recycled_and_busy_ones_never() {
        let registry = Registry::default();
        let slots: Vec<Arc<Slot>> = (0..3).map(|_| Arc::new(Slot::new())).collect();
        for (i, slot) in slots.iter().enumerate() {
            slot.state.store(100 + i as u64, Ordering::Relaxed);
            registry.insert(Arc::clone(slot));
        }
        assert!(slots[0].busy());
        assert!(registry.recycle_oldest());
        assert_eq!(slots[1].state.load(Ordering::Relaxed), RECYCLED);
        assert!(!slots[1].busy(), "a recycled connection takes no request");
        slots[1].waiting();
        assert_eq!(
            slots[1].state.load(Ordering::Relaxed),
            RECYCLED,
            "and stays recycled"
        );
        assert!(registry.recycle_oldest());
        assert_eq!(slots[2].state.load(Ordering::Relaxed), RECYCLED);
        assert!(!registry.recycle_oldest(), "the busy one is never taken");
        slots[0].waiting();
        assert!(registry.recycle_oldest());
    }
}
