//! The TODO item, its status, and the request bodies with their validation rules.
//!
//! Validation happens here, before the store is touched, so a rejected request writes nothing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa::openapi::schema::{KnownFormat, Object, ObjectBuilder, SchemaFormat, Type};

/// Longest title, in characters once trimmed: the original schema's `VARCHAR(188)`.
pub const MAX_TITLE_CHARS: usize = 188;
/// Longest content, in characters: the column is MySQL's `TEXT` (65,535 bytes), which holds this
/// many characters whatever they are (utf8mb4 takes up to 4 bytes each).
pub const MAX_CONTENT_CHARS: usize = 16_383;
/// Largest item id: ids are positive 32-bit integers.
pub const MAX_ID: i64 = i32::MAX as i64;

/// The characters a title is trimmed of, as the inside of a regular-expression class: exactly
/// those `char::is_whitespace` accepts (Unicode's White_Space), which `str::trim` removes. A test
/// checks the two agree on every character. The escapes mean the same in ECMA-262 (the document's
/// dialect), Python and Rust's `regex`.
const WHITESPACE_CLASS: &str =
    "\\u0009-\\u000d\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/// The rule [`valid_title`] enforces, as a JSON Schema `pattern`: 1 to [`MAX_TITLE_CHARS`]
/// characters once leading and trailing whitespace is removed, none of them NUL.
pub fn title_pattern() -> String {
    let w = WHITESPACE_CLASS;
    format!(
        "^[{w}]*[^{w}\\u0000](?:[^\\u0000]{{0,{}}}[^{w}\\u0000])?[{w}]*$",
        MAX_TITLE_CHARS - 2
    )
}

/// Text fields hold no NUL character: SQLite's string functions stop at one, and other
/// databases refuse it.
const NO_NUL_PATTERN: &str = "^[^\\u0000]*$";

fn title_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(title_pattern()))
        .description(Some(format!(
            "1 to {MAX_TITLE_CHARS} characters once leading and trailing whitespace (Unicode White_Space) is removed, no NUL; stored trimmed"
        )))
        .build()
}

fn content_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(MAX_CONTENT_CHARS))
        .pattern(Some(NO_NUL_PATTERN))
        .description(Some(format!(
            "Free text, at most {MAX_CONTENT_CHARS} characters, no NUL; missing means empty"
        )))
        .build()
}

/// An item id as the API accepts it: a positive 32-bit integer.
pub fn id_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
        .minimum(Some(1))
        .maximum(Some(MAX_ID))
        .build()
}

/// Deserializes a field that may be left out (`None`, with `#[serde(default)]`) or sent as null
/// (`Some(None)`), so that validation can refuse a null by name.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Deserializes a body id like [`nullable`], taking any JSON number with no fractional part as
/// JSON Schema's `integer` does (`7.0` is 7); other numbers are refused by name later.
fn nullable_integer<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<Number>>, D::Error> {
    Option::<serde_json::Number>::deserialize(deserializer).map(|n| Some(n.map(Number)))
}

/// A JSON number as sent, for ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Number(serde_json::Number);

impl Number {
    /// The whole number this is, or why not.
    fn integer(&self, name: &str) -> Result<i64, Invalid> {
        if let Some(n) = self.0.as_i64() {
            return Ok(n);
        }
        match self.0.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
            _ => Err(Invalid(format!(
                "{name} must be a positive integer up to {MAX_ID}, got {}",
                self.0
            ))),
        }
    }
}

impl From<i64> for Number {
    fn from(n: i64) -> Self {
        Number(n.into())
    }
}

/// A field that may be left out but is never null.
fn not_null<T>(field: Option<Option<T>>, name: &str) -> Result<Option<T>, Invalid> {
    match field {
        Some(None) => Err(Invalid(format!("{name} must not be null"))),
        Some(value) => Ok(value),
        None => Ok(None),
    }
}

