//! The DHCP decision: one request in, at most one reply out. Pure apart from the lease pool, so
//! every case is unit-tested without sockets.
//!
//! - Known NICs (in the inventory, with an address in the network) get their reserved address,
//!   hostname and the network's options. Every agent answers them identically.
//! - Other machines get an address from this agent's blocks of the network's dynamic range and are
//!   reported as discovered.
//! - PXE clients also get what to boot: an iPXE binary over TFTP chosen by their architecture
//!   (option 93), or, once they run iPXE (user class "iPXE"), the HTTP URL of their iPXE script;
//!   UEFI HTTP boot clients get an HTTP URL.
//! - In ProxyDHCP mode the agent gives no addresses: it answers only PXE clients, with boot
//!   information (and on port 4011 to their boot-server REQUEST).

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, HType, Message, MessageType, Opcode, OptionCode};
use xcat3_types::{MacAddr, Network};

use super::pool::Pool;
use crate::table::Table;

/// Where a reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:68 out of the receiving interface.
    Broadcast,
    /// A relay agent (port 67) or a configured client (port 68).
    Unicast(Ipv4Addr, u16),
}

/// A machine not in the inventory that asked for an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub mac: MacAddr,
    pub ip: Option<Ipv4Addr>,
    pub network: String,
    pub client_arch: i32,
    pub vendor_class: String,
}

/// What to do with a request.
#[derive(Debug)]
pub enum Answer {
    Reply {
        message: Box<Message>,
        to: Destination,
        kind: MessageType,
        sighting: Option<Sighting>,
    },
    /// No reply, with the reason (for the metrics and debug log).
    Ignore(&'static str),
}

/// How the agent answers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Lease time of reserved and dynamic addresses, in seconds.
    pub lease_secs: u32,
    /// Port of the agent's HTTP server (iPXE scripts and binaries).
    pub http_port: u16,
    /// Answer only PXE clients, without addresses.
    pub proxy: bool,
    /// Boot files by client architecture.
    pub files: BootFiles,
}

/// The iPXE binaries handed to PXE firmware, by architecture (paths under the TFTP root).
#[derive(Debug, Clone)]
pub struct BootFiles {
    pub bios: String,
    pub efi_x64: String,
    pub efi_arm64: String,
}

impl Default for BootFiles {
    fn default() -> Self {
        BootFiles {
            bios: "undionly.kpxe".into(),
            efi_x64: "ipxe.efi".into(),
            efi_arm64: "ipxe-arm64.efi".into(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lease_secs: 43_200,
            http_port: 8080,
            proxy: false,
            files: BootFiles::default(),
        }
    }
}

/// What arrived, and where.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    /// The IPv4 addresses of the interface it arrived on.
    pub local: &'a [Ipv4Addr],
    /// 67, or 4011 for a PXE boot-server request.
    pub port: u16,
    /// Unix milliseconds.
    pub now_ms: i64,
}

/// The kind of boot client, from options 60, 77, 93 and 175.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    /// An installed OS or anything else: addresses only.
    Plain,
    /// PXE firmware with its architecture (option 93).
    Pxe(u16),
    /// UEFI HTTP boot firmware.
    Http,
    /// iPXE already running.
    Ipxe,
}

fn vendor_class(m: &Message) -> String {
    match m.opts().get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) => String::from_utf8_lossy(v).into_owned(),
        _ => String::new(),
    }
}

fn client_arch(m: &Message) -> Option<u16> {
    match m.opts().get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(a.0),
        _ => None,
    }
}

fn classify(m: &Message) -> Client {
    let ipxe_user_class = matches!(
        m.opts().get(OptionCode::UserClass),
        Some(DhcpOption::UserClass(v)) if v.windows(4).any(|w| w == b"iPXE")
    );
    let ipxe_options = m.opts().get(OptionCode::Unknown(175)).is_some();
    if ipxe_user_class || ipxe_options {
        return Client::Ipxe;
    }
    let class = vendor_class(m);
    if class.starts_with("HTTPClient") {
        Client::Http
    } else if class.starts_with("PXEClient") {
        Client::Pxe(client_arch(m).unwrap_or(0))
    } else {
        Client::Plain
    }
}

