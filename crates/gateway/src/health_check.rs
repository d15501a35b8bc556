//! Active health checks: every `interval`, each server of an upstream is asked for the check path;
//! a 2xx or 3xx within `timeout` passes. `fall` failures in a row take a server out, `rise` passes
//! in a row bring it back. A server is presumed up until checked, so the gateway serves at once.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use tokio::sync::watch;

use crate::client::{Outgoing, Payload};
use crate::upstream::Upstream;

/// Runs the checks of one upstream until `stop` changes.
pub(crate) async fn run(upstream: Arc<Upstream>, mut stop: watch::Receiver<bool>) {
    let Some(check) = upstream.health_check.clone() else {
        return;
    };
    let mut streaks = vec![0i64; upstream.servers.len()];
    let mut ticker = tokio::time::interval(check.interval.0);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let probes = upstream.servers.iter().map(|server| {
            let upstream = &upstream;
            let path = &check.path;
            async move {
                let request = Request::get(path.as_str())
                    .header(http::header::HOST, server.authority.as_str())
                    .header(http::header::USER_AGENT, "flotilla-gateway-health-check")
                    .body(());
                let Ok(request) = request else {
                    return Err("bad check URI".to_string());
                };
                let sent = upstream.client.send(
                    &server.address,
                    Outgoing::of(&request),
                    Payload::Whole(Bytes::new()),
                    false,
                );
                match tokio::time::timeout(check.timeout.0, sent).await {
                    Ok(Ok(response)) => {
                        let status = response.status();
                        // Read the (small) body so the connection can be reused.
                        let _ = response.into_body().collect().await;
                        if status.is_success() || status.is_redirection() {
                            Ok(())
                        } else {
                            Err(format!("answered {status}"))
                        }
                    }
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(format!("no answer within {}", check.timeout)),
                }
            }
        });
        let results = futures_util::future::join_all(probes).await;
        for ((server, streak), result) in upstream.servers.iter().zip(&mut streaks).zip(results) {
            // A positive streak counts passes, a negative one failures.
            *streak = match (&result, *streak) {
                (Ok(()), s) if s > 0 => s + 1,
                (Ok(()), _) => 1,
                (Err(_), s) if s < 0 => s - 1,
                (Err(_), _) => -1,
            };
            let healthy = server.is_healthy();
            if healthy && *streak <= -i64::from(check.fall) {
                server.set_healthy(false);
                tracing::warn!(upstream = %upstream.name, server = %server.address,
                    reason = result.as_ref().err().map(String::as_str).unwrap_or(""),
                    "health check failed; server taken out");
            } else if !healthy && *streak >= i64::from(check.rise) {
                server.set_healthy(true);
                tracing::info!(upstream = %upstream.name, server = %server.address, "health check passed; server back");
            } else if healthy && result.is_ok() && server.passively_down() {
                // Back before its fail_timeout ran out: no reason to keep it out.
                server.set_healthy(true);
                tracing::info!(upstream = %upstream.name, server = %server.address, "answering health checks again; server back");
            }
        }
    }
}
