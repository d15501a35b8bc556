//! Settings: the seed's names, the store URLs, and one-line errors naming the variable.

use platform::Source;
use video_storage::{Backend, Config};

fn config(pairs: &[(&str, &str)]) -> Result<Config, String> {
    Config::from_source(&Source::from_pairs(pairs.iter().copied())).map_err(|e| e.to_string())
}

#[test]
fn defaults_are_a_local_directory_on_port_3000() {
    let c = config(&[]).unwrap();
    assert_eq!(c.bind.to_string(), "0.0.0.0:3000");
    assert_eq!(c.backend, Backend::Local("./data/videos".into()));
    assert_eq!(c.max_upload, 4 << 30);
}

#[test]
fn the_seeds_port_and_azure_variables_work() {
    let c = config(&[
        ("PORT", "4000"),
        ("STORAGE_ACCOUNT_NAME", "flixtube"),
        ("STORAGE_ACCESS_KEY", "c2VjcmV0"),
        ("VIDEO_STORE_ENDPOINT", "http://azurite:10000/flixtube"),
    ])
    .unwrap();
    assert_eq!(c.bind.to_string(), "0.0.0.0:4000");
    let Backend::Azure {
        container, account, ..
    } = &c.backend
    else {
        panic!("not Azure: {:?}", c.backend);
    };
    assert_eq!(
        (container.as_str(), account.as_str()),
        ("videos", "flixtube")
    );
    // The key never shows in what is logged.
    assert!(!format!("{:?}", c.backend).contains("c2VjcmV0"));
    // The service's own bind wins over PORT.
    let c = config(&[("PORT", "4000"), ("VIDEO_STORAGE_BIND", "127.0.0.1:5000")]).unwrap();
    assert_eq!(c.bind.to_string(), "127.0.0.1:5000");
}

#[test]
fn store_urls_pick_the_backend() {
    let c = config(&[
        ("VIDEO_STORE", "s3://films"),
        ("AWS_REGION", "eu-west-1"),
        ("VIDEO_STORE_ENDPOINT", "http://minio:9000"),
    ])
    .unwrap();
    let Backend::S3 {
        bucket, options, ..
    } = &c.backend
    else {
        panic!("not S3");
    };
    assert_eq!(bucket, "films");
    assert!(options.iter().any(|(_, v)| v == "eu-west-1"));
    let c = config(&[("VIDEO_STORE", "file:///srv/videos")]).unwrap();
    assert_eq!(c.backend, Backend::Local("/srv/videos".into()));
    let c = config(&[
        ("VIDEO_STORE", "az://films"),
        ("STORAGE_ACCOUNT_NAME", "flixtube"),
        ("VIDEO_STORE_ENDPOINT", "http://azurite:10000/flixtube"),
    ])
    .unwrap();
    assert!(matches!(c.backend, Backend::Azure { ref container, .. } if container == "films"));
}

#[test]
fn bad_settings_name_the_variable() {
    for (pairs, named) in [
        (&[("VIDEO_STORE", "az://films")][..], "STORAGE_ACCOUNT_NAME"),
        (&[("VIDEO_STORE", "ftp://films")][..], "VIDEO_STORE"),
        (&[("VIDEO_STORE", "s3://films/sub")][..], "VIDEO_STORE"),
        (&[("VIDEO_MAX_UPLOAD", "0")][..], "VIDEO_MAX_UPLOAD"),
        (&[("VIDEO_MAX_UPLOAD", "lots")][..], "VIDEO_MAX_UPLOAD"),
        (
            &[("VIDEO_MAX_UPLOAD", "99999999999T")][..],
            "VIDEO_MAX_UPLOAD",
        ),
        (&[("PORT", "http")][..], "PORT"),
        (
            &[("VIDEO_STORE_ENDPOINT", "127.0.0.1:10000")][..],
            "VIDEO_STORE_ENDPOINT",
        ),
        // No TLS in this build: the cloud's own https:// endpoints are refused at startup.
        (
            &[("STORAGE_ACCOUNT_NAME", "flixtube")][..],
            "VIDEO_STORE_ENDPOINT",
        ),
        (&[("VIDEO_STORE", "s3://films")][..], "VIDEO_STORE_ENDPOINT"),
        (
            &[
                ("VIDEO_STORE", "s3://films"),
                ("VIDEO_STORE_ENDPOINT", "https://s3.example"),
            ][..],
            "VIDEO_STORE_ENDPOINT",
        ),
    ] {
        let error = config(pairs).expect_err(&format!("{pairs:?} was accepted"));
        assert!(error.contains(named), "{pairs:?}: {error}");
    }
    assert_eq!(platform::config::parse_size("500M"), Ok(500 << 20));
    assert_eq!(platform::config::parse_size("1048576"), Ok(1 << 20));
}
