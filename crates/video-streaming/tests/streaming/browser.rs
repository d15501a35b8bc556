//! The pages in Debian's headless Chromium (driven through chromedriver): upload a video with
//! the progress bar, land on its page, play it and seek to the middle. Between the browser
//! and the service sits a small recording proxy, so the test sees the requests the player
//! makes: seeking must be a Range request answered 206. Screenshots go to
//! `target/screenshots/`.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::helpers::spawn_pair;

struct Driver {
    process: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_chromedriver() -> Driver {
    let port = free_port();
    let binary = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromedriver is installed (scripts/setup.sh installs chromium-driver)");
    let process = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver { process, port };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return driver;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("chromedriver did not start");
}

async fn browser(driver: &Driver) -> Client {
    let options = json!({
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900", "--autoplay-policy=no-user-gesture-required"],
    });
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), options);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

/// What the proxy saw: path and query, `Range` header, answer status.
type Seen = Arc<Mutex<Vec<(String, Option<String>, u16)>>>;

#[derive(Clone)]
struct Proxy {
    target: SocketAddr,
    client: reqwest::Client,
    seen: Seen,
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let range = parts
        .headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024).await.unwrap();
    let mut outgoing = proxy
        .client
        .request(parts.method, format!("http://{}{path}", proxy.target))
        .body(body);
    for (name, value) in &parts.headers {
        if name != "host" {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer = outgoing.send().await.unwrap();
    let status = answer.status();
    proxy
        .seen
        .lock()
        .unwrap()
        .push((path, range, status.as_u16()));
    let mut response = Response::builder().status(status);
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .unwrap()
}

async fn start_proxy(target: SocketAddr) -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let proxy = Proxy {
        target,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        seen: seen.clone(),
    };
    let app = axum::Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

/// A 40-second clip of about 30 MB (noise does not compress): big enough that the player reads
/// only its start before the seek, so the seek has to ask for a range it has not cached.
fn long_clip(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("long.webm");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc=duration=40:size=320x240:rate=25")
        .args(["-vf", "noise=alls=60:allf=t+u"])
        .args([
            "-c:v", "libvpx", "-b:v", "6M", "-minrate", "6M", "-maxrate", "6M",
        ])
        .args([
            "-bufsize",
            "6M",
            "-g",
            "25",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
        ])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg could not make the clip");
    path
}

async fn screenshot(client: &Client, name: &str) {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = client.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

#[tokio::test]
async fn upload_with_progress_then_play_and_seek_in_chromium() {
    let pair = spawn_pair(&[]).await;
    let clip = long_clip(pair.dir.path());
    let (proxy, seen) = start_proxy(pair.addr).await;
    let driver = start_chromedriver();
    let client = browser(&driver).await;
    let base = format!("http://{proxy}/");

    client.goto(&format!("{base}upload")).await.unwrap();
    client
        .find(Locator::Css("input[name=title]"))
        .await
        .unwrap()
        .send_keys("Chromium upload")
        .await
        .unwrap();
    client
        .find(Locator::Css("input[name=file]"))
        .await
        .unwrap()
        .send_keys(clip.to_str().unwrap())
        .await
        .unwrap();
    client
        .find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The script posts to the JSON API and then opens the video's page.
    let mut url = String::new();
    for _ in 0..400 {
        url = client.current_url().await.unwrap().to_string();
        if url.contains("watch?id=") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        url.contains("watch?id="),
        "still at {url}: {}",
        client.source().await.unwrap()
    );
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|(path, _, status)| path == "/api/videos" && *status == 201),
        "the upload went through the JSON API: {:?}",
        seen.lock().unwrap()
    );

    // Play, then seek to the middle.
    let played = client
        .execute(
            "return (async () => {
               const v = document.getElementById('player');
               v.muted = true;
               if (v.readyState < 1) {
                 await new Promise(r => v.addEventListener('loadedmetadata', r, { once: true }));
               }
               // Seek before playing: the player has only read the start (preload=metadata).
               v.currentTime = v.duration / 2;
               await new Promise(r => v.addEventListener('seeked', r, { once: true }));
               await v.play();
               await new Promise(r => setTimeout(r, 500));
               return [v.duration, v.currentTime, v.paused, v.error ? v.error.code : 0];
             })()",
            vec![],
        )
        .await
        .unwrap();
    let duration = played[0].as_f64().unwrap();
    let position = played[1].as_f64().unwrap();
    assert!((39.5..40.5).contains(&duration), "{played}");
    assert!(position >= duration / 2.0 - 0.5, "{played}");
    assert_eq!(played[3], 0, "the player failed: {played}");
    screenshot(&client, "video-watch").await;

    // The seek was a Range request from past the start, answered 206.
    let requests = seen.lock().unwrap().clone();
    let seeks: Vec<_> = requests
        .iter()
        .filter(|(path, range, status)| {
            path.starts_with("/video?id=")
                && *status == 206
                && range
                    .as_deref()
                    .and_then(|r| r.strip_prefix("bytes="))
                    .and_then(|r| r.split('-').next())
                    .and_then(|start| start.parse::<u64>().ok())
                    .is_some_and(|start| start > 0)
        })
        .collect();
    assert!(
        !seeks.is_empty(),
        "no Range request from the middle: {requests:?}"
    );

    client.goto(&base).await.unwrap();
    let title = client
        .find(Locator::Css(".videos .title"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(title, "Chromium upload");
    screenshot(&client, "video-list").await;
    client.close().await.unwrap();
}
