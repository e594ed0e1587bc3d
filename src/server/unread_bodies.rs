//! Early answers without a reset. A request can be answered before its body is read: a
//! declared length over the limit (413), a cross-site change (403), a wrong content type
//! (415), an unknown path or method (404, 405), a store outage before the handler runs
//! (503). hyper then gives the body one read and, if more is on its way, closes the
//! connection with the client's bytes unread, and the kernel resets it: a client that
//! writes its whole body before reading (most HTTP libraries without `Expect:
//! 100-continue`) sees a broken pipe instead of the answer, and nginx in front answers
//! its own 502.
//!
//! So every request body is handed to the router in a [`DrainOnDrop`]: dropped before its
//! end, it goes on being read and thrown away in a task of its own while the answer is
//! written, until it ends (the connection then stays open for the next request), for at
//! most [`MAX_DRAINED_BYTES`] and only until [`BODY_READ_TIMEOUT`] after the request
//! started, so a slow or endless sender is still cut off at the body deadline. A body
//! declared longer than that bound is not read at all, and neither is one whose client
//! waits for `100 Continue` that was never sent (it sends nothing after our answer).
//!
//! One mechanism for every refusal, present and future, at no cost for a request without
//! a body or one read to its end: no allocation (the wrapper lives in the box axum makes
//! for every body anyway), no copy, a flag per frame.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Bytes;
use axum::http::{Request, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::limits::{BODY_READ_TIMEOUT, MAX_DRAINED_BYTES};

/// Hands `request`'s body to the router in a [`DrainOnDrop`] (mapped over every request
/// of a connection).
pub(crate) fn drain_on_drop<B>(request: Request<B>) -> Request<DrainOnDrop<B>>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Send,
{
    let (parts, body) = request.into_parts();
    // Only a body still to come needs the clock or the headers.
    let unread = (!body.is_end_stream()).then(|| Unread {
        started: Instant::now(),
        awaits_continue: parts
            .headers
            .get(header::EXPECT)
            .is_some_and(|expect| expect.as_bytes().eq_ignore_ascii_case(b"100-continue")),
        polled: false,
    });
    Request::from_parts(
        parts,
        DrainOnDrop {
            body: Some(body),
            unread,
        },
    )
}

/// A request body that, dropped before its end, is read to its end and thrown away
/// (within bounds: see the module).
pub(crate) struct DrainOnDrop<B>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Send,
{
    /// Taken by the drop, to be drained.
    body: Option<B>,
    /// While some of the body may still be unread: what deciding to drain it needs.
    /// `None` once it ended (or failed).
    unread: Option<Unread>,
}

/// What is known of a body not yet read to its end.
#[derive(Debug, Clone, Copy)]
struct Unread {
    /// When the request reached the router; the body deadline counts from here.
    started: Instant,
    /// Whether the client sent `Expect: 100-continue`: hyper sends `100 Continue` at the
    /// first read of the body, and a client that never got it sends no body.
    awaits_continue: bool,
    /// Whether anything read the body at all.
    polled: bool,
}

/// Until when what is left of a body dropped unread is drained, if at all: not when the
/// client waits for a `100 Continue` it never got, nor when more than
/// [`MAX_DRAINED_BYTES`] are declared still to come, nor past the body deadline.
fn drain_deadline(unread: Unread, declared_left: Option<u64>, now: Instant) -> Option<Instant> {
    if unread.awaits_continue && !unread.polled {
        return None;
    }
    if declared_left.is_some_and(|left| left > MAX_DRAINED_BYTES as u64) {
        return None;
    }
    let deadline = unread.started + BODY_READ_TIMEOUT;
    (deadline > now).then_some(deadline)
}

/// Reads `body` to its end and drops it, for at most [`MAX_DRAINED_BYTES`] and until
/// `deadline`; dropped sooner, hyper closes the connection.
async fn discard<B>(body: B, deadline: Instant)
where
    B: Body<Data = Bytes> + Unpin,
{
    let read = async {
        let mut body = body;
        let mut total = 0;
        while let Some(Ok(frame)) = body.frame().await {
            total += frame.data_ref().map_or(0, Bytes::len);
            if total > MAX_DRAINED_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline, read).await;
}

impl<B> Body for DrainOnDrop<B>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Send,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(unread) = &mut this.unread {
            unread.polled = true;
        }
        let frame = ready!(Pin::new(body).poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            this.unread = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl<B> Drop for DrainOnDrop<B>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Send,
{
    fn drop(&mut self) {
        let (Some(unread), Some(body)) = (self.unread, self.body.take()) else {
            return;
        };
        if body.is_end_stream() {
            return;
        }
        let Some(deadline) = drain_deadline(unread, body.size_hint().exact(), Instant::now())
        else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(discard(body, deadline));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;

    fn unread(awaits_continue: bool, polled: bool, started: Instant) -> Unread {
        Unread {
            started,
            awaits_continue,
            polled,
        }
    }

    #[test]
    fn a_body_within_the_bound_and_the_deadline_is_drained_until_the_deadline() {
        let started = Instant::now();
        let now = started + BODY_READ_TIMEOUT / 2;
        let bounded = Some(MAX_DRAINED_BYTES as u64);
        assert_eq!(
            drain_deadline(unread(false, false, started), bounded, now),
            Some(started + BODY_READ_TIMEOUT)
        );
        // Chunked: no declared length, drained up to the bound.
        assert!(drain_deadline(unread(false, true, started), None, now).is_some());
    }

    #[test]
    fn a_body_declared_over_the_bound_is_not_drained() {
        let started = Instant::now();
        let over = Some(MAX_DRAINED_BYTES as u64 + 1);
        assert_eq!(
            drain_deadline(unread(false, false, started), over, started),
            None
        );
    }

    #[test]
    fn nothing_is_drained_past_the_body_deadline() {
        let started = Instant::now();
        let late = started + BODY_READ_TIMEOUT;
        assert_eq!(
            drain_deadline(unread(false, true, started), Some(1), late),
            None
        );
    }

    #[test]
    fn a_client_still_waiting_for_100_continue_is_not_drained() {
        let started = Instant::now();
        assert_eq!(
            drain_deadline(unread(true, false, started), Some(1), started),
            None
        );
        // Once read, `100 Continue` went out and the client sends its body.
        assert!(drain_deadline(unread(true, true, started), Some(1), started).is_some());
    }

    /// A body fed through a channel, counting the bytes read from it.
    struct Fed {
        frames: mpsc::Receiver<Bytes>,
        read: Arc<AtomicUsize>,
    }

    impl Body for Fed {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            let data = ready!(self.frames.poll_recv(cx));
            if let Some(data) = &data {
                self.read.fetch_add(data.len(), Ordering::SeqCst);
            }
            Poll::Ready(data.map(|data| Ok(Frame::data(data))))
        }
    }

    fn counted_body() -> (mpsc::Sender<Bytes>, Arc<AtomicUsize>, Fed) {
        let (sender, frames) = mpsc::channel(2);
        let read = Arc::new(AtomicUsize::new(0));
        let body = Fed {
            frames,
            read: read.clone(),
        };
        (sender, read, body)
    }

    /// Until `read` counts `expected` bytes (the drain runs in a task of its own).
    async fn until_read(read: &AtomicUsize, expected: usize) {
        let waited = tokio::time::timeout(Duration::from_secs(5), async {
            while read.load(Ordering::SeqCst) != expected {
                tokio::task::yield_now().await;
            }
        });
        waited.await.expect("the body was read");
    }

    fn request<B>(body: B) -> Request<B> {
        Request::post("/").body(body).unwrap()
    }

    /// A body dropped unread goes on being read to its end after the drop: the sender can
    /// send all of it.
    #[tokio::test]
    async fn a_body_dropped_unread_is_read_to_its_end() {
        let (frames, read, body) = counted_body();
        drop(drain_on_drop(request(body)));
        // More than the channel holds: sent only if something reads.
        for _ in 0..10 {
            frames
                .send(Bytes::from_static(&[0; 1000]))
                .await
                .expect("the body is still being read");
        }
        drop(frames);
        until_read(&read, 10_000).await;
    }

    /// A body read to its end leaves nothing to drain.
    #[tokio::test]
    async fn a_body_read_to_its_end_is_not_drained_again() {
        let (frames, read, body) = counted_body();
        let mut request = drain_on_drop(request(body));
        frames.send(Bytes::from_static(b"abc")).await.unwrap();
        drop(frames);
        let collected = request.body_mut().collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"abc");
        assert!(request.body().unread.is_none());
        drop(request);
        assert_eq!(read.load(Ordering::SeqCst), 3);
    }
}
