//! The gateway's one HTTP/1.1 grammar (RFC 9112): request and response heads, `Content-Length`,
//! `Transfer-Encoding` and chunked framing. The connection loop that serves clients
//! (`server::http1`) and the client that talks to upstream servers (`client`) both parse with it,
//! so the gateway has one reading of where a message starts and ends, whichever side it faces.
//!
//! Heads are parsed by httparse with its default (strict) settings, the parser and settings hyper
//! uses; the rules around it follow hyper's server, so that a request means the same to the
//! gateway as to a hyper service behind it (the differential test in `tests/gateway/grammar.rs`
//! feeds the same bytes to both). Where this grammar is stricter than hyper's on purpose, it says
//! so:
//! - a request framed by both `Transfer-Encoding` and `Content-Length` is refused (400) rather
//!   than read as chunked (RFC 9112 section 6.3 allows either; refusing is the one a proxy can
//!   trust, since no hop can then read it differently);
//! - a chunk-size line is the size, then extensions (`;name=value`, optionally after spaces) and
//!   CRLF, as RFC 9112's grammar has it; hyper also takes spaces after the size with no extension.
//!
//! Layout: [`head`] (request and response heads, the framing headers), [`chunked`] (the chunked
//! coding, both ways).

pub(crate) mod chunked;
pub(crate) mod head;

pub(crate) use chunked::{ChunkedDecoder, Decoded, chunk_size_line};
pub(crate) use head::{BodyFraming, HeadError, RequestHead, parse_request};
