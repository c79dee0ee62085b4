//! Install trees over HTTP/1.1 with `sendfile(2)`: file bytes go from the page cache to the socket
//! without passing through the process, as nginx does, so an install storm of many nodes costs
//! the image service little CPU (`scripts/bench-image-http.sh` compares it with nginx).
//!
//! Every connection starts here. A `GET` or `HEAD` of `/trees/...` is answered directly (full or
//! one byte range, keep-alive); the first request for anything else hands the connection, with
//! the bytes already read, to the axum router (`http.rs`) for good.
//!
//! Paths are percent-decoded, then refused if any component is empty, `.` or `..`, if the tree
//! name starts with `.` (trees being extracted), or if the file resolves outside the trees
//! directory (symbolic links included).

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Longest request head accepted.
const MAX_HEAD: usize = 16 << 10;
/// The whole head of a request must arrive within this, and a kept-alive connection must start
/// its next request within it (the same bound as the router's, `xcat3_runtime::http`).
const HEAD_DEADLINE: Duration = xcat3_runtime::http::HEAD_DEADLINE;
/// A client that reads nothing of an answer for this long is dropped.
const WRITE_STALL: Duration = Duration::from_secs(60);
/// Bytes handed to one `sendfile` call.
const SENDFILE_CHUNK: usize = 4 << 20;

/// Accepts connections until `shutdown`; each runs in its own task.
pub async fn serve(
    listener: TcpListener,
    root: PathBuf,
    router: Router,
    sent_bytes: Counter,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let root = Arc::new(std::fs::canonicalize(&root)?);
    xcat3_runtime::http::accept_loop(listener, shutdown, move |stream, peer| {
        let _ = stream.set_nodelay(true);
        let (root, router, sent_bytes) = (root.clone(), router.clone(), sent_bytes.clone());
        async move { connection(stream, peer, &root, router, &sent_bytes).await }
    })
    .await;
    Ok(())
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
struct TreeRequest {
    /// Relative to the trees directory, decoded and checked.
    path: Option<PathBuf>,
    head_only: bool,
    range: Option<String>,
    keep_alive: bool,
}

/// For the fuzz targets: parses `head` as a connection would and checks what would be answered
/// for a file of `size` bytes: a path of plain components only, a range inside the file.
#[doc(hidden)]
pub fn check_request(head: &[u8], size: u64) {
    let Some(req) = parse(head) else { return };
    if let Some(path) = &req.path {
        assert!(
            path.components()
                .all(|c| matches!(c, std::path::Component::Normal(_))),
            "{path:?}"
        );
    }
    if let Ok(Some((start, end))) = byte_range(req.range.as_deref(), size) {
        assert!(start <= end && end < size, "{start}-{end} of {size}");
    }
}

/// Parses a complete head; `None` when it is not a tree request this module answers.
fn parse(head: &[u8]) -> Option<TreeRequest> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(_) = req.parse(head).ok()? else {
        return None;
    };
    let head_only = match req.method? {
        "GET" => false,
        "HEAD" => true,
        _ => return None,
    };
    let target = req.path?;
    let rest = target.strip_prefix("/trees/")?;
    let mut keep_alive = req.version? == 1;
    let mut range = None;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).ok()?.trim();
        if h.name.eq_ignore_ascii_case("content-length") && value != "0"
            || h.name.eq_ignore_ascii_case("transfer-encoding")
        {
            return None; // a body: let hyper deal with it
        }
        if h.name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                keep_alive = false;
            } else if v.contains("keep-alive") {
                keep_alive = true;
            }
        }
        if h.name.eq_ignore_ascii_case("range") {
            range = Some(value.to_owned());
        }
    }
    Some(TreeRequest {
        path: safe_path(rest),
        head_only,
        range,
        keep_alive,
    })
}

