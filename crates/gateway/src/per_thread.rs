//! State split into slots, one per thread, for state that threads update on every request and
//! another thread visits now and then (a log writer, a timer, a status page): each slot has its
//! own cache lines, so threads that touch only their own slot never contend. Threads beyond the
//! number of slots share them.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The calling thread's number: 0 for the first thread that asks, 1 for the next, and so on.
pub(crate) fn thread_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NUMBER: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    NUMBER.with(|n| *n)
}

/// `N` slots of `T`.
pub(crate) struct Slots<T, const N: usize>([Slot<T>; N]);

#[repr(align(128))]
struct Slot<T>(Mutex<T>);

impl<T: Default, const N: usize> Default for Slots<T, N> {
    fn default() -> Self {
        Slots(std::array::from_fn(|_| Slot(Mutex::default())))
    }
}

impl<T, const N: usize> Slots<T, N> {
    /// The calling thread's slot.
    pub(crate) fn mine() -> usize {
        thread_number() % N
    }

    /// Locks slot `index` (`0..N`).
    pub(crate) fn lock(&self, index: usize) -> MutexGuard<'_, T> {
        // A thread that panicked while holding a slot leaves its state as it was: still usable.
        self.0[index].0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks the calling thread's slot.
    pub(crate) fn lock_mine(&self) -> MutexGuard<'_, T> {
        self.lock(Self::mine())
    }
}

/// Thread slots of counters: at most this many threads count apart; more share.
const COUNTER_SLOTS: usize = 16;

/// One thread slot's share of a count, on a cache line of its own.
#[repr(align(128))]
#[derive(Default)]
struct Line<T>(T);

/// A count that only goes up, updated on every request from every worker thread: each thread
/// adds to its own cache line, and reading sums the lines (rare: a scrape, a status page).
#[derive(Default)]
pub(crate) struct Counter([Line<AtomicU64>; COUNTER_SLOTS]);

impl Counter {
    pub(crate) fn increment(&self) {
        self.0[thread_number() % COUNTER_SLOTS]
            .0
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn value(&self) -> u64 {
        self.0.iter().map(|l| l.0.load(Ordering::Relaxed)).sum()
    }
}

/// A level that goes up and down (requests in flight), kept as [`Counter`] is. Any thread may
/// take back what another added: only the sum has a meaning.
#[derive(Default)]
pub(crate) struct Gauge([Line<AtomicI64>; COUNTER_SLOTS]);

impl Gauge {
    pub(crate) fn increment(&self) {
        self.0[thread_number() % COUNTER_SLOTS]
            .0
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn decrement(&self) {
        self.0[thread_number() % COUNTER_SLOTS]
            .0
            .fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn value(&self) -> i64 {
        self.0.iter().map(|l| l.0.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_keeps_its_slot_and_every_slot_can_be_visited() {
        let slots: Slots<Vec<usize>, 4> = Slots::default();
        std::thread::scope(|scope| {
            for _ in 0..6 {
                scope.spawn(|| {
                    let mine = Slots::<Vec<usize>, 4>::mine();
                    for _ in 0..100 {
                        assert_eq!(Slots::<Vec<usize>, 4>::mine(), mine);
                        slots.lock_mine().push(mine);
                    }
                });
            }
        });
        let mut total = 0;
        for index in 0..4 {
            let slot = slots.lock(index);
            assert!(slot.iter().all(|&owner| owner == index));
            total += slot.len();
        }
        assert_eq!(total, 600);
    }
}
