//! The total deadline of a request body. The read timeout between pieces
//! restarts with every byte, so a client sending a byte every few seconds could
//! hold a connection (and a request slot) for hours; this deadline counts from
//! the request's arrival and ends the body, however it trickles.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Sleep;

/// A request body that did not arrive within its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the body took longer than {0:?} in all")]
pub struct BodyDeadlineExceeded(pub Duration);

/// Middleware: gives the request's body `deadline` from now to arrive in full.
pub async fn limit_body_time(State(deadline): State<Duration>, request: Request, next: Next) -> Response {
    next.run(request.map(|body| Body::new(DeadlineBody::new(body, deadline)))).await
}

/// A body that fails with [`BodyDeadlineExceeded`] once its deadline passes.
struct DeadlineBody {
    inner: Body,
    deadline: Duration,
    expiry: Pin<Box<Sleep>>,
}

impl DeadlineBody {
    fn new(inner: Body, deadline: Duration) -> DeadlineBody {
        DeadlineBody { inner, deadline, expiry: Box::pin(tokio::time::sleep(deadline)) }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match this.expiry.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyDeadlineExceeded(this.deadline))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_still_arriving_at_its_deadline_fails_and_a_complete_one_passes() {
        // A piece every 50 ms, for ever: only the deadline ends it.
        let pieces = futures_util::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b" ")), ()))
        });
        let trickling = Body::new(DeadlineBody::new(Body::from_stream(pieces), Duration::from_millis(300)));
        let read = tokio::time::timeout(Duration::from_secs(10), axum::body::to_bytes(trickling, usize::MAX)).await;
        let error = read.expect("ended by the deadline, not the test's timeout").expect_err("the deadline ends it");
        assert!(format!("{error:?}").contains("BodyDeadlineExceeded"), "{error:?}");

        let whole = Body::new(DeadlineBody::new(Body::from("complete"), Duration::from_secs(10)));
        assert_eq!(axum::body::to_bytes(whole, usize::MAX).await.unwrap(), "complete");
    }
}
