//! The bound on spans waiting to be sent, counted: every span a request ends is either sent
//! (`traces_export_spans_total{outcome="exported"}`), refused by the collector or not delivered
//! (`"failed"`), or dropped because the queue was full (`"dropped"`, when the collector is slow
//! or down). The SDK's batch processor drops silently when its queue is full; [`Bounded`] admits
//! at most as many spans as that queue holds, counting spans from the moment they end until
//! their export has finished (whatever its outcome), so the processor never has to drop and
//! every drop is here, counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

/// Spans ended and not yet through an export.
#[derive(Debug)]
pub(crate) struct Admission {
    in_flight: AtomicUsize,
    limit: usize,
}

impl Admission {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Admission {
            in_flight: AtomicUsize::new(0),
            limit,
        })
    }

    fn try_admit(&self) -> bool {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self, count: usize) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(count))
            });
    }
}

fn count(outcome: &'static str, spans: u64) {
    metrics::counter!("traces_export_spans_total", "outcome" => outcome).increment(spans);
}

/// A span processor (the SDK's batch processor) behind the admission bound.
#[derive(Debug)]
pub(crate) struct Bounded<P> {
    pub(crate) inner: P,
    pub(crate) admission: Arc<Admission>,
}

impl<P: SpanProcessor> SpanProcessor for Bounded<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.admission.try_admit() {
            self.inner.on_end(span);
        } else {
            count("dropped", 1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// An exporter that counts each batch's outcome and releases its spans from the bound.
#[derive(Debug)]
pub(crate) struct Counted<E> {
    pub(crate) inner: E,
    pub(crate) admission: Arc<Admission>,
}

/// Releases a batch from the bound when its export ends, also when the export is abandoned.
struct Release<'a>(&'a Admission, usize);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let _release = Release(&self.admission, spans);
        let result = self.inner.export(batch).await;
        count(
            if result.is_ok() { "exported" } else { "failed" },
            spans as u64,
        );
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_admits_up_to_its_limit_and_frees_what_is_released() {
        let admission = Admission::new(3);
        assert!((0..3).all(|_| admission.try_admit()));
        assert!(!admission.try_admit());
        admission.release(2);
        assert!(admission.try_admit());
        assert!(admission.try_admit());
        assert!(!admission.try_admit());
        // Released more than admitted (cannot happen; must not wrap around).
        admission.release(10);
        assert!(admission.try_admit());
    }
}