/// Checks a body id: a positive 32-bit integer.
fn valid_id(id: i64) -> Result<i64, Invalid> {
    if (1..=MAX_ID).contains(&id) {
        Ok(id)
    } else {
        Err(Invalid(format!(
            "id must be a positive integer up to {MAX_ID}, got {id}"
        )))
    }
}

/// Which column of the board an item is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Todo,
    Progress,
    Done,
}

impl Status {
    pub const ALL: [Status; 3] = [Status::Todo, Status::Progress, Status::Done];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Todo => "TODO",
            Status::Progress => "PROGRESS",
            Status::Done => "DONE",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for an unknown status, naming the valid ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("status must be one of TODO, PROGRESS, DONE; got {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

/// A point in time with second precision (the original `DATETIME`), shown as RFC 3339 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(OffsetDateTime::now_utc().unix_timestamp())
    }
}

impl Timestamp {
    /// `YYYY-MM-DDTHH:MM:SSZ`, written digit by digit: a list response formats two per item, and
    /// the general formatting machinery was a measurable share of its cost. `None` outside years
    /// 0 to 9999.
    fn rfc3339(self) -> Option<[u8; 20]> {
        let at = OffsetDateTime::from_unix_timestamp(self.0).ok()?;
        let year = u16::try_from(at.year()).ok().filter(|y| *y <= 9999)?;
        let mut out = *b"0000-00-00T00:00:00Z";
        let mut put = |at: usize, width: usize, mut value: u16| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, u8::from(at.month()).into());
        put(8, 2, at.day().into());
        put(11, 2, at.hour().into());
        put(14, 2, at.minute().into());
        put(17, 2, at.second().into());
        Some(out)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.rfc3339().ok_or(fmt::Error)?;
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.rfc3339().ok_or_else(|| {
            serde::ser::Error::custom(format!("timestamp {} is out of range", self.0))
        })?;
        serializer.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
    }
}

/// A TODO item as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, ToSchema)]
#[schema(example = json!({"id": 1, "title": "Build the API", "content": "In Rust", "status": "TODO",
    "created": "2018-05-24T12:00:00Z", "updated": "2018-05-24T12:00:00Z"}))]
pub struct Todo {
    pub id: i64,
    pub title: String,
    pub content: String,
    pub status: Status,
    /// When the item was created (RFC 3339, UTC, whole seconds).
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
    /// When the item last changed (RFC 3339, UTC, whole seconds).
    #[schema(value_type = String, format = DateTime)]
    pub updated: Timestamp,
}

/// An item borrowed from wherever it lives (a database row, a [`Todo`]): the one definition of
/// an item's JSON, so a list can be written straight from database rows.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TodoRef<'a> {
    pub id: i64,
    pub title: &'a str,
    pub content: &'a str,
    pub status: Status,
    pub created: Timestamp,
    pub updated: Timestamp,
}

impl TodoRef<'_> {
    /// Appends this item's JSON to `out`: exactly the bytes its `Serialize` writes (a test pins
    /// the two together), without serde's per-field work, which escapes every key and fixed-format
    /// value and was most of a list request's serialising cost. Fails only for a timestamp
    /// outside years 0 to 9999.
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        let (created, updated) = match (self.created.rfc3339(), self.updated.rfc3339()) {
            (Some(created), Some(updated)) => (created, updated),
            _ => return serde_json::to_writer(out, self),
        };
        out.extend_from_slice(b"{\"id\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.id).as_bytes());
        out.extend_from_slice(b",\"title\":");
        serde_json::to_writer(&mut *out, self.title)?;
        out.extend_from_slice(b",\"content\":");
        serde_json::to_writer(&mut *out, self.content)?;
        out.extend_from_slice(b",\"status\":\"");
        out.extend_from_slice(self.status.as_str().as_bytes());
        out.extend_from_slice(b"\",\"created\":\"");
        out.extend_from_slice(&created);
        out.extend_from_slice(b"\",\"updated\":\"");
        out.extend_from_slice(&updated);
        out.extend_from_slice(b"\"}");
        Ok(())
    }
}

