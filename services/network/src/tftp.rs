//! A read-only TFTP server (RFC 1350) with the option extension (RFC 2347) and the blksize
//! (RFC 2348), tsize and timeout (RFC 2349) and windowsize (RFC 7440) options.
//!
//! Every transfer runs on its own socket and thread (not tokio's blocking pool, which the rest of
//! the process needs), within bounds a booting machine cannot push: at most
//! [`MAX_TRANSFERS`] at once overall and [`MAX_PER_CLIENT`] per client address (others get
//! "server busy"), a `timeout` option of at most [`MAX_TIMEOUT_SECS`] (a larger one is left out of
//! the OACK, RFC 2349), and [`TRANSFER_DEADLINE`] for a whole transfer. Files are confined to the root: names with
//! `..`, absolute names, and names that resolve (through symlinks) outside the root are refused.
//! Files are read once and kept in memory while they are unchanged, so 20 machines fetching the
//! same iPXE binary cost one read.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::State;
use crate::metrics::ReasonLabel;

const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

const ERR_NOT_FOUND: u16 = 1;
const ERR_ACCESS: u16 = 2;
const ERR_ILLEGAL: u16 = 4;

const DEFAULT_BLKSIZE: usize = 512;
const MAX_BLKSIZE: usize = 65464;
const MAX_WINDOW: usize = 64;
const RETRIES: u32 = 5;
/// Largest `timeout` option accepted, in seconds; a larger one is ignored (not acknowledged).
pub const MAX_TIMEOUT_SECS: u64 = 5;
/// Transfers running at once, all clients together.
pub const MAX_TRANSFERS: usize = 128;
/// Transfers running at once for one client address.
pub const MAX_PER_CLIENT: usize = 8;
/// Longest a whole transfer may take (a 60 MB initrd at 512-byte lock-step over a slow link fits).
pub const TRANSFER_DEADLINE: Duration = Duration::from_secs(600);
const ERR_UNDEFINED: u16 = 0;
/// Files larger than this are not kept in memory between transfers.
const CACHE_FILE_LIMIT: u64 = 512 << 20;

/// Why a name is refused; the text goes to the client in the ERROR packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("file not found")]
    NotFound,
    #[error("access violation: {0}")]
    Refused(&'static str),
}

/// Resolves a client-supplied `name` under `root`, refusing anything that could leave it.
pub fn resolve(root: &Path, name: &str) -> Result<PathBuf, PathError> {
    let name = name.replace('\\', "/");
    if name.is_empty() {
        return Err(PathError::Refused("empty file name"));
    }
    if name.starts_with('/') {
        return Err(PathError::Refused("absolute paths are not served"));
    }
    if name.split('/').any(|c| c == "..") {
        return Err(PathError::Refused("'..' is not allowed in paths"));
    }
    if name.chars().any(char::is_control) {
        return Err(PathError::Refused("control characters in the file name"));
    }
    let root = root.canonicalize().map_err(|_| PathError::NotFound)?;
    let path = root
        .join(&name)
        .canonicalize()
        .map_err(|_| PathError::NotFound)?;
    if !path.starts_with(&root) {
        return Err(PathError::Refused(
            "the path leads outside the served directory",
        ));
    }
    if !path.is_file() {
        return Err(PathError::NotFound);
    }
    Ok(path)
}

/// Copies the iPXE binaries from `from` (Debian's `/usr/lib/ipxe`) into `root`, unless the
/// operator put their own there.
pub fn install_ipxe(from: &Path, root: &Path) {
    for name in [
        "undionly.kpxe",
        "undionly.kkpxe",
        "ipxe.pxe",
        "ipxe.efi",
        "snponly.efi",
        "ipxe.lkrn",
    ] {
        let src = from.join(name);
        let dst = root.join(name);
        if dst.exists() || !src.is_file() {
            continue;
        }
        if let Err(e) = std::fs::copy(&src, &dst) {
            tracing::warn!(file = %src.display(), error = %e, "copying an iPXE binary failed");
        }
    }
}

