//! The JSON API and `/video?id=`: upload, stream with seeking, list, delete; bad input; storage
//! down.

use std::time::Duration;

use crate::helpers::{clip, spawn_pair};

#[tokio::test]
async fn an_uploaded_video_streams_with_seeking_and_is_listed_and_deleted() {
    let pair = spawn_pair(&[]).await;
    let data = std::fs::read(clip()).unwrap();
    assert!(data.len() < 1024 * 1024, "the clip is {} bytes", data.len());

    let created = pair
        .upload("Test pattern", "pattern.webm", data.clone())
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let video = created.json();
    let id = video["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 24);
    assert_eq!(
        created.header("location"),
        Some(format!("videos/{id}").as_str())
    );
    assert_eq!(video["title"], "Test pattern");
    assert_eq!(video["path"], format!("{id}/pattern.webm"));
    assert_eq!(video["size"], data.len());
    assert_eq!(video["content_type"], "video/webm");
    // ffprobe read the duration (6 s) through storage; ffmpeg made a still.
    let duration = video["duration"].as_f64().expect("a duration");
    assert!((5.5..6.5).contains(&duration), "{duration}");
    assert_eq!(video["thumbnail"], format!("{id}/still.jpg"));
    assert!(video["created"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        pair.stored_files(),
        [format!("{id}/pattern.webm"), format!("{id}/still.jpg")]
    );

    let shown = pair.get(&format!("/api/videos/{id}"), &[]).await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json()["title"], "Test pattern");

    // The whole video, as the seed's URL gives it: a view.
    let whole = pair.get(&format!("/video?id={id}"), &[]).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, data);
    assert_eq!(whole.header("content-type"), Some("video/webm"));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    let etag = whole.header("etag").unwrap().to_string();
    // Seeking: a range from the middle, passed through to storage and answered 206; not a view.
    let middle = data.len() / 2;
    let range = format!("bytes={middle}-");
    let part = pair
        .get(&format!("/video?id={id}"), &[("range", &range)])
        .await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, &data[middle..]);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes {middle}-{}/{}", data.len() - 1, data.len()).as_str())
    );
    let past = format!("bytes={}-", data.len());
    let unsatisfiable = pair
        .get(&format!("/video?id={id}"), &[("range", &past)])
        .await;
    assert_eq!(unsatisfiable.status, 416);
    let cached = pair
        .get(&format!("/video?id={id}"), &[("if-none-match", &etag)])
        .await;
    assert_eq!(cached.status, 304);
    let head = pair
        .send(pair.client.head(pair.url(&format!("/video?id={id}"))))
        .await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(data.len().to_string().as_str())
    );
    assert!(head.body.is_empty());
    let still = pair.get(&format!("/thumbnail?id={id}"), &[]).await;
    assert_eq!(
        (still.status, still.header("content-type")),
        (200, Some("image/jpeg"))
    );

    // One view recorded (the whole read; not the range, the 304 or the HEAD).
    let mut views = 0;
    for _ in 0..100 {
        views = pair.get(&format!("/api/videos/{id}"), &[]).await.json()["views"]
            .as_u64()
            .unwrap();
        if views == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(views, 1);

    // The list, newest first, in pages linked by `Link`.
    for title in ["Second", "Third"] {
        assert_eq!(pair.upload(title, "x.webm", data.clone()).await.status, 201);
    }
    let first = pair.get("/api/videos?limit=2", &[]).await;
    let titles: Vec<String> = first
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["title"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(titles, ["Third", "Second"]);
    let link = first.header("link").unwrap().to_string();
    let next = link
        .strip_prefix('<')
        .and_then(|l| l.split_once(">; rel=\"next\""))
        .unwrap()
        .0;
    let rest = pair.get(&format!("/api/videos{next}"), &[]).await;
    assert_eq!(rest.json()[0]["title"], "Test pattern");
    assert!(rest.header("link").is_none());

    // Deleted: its file and still leave storage, its id is unknown.
    let deleted = pair
        .send(pair.client.delete(pair.url(&format!("/api/videos/{id}"))))
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(pair.get(&format!("/video?id={id}"), &[]).await.status, 404);
    assert!(!pair.stored_files().iter().any(|f| f.starts_with(&id)));
    let again = pair
        .send(pair.client.delete(pair.url(&format!("/api/videos/{id}"))))
        .await;
    assert_eq!(again.status, 404);
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_leave_nothing_behind() {
    let pair = spawn_pair(&[("VIDEO_MAX_UPLOAD", "64k")]).await;
    for (path, status, message) in [
        ("/video", 400, "id is required"),
        ("/video?id=a/b", 400, "id must be"),
        ("/video?id=..", 400, "id must be"),
        (
            "/video?id=5d9e690ad76fe06a3d7ae416",
            404,
            "no video with id 5d9e690ad76fe06a3d7ae416",
        ),
        ("/api/videos/a%20b", 400, "id must be"),
        ("/api/videos?limit=0", 400, "limit"),
        ("/api/videos?limit=101", 400, "limit"),
        ("/api/videos?cursor=garbage", 400, "cursor"),
    ] {
        let answer = pair.get(path, &[]).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.text());
        let body = answer.json();
        assert!(
            body["message"].as_str().unwrap().contains(message),
            "{path}: {body}"
        );
    }

    // Not a form; a form without a title; an empty file; too big (by the limit).
    let not_form = pair
        .send(
            pair.client
                .post(pair.url("/api/videos"))
                .json(&serde_json::json!({"title": "x"})),
        )
        .await;
    assert_eq!(not_form.status, 400);
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(vec![1u8; 1000]).file_name("a.webm"),
    );
    let untitled = pair
        .send(pair.client.post(pair.url("/api/videos")).multipart(form))
        .await;
    assert_eq!(
        (untitled.status, untitled.json()["message"].as_str()),
        (400, Some("title is required"))
    );
    let empty = pair.upload("Empty", "e.webm", Vec::new()).await;
    assert_eq!(empty.status, 400, "{}", empty.text());
    let blank = pair.upload("   ", "b.webm", vec![1u8; 10]).await;
    assert_eq!(blank.status, 400);
    let big = pair.upload("Big", "big.webm", vec![7u8; 200 * 1024]).await;
    assert_eq!(big.status, 413, "{}", big.text());
    // A title is read into memory only up to a few KiB, whatever the form's size.
    let long = pair
        .upload(&"t".repeat(60 * 1024), "l.webm", vec![1u8; 10])
        .await;
    assert_eq!(long.status, 400, "{}", long.text());
    assert!(long.text().contains("title must be at most 200 characters"));

    // None of them left a file or a row.
    for _ in 0..100 {
        if pair.stored_files().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pair.stored_files(), Vec::<String>::new());
    assert_eq!(
        pair.get("/api/videos", &[]).await.json(),
        serde_json::json!([])
    );
}

