//! What ffprobe and ffmpeg (Debian's, when installed) tell about an uploaded video: its
//! duration and a still for the list. They read the object from video-storage over HTTP (with
//! ranges, as a player does), each within [`PROBE_TIMEOUT`]; without them, or when they fail,
//! the fields stay blank.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// A still larger than this is not kept.
const MAX_STILL_BYTES: usize = 1024 * 1024;

async fn run(program: &str, args: &[&str]) -> Option<Vec<u8>> {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let output = tokio::time::timeout(PROBE_TIMEOUT, child.wait_with_output())
        .await
        .ok()?
        .ok()?;
    output.status.success().then_some(output.stdout)
}

/// The duration in seconds.
pub(crate) async fn duration(url: &str) -> Option<f64> {
    let out = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "default=nw=1:nk=1",
            url,
        ],
    )
    .await?;
    let seconds: f64 = String::from_utf8_lossy(&out).trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then_some(seconds)
}

/// A JPEG still, 320 pixels wide, from one second in (or the middle of a shorter video).
pub(crate) async fn still(url: &str, duration: Option<f64>) -> Option<Vec<u8>> {
    let at = duration.map_or(0.0, |d| (d / 2.0).min(1.0));
    let at = format!("{at:.3}");
    let out = run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-ss",
            &at,
            "-i",
            url,
            "-frames:v",
            "1",
            "-vf",
            "scale=320:-2",
            "-f",
            "image2pipe",
            "-c:v",
            "mjpeg",
            "pipe:1",
        ],
    )
    .await?;
    (!out.is_empty() && out.len() <= MAX_STILL_BYTES).then_some(out)
}