/// Files read into memory, by path, with the modification time they were read at.
#[derive(Default)]
pub struct FileCache(Mutex<HashMap<PathBuf, CachedFile>>);

/// A file's modification time when read, and its content.
type CachedFile = (SystemTime, Arc<[u8]>);

impl FileCache {
    /// The content of `path`, from memory if it has not changed since it was read.
    pub fn read(&self, path: &Path) -> std::io::Result<Arc<[u8]>> {
        let meta = std::fs::metadata(path)?;
        let mtime = meta.modified()?;
        if let Some((t, data)) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(path)
            && *t == mtime
            && data.len() as u64 == meta.len()
        {
            return Ok(data.clone());
        }
        let data: Arc<[u8]> = std::fs::read(path)?.into();
        if meta.len() <= CACHE_FILE_LIMIT {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(path.to_owned(), (mtime, data.clone()));
        }
        Ok(data)
    }
}

/// A parsed read request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub name: String,
    pub blksize: Option<usize>,
    pub tsize: bool,
    pub timeout: Option<u64>,
    pub windowsize: Option<usize>,
}

/// Parses a request packet: `Ok(None)` for a write request, an error text for garbage.
pub fn parse_request(p: &[u8]) -> Result<Option<ReadRequest>, &'static str> {
    if p.len() < 4 {
        return Err("packet too short");
    }
    let op = u16::from_be_bytes([p[0], p[1]]);
    if op == WRQ {
        return Ok(None);
    }
    if op != RRQ {
        return Err("not a read request");
    }
    let body = &p[2..];
    if body.last() != Some(&0) {
        return Err("request not NUL-terminated");
    }
    let mut fields = body[..body.len() - 1].split(|b| *b == 0);
    let name = fields.next().ok_or("no file name")?;
    let name = std::str::from_utf8(name).map_err(|_| "file name is not UTF-8")?;
    let mode = fields.next().ok_or("no transfer mode")?;
    if !mode.eq_ignore_ascii_case(b"octet") && !mode.eq_ignore_ascii_case(b"netascii") {
        return Err("unknown transfer mode");
    }
    let mut req = ReadRequest {
        name: name.to_owned(),
        blksize: None,
        tsize: false,
        timeout: None,
        windowsize: None,
    };
    while let Some(key) = fields.next() {
        let value = fields.next().ok_or("option without a value")?;
        let value = std::str::from_utf8(value).unwrap_or("");
        let number = value.parse::<u64>().ok();
        match key.to_ascii_lowercase().as_slice() {
            b"blksize" => {
                req.blksize = number
                    .filter(|n| *n >= 8)
                    .map(|n| n.min(MAX_BLKSIZE as u64) as usize)
            }
            b"tsize" => req.tsize = true,
            b"timeout" => req.timeout = number.filter(|n| (1..=MAX_TIMEOUT_SECS).contains(n)),
            b"windowsize" => {
                req.windowsize = number
                    .filter(|n| *n >= 1)
                    .map(|n| n.min(MAX_WINDOW as u64) as usize)
            }
            _ => {} // RFC 2347: unknown options are ignored
        }
    }
    Ok(Some(req))
}

fn error_packet(code: u16, text: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + text.len());
    p.extend_from_slice(&ERROR.to_be_bytes());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(text.as_bytes());
    p.push(0);
    p
}

/// The TFTP server.
pub struct TftpServer {
    root: PathBuf,
    state: Arc<State>,
    cache: Arc<FileCache>,
    slots: Arc<Slots>,
}

/// Transfers in progress, overall and by client address.
#[derive(Default)]
struct Slots(Mutex<HashMap<std::net::IpAddr, usize>>);

/// A transfer's place in [`Slots`], given back when dropped.
struct Slot {
    slots: Arc<Slots>,
    client: std::net::IpAddr,
}

