//! The status table, redrawn on a terminal whenever something changes.

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
            "{:<16} {:>7} {:>8} {:<22} {:<11} {:>8}\n",
            c[0], c[1], c[2], c[3], c[4], c[5]
        )
    };
    let header = ["SERVICE", "REPLICA", "PID", "ADDRESS", "STATE", "RESTARTS"].map(String::from);
    std::iter::once(header)
        .chain(rows)
        .map(|c| line(&c))
        .collect()
}

/// On a terminal, redraws the table whenever something changes (without one, the supervisor
/// prints a line per change itself).
pub(crate) async fn run(supervisor: Supervisor, port: u16) {
    if !std::io::stdout().is_terminal() {
        return;
    }
    let mut changes = supervisor.changes();
    while changes.changed().await.is_ok() {
        // Let a burst of changes settle into one redraw.
        tokio::time::sleep(Duration::from_millis(100)).await;
        changes.borrow_and_update();
        println!(
            "\n{}front gateway: http://127.0.0.1:{port}\n",
            render(&supervisor.table())
        );
    }
}
