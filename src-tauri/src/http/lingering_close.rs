//! The lingering close: when the server closes a connection whose client may
//! still be sending (a refused body, answered `413` before it was read), it
//! first stops writing (the client sees the answer and the end), then reads and
//! discards what the client goes on sending, for a bounded amount and time.
//!
//! Closing a socket with unread data makes the kernel send a reset, and a client
//! that writes its whole body before reading (Python's `urllib`, many SDKs)
//! then sees "connection reset" instead of the answer. nginx (`lingering_close`)
//! and Go's server do the same for the same reason.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Longest a closing connection is drained, in all.
pub const LINGER_TIME: Duration = Duration::from_secs(5);
/// Longest wait for more data from a closing connection: a client that has
/// finished sending (or closed) ends the lingering at once, a silent one after this.
pub const LINGER_IDLE: Duration = Duration::from_secs(1);
/// Most bytes discarded from a closing connection.
pub const LINGER_BYTES: usize = 16 << 20;

/// A stream whose shutdown lingers: see the module's documentation.
#[derive(Debug)]
pub struct LingeringClose<S> {
    inner: S,
    state: State,
}

#[derive(Debug)]
enum State {
    Open,
    /// Writing is shut down; reading what the client still sends.
    Draining {
        until: Instant,
        idle: Pin<Box<Sleep>>,
        discarded: usize,
    },
    Closed,
}

impl<S> LingeringClose<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> LingeringClose<S> {
        LingeringClose { inner, state: State::Open }
    }
}

impl<S: AsyncRead + Unpin> LingeringClose<S> {
    /// Discards what the client sends until it closes, falls silent for
    /// [`LINGER_IDLE`], or the time or bytes allowed run out.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let State::Draining { until, idle, discarded } = &mut self.state else { return Poll::Ready(()) };
        let mut scratch = [0u8; 16 << 10];
        loop {
            if *discarded >= LINGER_BYTES || Instant::now() >= *until {
                break;
            }
            let mut buffer = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buffer) {
                Poll::Ready(Ok(())) if buffer.filled().is_empty() => break,
                Poll::Ready(Ok(())) => {
                    *discarded += buffer.filled().len();
                    let next = (Instant::now() + LINGER_IDLE).min(*until);
                    idle.as_mut().reset(next);
                }
                Poll::Ready(Err(_)) => break,
                Poll::Pending => {
                    ready!(idle.as_mut().poll(cx));
                    break;
                }
            }
        }
        self.state = State::Closed;
        Poll::Ready(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LingeringClose<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for LingeringClose<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let State::Open = this.state {
            // The answer is sent, followed by the end of our side.
            let shut = ready!(Pin::new(&mut this.inner).poll_shutdown(cx));
            if shut.is_err() {
                this.state = State::Closed;
                return Poll::Ready(shut);
            }
            let until = Instant::now() + LINGER_TIME;
            let idle = Box::pin(tokio::time::sleep_until((Instant::now() + LINGER_IDLE).min(until)));
            this.state = State::Draining { until, idle, discarded: 0 };
        }
        ready!(this.poll_drain(cx));
        Poll::Ready(Ok(()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn shutdown_ends_writing_then_discards_until_the_client_closes() {
        let (client, server) = tokio::io::duplex(64);
        let mut server = LingeringClose::new(server);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        server.write_all(b"HTTP/1.1 413").await.unwrap();
        let sender = tokio::spawn(async move {
            for _ in 0..100 {
                client_write.write_all(&[b' '; 1000]).await.unwrap();
            }
            client_write.shutdown().await.unwrap();
        });
        tokio::time::timeout(Duration::from_secs(10), server.shutdown()).await.unwrap().unwrap();
        sender.await.expect("every byte was read: the writer never blocked for ever");
        let mut answer = Vec::new();
        client_read.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"HTTP/1.1 413");
        assert!(matches!(server.state, State::Closed));
    }

    #[tokio::test]
    async fn a_silent_client_ends_the_lingering_after_the_idle_time() {
        let (_client, server) = tokio::io::duplex(64);
        let mut server = LingeringClose::new(server);
        let started = Instant::now();
        tokio::time::timeout(LINGER_TIME * 2, server.shutdown()).await.expect("bounded").unwrap();
        assert!(started.elapsed() >= LINGER_IDLE, "waited for the client: {:?}", started.elapsed());
    }
}
