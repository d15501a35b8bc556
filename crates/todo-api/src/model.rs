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

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = OffsetDateTime::from_unix_timestamp(self.0).map_err(|_| fmt::Error)?;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A TODO item as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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

/// `POST /todo`: a new item; it starts in TODO.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateTodo {
    /// 1 to 188 characters, not only spaces.
    #[schema(required = true)]
    pub title: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
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
            status: Status::Todo,
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
