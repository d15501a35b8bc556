//! An instance as Eureka describes it, read from a client's JSON or XML and checked.
//!
//! Clients differ in how they write the same document (a port as `{"$": 8080, "@enabled":
//! "true"}` or as `8080`, numbers as strings, `overriddenstatus` or `overriddenStatus`), so both
//! formats are first read into one JSON shape (XML attributes become `@name`, an element's text
//! next to attributes `$`) and then into [`Instance`], with every field bounded.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

/// Most metadata entries one instance may carry (Eureka clients send a handful).
pub const MAX_METADATA: usize = 256;
/// Longest id, app name, host name, address or metadata key.
pub const MAX_NAME: usize = 256;
/// Longest URL or metadata value.
pub const MAX_TEXT: usize = 4096;
/// Bounds of a lease's renewal interval and duration, in seconds.
pub const MAX_RENEWAL_SECS: u32 = 300;
pub const MAX_DURATION_SECS: u32 = 3600;

/// An instance's status, as Eureka names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Up,
    Down,
    Starting,
    OutOfService,
    Unknown,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Up,
        Status::Down,
        Status::Starting,
        Status::OutOfService,
        Status::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "UP",
            Status::Down => "DOWN",
            Status::Starting => "STARTING",
            Status::OutOfService => "OUT_OF_SERVICE",
            Status::Unknown => "UNKNOWN",
        }
    }

    /// Parses a status name, in any case.
    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text.trim()))
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to an instance, as a delta reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Added,
    Modified,
    Deleted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Added => "ADDED",
            Action::Modified => "MODIFIED",
            Action::Deleted => "DELETED",
        }
    }
}

/// A port and whether it is enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    pub number: u16,
    pub enabled: bool,
}

/// One registered instance. Timestamps are epoch milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: String,
    /// Upper case.
    pub app: String,
    pub host_name: String,
    pub ip_addr: String,
    /// What the instance says about itself.
    pub reported_status: Status,
    /// Set by a status override; `Unknown` when there is none.
    pub overridden_status: Status,
    pub port: Port,
    pub secure_port: Port,
    pub country_id: i64,
    pub data_center_class: String,
    pub data_center_name: String,
    pub renewal_interval_secs: u32,
    pub duration_secs: u32,
    pub registration_timestamp: u64,
    pub last_renewal_timestamp: u64,
    pub eviction_timestamp: u64,
    pub service_up_timestamp: u64,
    pub metadata: BTreeMap<String, String>,
    pub home_page_url: Option<String>,
    pub status_page_url: Option<String>,
    pub health_check_url: Option<String>,
    pub secure_health_check_url: Option<String>,
    pub vip_address: Option<String>,
    pub secure_vip_address: Option<String>,
    pub last_updated_timestamp: u64,
    pub last_dirty_timestamp: u64,
    pub action: Action,
}

impl Instance {
    /// The status routers go by: the override when there is one.
    pub fn status(&self) -> Status {
        if self.overridden_status == Status::Unknown {
            self.reported_status
        } else {
            self.overridden_status
        }
    }
}

/// Why a document is not an instance the registry accepts; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid(message.into())
}

