//! The DHCP decisions, message by message, without sockets: relays, NAKs, INFORM, RELEASE,
//! DECLINE, ProxyDHCP, and a corpus of malformed packets that must be dropped, never crash.

#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode, relay};
use dhcproto::{Decodable as _, Decoder, Encodable as _};
use xcat3_network::State;
use xcat3_network::dhcp::answer::{Answer, Arrival, Destination, Settings, answer};
use xcat3_network::dhcp::pool::Pool;
use xcat3_network::table::Table;
use xcat3_proto::internal::{BootHost, BootUpdate, LocalBoot, boot_host::Action};
use xcat3_proto::pb;
use xcat3_types::IpRange;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const KNOWN: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const STRANGER: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const NOW: i64 = 1_000_000_000;

fn table() -> Table {
    let mut t = Table::default();
    t.apply(&BootUpdate {
        revision: 1,
        snapshot: true,
        networks: vec![
            pb::Network {
                name: "local".into(),
                subnet: "10.0.0.0".into(),
                netmask: "255.255.255.0".into(),
                gateway: "10.0.0.254".into(),
                dynamic_range: "10.0.0.100-10.0.0.199".into(),
                ..Default::default()
            },
            pb::Network {
                name: "remote".into(),
                subnet: "10.9.0.0".into(),
                netmask: "255.255.0.0".into(),
                dynamic_range: "10.9.1.0-10.9.1.255".into(),
                ..Default::default()
            },
        ],
        hosts: vec![BootHost {
            mac: "52:54:00:00:00:01".into(),
            ip: "10.0.0.11".into(),
            node: "n1".into(),
            action: Some(Action::Local(LocalBoot {})),
            ..Default::default()
        }],
        ..Default::default()
    })
    .unwrap();
    t
}

fn pool() -> Pool {
    let mut p = Pool::in_memory();
    let r = |a: &str, b: &str| IpRange {
        start: a.parse().unwrap(),
        end: b.parse().unwrap(),
    };
    p.set_blocks(
        "local",
        vec![(r("10.0.0.100", "10.0.0.115"), NOW + 3_600_000)],
    );
    p.set_blocks(
        "remote",
        vec![(r("10.9.1.0", "10.9.1.15"), NOW + 3_600_000)],
    );
    p
}

fn request(mac: [u8; 6], kind: MessageType) -> Message {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(42, z, z, z, z, &mac);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m
}

fn at() -> Arrival<'static> {
    static LOCAL: [Ipv4Addr; 1] = [SERVER];
    Arrival {
        local: &LOCAL,
        port: 67,
        now_ms: NOW,
    }
}

fn reply(a: Answer) -> (Message, Destination, MessageType) {
    match a {
        Answer::Reply {
            message, to, kind, ..
        } => (*message, to, kind),
        Answer::Ignore(why) => panic!("ignored: {why}"),
    }
}

#[test]
fn known_nic_gets_its_reservation_through_the_whole_exchange() {
    let (t, mut p, s) = (table(), pool(), Settings::default());
    let (offer, to, kind) = reply(answer(
        &request(KNOWN, MessageType::Discover),
        at(),
        &t,
        &mut p,
        &s,
    ));
    assert_eq!(kind, MessageType::Offer);
    assert_eq!(to, Destination::Broadcast);
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 0, 0, 11));
    assert_eq!(offer.opcode(), Opcode::BootReply);
    assert_eq!(offer.xid(), 42);
    assert!(
        matches!(offer.opts().get(OptionCode::Hostname), Some(DhcpOption::Hostname(h)) if h == "n1")
    );
    assert!(
        matches!(offer.opts().get(OptionCode::Router), Some(DhcpOption::Router(r)) if r == &[Ipv4Addr::new(10, 0, 0, 254)])
    );
    let mut req = request(KNOWN, MessageType::Request);
    req.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    req.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 11)));
    let (ack, _, kind) = reply(answer(&req, at(), &t, &mut p, &s));
    assert_eq!(kind, MessageType::Ack);
    assert_eq!(ack.yiaddr(), Ipv4Addr::new(10, 0, 0, 11));
    // Asking for another address gets a NAK.
    let mut wrong = request(KNOWN, MessageType::Request);
    wrong
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 12)));
    let (_, _, kind) = reply(answer(&wrong, at(), &t, &mut p, &s));
    assert_eq!(kind, MessageType::Nak);
}

