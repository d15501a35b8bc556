//! The OpenAPI document is the contract: schemathesis (pinned, installed by `scripts/setup.sh`)
//! generates requests from `/openapi.json` in all its phases (examples, coverage, fuzzing,
//! stateful sequences) and runs all its checks against the answers: no 5xx, every status,
//! header and body as documented, schema-valid input accepted, invalid input refused, created
//! items reachable, 405 with `Allow` for undeclared methods. Runs against whichever database
//! the suite uses (SQLite, or MariaDB with a replica).
//!
//! The settings and the one generator hook live in `tests/schemathesis/`; the seed is fixed so
//! a failure reproduces (change it locally to explore further).

use std::path::PathBuf;
use std::time::Duration;

use crate::helpers::spawn_app;

fn schemathesis() -> PathBuf {
    let clients = std::env::var_os("FLOTILLA_CLIENTS_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/clients"),
        PathBuf::from,
    );
    let st = clients.join("st/bin/st");
    assert!(
        st.exists(),
        "schemathesis is not installed at {}: run scripts/setup.sh",
        st.display()
    );
    st
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_difference_between_the_document_and_the_api() {
    let st = schemathesis();
    let app = spawn_app().await;
    app.wait_ready().await;
    let settings = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis");
    let run = tokio::process::Command::new(st)
        .env("PYTHONPATH", &settings)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .arg("--config-file")
        .arg(settings.join("schemathesis.toml"))
        .args([
            "run",
            "--no-color",
            "--seed",
            "20261207",
            "--max-examples",
            "50",
        ])
        .arg(app.url("/openapi.json"))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("schemathesis finished within 10 minutes")
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // It really ran: every phase, and a few hundred cases at least.
    for phase in ["Coverage", "Fuzzing", "Stateful"] {
        assert!(
            report.contains(&format!("✅ {phase}")),
            "{phase}:\n{report}"
        );
    }
    assert!(report.contains("No issues found"), "{report}");
}
