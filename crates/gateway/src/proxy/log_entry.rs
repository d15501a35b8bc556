//! The access log's view of a request and its response, taken as they pass.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use http::Version;
use http::header;

use crate::access_log::Entry;
use crate::headers;

/// The access log's view of a request, taken before the request is forwarded.
pub(super) fn entry_for(request: &Request, started: Instant) -> Entry {
    // One pass over the headers finds the logged ones and their size on the wire, where a lookup
    // for each would hash its name.
    let (mut referer, mut user_agent, mut forwarded_for, mut request_id) = (None, None, None, None);
    let mut traceparent = None;
    let (mut body_len, mut wire_len) = (0, 0);
    for (name, value) in request.headers() {
        wire_len += name.as_str().len() + value.len() + 4;
        let slot = if name == header::REFERER {
            &mut referer
        } else if name == header::USER_AGENT {
            &mut user_agent
        } else if name == headers::X_FORWARDED_FOR {
            &mut forwarded_for
        } else if name == platform::observe::REQUEST_ID {
            &mut request_id
        } else if name.as_str() == "traceparent" {
            &mut traceparent
        } else {
            if name == header::CONTENT_LENGTH && body_len == 0 {
                body_len = value
                    .to_str()
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            continue;
        };
        if slot.is_none() {
            *slot = Some(value.clone());
        }
    }
    let request_uri = request.uri().path_and_query().cloned();
    let uri_len = request_uri.as_ref().map_or(1, |p| p.as_str().len());
    let version = match request.version() {
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    Entry {
        started,
        remote_addr: request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
        method: request.method().clone(),
        request_length: (request.method().as_str().len() + uri_len + 12 + wire_len + 2) as u64
            + body_len,
        request_uri,
        version,
        referer,
        user_agent,
        forwarded_for,
        request_id,
        // The request's span's, when the gateway traces it (its SERVER span is the current
        // context), else the caller's.
        trace_id: platform::otel::current_trace_id().or_else(|| {
            traceparent
                .as_ref()
                .and_then(crate::access_log::trace_id_of)
        }),
        // The route is known once the request is routed (`steps::AccessLog`).
        route: "unmatched",
        status: 0,
        head_bytes: 0,
        upstream_addr: None,
        upstream_response_time: None,
    }
}

/// Bytes the header lines take on the wire (`name: value\r\n`).
fn wire_len(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// About how many bytes the response head takes on the wire.
pub(super) fn head_bytes(response: &Response) -> u64 {
    let headers = wire_len(response.headers());
    // Status line, Date and Content-Length or chunked framing that hyper adds, final CRLF.
    (headers + 17 + 37 + 2) as u64
}
