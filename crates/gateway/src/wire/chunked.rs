//! The chunked transfer coding (RFC 9112 section 7.1), read and written.
//!
//! ```text
//! chunked-body = *chunk last-chunk trailer-section CRLF
//! chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! chunk-ext    = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//! ```
//!
//! The decoder is strict: every line ends with CRLF, a size is hex digits that fit 64 bits, white
//! space after a size must lead to an extension, extensions hold no control characters (but
//! tab) and at most 16 KiB in a body, and the trailer section must parse as header fields and
//! fit the head's limits. Extensions and trailers are read and dropped (as nginx does with a
//! request's); only the data goes on.

use bytes::{Buf, Bytes, BytesMut};

/// Extension bytes allowed in one body (hyper's limit).
const MAX_EXTENSION_BYTES: u64 = 16 * 1024;

/// Most trailer lines in one body.
const MAX_TRAILER_LINES: usize = super::head::MAX_HEADERS;

/// Where the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first digit of a chunk size.
    Start,
    /// More digits of the size, or what ends them.
    Size,
    /// White space after the size: an extension must follow.
    SizeSpace,
    Extension,
    /// The LF of the size line.
    SizeLf,
    /// Chunk data, this many bytes to go.
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: the start of a trailer line, or the CR of the final empty line.
    TrailerStart,
    Trailer,
    TrailerLf,
    /// The LF of the final empty line.
    EndLf,
    Done,
}

/// A chunked body being read.
#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    state: State,
    size: u64,
    extension_bytes: u64,
    trailers: Option<BytesMut>,
    trailer_lines: usize,
    max_trailer_bytes: usize,
}

/// What the decoder found in the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    Data(Bytes),
    /// More bytes are needed.
    More,
    /// The body has ended; the bytes after it stay in the buffer.
    End,
}

