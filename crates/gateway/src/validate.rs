//! Checks a parsed config for what the types cannot say: routes name upstreams that exist,
//! addresses are `host:port`, numbers are in range. Each problem comes back with the span of the
//! offending value (when it has one) and its key, for a `file:line: key: message` error.

use std::ops::Range;

use crate::config::{FileConfig, SERVICE_PLACEHOLDER, Upstream};

/// How an upstream names the registry's app it takes its servers from.
pub(crate) const REGISTRY_PREFIX: &str = "registry:";

pub(crate) type Problem = (Option<Range<usize>>, String, String);

pub(crate) fn check(config: &FileConfig) -> Result<(), Problem> {
    if config.admin.bind != "off" {
        platform::config::parse_bind(&config.admin.bind)
            .map_err(|e| (None, "admin.bind".into(), format!("expected {e}")))?;
    }
    if config.listeners.is_empty() {
        return Err((
            None,
            "listener".into(),
            "at least one [[listener]] is needed".into(),
        ));
    }
    for (i, listener) in config.listeners.iter().enumerate() {
        platform::config::parse_bind(listener.bind.get_ref()).map_err(|e| {
            let span = Some(listener.bind.span());
            (span, format!("listener[{i}].bind"), format!("expected {e}"))
        })?;
        if listener.max_connections == 0 {
            let key = format!("listener[{i}].max_connections");
            return Err((None, key, "must be at least 1".into()));
        }
    }
    if let Some(registry) = &config.registry {
        platform::registration::parse_urls(&registry.url)
            .map_err(|e| (None, "registry.url".into(), format!("expected {e}")))?;
    }
    if config.routes.is_empty() {
        return Err((
            None,
            "route".into(),
            "at least one [[route]] is needed".into(),
        ));
    }
    for (i, route) in config.routes.iter().enumerate() {
        if let Some(limit) = &route.rate_limit
            && (!(limit.per_second > 0.0 && limit.per_second.is_finite()) || limit.burst == 0)
        {
            let key = format!("route[{i}].rate_limit");
            let message = "per_second must be above 0 and burst at least 1".into();
            return Err((None, key, message));
        }
        if !route.path.get_ref().starts_with('/') {
            let key = format!("route[{i}].path");
            return Err((Some(route.path.span()), key, "must start with /".into()));
        }
        if let Some(prefix) = route.path.get_ref().strip_suffix(SERVICE_PLACEHOLDER) {
            let key = format!("route[{i}].path");
            let span = Some(route.path.span());
            if !prefix.ends_with('/') || prefix.contains(['{', '}']) {
                let message = "{service} must be the last segment, as in /api/{service}/".into();
                return Err((span, key, message));
            }
            if route.upstream.is_some() || route.root.is_some() {
                let message =
                    "a /{service}/ route sends to the registry's apps: no upstream or root".into();
                return Err((span, key, message));
            }
            if config.registry.is_none() {
                let message = "a /{service}/ route needs a [registry] (or FLOTILLA_REGISTRY_URL)";
                return Err((span, key, message.into()));
            }
            continue;
        }
        if route.path.get_ref().contains(['{', '}']) {
            let key = format!("route[{i}].path");
            let message = "the only placeholder a path may have is a last /{service}/".into();
            return Err((Some(route.path.span()), key, message));
        }
        let Some(upstream) = &route.upstream else {
            if route.root.is_none() {
                let key = format!("route[{i}]");
                return Err((
                    None,
                    key,
                    "needs an upstream, or a root directory to serve".into(),
                ));
            }
            continue;
        };
        if route.root.is_some() {
            let key = format!("route[{i}].root");
            let message = "a route has either an upstream or a root, not both".into();
            return Err((Some(upstream.span()), key, message));
        }
        if !config.upstreams.contains_key(upstream.get_ref()) {
            let defined: Vec<&str> = config.upstreams.keys().map(String::as_str).collect();
            let message = format!(
                "no upstream named {:?} (defined: {})",
                upstream.get_ref(),
                if defined.is_empty() {
                    "none".to_string()
                } else {
                    defined.join(", ")
                }
            );
            return Err((
                Some(upstream.span()),
                format!("route[{i}].upstream"),
                message,
            ));
        }
    }
    for (name, upstream) in &config.upstreams {
        if let Some(discovery) = &upstream.discovery {
            let key = format!("upstream.{name}.discovery");
            let span = Some(discovery.span());
            let app = discovery.get_ref().strip_prefix(REGISTRY_PREFIX);
            let valid = app.is_some_and(|app| {
                !app.is_empty()
                    && app.len() <= 128
                    && app
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            });
            if !valid {
                let message = "expected registry:APP, such as registry:STORY-SERVICE".into();
                return Err((span, key, message));
            }
            if config.registry.is_none() {
                let message = "needs a [registry] (or FLOTILLA_REGISTRY_URL)".into();
                return Err((span, key, message));
            }
        }
        check_upstream(name, upstream)?;
    }
    Ok(())
}

