//! State split into slots, one per thread, for state that threads update on every request and
//! another thread visits now and then (a log writer, a timer): each slot has its own lock on its
//! own cache lines, so threads that touch only their own slot never contend. Threads beyond the
//! number of slots share them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The calling thread's number: 0 for the first thread that asks, 1 for the next, and so on.
pub fn thread_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NUMBER: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    NUMBER.with(|n| *n)
}

/// `N` slots of `T`.
pub struct Slots<T, const N: usize>([Slot<T>; N]);

#[repr(align(128))]
struct Slot<T>(Mutex<T>);

impl<T: Default, const N: usize> Default for Slots<T, N> {
    fn default() -> Self {
        Slots(std::array::from_fn(|_| Slot(Mutex::default())))
    }
}

impl<T, const N: usize> Slots<T, N> {
    /// The calling thread's slot.
    pub fn mine() -> usize {
        thread_number() % N
    }

    /// Locks slot `index` (`0..N`).
    pub fn lock(&self, index: usize) -> MutexGuard<'_, T> {
        // A thread that panicked while holding a slot leaves its state as it was: still usable.
        self.0[index].0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks the calling thread's slot.
    pub fn lock_mine(&self) -> MutexGuard<'_, T> {
        self.lock(Self::mine())
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