impl Serialize for Todo {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        TodoRef {
            id: self.id,
            title: &self.title,
            content: &self.content,
            status: self.status,
            created: self.created,
            updated: self.updated,
        }
        .serialize(serializer)
    }
}

/// `POST /todo`: a new item; it starts in TODO unless `status` says otherwise. A field may be
/// left out where it is optional, but never sent as null.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"title": "Build the API", "content": "In Rust"}))]
pub struct CreateTodo {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = title_schema, required = true)]
    pub title: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = content_schema)]
    pub content: Option<Option<String>>,
    /// The starting column (default TODO).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Status, required = false)]
    pub status: Option<Option<Status>>,
}

/// `PUT /todo` (the original form): every field of the item whose `id` is in the body is
/// replaced.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"id": 1, "title": "Build the API", "content": "In Rust", "status": "PROGRESS"}))]
pub struct ReplaceTodo {
    #[serde(default, deserialize_with = "nullable_integer")]
    #[schema(schema_with = id_schema, required = true)]
    pub id: Option<Option<Number>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = title_schema, required = true)]
    pub title: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = content_schema)]
    pub content: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Status, required = true)]
    pub status: Option<Option<Status>>,
}

/// `PUT /todo/{id}`: every field of the item is replaced. An `id` in the body is not needed; if
/// one is sent it must equal the path's (400 otherwise), so a client may send back an item it read.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(example = json!({"title": "Build the API", "content": "In Rust", "status": "PROGRESS"}))]
pub struct ReplaceTodoAt {
    #[serde(default, deserialize_with = "nullable_integer")]
    #[schema(ignore)]
    pub id: Option<Option<Number>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = title_schema, required = true)]
    pub title: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = content_schema)]
    pub content: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Status, required = true)]
    pub status: Option<Option<Status>>,
}

/// `PATCH /todo/{id}`: only the fields present change; at least one must be, and no other.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1, example = json!({"status": "DONE"}))]
pub struct PatchTodo {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = title_schema)]
    pub title: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = content_schema)]
    pub content: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Status, required = false)]
    pub status: Option<Option<Status>>,
}

/// A validated new item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTodo {
    pub title: String,
    pub content: String,
    pub status: Status,
}

/// A validated set of changes; `None` leaves the field as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    pub title: Option<String>,
    pub content: Option<String>,
    pub status: Option<Status>,
}

/// A request body that breaks a rule; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn valid_title(title: Option<Option<String>>) -> Result<String, Invalid> {
    let title = not_null(title, "title")?.ok_or_else(|| Invalid("title is required".into()))?;
    let title = title.trim();
    if title.is_empty() {
        return Err(Invalid("title must not be empty".into()));
    }
    if title.contains('\0') {
        return Err(Invalid("title must not contain the NUL character".into()));
    }
    let chars = title.chars().count();
    if chars > MAX_TITLE_CHARS {
        return Err(Invalid(format!(
            "title must be at most {MAX_TITLE_CHARS} characters, got {chars}"
        )));
    }
    Ok(title.to_string())
}

fn valid_content(content: Option<Option<String>>) -> Result<String, Invalid> {
    let content = not_null(content, "content")?.unwrap_or_default();
    if content.contains('\0') {
        return Err(Invalid("content must not contain the NUL character".into()));
    }
    let chars = content.chars().count();
    if chars > MAX_CONTENT_CHARS {
        return Err(Invalid(format!(
            "content must be at most {MAX_CONTENT_CHARS} characters, got {chars}"
        )));
    }
    Ok(content)
}

fn required_status(status: Option<Option<Status>>) -> Result<Status, Invalid> {
    not_null(status, "status")?.ok_or_else(|| Invalid("status is required".into()))
}

