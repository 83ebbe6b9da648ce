//! One accepted connection, served by hyper's HTTP/1 server under the time limits of `[serve]`.
//!
//! A connection waiting for its next request is closed after `keep_alive_timeout`; once the
//! first byte of a request head has arrived, the whole head must follow within
//! `header_read_timeout`; a handler waits at most `body_timeout` for a body (`TimedBody`, 408).
//! A request hyper refuses before the app sees it (400, 414, 431) still gets its access-log
//! line, with `-` for the method and path it could not read.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::web::body::TimedBody;
use crate::web::login::PeerAddr;

/// The time limits of every connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub keep_alive: Duration,
    pub body: Duration,
}

/// Where a connection stands between requests; shared by its socket and its service.
#[derive(Debug, Clone, Copy, Default)]
enum Phase {
    /// Nothing of the next request yet, since this instant (the connection's start or the end
    /// of the previous response).
    Waiting(Instant),
    /// The first bytes of a request head arrived at this instant.
    Head(Instant),
    /// A request is being handled or its response written: no read deadline.
    #[default]
    Busy,
}

type SharedPhase = Arc<Mutex<Phase>>;

fn get(phase: &SharedPhase) -> Phase {
    *phase.lock().unwrap_or_else(|p| p.into_inner())
}

fn set(phase: &SharedPhase, to: Phase) {
    *phase.lock().unwrap_or_else(|p| p.into_inner()) = to;
}

/// The future that serves `stream` until the client closes it, a limit closes it or the graceful stop ends it.
pub fn serve<S>(
    builder: &hyper::server::conn::http1::Builder,
    graceful: &hyper_util::server::graceful::GracefulShutdown,
    stream: TcpStream,
    app: S,
    timeouts: Timeouts,
) -> impl Future<Output = ()> + Send + 'static
where
    S: tower_service::Service<Request, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + Unpin + 'static,
{
    let phase: SharedPhase = Arc::new(Mutex::new(Phase::Waiting(Instant::now())));
    let peer = stream.peer_addr().ok().map(|a| a.ip());
    let io = hyper_util::rt::TokioIo::new(TimedIo {
        io: stream,
        phase: Arc::clone(&phase),
        timeouts,
        timer: None,
    });
    let service = AppService {
        app,
        phase: Arc::clone(&phase),
        body_timeout: timeouts.body,
        peer,
    };
    let connection = graceful.watch(builder.serve_connection(io, service));
    async move {
        if let Err(error) = connection.await {
            log_refusal(&error, get(&phase));
        }
    }
}

/// The status hyper answered with itself for a request it could not parse, if it did.
fn refused_status(error: &hyper::Error) -> Option<u16> {
    // hyper's error kinds are private; its messages are the documented way to tell them apart
    // ("URI too long" for 414, "message head is too large" for 431).
    let text = error.to_string();
    if error.is_parse_too_large() {
        Some(if text.starts_with("URI too long") {
            414
        } else {
            431
        })
    } else if error.is_parse() && !text.contains("HTTP2 preface") {
        Some(400)
    } else {
        None
    }
}

fn log_refusal(error: &hyper::Error, phase: Phase) {
    match refused_status(error) {
        Some(status) => {
            let elapsed = match phase {
                Phase::Head(since) => since.elapsed(),
                Phase::Waiting(_) | Phase::Busy => Duration::ZERO,
            };
            crate::logging::access("-", "-", status, elapsed);
        }
        None => tracing::debug!("connection ended: {error}"),
    }
}

/// The socket, with the read deadline of the connection's phase. hyper's own
/// `header_read_timeout` is not used: its timer also runs while an idle connection waits for
/// its next request, so one setting would bound both waits.
struct TimedIo {
    io: TcpStream,
    phase: SharedPhase,
    timeouts: Timeouts,
    timer: Option<Pin<Box<Sleep>>>,
}

impl AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let phase = get(&this.phase);
        let deadline = match phase {
            Phase::Waiting(since) => Some((since + this.timeouts.keep_alive, "idle")),
            Phase::Head(since) => Some((since + this.timeouts.header_read, "request head")),
            Phase::Busy => None,
        };
        if let Some((deadline, what)) = deadline {
            let deadline = tokio::time::Instant::from_std(deadline);
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{what} timeout"),
                )));
            }
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if buf.filled().len() > before && matches!(phase, Phase::Waiting(_)) {
            set(&this.phase, Phase::Head(Instant::now()));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The app as hyper calls it: the request body gets its deadline, and the connection counts as
/// busy from the call until its response body is done with.
#[derive(Clone)]
struct AppService<S> {
    app: S,
    phase: SharedPhase,
    body_timeout: Duration,
    /// The client's address, given to the login pages (see `web::login::PeerAddr`).
    peer: Option<std::net::IpAddr>,
}

impl<S> hyper::service::Service<hyper::Request<Incoming>> for AppService<S>
where
    S: tower_service::Service<Request, Response = Response, Error = Infallible> + Clone,
    S::Future: Unpin,
{
    type Response = hyper::Response<TrackedBody>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        set(&self.phase, Phase::Busy);
        let timeout = self.body_timeout;
        let mut request = request.map(|incoming| Body::new(TimedBody::new(incoming, timeout)));
        // Only the login pages need the address; an extension on every request would cost
        // an allocation each.
        if let Some(peer) = self.peer
            && request.uri().path().starts_with("/users/")
        {
            request.extensions_mut().insert(PeerAddr(peer));
        }
        // The router is always ready: no poll_ready needed (axum::serve does the same).
        let inner = self.app.clone().call(request);
        ResponseFuture {
            inner,
            phase: Some(Arc::clone(&self.phase)),
        }
    }
}

struct ResponseFuture<F> {
    inner: F,
    phase: Option<SharedPhase>,
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<hyper::Response<TrackedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Ok(response) = ready!(Pin::new(&mut this.inner).poll(cx));
        let phase = this.phase.take().unwrap_or_default();
        Poll::Ready(Ok(response.map(|inner| TrackedBody { inner, phase })))
    }
}

/// A response body that marks its connection idle once hyper is done with it (written to the
/// end, or dropped when the client went away).
struct TrackedBody {
    inner: Body,
    phase: SharedPhase,
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        set(&self.phase, Phase::Waiting(Instant::now()));
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
