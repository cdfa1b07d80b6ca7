//! The body type every response and forwarded request uses, its two constructors (as in
//! hyper's `http_proxy` example), and the idle timeout every streamed body runs under.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Any error a body can end with: hyper's own, or [`Stalled`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a body ended early; the cause is its source.
///
/// A named type rather than a bare `Box<dyn Error>`: the compiler cannot prove futures over
/// the latter `Send` for every lifetime when hyper's connection drives them.
#[derive(Debug)]
pub struct BodyError(BoxError);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("body ended early")
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// A streaming body: what the upstream or the client sent, or bytes made here.
pub type Body = BoxBody<Bytes, BodyError>;

/// A body made of bytes the gateway already holds.
pub fn full(chunk: impl Into<Bytes>) -> Body {
    Full::new(chunk.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
#[must_use]
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// Any body as a [`Body`], without a timeout (a tunnel's, whose bytes are not a body).
pub fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(|e| BodyError(e.into())).boxed()
}

/// A streamed body paused longer than the configured idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("no data for {}s: the body stalled", .0.as_secs())]
pub struct Stalled(pub Duration);

/// Whether `error` or one of its causes is a [`Stalled`] body.
#[must_use]
pub fn is_stalled(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<Stalled>() {
            return true;
        }
        next = error.source();
    }
    false
}

/// `body`, failing with [`Stalled`] when no frame arrives for `idle` while it is being read.
///
/// The clock runs only while the reader waits for data: a reader that is slow to ask (a client
/// slow to take a download) is bounded elsewhere (the connection's write timeout).
pub fn idle_timeout<B>(body: B, idle: Duration) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    if body.is_end_stream() {
        return boxed(body);
    }
    Idle {
        body,
        limit: idle,
        timer: None,
    }
    .boxed()
}

struct Idle<B> {
    body: B,
    limit: Duration,
    /// Armed when the body last answered `Pending`; cleared by every frame.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> hyper::body::Body for Idle<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.timer = None;
            return Poll::Ready(frame.map(|f| f.map_err(|e| BodyError(e.into()))));
        }
        let idle = this.limit;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + idle)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(BodyError(Box::new(Stalled(idle))))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, channel::Channel};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_sending_fails_as_stalled_after_the_idle_time() {
        let (mut tx, channel) = Channel::<Bytes, BoxError>::new(1);
        let mut body = idle_timeout(channel, Duration::from_secs(5));
        tx.send_data(Bytes::from_static(b"a")).await.unwrap();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        tokio::time::sleep(Duration::from_secs(4)).await;
        tx.send_data(Bytes::from_static(b"b")).await.unwrap();
        // A frame within the idle time resets the clock.
        assert!(body.frame().await.unwrap().is_ok());
        let started = Instant::now();
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(is_stalled(&error), "{error}");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        drop(tx);
    }
}
