//! The access log: one JSON object per request, with the seeds' nginx fields in their order
//! (`time`, `remote_addr`, `request`, ..., `upstream_response_time`) plus `upstream_addr`,
//! `request_id`, `trace_id` (from the W3C `traceparent`) and `route`. Every value is a string, `-` when empty, as nginx writes them; unlike
//! nginx's, the line is always valid JSON whatever the request contains.
//!
//! A line is written when the response's last byte has gone out (so `request_time` and
//! `bytes_sent` are nginx's), straight into a buffer of the worker thread's own; a writer thread
//! takes the buffers' contents every 5 ms and writes them out. A request never waits for the disk
//! and lines reach the file within a few milliseconds. Lines of one worker thread keep their order; lines of
//! different threads are written a buffer at a time. A buffer holds at most 4 MiB: when the disk
//! cannot keep up, further lines are dropped and counted (`gateway_access_log_dropped_total`).

use std::io::Write;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Method;
use http::header::HeaderValue;
use http::uri::PathAndQuery;

use http_body::{Body as HttpBody, Frame, SizeHint};

/// Buffers lines are written into; each thread uses one, so requests on different worker threads
/// do not contend (up to this many threads).
const SHARDS: usize = 8;
/// Bytes a buffer holds at most between two writes.
const SHARD_LIMIT: usize = 4 * 1024 * 1024;
/// How often the writer thread writes out what the buffers hold.
const FLUSH_EVERY: Duration = Duration::from_millis(5);

