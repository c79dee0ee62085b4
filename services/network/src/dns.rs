//! DNS for managed names: `A` records for `<node>.<domain>` (and the bare node name) and `PTR`
//! records for every reserved address, answered from the boot table with the authoritative flag.
//! Names outside the managed domains are refused: the agent is not a recursive resolver.

use std::net::Ipv4Addr;
use std::str::FromStr as _;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::State;
use crate::table::Table;

/// Time to live of the records, in seconds: short, the inventory changes.
const TTL: u32 = 60;

/// What a name means to us.
enum Lookup {
    /// The name exists, with these records of the asked type (maybe none).
    Found(Vec<RData>),
    /// Inside a managed zone, but no such name.
    NoName,
    /// Not ours.
    Refused,
}

fn forward(table: &Table, name: &str, qtype: RecordType) -> Lookup {
    let (label, domain) = name.split_once('.').unwrap_or((name, ""));
    let managed = domain.is_empty()
        || table.networks.iter().any(|n| {
            n.domain
                .as_deref()
                .is_some_and(|d| d.eq_ignore_ascii_case(domain))
        });
    if !managed {
        return Lookup::Refused;
    }
    let mut addrs: Vec<(bool, Ipv4Addr)> = table
        .by_node
        .get(&label.to_ascii_lowercase())
        .into_iter()
        .flatten()
        .filter_map(|mac| table.hosts.get(mac))
        .filter_map(|h| {
            let ip = h.ip?;
            let net = table.network_of(ip)?;
            let in_domain = domain.is_empty()
                || net
                    .domain
                    .as_deref()
                    .is_some_and(|d| d.eq_ignore_ascii_case(domain));
            in_domain.then_some((h.primary, ip))
        })
        .collect();
    if addrs.is_empty() {
        return Lookup::NoName;
    }
    addrs.sort_by_key(|(primary, ip)| (!primary, *ip));
    match qtype {
        RecordType::A | RecordType::ANY => {
            Lookup::Found(addrs.into_iter().map(|(_, ip)| RData::A(A(ip))).collect())
        }
        _ => Lookup::Found(Vec::new()),
    }
}

fn reverse(table: &Table, name: &str, qtype: RecordType) -> Lookup {
    let Some(rest) = name.strip_suffix(".in-addr.arpa") else {
        return Lookup::Refused;
    };
    let parts: Vec<&str> = rest.split('.').collect();
    let octets: Option<Vec<u8>> = parts.iter().rev().map(|p| p.parse().ok()).collect();
    let Some(ip) = octets
        .filter(|o| o.len() == 4)
        .map(|o| Ipv4Addr::new(o[0], o[1], o[2], o[3]))
    else {
        return Lookup::Refused;
    };
    let Some(net) = table.network_of(ip) else {
        return Lookup::Refused;
    };
    let Some(host) = table.by_ip.get(&ip).and_then(|mac| table.hosts.get(mac)) else {
        return Lookup::NoName;
    };
    let fqdn = match &net.domain {
        Some(d) => format!("{}.{d}.", host.node),
        None => format!("{}.", host.node),
    };
    match (qtype, Name::from_str(&fqdn)) {
        (RecordType::PTR | RecordType::ANY, Ok(target)) => {
            Lookup::Found(vec![RData::PTR(PTR(target))])
        }
        _ => Lookup::Found(Vec::new()),
    }
}

/// The answer to one query packet, or none for packets that are not queries at all.
pub fn answer(table: &Table, packet: &[u8]) -> Option<Vec<u8>> {
    let query = Message::from_vec(packet).ok()?;
    if query.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.authoritative = true;
    let code = match (query.metadata.op_code, query.queries.as_slice()) {
        (OpCode::Query, [q]) if q.query_class() == DNSClass::IN => {
            reply.add_query(q.clone());
            let name = q.name().to_lowercase().to_ascii();
            let name = name.trim_end_matches('.');
            let lookup = if name.ends_with(".in-addr.arpa") {
                reverse(table, name, q.query_type())
            } else {
                forward(table, name, q.query_type())
            };
            match lookup {
                Lookup::Found(records) => {
                    for r in records {
                        reply.add_answer(Record::from_rdata(q.name().clone(), TTL, r));
                    }
                    ResponseCode::NoError
                }
                Lookup::NoName => ResponseCode::NXDomain,
                Lookup::Refused => {
                    reply.metadata.authoritative = false;
                    ResponseCode::Refused
                }
            }
        }
        (OpCode::Query, _) => ResponseCode::FormErr,
        _ => ResponseCode::NotImp,
    };
    reply.metadata.response_code = code;
    reply.to_vec().ok()
}

/// Answers DNS over UDP on `sock` until `shutdown`.
pub async fn serve(state: Arc<State>, sock: UdpSocket, shutdown: CancellationToken) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, peer) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "DNS receive failed");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let table = state.table();
        // Packets that are not DNS queries get no answer.
        if let Some(reply) = answer(&table, &buf[..len]) {
            state.metrics.dns_answered();
            let _ = sock.send_to(&reply, peer).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_gets_no_answer() {
        let table = Table::default();
        for bad in [&b""[..], b"\x00", b"\x12\x34\x01\x00\x00\x05", &[0xff; 600]] {
            assert!(answer(&table, bad).is_none(), "{bad:?}");
        }
    }
}
