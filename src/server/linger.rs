//! Lingering close: once the broker has said its last word on a connection,
//! it sends FIN and keeps reading (and discarding) what the client still
//! sends, until the client closes too, falls quiet, or [`LINGER_MAX`] passes.
//!
//! Why: closing a TCP socket with unread bytes in its receive queue makes
//! the kernel answer with RST and throw away what is still in the send
//! queue. When the broker drains on SIGTERM, a client in the middle of a
//! large GetObject keeps sending HTTP/2 WINDOW_UPDATE frames while the last
//! megabytes of its stream wait in the broker's send queue; a plain close
//! would cut the stream short with "broken pipe" on the client's side.
//! (nginx's `lingering_close` does the same for the same reason.)

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// How long the client may stay silent before the broker closes anyway: an
/// idle keep-alive client never sends anything, and a downloading one sends
/// a window update for every half window it reads.
const LINGER_QUIET: Duration = Duration::from_secs(2);
/// Longest the broker lingers on one connection, however chatty the client.
/// (While draining, the drain timeout is the tighter bound.)
const LINGER_MAX: Duration = Duration::from_secs(30);

/// A connection whose `poll_shutdown` closes the way this module describes;
/// reads and writes pass straight through.
pub struct Lingering<IO> {
    io: IO,
    linger: Option<Linger>,
}

/// Started when the server shuts the connection's write side.
struct Linger {
    until: Instant,
    quiet: Pin<Box<Sleep>>,
}

impl<IO> Lingering<IO> {
    pub fn new(io: IO) -> Self {
        Self { io, linger: None }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Lingering<IO> {
    /// Reads and drops whatever arrives; ready once the client has closed
    /// (or the connection failed) or the linger is over.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(linger) = &mut self.linger else {
            return Poll::Ready(());
        };
        let mut scratch = [0u8; 4096];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    let now = Instant::now();
                    // A client that never pauses never lets the quiet timer
                    // be polled: the longest linger is checked here too.
                    if now >= linger.until {
                        return Poll::Ready(());
                    }
                    linger
                        .quiet
                        .as_mut()
                        .reset((now + LINGER_QUIET).min(linger.until));
                }
                // End of stream or an error: nothing more can arrive.
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return linger.quiet.as_mut().poll(cx),
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<IO> {
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.linger.is_none() {
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            let now = Instant::now();
            this.linger = Some(Linger {
                until: now + LINGER_MAX,
                quiet: Box::pin(tokio::time::sleep_until(now + LINGER_QUIET)),
            });
        }
        ready!(this.poll_linger(cx));
        Poll::Ready(Ok(()))
    }

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
}

impl<IO: AsyncRead + Unpin> AsyncRead for Lingering<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What the server wrote before shutting down reaches the client whole,
    /// although the client kept writing after the server had stopped reading.
    #[tokio::test]
    async fn a_client_still_sending_gets_everything_the_server_wrote() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // More than the kernel buffers hold, so the tail is still queued at shutdown.
        let sent: Vec<u8> = (0..32 * 1024 * 1024u32).map(|i| i as u8).collect();
        let expected = sent.clone();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = Lingering::new(stream);
            stream.write_all(&sent).await.unwrap();
            stream.shutdown().await.unwrap();
        });

        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut received = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // The client acknowledges every read, as HTTP/2 window updates do.
            let n = client.read(&mut buf).await.expect("no reset while reading");
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
            client.write_all(b"ack").await.unwrap();
            tokio::task::yield_now().await;
        }
        assert!(
            received == expected,
            "the client got {} bytes",
            received.len()
        );
        drop(client);
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server stops lingering once the client closes")
            .unwrap();
    }

    /// A client whose bytes never stop (the read is always ready) is let go
    /// at the longest linger all the same.
    #[tokio::test]
    async fn a_client_that_never_pauses_is_let_go_at_the_longest_linger() {
        let endless = tokio::io::join(tokio::io::repeat(b'x'), tokio::io::sink());
        let mut stream = Lingering::new(endless);
        let now = Instant::now();
        stream.linger = Some(Linger {
            until: now + Duration::from_millis(50),
            quiet: Box::pin(tokio::time::sleep_until(now + LINGER_QUIET)),
        });
        tokio::time::timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| stream.poll_linger(cx)),
        )
        .await
        .expect("the linger ends at its longest");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_let_go_after_the_quiet_period() {
        let (server_end, _client_end) = tokio::io::duplex(1024);
        let mut stream = Lingering::new(server_end);
        let started = Instant::now();
        stream.shutdown().await.unwrap();
        assert_eq!(started.elapsed(), LINGER_QUIET);
    }

    #[tokio::test(start_paused = true)]
    async fn a_chatty_client_is_let_go_after_the_longest_linger() {
        let (server_end, mut client_end) = tokio::io::duplex(1024);
        let mut stream = Lingering::new(server_end);
        let chatter = tokio::spawn(async move {
            loop {
                if client_end.write_all(b"ping").await.is_err() {
                    break;
                }
                tokio::time::sleep(LINGER_QUIET / 2).await;
            }
        });
        let started = Instant::now();
        stream.shutdown().await.unwrap();
        assert_eq!(started.elapsed(), LINGER_MAX);
        drop(stream);
        chatter.await.unwrap();
    }
}
