//! The documents the registry answers with, in Eureka's JSON and XML shapes (see
//! docs/registry.md): one instance, one application, and the applications document of a full
//! fetch, a delta or a VIP lookup.
//!
//! JSON: `application` and `instance` are always arrays; timestamps in `leaseInfo` are numbers,
//! `lastUpdatedTimestamp`/`lastDirtyTimestamp` strings, as Eureka writes them. XML: integer text
//! for every number (py-eureka-client parses nothing else), `<overriddenstatus>` in lower case.

use std::fmt::Write;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::instance::{Instance, Port, Status};
use crate::xml::{escape_into, is_name};

/// Which format a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Xml,
}

impl Format {
    /// JSON only when `Accept` mentions it; XML otherwise, as Eureka does.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.to_ascii_lowercase().contains("json") => Format::Json,
            _ => Format::Xml,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Xml => "application/xml",
        }
    }
}

/// One application of an applications document: its name and its instances.
pub struct App<'a> {
    pub name: &'a str,
    pub instances: Vec<&'a Instance>,
}

/// `STATUS_count_` for each status present, by status name: what clients compare after a delta.
pub fn hashcode<'a>(instances: impl IntoIterator<Item = &'a Instance>) -> String {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for instance in instances {
        *counts.entry(instance.status().as_str()).or_default() += 1;
    }
    let mut code = String::new();
    for (status, count) in counts {
        let _ = write!(code, "{status}_{count}_");
    }
    code
}

pub fn instance(format: Format, instance: &Instance) -> Vec<u8> {
    match format {
        Format::Json => json_bytes(&Wrap("instance", Json(instance))),
        Format::Xml => {
            let mut out = String::from(XML_HEAD);
            xml_instance(&mut out, instance);
            out.into_bytes()
        }
    }
}

pub fn application(format: Format, app: &App<'_>) -> Vec<u8> {
    match format {
        Format::Json => json_bytes(&Wrap("application", JsonApp(app))),
        Format::Xml => {
            let mut out = String::from(XML_HEAD);
            xml_application(&mut out, app);
            out.into_bytes()
        }
    }
}

pub fn applications(format: Format, version: u64, hashcode: &str, apps: &[App<'_>]) -> Vec<u8> {
    match format {
        Format::Json => json_bytes(&Wrap(
            "applications",
            JsonApps {
                version,
                hashcode,
                apps,
            },
        )),
        Format::Xml => {
            let mut out = String::with_capacity(
                256 + 1400 * apps.iter().map(|a| a.instances.len()).sum::<usize>(),
            );
            out.push_str(XML_HEAD);
            let _ = write!(
                out,
                "<applications><versions__delta>{version}</versions__delta><apps__hashcode>"
            );
            escape_into(&mut out, hashcode);
            out.push_str("</apps__hashcode>");
            for app in apps {
                xml_application(&mut out, app);
            }
            out.push_str("</applications>");
            out.into_bytes()
        }
    }
}

fn json_bytes(value: &impl Serialize) -> Vec<u8> {
    // Serialising these types cannot fail: every key is a string.
    serde_json::to_vec(value).unwrap_or_default()
}

struct Wrap<T>(&'static str, T);

impl<T: Serialize> Serialize for Wrap<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(self.0, &self.1)?;
        map.end()
    }
}

struct JsonApps<'a> {
    version: u64,
    hashcode: &'a str,
    apps: &'a [App<'a>],
}

impl Serialize for JsonApps<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("versions__delta", &self.version.to_string())?;
        map.serialize_entry("apps__hashcode", self.hashcode)?;
        let apps: Vec<JsonApp<'_>> = self.apps.iter().map(JsonApp).collect();
        map.serialize_entry("application", &apps)?;
        map.end()
    }
}

struct JsonApp<'a>(&'a App<'a>);

impl Serialize for JsonApp<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("name", self.0.name)?;
        let instances: Vec<Json<'_>> = self.0.instances.iter().map(|i| Json(i)).collect();
        map.serialize_entry("instance", &instances)?;
        map.end()
    }
}

#[derive(Serialize)]
struct JsonPort {
    #[serde(rename = "$")]
    number: u16,
    #[serde(rename = "@enabled")]
    enabled: &'static str,
}

