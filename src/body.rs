//! Message bodies crossing the proxy, streamed frame by frame and never
//! buffered whole.
//!
//! [`ResponseBody`] is what the client receives, whoever made it: an
//! upstream, the static file server or the proxy itself. It counts the bytes
//! it yields and, when hyper drops it (the response is finished or the client
//! went away), closes the request's [`crate::access::Record`].
//! [`RequestBody`] is what goes to an upstream: the client's body, or nothing.

use crate::access;
use crate::compress::{Coding, body::Encoded};
use crate::timer::Timeout;
use crate::upstream::pool::Reuse;
use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

/// Any error a body can fail with.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A response body on its way to the client.
pub struct ResponseBody {
    kind: Kind,
    bytes: u64,
    /// `poll_frame` returned `None`: everything was sent.
    ended: bool,
    /// How many body bytes go on the wire, when the response head says
    /// (`Content-Length`, or none at all for `HEAD`, `204`, `304`): hyper
    /// stops polling a body once that many were written.
    expected: Option<u64>,
    record: Option<access::Record>,
}

enum Kind {
    Empty,
    Text(Option<Bytes>),
    /// An upstream's body, and its connection to give back at the end.
    Upstream(Incoming, Option<Reuse>, Stall),
    Static(hyper_staticfile::Body),
    /// Another body, compressed on the way.
    Compressed(Box<Encoded<ResponseBody>>),
}

impl ResponseBody {
    pub fn empty() -> Self {
        Self::new(Kind::Empty)
    }

    pub fn text(text: &'static str) -> Self {
        Self::bytes(Bytes::from_static(text.as_bytes()))
    }

    /// A body the proxy made itself, whole.
    pub fn bytes(bytes: Bytes) -> Self {
        Self::new(Kind::Text(Some(bytes)))
    }

    /// This body, compressed with `coding` as it streams.
    pub fn compressed(self, coding: Coding) -> Self {
        Self::new(Kind::Compressed(Box::new(Encoded::new(self, coding))))
    }

    pub fn upstream(body: Incoming, reuse: Option<Reuse>) -> Self {
        Self::new(Kind::Upstream(body, reuse, Stall::default()))
    }

    /// An upstream's body that fails once it sends nothing for `limit`
    /// (the upstream's `read_timeout`, as nginx's `proxy_read_timeout`
    /// counts between two reads).
    pub fn upstream_within(body: Incoming, reuse: Option<Reuse>, limit: Duration) -> Self {
        let stall = Stall {
            limit: Some(limit),
            timer: None,
        };
        Self::new(Kind::Upstream(body, reuse, stall))
    }

    pub fn static_file(body: hyper_staticfile::Body) -> Self {
        Self::new(Kind::Static(body))
    }

    fn new(kind: Kind) -> Self {
        ResponseBody {
            kind,
            bytes: 0,
            ended: false,
            expected: None,
            record: None,
        }
    }

    /// Close `record` when this body is done. `length`: the body's length
    /// on the wire, if known (see [`wire_length`]).
    pub fn set_record(&mut self, record: access::Record, length: Option<u64>) {
        self.expected = length;
        self.record = Some(record);
    }
}

