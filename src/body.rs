//! The body type every response and forwarded request uses, and its two constructors
//! (as in hyper's `http_proxy` example).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

/// A streaming body: what the upstream or the client sent, or bytes made here.
pub type Body = BoxBody<Bytes, hyper::Error>;

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
