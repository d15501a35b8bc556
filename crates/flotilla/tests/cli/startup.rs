//! Configuration errors and startup failures: one line, the right exit code.

use crate::helpers::run_to_end;

fn one_line_error(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let output = run_to_end(args, env);
    assert_eq!(
        output.status.code(),
        Some(2),
        "exit code for {args:?} {env:?}"
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(needle),
        "{stderr:?} should mention {needle:?}"
    );
}

#[test]
fn bad_settings_stop_startup_with_one_line_naming_them() {
    one_line_error(&["todo-api"], &[("TODO_BIND", "8080")], "TODO_BIND");
    one_line_error(&["todo-api", "--bind", "nowhere"], &[], "--bind");
    one_line_error(
        &["todo-api"],
        &[("TODO_MASTER_URL", "oracle://db")],
        "TODO_MASTER_URL",
    );
    one_line_error(
        &["todo-api"],
        &[
            ("TODO_MASTER_URL", "sqlite:a.db"),
            ("TODO_PRIMARY_URL", "sqlite:b.db"),
        ],
        "TODO_PRIMARY_URL and TODO_MASTER_URL",
    );
    one_line_error(
        &["todo-api"],
        &[("TODO_DB_TIMEOUT", "later")],
        "TODO_DB_TIMEOUT",
    );
    one_line_error(&["echo"], &[("LOG_FORMAT", "xml")], "LOG_FORMAT");
    one_line_error(
        &["echo"],
        &[("FLOTILLA_DRAIN_TIMEOUT", "-1")],
        "FLOTILLA_DRAIN_TIMEOUT",
    );
    one_line_error(&["echo", "--log-level", "loud"], &[], "--log-level");
}

#[test]
fn a_port_in_use_is_reported_and_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = run_to_end(&["echo", "--bind", &addr], &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn an_unopenable_database_is_reported_and_exits_1() {
    let file = tempfile::NamedTempFile::new().unwrap();
    // A path under a regular file cannot be created.
    let url = format!("sqlite://{}/todo.db", file.path().display());
    let output = run_to_end(
        &["todo-api", "--bind", "127.0.0.1:0"],
        &[("TODO_PRIMARY_URL", &url)],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("cannot create directory"), "{stderr}");
}

#[test]
fn help_lists_every_setting_with_its_env_var() {
    let output = run_to_end(&["todo-api", "--help"], &[]);
    assert!(output.status.success());
    // clap wraps long lines; compare with whitespace collapsed.
    let help = String::from_utf8(output.stdout)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for needle in [
        "--bind <HOST:PORT>",
        "[env: TODO_BIND]",
        "[default: 0.0.0.0:8080]",
        "[env: TODO_PRIMARY_URL, TODO_MASTER_URL]",
        "[env: TODO_REPLICA_URLS, TODO_SLAVE_URL]",
        "[env: TODO_SEED]",
        "[env: FLOTILLA_DRAIN_TIMEOUT]",
        "[env: LOG_FORMAT]",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
}

#[test]
fn no_subcommand_prints_usage() {
    let output = run_to_end(&[], &[]);
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr).to_string()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("todo-api") && text.contains("echo"), "{text}");
}

#[test]
fn the_readme_documents_every_setting() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let all = [
        platform::cli::COMMON_SETTINGS,
        todo_api::SETTINGS,
        echo::SETTINGS,
        gateway::SETTINGS,
        stack::SETTINGS,
        registry::SETTINGS,
        traces::SETTINGS,
        dashboard::SETTINGS,
        video_storage::SETTINGS,
        video_streaming::SETTINGS,
        &[platform::health::HEALTHCHECK_URL],
    ];
    for setting in all.iter().flat_map(|s| s.iter()) {
        assert!(
            readme.contains(&format!("`{}`", setting.env)),
            "README lacks {}",
            setting.env
        );
        if let Some(flag) = setting.flag {
            assert!(
                readme.contains(&format!("`--{flag}`")),
                "README lacks --{flag}"
            );
        }
        for alias in setting.aliases {
            assert!(
                readme.contains(&format!("`{alias}`")),
                "README lacks {alias}"
            );
        }
    }
}