#[test]
fn requests_for_another_server_are_left_alone_and_free_the_offer() {
    let (t, mut p, s) = (table(), pool(), Settings::default());
    let (offer, _, _) = reply(answer(
        &request(STRANGER, MessageType::Discover),
        at(),
        &t,
        &mut p,
        &s,
    ));
    let offered = offer.yiaddr();
    let mut other = request(STRANGER, MessageType::Request);
    other
        .opts_mut()
        .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 2)));
    other
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 150)));
    assert!(matches!(
        answer(&other, at(), &t, &mut p, &s),
        Answer::Ignore(_)
    ));
    assert!(
        p.lease("local", xcat3_types::MacAddr(STRANGER), NOW)
            .is_none()
    );
    // An init-reboot REQUEST for an address we never gave: silence (another server may own it).
    let mut reboot = request([0x52, 0x54, 0, 0, 0, 7], MessageType::Request);
    reboot
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 180)));
    assert!(matches!(
        answer(&reboot, at(), &t, &mut p, &s),
        Answer::Ignore(_)
    ));
    // ... but one from another subnet is NAKed.
    reboot
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(
            192, 168, 1, 5,
        )));
    let (_, _, kind) = reply(answer(&reboot, at(), &t, &mut p, &s));
    assert_eq!(kind, MessageType::Nak);
    assert!(offered.octets()[3] >= 100);
}

#[test]
fn release_and_decline_free_and_block_dynamic_addresses() {
    let (t, mut p, s) = (table(), pool(), Settings::default());
    let discover = request(STRANGER, MessageType::Discover);
    let (offer, _, _) = reply(answer(&discover, at(), &t, &mut p, &s));
    let ip = offer.yiaddr();
    let mut req = request(STRANGER, MessageType::Request);
    req.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    req.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    reply(answer(&req, at(), &t, &mut p, &s));
    assert_eq!(
        p.lease("local", xcat3_types::MacAddr(STRANGER), NOW)
            .map(|l| l.ip),
        Some(ip)
    );
    let mut decline = request(STRANGER, MessageType::Decline);
    decline
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(ip));
    assert!(matches!(
        answer(&decline, at(), &t, &mut p, &s),
        Answer::Ignore(_)
    ));
    let (again, _, _) = reply(answer(&discover, at(), &t, &mut p, &s));
    assert_ne!(
        again.yiaddr(),
        ip,
        "a declined address is not offered again"
    );
    let mut release = request(STRANGER, MessageType::Release);
    release.set_ciaddr(again.yiaddr());
    answer(&release, at(), &t, &mut p, &s);
}

#[test]
fn relayed_requests_are_answered_for_the_relay_network_with_option_82_echoed() {
    let (t, mut p, s) = (table(), pool(), Settings::default());
    let mut req = request(STRANGER, MessageType::Discover);
    req.set_giaddr(Ipv4Addr::new(10, 9, 0, 1));
    let mut info = relay::RelayAgentInformation::default();
    info.insert(relay::RelayInfo::AgentCircuitId(b"port7".to_vec()));
    req.opts_mut()
        .insert(DhcpOption::RelayAgentInformation(info.clone()));
    let (offer, to, _) = reply(answer(&req, at(), &t, &mut p, &s));
    assert_eq!(to, Destination::Unicast(Ipv4Addr::new(10, 9, 0, 1), 67));
    assert_eq!(offer.yiaddr().octets()[..3], [10, 9, 1]);
    assert_eq!(offer.giaddr(), Ipv4Addr::new(10, 9, 0, 1));
    assert!(
        matches!(offer.opts().get(OptionCode::RelayAgentInformation), Some(DhcpOption::RelayAgentInformation(i)) if *i == info)
    );
}

