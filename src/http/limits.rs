//! The HTTP server's limits: connections at once ([`LimitedListener`]: a socket is accepted
//! only with a free place, held until it closes, and closed after [`IDLE_TIMEOUT`] without a
//! byte written, so neither idle keep-alive connections nor clients that trickle a request
//! that never ends, a byte now and then, can hold every place; and at most
//! [`PLACES_PER_SOURCE`] places per source, an address or an IPv6 /64), a request rate per
//! source (a token bucket each; 429 with `Retry-After` beyond it), request bodies (413 past
//! [`MAX_BODY_BYTES`]) and a time limit per request.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
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

/// Places one source (an address, an IPv6 /64) may hold at once: 64 clients of one host
/// sending a byte now and then would otherwise hold them all. Not for loopback: the local
/// dashboards, scrapers and reverse proxies the operator runs.
pub const PLACES_PER_SOURCE: u32 = 8;

/// A listener that holds at most `max` connections at once, [`PLACES_PER_SOURCE`] of them
/// per source.
pub(super) struct LimitedListener {
    inner: TcpListener,
    places: Arc<Semaphore>,
    per_source: PlacesPerSource,
    /// [`IDLE_TIMEOUT`] (shorter in tests).
    idle: Duration,
    /// Whether loopback sources are exempt from [`PLACES_PER_SOURCE`] (not in tests).
    loopback_exempt: bool,
}

impl LimitedListener {
    pub(super) fn new(inner: TcpListener, max: usize) -> Self {
        LimitedListener {
            inner,
            places: Arc::new(Semaphore::new(max.max(1))),
            per_source: Arc::default(),
            idle: IDLE_TIMEOUT,
            loopback_exempt: true,
        }
    }
}

/// A connection with no byte written for this long is closed: idle between requests, or
/// sending a request that never ends (every answer here takes at most `REQUEST_TIMEOUT`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection and its place (freed when it is dropped).
pub(super) struct LimitedStream {
    stream: TcpStream,
    _place: OwnedSemaphorePermit,
    _source: SourcePlace,
    /// When the connection is closed unless a byte is written before.
    idle: Pin<Box<tokio::time::Sleep>>,
    idle_time: Duration,
}

/// Places held per source (by [`crate::shell::admission::source_key`]).
type PlacesPerSource = Arc<Mutex<HashMap<IpAddr, u32>>>;

/// A source's count of places, given back when the connection is dropped (`None`: a source
/// not counted).
struct SourcePlace(Option<(IpAddr, PlacesPerSource)>);

impl SourcePlace {
    /// A place for `peer`'s source, if it holds fewer than [`PLACES_PER_SOURCE`] (always
    /// for loopback when `loopback_exempt`).
    fn take(per_source: &PlacesPerSource, peer: IpAddr, loopback_exempt: bool) -> Option<Self> {
        if loopback_exempt && peer.to_canonical().is_loopback() {
            return Some(SourcePlace(None));
        }
        let key = crate::shell::admission::source_key(peer);
        let mut counts = per_source.lock().unwrap_or_else(|p| p.into_inner());
        let held = counts.entry(key).or_insert(0);
        if *held >= PLACES_PER_SOURCE {
            return None;
        }
        *held += 1;
        Some(SourcePlace(Some((key, per_source.clone()))))
    }
}

impl Drop for SourcePlace {
    fn drop(&mut self) {
        let Some((key, per_source)) = &self.0 else {
            return;
        };
        let mut counts = per_source.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = counts.get_mut(key) {
            *held -= 1;
            if *held == 0 {
                counts.remove(key);
            }
        }
    }
}

impl LimitedStream {
    fn new(
        stream: TcpStream,
        place: OwnedSemaphorePermit,
        source: SourcePlace,
        idle_time: Duration,
    ) -> Self {
        LimitedStream {
            stream,
            _place: place,
            _source: source,
            idle: Box::pin(tokio::time::sleep(idle_time)),
            idle_time,
        }
    }