/// Why a chunked body is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunked body: {0}")]
pub(crate) struct ChunkError(pub(crate) &'static str);

impl ChunkedDecoder {
    /// A decoder whose trailer section may take at most `max_trailer_bytes`.
    pub(crate) fn new(max_trailer_bytes: usize) -> Self {
        ChunkedDecoder {
            state: State::Start,
            size: 0,
            extension_bytes: 0,
            trailers: None,
            trailer_lines: 0,
            max_trailer_bytes,
        }
    }

    /// Reads from the front of `buf`, taking off what it used: the next piece of data, a sign
    /// that more bytes are needed, or the end of the body.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        let mut used = 0;
        let outcome = loop {
            if let State::Data(left) = self.state {
                // Data already consumed up to `used`: hand it out from there.
                buf.advance(used);
                used = 0;
                if buf.is_empty() {
                    break Ok(Decoded::More);
                }
                let take = left.min(buf.len() as u64) as usize;
                self.state = match left - take as u64 {
                    0 => State::DataCr,
                    left => State::Data(left),
                };
                return Ok(Decoded::Data(buf.split_to(take).freeze()));
            }
            if self.state == State::Done {
                break Ok(Decoded::End);
            }
            let Some(&byte) = buf.get(used) else {
                break Ok(Decoded::More);
            };
            used += 1;
            if let Err(error) = self.step(byte) {
                break Err(error);
            }
        };
        buf.advance(used.min(buf.len()));
        outcome
    }

    /// One byte of framing.
    fn step(&mut self, byte: u8) -> Result<(), ChunkError> {
        self.state = match (self.state, byte) {
            (State::Start, b) if b.is_ascii_hexdigit() => {
                self.size = u64::from(hex(b));
                State::Size
            }
            (State::Start, _) => return Err(ChunkError("missing chunk size")),
            (State::Size, b) if b.is_ascii_hexdigit() => {
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(u64::from(hex(b))))
                    .ok_or(ChunkError("chunk size too large"))?;
                State::Size
            }
            (State::Size | State::SizeSpace, b' ' | b'\t') => State::SizeSpace,
            (State::Size | State::SizeSpace, b';') => State::Extension,
            (State::Size, b'\r') => State::SizeLf,
            (State::Size, _) => return Err(ChunkError("invalid chunk size")),
            (State::SizeSpace, _) => {
                return Err(ChunkError(
                    "white space after a chunk size without an extension",
                ));
            }
            (State::Extension, b'\r') => State::SizeLf,
            (State::Extension, b) if b.is_ascii_control() && b != b'\t' => {
                return Err(ChunkError("control character in a chunk extension"));
            }
            (State::Extension, _) => {
                self.extension_bytes += 1;
                if self.extension_bytes >= MAX_EXTENSION_BYTES {
                    return Err(ChunkError("chunk extensions too long"));
                }
                State::Extension
            }
            (State::SizeLf, b'\n') if self.size == 0 => State::TrailerStart,
            (State::SizeLf, b'\n') => State::Data(self.size),
            (State::SizeLf, _) => return Err(ChunkError("a chunk size line without CRLF")),
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::Start,
            (State::DataCr | State::DataLf, _) => {
                return Err(ChunkError("chunk data longer than its size"));
            }
            (State::TrailerStart, b'\r') => State::EndLf,
            (State::TrailerStart | State::Trailer, b) => {
                let trailers = self.trailers.get_or_insert_with(BytesMut::new);
                trailers.extend_from_slice(&[b]);
                if trailers.len() >= self.max_trailer_bytes {
                    return Err(ChunkError("trailer section too large"));
                }
                if b == b'\r' {
                    State::TrailerLf
                } else {
                    State::Trailer
                }
            }
            (State::TrailerLf, b'\n') => {
                self.trailer_lines += 1;
                if self.trailer_lines > MAX_TRAILER_LINES {
                    return Err(ChunkError("too many trailer fields"));
                }
                let trailers = self.trailers.as_mut().expect("a trailer line is stored");
                trailers.extend_from_slice(b"\n");
                State::TrailerStart
            }
            (State::TrailerLf, _) => return Err(ChunkError("a trailer line without CRLF")),
            (State::EndLf, b'\n') => {
                self.check_trailers()?;
                State::Done
            }
            (State::EndLf, _) => return Err(ChunkError("a chunked body without its final CRLF")),
            (State::Data(_) | State::Done, _) => unreachable!("not framing bytes"),
        };
        Ok(())
    }

    /// The trailer section must be header fields (they are dropped after).
    fn check_trailers(&mut self) -> Result<(), ChunkError> {
        let Some(mut trailers) = self.trailers.take() else {
            return Ok(());
        };
        trailers.extend_from_slice(b"\r\n");
        let mut fields = vec![httparse::EMPTY_HEADER; self.trailer_lines];
        match httparse::parse_headers(&trailers, &mut fields) {
            Ok(httparse::Status::Complete((_, fields)))
                if fields.iter().all(|f| {
                    http::HeaderName::from_bytes(f.name.as_bytes()).is_ok()
                        && http::HeaderValue::from_bytes(f.value).is_ok()
                }) =>
            {
                Ok(())
            }
            _ => Err(ChunkError("invalid trailer section")),
        }
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// A chunk's size line, `{size in hex}\r\n`, written into `buf`.
pub(crate) fn chunk_size_line(size: usize, buf: &mut [u8; 18]) -> &[u8] {
    let digits = (usize::BITS - size.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, digit) in buf[..digits].iter_mut().enumerate() {
        let nibble = (size >> ((digits - 1 - i) * 4)) & 0xf;
        *digit = b"0123456789abcdef"[nibble];
    }
    buf[digits] = b'\r';
    buf[digits + 1] = b'\n';
    &buf[..digits + 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes all of `input` fed in pieces of `step` bytes: the data, and whether it ended
    /// (`Err` with the error otherwise), and what is left after the body.
    fn decode(input: &[u8], step: usize) -> (Result<Vec<u8>, ChunkError>, Vec<u8>) {
        let mut decoder = ChunkedDecoder::new(1024);
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Decoded::Data(piece)) => data.extend_from_slice(&piece),
                Ok(Decoded::End) => {
                    let mut rest = buf.to_vec();
                    rest.extend_from_slice(&input[fed..]);
                    return (Ok(data), rest);
                }
                Ok(Decoded::More) if fed < input.len() => {
                    let next = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..next]);
                    fed = next;
                }
                Ok(Decoded::More) => return (Err(ChunkError("unfinished")), buf.to_vec()),
                Err(error) => return (Err(error), buf.to_vec()),
            }
        }
    }

    #[test]
    fn bodies_decode_the_same_however_they_are_split() {
        let body = b"5\r\nhello\r\n6;name=value;x\r\n world\r\n0\r\nEtag: x\r\nA: b\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 100] {
            let (data, rest) = decode(body, step);
            assert_eq!(data.unwrap(), b"hello world", "step {step}");
            assert_eq!(rest, b"NEXT", "step {step}");
        }
        let (data, _) = decode(b"A \t;ext=\"quoted\"\r\n0123456789\r\n0\r\n\r\n", 3);
        assert_eq!(data.unwrap(), b"0123456789");
    }

    #[test]
    fn malformed_framing_is_refused() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5;a\x01\r\nhello\r\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"0\r\n\r\r",
            b"0\r\nNo colon\r\n\r\n",
            b"0\r\nA: b\n\r\n",
        ] {
            let (data, _) = decode(bad, 1);
            assert!(
                data.is_err(),
                "{:?} was taken",
                String::from_utf8_lossy(bad)
            );
        }
        let long_extension = format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(20_000));
        assert!(decode(long_extension.as_bytes(), 4096).0.is_err());
        let long_trailer = format!("0\r\nA: {}\r\n\r\n", "x".repeat(2000));
        assert!(decode(long_trailer.as_bytes(), 4096).0.is_err());
    }

    #[test]
    fn hex_sizes() {
        let mut buf = [0u8; 18];
        assert_eq!(chunk_size_line(0, &mut buf), b"0\r\n");
        assert_eq!(chunk_size_line(255, &mut buf), b"ff\r\n");
        assert_eq!(chunk_size_line(4096, &mut buf), b"1000\r\n");
        assert_eq!(
            chunk_size_line(usize::MAX, &mut buf),
            b"ffffffffffffffff\r\n"
        );
    }
}
