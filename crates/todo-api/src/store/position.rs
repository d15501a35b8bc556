//! Replication positions: MariaDB GTID lists such as `0-1-42` or `0-1-42,1-2-7`
//! (domain-server-sequence). A replica has caught up with a write when, in every replication
//! domain of the write's position, it has applied at least that sequence number.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    /// domain -> (server id, sequence number)
    domains: BTreeMap<u32, (u32, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a GTID position (expected DOMAIN-SERVER-SEQUENCE[,...], such as 0-1-42): {0:?}")]
pub struct BadPosition(pub String);

impl FromStr for Position {
    type Err = BadPosition;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadPosition(text.chars().take(100).collect());
        let mut domains = BTreeMap::new();
        for gtid in text.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            let mut parts = gtid.split('-');
            let (Some(domain), Some(server), Some(seq), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            let domain: u32 = domain.parse().map_err(|_| bad())?;
            let entry = (
                server.parse().map_err(|_| bad())?,
                seq.parse().map_err(|_| bad())?,
            );
            domains.insert(domain, entry);
        }
        Ok(Position { domains })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (domain, (server, seq))) in self.domains.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{domain}-{server}-{seq}")?;
        }
        Ok(())
    }
}

impl Position {
    /// Whether everything in `other` has been applied at `self`.
    pub fn covers(&self, other: &Position) -> bool {
        other.domains.iter().all(|(domain, (_, seq))| {
            self.domains
                .get(domain)
                .is_some_and(|(_, have)| have >= seq)
        })
    }

    /// The later of the two, domain by domain.
    pub fn merge(&mut self, other: &Position) {
        for (domain, entry) in &other.domains {
            let slot = self.domains.entry(*domain).or_insert(*entry);
            if entry.1 > slot.1 {
                *slot = *entry;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Position {
        text.parse().unwrap()
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(p("0-1-42").to_string(), "0-1-42");
        assert_eq!(p(" 1-2-7 , 0-1-42 ").to_string(), "0-1-42,1-2-7");
        assert!(p("").is_empty());
        for bad in ["0-1", "a-1-2", "0-1-2-3", "0-1-x", "0--1"] {
            assert!(bad.parse::<Position>().is_err(), "{bad}");
        }
    }

    #[test]
    fn covers_compares_sequences_per_domain() {
        assert!(p("0-1-42").covers(&p("0-1-42")));
        assert!(p("0-1-43").covers(&p("0-1-42")));
        assert!(!p("0-1-41").covers(&p("0-1-42")));
        assert!(
            !p("0-1-99").covers(&p("0-1-1,1-1-1")),
            "a missing domain is not applied"
        );
        assert!(p("0-1-1").covers(&Position::default()));
        // The server id does not order transactions; the sequence number does.
        assert!(p("0-2-50").covers(&p("0-1-42")));
    }

    #[test]
    fn merge_keeps_the_latest_per_domain() {
        let mut a = p("0-1-10,1-1-5");
        a.merge(&p("0-1-8,1-2-9,2-1-1"));
        assert_eq!(a.to_string(), "0-1-10,1-2-9,2-1-1");
    }
}
