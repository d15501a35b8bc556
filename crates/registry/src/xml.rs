//! XML, read (through `roxmltree`, which refuses DTDs and so entity expansion) into the JSON
//! shape clients send, and the escaping the documents written out need.
//!
//! Reading: an element with child elements becomes an object of its children (a name seen twice
//! becomes an array); its attributes become `@name` keys; a leaf becomes its text, or
//! `{"@attr": ..., "$": text}` when it has attributes. The root element becomes the single key
//! of the result: `<instance>...</instance>` reads as `{"instance": {...}}`.

use serde_json::{Map, Value};

/// Deepest nesting an instance document needs is 3; anything past this is refused.
const MAX_DEPTH: usize = 8;
/// Most nodes one document may have (an instance with the most metadata allowed has ~600).
const MAX_NODES: u32 = 4096;

/// Reads an XML document into the JSON shape described above.
pub fn to_json(body: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the XML body is not UTF-8".to_string())?;
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
        ..roxmltree::ParsingOptions::default()
    };
    let document = roxmltree::Document::parse_with_options(text, options)
        .map_err(|e| format!("the body is not valid XML: {e}"))?;
    let root = document.root_element();
    let mut top = Map::new();
    top.insert(root.tag_name().name().to_string(), element(root, 0)?);
    Ok(Value::Object(top))
}

fn element(node: roxmltree::Node<'_, '_>, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("the XML is nested deeper than {MAX_DEPTH} levels"));
    }
    let mut fields = Map::new();
    for attribute in node.attributes() {
        fields.insert(
            format!("@{}", attribute.name()),
            Value::String(attribute.value().to_string()),
        );
    }
    let mut has_children = false;
    for child in node.children().filter(roxmltree::Node::is_element) {
        has_children = true;
        let name = child.tag_name().name().to_string();
        let value = element(child, depth + 1)?;
        match fields.get_mut(&name) {
            Some(Value::Array(items)) => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
            None => {
                fields.insert(name, value);
            }
        }
    }
    if has_children {
        return Ok(Value::Object(fields));
    }
    let text: String = node
        .children()
        .filter(|c| c.is_text())
        .filter_map(|c| c.text())
        .collect();
    if fields.is_empty() {
        Ok(Value::String(text))
    } else {
        if !text.trim().is_empty() {
            fields.insert("$".to_string(), Value::String(text));
        }
        Ok(Value::Object(fields))
    }
}

/// Appends `text` to `out` with the characters XML gives meaning to escaped.
pub fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

/// A metadata key can only be an element name if it is a valid XML name; others are left out
/// of XML documents (JSON ones carry them).
pub fn is_name(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !key.to_ascii_lowercase().starts_with("xml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_xml_instance_reads_into_the_json_shape() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
            <instance><instanceId>h:a:1</instanceId><port enabled="true">8080</port>
            <dataCenterInfo class="x.Y"><name>MyOwn</name></dataCenterInfo>
            <metadata><zone>a&amp;b</zone></metadata></instance>"#;
        let value = to_json(body.as_bytes()).unwrap();
        let instance = &value["instance"];
        assert_eq!(instance["instanceId"], "h:a:1");
        assert_eq!(instance["port"]["$"], "8080");
        assert_eq!(instance["port"]["@enabled"], "true");
        assert_eq!(instance["dataCenterInfo"]["@class"], "x.Y");
        assert_eq!(instance["dataCenterInfo"]["name"], "MyOwn");
        assert_eq!(instance["metadata"]["zone"], "a&b");
    }

    #[test]
    fn entity_declarations_and_deep_or_huge_documents_are_refused() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><instance>&lol;</instance>"#;
        assert!(to_json(bomb.as_bytes()).is_err());
        let deep = format!("{}{}", "<a>".repeat(20), "</a>".repeat(20));
        assert!(to_json(deep.as_bytes()).unwrap_err().contains("deeper"));
        let wide = format!("<m>{}</m>", "<k>v</k>".repeat(5000));
        assert!(to_json(wide.as_bytes()).is_err());
        assert!(to_json(b"<a>").is_err());
        assert!(to_json(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn escaping_and_names() {
        let mut out = String::new();
        escape_into(&mut out, r#"<a href="x">&'"#);
        assert_eq!(out, "&lt;a href=&quot;x&quot;&gt;&amp;&apos;");
        assert!(is_name("zone"));
        assert!(is_name("management.port"));
        assert!(!is_name("1x"));
        assert!(!is_name("a b"));
        assert!(!is_name("xmlns"));
    }
}