impl CreateTodo {
    pub fn validate(self) -> Result<NewTodo, Invalid> {
        Ok(NewTodo {
            title: valid_title(self.title)?,
            content: valid_content(self.content)?,
            status: not_null(self.status, "status")?.unwrap_or(Status::Todo),
        })
    }
}

impl ReplaceTodo {
    pub fn validate(self) -> Result<(i64, NewTodo), Invalid> {
        let id = not_null(self.id, "id")?.ok_or_else(|| Invalid("id is required".into()))?;
        let id = valid_id(id.integer("id")?)?;
        Ok((
            id,
            NewTodo {
                title: valid_title(self.title)?,
                content: valid_content(self.content)?,
                status: required_status(self.status)?,
            },
        ))
    }
}

impl ReplaceTodoAt {
    /// Checks the body against the id the path addresses.
    pub fn validate(self, path_id: i64) -> Result<NewTodo, Invalid> {
        if let Some(body) = not_null(self.id, "id")?
            && body.integer("id")? != path_id
        {
            let body = &body.0;
            return Err(Invalid(format!(
                "id in the body ({body}) does not match the id in the path ({path_id})"
            )));
        }
        Ok(NewTodo {
            title: valid_title(self.title)?,
            content: valid_content(self.content)?,
            status: required_status(self.status)?,
        })
    }
}

