//! The DHCP (and ProxyDHCP) server: one UDP socket per served interface, bound to it with
//! `SO_BINDTODEVICE`, so a reply leaves through the interface its request came in on and the agent
//! never answers on an interface it was not told to serve.
//!
//! [`answer`] decides; this module only receives, decodes, encodes and sends.

pub mod answer;
pub mod pool;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use dhcproto::{Decodable as _, Decoder, Encodable as _, Encoder, v4::Message};
use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;

use crate::State;
use answer::{Answer, Arrival, Destination};

/// How often the interface list is read again (new addresses, new interfaces).
const RESCAN: Duration = Duration::from_secs(2);

/// Largest datagram read; DHCP messages are at most 576 bytes unless the client says otherwise.
const MAX_PACKET: usize = 4096;

/// Which interfaces to serve.
#[derive(Debug, Clone, Default)]
pub struct InterfaceFilter {
    /// Names to serve; empty means every interface except loopback.
    pub names: Vec<String>,
}

impl InterfaceFilter {
    fn selects(&self, name: &str, loopback: bool) -> bool {
        if self.names.is_empty() {
            !loopback
        } else {
            self.names.iter().any(|n| n == name)
        }
    }
}

/// The IPv4 addresses of the selected interfaces, by interface name.
fn scan(filter: &InterfaceFilter) -> HashMap<String, Vec<Ipv4Addr>> {
    let mut out: HashMap<String, Vec<Ipv4Addr>> = HashMap::new();
    match if_addrs::get_if_addrs() {
        Ok(list) => {
            for i in list {
                if let if_addrs::IfAddr::V4(v4) = &i.addr
                    && filter.selects(&i.name, i.is_loopback())
                {
                    out.entry(i.name.clone()).or_default().push(v4.ip);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "listing interfaces failed"),
    }
    out
}

/// A UDP socket on `port` of every address, bound to interface `name`. Blocking, with a short
/// read timeout so its thread notices when to stop.
fn interface_socket(name: &str, port: u16) -> std::io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    // Room for bursts (the kernel caps it at net.core.rmem_max).
    s.set_recv_buffer_size(4 << 20)?;
    s.bind_device(Some(name.as_bytes()))?;
    s.set_read_timeout(Some(Duration::from_millis(250)))?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
    Ok(s.into())
}

/// Serves DHCP on the selected interfaces until `shutdown`, following interfaces as they come and
/// go.
pub async fn serve(state: Arc<State>, filter: InterfaceFilter, shutdown: CancellationToken) {
    let mut running: HashMap<String, (Vec<Ipv4Addr>, CancellationToken)> = HashMap::new();
    let ports: &[u16] = if state.settings.proxy {
        &[67, 4011]
    } else {
        &[67]
    };
    let mut tick = tokio::time::interval(RESCAN);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        let now = scan(&filter);
        running.retain(|name, (addrs, stop)| {
            let keep = now.get(name) == Some(addrs) && !stop.is_cancelled();
            if !keep {
                stop.cancel();
            }
            keep
        });
        for (name, addrs) in now {
            if running.contains_key(&name) {
                continue;
            }
            let stop = shutdown.child_token();
            let mut opened = 0;
            for &port in ports {
                let started = interface_socket(&name, port).and_then(|sock| {
                    let (state, addrs, stop) = (state.clone(), addrs.clone(), stop.clone());
                    std::thread::Builder::new()
                        .name(format!("dhcp-{name}"))
                        .spawn(move || receive(&state, &sock, &addrs, port, &stop))
                });
                match started {
                    Ok(_) => opened += 1,
                    Err(e) => {
                        tracing::error!(interface = %name, port, error = %e, "cannot listen for DHCP")
                    }
                }
            }
            if opened > 0 {
                tracing::info!(interface = %name, addresses = ?addrs, "serving DHCP");
            }
            running.insert(name, (addrs, stop));
        }
    }
}

/// The receive loop of one socket, on its own thread: a request costs one receive, one decision
/// and one send, with no task switch in between.
fn receive(
    state: &State,
    sock: &std::net::UdpSocket,
    local: &[Ipv4Addr],
    port: u16,
    stop: &CancellationToken,
) {
    let mut buf = vec![0u8; MAX_PACKET];
    let mut out = Vec::with_capacity(1024);
    while !stop.is_cancelled() {
        let len = match sock.recv_from(&mut buf) {
            Ok((len, _)) => len,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "DHCP socket failed; reopening");
                stop.cancel();
                return;
            }
        };
        let Some((bytes, to)) = handle(state, &buf[..len], local, port, &mut out) else {
            continue;
        };
        let dest = match to {
            Destination::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, 68),
            Destination::Unicast(ip, p) => SocketAddrV4::new(ip, p),
        };
        if let Err(e) = sock.send_to(bytes, dest) {
            state.metrics.dhcp_send_errors.inc();
            tracing::debug!(error = %e, %dest, "sending a DHCP reply failed");
        }
    }
}

