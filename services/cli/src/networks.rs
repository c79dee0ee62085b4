//! Network commands, and the machines the network agents have seen (`discovered-list`).

use std::process::ExitCode;

use anyhow::bail;
use serde::Serialize;
use xcat3_proto::pb;

use crate::args::{Format, NameArg, NameOutputArgs, NetworkCreateArgs, OutputArgs};
use crate::client::Connection;
use crate::nodes::key_value;
use crate::output;
use crate::time::Time;

#[derive(Serialize)]
struct NetworkDoc {
    name: String,
    subnet: String,
    netmask: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    gateway: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    dynamic_range: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    nameservers: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    domain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
}

impl From<pb::Network> for NetworkDoc {
    fn from(n: pb::Network) -> Self {
        NetworkDoc {
            name: n.name,
            subnet: n.subnet,
            netmask: n.netmask,
            gateway: n.gateway,
            dynamic_range: n.dynamic_range,
            nameservers: n.nameservers,
            domain: n.domain,
            mtu: (n.mtu != 0).then_some(n.mtu),
        }
    }
}

fn print_networks(format: Format, nets: Vec<pb::Network>) -> anyhow::Result<()> {
    let docs: Vec<NetworkDoc> = nets.into_iter().map(NetworkDoc::from).collect();
    output::records(
        format,
        &[
            "NAME",
            "SUBNET",
            "NETMASK",
            "GATEWAY",
            "DYNAMIC_RANGE",
            "NAMESERVERS",
            "DOMAIN",
        ],
        &docs,
        |n| {
            vec![
                n.name.clone(),
                n.subnet.clone(),
                n.netmask.clone(),
                n.gateway.clone(),
                n.dynamic_range.clone(),
                n.nameservers.join(","),
                n.domain.clone(),
            ]
        },
    )
}

fn changes(attrs: &[String]) -> anyhow::Result<Vec<pb::AttributeChange>> {
    attrs
        .iter()
        .map(|s| {
            key_value(s).map(|(p, v)| pb::AttributeChange {
                path: p.to_owned(),
                value: v.to_owned(),
            })
        })
        .collect()
}

pub async fn network_create(conn: &Connection, a: NetworkCreateArgs) -> anyhow::Result<ExitCode> {
    let mut net = pb::Network {
        name: a.name,
        ..Default::default()
    };
    for attr in &a.attrs {
        let (k, v) = key_value(attr)?;
        match k {
            "subnet" => net.subnet = v.to_owned(),
            "netmask" => net.netmask = v.to_owned(),
            "gateway" => net.gateway = v.to_owned(),
            "dynamic_range" => net.dynamic_range = v.to_owned(),
            "nameservers" => {
                net.nameservers = v
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }
            "domain" => net.domain = v.to_owned(),
            "mtu" => {
                net.mtu = v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("mtu: {v:?} is not a number"))?
            }
            other => bail!(
                "{other}: unknown attribute; use subnet, netmask, gateway, dynamic_range, nameservers, domain, mtu"
            ),
        }
    }
    let created = conn
        .networks()
        .await?
        .create_network(net)
        .await?
        .into_inner();
    println!("{}: created", created.name);
    Ok(ExitCode::SUCCESS)
}

pub async fn network_update(conn: &Connection, a: NetworkCreateArgs) -> anyhow::Result<ExitCode> {
    let changes = changes(&a.attrs)?;
    if changes.is_empty() {
        bail!("network-update: nothing to change");
    }
    let req = pb::UpdateNetworkRequest {
        name: a.name,
        changes,
    };
    let updated = conn
        .networks()
        .await?
        .update_network(req)
        .await?
        .into_inner();
    println!("{}: updated", updated.name);
    Ok(ExitCode::SUCCESS)
}

pub async fn network_delete(conn: &Connection, a: NameArg) -> anyhow::Result<ExitCode> {
    let req = pb::NetworkRef {
        name: a.name.clone(),
    };
    conn.networks().await?.delete_network(req).await?;
    println!("{}: deleted", a.name);
    Ok(ExitCode::SUCCESS)
}

pub async fn network_list(conn: &Connection, a: OutputArgs) -> anyhow::Result<ExitCode> {
    let reply = conn
        .networks()
        .await?
        .list_networks(pb::ListNetworksRequest {})
        .await?;
    print_networks(a.format, reply.into_inner().networks)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn network_show(conn: &Connection, a: NameOutputArgs) -> anyhow::Result<ExitCode> {
    let net = conn
        .networks()
        .await?
        .get_network(pb::NetworkRef { name: a.name })
        .await?;
    print_networks(a.output.format.for_one(), vec![net.into_inner()])?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct DiscoveredDoc {
    mac: String,
    ip: String,
    network: String,
    agent: String,
    client_arch: i32,
    vendor_class: String,
    first_seen: Time,
    last_seen: Time,
}

pub async fn discovered_list(conn: &Connection, a: OutputArgs) -> anyhow::Result<ExitCode> {
    let mut machines = Vec::new();
    let mut page_token = String::new();
    loop {
        let reply = conn
            .networks()
            .await?
            .list_discovered(pb::ListDiscoveredRequest {
                page_size: 5000,
                page_token,
            })
            .await?
            .into_inner();
        machines.extend(reply.machines);
        if reply.next_page_token.is_empty() {
            break;
        }
        page_token = reply.next_page_token;
    }
    let docs: Vec<DiscoveredDoc> = machines
        .into_iter()
        .map(|m| DiscoveredDoc {
            first_seen: Time::from_pb(m.first_seen),
            last_seen: Time::from_pb(m.last_seen),
            mac: m.mac,
            ip: m.ip,
            network: m.network,
            agent: m.agent,
            client_arch: m.client_arch,
            vendor_class: m.vendor_class,
        })
        .collect();
    output::records(
        a.format,
        &[
            "MAC",
            "IP",
            "NETWORK",
            "ARCH",
            "VENDOR CLASS",
            "AGENT",
            "LAST SEEN",
        ],
        &docs,
        |d| {
            let arch = match d.client_arch {
                -1 => "-".to_owned(),
                0 => "bios".to_owned(),
                6 | 7 | 9 => "uefi-x86".to_owned(),
                11 => "uefi-arm64".to_owned(),
                n => n.to_string(),
            };
            vec![
                d.mac.clone(),
                d.ip.clone(),
                d.network.clone(),
                arch,
                d.vendor_class.clone(),
                d.agent.clone(),
                d.last_seen.table_or("-"),
            ]
        },
    )?;
    Ok(ExitCode::SUCCESS)
}