/// Checks an id or name that arrives in a path or a body: not empty, bounded, no path
/// separators or dot segments, no control characters.
pub fn check_id(what: &str, id: &str) -> Result<(), Invalid> {
    if id.is_empty() {
        return Err(invalid(format!("{what} must not be empty")));
    }
    if id.len() > MAX_NAME {
        return Err(invalid(format!("{what} is longer than {MAX_NAME} bytes")));
    }
    if id.contains(['/', '\\']) || id.contains("..") {
        return Err(invalid(format!(
            "{what} must not contain '/', '\\' or '..'"
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

/// Reads a register request's body: `{"instance": {...}}` or `<instance>...</instance>`.
pub fn parse_body(body: &[u8], now: u64) -> Result<Instance, Invalid> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let document = match first {
        Some(b'{') => serde_json::from_slice::<Value>(body)
            .map_err(|e| invalid(format!("the body is not valid JSON: {e}")))?,
        Some(b'<') => crate::xml::to_json(body).map_err(invalid)?,
        _ => return Err(invalid("the body must be a JSON or XML instance document")),
    };
    let instance = document
        .get("instance")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("the body must hold an \"instance\" object"))?;
    from_fields(instance, now)
}

/// The text of a field given as a string, a number or a boolean.
fn text<'a>(fields: &'a Map<String, Value>, names: &[&str]) -> Option<std::borrow::Cow<'a, str>> {
    let value = names.iter().find_map(|name| fields.get(*name))?;
    match value {
        Value::String(s) => Some(s.as_str().into()),
        Value::Number(n) => Some(n.to_string().into()),
        Value::Bool(b) => Some(b.to_string().into()),
        // `{"$": ...}` with attributes: the text is under "$".
        Value::Object(o) => match o.get("$")? {
            Value::String(s) => Some(s.as_str().into()),
            Value::Number(n) => Some(n.to_string().into()),
            _ => None,
        },
        _ => None,
    }
}

fn bounded(name: &str, value: std::borrow::Cow<'_, str>, max: usize) -> Result<String, Invalid> {
    let value = value.trim();
    if value.len() > max {
        return Err(invalid(format!("{name} is longer than {max} bytes")));
    }
    Ok(value.to_string())
}

fn required(fields: &Map<String, Value>, name: &str) -> Result<String, Invalid> {
    match text(fields, &[name]) {
        Some(value) if !value.trim().is_empty() => bounded(name, value, MAX_NAME),
        _ => Err(invalid(format!("{name} is required"))),
    }
}

fn optional(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, Invalid> {
    text(fields, &[name])
        .filter(|v| !v.trim().is_empty())
        .map(|v| bounded(name, v, MAX_TEXT))
        .transpose()
}

fn number<T: std::str::FromStr>(
    fields: &Map<String, Value>,
    name: &str,
    default: T,
) -> Result<T, Invalid> {
    match text(fields, &[name]) {
        None => Ok(default),
        Some(value) => value
            .trim()
            .parse()
            .map_err(|_| invalid(format!("{name} must be a whole number, got {value:?}"))),
    }
}

fn flag(value: Option<std::borrow::Cow<'_, str>>, default: bool) -> bool {
    value.map_or(default, |v| v.trim().eq_ignore_ascii_case("true"))
}

fn port(fields: &Map<String, Value>, name: &str, default: Port) -> Result<Port, Invalid> {
    let Some(value) = fields.get(name) else {
        return Ok(default);
    };
    let enabled = match value {
        Value::Object(o) => flag(text(o, &["@enabled"]), default.enabled),
        _ => default.enabled,
    };
    Ok(Port {
        number: number(fields, name, default.number)?,
        enabled,
    })
}

/// Builds an instance from the fields of an `instance` object, checking each.
pub fn from_fields(fields: &Map<String, Value>, now: u64) -> Result<Instance, Invalid> {
    let host_name = required(fields, "hostName")?;
    // Eureka takes the host name as the id when a client sends none.
    let id = match text(fields, &["instanceId"]) {
        Some(id) if !id.trim().is_empty() => bounded("instanceId", id, MAX_NAME)?,
        _ => host_name.clone(),
    };
    check_id("instanceId", &id)?;
    let app = required(fields, "app")?.to_ascii_uppercase();
    check_id("app", &app)?;
    let ip_addr = required(fields, "ipAddr")?;
    let data_center = fields
        .get("dataCenterInfo")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("dataCenterInfo is required"))?;
    let status_of = |names: &[&str]| -> Result<Status, Invalid> {
        match text(fields, names) {
            None => Ok(Status::Unknown),
            Some(value) => Status::parse(&value)
                .ok_or_else(|| invalid(format!("{} {value:?} is not a status", names[0]))),
        }
    };
    let reported_status = match status_of(&["status"])? {
        // A client that says nothing about itself is taken to be up, as Eureka does.
        Status::Unknown if !fields.contains_key("status") => Status::Up,
        status => status,
    };
    let lease = fields.get("leaseInfo").and_then(Value::as_object);
    let empty = Map::new();
    let lease = lease.unwrap_or(&empty);
    let renewal_interval_secs = number(lease, "renewalIntervalInSecs", 30u32)?;
    let duration_secs = number(lease, "durationInSecs", 90u32)?;
    if !(1..=MAX_RENEWAL_SECS).contains(&renewal_interval_secs) {
        return Err(invalid(format!(
            "leaseInfo.renewalIntervalInSecs must be 1 to {MAX_RENEWAL_SECS}, got {renewal_interval_secs}"
        )));
    }
    if !(1..=MAX_DURATION_SECS).contains(&duration_secs) {
        return Err(invalid(format!(
            "leaseInfo.durationInSecs must be 1 to {MAX_DURATION_SECS}, got {duration_secs}"
        )));
    }
    let metadata = metadata(fields.get("metadata"))?;
    Ok(Instance {
        id,
        app,
        host_name,
        ip_addr,
        reported_status,
        overridden_status: status_of(&["overriddenStatus", "overriddenstatus"])?,
        port: port(
            fields,
            "port",
            Port {
                number: 7001,
                enabled: true,
            },
        )?,
        secure_port: port(
            fields,
            "securePort",
            Port {
                number: 7002,
                enabled: false,
            },
        )?,
        country_id: number(fields, "countryId", 1)?,
        data_center_class: bounded(
            "dataCenterInfo.@class",
            text(data_center, &["@class"])
                .unwrap_or("com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo".into()),
            MAX_TEXT,
        )?,
        data_center_name: bounded(
            "dataCenterInfo.name",
            text(data_center, &["name"]).unwrap_or("MyOwn".into()),
            MAX_NAME,
        )?,
        renewal_interval_secs,
        duration_secs,
        registration_timestamp: now,
        last_renewal_timestamp: now,
        eviction_timestamp: 0,
        service_up_timestamp: now,
        metadata,
        home_page_url: optional(fields, "homePageUrl")?,
        status_page_url: optional(fields, "statusPageUrl")?,
        health_check_url: optional(fields, "healthCheckUrl")?,
        secure_health_check_url: optional(fields, "secureHealthCheckUrl")?,
        vip_address: optional(fields, "vipAddress")?,
        secure_vip_address: optional(fields, "secureVipAddress")?,
        last_updated_timestamp: now,
        last_dirty_timestamp: number(fields, "lastDirtyTimestamp", now)?,
        action: Action::Added,
    })
}

/// Metadata: string key/values; keys starting with `@` (Java's class markers) are not metadata.
fn metadata(value: Option<&Value>) -> Result<BTreeMap<String, String>, Invalid> {
    let mut metadata = BTreeMap::new();
    let Some(Value::Object(entries)) = value else {
        return Ok(metadata);
    };
    for (key, value) in entries {
        if key.starts_with('@') {
            continue;
        }
        if metadata.len() == MAX_METADATA {
            return Err(invalid(format!(
                "metadata has more than {MAX_METADATA} entries"
            )));
        }
        let value = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => String::new(),
            _ => return Err(invalid(format!("metadata {key:?} must be a string"))),
        };
        check_metadata(key, &value)?;
        metadata.insert(key.clone(), value);
    }
    Ok(metadata)
}