/// Checks the frame of a DHCP message before it is decoded: the fixed header, the magic cookie,
/// and options that each fit in the packet and end with the End option. Lenient decoders accept a
/// packet cut in the middle of its options; we drop it.
pub fn well_formed(packet: &[u8]) -> bool {
    const OPTIONS: usize = 240;
    if packet.len() < OPTIONS || packet[236..OPTIONS] != [99, 130, 83, 99] {
        return false;
    }
    let mut i = OPTIONS;
    while i < packet.len() {
        match packet[i] {
            0 => i += 1,
            255 => return true,
            code => {
                let Some(&len) = packet.get(i + 1) else {
                    return false;
                };
                // Options whose size the decoder takes on trust (dhcproto asserts it, or
                // subtracts from it, and would otherwise read the next option's bytes as its
                // own): rapid commit, client NII, client FQDN, bulk-leasequery status and times.
                // Found by fuzzing (`fuzz/fuzz_targets/packets.rs`).
                let size_ok = match code {
                    80 => len == 0,
                    94 => len == 3,
                    81 => len >= 3,
                    151 => len >= 1,
                    152..=155 => len == 4,
                    _ => true,
                };
                if !size_ok {
                    return false;
                }
                i += 2 + usize::from(len);
            }
        }
    }
    false
}

/// Decodes one datagram, decides, and encodes the reply into `out`.
pub fn handle<'o>(
    state: &State,
    packet: &[u8],
    local: &[Ipv4Addr],
    port: u16,
    out: &'o mut Vec<u8>,
) -> Option<(&'o [u8], Destination)> {
    if !well_formed(packet) {
        tracing::trace!(bytes = packet.len(), "DHCP packet malformed");
        state.metrics.dhcp_ignored("malformed");
        return None;
    }
    let Ok(req) = Message::decode(&mut Decoder::new(packet)) else {
        tracing::trace!(bytes = packet.len(), "DHCP packet undecodable");
        state.metrics.dhcp_ignored("malformed");
        return None;
    };
    let table = state.table();
    let at = Arrival {
        local,
        port,
        now_ms: crate::now_ms(),
    };
    let decided = {
        let mut pool = state.pool.lock().unwrap_or_else(|p| p.into_inner());
        let a = answer::answer(&req, at, &table, &mut pool, &state.settings);
        if !pool.wishes_empty() {
            state.blocks_wanted.notify_one();
        }
        a
    };
    match decided {
        Answer::Ignore(reason) => {
            tracing::trace!(chaddr = ?req.chaddr(), reason, "DHCP request ignored");
            state.metrics.dhcp_ignored(reason);
            None
        }
        Answer::Reply {
            message,
            to,
            kind,
            sighting,
        } => {
            if let Some(s) = sighting {
                state.discovered(s);
            }
            out.clear();
            let mut enc = Encoder::new(out);
            if let Err(e) = message.encode(&mut enc) {
                tracing::error!(error = %e, "encoding a DHCP reply failed");
                return None;
            }
            tracing::trace!(chaddr = ?req.chaddr(), ?kind, yiaddr = %message.yiaddr(), ?to, "DHCP reply");
            state.metrics.dhcp_answered(kind);
            Some((out.as_slice(), to))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::answer::Settings;
    use crate::dhcp::pool::Pool;

    /// Inputs the fuzzer (fuzz/fuzz_targets/packets.rs) found; each once panicked.
    #[test]
    fn fuzz_findings_are_dropped_not_panicked_on() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
        let state = State::for_tests(crate::fuzz_table(), Pool::in_memory(), Settings::default());
        let local = [Ipv4Addr::new(10, 0, 0, 1)];
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let packet = std::fs::read(entry.unwrap().path()).unwrap();
            let mut out = Vec::new();
            let _ = handle(&state, &packet, &local, 67, &mut out);
            checked += 1;
        }
        assert!(checked > 0);
        // An option whose size is fixed, with another size, is malformed.
        let mut p = vec![0u8; 240];
        p[236..240].copy_from_slice(&[99, 130, 83, 99]);
        p.extend_from_slice(&[53, 1, 1, 152, 1, 0, 255]);
        assert!(!well_formed(&p));
    }
}
