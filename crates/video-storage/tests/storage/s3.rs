//! The S3 backend against moto's S3 server (PyPI `moto[server]`, installed by scripts/setup.sh,
//! started by the test), with the standard AWS variables; the bucket is made, and what the
//! service stored read back, by boto3 (AWS's own Python client).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::{pattern, spawn};

fn clients() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/clients")
}

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_moto() -> Moto {
    let bin = clients().join("py/bin/moto_server");
    assert!(bin.exists(), "moto is missing: run scripts/setup.sh");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let moto = Moto { child, port };
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return moto;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("moto did not start");
}

/// Runs boto3 against moto; its standard output.
fn python(port: u16, script: &str) -> String {
    let program = format!(
        "import sys, boto3\n\
         s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',\n\
             aws_access_key_id='testing', aws_secret_access_key='testing')\n{script}"
    );
    let out = Command::new(clients().join("py/bin/python"))
        .args(["-c", &program, &format!("http://127.0.0.1:{port}")])
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
async fn the_standard_aws_settings_store_and_stream_through_an_s3_server() {
    let moto = start_moto().await;
    python(moto.port, "s3.create_bucket(Bucket='videos')\n");
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let storage = spawn(&[
        ("VIDEO_STORE", "s3://videos"),
        ("VIDEO_STORE_ENDPOINT", &endpoint),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ])
    .await;
    // Two parts and a bit: a real multipart upload.
    let data = pattern(17 * 1024 * 1024 + 11);
    let stored = storage.put("films/seek.mp4", data.clone()).await;
    assert_eq!(
        stored.status,
        201,
        "{}",
        String::from_utf8_lossy(&stored.body)
    );
    let size = python(
        moto.port,
        "print(s3.head_object(Bucket='videos', Key='films/seek.mp4')['ContentLength'])\n",
    );
    assert_eq!(size.trim(), data.len().to_string());

    let part = storage
        .get("films/seek.mp4", &[("range", "bytes=9000000-9000099")])
        .await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, &data[9_000_000..9_000_100]);
    let etag = part.header("etag").unwrap().to_string();
    let cached = storage
        .get("films/seek.mp4", &[("if-none-match", &etag)])
        .await;
    assert_eq!(cached.status, 304);
    let listed = storage.get_raw("/videos").await.json();
    assert_eq!(listed["objects"][0]["path"], "films/seek.mp4");
    let deleted = storage
        .send(storage.client.delete(storage.video_url("films/seek.mp4")))
        .await;
    assert_eq!(deleted.status, 204);
    let keys = python(
        moto.port,
        "print(s3.list_objects_v2(Bucket='videos').get('KeyCount', 0))\n",
    );
    assert_eq!(keys.trim(), "0");
}