#[test]
fn inform_gets_options_without_a_lease() {
    let (t, mut p, s) = (table(), pool(), Settings::default());
    let mut req = request(KNOWN, MessageType::Inform);
    req.set_ciaddr(Ipv4Addr::new(10, 0, 0, 11));
    let (ack, to, kind) = reply(answer(&req, at(), &t, &mut p, &s));
    assert_eq!(kind, MessageType::Ack);
    assert_eq!(to, Destination::Unicast(Ipv4Addr::new(10, 0, 0, 11), 68));
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(ack.opts().get(OptionCode::AddressLeaseTime).is_none());
    assert!(ack.opts().get(OptionCode::SubnetMask).is_some());
}

#[test]
fn boot_files_follow_the_client() {
    let (t, mut p, s) = (table(), pool(), Settings::default());
    let pxe = |arch: u16| {
        let mut m = request(KNOWN, MessageType::Discover);
        m.opts_mut().insert(DhcpOption::ClassIdentifier(
            format!("PXEClient:Arch:{arch:05}:UNDI:003000").into_bytes(),
        ));
        m.opts_mut().insert(DhcpOption::ClientSystemArchitecture(
            dhcproto::v4::Architecture(arch),
        ));
        m
    };
    let file = |m: &Message| {
        m.fname_str()
            .and_then(Result::ok)
            .map(str::to_owned)
            .unwrap_or_default()
    };
    for (arch, want) in [
        (0, "undionly.kpxe"),
        (7, "ipxe.efi"),
        (9, "ipxe.efi"),
        (11, "ipxe-arm64.efi"),
    ] {
        let (offer, _, _) = reply(answer(&pxe(arch), at(), &t, &mut p, &s));
        assert_eq!(file(&offer), want, "arch {arch}");
        assert_eq!(offer.siaddr(), SERVER);
        assert!(
            matches!(offer.opts().get(OptionCode::ClassIdentifier), Some(DhcpOption::ClassIdentifier(c)) if c == b"PXEClient")
        );
    }
    let mut ipxe = request(KNOWN, MessageType::Discover);
    ipxe.opts_mut()
        .insert(DhcpOption::UserClass(b"iPXE".to_vec()));
    let (offer, _, _) = reply(answer(&ipxe, at(), &t, &mut p, &s));
    assert_eq!(
        file(&offer),
        "http://10.0.0.1:8080/boot/52:54:00:00:00:01.ipxe"
    );
    let mut http = request(KNOWN, MessageType::Discover);
    http.opts_mut().insert(DhcpOption::ClassIdentifier(
        b"HTTPClient:Arch:00016:UNDI:003000".to_vec(),
    ));
    let (offer, _, _) = reply(answer(&http, at(), &t, &mut p, &s));
    assert_eq!(file(&offer), "http://10.0.0.1:8080/ipxe.efi");
    // A plain client (an installed OS) gets no boot file.
    let (offer, _, _) = reply(answer(
        &request(KNOWN, MessageType::Discover),
        at(),
        &t,
        &mut p,
        &s,
    ));
    assert_eq!(file(&offer), "");
}

