//! Header rewriting between client and upstream: hop-by-hop headers stay on their own hop, the
//! client's `Host` goes through, and the `X-Forwarded-*` family tells the upstream who asked.

use std::cell::RefCell;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never the message (RFC 9110 section 7.6.1), plus the
/// old `Keep-Alive` and `Proxy-Connection`.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The protocol a request wants to switch to (`websocket`), when it asks for an upgrade.
pub(crate) fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header names. For an upgrade, the
/// `Upgrade` and `Connection: upgrade` pair is put back, since the next hop must see it.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<&HeaderValue>) {
    // Most messages have none: one pass over the names is cheaper than nine lookups.
    if upgrade.is_none() && !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::UPGRADE, protocol.clone());
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Sets what the upstream needs to know about the original request.
pub(crate) fn add_forwarded(
    headers: &mut HeaderMap,
    host: &HeaderValue,
    client: IpAddr,
    proto: &'static str,
) {
    let client_value = address_value(client);
    let earlier: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forwarded_for = if earlier.is_empty() {
        Some(client_value.clone())
    } else {
        let client_text = client_value.to_str().expect("an address is ASCII");
        HeaderValue::from_str(&format!("{}, {client_text}", earlier.join(", "))).ok()
    };
    // Room for the five at once: growing the map one header at a time rehashes it each time.
    headers.reserve(5);
    if let Some(value) = forwarded_for {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_REAL_IP, client_value);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    headers.insert(X_FORWARDED_HOST, host.clone());
    headers.insert(header::HOST, host.clone());
}

/// The client's address as a header value. The last one made on this thread is kept: requests
/// on a keep-alive connection all come from one address.
fn address_value(client: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((address, value)) if *address == client => value.clone(),
        _ => {
            let value = HeaderValue::from_str(&client.to_string())
                .expect("an IP address is a valid header value");
            *last = Some((client, value.clone()));
            value
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("accept", "*/*"),
        ]);
        remove_hop_by_hop(&mut headers, None);
        let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept"]);
    }

    #[test]
    fn an_upgrade_keeps_its_pair() {
        let mut headers = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        let upgrade = upgrade_of(&headers);
        assert_eq!(upgrade.as_ref().unwrap(), "websocket");
        remove_hop_by_hop(&mut headers, upgrade.as_ref());
        assert_eq!(headers["connection"], "upgrade");
        assert_eq!(headers["upgrade"], "websocket");
    }

    #[test]
    fn forwarded_for_appends_to_what_came_before() {
        let mut headers = map(&[("x-forwarded-for", "203.0.113.9")]);
        let host = HeaderValue::from_static("todo.example");
        add_forwarded(&mut headers, &host, "127.0.0.2".parse().unwrap(), "http");
        assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.2");
        assert_eq!(headers["x-real-ip"], "127.0.0.2");
        assert_eq!(headers["x-forwarded-host"], "todo.example");
        assert_eq!(headers["host"], "todo.example");
        assert_eq!(headers["x-forwarded-proto"], "http");
    }
}
