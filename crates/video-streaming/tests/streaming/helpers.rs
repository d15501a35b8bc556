//! A video-storage and a video-streaming on free loopback ports, and clips made by ffmpeg.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use platform::Source;
use reqwest::header::HeaderMap;
use tokio::sync::oneshot;

pub(crate) struct Pair {
    pub(crate) addr: SocketAddr,
    pub(crate) storage: SocketAddr,
    pub(crate) client: reqwest::Client,
    pub(crate) dir: tempfile::TempDir,
    storage_stop: Option<oneshot::Sender<()>>,
    _stop: oneshot::Sender<()>,
}

pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn wait_ready(client: &reqwest::Client, addr: SocketAddr) {
    for _ in 0..200 {
        if let Ok(answer) = client.get(format!("http://{addr}/ready")).send().await
            && answer.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{addr} did not become ready");
}

/// Storage on a temp directory and streaming in front of it, with `env` on top.
pub(crate) async fn spawn_pair(env: &[(&str, &str)]) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let videos = dir.path().join("videos").display().to_string();
    let storage_config =
        video_storage::Config::from_source(&Source::from_pairs([("VIDEO_STORE", videos.as_str())]))
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let storage = listener.local_addr().unwrap();
    let (storage_stop, rx) = oneshot::channel::<()>();
    tokio::spawn(video_storage::run(listener, storage_config, async {
        let _ = rx.await;
    }));
    wait_ready(&client, storage).await;

    let storage_url = format!("http://{storage}");
    let catalog = format!("sqlite://{}", dir.path().join("video.db").display());
    let mut pairs = vec![
        ("VIDEO_STORAGE_URL", storage_url.as_str()),
        ("VIDEO_DB_URL", catalog.as_str()),
    ];
    pairs.extend_from_slice(env);
    let config =
        video_streaming::Config::from_source(&Source::from_pairs(pairs.iter().copied())).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = oneshot::channel::<()>();
    tokio::spawn(video_streaming::run(listener, config, async {
        let _ = rx.await;
    }));
    wait_ready(&client, addr).await;
    Pair {
        addr,
        storage,
        client,
        dir,
        storage_stop: Some(storage_stop),
        _stop: stop,
    }
}

impl Pair {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops video-storage (and waits until it no longer answers).
    pub(crate) async fn stop_storage(&mut self) {
        if let Some(stop) = self.storage_stop.take() {
            let _ = stop.send(());
        }
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(self.storage).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("storage did not stop");
    }

    /// Files in storage's directory.
    pub(crate) fn stored_files(&self) -> Vec<String> {
        let root = self.dir.path().join("videos");
        let mut found = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(next) = stack.pop() {
            for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
                if entry.file_type().unwrap().is_dir() {
                    stack.push(entry.path());
                } else {
                    found.push(
                        entry
                            .path()
                            .strip_prefix(&root)
                            .unwrap()
                            .display()
                            .to_string(),
                    );
                }
            }
        }
        found.sort();
        found
    }

    pub(crate) async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let answer = request.send().await.unwrap();
        Answer {
            status: answer.status().as_u16(),
            headers: answer.headers().clone(),
            body: answer.bytes().await.unwrap().to_vec(),
        }
    }

    pub(crate) async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = self.client.get(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    /// Uploads `file` (named `name`) with `title` through the JSON API.
    pub(crate) async fn upload(&self, title: &str, name: &str, file: Vec<u8>) -> Answer {
        let form = reqwest::multipart::Form::new()
            .text("title", title.to_string())
            .part(
                "file",
                reqwest::multipart::Part::bytes(file).file_name(name.to_string()),
            );
        self.send(self.client.post(self.url("/api/videos")).multipart(form))
            .await
    }
}

/// Whether ffmpeg and ffprobe are installed (scripts/setup.sh installs them).
pub(crate) fn have_ffmpeg() -> bool {
    ["ffmpeg", "ffprobe"].iter().all(|tool| {
        Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// A 6-second 320×240 WebM clip (VP8 and Opus, a keyframe every second so a player can seek),
/// made once per test run by ffmpeg.
pub(crate) fn clip() -> &'static Path {
    static CLIP: OnceLock<PathBuf> = OnceLock::new();
    CLIP.get_or_init(|| {
        assert!(have_ffmpeg(), "ffmpeg is missing: run scripts/setup.sh");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/tmp");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("flotilla-clip-{}.webm", std::process::id()));
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg("testsrc=duration=6:size=320x240:rate=25")
            .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=6"])
            .args([
                "-c:v",
                "libvpx",
                "-b:v",
                "300k",
                "-g",
                "25",
                "-c:a",
                "libopus",
                "-shortest",
            ])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "ffmpeg could not make the test clip");
        path
    })
}