/// The server address to speak from for `net`: the relay's network is reached through the
/// receiving interface's first address.
fn server_ip(net: &Network, local: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    local
        .iter()
        .copied()
        .find(|a| net.contains(*a))
        .or_else(|| local.first().copied())
}

fn broadcast_of(net: &Network) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.subnet) | !u32::from(net.netmask))
}

/// The URL of a client's iPXE script.
pub fn script_url(server: Ipv4Addr, port: u16, mac: MacAddr) -> String {
    format!("http://{server}:{port}/boot/{mac}.ipxe")
}

/// Decides the answer to `req`.
pub fn answer(
    req: &Message,
    at: Arrival<'_>,
    table: &Table,
    pool: &mut Pool,
    settings: &Settings,
) -> Answer {
    if req.opcode() != Opcode::BootRequest {
        return Answer::Ignore("not a request");
    }
    if req.htype() != HType::Eth || req.hlen() != 6 || req.chaddr().len() < 6 {
        return Answer::Ignore("not an Ethernet client");
    }
    let Some(kind) = req.opts().msg_type() else {
        return Answer::Ignore("BOOTP (no message type)");
    };
    let mut octets = [0u8; 6];
    octets.copy_from_slice(&req.chaddr()[..6]);
    let mac = MacAddr(octets);
    let relayed = !req.giaddr().is_unspecified();
    let net = if relayed {
        table.network_of(req.giaddr())
    } else {
        at.local.iter().find_map(|a| table.network_of(*a))
    };
    let Some(net) = net else {
        return Answer::Ignore("no network defined for this segment");
    };
    let Some(server) = server_ip(net, at.local) else {
        return Answer::Ignore("the interface has no address");
    };
    let client = classify(req);
    if settings.proxy || at.port == 4011 {
        return proxy_answer(req, kind, client, mac, server, settings);
    }
    let known = table
        .hosts
        .get(&mac)
        .filter(|h| h.ip.is_some_and(|ip| net.contains(ip)));
    let reserved = |ip: Ipv4Addr| table.by_ip.get(&ip).is_some_and(|m| *m != mac);
    let requested = match req.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    };
    let server_id = match req.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    let sighting = |ip: Option<Ipv4Addr>| {
        known.is_none().then(|| Sighting {
            mac,
            ip,
            network: net.name.clone(),
            client_arch: client_arch(req).map_or(-1, i32::from),
            vendor_class: vendor_class(req),
        })
    };
    let range = net.dynamic_range;
    let full = FullReply {
        req,
        server,
        net,
        hostname: known.map(|h| h.node.as_str()),
        client,
        mac,
        settings,
    };
    match kind {
        MessageType::Discover => {
            let ip = match (known, range) {
                (Some(h), _) => h.ip,
                (None, Some(range)) => {
                    pool.offer(&net.name, range, mac, requested, &reserved, at.now_ms)
                }
                (None, None) => None,
            };
            let Some(ip) = ip else {
                return Answer::Ignore("no address for this client");
            };
            let message = full.build(MessageType::Offer, ip);
            Answer::Reply {
                to: destination(req, relayed),
                message: Box::new(message),
                kind: MessageType::Offer,
                sighting: sighting(Some(ip)),
            }
        }
        MessageType::Request => {
            if let Some(id) = server_id
                && id != server
            {
                // The client chose another server's offer.
                if known.is_none() {
                    pool.release(&net.name, mac);
                }
                return Answer::Ignore("the client chose another server");
            }
            let wanted =
                requested.or_else(|| (!req.ciaddr().is_unspecified()).then(|| req.ciaddr()));
            let Some(wanted) = wanted else {
                return Answer::Ignore("REQUEST without an address");
            };
            let ok = match (known, range) {
                (Some(h), _) => h.ip == Some(wanted),
                (None, Some(range)) => pool.bind(
                    &net.name,
                    range,
                    mac,
                    wanted,
                    settings.lease_secs,
                    &reserved,
                    at.now_ms,
                ),
                (None, None) => false,
            };
            if ok {
                let message = full.build(MessageType::Ack, wanted);
                return Answer::Reply {
                    to: destination(req, relayed),
                    message: Box::new(message),
                    kind: MessageType::Ack,
                    sighting: sighting(Some(wanted)),
                };
            }
            // RFC 2131 4.3.2: NAK a wrong address on the client's network; stay silent about a
            // client we have no record of (another server may have it).
            let ours = server_id.is_some() || known.is_some() || !net.contains(wanted);
            if !ours {
                return Answer::Ignore("REQUEST for an address this agent has no record of");
            }
            let mut nak = Message::new_with_id(
                req.xid(),
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                req.giaddr(),
                req.chaddr(),
            );
            nak.set_opcode(Opcode::BootReply).set_flags(req.flags());
            nak.opts_mut()
                .insert(DhcpOption::MessageType(MessageType::Nak));
            nak.opts_mut().insert(DhcpOption::ServerIdentifier(server));
            nak.opts_mut().insert(DhcpOption::Message(
                "requested address is not valid here".into(),
            ));
            Answer::Reply {
                to: if relayed {
                    Destination::Unicast(req.giaddr(), 67)
                } else {
                    Destination::Broadcast
                },
                message: Box::new(nak),
                kind: MessageType::Nak,
                sighting: None,
            }
        }
        MessageType::Release => {
            if known.is_none() && server_id.is_none_or(|id| id == server) {
                pool.release(&net.name, mac);
            }
            Answer::Ignore("released")
        }
        MessageType::Decline => {
            match (known, requested) {
                (Some(h), _) => {
                    tracing::warn!(node = %h.node, mac = %mac, ip = ?h.ip, "a node declined its reserved address: something else answers at it")
                }
                (None, Some(ip)) => pool.decline(&net.name, mac, ip, at.now_ms),
                (None, None) => {}
            }
            Answer::Ignore("declined")
        }
        MessageType::Inform => {
            let ciaddr = req.ciaddr();
            if ciaddr.is_unspecified() {
                return Answer::Ignore("INFORM without ciaddr");
            }
            let mut message = full.build(MessageType::Ack, Ipv4Addr::UNSPECIFIED);
            // RFC 2131 3.4: no lease time in the answer to an INFORM.
            for code in [
                OptionCode::AddressLeaseTime,
                OptionCode::Renewal,
                OptionCode::Rebinding,
            ] {
                message.opts_mut().remove(code);
            }
            Answer::Reply {
                to: if relayed {
                    Destination::Unicast(req.giaddr(), 67)
                } else {
                    Destination::Unicast(ciaddr, 68)
                },
                message: Box::new(message),
                kind: MessageType::Ack,
                sighting: None,
            }
        }
        _ => Answer::Ignore("not a client message"),
    }
}

