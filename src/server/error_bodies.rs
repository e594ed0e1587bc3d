//! Our JSON error on the answers hyper gives by itself.
//!
//! hyper answers a request head it cannot parse (400), a URI over its limit (414) and a
//! head too large or with too many headers (431) on its own, with an empty body, before any
//! of our code runs, and offers no hook to change that answer. So the connection is
//! wrapped: such an answer is recognised on its way out and our JSON error is written in
//! its place. It is unmistakable, since every error response of ours carries a
//! `content-type` (`routes::json_errors` sees to it) and hyper's carries none.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::Error;

/// A connection whose bodiless 400, 414 and 431 answers get our JSON error body.
pub(crate) struct WithErrorBodies<T> {
    inner: T,
    replacing: Option<Replacement>,
}

/// Our answer, being written in place of hyper's.
struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    /// The length of hyper's answer, reported written once ours is.
    stands_for: usize,
}

impl<T> WithErrorBodies<T> {
    pub(crate) fn new(inner: T) -> Self {
        Self {
            inner,
            replacing: None,
        }
    }
}

/// Our answer in place of `head`, if `head` is one of hyper's bodiless error answers.
fn replacement_for(head: &[u8]) -> Option<Vec<u8>> {
    // Cheap tests first: this sees every write of every response.
    if head.len() > 512 || !head.starts_with(b"HTTP/1.") || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let error = match head.get(9..12)? {
        b"400" => Error::Malformed("the request is not valid HTTP/1.1".to_owned()),
        b"414" => Error::UriTooLong,
        b"431" => Error::HeadersTooLarge,
        _ => return None,
    };
    let head = std::str::from_utf8(head).ok()?;
    let lower = head.to_ascii_lowercase();
    if lower.contains("\r\ncontent-type:") || !lower.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let status_line = head.split("\r\n").next()?;
    let body = error.json_body();
    let answer = format!(
        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nx-content-type-options: nosniff\r\nconnection: close\r\n\r\n{body}",
        body.len(),
    );
    Some(answer.into_bytes())
}

impl<T: AsyncWrite + Unpin> WithErrorBodies<T> {
    /// Writes our answer; reports hyper's as written once all of ours is.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let replacement = self
            .replacing
            .as_mut()
            .expect("called only while replacing");
        while replacement.written < replacement.bytes.len() {
            let rest = &replacement.bytes[replacement.written..];
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            replacement.written += n;
        }
        let stands_for = replacement.stands_for;
        self.replacing = None;
        Poll::Ready(Ok(stands_for))
    }

    fn start_replacing(&mut self, head: &[u8]) -> bool {
        match replacement_for(head) {
            Some(bytes) => {
                self.replacing = Some(Replacement {
                    bytes,
                    written: 0,
                    stands_for: head.len(),
                });
                true
            }
            None => false,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WithErrorBodies<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none() && !this.start_replacing(buf) {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        this.poll_replacement(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none() {
            // hyper's bodiless answer is a head alone, so one buffer.
            let mut filled = bufs.iter().filter(|buf| !buf.is_empty());
            let alone = match (filled.next(), filled.next()) {
                (Some(head), None) => Some(head),
                _ => None,
            };
            if !alone.is_some_and(|head| this.start_replacing(head)) {
                return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
            }
        }
        this.poll_replacement(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WithErrorBodies<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replaced(head: &str) -> Option<String> {
        replacement_for(head.as_bytes()).map(|bytes| String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn hypers_bodiless_errors_get_our_json() {
        let answer = replaced(
            "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\
             date: Wed, 02 Dec 2026 12:00:00 GMT\r\n\r\n",
        )
        .expect("replaced");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "headers_too_large");
    }

    #[test]
    fn our_own_answers_pass_untouched() {
        for head in [
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 57\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{\"partial\"",
        ] {
            assert_eq!(replaced(head), None, "{head}");
        }
    }
}