impl Slots {
    /// A place for a transfer to `client`, or why there is none.
    fn take(self: &Arc<Self>, client: std::net::IpAddr) -> Result<Slot, &'static str> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.values().sum::<usize>() >= MAX_TRANSFERS {
            return Err("server busy: too many transfers");
        }
        let n = map.entry(client).or_default();
        if *n >= MAX_PER_CLIENT {
            return Err("server busy: too many transfers to this client");
        }
        *n += 1;
        Ok(Slot {
            slots: self.clone(),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.slots.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.client);
            }
        }
    }
}

impl TftpServer {
    pub fn new(root: PathBuf, state: Arc<State>) -> Self {
        TftpServer {
            root,
            state,
            cache: Arc::new(FileCache::default()),
            slots: Arc::default(),
        }
    }

    /// Answers read requests on `sock` until `shutdown`.
    pub async fn serve(self, sock: UdpSocket, shutdown: CancellationToken) {
        let mut buf = vec![0u8; 1500];
        loop {
            let (len, peer) = tokio::select! {
                r = sock.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "TFTP receive failed");
                        continue;
                    }
                },
                _ = shutdown.cancelled() => return,
            };
            let req = match parse_request(&buf[..len]) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    self.count("write refused");
                    let _ = sock
                        .send_to(&error_packet(ERR_ACCESS, "read-only server"), peer)
                        .await;
                    continue;
                }
                Err(why) => {
                    self.count("malformed");
                    let _ = sock.send_to(&error_packet(ERR_ILLEGAL, why), peer).await;
                    continue;
                }
            };
            let slot = match self.slots.take(peer.ip()) {
                Ok(slot) => slot,
                Err(why) => {
                    self.count("busy");
                    let _ = sock.send_to(&error_packet(ERR_UNDEFINED, why), peer).await;
                    continue;
                }
            };
            let root = self.root.clone();
            let state = self.state.clone();
            let cache = self.cache.clone();
            let stop = shutdown.clone();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            let name = req.name.clone();
            let thread = std::thread::Builder::new()
                .name("tftp".into())
                .spawn(move || {
                    let result = transfer(&root, &cache, req, peer, &stop);
                    drop(slot);
                    let _ = done_tx.send(result);
                });
            if let Err(e) = thread {
                tracing::warn!(error = %e, "cannot start a TFTP transfer thread");
                self.count("failed");
                continue;
            }
            tokio::spawn(async move {
                let result = done_rx
                    .await
                    .unwrap_or_else(|e| Err(TransferEnd::Failed(e.to_string())));
                let (reason, sent) = match result {
                    Ok(sent) => ("sent", sent),
                    Err(TransferEnd::Refused(why)) => {
                        tracing::info!(file = %name, %peer, reason = %why, "TFTP request refused");
                        ("refused", 0)
                    }
                    Err(TransferEnd::NotFound) => ("not found", 0),
                    Err(TransferEnd::Aborted) => ("aborted by client", 0),
                    Err(TransferEnd::Failed(why)) => {
                        tracing::info!(file = %name, %peer, reason = %why, "TFTP transfer failed");
                        ("failed", 0)
                    }
                };
                if reason == "sent" {
                    tracing::info!(file = %name, %peer, bytes = sent, "TFTP transfer done");
                }
                state
                    .metrics
                    .tftp_transfers
                    .get_or_create(&ReasonLabel {
                        reason: reason.into(),
                    })
                    .inc();
                state.metrics.tftp_bytes.inc_by(sent);
            });
        }
    }

    fn count(&self, reason: &str) {
        self.state
            .metrics
            .tftp_transfers
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }
}

enum TransferEnd {
    Refused(String),
    NotFound,
    Aborted,
    Failed(String),
}