/// The decoded relative path, or `None` if it could name anything outside a tree.
fn safe_path(raw: &str) -> Option<PathBuf> {
    let raw = raw.split(['?', '#']).next().unwrap_or_default();
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?;
    let mut path = PathBuf::new();
    for (i, part) in decoded.split('/').enumerate() {
        let bad = part.is_empty()
            || part == "."
            || part == ".."
            || part.contains(['\0', '\\'])
            || i == 0 && part.starts_with('.');
        if bad {
            return None;
        }
        path.push(part);
    }
    Some(path)
}

/// A single byte range of a `size`-byte file: `Ok(None)` for the whole file, `Err(())` when it
/// cannot be satisfied (416). Multiple ranges are answered with the whole file, as RFC 9110 allows.
fn byte_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (first, last) = spec.split_once('-').ok_or(())?;
    let (first, last) = (first.trim(), last.trim());
    let (start, end) = if first.is_empty() {
        // Suffix: the last N bytes.
        let n: u64 = last.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size.checked_sub(1).ok_or(())?)
    } else {
        let start: u64 = first.parse().map_err(|_| ())?;
        let end = if last.is_empty() {
            size.checked_sub(1).ok_or(())?
        } else {
            last.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1))
        };
        (start, end)
    };
    if start >= size || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// Serves requests on one connection.