/// Where lines go.
pub(crate) struct AccessLog {
    /// None when the log is off.
    shards: Option<Arc<Shards>>,
    closing: Arc<AtomicBool>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The line buffers, one per worker thread.
type Shards = crate::per_thread::Slots<Vec<u8>, SHARDS>;

impl AccessLog {
    /// `stdout`, `stderr`, `off`, or a file path (appended to).
    pub(crate) fn open(target: &str) -> std::io::Result<Arc<Self>> {
        let writer: Box<dyn Write + Send> = match target {
            "off" => {
                return Ok(Arc::new(AccessLog {
                    shards: None,
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
        let shards = Arc::new(Shards::default());
        let closing = Arc::new(AtomicBool::new(false));
        let (taken, stop) = (Arc::clone(&shards), Arc::clone(&closing));
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(&taken, writer, &stop))?;
        Ok(Arc::new(AccessLog {
            shards: Some(shards),
            closing,
            writer: Mutex::new(Some(thread)),
        }))
    }

    /// Writes out everything buffered and stops the writer (at shutdown, after the drain).
    pub(crate) fn finish(&self) {
        self.closing.store(true, Ordering::Release);
        let thread = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.shards.is_some()
    }

    fn write(&self, entry: &Entry, body_bytes: u64) {
        let Some(shards) = &self.shards else { return };
        let mut buffer = shards.lock_mine();
        if buffer.len() >= SHARD_LIMIT {
            drop(buffer);
            metrics::counter!("gateway_access_log_dropped_total").increment(1);
            return;
        }
        entry.write_line(&mut buffer, body_bytes);
    }
}

fn write_lines(shards: &Shards, writer: Box<dyn Write + Send>, closing: &AtomicBool) {
    let mut out = writer;
    let mut taken = Vec::new();
    // The writer wakes up on its own schedule rather than on each line: waking it would cost every
    // request a futex call and a context switch.
    loop {
        // Read before taking the lines: everything logged before `finish` is then written.
        let last = closing.load(Ordering::Acquire);
        for shard in 0..SHARDS {
            // Copied rather than swapped: each buffer stays with its thread and keeps its size.
            {
                let mut lines = shards.lock(shard);
                taken.extend_from_slice(&lines);
                lines.clear();
            }
            if !taken.is_empty() {
                let _ = out.write_all(&taken);
                taken.clear();
            }
        }
        let _ = out.flush();
        if last {
            return;
        }
        std::thread::sleep(FLUSH_EVERY);
    }
}

/// What is known about a request before it is answered: the request's own values, shared with
/// it rather than copied (header values and the URI are reference-counted).
pub(crate) struct Entry {
    pub(crate) started: Instant,
    pub(crate) remote_addr: Option<IpAddr>,
    pub(crate) method: Method,
    pub(crate) request_uri: Option<PathAndQuery>,
    pub(crate) version: &'static str,
    pub(crate) request_length: u64,
    pub(crate) referer: Option<HeaderValue>,
    pub(crate) user_agent: Option<HeaderValue>,
    pub(crate) forwarded_for: Option<HeaderValue>,
    pub(crate) request_id: Option<HeaderValue>,
    /// The request's trace id: its span's when the gateway traces it, else the one of the
    /// W3C `traceparent` it came with.
    pub(crate) trace_id: Option<[u8; 32]>,
    pub(crate) route: &'static str,
    pub(crate) status: u16,
    pub(crate) head_bytes: u64,
    pub(crate) upstream_addr: Option<Address>,
    pub(crate) upstream_response_time: Option<Duration>,
}

/// A server's address for the log line. Copied when it is short, as every `ip:port` is: cloning
/// the pool's `Arc` would write a reference count that every worker thread shares.
pub(crate) enum Address {
    Inline { len: u8, bytes: [u8; 47] },
    Shared(Arc<str>),
}

impl Address {
    pub(crate) fn of(address: &Arc<str>) -> Self {
        let mut bytes = [0u8; 47];
        match bytes.get_mut(..address.len()) {
            Some(start) => {
                start.copy_from_slice(address.as_bytes());
                Address::Inline {
                    len: address.len() as u8,
                    bytes,
                }
            }
            None => Address::Shared(Arc::clone(address)),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Address::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Address::Shared(address) => address.as_bytes(),
        }
    }
}

impl Entry {
    /// Appends the request's line to `out`.
    fn write_line(&self, out: &mut Vec<u8>, body_bytes: u64) {
        /// `,"name":`, the bytes before a field's value.
        macro_rules! key {
            ($name:literal) => {
                concat!(",\"", $name, "\":").as_bytes()
            };
        }
        let request_uri = self.request_uri.as_ref().map_or("/", PathAndQuery::as_str);
        let (uri, query) = request_uri.split_once('?').unwrap_or((request_uri, ""));
        out.reserve(512);
        out.extend_from_slice(b"{\"time\":");
        now_iso8601(out);
        let mut line = Line(out);
        line.0.extend_from_slice(key!("remote_addr"));
        match self.remote_addr {
            Some(IpAddr::V4(ip)) => {
                let [a, b, c, d] = ip.octets();
                line.0.push(b'"');
                for (i, octet) in [a, b, c, d].into_iter().enumerate() {
                    if i > 0 {
                        line.0.push(b'.');
                    }
                    line.0
                        .extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
                }
                line.0.push(b'"');
            }
            Some(ip) => line.value(ip.to_string().as_bytes()),
            None => line.value(b""),
        }
        let method = self.method.as_str();
        line.0.extend_from_slice(key!("request"));
        line.joined(&[
            method.as_bytes(),
            b" ",
            request_uri.as_bytes(),
            b" ",
            self.version.as_bytes(),
        ]);
        line.text(key!("request_method"), method.as_bytes());
        line.number(key!("request_length"), self.request_length);
        line.text(key!("request_uri"), request_uri.as_bytes());
        line.text(key!("uri"), uri.as_bytes());
        line.text(key!("query_string"), query.as_bytes());
        line.number(key!("status"), u64::from(self.status));
        line.number(key!("bytes_sent"), self.head_bytes + body_bytes);
        line.number(key!("body_bytes_sent"), body_bytes);
        line.text(key!("referer"), header(&self.referer));
        line.text(key!("useragent"), header(&self.user_agent));
        line.text(key!("forwardedfor"), header(&self.forwarded_for));
        line.seconds(key!("request_time"), Some(self.started.elapsed()));
        line.seconds(key!("upstream_response_time"), self.upstream_response_time);
        line.text(
            key!("upstream_addr"),
            self.upstream_addr.as_ref().map_or(b"", Address::as_bytes),
        );
        line.text(key!("request_id"), header(&self.request_id));
        line.text(
            key!("trace_id"),
            self.trace_id.as_ref().map_or(&b""[..], |id| &id[..]),
        );
        line.text(key!("route"), self.route.as_bytes());
        line.0.extend_from_slice(b"}\n");
    }
}

/// The trace id in a `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), none when it is not of
/// that shape.
pub(crate) fn trace_id_of(traceparent: &HeaderValue) -> Option<[u8; 32]> {
    let value = traceparent.as_bytes();
    if value.len() == 55
        && value[2] == b'-'
        && value[35] == b'-'
        && value[3..35].iter().all(u8::is_ascii_hexdigit)
    {
        value[3..35].try_into().ok()
    } else {
        None
    }
}

/// A header's value, empty when it is missing.
fn header(value: &Option<HeaderValue>) -> &[u8] {
    value.as_ref().map_or(b"", HeaderValue::as_bytes)
}

/// The current time as `"2026-11-22T14:05:09+00:00"` (quoted), made once a second per thread,
/// on the coarse clock (as nginx's is on its cached time).
fn now_iso8601(out: &mut Vec<u8>) {
    thread_local! {
        static MADE: std::cell::RefCell<(u64, Vec<u8>)> = const { std::cell::RefCell::new((u64::MAX, Vec::new())) };
    }
    let now = crate::coarse_timer::unix_seconds();
    MADE.with_borrow_mut(|(second, text)| {
        if *second != now {
            let at = time::OffsetDateTime::from_unix_timestamp(now as i64)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            text.clear();
            let _ = write!(
                text,
                "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00\"",
                at.year(),
                u8::from(at.month()),
                at.day(),
                at.hour(),
                at.minute(),
                at.second()
            );
            *second = now;
        }
        out.extend_from_slice(text);
    });
}

/// A JSON object being written, one string field after another (nginx's `escape=json` log
/// format makes every value a string; an empty one is written `-`, as nginx does). Each field
/// starts with its key's bytes, `,"name":`.
struct Line<'a>(&'a mut Vec<u8>);

impl Line<'_> {
    /// A value from the request, escaped as JSON needs.
    fn text(&mut self, key: &[u8], value: &[u8]) {
        self.0.extend_from_slice(key);
        self.value(value);
    }

    fn value(&mut self, value: &[u8]) {
        self.joined(&[value]);
    }

    /// A value made of `parts`, escaped as JSON needs (bytes that are not UTF-8 replaced).
    fn joined(&mut self, parts: &[&[u8]]) {
        if parts.iter().all(|part| part.is_empty()) {
            self.0.extend_from_slice(b"\"-\"");
        } else if parts.iter().all(|part| plain(part)) {
            self.0.push(b'"');
            for part in parts {
                self.0.extend_from_slice(part);
            }
            self.0.push(b'"');
        } else {
            // serde_json escapes quotes, backslashes and control characters: always valid JSON.
            let joined = parts.concat();
            let _ = serde_json::to_writer(&mut *self.0, &String::from_utf8_lossy(&joined));
        }
    }

    fn number(&mut self, key: &[u8], value: u64) {
        self.0.extend_from_slice(key);
        self.0.push(b'"');
        self.0
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self.0.push(b'"');
    }

    /// Seconds with millisecond resolution (`0.004`), as nginx writes times; `-` for none.
    fn seconds(&mut self, key: &[u8], value: Option<Duration>) {
        self.0.extend_from_slice(key);
        let Some(value) = value else {
            self.0.extend_from_slice(b"\"-\"");
            return;
        };
        // In u64: a u128 division costs more than the rest of the field.
        let micros = value
            .as_secs()
            .saturating_mul(1_000_000)
            .saturating_add(u64::from(value.subsec_micros()));
        let millis = (micros + 500) / 1000;
        let mut digits = itoa::Buffer::new();
        self.0.push(b'"');
        self.0
            .extend_from_slice(digits.format(millis / 1000).as_bytes());
        self.0.push(b'.');
        let fraction = digits.format(millis % 1000 + 1000);
        self.0.extend_from_slice(&fraction.as_bytes()[1..]);
        self.0.push(b'"');
    }
}

/// Whether JSON can take `bytes` as they are: printable ASCII other than `"` and `\`. Eight
/// bytes at a time, with the usual bit tricks: a byte-at-a-time loop over the line's values was a
/// noticeable part of writing it.
fn plain(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Some byte of `word` is below `n` (for `n` up to 0x80); exact when no byte has its high
    // bit set, which is checked on its own.
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH;
    let has = |word: u64, byte: u8| below(word ^ (ONES * u64::from(byte)), 1);
    let mut words = bytes.chunks_exact(8);
    let mut bad = 0;
    for chunk in &mut words {
        let word = u64::from_ne_bytes(chunk.try_into().expect("eight bytes"));
        bad |= (word & HIGH) | below(word, 0x20) | has(word, b'"') | has(word, b'\\');
    }
    bad == 0
        && words
            .remainder()
            .iter()
            .all(|&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\')
}

/// A response body that counts what it sends and logs the request when it is done (or dropped,
/// when the client goes away first).
///
/// `L` leads to the log: the log itself, or something that holds it, which the request already
/// owns a reference to.
pub(crate) struct Logged<B, L: AsRef<AccessLog>> {
    inner: B,
    sent: u64,
    entry: Option<Box<Entry>>,
    log: L,
}

impl<B, L: AsRef<AccessLog>> Logged<B, L> {
    pub(crate) fn new(inner: B, entry: Entry, log: L) -> Self {
        Logged {
            inner,
            sent: 0,
            entry: Some(Box::new(entry)),
            log,
        }
    }
}

impl<B, L: AsRef<AccessLog>> Drop for Logged<B, L> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            self.log.as_ref().write(&entry, self.sent);
        }
    }
}

impl<B, L> HttpBody for Logged<B, L>
where
    B: HttpBody<Data = bytes::Bytes> + Unpin,
    L: AsRef<AccessLog> + Unpin,
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
            remote_addr: Some(IpAddr::from([127, 0, 0, 1])),
            method: Method::GET,
            request_uri: Some(PathAndQuery::from_static("/todo?status=%22DONE%22")),
            version: "HTTP/1.1",
            request_length: 120,
            referer: None,
            user_agent: Some(HeaderValue::from_bytes(b"evil\"agent\\\t\xff").unwrap()),
            // UTF-8 that is not ASCII is kept.
            forwarded_for: Some(HeaderValue::from_bytes("café".as_bytes()).unwrap()),
            request_id: Some(HeaderValue::from_static("abc")),
            trace_id: trace_id_of(&HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )),
            route: "/",
            status: 200,
            head_bytes: 100,
            upstream_addr: Some(Address::of(&Arc::from("127.0.0.1:8081"))),
            upstream_response_time: Some(Duration::from_micros(4_200)),
        }
    }

    #[test]
    fn addresses_are_copied_when_short_and_shared_when_long() {
        for address in [
            "127.0.0.1:8081",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
            "a-rather-long-service-name.in-a-long-namespace.example:8080",
        ] {
            let made = Address::of(&Arc::from(address));
            assert_eq!(made.as_bytes(), address.as_bytes());
            assert_eq!(
                matches!(made, Address::Inline { .. }),
                address.len() <= 47,
                "{address}"
            );
        }
    }

    #[test]
    fn every_line_of_every_thread_is_written_in_its_thread_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(path.to_str().unwrap()).unwrap();
        let (threads, lines) = (SHARDS + 3, 2_000);
        std::thread::scope(|scope| {
            for thread in 0..threads {
                let log = &log;
                scope.spawn(move || {
                    for i in 0..lines {
                        let mut entry = entry();
                        let id = format!("{thread}-{i}");
                        entry.request_id = Some(HeaderValue::from_str(&id).unwrap());
                        log.write(&entry, 1);
                    }
                });
            }
        });
        log.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut next = vec![0; threads];
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let id = value["request_id"].as_str().unwrap();
            let (thread, i) = id.split_once('-').unwrap();
            let (thread, i): (usize, usize) = (thread.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[thread], "line {id} out of order");
            next[thread] += 1;
        }
        assert_eq!(next, vec![lines; threads]);
    }

    #[test]
    fn times_are_seconds_with_milliseconds() {
        let text = |micros: u64| {
            let mut out = vec![b'{'];
            Line(&mut out).seconds(b"\"t\":", Some(Duration::from_micros(micros)));
            String::from_utf8(out).unwrap()
        };
        assert_eq!(text(0), r#"{"t":"0.000""#);
        assert_eq!(text(4_200), r#"{"t":"0.004""#);
        assert_eq!(text(1_234_500), r#"{"t":"1.235""#);
        assert_eq!(text(61_000_000), r#"{"t":"61.000""#);
        let mut out = vec![b'{'];
        Line(&mut out).seconds(b"\"t\":", None);
        assert_eq!(out, br#"{"t":"-""#);
    }

    #[test]
    fn plain_bytes_are_printable_ascii_but_quotes_and_backslashes() {
        let simple = |bytes: &[u8]| {
            bytes
                .iter()
                .all(|&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\')
        };
        // Every byte value, at every place in words and tails of several lengths.
        for len in [1, 7, 8, 9, 16, 23] {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = byte;
                    assert_eq!(plain(&bytes), simple(&bytes), "{byte:#x} at {at} of {len}");
                }
            }
        }
        assert!(plain(b""));
        assert!(plain(b"GET /todo?status=DONE HTTP/1.1"));
        assert!(!plain("caf\u{e9} au lait, or so".as_bytes()));
    }

    #[test]
    fn lines_are_valid_json_with_the_seed_fields_in_order() {
        let mut line = Vec::new();
        entry().write_line(&mut line, 25);
        let text = String::from_utf8(line).unwrap();
        assert!(
            text.ends_with("}\n") && text.matches('\n').count() == 1,
            "{text}"
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["useragent"], "evil\"agent\\\t\u{fffd}");
        assert_eq!(value["forwardedfor"], "café");
        assert_eq!(value["remote_addr"], "127.0.0.1");
        assert_eq!(value["request"], "GET /todo?status=%22DONE%22 HTTP/1.1");
        assert_eq!(value["uri"], "/todo");
        assert_eq!(value["query_string"], "status=%22DONE%22");
        assert_eq!(value["request_id"], "abc");
        assert_eq!(value["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
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
                "trace_id",
                "route"
            ]
        );
    }
}
