//! Metrics that every request updates, kept per thread and summed when `/metrics` is scraped.
//!
//! The `metrics` facade's Prometheus recorder keeps one set of atomics per series, which every
//! thread writes: on a server with several worker threads, each request then moves those cache
//! lines between cores (a counter, its recency stamp, a gauge updated twice, a histogram sample
//! queue). Here each series has one cache line per thread slot; a thread only writes its own, and
//! the scrape, which is rare, adds the slots up. Everything else goes through the facade.
//!
//! Series are registered once (by name and labels) and then updated through their handle; making
//! the same series twice gives handles to the same values. Rendering follows the Prometheus text
//! format; `telemetry` renders them after the facade's series.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Slots per series; threads beyond this many share slots (still correct, only slower).
const SLOTS: usize = 8;

/// Upper bounds of the latency buckets, in seconds: 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The same bounds in nanoseconds, for comparing without floating point.
const BOUNDS_NANOS: [u64; 14] = {
    let mut nanos = [0u64; 14];
    let mut i = 0;
    while i < 14 {
        nanos[i] = (LATENCY_BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    nanos
};

/// One thread slot's share of a series, on a cache line of its own.
#[repr(align(128))]
#[derive(Default)]
struct Line<T>(T);

fn slot() -> usize {
    crate::per_thread::thread_number() % SLOTS
}

/// A count that only goes up. One made with `default()` is not rendered: a count of the
/// caller's own, cheap to update from every thread.
#[derive(Clone, Default)]
pub struct Counter(Arc<[Line<AtomicU64>; SLOTS]>);

impl Counter {
    pub fn increment(&self, by: u64) {
        self.0[slot()].0.fetch_add(by, Ordering::Relaxed);
    }

    /// The sum over every thread: each slot read once, not a snapshot of all at one instant.
    pub fn value(&self) -> u64 {
        self.0.iter().map(|l| l.0.load(Ordering::Relaxed)).sum()
    }
}

/// A level that goes up and down (requests in flight). One made with `default()` is not
/// rendered.
#[derive(Clone, Default)]
pub struct Gauge(Arc<[Line<AtomicI64>; SLOTS]>);

impl Gauge {
    pub fn increment(&self) {
        self.0[slot()].0.fetch_add(1, Ordering::Relaxed);
    }

    /// Any thread may take back what another added: only the sum has a meaning.
    pub fn decrement(&self) {
        self.0[slot()].0.fetch_sub(1, Ordering::Relaxed);
    }

    /// The sum over every thread.
    pub fn value(&self) -> i64 {
        self.0.iter().map(|l| l.0.load(Ordering::Relaxed)).sum()
    }
}

/// Durations in [`LATENCY_BUCKETS`]: per slot, a count per bucket (the last for longer ones)
/// and the sum in nanoseconds, 16 words to the cache line.
#[derive(Clone)]
pub struct Histogram(Arc<[Line<[AtomicU64; 16]>; SLOTS]>);

/// Index of the sum among a slot's words.
const SUM: usize = 15;

impl Histogram {
    pub fn record(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NANOS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(BOUNDS_NANOS.len());
        let words = &self.0[slot()].0;
        words[bucket].fetch_add(1, Ordering::Relaxed);
        words[SUM].fetch_add(nanos, Ordering::Relaxed);
    }

    /// Counts per bucket (not cumulative) and the sum in nanoseconds.
    fn totals(&self) -> ([u64; 15], u64) {
        let mut counts = [0u64; 15];
        let mut sum = 0u64;
        for line in self.0.iter() {
            for (count, word) in counts.iter_mut().zip(&line.0) {
                *count += word.load(Ordering::Relaxed);
            }
            sum = sum.wrapping_add(line.0[SUM].load(Ordering::Relaxed));
        }
        (counts, sum)
    }
}

#[derive(Clone)]
enum Series {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

struct Family {
    help: &'static str,
    /// By label pairs as rendered (`a="x",b="y"`).
    series: BTreeMap<String, Series>,
}

static REGISTRY: Mutex<BTreeMap<&'static str, Family>> = Mutex::new(BTreeMap::new());

/// The series `name{labels}`, made with `make` the first time.
fn series(
    name: &'static str,
    help: &'static str,
    labels: &[(&str, &str)],
    make: impl FnOnce() -> Series,
) -> Series {
    let mut rendered = String::new();
    for (i, (key, value)) in labels.iter().enumerate() {
        if i > 0 {
            rendered.push(',');
        }
        let _ = write!(rendered, "{key}=\"");
        for c in value.chars() {
            match c {
                '\\' => rendered.push_str("\\\\"),
                '"' => rendered.push_str("\\\""),
                '\n' => rendered.push_str("\\n"),
                c => rendered.push(c),
            }
        }
        rendered.push('"');
    }
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let family = registry.entry(name).or_insert_with(|| Family {
        help,
        series: BTreeMap::new(),
    });
    family.series.entry(rendered).or_insert_with(make).clone()
}

/// The counter `name{labels}`.
///
/// # Panics
/// If `name` was registered as another kind of metric: a programming error.
pub fn counter(name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Counter {
    match series(name, help, labels, || {
        Series::Counter(Counter(Arc::new(Default::default())))
    }) {
        Series::Counter(counter) => counter,
        _ => panic!("{name} is not a counter"),
    }
}

/// The gauge `name{labels}`.
///
/// # Panics
/// If `name` was registered as another kind of metric.
pub fn gauge(name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Gauge {
    match series(name, help, labels, || {
        Series::Gauge(Gauge(Arc::new(Default::default())))
    }) {
        Series::Gauge(gauge) => gauge,
        _ => panic!("{name} is not a gauge"),
    }
}

/// The latency histogram `name{labels}`, in seconds.
///
/// # Panics
/// If `name` was registered as another kind of metric.
pub fn histogram(name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Histogram {
    match series(name, help, labels, || {
        Series::Histogram(Histogram(Arc::new(Default::default())))
    }) {
        Series::Histogram(histogram) => histogram,
        _ => panic!("{name} is not a histogram"),
    }
}

/// Appends every series in the Prometheus text format.
pub fn render(out: &mut String) {
    let registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    for (name, family) in registry.iter() {
        let Some(first) = family.series.values().next() else {
            continue;
        };
        let kind = match first {
            Series::Counter(_) => "counter",
            Series::Gauge(_) => "gauge",
            Series::Histogram(_) => "histogram",
        };
        let _ = writeln!(out, "# HELP {name} {}", family.help);
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, series) in &family.series {
            let braced = |extra: &str| match (labels.is_empty(), extra.is_empty()) {
                (true, true) => String::new(),
                (true, false) => format!("{{{extra}}}"),
                (false, true) => format!("{{{labels}}}"),
                (false, false) => format!("{{{labels},{extra}}}"),
            };
            match series {
                Series::Counter(counter) => {
                    let _ = writeln!(out, "{name}{} {}", braced(""), counter.value());
                }
                Series::Gauge(gauge) => {
                    let _ = writeln!(out, "{name}{} {}", braced(""), gauge.value());
                }
                Series::Histogram(histogram) => {
                    let (counts, sum) = histogram.totals();
                    let mut cumulative = 0;
                    for (i, count) in counts.iter().enumerate() {
                        cumulative += count;
                        let le = LATENCY_BUCKETS
                            .get(i)
                            .map_or_else(|| "+Inf".to_string(), f64::to_string);
                        let le = format!("le=\"{le}\"");
                        let _ = writeln!(out, "{name}_bucket{} {cumulative}", braced(&le));
                    }
                    let seconds = sum as f64 / 1e9;
                    let _ = writeln!(out, "{name}_sum{} {seconds}", braced(""));
                    let _ = writeln!(out, "{name}_count{} {cumulative}", braced(""));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered() -> String {
        let mut out = String::new();
        render(&mut out);
        out
    }

    #[test]
    fn threads_add_up_and_the_same_series_is_one_series() {
        let made = counter("hot_test_total", "Test counter", &[("kind", "a\"b")]);
        std::thread::scope(|scope| {
            for _ in 0..SLOTS + 3 {
                scope.spawn(|| {
                    let mine = counter("hot_test_total", "Test counter", &[("kind", "a\"b")]);
                    for _ in 0..1000 {
                        mine.increment(1);
                    }
                });
            }
        });
        made.increment(5);
        let out = rendered();
        assert!(out.contains("# TYPE hot_test_total counter\n"), "{out}");
        assert!(
            out.contains("hot_test_total{kind=\"a\\\"b\"} 11005\n"),
            "{out}"
        );
    }

    #[test]
    fn gauges_sum_what_any_thread_added_and_took_back() {
        let level = gauge("hot_test_level", "Test gauge", &[]);
        level.increment();
        level.increment();
        std::thread::spawn({
            let level = level.clone();
            move || level.decrement()
        })
        .join()
        .unwrap();
        assert!(rendered().contains("\nhot_test_level 1\n"));
    }

    #[test]
    fn histograms_have_cumulative_buckets_a_sum_and_a_count() {
        let latency = histogram("hot_test_seconds", "Test histogram", &[("route", "/x")]);
        latency.record(Duration::from_micros(500)); // on the first bound: counted in it
        latency.record(Duration::from_millis(3));
        latency.record(Duration::from_secs(60));
        let out = rendered();
        for line in [
            "hot_test_seconds_bucket{route=\"/x\",le=\"0.0005\"} 1\n",
            "hot_test_seconds_bucket{route=\"/x\",le=\"0.0025\"} 1\n",
            "hot_test_seconds_bucket{route=\"/x\",le=\"0.005\"} 2\n",
            "hot_test_seconds_bucket{route=\"/x\",le=\"10\"} 2\n",
            "hot_test_seconds_bucket{route=\"/x\",le=\"+Inf\"} 3\n",
            "hot_test_seconds_sum{route=\"/x\"} 60.0035\n",
            "hot_test_seconds_count{route=\"/x\"} 3\n",
            "# TYPE hot_test_seconds histogram\n",
        ] {
            assert!(out.contains(line), "{line} missing from\n{out}");
        }
    }

    #[test]
    #[should_panic(expected = "is not a gauge")]
    fn one_name_is_one_kind() {
        counter("hot_test_kind", "Test", &[]);
        gauge("hot_test_kind", "Test", &[]);
    }
}
