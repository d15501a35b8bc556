//! The route table: which upstream a request goes to, by `Host` and path prefix.

use std::sync::Arc;

use http::HeaderValue;
use platform::observe::RouteLabel;

use crate::load::Loaded;
use crate::upstream::Upstream;

pub(crate) struct Route {
    /// Where the route is in its table (see [`RouteTable::route`]).
    pub(crate) index: usize,
    pub(crate) label: RouteLabel,
    host: Option<String>,
    prefix: String,
    pub(crate) strip_prefix: bool,
    pub(crate) compress: bool,
    /// Pass TRACE requests on (refused with 405 otherwise).
    pub(crate) allow_trace: bool,
    /// Send the client's `Authorization` upstream even though this route checked it.
    pub(crate) pass_authorization: bool,
    /// Read the whole request body before choosing a server (`limits::Buffered`).
    pub(crate) request_buffering: bool,
    pub(crate) max_body_size: Option<u64>,
    pub(crate) rate_limit: Option<crate::limits::RateLimiter>,
    /// Users allowed through, and the realm to name; `None`: no authentication.
    pub(crate) auth: Option<(Arc<crate::auth::Htpasswd>, HeaderValue)>,
    /// Where requests go: an upstream pool, or (when `None`) the directory in `files`.
    pub(crate) upstream: Option<Arc<Upstream>>,
    pub(crate) files: Option<Arc<crate::static_files::StaticDir>>,
    /// A `/{service}/` route: each registered app has a route of its own under this prefix, so
    /// a request this one takes names no registered app.
    pub(crate) services: bool,
}

/// The route table in force; a reload swaps it. Requests in flight keep the table (and the
/// upstream pools) they started with.
pub(crate) struct LiveRoutes {
    table: arc_swap::ArcSwap<RouteTable>,
}

impl Default for LiveRoutes {
    fn default() -> Self {
        LiveRoutes {
            table: arc_swap::ArcSwap::from_pointee(RouteTable::default()),
        }
    }
}

impl LiveRoutes {
    pub(crate) fn current(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Whether `table` is the one in force: a pointer comparison, with no shared write.
    pub(crate) fn is_current(&self, table: &Arc<RouteTable>) -> bool {
        Arc::ptr_eq(&self.table.load(), table)
    }

    pub(crate) fn replace(&self, table: RouteTable) {
        self.table.store(Arc::new(table));
    }
}

/// Routes in match order: longest prefix first; at equal length, routes with a host first.
#[derive(Default)]
pub(crate) struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub(crate) fn new(loaded: &Loaded, upstreams: &[Arc<Upstream>]) -> Self {
        let mut table: Vec<Route> = loaded
            .file
            .routes
            .iter()
            .zip(&loaded.opened)
            .map(|(route, opened)| {
                let upstream = route.upstream.as_ref().map(|name| {
                    upstreams
                        .iter()
                        .find(|u| *u.name == **name.get_ref())
                        .expect("routes are validated to name existing upstreams")
                });
                let path = route.path.get_ref();
                let label = route.name.clone().unwrap_or_else(|| path.clone());
                let (prefix, services) = match path.strip_suffix(crate::config::SERVICE_PLACEHOLDER)
                {
                    Some(prefix) => (prefix.to_string(), true),
                    None => (path.clone(), false),
                };
                Route {
                    index: 0,
                    label: RouteLabel::new(&label),
                    host: route
                        .host
                        .as_ref()
                        .map(|h| h.trim_end_matches('.').to_ascii_lowercase()),
                    prefix,
                    strip_prefix: route.strip_prefix,
                    compress: route.compress,
                    allow_trace: route.allow_trace,
                    pass_authorization: route.pass_authorization,
                    request_buffering: route.request_buffering,
                    max_body_size: route.max_body_size.map(|s| s.0),
                    rate_limit: route.rate_limit.map(crate::limits::RateLimiter::new),
                    auth: opened.users.clone().map(|users| {
                        let realm = route.basic_auth_realm.replace(['"', '\\'], "");
                        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{realm}\""))
                            .unwrap_or_else(|_| {
                                HeaderValue::from_static("Basic realm=\"Restricted\"")
                            });
                        (users, challenge)
                    }),
                    upstream: upstream.map(Arc::clone),
                    files: opened.files.clone(),
                    services,
                }
            })
            .collect();
        table.sort_by_key(|r| (std::cmp::Reverse(r.prefix.len()), r.host.is_none()));
        for (index, route) in table.iter_mut().enumerate() {
            route.index = index;
        }
        RouteTable { routes: table }
    }

    /// The upstream pool of that name, if a route uses it.
    pub(crate) fn upstream(&self, name: &str) -> Option<Arc<Upstream>> {
        self.upstreams().find(|u| &*u.name == name).cloned()
    }

    /// Every upstream pool a route uses, once each.
    pub(crate) fn upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        let mut seen: Vec<&str> = Vec::new();
        self.routes.iter().filter_map(move |r| {
            let upstream = r.upstream.as_ref()?;
            if seen.contains(&&*upstream.name) {
                None
            } else {
                seen.push(&upstream.name);
                Some(upstream)
            }
        })
    }

    /// Drops rate-limit state of clients back at their full burst.
    pub(crate) fn sweep_rate_limits(&self) {
        for route in &self.routes {
            if let Some(limiter) = &route.rate_limit {
                limiter.sweep();
            }
        }
    }

    /// The routes as `/status` shows them, in match order.
    pub(crate) fn status(&self) -> serde_json::Value {
        self.routes
            .iter()
            .map(|r| {
                let mut options = Vec::new();
                if r.strip_prefix {
                    options.push("strip_prefix");
                }
                if r.compress {
                    options.push("compress");
                }
                if r.auth.is_some() {
                    options.push("basic_auth");
                }
                if r.rate_limit.is_some() {
                    options.push("rate_limit");
                }
                if r.max_body_size.is_some() {
                    options.push("max_body_size");
                }
                serde_json::json!({
                    "name": r.label.name,
                    "host": r.host,
                    "path": r.prefix,
                    "upstream": r.upstream.as_ref().map(|u| &*u.name),
                    "root": r.files.as_ref().map(|f| f.root().display().to_string()),
                    "options": options,
                })
            })
            .collect()
    }

    /// The route at `index` (its [`Route::index`]).
    pub(crate) fn route(&self, index: usize) -> &Route {
        &self.routes[index]
    }

    /// The route for a request's normalised host name (no port) and path.
    pub(crate) fn find(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|route| route.serves(host) && path.starts_with(&route.prefix))
    }

    /// What a request's normalised host name and path lead to: a route, or (as nginx answers
    /// `/x` when only a location `/x/` would take it) a redirect to the path with a slash.
    pub(crate) fn lookup(&self, host: Option<&str>, path: &str) -> Lookup<'_> {
        let found = self.find(host, path);
        if !path.ends_with('/') && found.is_none_or(|r| r.prefix.len() < path.len()) {
            let with_slash = self.routes.iter().any(|route| {
                route.prefix.len() == path.len() + 1
                    && route.prefix.ends_with('/')
                    && route.prefix.starts_with(path)
                    && route.serves(host)
            });
            if with_slash {
                return Lookup::Redirect;
            }
        }
        match found {
            Some(route) => Lookup::Route(route),
            None => Lookup::None,
        }
    }
}

