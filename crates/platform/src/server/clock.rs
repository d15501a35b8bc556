//! A cheap clock for stamps that need only be about right (when a connection began to wait,
//! when a request last made progress): `quanta`'s recent time, kept current by its upkeep
//! thread, read with one atomic load.

use std::sync::OnceLock;
use std::time::Duration;

/// How often the recent time is brought up to date.
const UPKEEP: Duration = Duration::from_millis(50);

/// Milliseconds since the clock was first read, as of its last update (at most [`UPKEEP`] old).
pub(crate) fn millis() -> u64 {
    static START: OnceLock<(quanta::Instant, Option<quanta::Handle>)> = OnceLock::new();
    let (start, _upkeep) = START.get_or_init(|| {
        // Without the upkeep thread, `recent()` reads the clock itself: correct, only dearer.
        let upkeep = quanta::Upkeep::new(UPKEEP).start().ok();
        (quanta::Instant::now(), upkeep)
    });
    quanta::Instant::recent()
        .saturating_duration_since(*start)
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recent_time_moves_on() {
        let before = millis();
        std::thread::sleep(Duration::from_millis(300));
        let after = millis();
        assert!(after >= before + 200, "{before} -> {after}");
    }
}
