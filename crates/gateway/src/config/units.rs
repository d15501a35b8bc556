//! The units a config is written in: sizes and durations as nginx writes them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size written as nginx does (`512k`, `10m`, `1g`) or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    fn parse(text: &str) -> Option<u64> {
        let text = text.trim().to_ascii_lowercase();
        let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            Some((at, _)) => text.split_at(at),
            None => (text.as_str(), ""),
        };
        let multiplier: u64 = match unit {
            "" => 1,
            "k" => 1 << 10,
            "m" => 1 << 20,
            "g" => 1 << 30,
            _ => return None,
        };
        digits.parse::<u64>().ok()?.checked_mul(multiplier)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            n if n != 0 && n.is_multiple_of(1 << 30) => write!(f, "{}g", n >> 30),
            n if n != 0 && n.is_multiple_of(1 << 20) => write!(f, "{}m", n >> 20),
            n if n != 0 && n.is_multiple_of(1 << 10) => write!(f, "{}k", n >> 10),
            n => write!(f, "{n}"),
        }
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        let expected = "a size such as 512k, 10m, 1g or a number of bytes";
        match Raw::deserialize(deserializer).map_err(|_| serde::de::Error::custom(expected))? {
            Raw::Bytes(n) => Ok(Size(n)),
            Raw::Text(text) => Size::parse(&text).map(Size).ok_or_else(|| {
                serde::de::Error::custom(format!("expected {expected}, got {text:?}"))
            }),
        }
    }
}

/// A duration written as nginx does (`10s`, `500ms`, `2m`) or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(secs: u64) -> Self {
        Dur(Duration::from_secs(secs))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)
            .map_err(|_| serde::de::Error::custom("expected a duration such as 10s or 500ms"))?
        {
            Raw::Seconds(secs) => Ok(Dur::secs(secs)),
            Raw::Text(text) => platform::config::parse_duration(&text)
                .map(Dur)
                .map_err(|e| serde::de::Error::custom(format!("expected {e}, got {text:?}"))),
        }
    }
}