/// Bounds one metadata entry.
pub fn check_metadata(key: &str, value: &str) -> Result<(), Invalid> {
    if key.is_empty() || key.len() > MAX_NAME || key.chars().any(|c| c.is_control()) {
        return Err(invalid(format!(
            "metadata key {key:?} must be 1 to {MAX_NAME} bytes without control characters"
        )));
    }
    if value.len() > MAX_TEXT {
        return Err(invalid(format!(
            "metadata {key:?} is longer than {MAX_TEXT} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = r#"{"instance": {
        "instanceId": "10.0.9.5:story-service:8080", "hostName": "10.0.9.5", "app": "story-service",
        "ipAddr": "10.0.9.5", "status": "UP", "port": {"$": 8080, "@enabled": "true"},
        "securePort": {"$": "443", "@enabled": "false"},
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 5, "durationInSecs": 15},
        "metadata": {"zone": "a", "weight": 3},
        "vipAddress": "story-service"}}"#;

    #[test]
    fn a_spring_style_json_instance_is_read_with_every_field() {
        let instance = parse_body(JSON.as_bytes(), 1000).unwrap();
        assert_eq!(instance.id, "10.0.9.5:story-service:8080");
        assert_eq!(instance.app, "STORY-SERVICE");
        assert_eq!(
            instance.port,
            Port {
                number: 8080,
                enabled: true
            }
        );
        assert_eq!(instance.secure_port.number, 443);
        assert!(!instance.secure_port.enabled);
        assert_eq!(
            (instance.renewal_interval_secs, instance.duration_secs),
            (5, 15)
        );
        assert_eq!(instance.metadata["weight"], "3");
        assert_eq!(instance.status(), Status::Up);
        assert_eq!(instance.last_dirty_timestamp, 1000);
    }

    #[test]
    fn a_bare_port_number_and_a_missing_instance_id_are_accepted_as_eureka_does() {
        let body = r#"{"instance": {"hostName": "h1", "app": "a", "ipAddr": "127.0.0.1",
            "port": 8080, "dataCenterInfo": {"name": "MyOwn"}}}"#;
        let instance = parse_body(body.as_bytes(), 1).unwrap();
        assert_eq!(instance.id, "h1");
        assert_eq!(instance.port.number, 8080);
        assert!(instance.port.enabled);
    }

    #[test]
    fn bad_documents_are_refused_naming_the_problem() {
        let cases = [
            ("", "JSON or XML"),
            ("{", "not valid JSON"),
            (r#"{"x": 1}"#, "\"instance\""),
            (
                r#"{"instance": {"app": "a", "ipAddr": "1"}}"#,
                "hostName is required",
            ),
            (
                r#"{"instance": {"hostName": "h", "ipAddr": "1", "dataCenterInfo": {}}}"#,
                "app is required",
            ),
            (
                r#"{"instance": {"hostName": "h", "app": "a", "dataCenterInfo": {}}}"#,
                "ipAddr is required",
            ),
            (
                r#"{"instance": {"hostName": "h", "app": "a", "ipAddr": "1"}}"#,
                "dataCenterInfo is required",
            ),
            (
                r#"{"instance": {"instanceId": "../x", "hostName": "h", "app": "a", "ipAddr": "1", "dataCenterInfo": {}}}"#,
                "instanceId must not contain",
            ),
            (
                r#"{"instance": {"hostName": "h", "app": "a", "ipAddr": "1", "dataCenterInfo": {}, "leaseInfo": {"durationInSecs": 99999999}}}"#,
                "durationInSecs must be 1 to 3600",
            ),
            (
                r#"{"instance": {"hostName": "h", "app": "a", "ipAddr": "1", "dataCenterInfo": {}, "port": "http"}}"#,
                "port must be a whole number",
            ),
            (
                r#"{"instance": {"hostName": "h", "app": "a", "ipAddr": "1", "dataCenterInfo": {}, "status": "HAPPY"}}"#,
                "status \"HAPPY\" is not a status",
            ),
        ];
        for (body, expected) in cases {
            let error = parse_body(body.as_bytes(), 1).unwrap_err();
            assert!(error.0.contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn ten_thousand_metadata_keys_are_refused() {
        let keys: Vec<String> = (0..10_000).map(|i| format!("\"k{i}\": \"v\"")).collect();
        let body = format!(
            r#"{{"instance": {{"hostName": "h", "app": "a", "ipAddr": "1", "dataCenterInfo": {{}}, "metadata": {{{}}}}}}}"#,
            keys.join(",")
        );
        let error = parse_body(body.as_bytes(), 1).unwrap_err();
        assert!(error.0.contains("more than 256 entries"), "{error}");
    }
}