impl From<Port> for JsonPort {
    fn from(port: Port) -> Self {
        JsonPort {
            number: port.number,
            enabled: if port.enabled { "true" } else { "false" },
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonLease {
    renewal_interval_in_secs: u32,
    duration_in_secs: u32,
    registration_timestamp: u64,
    last_renewal_timestamp: u64,
    eviction_timestamp: u64,
    service_up_timestamp: u64,
}

#[derive(Serialize)]
struct JsonDataCenter<'a> {
    #[serde(rename = "@class")]
    class: &'a str,
    name: &'a str,
}

struct JsonMetadata<'a>(&'a Instance);

impl Serialize for JsonMetadata<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let metadata = &self.0.metadata;
        if metadata.is_empty() {
            let mut map = s.serialize_map(Some(1))?;
            map.serialize_entry("@class", "java.util.Collections$EmptyMap")?;
            return map.end();
        }
        s.collect_map(metadata)
    }
}

struct Json<'a>(&'a Instance);

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("instanceId", &i.id)?;
        map.serialize_entry("hostName", &i.host_name)?;
        map.serialize_entry("app", &i.app)?;
        map.serialize_entry("ipAddr", &i.ip_addr)?;
        map.serialize_entry("status", i.status().as_str())?;
        map.serialize_entry("overriddenStatus", i.overridden_status.as_str())?;
        map.serialize_entry("port", &JsonPort::from(i.port))?;
        map.serialize_entry("securePort", &JsonPort::from(i.secure_port))?;
        map.serialize_entry("countryId", &i.country_id)?;
        map.serialize_entry(
            "dataCenterInfo",
            &JsonDataCenter {
                class: &i.data_center_class,
                name: &i.data_center_name,
            },
        )?;
        map.serialize_entry(
            "leaseInfo",
            &JsonLease {
                renewal_interval_in_secs: i.renewal_interval_secs,
                duration_in_secs: i.duration_secs,
                registration_timestamp: i.registration_timestamp,
                last_renewal_timestamp: i.last_renewal_timestamp,
                eviction_timestamp: i.eviction_timestamp,
                service_up_timestamp: i.service_up_timestamp,
            },
        )?;
        map.serialize_entry("metadata", &JsonMetadata(i))?;
        for (key, value) in urls(i) {
            if let Some(value) = value {
                map.serialize_entry(key, value)?;
            }
        }
        map.serialize_entry("isCoordinatingDiscoveryServer", "false")?;
        map.serialize_entry(
            "lastUpdatedTimestamp",
            &i.last_updated_timestamp.to_string(),
        )?;
        map.serialize_entry("lastDirtyTimestamp", &i.last_dirty_timestamp.to_string())?;
        map.serialize_entry("actionType", i.action.as_str())?;
        map.end()
    }
}