async fn connection(
    mut stream: TcpStream,
    peer: std::net::SocketAddr,
    root: &Path,
    router: Router,
    sent_bytes: &Counter,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        // The whole head, not each read: a byte every few seconds does not keep it open.
        let deadline = tokio::time::Instant::now() + HEAD_DEADLINE;
        let head_len = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if buf.len() > MAX_HEAD {
                let _ = stream
                    .write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                return;
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let Some(req) = parse(&buf[..head_len]) else {
            hand_over(stream, peer, buf, router).await;
            return;
        };
        buf.drain(..head_len);
        let keep_alive = req.keep_alive;
        if let Err(e) = respond(&mut stream, root, req, sent_bytes).await {
            tracing::debug!(error = %e, "tree response failed");
            return;
        }
        if !keep_alive {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

async fn simple(stream: &mut TcpStream, status: &str, keep_alive: bool) -> io::Result<()> {
    let body = format!("{status}\n");
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{body}",
        body.len(),
        if keep_alive {
            ""
        } else {
            "connection: close\r\n"
        }
    );
    stream.write_all(head.as_bytes()).await
}

/// Opens `rel` under `root` if it is a regular file that resolves inside `root`.
fn open_inside(root: &Path, rel: &Path) -> Option<(std::fs::File, u64)> {
    let full = std::fs::canonicalize(root.join(rel)).ok()?;
    if !full.starts_with(root) {
        return None;
    }
    let file = std::fs::File::open(&full).ok()?;
    let meta = file.metadata().ok()?;
    meta.is_file().then_some((file, meta.len()))
}

async fn respond(
    stream: &mut TcpStream,
    root: &Path,
    req: TreeRequest,
    sent_bytes: &Counter,
) -> io::Result<()> {
    let keep = req.keep_alive;
    let Some(rel) = req.path else {
        return simple(stream, "404 Not Found", keep).await;
    };
    let root_owned = root.to_owned();
    let opened = tokio::task::spawn_blocking(move || open_inside(&root_owned, &rel))
        .await
        .map_err(io::Error::other)?;
    let Some((file, size)) = opened else {
        return simple(stream, "404 Not Found", keep).await;
    };
    let connection = if keep { "" } else { "connection: close\r\n" };
    let (status, start, len, extra) = match byte_range(req.range.as_deref(), size) {
        Ok(None) => ("200 OK", 0, size, String::new()),
        Ok(Some((s, e))) => (
            "206 Partial Content",
            s,
            e - s + 1,
            format!("content-range: bytes {s}-{e}/{size}\r\n"),
        ),
        Err(()) => {
            let head = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\ncontent-range: bytes */{size}\r\ncontent-length: 0\r\n{connection}\r\n"
            );
            return stream.write_all(head.as_bytes()).await;
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/octet-stream\r\naccept-ranges: bytes\r\n\
         content-length: {len}\r\n{extra}{connection}\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    if req.head_only {
        return Ok(());
    }
    send_file(stream, &file, start, len).await?;
    sent_bytes.inc_by(len);
    Ok(())
}

/// Sends `len` bytes of `file` from `offset` with `sendfile(2)`, waiting for the socket to drain.
async fn send_file(
    stream: &TcpStream,
    file: &std::fs::File,
    mut offset: u64,
    len: u64,
) -> io::Result<()> {
    let end = offset + len;
    while offset < end {
        let want = usize::try_from(end - offset)
            .unwrap_or(usize::MAX)
            .min(SENDFILE_CHUNK);
        tokio::time::timeout(WRITE_STALL, stream.writable())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading"))??;
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            rustix::fs::sendfile(stream.as_fd(), file.as_fd(), Some(&mut offset), want)
                .map_err(io::Error::from)
        });
        match sent {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Gives the connection to hyper with the router, replaying what was read already.
async fn hand_over(stream: TcpStream, peer: std::net::SocketAddr, read: Vec<u8>, router: Router) {
    let io = Rewind {
        pending: read,
        at: 0,
        inner: stream,
    };
    xcat3_runtime::http::serve_connection(io, peer, router).await;
}

/// A stream that first yields bytes already read from it.
struct Rewind {
    pending: Vec<u8>,
    at: usize,
    inner: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.pending.len() {
            let n = buf.remaining().min(self.pending.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.pending[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_requests_are_recognised_and_others_left_to_the_router() {
        let r = parse(b"GET /trees/ab/images/pxeboot/vmlinuz HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99\r\n\r\n").unwrap();
        assert_eq!(
            r.path.as_deref(),
            Some(Path::new("ab/images/pxeboot/vmlinuz"))
        );
        assert_eq!(r.range.as_deref(), Some("bytes=0-99"));
        assert!(r.keep_alive && !r.head_only);
        let r = parse(b"HEAD /trees/ab/x%20y HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(r.path.as_deref(), Some(Path::new("ab/x y")));
        assert!(r.head_only && !r.keep_alive);
        assert!(parse(b"GET /deploy/t/kickstart HTTP/1.1\r\n\r\n").is_none());
        assert!(parse(b"POST /trees/ab/x HTTP/1.1\r\ncontent-length: 3\r\n\r\n").is_none());
    }

    #[test]
    fn paths_that_could_leave_a_tree_are_refused() {
        for bad in [
            "ab/../../etc/passwd",
            "ab/%2e%2e/x",
            "..%2fx",
            ".partial-ab/x",
            "ab//x",
            "ab/x%00",
            "ab\\..\\x",
            "",
        ] {
            assert_eq!(safe_path(bad), None, "{bad}");
        }
        assert_eq!(
            safe_path("ab/.disk/info"),
            Some(PathBuf::from("ab/.disk/info"))
        );
        assert_eq!(safe_path("ab/x?download=1"), Some(PathBuf::from("ab/x")));
    }

    #[test]
    fn byte_ranges_follow_rfc_9110() {
        assert_eq!(byte_range(None, 100), Ok(None));
        assert_eq!(byte_range(Some("bytes=0-9"), 100), Ok(Some((0, 9))));
        assert_eq!(byte_range(Some("bytes=90-"), 100), Ok(Some((90, 99))));
        assert_eq!(byte_range(Some("bytes=-10"), 100), Ok(Some((90, 99))));
        assert_eq!(byte_range(Some("bytes=50-500"), 100), Ok(Some((50, 99))));
        assert_eq!(byte_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(byte_range(Some("bytes=100-"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=9-3"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=x-3"), 100), Err(()));
        assert_eq!(byte_range(Some("bytes=0-0"), 0), Err(()));
    }
}
