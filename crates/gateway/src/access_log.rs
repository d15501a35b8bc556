//! The access log: one JSON object per request, with the seeds' nginx fields in their order
//! (`time`, `remote_addr`, `request`, ..., `upstream_response_time`) plus `upstream_addr`,
//! `request_id` and `route`. Every value is a string, `-` when empty, as nginx writes them; unlike
//! nginx's, the line is always valid JSON whatever the request contains.
//!
//! A line is written when the response's last byte has gone out (so `request_time` and
//! `bytes_sent` are nginx's), into a bounded queue that a writer thread drains in batches: a request
//! never waits for the disk; lines reach the file within 20 ms. If the queue is full, the line is dropped and counted
//! (`gateway_access_log_dropped_total`).

use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body as HttpBody, Frame, SizeHint};

/// Lines waiting for the writer thread at most.
const QUEUE: usize = 16 * 1024;
/// How often the writer thread writes out what has queued.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// Where lines go.
pub(crate) struct AccessLog {
    queue: Option<SyncSender<Vec<u8>>>,
    closing: Arc<AtomicBool>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AccessLog {
    /// `stdout`, `stderr`, `off`, or a file path (appended to).
    pub(crate) fn open(target: &str) -> std::io::Result<Arc<Self>> {
        let writer: Box<dyn Write + Send> = match target {
            "off" => {
                return Ok(Arc::new(AccessLog {
                    queue: None,
                    closing: Arc::default(),
                    writer: Mutex::new(None),
                }));
            }
            "stdout" => Box::new(std::io::stdout()),
            "stderr" => Box::new(std::io::stderr()),
            path => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        std::io::Error::new(e.kind(), format!("access log {path}: {e}"))
                    })?,
            ),
        };
        let (tx, rx) = sync_channel(QUEUE);
        let closing = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&closing);
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, writer, &stop))?;
        Ok(Arc::new(AccessLog {
            queue: Some(tx),
            closing,
            writer: Mutex::new(Some(thread)),
        }))
    }

    /// Writes out everything queued and stops the writer (at shutdown, after the drain).
    pub(crate) fn finish(&self) {
        self.closing.store(true, Ordering::Release);
        let thread = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    fn send(&self, line: Vec<u8>) {
        if let Some(queue) = &self.queue
            && let Err(TrySendError::Full(_)) = queue.try_send(line)
        {
            metrics::counter!("gateway_access_log_dropped_total").increment(1);
        }
    }
}

fn write_lines(rx: Receiver<Vec<u8>>, writer: Box<dyn Write + Send>, closing: &AtomicBool) {
    use std::sync::mpsc::TryRecvError;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, writer);
    // The writer wakes up on its own schedule rather than on each line: a blocked receiver would
    // have every request pay for waking it (a futex call and a context switch).
    loop {
        loop {
            match rx.try_recv() {
                Ok(line) => {
                    let _ = out.write_all(&line);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        let _ = out.flush();
        if closing.load(Ordering::Acquire) {
            return;
        }
        std::thread::sleep(FLUSH_EVERY);
    }
}

/// What is known about a request before it is answered.
pub(crate) struct Entry {
    pub(crate) started: Instant,
    pub(crate) remote_addr: String,
    pub(crate) method: String,
    pub(crate) request_uri: String,
    pub(crate) version: &'static str,
    pub(crate) request_length: u64,
    pub(crate) referer: String,
    pub(crate) user_agent: String,
    pub(crate) forwarded_for: String,
    pub(crate) request_id: String,
    pub(crate) route: Arc<str>,
    pub(crate) status: u16,
    pub(crate) head_bytes: u64,
    pub(crate) upstream_addr: Option<Arc<str>>,
    pub(crate) upstream_response_time: Option<f64>,
}

impl Entry {
    fn line(&self, body_bytes: u64) -> Vec<u8> {
        let now = time::OffsetDateTime::now_utc();
        let (uri, query) = self
            .request_uri
            .split_once('?')
            .unwrap_or((&self.request_uri, ""));
        let mut line = Line(Vec::with_capacity(512));
        line.0.push(b'{');
        line.number(
            "time",
            format_args!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00",
                now.year(),
                u8::from(now.month()),
                now.day(),
                now.hour(),
                now.minute(),
                now.second()
            ),
        );
        line.text("remote_addr", &self.remote_addr);
        line.text(
            "request",
            &format!("{} {} {}", self.method, self.request_uri, self.version),
        );
        line.text("request_method", &self.method);
        line.number("request_length", format_args!("{}", self.request_length));
        line.text("request_uri", &self.request_uri);
        line.text("uri", uri);
        line.text("query_string", query);
        line.number("status", format_args!("{}", self.status));
        line.number(
            "bytes_sent",
            format_args!("{}", self.head_bytes + body_bytes),
        );
        line.number("body_bytes_sent", format_args!("{body_bytes}"));
        line.text("referer", &self.referer);
        line.text("useragent", &self.user_agent);
        line.text("forwardedfor", &self.forwarded_for);
        line.number(
            "request_time",
            format_args!("{:.3}", self.started.elapsed().as_secs_f64()),
        );
        match self.upstream_response_time {
            Some(time) => line.number("upstream_response_time", format_args!("{time:.3}")),
            None => line.text("upstream_response_time", ""),
        }
        line.text("upstream_addr", self.upstream_addr.as_deref().unwrap_or(""));
        line.text("request_id", &self.request_id);
        line.text("route", &self.route);
        line.0.extend_from_slice(b"}\n");
        line.0
    }
}

/// A JSON object being written, one string field after another (nginx's `escape=json` log
/// format makes every value a string; an empty one is written `-`, as nginx does).
struct Line(Vec<u8>);

impl Line {
    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(b',');
        }
        self.0.push(b'"');
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
    }

    /// A value from the request, escaped as JSON needs.
    fn text(&mut self, key: &str, value: &str) {
        self.key(key);
        let value = if value.is_empty() { "-" } else { value };
        if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            self.0.push(b'"');
            self.0.extend_from_slice(value.as_bytes());
            self.0.push(b'"');
        } else {
            // serde_json escapes quotes, backslashes and control characters: always valid JSON.
            let _ = serde_json::to_writer(&mut self.0, value);
        }
    }

    /// A value the gateway formats itself (digits, `-`, `:`, `.`, `+`, `T`): nothing to escape.
    fn number(&mut self, key: &str, value: std::fmt::Arguments<'_>) {
        use std::io::Write;
        self.key(key);
        self.0.push(b'"');
        let _ = self.0.write_fmt(value);
        self.0.push(b'"');
    }
}

