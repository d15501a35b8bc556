//! One line of Prometheus' text exposition format, read strictly and without allocating.
//!
//! Hand-written because the crate (`prometheus-parse`) matched every line with regexes that had
//! to capture: at 200 instances a second they were over a third of the dashboard's CPU
//! (docs/benchmarks.md#resilience). The grammar, from Prometheus' exposition format:
//!
//! ```text
//! line   = comment | blank | sample
//! sample = name [ ws* "{" ws* [ label ( ws* "," ws* label )* ws* [ "," ws* ] ] "}" ] ws+ value [ ws+ timestamp ] ws*
//! name   = [a-zA-Z_:] [a-zA-Z0-9_:]*
//! label  = [a-zA-Z_] [a-zA-Z0-9_]* ws* "=" ws* '"' ( char | "\\" | "\"" | "\n" )* '"'
//! value  = a float as Go's ParseFloat reads it (also +Inf, -Inf, NaN)
//! ```
//!
//! Anything else is an error. Tested against `prometheus-parse` on generated lines (property
//! tests below), and on arbitrary input for never panicking.

use std::borrow::Cow;

/// A sample line's parts; label values are unescaped on request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample<'a> {
    pub(crate) name: &'a str,
    /// What follows the opening brace, up to and with the closing one, already checked.
    labels: &'a str,
    pub(crate) value: f64,
}

impl<'a> Sample<'a> {
    /// The value of label `key`, unescaped.
    pub(crate) fn label(&self, key: &str) -> Option<Cow<'a, str>> {
        let mut rest = self.labels;
        while let Some((name, value, after)) = next_label(rest).ok().flatten() {
            if name == key {
                return Some(unescape(value));
            }
            rest = after;
        }
        None
    }
}

/// A sample, `None` for a comment or a blank line, or `Err` for anything else.
pub(crate) fn line(line: &str) -> Result<Option<Sample<'_>>, ()> {
    let line = line.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let name_end = line
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
        return Err(());
    }
    let mut rest = &line[name_end..];
    let mut labels = "";
    if let Some(open) = skip_ws(rest).strip_prefix('{') {
        let mut inside = open;
        while let Some((_, _, after)) = next_label(inside)? {
            inside = after;
        }
        let close = skip_ws(inside).strip_prefix('}').ok_or(())?;
        // With its closing brace, which ends the last label when it is read again.
        labels = &open[..open.len() - close.len()];
        rest = close;
    }
    // At least one space between the name (or labels) and the value.
    if !rest.starts_with([' ', '\t']) {
        return Err(());
    }
    let mut fields = rest.split([' ', '\t']).filter(|f| !f.is_empty());
    let value = number(fields.next().ok_or(())?)?;
    if let Some(timestamp) = fields.next() {
        timestamp.parse::<i64>().map_err(|_| ())?;
    }
    if fields.next().is_some() {
        return Err(());
    }
    Ok(Some(Sample {
        name,
        labels,
        value,
    }))
}

/// A bucket's `le` bound.
pub(crate) fn bound(text: &str) -> Result<f64, ()> {
    number(text)
}

/// A float as Prometheus writes one.
fn number(text: &str) -> Result<f64, ()> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if text
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            text.parse().map_err(|_| ())
        }
        _ => Err(()),
    }
}

fn skip_ws(text: &str) -> &str {
    text.trim_start_matches([' ', '\t'])
}

/// The next `key="value"` of a label set and what follows it (past a comma), or `None` at the
/// closing brace (not consumed).
#[allow(clippy::type_complexity)]
fn next_label(text: &str) -> Result<Option<(&str, &str, &str)>, ()> {
    let text = skip_ws(text);
    if text.starts_with('}') {
        return Ok(None);
    }
    let key_end = text
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'_'))
        .unwrap_or(text.len());
    let key = &text[..key_end];
    if key.is_empty() || key.as_bytes()[0].is_ascii_digit() {
        return Err(());
    }
    let after_eq = skip_ws(skip_ws(&text[key_end..]).strip_prefix('=').ok_or(())?);
    let quoted = after_eq.strip_prefix('"').ok_or(())?;
    let bytes = quoted.as_bytes();
    let mut i = 0;
    let end = loop {
        match bytes.get(i) {
            None | Some(b'\n') => return Err(()),
            Some(b'"') => break i,
            Some(b'\\') => match bytes.get(i + 1) {
                Some(b'\\' | b'"' | b'n') => i += 2,
                _ => return Err(()),
            },
            Some(_) => i += 1,
        }
    };
    let value = &quoted[..end];
    let after = skip_ws(&quoted[end + 1..]);
    let after = match after.strip_prefix(',') {
        Some(more) => more,
        None if after.starts_with('}') => after,
        None => return Err(()),
    };
    Ok(Some((key, value, after)))
}