    /// After a poll of the socket: a write that made progress pushes the deadline back (a
    /// read does not: a request trickled in forever holds a place for nothing); no progress
    /// past it is an error that ends the connection.
    fn idle_check<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<T>>,
        wrote: bool,
    ) -> Poll<std::io::Result<T>> {
        match poll {
            Poll::Ready(r) => {
                if wrote {
                    let next = tokio::time::Instant::now() + self.idle_time;
                    self.idle.as_mut().reset(next);
                }
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
                    match SourcePlace::take(&self.per_source, peer.ip(), self.loopback_exempt) {
                        Some(source) => {
                            let stream = LimitedStream::new(stream, place, source, self.idle);
                            return (stream, peer);
                        }
                        // Its source holds its share of the places: closed at once.
                        None => drop(stream),
                    }
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
        self.idle_check(cx, poll, false)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.idle_check(cx, poll, true)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A request's peer, as the listener accepted it (the key of its request rate).
#[derive(Debug, Clone, Copy)]
pub(super) struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, LimitedListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, LimitedListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// Sources whose request rate is followed at once; past it, sources whose bucket is full
/// again (idle for a second or two) are forgotten, at most once a second, and a new source
/// finds no room until then (429).
pub const RATE_SOURCES: usize = 4096;

/// The request rate, per source (an address, an IPv6 /64; loopback is one source like any
/// other, so clients behind a local reverse proxy share one): one client past it gets 429,
/// the others (a dashboard, the Prometheus scraper) are still answered.
#[derive(Debug)]
struct RequestRate {
    rate: Rate,
    sources: Mutex<SourceBuckets>,
}

#[derive(Debug, Default)]
struct SourceBuckets {
    buckets: HashMap<IpAddr, TokenBucket>,
    /// When full buckets were last forgotten (unix ms; `None`: never).
    swept_ms: Option<u64>,
}

impl RequestRate {
    /// Whether a request of `source` (`None`: unknown, one source for all) is admitted.
    fn admit(&self, source: Option<IpAddr>, now_ms: u64) -> bool {
        let key = source.map_or(
            IpAddr::from([0, 0, 0, 0]),
            crate::shell::admission::source_key,
        );
        let rate = self.rate;
        let mut s = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if !s.buckets.contains_key(&key) && s.buckets.len() >= RATE_SOURCES {
            if !crate::shell::admission::full_sweep_due(s.swept_ms, now_ms) {
                return false;
            }
            s.swept_ms = Some(now_ms);
            s.buckets.retain(|_, b| !b.is_full(rate, now_ms));
            if s.buckets.len() >= RATE_SOURCES {
                return false;
            }
        }
        s.buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::full(rate, now_ms))
            .try_take(rate, now_ms)
    }
}

/// Answers 429 when the request's source has spent its rate.
async fn rate_limit(
    axum::extract::State(limit): axum::extract::State<Arc<RequestRate>>,
    request: Request,
    next: Next,
) -> Response {
    let source = request
        .extensions()
        .get::<axum::extract::ConnectInfo<Peer>>()
        .map(|c| c.0.0.ip());
    if !limit.admit(source, crate::shell::unix_ms()) {
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
        sources: Mutex::default(),
    });
    router
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(limit, rate_limit))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use axum::Router;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpSocket, TcpStream};

    use super::{LimitedListener, PLACES_PER_SOURCE};

    /// Each source its own rate; a full table of sources makes room only from sources idle
    /// long enough for their bucket to be full again, at most once a second.
    #[test]
    fn the_request_rate_is_per_source_and_its_table_bounded() {
        use super::{RATE_SOURCES, RequestRate};
        use crate::shell::Rate;
        let limit = RequestRate {
            rate: Rate::new(1, 2),
            sources: Default::default(),
        };
        let a = Some([10, 0, 0, 1].into());
        let b = Some([10, 0, 0, 2].into());
        assert!(limit.admit(a, 1_000) && limit.admit(a, 1_000));
        assert!(!limit.admit(a, 1_000), "past a's burst");
        assert!(limit.admit(b, 1_000), "b has its own");
        assert!(!limit.admit(a, 1_001));
        assert!(limit.admit(a, 2_000), "a's refill");
        // An IPv6 /64 is one source.
        let v6 =
            |last: u16| Some(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last).into());
        assert!(limit.admit(v6(1), 1_000) && limit.admit(v6(2), 1_000));
        assert!(!limit.admit(v6(3), 1_000));
        // The table full of busy sources: a new one waits for a sweep.
        for i in 0..RATE_SOURCES as u32 {
            limit.admit(
                Some(std::net::Ipv4Addr::from(0x0b00_0000 + i).into()),
                5_000,
            );
        }
        let newcomer = Some([12, 0, 0, 1].into());
        assert!(!limit.admit(newcomer, 5_000), "no room");
        assert!(!limit.admit(newcomer, 5_500), "busy sources are kept");
        assert!(limit.admit(newcomer, 8_000), "idle sources forgotten");
    }

    /// The test's idle time.
    const IDLE: Duration = Duration::from_millis(600);

    async fn server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/", get(|| async { "ok" }));
        let mut limited = LimitedListener::new(listener, 64);
        limited.idle = IDLE;
        // The test's sources are all loopback (127.0.0.1, 127.0.0.2).
        limited.loopback_exempt = false;
        tokio::spawn(async move {
            axum::serve(limited, router).await.unwrap();
        });
        addr
    }

    async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::from((source, 0)))
            .expect("bind the client's source address");
        socket.connect(to).await.unwrap()
    }

    /// Whether the server closed `stream` (end of stream or a reset) within `within`.
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(within, stream.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// One source holds at most its share of the places: its next connection is closed at
    /// once, while another source is served.
    #[tokio::test]
    async fn a_source_holds_at_most_its_share_of_the_places() {
        let addr = server().await;
        let mut held = Vec::new();
        for _ in 0..PLACES_PER_SOURCE {
            let mut s = connect_from([127, 0, 0, 1], addr).await;
            s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            held.push(s);
        }
        let mut over = connect_from([127, 0, 0, 1], addr).await;
        assert!(closed_within(&mut over, Duration::from_secs(5)).await);
        let mut other = connect_from([127, 0, 0, 2], addr).await;
        other
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        other.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // A place given back is taken again.
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut again = connect_from([127, 0, 0, 1], addr).await;
        again
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        again.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    /// A request trickled in a byte at a time, never ending, is closed once nothing has been
    /// written for the idle time, however often bytes come.
    #[tokio::test]
    async fn a_request_that_never_ends_is_closed() {
        let addr = server().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let started = tokio::time::Instant::now();
        let trickle = async {
            loop {
                tokio::time::sleep(IDLE / 6).await;
                if s.write_all(b"X").await.is_err() {
                    return;
                }
                let mut buf = [0u8; 64];
                match tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return,
                    _ => {}
                }
            }
        };
        tokio::time::timeout(IDLE * 10, trickle)
            .await
            .expect("closed while still trickling");
        assert!(started.elapsed() >= IDLE / 2, "{:?}", started.elapsed());
    }
}