#[tokio::test]
async fn storage_down_is_a_quick_503_and_the_service_stays_up() {
    let mut pair = spawn_pair(&[]).await;
    let data = std::fs::read(clip()).unwrap();
    let id = pair.upload("Clip", "c.webm", data).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    pair.stop_storage().await;
    // The first calls fail on connecting; after five the breaker answers without trying.
    for _ in 0..8 {
        let answer = pair.get(&format!("/video?id={id}"), &[]).await;
        assert_eq!(answer.status, 503);
        assert_eq!(answer.json()["message"], "video storage is unavailable");
    }
    // The catalog still answers, and so do the pages.
    assert_eq!(
        pair.get(&format!("/api/videos/{id}"), &[]).await.status,
        200
    );
    assert_eq!(pair.get("/", &[]).await.status, 200);
    assert_eq!(pair.get("/hc", &[]).await.status, 200);
    let refused = pair.upload("New", "n.webm", vec![1u8; 100]).await;
    assert_eq!(refused.status, 503);
}

#[tokio::test]
async fn the_pages_list_play_and_upload_without_javascript() {
    let pair = spawn_pair(&[]).await;
    let empty = pair.get("/", &[]).await;
    assert!(empty.text().contains("No videos yet"), "{}", empty.text());

    // The form without JavaScript posts to /upload and is sent to the video's page.
    let data = std::fs::read(clip()).unwrap();
    let form = reqwest::multipart::Form::new()
        .text("title", "<b>Escaped</b> & shown")
        .part(
            "file",
            reqwest::multipart::Part::bytes(data).file_name("p.webm"),
        );
    let posted = pair
        .send(pair.client.post(pair.url("/upload")).multipart(form))
        .await;
    assert_eq!(posted.status, 303, "{}", posted.text());
    let location = posted.header("location").unwrap().to_string();
    assert!(location.starts_with("watch?id="), "{location}");
    let id = location.trim_start_matches("watch?id=");

    let page = pair.get(&format!("/{location}"), &[]).await.text();
    assert!(page.contains(&format!("src=\"video?id={id}\"")), "{page}");
    assert!(
        page.contains("&#60;b&#62;Escaped&#60;/b&#62; &#38; shown"),
        "{page}"
    );
    assert!(!page.contains("<b>Escaped"), "{page}");
    assert!(page.contains("0:06"), "{page}");
    let list = pair.get("/", &[]).await.text();
    assert!(list.contains(&format!("href=\"watch?id={id}\"")), "{list}");
    assert!(
        list.contains(&format!("src=\"thumbnail?id={id}\"")),
        "{list}"
    );

    // A bad form comes back with the error.
    let form = reqwest::multipart::Form::new().text("title", "No file");
    let refused = pair
        .send(pair.client.post(pair.url("/upload")).multipart(form))
        .await;
    assert_eq!(refused.status, 400);
    assert!(refused.text().contains("file is required"));
    assert_eq!(pair.get("/watch?id=nope", &[]).await.status, 404);
}