fn unescape(value: &str) -> Cow<'_, str> {
    if !value.contains('\\') {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn samples_comments_and_garbage() {
        let s = line(r#"flotilla_calls_total{target="todo-api",outcome="success"} 42"#)
            .unwrap()
            .unwrap();
        assert_eq!(s.name, "flotilla_calls_total");
        assert_eq!(s.value, 42.0);
        assert_eq!(s.label("target").unwrap(), "todo-api");
        assert_eq!(s.label("outcome").unwrap(), "success");
        assert_eq!(s.label("le"), None);
        let s = line(r#"x_bucket{le="+Inf",a="q\"uo\\te\n",} +Inf 1700000000000"#)
            .unwrap()
            .unwrap();
        assert_eq!(s.value, f64::INFINITY);
        assert_eq!(s.label("le").unwrap(), "+Inf");
        assert_eq!(s.label("a").unwrap(), "q\"uo\\te\n");
        assert_eq!(line("up 1").unwrap().unwrap().value, 1.0);
        assert_eq!(line("  # HELP x y").unwrap(), None);
        assert_eq!(line("").unwrap(), None);
        for bad in [
            "<html>",
            "x lots",
            "x{a=\"b\"}1",
            "x{a=b} 1",
            "x{a=\"b} 1",
            "x{a=\"b\\q\"} 1",
            "x{1a=\"b\"} 1",
            "x 1 2 3",
            "x 1 later",
            "9x 1",
            "x{a=\"b\" c=\"d\"} 1",
            "x{",
            "x 0x10",
        ] {
            assert!(line(bad).is_err(), "{bad}");
        }
    }

    /// A line as read: name, labels (sorted), value.
    type Read = (String, Vec<(String, String)>, f64);

    /// What `prometheus-parse` reads from one line.
    fn by_the_crate(text: &str) -> Option<Read> {
        let scrape = prometheus_parse::Scrape::parse(std::iter::once(Ok(text.to_string()))).ok()?;
        let sample = scrape.samples.into_iter().next()?;
        let value = match sample.value {
            prometheus_parse::Value::Untyped(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v) => v,
            _ => return None,
        };
        let mut labels: Vec<(String, String)> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        Some((sample.metric, labels, value))
    }

    fn label_value() -> impl Strategy<Value = String> {
        // What both read alike: no quotes or backslashes (the crate does not unescape).
        "[a-zA-Z0-9 ._/+:-]{0,12}"
    }

    proptest! {
        #[test]
        fn lines_read_as_prometheus_parse_reads_them(
            name in "[a-z_][a-z0-9_]{0,20}",
            labels in proptest::collection::btree_map("[a-z_][a-z0-9_]{0,8}", label_value(), 0..4),
            value in prop_oneof![any::<u32>().prop_map(f64::from), (-1e6f64..1e6)],
            spaces in 1usize..3,
        ) {
            let set: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let text = if set.is_empty() {
                format!("{name}{}{value}", " ".repeat(spaces))
            } else {
                format!("{name}{{{}}}{}{value}", set.join(","), " ".repeat(spaces))
            };
            let ours = line(&text).unwrap().unwrap();
            let (crate_name, crate_labels, crate_value) = by_the_crate(&text).unwrap();
            prop_assert_eq!(ours.name, crate_name.as_str());
            prop_assert_eq!(ours.value, crate_value);
            for (k, v) in &crate_labels {
                let found = ours.label(k);
                prop_assert_eq!(found.as_deref(), Some(v.as_str()));
            }
            prop_assert_eq!(crate_labels.len(), labels.len());
        }

        #[test]
        fn arbitrary_input_never_panics(text in ".{0,80}") {
            let _ = line(&text).map(|s| s.map(|s| s.label("a")));
        }
    }
}
