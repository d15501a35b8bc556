//! The TODO item, its status, and the request bodies with their validation rules.
//!
//! Validation happens here, before the store is touched, so a rejected request writes nothing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// Longest title, in characters: the original schema's `VARCHAR(188)`.
pub const MAX_TITLE_CHARS: usize = 188;
/// Longest content, in bytes: MySQL's `TEXT`.
pub const MAX_CONTENT_BYTES: usize = 65_535;

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

/// `POST /todo`: a new item; it starts in TODO unless `status` says otherwise.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateTodo {
    /// 1 to 188 characters, not only spaces.
    #[schema(required = true)]
    pub title: Option<String>,
    pub content: Option<String>,
    /// The starting column (default TODO).
    pub status: Option<Status>,
}

/// `PUT /todo` and `PUT /todo/{id}`: every field of the item is replaced.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ReplaceTodo {
    /// Required by `PUT /todo` (the original form); optional with `PUT /todo/{id}`, where it
    /// must match the path.
    pub id: Option<i64>,
    #[schema(required = true)]
    pub title: Option<String>,
    /// Missing means empty.
    pub content: Option<String>,
    #[schema(required = true)]
    pub status: Option<Status>,
}

/// `PATCH /todo/{id}`: only the fields present change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTodo {
    pub title: Option<String>,
    pub content: Option<String>,
    pub status: Option<Status>,
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

fn valid_title(title: Option<String>) -> Result<String, Invalid> {
    let title = title.ok_or_else(|| Invalid("title is required".into()))?;
    let title = title.trim();
    if title.is_empty() {
        return Err(Invalid("title must not be empty".into()));
    }
    let chars = title.chars().count();
    if chars > MAX_TITLE_CHARS {
        return Err(Invalid(format!(
            "title must be at most {MAX_TITLE_CHARS} characters, got {chars}"
        )));
    }
    Ok(title.to_string())
}

fn valid_content(content: Option<String>) -> Result<String, Invalid> {
    let content = content.unwrap_or_default();
    if content.len() > MAX_CONTENT_BYTES {
        return Err(Invalid(format!(
            "content must be at most {MAX_CONTENT_BYTES} bytes, got {}",
            content.len()
        )));
    }
    Ok(content)
}

impl CreateTodo {
    pub fn validate(self) -> Result<NewTodo, Invalid> {
        Ok(NewTodo {
            title: valid_title(self.title)?,
            content: valid_content(self.content)?,
            status: self.status.unwrap_or(Status::Todo),
        })
    }
}

impl ReplaceTodo {
    /// Checks the body against the id the request addresses (`None` for `PUT /todo`).
    pub fn validate(self, path_id: Option<i64>) -> Result<(i64, NewTodo), Invalid> {
        let id = match (path_id, self.id) {
            (Some(path), Some(body)) if path != body => {
                return Err(Invalid(format!(
                    "id in the body ({body}) does not match the id in the path ({path})"
                )));
            }
            (Some(id), _) | (None, Some(id)) => id,
            (None, None) => return Err(Invalid("id is required".into())),
        };
        if id < 1 {
            return Err(Invalid(format!("id must be a positive integer, got {id}")));
        }
        let title = valid_title(self.title)?;
        let content = valid_content(self.content)?;
        let status = self
            .status
            .ok_or_else(|| Invalid("status is required".into()))?;
        Ok((
            id,
            NewTodo {
                title,
                content,
                status,
            },
        ))
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
            title: self.title.map(|t| valid_title(Some(t))).transpose()?,
            content: self.content.map(|c| valid_content(Some(c))).transpose()?,
            status: self.status,
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
        let ok = |t: &str| valid_title(Some(t.to_string()));
        assert_eq!(ok("  tidy  ").unwrap(), "tidy");
        assert!(ok("   ").is_err());
        assert!(valid_title(None).is_err());
        // 188 multi-byte characters fit: the limit is characters, not bytes.
        assert!(ok(&"가".repeat(188)).is_ok());
        let err = ok(&"a".repeat(189)).unwrap_err();
        assert_eq!(err.0, "title must be at most 188 characters, got 189");
    }

    #[test]
    fn replace_checks_the_id() {
        let body = |id| ReplaceTodo {
            id,
            title: Some("t".into()),
            content: None,
            status: Some(Status::Done),
        };
        assert_eq!(body(Some(3)).validate(None).unwrap().0, 3);
        assert_eq!(body(None).validate(Some(4)).unwrap().0, 4);
        assert!(body(None).validate(None).is_err());
        assert!(body(Some(3)).validate(Some(4)).is_err());
        assert!(body(Some(0)).validate(None).is_err());
    }

    #[test]
    fn an_empty_patch_is_rejected() {
        assert!(PatchTodo::default().validate().is_err());
    }
}
