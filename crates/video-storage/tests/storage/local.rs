//! Reading from a local directory: ranges, conditions, listings, deletes, and paths that try
//! to leave the directory.

use crate::helpers::{pattern, spawn_local};

#[tokio::test]
async fn ranges_let_a_player_seek() {
    let storage = spawn_local(&[]).await;
    let data = pattern(100_000);
    assert_eq!(
        storage.put("films/seek.mp4", data.clone()).await.status,
        201
    );

    let whole = storage.get("films/seek.mp4", &[]).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, data);
    assert_eq!(whole.header("content-type"), Some("video/mp4"));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(whole.header("content-length"), Some("100000"));

    let middle = storage
        .get("films/seek.mp4", &[("range", "bytes=50000-50999")])
        .await;
    assert_eq!(middle.status, 206);
    assert_eq!(middle.body, &data[50_000..51_000]);
    assert_eq!(
        middle.header("content-range"),
        Some("bytes 50000-50999/100000")
    );
    assert_eq!(middle.header("content-length"), Some("1000"));

    // The open-ended form browsers send, and a suffix.
    let rest = storage
        .get("films/seek.mp4", &[("range", "bytes=99990-")])
        .await;
    assert_eq!((rest.status, rest.body.as_slice()), (206, &data[99_990..]));
    let tail = storage
        .get("films/seek.mp4", &[("range", "bytes=-10")])
        .await;
    assert_eq!((tail.status, tail.body.as_slice()), (206, &data[99_990..]));

    // Past the end: 416 saying how long the object is.
    let past = storage
        .get("films/seek.mp4", &[("range", "bytes=100000-")])
        .await;
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), Some("bytes */100000"));
    assert!(
        past.message().contains("100000 bytes"),
        "{}",
        past.message()
    );

    // Malformed or reversed: ignored (the whole object); several: the whole object.
    for range in [
        "bytes=abc",
        "bytes=20-10",
        "lines=1-2",
        "bytes=0-1,10-20",
        "bytes=0-10,5-20",
    ] {
        let answer = storage.get("films/seek.mp4", &[("range", range)]).await;
        assert_eq!(
            (answer.status, answer.body.len()),
            (200, 100_000),
            "{range}"
        );
    }
    // Overflowing u64, a thousand ranges: 416, and the service is fine.
    let thousand = format!(
        "bytes={}",
        (0..1000)
            .map(|i| format!("{}-{}", i * 10, i * 10 + 20))
            .collect::<Vec<_>>()
            .join(",")
    );
    for range in ["bytes=99999999999999999999999-", thousand.as_str()] {
        let answer = storage.get("films/seek.mp4", &[("range", range)]).await;
        assert_eq!(answer.status, 416, "{range}");
    }

    // HEAD: the headers of a GET, no body.
    let head = storage
        .send(storage.client.head(storage.video_url("films/seek.mp4")))
        .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("100000"));
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn conditional_requests_use_the_etag_and_the_date() {
    let storage = spawn_local(&[]).await;
    let first = storage.put("clip.webm", pattern(5000)).await;
    assert_eq!(first.status, 201);
    let answer = storage.get("clip.webm", &[]).await;
    let etag = answer.header("etag").unwrap().to_string();
    let modified = answer.header("last-modified").unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert_eq!(answer.header("content-type"), Some("video/webm"));

    let cached = storage.get("clip.webm", &[("if-none-match", &etag)]).await;
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
    assert_eq!(cached.header("etag"), Some(etag.as_str()));
    let by_date = storage
        .get("clip.webm", &[("if-modified-since", &modified)])
        .await;
    assert_eq!(by_date.status, 304);

    // If-Range with the current tag: the range; with an old one: the whole new object.
    let ranged = storage
        .get("clip.webm", &[("range", "bytes=0-9"), ("if-range", &etag)])
        .await;
    assert_eq!(ranged.status, 206);
    // Replaced: 200 (not 201), a new tag.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let replaced = storage.put("clip.webm", pattern(6000)).await;
    assert_eq!(replaced.status, 200);
    let stale = storage
        .get("clip.webm", &[("range", "bytes=0-9"), ("if-range", &etag)])
        .await;
    assert_eq!((stale.status, stale.body.len()), (200, 6000));
    assert_ne!(stale.header("etag"), Some(etag.as_str()));
    let changed = storage.get("clip.webm", &[("if-none-match", &etag)]).await;
    assert_eq!(changed.status, 200);
    // If-Match with the old tag: 412.
    let guarded = storage.get("clip.webm", &[("if-match", &etag)]).await;
    assert_eq!(guarded.status, 412);
}

