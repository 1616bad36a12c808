//! The HTTP server's limits: connections at once ([`LimitedListener`]: a socket is accepted
//! only with a free place, held until it closes, and closed after [`IDLE_TIMEOUT`] without a
//! byte either way, so idle keep-alive connections cannot hold every place), a pool-wide request rate (a token bucket;
//! 429 with `Retry-After` beyond it), request bodies (413 past [`MAX_BODY_BYTES`]) and a time
//! limit per request.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use super::{HttpSettings, MAX_BODY_BYTES, REQUEST_TIMEOUT};
use crate::shell::{Rate, TokenBucket};

/// A listener that holds at most `max` connections at once.
pub(super) struct LimitedListener {
    inner: TcpListener,
    places: Arc<Semaphore>,
}

impl LimitedListener {
    pub(super) fn new(inner: TcpListener, max: usize) -> Self {
        LimitedListener {
            inner,
            places: Arc::new(Semaphore::new(max.max(1))),
        }
    }
}

/// A connection with no byte read or written for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection and its place (freed when it is dropped).
pub(super) struct LimitedStream {
    stream: TcpStream,
    _place: OwnedSemaphorePermit,
    /// When the connection is closed unless a byte moves before.
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl LimitedStream {
    fn new(stream: TcpStream, place: OwnedSemaphorePermit) -> Self {
        LimitedStream {
            stream,
            _place: place,
            idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
        }
    }

    /// After a poll of the socket: progress pushes the idle deadline back; no progress past
    /// it is an error that ends the connection.
    fn idle_check<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match poll {
            Poll::Ready(r) => {
                self.idle
                    .as_mut()
                    .reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
                Poll::Ready(r)
            }
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::ErrorKind::TimedOut.into())),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let place = match self.places.clone().acquire_owned().await {
            Ok(place) => place,
            // Never closed; if it were, wait forever rather than serve without a limit.
            Err(_) => std::future::pending().await,
        };
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    return (LimitedStream::new(stream, place), peer);
                }
                // Out of descriptors and the like: wait a little, never spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        self.idle_check(cx, poll)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.idle_check(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The pool-wide request rate.
#[derive(Debug)]
struct RequestRate {
    rate: Rate,
    bucket: Mutex<TokenBucket>,
}

/// Answers 429 when the request rate is spent.
async fn rate_limit(
    axum::extract::State(limit): axum::extract::State<Arc<RequestRate>>,
    request: Request,
    next: Next,
) -> Response {
    let admitted = limit
        .bucket
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .try_take(limit.rate, crate::shell::unix_ms());
    if !admitted {
        let mut response = (StatusCode::TOO_MANY_REQUESTS, "too many requests\n").into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    next.run(request).await
}

/// `router` behind the limits, outermost first: the rate, the body limit, the time limit.
pub(super) fn apply(router: Router, settings: &HttpSettings) -> Router {
    let per_sec = settings.requests_per_second.max(1);
    let rate = Rate::new(per_sec, per_sec.saturating_mul(2));
    let limit = Arc::new(RequestRate {
        rate,
        bucket: Mutex::new(TokenBucket::full(rate, crate::shell::unix_ms())),
    });
    router
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(limit, rate_limit))
}