fn urls(i: &Instance) -> [(&'static str, &Option<String>); 6] {
    [
        ("homePageUrl", &i.home_page_url),
        ("statusPageUrl", &i.status_page_url),
        ("healthCheckUrl", &i.health_check_url),
        ("secureHealthCheckUrl", &i.secure_health_check_url),
        ("vipAddress", &i.vip_address),
        ("secureVipAddress", &i.secure_vip_address),
    ]
}

const XML_HEAD: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>"#;

fn element(out: &mut String, name: &str, text: &str) {
    let _ = write!(out, "<{name}>");
    escape_into(out, text);
    let _ = write!(out, "</{name}>");
}

fn xml_application(out: &mut String, app: &App<'_>) {
    out.push_str("<application>");
    element(out, "name", app.name);
    for instance in &app.instances {
        xml_instance(out, instance);
    }
    out.push_str("</application>");
}

fn xml_instance(out: &mut String, i: &Instance) {
    out.push_str("<instance>");
    element(out, "instanceId", &i.id);
    element(out, "hostName", &i.host_name);
    element(out, "app", &i.app);
    element(out, "ipAddr", &i.ip_addr);
    element(out, "status", i.status().as_str());
    element(out, "overriddenstatus", i.overridden_status.as_str());
    let _ = write!(
        out,
        r#"<port enabled="{}">{}</port><securePort enabled="{}">{}</securePort><countryId>{}</countryId>"#,
        i.port.enabled, i.port.number, i.secure_port.enabled, i.secure_port.number, i.country_id
    );
    out.push_str(r#"<dataCenterInfo class=""#);
    escape_into(out, &i.data_center_class);
    out.push_str(r#"">"#);
    element(out, "name", &i.data_center_name);
    out.push_str("</dataCenterInfo>");
    let _ = write!(
        out,
        "<leaseInfo><renewalIntervalInSecs>{}</renewalIntervalInSecs><durationInSecs>{}</durationInSecs>\
         <registrationTimestamp>{}</registrationTimestamp><lastRenewalTimestamp>{}</lastRenewalTimestamp>\
         <evictionTimestamp>{}</evictionTimestamp><serviceUpTimestamp>{}</serviceUpTimestamp></leaseInfo>",
        i.renewal_interval_secs,
        i.duration_secs,
        i.registration_timestamp,
        i.last_renewal_timestamp,
        i.eviction_timestamp,
        i.service_up_timestamp
    );
    if i.metadata.is_empty() {
        out.push_str(r#"<metadata class="java.util.Collections$EmptyMap"/>"#);
    } else {
        out.push_str("<metadata>");
        for (key, value) in i.metadata.iter().filter(|(k, _)| is_name(k)) {
            element(out, key, value);
        }
        out.push_str("</metadata>");
    }
    for (key, value) in urls(i) {
        if let Some(value) = value {
            element(out, key, value);
        }
    }
    out.push_str("<isCoordinatingDiscoveryServer>false</isCoordinatingDiscoveryServer>");
    let _ = write!(
        out,
        "<lastUpdatedTimestamp>{}</lastUpdatedTimestamp><lastDirtyTimestamp>{}</lastDirtyTimestamp>",
        i.last_updated_timestamp, i.last_dirty_timestamp
    );
    element(out, "actionType", i.action.as_str());
    out.push_str("</instance>");
}

/// Statuses in the order the dashboard lists them.
pub fn status_order(status: Status) -> u8 {
    match status {
        Status::Up => 0,
        Status::Starting => 1,
        Status::OutOfService => 2,
        Status::Down => 3,
        Status::Unknown => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::parse_body;

    fn sample(status: &str) -> Instance {
        let body = format!(
            r#"{{"instance": {{"instanceId": "h:a:{status}", "hostName": "h", "app": "a", "ipAddr": "10.0.0.1",
                "status": "{status}", "port": 8080, "dataCenterInfo": {{"name": "MyOwn"}},
                "metadata": {{"zone": "<a>", "not a name": "x"}}}}}}"#
        );
        parse_body(body.as_bytes(), 1_700_000_000_000).unwrap()
    }

    #[test]
    fn the_hashcode_counts_statuses_in_name_order() {
        let (up, down) = (sample("UP"), sample("DOWN"));
        assert_eq!(hashcode([&up, &down, &up]), "DOWN_1_UP_2_");
        assert_eq!(hashcode([]), "");
    }

    #[test]
    fn json_documents_have_eurekas_shape() {
        let up = sample("UP");
        let app = App {
            name: "A",
            instances: vec![&up],
        };
        let body = applications(Format::Json, 7, "UP_1_", &[app]);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let apps = &value["applications"];
        assert_eq!(apps["versions__delta"], "7");
        assert_eq!(apps["apps__hashcode"], "UP_1_");
        let instance = &apps["application"][0]["instance"][0];
        assert_eq!(instance["port"]["$"], 8080);
        assert_eq!(instance["port"]["@enabled"], "true");
        assert_eq!(instance["leaseInfo"]["durationInSecs"], 90);
        assert_eq!(instance["lastDirtyTimestamp"], "1700000000000");
        assert_eq!(instance["metadata"]["zone"], "<a>");
        // The document reads back as the same instance.
        let again = parse_body(&instance_doc(instance), 1).unwrap();
        assert_eq!(again.id, up.id);
        assert_eq!(again.metadata, up.metadata);
    }

    fn instance_doc(instance: &serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "instance": instance })).unwrap()
    }

    #[test]
    fn xml_documents_have_eurekas_shape_and_read_back() {
        let up = sample("UP");
        let body = String::from_utf8(instance(Format::Xml, &up)).unwrap();
        assert!(
            body.contains(r#"<port enabled="true">8080</port>"#),
            "{body}"
        );
        assert!(body.contains("<overriddenstatus>UNKNOWN</overriddenstatus>"));
        assert!(body.contains("<zone>&lt;a&gt;</zone>"));
        assert!(!body.contains("not a name"));
        let again = parse_body(body.as_bytes(), 1).unwrap();
        assert_eq!(again.id, up.id);
        assert_eq!(again.port, up.port);
        assert_eq!(again.metadata["zone"], "<a>");
    }
}
