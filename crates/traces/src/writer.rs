//! One thread writes every batch, several at a time: batches that arrive while a transaction
//! commits wait together and go into the next one (group commit), so under many clients the
//! collector commits far fewer times than it receives batches. A request is answered `202` only
//! once its spans are committed, as before: a query right after sees them.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use crate::span::Span;
use crate::store::Store;

/// Batches waiting for the writer; past it, a request is refused with 503 rather than queued
/// without end.
const QUEUE: usize = 256;
/// Most spans in one transaction.
const MAX_SPANS_PER_COMMIT: usize = 20_000;

type Done = tokio::sync::oneshot::Sender<bool>;

#[derive(Clone)]
pub struct Writer {
    queue: SyncSender<(Vec<Span>, u64, Done)>,
}

/// Why a batch was not stored.
#[derive(Debug, PartialEq, Eq)]
pub enum NotStored {
    /// The queue is full: the collector cannot keep up.
    Busy,
    /// The store failed (logged).
    Failed,
}

impl Writer {
    /// Starts the writer thread, which ends when every `Writer` is dropped.
    pub fn start(store: Arc<Store>) -> std::io::Result<Writer> {
        let (queue, batches) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("trace-writer".into())
            .spawn(move || write_all(&store, &batches))?;
        Ok(Writer { queue })
    }

    /// Stores `spans` (filed under `now` when they have no timestamp); returns once committed.
    pub async fn store(&self, spans: Vec<Span>, now: u64) -> Result<(), NotStored> {
        let (done, committed) = tokio::sync::oneshot::channel();
        match self.queue.try_send((spans, now, done)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(NotStored::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(NotStored::Failed),
        }
        match committed.await {
            Ok(true) => Ok(()),
            _ => Err(NotStored::Failed),
        }
    }
}

fn write_all(store: &Store, batches: &Receiver<(Vec<Span>, u64, Done)>) {
    while let Ok(first) = batches.recv() {
        let mut group = vec![first];
        let mut count = group[0].0.len();
        while count < MAX_SPANS_PER_COMMIT {
            match batches.try_recv() {
                Ok(next) => {
                    count += next.0.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let all: Vec<(&[Span], u64)> = group
            .iter()
            .map(|(s, now, _)| (s.as_slice(), *now))
            .collect();
        let stored = match store.insert_many(&all) {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, "cannot store spans");
                false
            }
        };
        for (_, _, done) in group {
            let _ = done.send(stored);
        }
    }
}
