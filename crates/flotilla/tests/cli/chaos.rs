//! Chaos under load: every API replica frozen for 15 s while people keep loading the board
//! through the front gateway. The board must answer every time, within the call timeout, from
//! its last good copy; its circuit must open, and close once the API is back; the dashboard
//! must show both.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::up::Up;

/// The board's call timeout under `flotilla up` (TODO_API_TIMEOUT's default).
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The todo-api circuit's tile on the dashboard, as `(state, hosts)`.
fn circuit_tile(client: &reqwest::blocking::Client, dashboard: &str) -> Option<(String, u64)> {
    let view: serde_json::Value = client
        .get(format!("http://{dashboard}/api/tiles"))
        .send()
        .ok()?
        .json()
        .ok()?;
    let tile = view["tiles"].as_array()?.iter().find(|t| {
        t["service"] == "todo-web" && t["kind"] == "circuit" && t["name"] == "todo-api"
    })?;
    Some((tile["state"].as_str()?.to_string(), tile["hosts"].as_u64()?))
}

#[test]
fn the_board_rides_out_a_15_second_api_outage_and_the_dashboard_shows_it() {
    let up = Up::start();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let rows = up.ps();
    let dashboard = rows["dashboard.1"].address.clone();
    let apis: Vec<i32> = rows
        .iter()
        .filter(|(name, _)| name.starts_with("todo-api."))
        .filter_map(|(_, row)| row.pid)
        .collect();
    assert!(!apis.is_empty());
    // The board has been seen once, so it has a copy to fall back on.
    assert_eq!(client.get(up.url("/")).send().unwrap().status(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while circuit_tile(&client, &dashboard).is_none_or(|(state, _)| state != "closed") {
        assert!(
            Instant::now() < deadline,
            "the dashboard never showed the circuit"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Steady load: two readers, each a page every 50 ms, bounded in count and time.
    let stop = Arc::new(AtomicBool::new(false));
    let pages: Arc<Mutex<Vec<(u16, Duration, bool)>>> = Arc::default();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, pages, url) = (stop.clone(), pages.clone(), up.url("/"));
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let deadline = Instant::now() + Duration::from_secs(90);
                for _ in 0..3000 {
                    if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                        break;
                    }
                    let began = Instant::now();
                    let (status, stale) = match client.get(&url).send() {
                        Ok(answer) => {
                            let status = answer.status().as_u16();
                            let page = answer.text().unwrap_or_default();
                            (status, page.contains("showing the board as it was"))
                        }
                        Err(_) => (0, false),
                    };
                    pages.lock().unwrap().push((status, began.elapsed(), stale));
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));

    // Every API replica stops answering (frozen, as a hung or partitioned process is).
    for pid in &apis {
        kill(Pid::from_raw(*pid), Signal::SIGSTOP).unwrap();
    }
    let frozen = Instant::now();
    let mut seen_open = None;
    while frozen.elapsed() < Duration::from_secs(15) {
        if seen_open.is_none()
            && circuit_tile(&client, &dashboard).is_some_and(|(state, _)| state == "open")
        {
            seen_open = Some(frozen.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    for pid in &apis {
        kill(Pid::from_raw(*pid), Signal::SIGCONT).unwrap();
    }
    let back = Instant::now();
    let mut closed_after = None;
    while back.elapsed() < Duration::from_secs(30) {
        if circuit_tile(&client, &dashboard).is_some_and(|(state, _)| state == "closed") {
            closed_after = Some(back.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }

    let pages = pages.lock().unwrap();
    let failed: Vec<_> = pages
        .iter()
        .filter(|(status, _, _)| *status != 200)
        .collect();
    let slowest = pages.iter().map(|(_, took, _)| *took).max().unwrap();
    let stale = pages.iter().filter(|(_, _, stale)| *stale).count();
    eprintln!(
        "{} pages, slowest {slowest:?}, {stale} from the last good copy; open seen after {seen_open:?}, closed {closed_after:?} after the API came back",
        pages.len()
    );
    assert!(failed.is_empty(), "pages that were not 200: {failed:?}");
    // The call timeout, plus the page's own work and this machine's noise.
    assert!(
        slowest < CALL_TIMEOUT + Duration::from_millis(1500),
        "a page took {slowest:?}"
    );
    assert!(
        stale > 10,
        "only {stale} pages came from the last good copy"
    );
    assert!(
        seen_open.is_some(),
        "the dashboard never showed the circuit open"
    );
    assert!(
        closed_after.is_some(),
        "the dashboard did not show the circuit closed within 30 s of the API's return"
    );
}
