//! Writing a response: the head with the first body frame, one vectored write per frame,
//! `Content-Length` or chunked framing, within the send timeout.

use std::io::{self, IoSlice};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::header;
use http::{Response, StatusCode, Version};
use http_body::Body;
use tokio::io::AsyncWrite;

use crate::wire;

/// Writes `response`. `Ok(true)` when the connection can take another request.
pub(super) async fn respond<T, B>(
    io: &mut T,
    out: &mut Vec<u8>,
    response: Response<B>,
    version: Version,
    head_request: bool,
    mut keep_alive: bool,
    send_timeout: Duration,
) -> io::Result<bool>
where
    T: AsyncWrite + Unpin,
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = response.into_parts();
    let status = parts.status;
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let bodiless =
        head_request || status.is_informational() || matches!(status.as_u16(), 204 | 304);
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut length: Option<u64> = None;
    let mut dated = false;
    for (name, value) in &parts.headers {
        if name == header::TRANSFER_ENCODING {
            // Framing is this connection's business.
            continue;
        }
        if name == header::CONTENT_LENGTH {
            // The first valid one counts; a second is not repeated.
            if length.is_some() {
                continue;
            }
            match value.to_str().ok().and_then(|v| v.parse().ok()) {
                Some(declared) => length = Some(declared),
                None => continue,
            }
        } else if name == header::CONNECTION {
            if wire::head::has_token(value.as_bytes(), b"close") {
                keep_alive = false;
            }
            // A switch of protocols keeps its `Connection: upgrade`.
            if !switching {
                continue;
            }
        } else if name == header::DATE {
            dated = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let declared = length;
    let length = declared.or(body.size_hint().exact());
    let chunked = !bodiless && length.is_none() && version == Version::HTTP_11;
    if !bodiless || head_request {
        match (declared, length) {
            // The handler's own.
            (Some(_), _) => {}
            (None, Some(length)) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            (None, None) if chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            // HTTP/1.0 without a length: the end of the connection ends the body.
            (None, None) if !head_request => keep_alive = false,
            (None, None) => {}
        }
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        with_date(|date| out.extend_from_slice(date));
        out.extend_from_slice(b"\r\n");
    }
    if !switching {
        match (keep_alive, version) {
            (false, _) => out.extend_from_slice(b"connection: close\r\n"),
            (true, Version::HTTP_10) => out.extend_from_slice(b"connection: keep-alive\r\n"),
            (true, _) => {}
        }
    }
    out.extend_from_slice(b"\r\n");

    let mut body = pin!(body);
    if bodiless {
        write_all(io, &mut [IoSlice::new(out)], send_timeout).await?;
        return Ok(keep_alive);
    }
    let mut left = length;
    let mut head_sent = false;
    loop {
        // The head goes out with the first frame when that is at hand, alone when it is not.
        let at_hand =
            match std::future::poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
                Poll::Ready(frame) => Some(data_of(frame)),
                Poll::Pending => None,
            };
        let next = match at_hand {
            Some(next) => next,
            None => {
                if !head_sent {
                    write_all(io, &mut [IoSlice::new(out)], send_timeout).await?;
                    head_sent = true;
                }
                data_of(std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await)
            }
        };
        let data = match next {
            Next::End => break,
            Next::Skip => continue,
            Next::Failed => return Ok(false),
            Next::Data(data) => data,
        };
        if let Some(left) = &mut left {
            match left.checked_sub(data.len() as u64) {
                Some(rest) => *left = rest,
                None => {
                    tracing::debug!("response body longer than its length; closing");
                    return Ok(false);
                }
            }
        }
        let mut size_line = [0u8; 18];
        let (size_line, crlf): (&[u8], &[u8]) = if chunked {
            (wire::chunk_size_line(data.len(), &mut size_line), b"\r\n")
        } else {
            (b"", b"")
        };
        let head: &[u8] = if head_sent { b"" } else { out };
        head_sent = true;
        // The data is written as it is, never copied: a zero-copy placeholder must reach the
        // socket unchanged (see `zero_copy`).
        write_all(
            io,
            &mut [
                IoSlice::new(head),
                IoSlice::new(size_line),
                IoSlice::new(&data),
                IoSlice::new(crlf),
            ],
            send_timeout,
        )
        .await?;
    }
    let head: &[u8] = if head_sent { b"" } else { out };
    let last: &[u8] = if chunked { b"0\r\n\r\n" } else { b"" };
    if !head.is_empty() || !last.is_empty() {
        write_all(
            io,
            &mut [IoSlice::new(head), IoSlice::new(last)],
            send_timeout,
        )
        .await?;
    }
    if left.is_some_and(|left| left > 0) {
        tracing::debug!("response body shorter than its length; closing");
        return Ok(false);
    }
    Ok(keep_alive)
}

/// What a body frame means for the writer.
enum Next {
    Data(Bytes),
    /// An empty frame, or trailers: nothing to send.
    Skip,
    End,
    Failed,
}

fn data_of<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    frame: Option<Result<http_body::Frame<Bytes>, E>>,
) -> Next {
    match frame {
        None => Next::End,
        Some(Err(error)) => {
            let error: Box<dyn std::error::Error + Send + Sync> = error.into();
            tracing::debug!(%error, "response body failed; closing the connection");
            Next::Failed
        }
        Some(Ok(frame)) => match frame.into_data() {
            Ok(data) if !data.is_empty() => Next::Data(data),
            _ => Next::Skip,
        },
    }
}

/// Writes all of `slices`; fails when the client takes nothing for `send_timeout`.
pub(super) async fn write_all<T: AsyncWrite + Unpin>(
    io: &mut T,
    slices: &mut [IoSlice<'_>],
    send_timeout: Duration,
) -> io::Result<()> {
    use futures_util::FutureExt;
    use tokio::io::AsyncWriteExt;
    let mut slices = &mut slices[..];
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        // Usually the socket takes it at once; only a write that has to wait is timed.
        let written = match io.write_vectored(slices).now_or_never() {
            Some(written) => written?,
            None => crate::coarse_timer::timeout(send_timeout, io.write_vectored(slices))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client took nothing within the send timeout",
                    )
                })??,
        };
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}

/// The current time as an HTTP date (on the coarse clock, as nginx's is on its cached time),
/// made once a second per thread.
pub(super) fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    use std::cell::RefCell;
    thread_local! {
        static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }
    DATE.with_borrow_mut(|(second, text)| {
        let this_second = crate::coarse_timer::unix_seconds();
        if *second != this_second {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(this_second);
            let formatted = httpdate::fmt_http_date(at);
            if formatted.len() == text.len() {
                text.copy_from_slice(formatted.as_bytes());
                *second = this_second;
            }
        }
        f(&text[..])
    })
}
