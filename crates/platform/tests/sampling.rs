//! The request sampler: a request's SERVER span is made only when the configured sampler keeps
//! it, and a new trace's id is the one the sampler decided on, so `traceidratio` stays a
//! function of the trace id (any service with the same ratio decides the same way). Its own
//! process: the tracer is global.

use opentelemetry::trace::{SpanKind, TraceId};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};
use platform::otel::{self, Exporter, RequestSpan, SamplerChoice, TracingConfig};

fn request() -> http::Request<axum::body::Body> {
    http::Request::get("/todo/1")
        .body(axum::body::Body::empty())
        .unwrap()
}

fn kept_by_ratio(ratio: f64, trace_id: TraceId) -> bool {
    Sampler::TraceIdRatioBased(ratio)
        .should_sample(None, trace_id, "GET", &SpanKind::Server, &[], &[])
        .decision
        == SamplingDecision::RecordAndSample
}

#[test]
fn a_ratio_sampler_keeps_about_its_share_and_decides_on_the_trace_id() {
    // Spans go nowhere (a closed port): the test looks at the decisions only.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/v2/spans", closed.local_addr().unwrap());
    drop(closed);
    let config = TracingConfig {
        exporter: Some(Exporter::Zipkin(url)),
        service_name: None,
        sampler: SamplerChoice::ParentBased(Box::new(SamplerChoice::Ratio(0.5))),
        queue_size: 64,
    };
    let _guard = otel::init(&config, "test").unwrap();
    let mut kept = 0;
    for _ in 0..400 {
        let span = RequestSpan::start(&mut request(), false).expect("tracing is on");
        let sampled = span.context().is_some();
        assert_eq!(
            sampled,
            kept_by_ratio(0.5, span.trace_id()),
            "the decision is the ratio sampler's on the span's own trace id"
        );
        kept += usize::from(sampled);
        span.finish("/todo/{id}", 200);
    }
    // 400 draws at 1/2: 200 ± 10 standard deviations is far outside chance.
    assert!((100..=300).contains(&kept), "{kept} of 400 kept");

    // A caller's decision is followed (parent-based): flags 01 kept, 00 left out, whatever
    // the ratio would say.
    for (flags, expected) in [("01", true), ("00", false)] {
        for n in 1..=20u128 {
            let mut request = request();
            let header = format!("00-{n:032x}-00f067aa0ba902b7-{flags}");
            request
                .headers_mut()
                .insert("traceparent", header.parse().unwrap());
            let span = RequestSpan::start(&mut request, false).unwrap();
            assert_eq!(span.context().is_some(), expected, "{header}");
            assert_eq!(span.trace_id(), TraceId::from(n));
        }
    }
}
