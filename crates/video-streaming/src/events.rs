//! What happens to videos, as events: today one, `viewed`, recorded in the catalog's `history`
//! table. Handlers publish through [`Events`]; a message broker (FlixTube's later chapters send
//! `viewed` over RabbitMQ to a history service) would be another implementation of it, with no
//! change to the handlers (docs/video.md).

use crate::catalog::Catalog;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A video started playing: a request for it from its first byte.
    Viewed { video_id: String, at: String },
}

/// Where events go. `publish` does not wait: a view is never held up by its record.
pub trait Events: Send + Sync + 'static {
    fn publish(&self, event: Event);
}

/// Events into the catalog's `history` table.
#[derive(Debug, Clone)]
pub struct HistoryTable(pub Catalog);

impl Events for HistoryTable {
    fn publish(&self, event: Event) {
        let catalog = self.0.clone();
        tokio::spawn(async move {
            let Event::Viewed { video_id, at } = event;
            if let Err(error) = catalog.viewed(&video_id, &at).await {
                tracing::warn!(%error, video_id, "recording a view failed");
            }
        });
    }
}