#[tokio::test]
async fn objects_are_listed_in_pages_and_deleted() {
    let storage = spawn_local(&[]).await;
    for name in [
        "b.mp4",
        "a.mp4",
        "shows/s1/e1.mp4",
        "shows/s1/e2.mp4",
        "c d.mp4",
    ] {
        assert_eq!(storage.put(name, pattern(10)).await.status, 201, "{name}");
    }
    let all = storage.get_raw("/videos").await.json();
    let names: Vec<&str> = all["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "a.mp4",
            "b.mp4",
            "c d.mp4",
            "shows/s1/e1.mp4",
            "shows/s1/e2.mp4"
        ]
    );
    assert!(all.get("next").is_none());
    assert_eq!(all["objects"][0]["size"], 10);

    let page = storage.get_raw("/videos?limit=2").await.json();
    assert_eq!(page["objects"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], "b.mp4");
    let next = storage.get_raw("/videos?limit=2&after=b.mp4").await.json();
    assert_eq!(next["objects"][0]["path"], "c d.mp4");
    let folder = storage.get_raw("/videos?prefix=shows/s1").await.json();
    assert_eq!(folder["objects"].as_array().unwrap().len(), 2);

    for bad in [
        "/videos?limit=0",
        "/videos?limit=1001",
        "/videos?limit=x",
        "/videos?prefix=../x",
    ] {
        let answer = storage.get_raw(bad).await;
        assert_eq!(answer.status, 400, "{bad}");
        assert!(!answer.message().is_empty());
    }

    let deleted = storage
        .send(storage.client.delete(storage.video_url("a.mp4")))
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(storage.get("a.mp4", &[]).await.status, 404);
    let again = storage
        .send(storage.client.delete(storage.video_url("a.mp4")))
        .await;
    assert_eq!(again.status, 404);
    assert_eq!(again.json()["status"], 404);
}

#[tokio::test]
async fn paths_cannot_leave_the_store() {
    let storage = spawn_local(&[]).await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.mp4"), b"secret").unwrap();
    std::os::unix::fs::symlink(outside.path(), storage.store_dir().join("link")).unwrap();

    for path in [
        "../secret.mp4",
        "a/../../secret.mp4",
        "/etc/passwd",
        "a\0b",
        "a\\..\\b",
        "",
        "a//b",
        "link/secret.mp4",
        "link/new.mp4",
    ] {
        let read = storage.get(path, &[]).await;
        assert_eq!(read.status, 400, "GET {path:?}");
        assert!(read.message().starts_with("path "), "{}", read.message());
        let write = storage.put(path, "x").await;
        assert_eq!(write.status, 400, "PUT {path:?}");
        let delete = storage
            .send(storage.client.delete(storage.video_url(path)))
            .await;
        assert_eq!(delete.status, 400, "DELETE {path:?}");
    }
    // Percent-encoded traversal arrives decoded once, and is refused the same way.
    for raw in [
        "/video?path=%2e%2e%2fsecret.mp4",
        "/video?path=..%2Fsecret.mp4",
        "/video",
    ] {
        assert_eq!(storage.get_raw(raw).await.status, 400, "{raw}");
    }
    // Nothing was written outside, and the outside file is intact.
    assert_eq!(crate::helpers::files_under(outside.path()), ["secret.mp4"]);
    assert_eq!(
        std::fs::read(outside.path().join("secret.mp4")).unwrap(),
        b"secret"
    );
    // A doubly encoded name is a literal name inside the store (kept percent-encoded on disk,
    // as `object_store` keeps `%`), read back under the name it was given.
    assert_eq!(storage.put("%2e%2e", "x").await.status, 201);
    assert_eq!(storage.get("%2e%2e", &[]).await.body, b"x");
    assert_eq!(
        crate::helpers::files_under(&storage.store_dir()),
        ["%252e%252e", "link"]
    );
    assert_eq!(crate::helpers::files_under(outside.path()), ["secret.mp4"]);
}
