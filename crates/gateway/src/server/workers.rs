//! Worker threads for the gateway's connections, as nginx's worker processes.

use std::future::Future;
use std::io;
use std::sync::Arc;

/// Threads that each run a single-threaded runtime, for serving connections as nginx's worker
/// processes do: a connection stays on one thread from accept to close, and everything its
/// requests use (tasks, timers, sockets to other servers, per-thread pools) stays there too,
/// without the cross-thread wake-ups and locks of a work-stealing runtime. New connections go to
/// the worker with the fewest open connections.
///
/// Cheap to clone; the threads stop when the last clone is dropped (dropping what they still
/// run).
#[derive(Clone)]
pub(crate) struct Workers(Arc<WorkerSet>);

struct WorkerSet {
    workers: Vec<Worker>,
    /// Dropped with the set: the workers' runtimes stop.
    _stop: tokio::sync::watch::Sender<()>,
}

struct Worker {
    handle: tokio::runtime::Handle,
    open: Arc<std::sync::atomic::AtomicUsize>,
}

/// A connection counted on its worker until it ends.
struct OnWorker(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for OnWorker {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A worker picked for a connection.
pub(crate) struct WorkerSlot<'a>(&'a Worker);

impl WorkerSlot<'_> {
    /// Runs `future` on this worker, counted as one of its connections.
    pub(crate) fn spawn<F>(self, future: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.0
            .open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let counted = OnWorker(Arc::clone(&self.0.open));
        self.0.handle.spawn(async move {
            let _counted = counted;
            future.await;
        })
    }
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("threads", &self.0.workers.len())
            .finish()
    }
}

impl Workers {
    /// Starts `threads` workers (at least one), named `{name}-{i}`. `on_start` runs on each
    /// worker's runtime once it is up (a worker's own housekeeping, say).
    pub(crate) fn start<F, Fut>(threads: usize, name: &str, on_start: F) -> io::Result<Self>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let (stop, stopped) = tokio::sync::watch::channel(());
        let on_start = Arc::new(on_start);
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let mut stopped = stopped.clone();
            let on_start = Arc::clone(&on_start);
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&runtime, async move {
                        tokio::task::spawn_local(on_start());
                        // Ends when every sender is gone.
                        while stopped.changed().await.is_ok() {}
                    });
                })?;
            workers.push(Worker {
                handle,
                open: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            });
        }
        Ok(Workers(Arc::new(WorkerSet {
            workers,
            _stop: stop,
        })))
    }

    /// The worker with the fewest open connections.
    pub(crate) fn next(&self) -> WorkerSlot<'_> {
        let least = self
            .0
            .workers
            .iter()
            .min_by_key(|w| w.open.load(std::sync::atomic::Ordering::Relaxed))
            .expect("there is at least one worker");
        WorkerSlot(least)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("").to_string()
    }

    #[tokio::test]
    async fn connections_go_to_the_least_busy_worker_and_workers_stop_when_dropped() {
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let workers = Workers::start(2, "test-worker", move || {
            let started_tx = started_tx.clone();
            async move {
                let _ = started_tx.send(thread_name());
            }
        })
        .unwrap();
        let mut names = vec![started.recv().await.unwrap(), started.recv().await.unwrap()];
        names.sort();
        assert_eq!(names, ["test-worker-0", "test-worker-1"]);

        // Two long connections land on different workers; a third goes where one has ended.
        let (end_first, first_ends) = tokio::sync::oneshot::channel::<()>();
        let (end_second, second_ends) = tokio::sync::oneshot::channel::<()>();
        let (tx, mut ran_on) = tokio::sync::mpsc::unbounded_channel();
        for (i, ends) in [first_ends, second_ends].into_iter().enumerate() {
            let tx = tx.clone();
            workers.next().spawn(async move {
                let _ = tx.send((i, thread_name()));
                let _ = ends.await;
            });
        }
        let mut on = [ran_on.recv().await.unwrap(), ran_on.recv().await.unwrap()];
        on.sort();
        let (a, b) = (on[0].1.clone(), on[1].1.clone());
        assert_ne!(a, b, "each worker takes one connection");
        end_first.send(()).unwrap();
        // The first connection's worker frees up.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let third = loop {
            let slot = workers.next();
            let counts: Vec<usize> = workers
                .0
                .workers
                .iter()
                .map(|w| w.open.load(std::sync::atomic::Ordering::Relaxed))
                .collect();
            if counts.contains(&0) {
                let tx = tx.clone();
                slot.spawn(async move {
                    let _ = tx.send((2, thread_name()));
                });
                break ran_on.recv().await.unwrap().1;
            }
            assert!(std::time::Instant::now() < deadline, "{counts:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(third, a, "the worker whose connection ended takes the next");

        // Dropping the workers stops their runtimes, and with them what they still run.
        drop(workers);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while tx.strong_count() > 1 {
            assert!(std::time::Instant::now() < deadline, "a worker still runs");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(end_second);
    }
}
