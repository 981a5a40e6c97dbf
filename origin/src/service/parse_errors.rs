//! JSON for the errors no route produces: when hyper's HTTP/1.1 parser refuses a request (a
//! raw `>` or `"` in the query, which `http::Uri` does not accept, or a head that is too
//! large), hyper itself answers `400` (or `431`, `414`) with an empty body and closes. Every
//! other error of the product is `{"error": {"code", "message"}}` with a `Content-Type`, so
//! the connection's writer recognises that one response and rewrites it into the same shape.
//!
//! The response is recognised by what only hyper's parse-error path writes: a 4xx status line
//! followed directly by `connection: close` and `content-length: 0` (the routes' own errors
//! always carry `content-type` and a JSON body). Everything else passes through untouched,
//! vectored writes included.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection whose parser-error responses leave as JSON.
#[derive(Debug)]
pub struct JsonParseErrors<S> {
    inner: S,
    /// A rewritten response being written: its bytes, how many went out, and the length of
    /// the original buffer to report to hyper once all of them did.
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<S> JsonParseErrors<S> {
    /// Wraps a connection.
    pub fn new(inner: S) -> Self {
        JsonParseErrors {
            inner,
            pending: None,
        }
    }
}

/// The JSON version of hyper's empty parser-error response in `head`, if that is what it is.
fn rewrite(head: &[u8]) -> Option<Vec<u8>> {
    const TAIL: &[u8] = b"connection: close\r\ncontent-length: 0\r\n";
    if !head.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let line_end = head.windows(2).position(|w| w == b"\r\n")? + 2;
    let rest = &head[line_end..];
    if !rest.starts_with(TAIL) {
        return None;
    }
    let others = &rest[TAIL.len()..];
    // The whole head must be in this buffer (hyper writes it in one piece).
    let end = others.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = std::str::from_utf8(head.get(9..12)?).ok()?;
    let (code, message) = match status {
        "431" => (
            "headers_too_large",
            "the request's headers are too large to parse",
        ),
        "414" => ("uri_too_long", "the request's URL is too long"),
        _ => (
            "bad_request",
            "the HTTP request could not be parsed: a malformed request line or header. In the \
             URL, percent-encode the characters URLs do not allow raw (space, \", <, >, {, }, \
             |, \\, ^, `), e.g. `channel=sensors.%3E` for `sensors.>`",
        ),
    };
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let mut out = Vec::with_capacity(head.len() + body.len() + 64);
    out.extend_from_slice(&head[..line_end]);
    out.extend_from_slice(b"connection: close\r\ncontent-type: application/json\r\n");
    out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    // The remaining headers (`date`) and the blank line.
    out.extend_from_slice(&others[..end + 4]);
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

impl<S: AsyncWrite + Unpin> JsonParseErrors<S> {
    /// Writes what is pending; ready with the length to report once all of it went out.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        while let Some((bytes, written, _)) = &mut self.pending {
            if *written == bytes.len() {
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(self.pending.take().map_or(0, |(_, _, report)| report)))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonParseErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none() {
            match rewrite(buf) {
                Some(json) => this.pending = Some((json, 0, buf.len())),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        this.drive(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        // A response head is the first slice; one that could be a parser error goes through
        // `poll_write` alone (writing fewer bytes than offered is allowed).
        match bufs.iter().find(|b| !b.is_empty()) {
            Some(first) if self.pending.is_some() || first.starts_with(b"HTTP/1.1 4") => {
                self.poll_write(cx, first)
            }
            _ => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.pending.is_some() {
            // Keep the rewritten response pending until hyper's write call collects it.
            while let Some((bytes, written, _)) = &mut this.pending {
                if *written == bytes.len() {
                    break;
                }
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn only_hypers_empty_parser_error_is_rewritten() {
        let hyper = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 13:56:44 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite(hyper).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("content-type: application/json"), "{out}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{out}"
        );
        assert!(head.contains("date: Mon"), "{out}");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "bad_request");

        let route = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert!(rewrite(route).is_none());
        let ok = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert!(rewrite(ok).is_none());
    }
}