/// What a request leads to.
pub(crate) enum Lookup<'a> {
    Route(&'a Route),
    /// To the same path with a slash added.
    Redirect,
    None,
}

impl Route {
    /// Whether the route takes requests for `host` (a normalised name).
    fn serves(&self, host: Option<&str>) -> bool {
        match (&self.host, host) {
            (None, _) => true,
            (Some(want), Some(have)) => want == have,
            (Some(_), None) => false,
        }
    }

    /// The path after the route's prefix (the file a static route serves).
    pub(crate) fn rest_of<'a>(&self, path: &'a str) -> &'a str {
        path.get(self.prefix.len()..).unwrap_or("")
    }

    /// The path to send upstream: unchanged, or without the route's prefix.
    pub(crate) fn upstream_path<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        if !self.strip_prefix {
            return path.into();
        }
        let rest = &path[self.prefix.len()..];
        if rest.starts_with('/') {
            rest.into()
        } else {
            format!("/{rest}").into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &str) -> RouteTable {
        let text = format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n{routes}\n[upstream.a]\nserver = [{{address = \"a:1\"}}]\n[upstream.b]\nserver = [{{address = \"b:1\"}}]\n"
        );
        let loaded = crate::load::from_text("t.toml", &text, &platform::Source::default()).unwrap();
        let upstreams: Vec<Arc<Upstream>> = loaded
            .file
            .upstreams
            .iter()
            .map(|(name, u)| Arc::new(Upstream::new(name, u, &Default::default(), None)))
            .collect();
        RouteTable::new(&loaded, &upstreams)
    }

    fn target(table: &RouteTable, host: Option<&str>, path: &str) -> Option<String> {
        table.find(host, path).map(|r| {
            format!(
                "{} {}",
                r.upstream.as_ref().unwrap().name,
                r.upstream_path(path)
            )
        })
    }

    #[test]
    fn longest_prefix_wins_and_host_routes_come_first() {
        let table = table(
            r#"
[[route]]
upstream = "a"
[[route]]
path = "/api/"
strip_prefix = true
upstream = "b"
[[route]]
host = "admin.example"
path = "/"
upstream = "b"
"#,
        );
        assert_eq!(target(&table, None, "/"), Some("a /".into()));
        assert_eq!(
            target(&table, Some("x"), "/api/todo?x=1"),
            Some("b /todo?x=1".into())
        );
        assert_eq!(target(&table, Some("x"), "/apix"), Some("a /apix".into()));
        assert_eq!(
            target(&table, Some("admin.example"), "/"),
            Some("b /".into())
        );
        // Each route knows its place in the sorted table.
        for (index, route) in table.routes.iter().enumerate() {
            assert_eq!(route.index, index);
            assert!(std::ptr::eq(table.route(index), route));
        }
    }

    #[test]
    fn a_path_one_slash_short_of_a_route_is_redirected() {
        let table = table(
            "[[route]]\nupstream = \"a\"\n[[route]]\npath = \"/auth/\"\nupstream = \"b\"\n[[route]]\npath = \"/exact/\"\nupstream = \"b\"\n[[route]]\npath = \"/exact\"\nupstream = \"a\"\n",
        );
        assert!(matches!(table.lookup(None, "/auth"), Lookup::Redirect));
        assert!(matches!(table.lookup(None, "/auth/"), Lookup::Route(r) if r.prefix == "/auth/"));
        assert!(matches!(table.lookup(None, "/authx"), Lookup::Route(r) if r.prefix == "/"));
        // A route for the path itself wins over the redirect.
        assert!(matches!(table.lookup(None, "/exact"), Lookup::Route(r) if r.prefix == "/exact"));
    }

    #[test]
    fn stripping_a_prefix_without_trailing_slash_keeps_the_path_absolute() {
        let table = table("[[route]]\npath = \"/api\"\nstrip_prefix = true\nupstream = \"a\"\n");
        assert_eq!(target(&table, None, "/api"), Some("a /".into()));
        assert_eq!(target(&table, None, "/api/x"), Some("a /x".into()));
        assert_eq!(target(&table, None, "/other"), None);
    }
}