/// Sends `req`'s file to `peer` from a new socket; returns the bytes sent. Blocking: it runs on
/// its own thread (`spawn_blocking`), which keeps the lock-step exchange of small datagrams as
/// cheap as a plain loop of system calls.
fn transfer(
    root: &Path,
    cache: &FileCache,
    req: ReadRequest,
    peer: SocketAddr,
    stop: &CancellationToken,
) -> Result<u64, TransferEnd> {
    let failed = |e: std::io::Error| TransferEnd::Failed(e.to_string());
    let bind = if peer.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sock = std::net::UdpSocket::bind(bind).map_err(failed)?;
    sock.connect(peer).map_err(failed)?;
    let data = match resolve(root, &req.name) {
        Ok(path) => cache.read(&path).map_err(failed)?,
        Err(e) => {
            let (code, end) = match &e {
                PathError::NotFound => (ERR_NOT_FOUND, TransferEnd::NotFound),
                PathError::Refused(why) => (ERR_ACCESS, TransferEnd::Refused((*why).to_owned())),
            };
            let _ = sock.send(&error_packet(code, &e.to_string()));
            return Err(end);
        }
    };
    let deadline = std::time::Instant::now() + TRANSFER_DEADLINE;
    let blksize = req.blksize.unwrap_or(DEFAULT_BLKSIZE);
    let window = req.windowsize.unwrap_or(1);
    let timeout = Duration::from_secs(req.timeout.unwrap_or(1));
    sock.set_read_timeout(Some(timeout)).map_err(failed)?;
    let timed_out = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    };
    let mut buf = vec![0u8; 1500];

    // Option negotiation (RFC 2347): OACK, answered by ACK 0.
    let mut oack = OACK.to_be_bytes().to_vec();
    let mut put = |k: &str, v: String| {
        oack.extend_from_slice(k.as_bytes());
        oack.push(0);
        oack.extend_from_slice(v.as_bytes());
        oack.push(0);
    };
    if let Some(b) = req.blksize {
        put("blksize", b.to_string());
    }
    if req.tsize {
        put("tsize", data.len().to_string());
    }
    if let Some(t) = req.timeout {
        put("timeout", t.to_string());
    }
    if let Some(w) = req.windowsize {
        put("windowsize", w.to_string());
    }
    if oack.len() > 2 {
        let mut tries = 0;
        loop {
            sock.send(&oack).map_err(failed)?;
            match sock.recv(&mut buf) {
                Ok(n) if n >= 4 => {
                    let op = u16::from_be_bytes([buf[0], buf[1]]);
                    let block = u16::from_be_bytes([buf[2], buf[3]]);
                    if op == ACK && block == 0 {
                        break;
                    }
                    if op == ERROR {
                        // PXE firmware asks for tsize, then aborts (code 8) to ask again for real.
                        return Err(TransferEnd::Aborted);
                    }
                }
                Ok(_) => {}
                Err(e) if timed_out(&e) => {
                    tries += 1;
                    if tries > RETRIES {
                        return Err(TransferEnd::Failed("no ACK of the options".into()));
                    }
                }
                Err(e) => return Err(failed(e)),
            }
        }
    }

    // Blocks are numbered from 1; `acked` counts whole blocks confirmed (64-bit: no rollover).
    let blocks = data.len() / blksize + 1;
    let mut acked: usize = 0;
    let mut tries = 0;
    let mut packet = Vec::with_capacity(blksize + 4);
    while acked < blocks {
        if stop.is_cancelled() {
            return Err(TransferEnd::Failed("shutting down".into()));
        }
        if std::time::Instant::now() > deadline {
            let _ = sock.send(&error_packet(ERR_UNDEFINED, "transfer took too long"));
            return Err(TransferEnd::Failed(format!(
                "not done within {TRANSFER_DEADLINE:?}"
            )));
        }
        let end = (acked + window).min(blocks);
        for n in acked + 1..=end {
            let from = (n - 1) * blksize;
            let to = (from + blksize).min(data.len());
            packet.clear();
            packet.extend_from_slice(&DATA.to_be_bytes());
            packet.extend_from_slice(&((n % 65536) as u16).to_be_bytes());
            packet.extend_from_slice(&data[from..to]);
            sock.send(&packet).map_err(failed)?;
        }
        let sent_at = std::time::Instant::now();
        loop {
            match sock.recv(&mut buf) {
                Ok(n) if n >= 4 => {
                    let op = u16::from_be_bytes([buf[0], buf[1]]);
                    if op == ERROR {
                        return Err(TransferEnd::Aborted);
                    }
                    let block = u16::from_be_bytes([buf[2], buf[3]]);
                    // Map the 16-bit number onto the window that was just sent.
                    let got = (op == ACK)
                        .then(|| (acked + 1..=end).find(|n| (n % 65536) as u16 == block))
                        .flatten();
                    if let Some(got) = got {
                        acked = got;
                        tries = 0;
                        break;
                    }
                    // A duplicate or stray packet: keep waiting, but not past the timeout.
                    if sent_at.elapsed() >= timeout {
                        tries += 1;
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) if timed_out(&e) => {
                    tries += 1;
                    break;
                }
                Err(e) => return Err(failed(e)),
            }
        }
        if tries > RETRIES {
            return Err(TransferEnd::Failed(format!("no ACK after block {acked}")));
        }
    }
    Ok(data.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_leave_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("ok.bin"), b"x").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
        std::os::unix::fs::symlink("ok.bin", root.join("inside")).unwrap();
        assert!(resolve(&root, "ok.bin").is_ok());
        assert!(resolve(&root, "inside").is_ok());
        assert!(matches!(
            resolve(&root, "../secret"),
            Err(PathError::Refused(_))
        ));
        assert!(matches!(
            resolve(&root, "a/../../secret"),
            Err(PathError::Refused(_))
        ));
        assert!(matches!(
            resolve(&root, "..\\secret"),
            Err(PathError::Refused(_))
        ));
        assert!(matches!(
            resolve(&root, "/etc/passwd"),
            Err(PathError::Refused(_))
        ));
        assert!(matches!(resolve(&root, "link"), Err(PathError::Refused(_))));
        assert_eq!(resolve(&root, "missing"), Err(PathError::NotFound));
        assert!(matches!(resolve(&root, ""), Err(PathError::Refused(_))));
    }

    #[test]
    fn transfers_are_bounded_overall_and_per_client() {
        let slots = Arc::new(Slots::default());
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let mut held: Vec<Slot> = (0..MAX_PER_CLIENT)
            .map(|_| slots.take(a).unwrap())
            .collect();
        assert!(slots.take(a).is_err(), "one client is capped");
        held.pop();
        held.push(slots.take(a).expect("a slot given back is free again"));
        for i in 0..MAX_TRANSFERS - MAX_PER_CLIENT {
            let ip = std::net::IpAddr::from([10, 1, (i / 200) as u8, (i % 200) as u8]);
            held.push(slots.take(ip).unwrap());
        }
        let other: std::net::IpAddr = "10.9.9.9".parse().unwrap();
        assert!(slots.take(other).is_err(), "everyone together is capped");
        drop(held);
        assert!(slots.0.lock().unwrap().is_empty());
        assert!(slots.take(other).is_ok());
    }

    #[test]
    fn requests_parse_with_options() {
        let p =
            b"\x00\x01pxelinux.0\x00octet\x00blksize\x001468\x00tsize\x000\x00windowsize\x004\x00";
        let r = parse_request(p).unwrap().unwrap();
        assert_eq!(r.name, "pxelinux.0");
        assert_eq!(r.blksize, Some(1468));
        assert!(r.tsize);
        assert_eq!(r.windowsize, Some(4));
        assert_eq!(parse_request(b"\x00\x02f\x00octet\x00"), Ok(None));
        // A timeout above the cap is not acknowledged: the default applies.
        let r = parse_request(b"\x00\x01f\x00octet\x00timeout\x00255\x00")
            .unwrap()
            .unwrap();
        assert_eq!(r.timeout, None);
        let r = parse_request(b"\x00\x01f\x00octet\x00timeout\x005\x00")
            .unwrap()
            .unwrap();
        assert_eq!(r.timeout, Some(5));
        for bad in [
            &b"\x00\x01"[..],
            b"\x00\x01f\x00octet",
            b"\x00\x09f\x00octet\x00",
            b"\x00\x01f\x00bogus\x00",
            b"\x00\x01f\x00octet\x00blksize\x00",
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?}");
        }
    }
}
