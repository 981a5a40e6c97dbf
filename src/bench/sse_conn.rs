//! The load generator's SSE connection: plain HTTP/1.1 over a `TcpStream`, a response head
//! parsed with `httparse`, a chunked-body decoder and a line splitter — one task and a 4 KiB
//! buffer per subscriber, and nothing between the socket and the stamp that could buffer or
//! pool behind the benchmark's back, so that tens of thousands of subscribers fit beside the
//! server on a 2-core machine. (A subscriber's CPU per event is mostly the kernel's TCP
//! receive either way; reqwest holds more than twice the memory per stream.) It reads lines
//! and leaves their meaning to the caller ([`super::payload`] finds the stamps); `retry:`,
//! `id:` and comments pass by unread. Reconnection is not its business: a benchmark counts a
//! dropped subscriber, it does not hide it.
//!
//! `--client reqwest` reads the same lines through reqwest instead, to compare the cost.

use std::io;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest response head accepted (bytes).
const MAX_HEAD: usize = 16 * 1024;
/// The longest SSE line kept whole; a longer one is skipped (the bench's own are ~100 bytes).
const MAX_LINE: usize = 64 * 1024;

/// Where an SSE URL points: `http://host:port/path?query` (no TLS: the load generator runs
/// next to the server).
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` to connect to.
    pub addr: String,
    /// The `Host` header.
    pub host: String,
    /// Path and query of the request line.
    pub path: String,
}

impl Target {
    /// Errors: not a URL, or not `http:`.
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let u = reqwest::Url::parse(url).with_context(|| format!("not a URL: {url}"))?;
        if u.scheme() != "http" {
            bail!("the bench speaks plain http only: {url}");
        }
        let host = u.host_str().context("URL without a host")?.to_owned();
        let port = u.port_or_known_default().unwrap_or(80);
        let path = match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        };
        let host_header = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        Ok(Target {
            addr: format!("{host}:{port}"),
            host: host_header,
            path,
        })
    }
}

/// An open SSE response: the socket and the state of its body.
#[derive(Debug)]
pub struct SseConn {
    tcp: TcpStream,
    body: BodyDecoder,
    lines: LineSplitter,
    /// Body bytes that arrived with the head, not yet handed out.
    early: Vec<u8>,
}

impl SseConn {
    /// Connects, sends `GET` with `Accept: text/event-stream`, and reads the head.
    ///
    /// Errors: connection refused or reset, a head over 16 KiB, a status other than 200.
    pub async fn open(target: &Target) -> anyhow::Result<SseConn> {
        let mut tcp = TcpStream::connect(&target.addr)
            .await
            .with_context(|| format!("connecting to {}", target.addr))?;
        tcp.set_nodelay(true)?;
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
            target.path, target.host
        );
        tcp.write_all(req.as_bytes()).await?;
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 2048];
        loop {
            let n = tcp.read(&mut buf).await?;
            if n == 0 {
                bail!("connection closed before the response head");
            }
            head.extend_from_slice(&buf[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&head)? {
                httparse::Status::Partial if head.len() > MAX_HEAD => {
                    bail!("response head over {MAX_HEAD} bytes")
                }
                httparse::Status::Partial => continue,
                httparse::Status::Complete(len) => {
                    let code = resp.code.unwrap_or(0);
                    if code != 200 {
                        bail!("status {code} (expected 200)");
                    }
                    let has = |name: &str, want: &str| {
                        resp.headers.iter().any(|h| {
                            h.name.eq_ignore_ascii_case(name)
                                && String::from_utf8_lossy(h.value)
                                    .to_ascii_lowercase()
                                    .contains(want)
                        })
                    };
                    let body = if has("transfer-encoding", "chunked") {
                        BodyDecoder::Chunked(Chunked::default())
                    } else {
                        BodyDecoder::UntilClose
                    };
                    return Ok(SseConn {
                        tcp,
                        body,
                        lines: LineSplitter::default(),
                        early: head.split_off(len),
                    });
                }
            }
        }
    }

    /// Reads once (the bytes that came with the head, or from the socket into `buf`) and hands
    /// every complete line to `on_line` (without its `\n` or `\r\n`). Returns `false` at the
    /// end of the stream.
    ///
    /// Errors: socket errors, and a malformed chunked body.
    pub async fn read_lines(
        &mut self,
        buf: &mut [u8],
        mut on_line: impl FnMut(&[u8]),
    ) -> io::Result<bool> {
        // What came with the head is this call's read: the socket may have nothing more yet.
        if !self.early.is_empty() {
            let early = std::mem::take(&mut self.early);
            return self.feed(&early, &mut on_line);
        }
        let n = self.tcp.read(buf).await?;
        if n == 0 {
            return Ok(false);
        }
        self.feed(&buf[..n], &mut on_line)
    }

    fn feed(&mut self, input: &[u8], on_line: &mut impl FnMut(&[u8])) -> io::Result<bool> {
        let lines = &mut self.lines;
        match &mut self.body {
            BodyDecoder::UntilClose => {
                lines.feed(input, on_line);
                Ok(true)
            }
            BodyDecoder::Chunked(c) => c
                .decode(input, |data| lines.feed(data, on_line))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }
}

#[derive(Debug)]
enum BodyDecoder {
    Chunked(Chunked),
    UntilClose,
}

/// An HTTP/1.1 chunked transfer-coding decoder (RFC 9112 §7.1), fed any slices of the body.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading hex digits of a chunk size (the value so far, whether a digit was seen).
    #[default]
    SizeStart,
    Size(u64),
    /// Skipping a chunk extension up to the line end.
    Ext(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// The last chunk came: trailers and the end, nothing more for the caller.
    Done,
}

impl Chunked {
    /// Decodes `input`, passing each run of body bytes to `out`. Returns `false` once the last
    /// chunk was read.
    ///
    /// Errors: a byte that cannot appear where it is (a bad size, a missing CRLF).
    pub fn decode(&mut self, mut input: &[u8], mut out: impl FnMut(&[u8])) -> Result<bool, String> {
        use ChunkState::*;
        while !input.is_empty() {
            match self.state {
                Data(left) => {
                    let n = (left as usize).min(input.len());
                    out(&input[..n]);
                    input = &input[n..];
                    self.state = if n as u64 == left {
                        DataCr
                    } else {
                        Data(left - n as u64)
                    };
                    continue;
                }
                Done => return Ok(false),
                _ => {}
            }
            let b = input[0];
            input = &input[1..];
            self.state = match (self.state, b) {
                (SizeStart, _) | (Size(_), _) if b.is_ascii_hexdigit() => {
                    let v = match self.state {
                        Size(v) => v,
                        _ => 0,
                    };
                    let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                    Size(
                        v.checked_mul(16)
                            .and_then(|v| v.checked_add(d))
                            .ok_or("chunk size overflows")?,
                    )
                }
                (Size(v), b';' | b' ' | b'\t') => Ext(v),
                (Size(v) | Ext(v), b'\r') => SizeLf(v),
                (Size(v) | Ext(v) | SizeLf(v), b'\n') => {
                    if v == 0 {
                        Done
                    } else {
                        Data(v)
                    }
                }
                (Ext(v), _) => Ext(v),
                (DataCr, b'\r') => DataLf,
                (DataCr | DataLf, b'\n') => SizeStart,
                (state, b) => {
                    return Err(format!(
                        "unexpected byte {b:#04x} in chunked body ({state:?})"
                    ));
                }
            };
            if self.state == Done {
                return Ok(false);
            }
        }
        Ok(self.state != Done)
    }
}

/// Splits a byte stream into lines at `\n` (a `\r` before it is dropped). A line over 64 KiB
/// is skipped whole rather than held.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
    skipping: bool,
}

impl LineSplitter {
    pub fn feed(&mut self, mut data: &[u8], on_line: &mut impl FnMut(&[u8])) {
        let trim = |l: &[u8]| -> usize { l.len() - usize::from(l.last() == Some(&b'\r')) };
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            let (line, rest) = (&data[..i], &data[i + 1..]);
            if self.skipping {
                self.skipping = false;
            } else if self.partial.is_empty() {
                on_line(&line[..trim(line)]);
            } else {
                self.partial.extend_from_slice(line);
                let n = trim(&self.partial);
                on_line(&self.partial[..n]);
                self.partial.clear();
            }
            data = rest;
        }
        if !self.skipping && !data.is_empty() {
            if self.partial.len() + data.len() > MAX_LINE {
                self.partial = Vec::new();
                self.skipping = true;
            } else {
                self.partial.extend_from_slice(data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(chunks: &[&[u8]]) -> Vec<String> {
        let mut split = LineSplitter::default();
        let mut got = Vec::new();
        for c in chunks {
            split.feed(c, &mut |l: &[u8]| {
                got.push(String::from_utf8_lossy(l).into_owned())
            });
        }
        got
    }

    #[test]
    fn lines_split_across_reads_and_crlf() {
        assert_eq!(
            lines_of(&[b"retry: 3", b"000\r\n\r\ndata: a", b"b\ndata: c\n"]),
            ["retry: 3000", "", "data: ab", "data: c"]
        );
    }

    #[test]
    fn an_overlong_line_is_skipped_whole() {
        let big = vec![b'x'; MAX_LINE + 10];
        assert_eq!(
            lines_of(&[b"data: ", &big, b"yy\ndata: ok\n"]),
            ["data: ok"]
        );
    }

    fn decode_all(pieces: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut c = Chunked::default();
        let mut out = Vec::new();
        let mut more = true;
        for p in pieces {
            more = c.decode(p, |d| out.extend_from_slice(d)).unwrap();
        }
        (out, more)
    }

    #[test]
    fn chunked_bodies_in_any_slicing() {
        let body: &[u8] = b"5\r\nhello\r\nA;ext=1\r\n0123456789\r\n0\r\n\r\n";
        let (whole, more) = decode_all(&[body]);
        assert_eq!(whole, b"hello0123456789");
        assert!(!more);
        // Byte by byte gives the same.
        let pieces: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(decode_all(&pieces).0, b"hello0123456789");
        // An open stream: more to come.
        assert_eq!(decode_all(&[b"3\r\nab", b"c\r\n"]), (b"abc".to_vec(), true));
    }

    #[test]
    fn chunked_errors_are_reported() {
        let mut c = Chunked::default();
        assert!(c.decode(b"zz\r\n", |_| {}).is_err());
        let mut c = Chunked::default();
        assert!(c.decode(b"2\r\nabX", |_| {}).is_err());
        let mut c = Chunked::default();
        assert!(c.decode(b"ffffffffffffffffff\r\n", |_| {}).is_err());
    }

    #[test]
    fn targets_from_urls() {
        let t = Target::parse("http://127.0.0.1:8081/sub/bench?x=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8081");
        assert_eq!(t.host, "127.0.0.1:8081");
        assert_eq!(t.path, "/sub/bench?x=1");
        let t = Target::parse("http://localhost/v1/sse").unwrap();
        assert_eq!(
            (t.addr.as_str(), t.host.as_str()),
            ("localhost:80", "localhost")
        );
        assert!(Target::parse("https://x/").is_err());
        assert!(Target::parse("nope").is_err());
    }
}