#[test]
fn proxy_mode_answers_only_boot_clients_and_gives_no_address() {
    let (t, mut p) = (table(), pool());
    let s = Settings {
        proxy: true,
        ..Settings::default()
    };
    assert!(matches!(
        answer(
            &request(STRANGER, MessageType::Discover),
            at(),
            &t,
            &mut p,
            &s
        ),
        Answer::Ignore(_)
    ));
    let mut m = request(STRANGER, MessageType::Discover);
    m.opts_mut().insert(DhcpOption::ClassIdentifier(
        b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
    ));
    let (offer, _, kind) = reply(answer(&m, at(), &t, &mut p, &s));
    assert_eq!(kind, MessageType::Offer);
    assert_eq!(offer.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(offer.fname_str().unwrap().unwrap(), "undionly.kpxe");
    // The boot-server REQUEST on port 4011.
    let mut r = request(STRANGER, MessageType::Request);
    r.opts_mut().insert(DhcpOption::ClassIdentifier(
        b"PXEClient:Arch:00007:UNDI:003000".to_vec(),
    ));
    r.opts_mut().insert(DhcpOption::ClientSystemArchitecture(
        dhcproto::v4::Architecture(7),
    ));
    r.set_ciaddr(Ipv4Addr::new(10, 0, 0, 77));
    let at4011 = Arrival { port: 4011, ..at() };
    let (ack, to, kind) = reply(answer(&r, at4011, &t, &mut p, &s));
    assert_eq!(kind, MessageType::Ack);
    assert_eq!(to, Destination::Unicast(Ipv4Addr::new(10, 0, 0, 77), 68));
    assert_eq!(ack.fname_str().unwrap().unwrap(), "ipxe.efi");
}

#[test]
fn segments_without_a_network_are_not_answered() {
    let (t, mut p, s) = (table(), pool(), Settings::default());
    let elsewhere = [Ipv4Addr::new(192, 168, 5, 1)];
    let at = Arrival {
        local: &elsewhere,
        port: 67,
        now_ms: NOW,
    };
    assert!(matches!(
        answer(&request(KNOWN, MessageType::Discover), at, &t, &mut p, &s),
        Answer::Ignore(_)
    ));
}

/// Malformed packets: truncated, bad option lengths, huge lengths, wrong op codes, wrong hardware
/// types, option overload garbage. None may panic; none may get a reply.
fn corpus() -> Vec<Vec<u8>> {
    let good = {
        let mut m = request(KNOWN, MessageType::Discover);
        m.opts_mut().insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
        ]));
        m.to_vec().unwrap()
    };
    let mut out: Vec<Vec<u8>> = vec![Vec::new(), vec![1], vec![1; 235], vec![0xff; 1500]];
    // Every truncation of a good packet.
    for n in 0..good.len() {
        out.push(good[..n].to_vec());
    }
    let magic = 236;
    let with_options = |opts: &[u8]| {
        let mut p = good[..magic + 4].to_vec();
        p.extend_from_slice(opts);
        p
    };
    for opts in [
        &[53u8, 1][..],                 // length runs past the end
        &[53, 255, 1],                  // huge length
        &[53, 0, 255],                  // empty message type
        &[53, 1, 99, 255],              // unknown message type
        &[55, 200, 1, 2],               // request list longer than the packet
        &[61, 0, 255],                  // empty client id
        &[82, 5, 1, 200, 0, 0, 0, 255], // relay sub-option longer than the option
        &[50, 3, 10, 0, 0, 255],        // requested address of 3 bytes
        &[54, 7, 1, 2, 3, 4, 5, 6, 7, 255],
        &[52, 1, 3, 53, 1, 1, 255], // option overload pointing at garbage
        &[93, 1, 0, 53, 1, 1, 255], // one-byte architecture
        &[0; 64],                   // padding only, no end
    ] {
        out.push(with_options(opts));
    }
    let mut wrong_op = good.clone();
    wrong_op[0] = 2; // a reply sent to the server
    out.push(wrong_op);
    let mut wrong_op = good.clone();
    wrong_op[0] = 7;
    out.push(wrong_op);
    let mut token_ring = good.clone();
    token_ring[1] = 6;
    out.push(token_ring);
    let mut long_hw = good.clone();
    long_hw[2] = 200; // hlen larger than chaddr
    out.push(long_hw);
    out
}

#[test]
fn malformed_packets_are_dropped_without_a_reply() {
    let mut p = pool();
    p.set_blocks("local", vec![]);
    let state = State::for_tests(table(), pool(), Settings::default());
    let local = [SERVER];
    let mut buf = Vec::new();
    let mut replies = 0;
    for packet in corpus() {
        if xcat3_network::dhcp::handle(&state, &packet, &local, 67, &mut buf).is_some() {
            replies += 1;

            // Only well-formed DISCOVERs may be answered: check it decodes as a reply.
            let m = Message::decode(&mut Decoder::new(&buf)).unwrap();
            assert_eq!(m.opcode(), Opcode::BootReply);
        }
    }
    // Only the option-overload packet is a valid message (its sname and file fields hold padding).
    assert_eq!(replies, 1, "malformed packets were answered");
    // And the server still answers a good one.
    let good = request(KNOWN, MessageType::Discover).to_vec().unwrap();
    assert!(xcat3_network::dhcp::handle(&state, &good, &local, 67, &mut buf).is_some());
}