/// A response body that counts what it sends and logs the request when it is done (or dropped,
/// when the client goes away first).
pub(crate) struct Logged<B> {
    inner: B,
    sent: u64,
    entry: Option<Box<Entry>>,
    log: Arc<AccessLog>,
}

impl<B> Logged<B> {
    pub(crate) fn new(inner: B, entry: Entry, log: Arc<AccessLog>) -> Self {
        Logged {
            inner,
            sent: 0,
            entry: Some(Box::new(entry)),
            log,
        }
    }
}

impl<B> Drop for Logged<B> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            self.log.send(entry.line(self.sent));
        }
    }
}

impl<B> HttpBody for Logged<B>
where
    B: HttpBody<Data = bytes::Bytes> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            self.sent += data.len() as u64;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            started: Instant::now(),
            remote_addr: "127.0.0.1".into(),
            method: "GET".into(),
            request_uri: "/todo?status=\"DONE\"".into(),
            version: "HTTP/1.1",
            request_length: 120,
            referer: String::new(),
            user_agent: "evil\"agent\\\u{1}\n".into(),
            forwarded_for: String::new(),
            request_id: "abc".into(),
            route: Arc::from("/"),
            status: 200,
            head_bytes: 100,
            upstream_addr: Some(Arc::from("127.0.0.1:8081")),
            upstream_response_time: Some(0.0042),
        }
    }

    #[test]
    fn lines_are_valid_json_with_the_seed_fields_in_order() {
        let line = entry().line(25);
        let text = String::from_utf8(line).unwrap();
        assert!(
            text.ends_with("}\n") && text.matches('\n').count() == 1,
            "{text}"
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["useragent"], "evil\"agent\\\u{1}\n");
        assert_eq!(value["uri"], "/todo");
        assert_eq!(value["query_string"], "status=\"DONE\"");
        assert_eq!(value["referer"], "-");
        assert_eq!(value["bytes_sent"], "125");
        assert_eq!(value["upstream_response_time"], "0.004");
        let keys: Vec<&str> = text
            .trim_matches(|c| c == '{' || c == '}' || c == '\n')
            .split("\",\"")
            .map(|pair| pair.trim_start_matches('"').split('"').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "time",
                "remote_addr",
                "request",
                "request_method",
                "request_length",
                "request_uri",
                "uri",
                "query_string",
                "status",
                "bytes_sent",
                "body_bytes_sent",
                "referer",
                "useragent",
                "forwardedfor",
                "request_time",
                "upstream_response_time",
                "upstream_addr",
                "request_id",
                "route"
            ]
        );
    }
}