fn check_upstream(name: &str, upstream: &Upstream) -> Result<(), Problem> {
    let key = |field: &str| format!("upstream.{name}.{field}");
    if upstream.server.is_empty() && upstream.discovery.is_none() {
        return Err((None, key("server"), "at least one server is needed".into()));
    }
    if !upstream.server.is_empty() && upstream.server.iter().all(|s| s.backup) {
        return Err((
            None,
            key("server"),
            "every server is a backup; make one a primary".into(),
        ));
    }
    if upstream.max_attempts == 0 {
        return Err((None, key("max_attempts"), "must be at least 1".into()));
    }
    if !(0.0..=1.0).contains(&upstream.retry_budget) {
        let message = "must be a fraction from 0 to 1 (0.2 is 20%)".into();
        return Err((None, key("retry_budget"), message));
    }
    if upstream.min_retries_per_second > 10_000 {
        return Err((
            None,
            key("min_retries_per_second"),
            "must be at most 10000".into(),
        ));
    }
    if let Some(check) = &upstream.health_check {
        if !check.path.starts_with('/') {
            return Err((None, key("health_check.path"), "must start with /".into()));
        }
        if check.rise == 0 || check.fall == 0 {
            return Err((
                None,
                key("health_check"),
                "rise and fall must be at least 1".into(),
            ));
        }
        if check.interval.0.is_zero() || check.timeout.0.is_zero() {
            let message = "interval and timeout must be longer than 0".into();
            return Err((None, key("health_check"), message));
        }
    }
    for (i, server) in upstream.server.iter().enumerate() {
        let address = server.address.get_ref();
        parse_authority(address).map_err(|message| {
            (
                Some(server.address.span()),
                key(&format!("server[{i}].address")),
                message,
            )
        })?;
        if server.weight == 0 {
            return Err((
                None,
                key(&format!("server[{i}].weight")),
                "must be at least 1".into(),
            ));
        }
    }
    Ok(())
}

/// A server address as the authority of the URIs sent to it: `host:port`, with a port.
pub(crate) fn parse_authority(address: &str) -> Result<http::uri::Authority, String> {
    let expected = || format!("expected host:port, got {address:?}");
    let authority: http::uri::Authority = address.parse().map_err(|_| expected())?;
    if authority.port_u16().is_none() || authority.host().is_empty() || address.contains('@') {
        return Err(expected());
    }
    Ok(authority)
}

#[cfg(test)]
mod tests {
    use platform::Source;

    fn error_of(text: &str) -> String {
        let text = format!("[[listener]]\nbind = \"127.0.0.1:0\"\n{text}");
        match crate::load::from_text("gw.toml", &text, &Source::default()) {
            Ok(_) => "accepted".to_string(),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn registry_routes_and_upstreams_are_checked() {
        let registry = "[registry]\nurl = \"http://127.0.0.1:8761/eureka/\"\n";
        let cases = [
            (
                "[[route]]\npath = \"/api/{service}/\"\n",
                "needs a [registry]",
            ),
            (
                "[[route]]\npath = \"/x/\"\nupstream = \"s\"\n[upstream.s]\ndiscovery = \"registry:S\"\n",
                "needs a [registry]",
            ),
            (
                "[registry]\nurl = \"ftp://x/\"\n[[route]]\npath = \"/\"\nroot = \".\"\n",
                "registry.url",
            ),
        ];
        for (text, expected) in cases {
            let error = error_of(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
        let with_registry = [
            (
                "[[route]]\npath = \"/api/{service}/x/\"\n",
                "only placeholder",
            ),
            ("[[route]]\npath = \"/api{service}/\"\n", "last segment"),
            (
                "[[route]]\npath = \"/api/{service}/\"\nupstream = \"s\"\n[upstream.s]\nserver = [{address = \"a:1\"}]\n",
                "no upstream or root",
            ),
            (
                "[[route]]\npath = \"/x/\"\nupstream = \"s\"\n[upstream.s]\ndiscovery = \"dns:S\"\n",
                "expected registry:APP",
            ),
            (
                "[[route]]\npath = \"/x/\"\nupstream = \"s\"\n[upstream.s]\ndiscovery = \"registry:a b\"\n",
                "expected registry:APP",
            ),
        ];
        for (text, expected) in with_registry {
            let error = error_of(&format!("{registry}{text}"));
            assert!(error.contains(expected), "{text}: {error}");
        }
        let good = "[[route]]\npath = \"/api/{service}/\"\n[[route]]\npath = \"/x/\"\nupstream = \"s\"\n[upstream.s]\ndiscovery = \"registry:S\"\n";
        assert_eq!(error_of(&format!("{registry}{good}")), "accepted");
    }
}