/// Where an OFFER or ACK goes (RFC 2131 4.1): the relay, a configured client, or broadcast (we
/// cannot unicast to a client without an address without writing the ARP table).
fn destination(req: &Message, relayed: bool) -> Destination {
    if relayed {
        Destination::Unicast(req.giaddr(), 67)
    } else if !req.ciaddr().is_unspecified() {
        Destination::Unicast(req.ciaddr(), 68)
    } else {
        Destination::Broadcast
    }
}

/// The bones of a reply: ids, addresses, flags and relay information copied from the request.
fn skeleton(req: &Message, kind: MessageType, yiaddr: Ipv4Addr, server: Ipv4Addr) -> Message {
    let mut m = Message::new_with_id(
        req.xid(),
        req.ciaddr(),
        yiaddr,
        Ipv4Addr::UNSPECIFIED,
        req.giaddr(),
        req.chaddr(),
    );
    m.set_opcode(Opcode::BootReply)
        .set_flags(if req.giaddr().is_unspecified() {
            req.flags()
        } else {
            req.flags().set_broadcast()
        });
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(server));
    // RFC 3046: a relay's agent information goes back unchanged.
    if let Some(DhcpOption::RelayAgentInformation(info)) =
        req.opts().get(OptionCode::RelayAgentInformation)
    {
        opts.insert(DhcpOption::RelayAgentInformation(info.clone()));
    }
    m
}

/// What every full reply (OFFER, ACK) to one request is made of.
struct FullReply<'a> {
    req: &'a Message,
    server: Ipv4Addr,
    net: &'a Network,
    hostname: Option<&'a str>,
    client: Client,
    mac: MacAddr,
    settings: &'a Settings,
}

