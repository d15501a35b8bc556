//! The status table: redrawn on a terminal whenever something changes; one plain line per change
//! otherwise (for logs and CI).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use crate::supervisor::{ReplicaStatus, Supervisor};

pub(crate) fn render(rows: &[ReplicaStatus]) -> String {
    table(rows.iter().map(|row| {
        [
            row.service.name().to_string(),
            row.replica.to_string(),
            row.pid.map_or("-".to_string(), |p| p.to_string()),
            row.address.clone(),
            row.state.to_string(),
            row.restarts.to_string(),
        ]
    }))
}

/// SERVICE, REPLICA, PID, ADDRESS, STATE, RESTARTS, aligned.
pub(crate) fn table(rows: impl Iterator<Item = [String; 6]>) -> String {
    let line = |c: &[String; 6]| {
        format!(
            "{:<14} {:>7} {:>8} {:<22} {:<11} {:>8}\n",
            c[0], c[1], c[2], c[3], c[4], c[5]
        )
    };
    let header = ["SERVICE", "REPLICA", "PID", "ADDRESS", "STATE", "RESTARTS"].map(String::from);
    std::iter::once(header)
        .chain(rows)
        .map(|c| line(&c))
        .collect()
}

pub(crate) async fn run(supervisor: Supervisor, port: u16) {
    let terminal = std::io::stdout().is_terminal();
    let mut changes = supervisor.changes();
    let mut last: HashMap<u64, (Option<u32>, &'static str, u32)> = HashMap::new();
    loop {
        if changes.changed().await.is_err() {
            return;
        }
        // Let a burst of changes settle into one redraw.
        tokio::time::sleep(Duration::from_millis(100)).await;
        changes.borrow_and_update();
        let rows = supervisor.table();
        if terminal {
            println!(
                "\n{}front gateway: http://127.0.0.1:{port}\n",
                render(&rows)
            );
            continue;
        }
        for row in &rows {
            let now = (row.pid, row.state, row.restarts);
            if last.get(&row.id) != Some(&now) {
                println!(
                    "flotilla up: {}.{} {} pid={} address={} restarts={}",
                    row.service.name(),
                    row.replica,
                    row.state,
                    row.pid.map_or("-".to_string(), |p| p.to_string()),
                    row.address,
                    row.restarts
                );
            }
        }
        let gone = last
            .keys()
            .filter(|id| !rows.iter().any(|r| r.id == **id))
            .count();
        if gone > 0 {
            println!("flotilla up: {gone} replica(s) stopped and removed");
        }
        last = rows
            .iter()
            .map(|r| (r.id, (r.pid, r.state, r.restarts)))
            .collect();
    }
}
