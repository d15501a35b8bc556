//! A coarse timer for deadlines that are seconds away and almost never reached: the HTTP/1 loop's
//! header read timeout, and [`timeout`] (the upstream response timeout).
//!
//! The loop arms the header timeout whenever it waits for a request head, which on a keep-alive
//! connection is once per request, and drops it as soon as the head arrives; the proxy arms a
//! response timeout per request too. With tokio's timer each of those is an insertion into the
//! timer wheel and a removal, and clock reads: a visible part of a small request's cost (measured:
//! docs/benchmarks.md). This timer keeps waiting sleeps in per-thread lists that one
//! background thread checks every [`TICK`]: arming and disarming a sleep is a push and a removal
//! under an uncontended lock, and the time it reads is the ticker's, so no clock is read per
//! request. A deadline holds to within one tick, which is nothing next to timeouts of seconds;
//! [`timeout`] keeps shorter ones on tokio's timer.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often waiting sleeps are checked.
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// Lists of waiting sleeps; each thread uses one (up to this many threads).
const SHARDS: usize = 16;

/// Timeouts at least this long run on the coarse clock in [`timeout`]; shorter ones on tokio's.
pub(crate) const COARSE_FROM: Duration = Duration::from_secs(1);

/// Runs `future` for at most `duration`: `Err(Elapsed)` when it takes longer. From
/// [`COARSE_FROM`] up the deadline is kept on the coarse clock (to within a [`TICK`], without
/// a timer-wheel entry or a clock read); shorter durations use tokio's timer.
pub(crate) fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    let deadline = if duration >= COARSE_FROM {
        Deadline::Coarse {
            sleep: CoarseSleep::after(duration),
        }
    } else {
        Deadline::Precise {
            sleep: tokio::time::sleep(duration),
        }
    };
    Timeout { future, deadline }
}

/// Milliseconds since the coarse clock started, as of its last tick: at most a [`TICK`] behind,
/// and read without a clock call. For stamps that only need to be that precise, such as when an
/// idle connection expires; as a number, they compare and add without `Instant` arithmetic.
pub(crate) fn millis() -> u64 {
    clock().millis()
}

/// Seconds since the Unix epoch on the coarse clock: at most a [`TICK`] behind, read without a
/// clock call. For the `Date` header and log timestamps, which show whole seconds.
pub(crate) fn unix_seconds() -> u64 {
    clock().unix_seconds.load(Ordering::Relaxed)
}

fn wall_clock_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A future's time ran out (see [`timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

pin_project_lite::pin_project! {
    /// See [`timeout`].
    pub(crate) struct Timeout<F> {
        #[pin]
        future: F,
        #[pin]
        deadline: Deadline,
    }
}

pin_project_lite::pin_project! {
    #[project = DeadlineProjection]
    enum Deadline {
        Coarse { sleep: CoarseSleep },
        Precise { #[pin] sleep: tokio::time::Sleep },
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        let elapsed = match this.deadline.project() {
            DeadlineProjection::Coarse { sleep } => Pin::new(sleep).poll(cx),
            DeadlineProjection::Precise { sleep } => sleep.poll(cx),
        };
        elapsed.map(|()| Err(Elapsed))
    }
}

/// A sleep until `deadline` (milliseconds on the timer's clock).
#[derive(Debug)]
pub(crate) struct CoarseSleep {
    deadline: u64,
    /// The shard and key of its entry, while it waits.
    waiting: Option<(usize, usize)>,
}

impl CoarseSleep {
    /// A sleep that ends `duration` from now.
    pub(crate) fn after(duration: Duration) -> Self {
        CoarseSleep {
            deadline: deadline_after(duration),
            waiting: None,
        }
    }

    /// Moves the deadline to `duration` from now: cheaper than a new sleep once this one waits.
    pub(crate) fn reset_after(&mut self, duration: Duration) {
        self.reset(deadline_after(duration));
    }

    fn reset(&mut self, deadline: u64) {
        self.deadline = deadline;
        if let Some((shard, key)) = self.waiting {
            clock().shards.lock(shard)[key].0 = deadline;
        }
    }
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let clock = clock();
        if clock.millis() >= self.deadline {
            return Poll::Ready(());
        }
        match self.waiting {
            Some((shard, key)) => {
                let mut entries = clock.shards.lock(shard);
                let (_, waker) = &mut entries[key];
                if !waker.will_wake(cx.waker()) {
                    waker.clone_from(cx.waker());
                }
            }
            None => {
                let shard = Waiting::mine();
                let key = clock
                    .shards
                    .lock(shard)
                    .insert((self.deadline, cx.waker().clone()));
                self.waiting = Some((shard, key));
            }
        }
        Poll::Pending
    }
}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        if let Some((shard, key)) = self.waiting.take() {
            clock().shards.lock(shard).remove(key);
        }
    }
}

