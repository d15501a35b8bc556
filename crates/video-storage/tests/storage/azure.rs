//! The Azure Blob backend against Azurite (Microsoft's storage emulator, from npm, installed by
//! scripts/setup.sh), with the seed's variables; the container is made by Azure's own Python
//! client, which then reads back what the service stored.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::{pattern, spawn};

/// Azurite's well-known development account.
const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn clients() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/clients")
}

struct Azurite {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_azurite() -> Azurite {
    let bin = clients().join("js/node_modules/.bin/azurite-blob");
    assert!(bin.exists(), "Azurite is missing: run scripts/setup.sh");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(bin)
        .args([
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--silent",
        ])
        .arg("--location")
        .arg(dir.path())
        .arg("--skipApiVersionCheck")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let azurite = Azurite {
        child,
        port,
        _dir: dir,
    };
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return azurite;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("Azurite did not start");
}

/// Runs Azure's Python client against Azurite; its standard output.
fn python(port: u16, script: &str) -> String {
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};\
         BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
    );
    let program = format!(
        "import sys\nfrom azure.storage.blob import BlobServiceClient\n\
         service = BlobServiceClient.from_connection_string(sys.argv[1])\n{script}"
    );
    let out = Command::new(clients().join("py/bin/python"))
        .args(["-c", &program, &connection])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn the_seeds_azure_settings_store_and_stream_through_azurite() {
    let azurite = start_azurite().await;
    python(azurite.port, "service.create_container('videos')\n");
    let endpoint = format!("http://127.0.0.1:{}/{ACCOUNT}", azurite.port);
    // The seed's two variables pick Azure and its `videos` container.
    let storage = spawn(&[
        ("STORAGE_ACCOUNT_NAME", ACCOUNT),
        ("STORAGE_ACCESS_KEY", KEY),
        ("VIDEO_STORE_ENDPOINT", &endpoint),
    ])
    .await;
    let data = pattern(9 * 1024 * 1024 + 7);
    let stored = storage
        .put("SampleVideo_1280x720_1mb.mp4", data.clone())
        .await;
    assert_eq!(
        stored.status,
        201,
        "{}",
        String::from_utf8_lossy(&stored.body)
    );

    // Azure's own client sees the blob, whole.
    let size = python(
        azurite.port,
        "blob = service.get_blob_client('videos', 'SampleVideo_1280x720_1mb.mp4')\n\
         print(len(blob.download_blob().readall()))\n",
    );
    assert_eq!(size.trim(), data.len().to_string());

    let whole = storage.get("SampleVideo_1280x720_1mb.mp4", &[]).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, data);
    let etag = whole.header("etag").unwrap().to_string();
    let part = storage
        .get(
            "SampleVideo_1280x720_1mb.mp4",
            &[("range", "bytes=4194304-4194399")],
        )
        .await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, &data[4_194_304..4_194_400]);
    let cached = storage
        .get("SampleVideo_1280x720_1mb.mp4", &[("if-none-match", &etag)])
        .await;
    assert_eq!(cached.status, 304);
    let listed = storage.get_raw("/videos").await.json();
    assert_eq!(listed["objects"][0]["path"], "SampleVideo_1280x720_1mb.mp4");

    // An upload cut short by the limit leaves no blob.
    drop(storage);
    let limited = spawn(&[
        ("STORAGE_ACCOUNT_NAME", ACCOUNT),
        ("STORAGE_ACCESS_KEY", KEY),
        ("VIDEO_STORE_ENDPOINT", &endpoint),
        ("VIDEO_MAX_UPLOAD", "1M"),
    ])
    .await;
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..40).map(|_| Ok(pattern(64 * 1024))).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
    let refused = limited
        .send(
            limited
                .client
                .put(limited.video_url("too-big.mp4"))
                .body(body),
        )
        .await;
    assert_eq!(refused.status, 413);
    let names = python(
        azurite.port,
        "print(sorted(b.name for b in service.get_container_client('videos').list_blobs()))\n",
    );
    assert_eq!(names.trim(), "['SampleVideo_1280x720_1mb.mp4']");

    // Azurite gone: 503 with a message that names no host, and the service stays up.
    drop(azurite);
    let down = limited.get("SampleVideo_1280x720_1mb.mp4", &[]).await;
    assert_eq!(down.status, 503);
    assert_eq!(down.message(), "the storage backend is unavailable");
    assert_eq!(limited.get_raw("/hc").await.status, 200);
}
