//! Settings: the seed's names, and clear errors for what is not used.

use platform::Source;
use video_streaming::Config;

fn config(pairs: &[(&str, &str)]) -> Result<Config, String> {
    Config::from_source(&Source::from_pairs(pairs.iter().copied())).map_err(|e| e.to_string())
}

#[test]
fn the_seeds_settings_work() {
    let c = config(&[
        ("PORT", "3000"),
        ("VIDEO_STORAGE_HOST", "video-storage"),
        ("VIDEO_STORAGE_PORT", "80"),
    ])
    .unwrap();
    assert_eq!(c.bind.to_string(), "0.0.0.0:3000");
    assert_eq!(c.storage_url, "http://video-storage:80");
    assert_eq!(c.catalog, std::path::PathBuf::from("./data/video.db"));
}

#[test]
fn the_seeds_mongodb_settings_say_what_to_use_instead() {
    let error = config(&[
        ("VIDEO_STORAGE_URL", "http://storage:3000"),
        ("DBHOST", "mongodb://db:27017"),
    ])
    .unwrap_err();
    assert!(
        error.contains("DBHOST") && error.contains("VIDEO_DB_URL=sqlite://"),
        "{error}"
    );
    let error = config(&[
        ("VIDEO_STORAGE_URL", "http://storage:3000"),
        ("DBNAME", "video-streaming"),
    ])
    .unwrap_err();
    assert!(error.contains("DBNAME"), "{error}");
}

#[test]
fn bad_settings_name_the_variable() {
    for (pairs, named) in [
        (&[][..], "VIDEO_STORAGE_URL"),
        (
            &[("VIDEO_STORAGE_URL", "storage:3000")][..],
            "VIDEO_STORAGE_URL",
        ),
        (
            &[
                ("VIDEO_STORAGE_URL", "http://s:1"),
                ("VIDEO_DB_URL", "mysql://db/videos"),
            ][..],
            "VIDEO_DB_URL",
        ),
        (
            &[
                ("VIDEO_STORAGE_URL", "http://s:1"),
                ("VIDEO_MAX_UPLOAD", "-1"),
            ][..],
            "VIDEO_MAX_UPLOAD",
        ),
        (
            &[("VIDEO_STORAGE_HOST", "s"), ("VIDEO_STORAGE_PORT", "x")][..],
            "VIDEO_STORAGE_PORT",
        ),
    ] {
        let error = config(pairs).expect_err(&format!("{pairs:?} was accepted"));
        assert!(error.contains(named), "{pairs:?}: {error}");
    }
}