impl PatchTodo {
    pub fn validate(self) -> Result<Changes, Invalid> {
        if self.title.is_none() && self.content.is_none() && self.status.is_none() {
            return Err(Invalid(
                "the body must set at least one of title, content, status".into(),
            ));
        }
        Ok(Changes {
            title: match self.title {
                None => None,
                title => Some(valid_title(title)?),
            },
            content: match self.content {
                None => None,
                content => Some(valid_content(content)?),
            },
            status: not_null(self.status, "status")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp(1_527_163_200).to_string(), "2018-05-24T12:00:00Z");
        let json = serde_json::to_string(&Timestamp(1_527_163_200)).unwrap();
        assert_eq!(json, "\"2018-05-24T12:00:00Z\"");
        assert_eq!(
            Timestamp(253_402_300_799).to_string(),
            "9999-12-31T23:59:59Z"
        );
        assert!(serde_json::to_string(&Timestamp(253_402_300_800)).is_err());
        assert!(serde_json::to_string(&Timestamp(-62_167_219_201)).is_err());
    }

    #[test]
    fn the_fast_json_writer_matches_serde() {
        let texts = [
            "",
            "plain",
            "quote \" and backslash \\ and slash /",
            "control \u{0} \u{1} \u{1f} \n \r \t \u{7f}",
            "</script><script>alert(1)</script>",
            "日本語と한국어 and emoji 🚢",
        ];
        for (i, text) in texts.iter().enumerate() {
            for status in Status::ALL {
                let item = TodoRef {
                    id: i as i64 + 1,
                    title: text,
                    content: texts[texts.len() - 1 - i],
                    status,
                    created: Timestamp(1_527_163_200),
                    updated: Timestamp(1_700_000_000 + i as i64),
                };
                let mut fast = Vec::new();
                item.write_json(&mut fast).unwrap();
                assert_eq!(
                    String::from_utf8(fast).unwrap(),
                    serde_json::to_string(&item).unwrap()
                );
            }
        }
        let bad = TodoRef {
            id: 1,
            title: "t",
            content: "c",
            status: Status::Done,
            created: Timestamp(i64::MAX),
            updated: Timestamp(0),
        };
        assert!(bad.write_json(&mut Vec::new()).is_err());
    }

    #[test]
    fn status_round_trips_and_rejects_unknown() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>(), Ok(status));
        }
        assert_eq!(
            "todo".parse::<Status>().unwrap_err().to_string(),
            "status must be one of TODO, PROGRESS, DONE; got \"todo\""
        );
    }

    #[test]
    fn titles_are_trimmed_and_bounded_in_characters() {
        let ok = |t: &str| valid_title(Some(Some(t.to_string())));
        assert_eq!(ok("  tidy  ").unwrap(), "tidy");
        assert!(ok("   ").is_err());
        assert!(valid_title(None).is_err());
        assert_eq!(
            valid_title(Some(None)).unwrap_err().0,
            "title must not be null"
        );
        // 188 multi-byte characters fit: the limit is characters, not bytes.
        assert!(ok(&"가".repeat(188)).is_ok());
        let err = ok(&"a".repeat(189)).unwrap_err();
        assert_eq!(err.0, "title must be at most 188 characters, got 189");
    }

    #[test]
    fn replace_checks_the_id() {
        let fields = || (Some(Some("t".to_string())), None, Some(Some(Status::Done)));
        let by_body = |id| {
            let (title, content, status) = fields();
            ReplaceTodo {
                id,
                title,
                content,
                status,
            }
            .validate()
        };
        let n = |n: i64| Some(Some(Number::from(n)));
        assert_eq!(by_body(n(3)).unwrap().0, 3);
        let seven: serde_json::Number = serde_json::from_str("7.0").unwrap();
        assert_eq!(by_body(Some(Some(Number(seven)))).unwrap().0, 7);
        let half: serde_json::Number = serde_json::from_str("7.5").unwrap();
        assert!(by_body(Some(Some(Number(half)))).is_err());
        assert!(by_body(None).is_err());
        assert!(by_body(Some(None)).is_err());
        assert!(by_body(n(0)).is_err());
        assert!(by_body(n(MAX_ID + 1)).is_err());
        let at = |id, path| {
            let (title, content, status) = fields();
            ReplaceTodoAt {
                id,
                title,
                content,
                status,
            }
            .validate(path)
        };
        assert!(at(None, 4).is_ok());
        assert!(at(n(4), 4).is_ok());
        assert!(at(n(3), 4).is_err());
    }

    #[test]
    fn the_whitespace_class_is_exactly_what_trim_removes() {
        let class = regex::Regex::new(&format!("^[{WHITESPACE_CLASS}]$")).unwrap();
        for c in (0..=0x10_FFFF).filter_map(char::from_u32) {
            let mut buf = [0; 4];
            assert_eq!(
                class.is_match(c.encode_utf8(&mut buf)),
                c.is_whitespace(),
                "U+{:04X}",
                c as u32
            );
        }
    }

    fn title_matches_pattern(title: &str) {
        let pattern = regex::Regex::new(&title_pattern()).unwrap();
        let accepted = valid_title(Some(Some(title.to_string()))).is_ok();
        assert_eq!(pattern.is_match(title), accepted, "{title:?}");
    }

    #[test]
    fn the_documented_title_pattern_accepts_exactly_the_valid_titles() {
        let long = "x".repeat(MAX_TITLE_CHARS);
        for title in [
            "",
            " ",
            "a",
            " a ",
            "\0",
            "a\0",
            " \0 ",
            "a\0b",
            "\u{3000}a\u{85}",
            "\u{feff}",
            "\u{1c}",
            "a\n",
            "\n",
            &long,
            &format!("  {long}\t"),
            &format!("{long}y"),
            &format!("a{}b", " ".repeat(186)),
            &format!("a{}b", " ".repeat(187)),
            &"가".repeat(MAX_TITLE_CHARS),
        ] {
            title_matches_pattern(title);
        }
    }

    proptest::proptest! {
        #[test]
        fn the_title_pattern_and_validation_agree(
            title in "[ \\t\\u{85}\\u{3000}\\u{feff}\\u{1c}]{0,3}[ax가🚢 \\u{2000}\\u{0}]{0,190}[ \\t\\n\\u{a0}\\u{feff}]{0,3}"
        ) {
            title_matches_pattern(&title);
        }
    }

    #[test]
    fn an_empty_patch_is_rejected() {
        assert!(PatchTodo::default().validate().is_err());
    }
}
