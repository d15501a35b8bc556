//! The load step: config text (or a config env mode built) → expanded and parsed (`config`) →
//! checked (`validate`) → the files it names opened (htpasswd files, `root` directories) → a
//! [`Loaded`] config, which is what the route table is built from. A reload runs the same steps
//! and, if any fails, keeps the running config.

use std::sync::Arc;

use platform::Source;

use crate::auth::Htpasswd;
use crate::config::{self, ConfigFileError, FileConfig};
use crate::static_files::StaticDir;

/// A config ready to run: checked, with the files it names opened.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: FileConfig,
    /// Where it came from: a path, or `environment`.
    pub origin: String,
    /// Per route, in config order: what it opened.
    pub(crate) opened: Vec<Opened>,
}

/// What a route's config names, opened.
#[derive(Debug, Clone, Default)]
pub(crate) struct Opened {
    pub(crate) users: Option<Arc<Htpasswd>>,
    pub(crate) files: Option<Arc<StaticDir>>,
}

/// Reads, expands, parses, checks and opens the config file at `path`.
pub fn from_path(path: &str, env: &Source) -> Result<Loaded, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_string(),
        source,
    })?;
    from_text(path, &text, env)
}

/// The same, for config text; `name` names it in errors.
pub fn from_text(name: &str, text: &str, env: &Source) -> Result<Loaded, ConfigFileError> {
    let (file, expanded) = config::parse_expanded(name, text, env)?;
    load(file, name, Some(&expanded))
}

/// Checks and opens a config built in code (env mode); errors name `origin`.
pub fn from_config(file: FileConfig, origin: &str) -> Result<Loaded, ConfigFileError> {
    load(file, origin, None)
}

/// Checks and opens a config parsed from `expanded` (and changed after, as env mode's overrides
/// do); errors name `origin` and a line of `expanded`.
pub(crate) fn checked(
    file: FileConfig,
    origin: &str,
    expanded: &str,
) -> Result<Loaded, ConfigFileError> {
    load(file, origin, Some(expanded))
}

/// Checks `file` and opens what it names; `text` (expanded) gives errors their line.
fn load(file: FileConfig, origin: &str, text: Option<&str>) -> Result<Loaded, ConfigFileError> {
    let at = |span: Option<std::ops::Range<usize>>| config::location(origin, text, span);
    crate::validate::check(&file).map_err(|(span, key, message)| {
        let span = span.or_else(|| text.and_then(|text| config::find_table(text, &key)));
        ConfigFileError::Invalid {
            at: at(span),
            key,
            message,
        }
    })?;
    let mut opened = Vec::with_capacity(file.routes.len());
    for (index, route) in file.routes.iter().enumerate() {
        let mut route_opened = Opened::default();
        if let Some(root) = &route.root {
            let dir = StaticDir::open(root.get_ref(), &route.cache_control).map_err(|message| {
                ConfigFileError::Invalid {
                    at: at(Some(root.span())),
                    key: format!("route[{index}].root"),
                    message,
                }
            })?;
            route_opened.files = Some(Arc::new(dir));
        }
        if let Some(path) = &route.basic_auth_file {
            let users =
                Htpasswd::load(path.get_ref()).map_err(|message| ConfigFileError::Invalid {
                    at: at(Some(path.span())),
                    key: format!("route[{index}].basic_auth_file"),
                    message,
                })?;
            route_opened.users = Some(Arc::new(users));
        }
        opened.push(route_opened);
    }
    Ok(Loaded {
        file,
        origin: origin.to_string(),
        opened,
    })
}
