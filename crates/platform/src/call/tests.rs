use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

fn policy() -> CallPolicy {
    CallPolicy {
        timeout: Duration::from_millis(300),
        retries: 2,
        window: WindowKind::Count(10),
        minimum_calls: 3,
        wait_in_open: Duration::from_secs(60),
        ..CallPolicy::default()
    }
}

fn judge(result: &Result<(), &'static str>) -> Verdict {
    match result {
        Ok(()) => Verdict::Success,
        Err("refused") => Verdict::Failure { retry: true },
        Err(_) => Verdict::Failure { retry: false },
    }
}

#[tokio::test]
async fn failures_open_the_circuit_and_then_calls_cost_nothing() {
    let target = CallTarget::new(
        "t-open",
        CallPolicy {
            retries: 0,
            ..policy()
        },
    );
    for _ in 0..3 {
        let result = target.call(true, judge, || async { Err("broken") }).await;
        assert!(matches!(result, Err(CallError::Failed("broken"))));
    }
    assert_eq!(target.state(), CircuitState::Open);
    let attempts = AtomicU32::new(0);
    let result = target
        .call(true, judge, || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await;
    assert!(matches!(result, Err(CallError::ShortCircuited { .. })));
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        0,
        "an open circuit does not call"
    );
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("t-open") && message.contains("open"),
        "{message}"
    );
}

#[tokio::test]
async fn idempotent_calls_are_retried_and_others_are_not() {
    let target = CallTarget::new(
        "t-retry",
        CallPolicy {
            minimum_calls: 100,
            ..policy()
        },
    );
    let attempts = AtomicU32::new(0);
    let result = target
        .call(true, judge, || async {
            if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                Err("refused")
            } else {
                Ok(())
            }
        })
        .await;
    assert!(result.is_ok());
    assert_eq!(attempts.load(Ordering::SeqCst), 2);

    attempts.store(0, Ordering::SeqCst);
    let result = target
        .call(false, judge, || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err("refused")
        })
        .await;
    assert!(result.is_err());
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        1,
        "a POST is never sent twice"
    );

    attempts.store(0, Ordering::SeqCst);
    let _ = target
        .call(true, judge, || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err("broken")
        })
        .await;
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        1,
        "not a retryable failure"
    );

    attempts.store(0, Ordering::SeqCst);
    let _ = target
        .call(true, judge, || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err("refused")
        })
        .await;
    assert_eq!(attempts.load(Ordering::SeqCst), 3, "1 + retries (2)");
}

#[tokio::test]
async fn an_empty_retry_budget_allows_no_retry() {
    let target = CallTarget::new(
        "t-budget",
        CallPolicy {
            retry_budget: 0.0,
            retry_min_per_second: 0,
            minimum_calls: 100,
            ..policy()
        },
    );
    let attempts = AtomicU32::new(0);
    let _ = target
        .call(true, judge, || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err("refused")
        })
        .await;
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_timeout_bounds_the_whole_call_retries_included() {
    let target = CallTarget::new(
        "t-timeout",
        CallPolicy {
            minimum_calls: 100,
            ..policy()
        },
    );
    let started = tokio::time::Instant::now();
    let result: Result<(), _> = target
        .call(true, judge, || async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Err("refused")
        })
        .await;
    // Two attempts of 200 ms do not fit in 300 ms: the second is cut at the deadline.
    assert!(
        matches!(result, Err(CallError::Timeout { .. })),
        "{result:?}"
    );
    assert_eq!(started.elapsed(), Duration::from_millis(300));
}

#[tokio::test]
async fn the_bulkhead_rejects_calls_over_its_limit() {
    let target = Arc::new(CallTarget::new(
        "t-bulkhead",
        CallPolicy {
            max_concurrent: 1,
            ..policy()
        },
    ));
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let busy = {
        let target = target.clone();
        tokio::spawn(async move {
            let mut wait = Some(wait);
            target
                .call(true, judge, move || {
                    let wait = wait.take();
                    async move {
                        if let Some(wait) = wait {
                            let _ = wait.await;
                        }
                        Ok(())
                    }
                })
                .await
        })
    };
    // Wait, within bounds, until the first call holds the only place.
    for _ in 0..200 {
        if target.bulkhead.available_permits() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let result = target.call(true, judge, || async { Ok(()) }).await;
    assert!(
        matches!(result, Err(CallError::Rejected { .. })),
        "{result:?}"
    );
    release.send(()).unwrap();
    busy.await.unwrap().unwrap();
    assert!(target.call(true, judge, || async { Ok(()) }).await.is_ok());
}

#[tokio::test]
async fn a_fallback_answers_for_a_failed_call() {
    let target = CallTarget::new("t-fallback", policy());
    let answer = target
        .call_or_else(false, judge, || async { Err("broken") }, |_| Ok(()))
        .await;
    assert!(answer.is_ok());
}

#[tokio::test]
async fn outcomes_are_counted_in_metrics() {
    crate::telemetry::metrics_handle();
    let target = CallTarget::new(
        "t-metrics",
        CallPolicy {
            retries: 0,
            ..policy()
        },
    );
    for _ in 0..3 {
        let _ = target.call(true, judge, || async { Err("broken") }).await;
    }
    let _ = target.call(true, judge, || async { Ok(()) }).await;
    let text = crate::telemetry::render_metrics();
    for line in [
        "flotilla_calls_total{target=\"t-metrics\",outcome=\"failure\"} 3",
        "flotilla_calls_total{target=\"t-metrics\",outcome=\"short_circuited\"} 1",
        "flotilla_call_circuit_state{target=\"t-metrics\",state=\"open\"} 1",
        "flotilla_call_circuit_state{target=\"t-metrics\",state=\"closed\"} 0",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
}

#[tokio::test]
async fn with_protection_off_a_call_is_one_attempt_within_the_timeout() {
    let target = CallTarget::new(
        "t-off",
        CallPolicy {
            protection: false,
            ..policy()
        },
    );
    for _ in 0..10 {
        let attempts = AtomicU32::new(0);
        let result = target
            .call(true, judge, || async {
                attempts.fetch_add(1, Ordering::SeqCst);
                Err("refused")
            })
            .await;
        assert!(matches!(result, Err(CallError::Failed("refused"))));
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "no retry");
    }
    assert_eq!(target.state(), CircuitState::Closed, "no breaker");
    let result: Result<(), _> = target
        .call(true, judge, || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        })
        .await;
    assert!(
        matches!(result, Err(CallError::Timeout { .. })),
        "the deadline stays"
    );
}