impl FullReply<'_> {
    /// A reply with the network's options and the boot information the client needs.
    fn build(&self, kind: MessageType, ip: Ipv4Addr) -> Message {
        let FullReply {
            req,
            server,
            net,
            hostname,
            client,
            mac,
            settings,
        } = *self;
        let mut m = skeleton(req, kind, ip, server);
        let lease = settings.lease_secs;
        let opts = m.opts_mut();
        opts.insert(DhcpOption::SubnetMask(net.netmask));
        opts.insert(DhcpOption::BroadcastAddr(broadcast_of(net)));
        if let Some(gw) = net.gateway {
            opts.insert(DhcpOption::Router(vec![gw]));
        }
        if !net.nameservers.is_empty() {
            opts.insert(DhcpOption::DomainNameServer(net.nameservers.clone()));
        }
        if let Some(domain) = &net.domain {
            opts.insert(DhcpOption::DomainName(domain.clone()));
        }
        if let Some(mtu) = net.mtu.and_then(|m| u16::try_from(m).ok()) {
            opts.insert(DhcpOption::InterfaceMtu(mtu));
        }
        if let Some(name) = hostname {
            opts.insert(DhcpOption::Hostname(name.to_owned()));
        }
        opts.insert(DhcpOption::AddressLeaseTime(lease));
        opts.insert(DhcpOption::Renewal(lease / 2));
        opts.insert(DhcpOption::Rebinding(lease / 8 * 7));
        boot_options(&mut m, client, mac, server, settings);
        m
    }
}

/// Adds what a boot client needs: next server, boot file, and the PXE vendor options.
fn boot_options(
    m: &mut Message,
    client: Client,
    mac: MacAddr,
    server: Ipv4Addr,
    settings: &Settings,
) {
    let file = match client {
        Client::Plain => return,
        Client::Ipxe => script_url(server, settings.http_port, mac),
        Client::Http => format!(
            "http://{server}:{}/{}",
            settings.http_port, settings.files.efi_x64
        ),
        Client::Pxe(arch) => match arch {
            0 => settings.files.bios.clone(),
            6 | 7 | 9 => settings.files.efi_x64.clone(),
            11 => settings.files.efi_arm64.clone(),
            _ => settings.files.bios.clone(),
        },
    };
    m.set_siaddr(server);
    m.set_fname_str(&file);
    let opts = m.opts_mut();
    opts.insert(DhcpOption::BootfileName(file.into_bytes()));
    match client {
        Client::Http => {
            opts.insert(DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()));
        }
        Client::Pxe(_) => {
            opts.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
            opts.insert(DhcpOption::TFTPServerName(server.to_string().into_bytes()));
            // PXE vendor option 6 (discovery control) = 8: boot the file given, no boot-server
            // discovery.
            opts.insert(DhcpOption::VendorExtensions(vec![6, 1, 8, 255]));
        }
        Client::Ipxe | Client::Plain => {}
    }
}

/// ProxyDHCP: boot information only, for PXE and iPXE clients.
fn proxy_answer(
    req: &Message,
    kind: MessageType,
    client: Client,
    mac: MacAddr,
    server: Ipv4Addr,
    settings: &Settings,
) -> Answer {
    if client == Client::Plain {
        return Answer::Ignore("proxy mode: not a boot client");
    }
    let reply_kind = match kind {
        MessageType::Discover => MessageType::Offer,
        MessageType::Request | MessageType::Inform => MessageType::Ack,
        _ => return Answer::Ignore("proxy mode: nothing to answer"),
    };
    let mut m = skeleton(req, reply_kind, Ipv4Addr::UNSPECIFIED, server);
    // A proxy offer must say PXEClient even to iPXE, or the firmware ignores it.
    boot_options(&mut m, client, mac, server, settings);
    if client == Client::Ipxe {
        m.opts_mut()
            .insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
    }
    let to = if !req.ciaddr().is_unspecified() {
        Destination::Unicast(req.ciaddr(), 68)
    } else {
        Destination::Broadcast
    };
    Answer::Reply {
        message: Box::new(m),
        to,
        kind: reply_kind,
        sighting: None,
    }
}