/// How many body bytes a response puts on the wire, if its head says: none
/// for `HEAD` and for `1xx`, `204` and `304` answers (RFC 9110 §6.4.1),
/// else the body's exact length when it knows it (an upstream's body with
/// a `Content-Length`), else its `Content-Length` header (static files).
pub fn wire_length(
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
    body: &ResponseBody,
) -> Option<u64> {
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Some(0);
    }
    body.size_hint().exact().or_else(|| {
        headers
            .get(header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    })
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // Bodyless answers (HEAD, 204, 304) and bodies the server knew were
        // complete without a last poll still free their connection.
        if let Kind::Upstream(body, reuse, _) = &mut self.kind
            && body.is_end_stream()
            && let Some(reuse) = reuse.take()
        {
            reuse.give_back();
        }
        if let Some(record) = self.record.take() {
            let complete = self.ended || self.is_end_stream() || self.expected == Some(self.bytes);
            record.finish(self.bytes, complete);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let frame = match &mut this.kind {
            Kind::Empty => None,
            Kind::Text(text) => text.take().map(|t| Ok(Frame::data(t))),
            Kind::Upstream(body, reuse, stall) => {
                let frame = match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(frame) => {
                        stall.timer = None;
                        frame
                    }
                    Poll::Pending => {
                        let Some(limit) = stall.limit else {
                            return Poll::Pending;
                        };
                        let timer = stall.timer.get_or_insert_with(|| Timeout::after(limit));
                        ready!(std::future::Future::poll(Pin::new(timer), cx));
                        stall.timer = None;
                        let error =
                            format!("the upstream sent nothing for {limit:?} (read_timeout)");
                        if let Some(record) = &mut this.record {
                            record.body_error(error.clone());
                        }
                        // Not given back: the connection is in an unknown state.
                        reuse.take();
                        return Poll::Ready(Some(Err(error.into())));
                    }
                };
                if frame.is_none() || body.is_end_stream() {
                    // Read to the end: the connection can serve another request.
                    if let Some(reuse) = reuse.take() {
                        reuse.give_back();
                    }
                }
                frame.map(|r| r.map_err(BodyError::from))
            }
            Kind::Static(body) => {
                ready!(Pin::new(body).poll_frame(cx)).map(|r| r.map_err(BodyError::from))
            }
            Kind::Compressed(body) => {
                ready!(Pin::new(&mut **body).poll_frame(cx)).map(|r| r.map_err(BodyError::from))
            }
        };
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            this.bytes += data.map_or(0, |d| d.len() as u64);
        }
        match (&frame, &mut this.record) {
            (None, _) => this.ended = true,
            (Some(Err(e)), Some(record)) => record.body_error(e.to_string()),
            _ => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Text(text) => text.is_none(),
            Kind::Upstream(body, _, _) => body.is_end_stream(),
            Kind::Static(body) => body.is_end_stream(),
            Kind::Compressed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Text(text) => SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64)),
            Kind::Upstream(body, _, _) => body.size_hint(),
            Kind::Static(body) => body.size_hint(),
            Kind::Compressed(body) => body.size_hint(),
        }
    }
}

/// How long an upstream's body may stall, and the timer while it does.
#[derive(Default)]
pub struct Stall {
    limit: Option<Duration>,
    timer: Option<Timeout>,
}

/// A request body on its way to an upstream.
pub enum RequestBody {
    /// The request has no body (`GET`, WebSocket upgrades, …).
    Empty,
    /// The client's body, streamed; each frame moves `progress` forward so a
    /// slow upload does not count against the upstream's `read_timeout`.
    /// A body that stalls for `stall_limit` (`client_body_timeout`) fails
    /// with [`BodyTimedOut`].
    Streaming {
        body: Incoming,
        progress: Arc<Progress>,
        stall_limit: Duration,
        stalled: Option<Timeout>,
    },
}

impl RequestBody {
    /// The client's `body`, failing if it stalls for `stall_limit`.
    pub fn streaming(body: Incoming, stall_limit: Duration) -> RequestBody {
        RequestBody::Streaming {
            body,
            progress: Progress::new(),
            stall_limit,
            stalled: None,
        }
    }
}

/// A request body that sent nothing for `client_body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {0:?} (client_body_timeout)")]
pub struct BodyTimedOut(pub Duration);

/// The client's request body failed: it stalled ([`BodyTimedOut`]) or
/// broke (the client went away, or sent a malformed chunk).
#[derive(Debug, thiserror::Error)]
#[error("reading the request body: {0}")]
pub struct ClientBodyError(#[source] pub BodyError);

impl Body for RequestBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Streaming {
                body,
                progress,
                stall_limit,
                stalled,
            } => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(frame) => {
                    *stalled = None;
                    progress.touch();
                    Poll::Ready(frame.map(|r| r.map_err(|e| ClientBodyError(e.into()))))
                }
                Poll::Pending => {
                    let limit = *stall_limit;
                    let timer = stalled.get_or_insert_with(|| Timeout::after(limit));
                    ready!(std::future::Future::poll(Pin::new(timer), cx));
                    *stalled = None;
                    Poll::Ready(Some(Err(ClientBodyError(Box::new(BodyTimedOut(limit))))))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Streaming { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Streaming { body, .. } => body.size_hint(),
        }
    }
}

/// When a request body last moved, in milliseconds since `origin`.
#[derive(Debug)]
pub struct Progress {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Progress {
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// The instant the body last moved (or was created).
    pub fn last(&self) -> Instant {
        self.origin + std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}
