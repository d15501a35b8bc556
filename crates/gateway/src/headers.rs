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

/// Headers sent upstream after a request's own.
pub(crate) type Extra = smallvec::SmallVec<[(HeaderName, HeaderValue); 5]>;

/// The forwarding headers that tell the upstream about the original request: `X-Forwarded-For`
/// (the client appended to what came before), `X-Real-IP`, `X-Forwarded-Proto`,
/// `X-Forwarded-Host`, and `host` (the normalised host, see `target`) as `Host` when the
/// request's own differs (`replace_host`) or is missing (HTTP/2). The client's own headers of
/// that family are taken out of `headers`. They are returned rather than inserted: they go
/// straight into the upstream request's head, and inserting five names into the map would hash
/// each of them for nothing.
pub(crate) fn forwarded(
    headers: &mut HeaderMap,
    host: &HeaderValue,
    replace_host: bool,
    client: IpAddr,
    proto: &'static str,
) -> Extra {
    let client_value = address_value(client);
    let family = [
        X_FORWARDED_FOR,
        X_REAL_IP,
        X_FORWARDED_PROTO,
        X_FORWARDED_HOST,
    ];
    // One pass over the names, where looking each one up would hash it.
    let (mut hosts, mut has_family, mut earlier) = (0, false, Vec::new());
    for (name, value) in headers.iter() {
        hosts += usize::from(name == header::HOST);
        if family.contains(name) {
            has_family = true;
            if name == X_FORWARDED_FOR
                && let Ok(value) = value.to_str()
            {
                earlier.push(value);
            }
        }
    }
    let forwarded_for = if earlier.is_empty() {
        Some(client_value.clone())
    } else {
        let client_text = client_value.to_str().expect("an address is ASCII");
        HeaderValue::from_str(&format!("{}, {client_text}", earlier.join(", "))).ok()
    };
    if has_family {
        for name in &family {
            headers.remove(name);
        }
    }
    let mut extra = Extra::new();
    if let Some(value) = forwarded_for {
        extra.push((X_FORWARDED_FOR, value));
    }
    extra.push((X_REAL_IP, client_value));
    extra.push((X_FORWARDED_PROTO, HeaderValue::from_static(proto)));
    extra.push((X_FORWARDED_HOST, host.clone()));
    // One Host, the one routed on.
    if hosts != 1 || replace_host {
        headers.remove(header::HOST);
        extra.push((header::HOST, host.clone()));
    }
    extra
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
        let mut headers = map(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-real-ip", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("accept", "*/*"),
        ]);
        let host = HeaderValue::from_static("todo.example");
        let extra = forwarded(
            &mut headers,
            &host,
            false,
            "127.0.0.2".parse().unwrap(),
            "http",
        );
        let extra: Vec<(&str, &str)> = extra
            .iter()
            .map(|(name, value)| (name.as_str(), value.to_str().unwrap()))
            .collect();
        assert_eq!(
            extra,
            [
                ("x-forwarded-for", "203.0.113.9, 127.0.0.2"),
                ("x-real-ip", "127.0.0.2"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "todo.example"),
                // The request had no Host (HTTP/2 carries it in the URI).
                ("host", "todo.example"),
            ]
        );
        // The client's own are gone; the rest stay.
        let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept"]);
    }

    #[test]
    fn a_request_with_a_host_keeps_it_and_one_with_two_sends_one() {
        let mut headers = map(&[("host", "todo.example")]);
        let host = HeaderValue::from_static("todo.example");
        let extra = forwarded(
            &mut headers,
            &host,
            false,
            "127.0.0.2".parse().unwrap(),
            "http",
        );
        assert!(extra.iter().all(|(name, _)| name != header::HOST));
        assert_eq!(headers["host"], "todo.example");

        let mut headers = map(&[("host", "todo.example"), ("host", "admin.example")]);
        let extra = forwarded(
            &mut headers,
            &host,
            false,
            "127.0.0.2".parse().unwrap(),
            "http",
        );
        assert!(!headers.contains_key(header::HOST));
        let hosts: Vec<_> = extra
            .iter()
            .filter(|(name, _)| name == header::HOST)
            .collect();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].1, "todo.example");
    }
}
