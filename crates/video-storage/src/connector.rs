//! The HTTP client `object_store` uses for Azure and S3: hyper's, plain HTTP, with the time
//! bounds a request to a store needs (connect within 5 s, an answer's head within 30 s, then data
//! at least every 30 s; no bound on a whole download, which lasts as long as a film streams).
//!
//! `object_store`'s own client is reqwest with a TLS feature; in one binary that turns TLS on for
//! every reqwest client, and each then loads the system's CA certificates when built and fails
//! where there are none (the FROM-scratch image). So the cloud stores speak plain HTTP for now:
//! an emulator (Azurite), MinIO or a store on the local network; HTTPS is refused at startup
//! (docs/video.md).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody, HttpResponse,
    HttpResponseBody, HttpService,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TimedOut(&'static str);

/// Makes the client for a store.
#[derive(Debug, Default)]
pub(crate) struct PlainHttp;

impl object_store::client::HttpConnector for PlainHttp {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(HttpClient::new(Service { client }))
    }
}

#[derive(Debug)]
struct Service {
    client: Client<HttpConnector, HttpRequestBody>,
}

#[async_trait::async_trait]
impl HttpService for Service {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let answer = tokio::time::timeout(HEAD_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| HttpError::new(HttpErrorKind::Timeout, TimedOut("no answer within 30 s")))?
            .map_err(|e| {
                let kind = if e.is_connect() {
                    HttpErrorKind::Connect
                } else {
                    HttpErrorKind::Request
                };
                HttpError::new(kind, e)
            })?;
        let (parts, body) = answer.into_parts();
        let body = IdleBounded {
            inner: body,
            idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
        };
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}

/// A response body that fails when no data comes for [`IDLE_TIMEOUT`].
struct IdleBounded {
    inner: Incoming,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl Body for IdleBounded {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.idle
                    .as_mut()
                    .reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
                Poll::Ready(
                    frame.map(|f| f.map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e))),
                )
            }
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(HttpError::new(
                    HttpErrorKind::Timeout,
                    TimedOut("no data for 30 s"),
                )))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