/// The clock's reading `duration` from now.
fn deadline_after(duration: Duration) -> u64 {
    let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    clock().millis().saturating_add(millis)
}

/// The timer's clock (milliseconds since it started, advanced by the ticker) and waiting sleeps.
struct Clock {
    start: Instant,
    millis: AtomicU64,
    /// Wall-clock seconds since the Unix epoch, as of the last tick.
    unix_seconds: AtomicU64,
    shards: Waiting,
}

/// Waiting sleeps' deadlines and wakers, in per-thread lists.
type Waiting = crate::per_thread::Slots<slab::Slab<(u64, Waker)>, SHARDS>;

fn clock() -> &'static Clock {
    static CLOCK: OnceLock<&'static Clock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let clock: &'static Clock = Box::leak(Box::new(Clock {
            start: Instant::now(),
            millis: AtomicU64::new(0),
            unix_seconds: AtomicU64::new(wall_clock_seconds()),
            shards: Default::default(),
        }));
        std::thread::Builder::new()
            .name("coarse-timer".into())
            .spawn(move || clock.tick_forever())
            .expect("the coarse timer's thread starts");
        clock
    })
}

impl Clock {
    fn millis(&self) -> u64 {
        self.millis.load(Ordering::Acquire)
    }

    fn millis_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_millis() as u64
    }

    fn tick_forever(&self) {
        let mut due = Vec::new();
        loop {
            std::thread::sleep(TICK);
            let now = self.millis_at(Instant::now());
            self.millis.store(now, Ordering::Release);
            self.unix_seconds
                .store(wall_clock_seconds(), Ordering::Relaxed);
            for shard in 0..SHARDS {
                // Woken outside the lock: a woken task may be polled on another thread at once.
                due.extend(
                    self.shards
                        .lock(shard)
                        .iter()
                        .filter(|(_, (deadline, _))| *deadline <= now)
                        .map(|(_, (_, waker))| waker.clone()),
                );
                due.drain(..).for_each(Waker::wake);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleep(duration: Duration) -> CoarseSleep {
        CoarseSleep::after(duration)
    }

    #[test]
    fn the_coarse_wall_clock_follows_the_real_one() {
        for _ in 0..3 {
            let coarse = unix_seconds();
            let real = wall_clock_seconds();
            assert!(real.abs_diff(coarse) <= 1, "coarse {coarse}, real {real}");
            std::thread::sleep(TICK * 6);
        }
    }

    #[tokio::test]
    async fn sleeps_end_within_a_tick_of_their_deadline_and_resets_move_them() {
        let started = Instant::now();
        sleep(Duration::from_millis(300)).await;
        let slept = started.elapsed();
        assert!(slept >= Duration::from_millis(200), "{slept:?}");
        assert!(slept < Duration::from_secs(2), "{slept:?}");

        // A reset moves the deadline, later or earlier.
        let mut long = std::pin::pin!(sleep(Duration::from_secs(3600)));
        let woken = tokio::time::timeout(Duration::from_millis(500), &mut long).await;
        assert!(woken.is_err(), "an hour-long sleep ended early");
        long.reset_after(Duration::from_millis(100));
        tokio::time::timeout(Duration::from_secs(2), long)
            .await
            .expect("a sleep reset to 100 ms ends");
    }

    #[tokio::test]
    async fn timeouts_pass_on_the_output_or_end_it_short_and_long_alike() {
        for duration in [Duration::from_millis(300), Duration::from_millis(1200)] {
            let quick = timeout(duration, async { 7 }).await;
            assert_eq!(quick, Ok(7));
            let started = Instant::now();
            let slow = timeout(duration, tokio::time::sleep(Duration::from_secs(3600))).await;
            assert_eq!(slow, Err(Elapsed));
            let took = started.elapsed();
            assert!(
                took + TICK >= duration && took < duration + Duration::from_secs(2),
                "{duration:?} took {took:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_sleeps_on_many_threads_all_end() {
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                tokio::spawn(async move {
                    let sleep = sleep(Duration::from_millis(50 + i % 7 * 20));
                    if i % 2 == 0 {
                        sleep.await;
                    } else {
                        // Dropped while waiting.
                        let _ = tokio::time::timeout(Duration::from_millis(10), sleep).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("every sleep ends")
                .unwrap();
        }
    }

    #[test]
    fn a_sleep_dropped_while_waiting_leaves_its_list() {
        let mut sleep = Box::pin(CoarseSleep {
            deadline: u64::MAX,
            waiting: None,
        });
        let mut cx = Context::from_waker(Waker::noop());
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        let (shard, key) = sleep.waiting.expect("a pending sleep waits in a list");
        assert!(clock().shards.lock(shard).contains(key));
        drop(sleep);
        assert!(!clock().shards.lock(shard).contains(key));
    }
}
