//! Network, OS image, credential and service commands.

use std::io::BufRead as _;
use std::process::ExitCode;

use anyhow::bail;
use serde::Serialize;
use xcat3_proto::pb;

use crate::args::{
    Format, NameArg, NameOutputArgs, NetworkCreateArgs, OutputArgs, PasswdCreateArgs,
};
use crate::client::Connection;
use crate::nodes::key_value;
use crate::output;

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
    if format == Format::Table {
        let rows: Vec<Vec<String>> = nets
            .into_iter()
            .map(|n| {
                vec![
                    n.name,
                    n.subnet,
                    n.netmask,
                    n.gateway,
                    n.dynamic_range,
                    n.nameservers.join(","),
                    n.domain,
                ]
            })
            .collect();
        output::table(
            &[
                "NAME",
                "SUBNET",
                "NETMASK",
                "GATEWAY",
                "DYNAMIC_RANGE",
                "NAMESERVERS",
                "DOMAIN",
            ],
            &rows,
        );
        return Ok(());
    }
    let docs: Vec<NetworkDoc> = nets.into_iter().map(NetworkDoc::from).collect();
    output::document(format, &docs)
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
    let changes = a
        .attrs
        .iter()
        .map(|s| {
            key_value(s).map(|(p, v)| pb::AttributeChange {
                path: p.to_owned(),
                value: v.to_owned(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if changes.is_empty() {
        bail!("network-update: nothing to change");
    }
    let updated = conn
        .networks()
        .await?
        .update_network(pb::UpdateNetworkRequest {
            name: a.name,
            changes,
        })
        .await?
        .into_inner();
    println!("{}: updated", updated.name);
    Ok(ExitCode::SUCCESS)
}

pub async fn network_delete(conn: &Connection, a: NameArg) -> anyhow::Result<ExitCode> {
    conn.networks()
        .await?
        .delete_network(pb::NetworkRef {
            name: a.name.clone(),
        })
        .await?;
    println!("{}: deleted", a.name);
    Ok(ExitCode::SUCCESS)
}

pub async fn network_list(conn: &Connection, a: OutputArgs) -> anyhow::Result<ExitCode> {
    let nets = conn
        .networks()
        .await?
        .list_networks(pb::ListNetworksRequest {})
        .await?
        .into_inner()
        .networks;
    print_networks(a.format, nets)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn network_show(conn: &Connection, a: NameOutputArgs) -> anyhow::Result<ExitCode> {
    let net = conn
        .networks()
        .await?
        .get_network(pb::NetworkRef { name: a.name })
        .await?
        .into_inner();
    let format = if a.output.format == Format::Table {
        Format::Yaml
    } else {
        a.output.format
    };
    print_networks(format, vec![net])?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct OsImageDoc {
    name: String,
    distro: String,
    version: String,
    arch: String,
    install_method: String,
    kernel: String,
    initrd: String,
    repo_root: String,
}

fn print_osimages(format: Format, images: Vec<pb::OsImage>) -> anyhow::Result<()> {
    if format == Format::Table {
        let rows: Vec<Vec<String>> = images
            .into_iter()
            .map(|i| vec![i.name, i.distro, i.version, i.arch, i.install_method])
            .collect();
        output::table(&["NAME", "DISTRO", "VERSION", "ARCH", "METHOD"], &rows);
        return Ok(());
    }
    let docs: Vec<OsImageDoc> = images
        .into_iter()
        .map(|i| OsImageDoc {
            name: i.name,
            distro: i.distro,
            version: i.version,
            arch: i.arch,
            install_method: i.install_method,
            kernel: i.kernel,
            initrd: i.initrd,
            repo_root: i.repo_root,
        })
        .collect();
    output::document(format, &docs)
}

pub async fn osimage_list(conn: &Connection, a: OutputArgs) -> anyhow::Result<ExitCode> {
    let images = conn
        .osimages()
        .await?
        .list_os_images(pb::ListOsImagesRequest {})
        .await?
        .into_inner()
        .osimages;
    print_osimages(a.format, images)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn osimage_show(conn: &Connection, a: NameOutputArgs) -> anyhow::Result<ExitCode> {
    let image = conn
        .osimages()
        .await?
        .get_os_image(pb::OsImageRef { name: a.name })
        .await?
        .into_inner();
    let format = if a.output.format == Format::Table {
        Format::Yaml
    } else {
        a.output.format
    };
    print_osimages(format, vec![image])?;
    Ok(ExitCode::SUCCESS)
}

pub async fn passwd_create(conn: &Connection, a: PasswdCreateArgs) -> anyhow::Result<ExitCode> {
    let mut req = pb::CreatePasswdRequest {
        key: a.key,
        ..Default::default()
    };
    for attr in &a.attrs {
        let (k, v) = key_value(attr)?;
        match k {
            "username" => req.username = v.to_owned(),
            "password" => req.password = v.to_owned(),
            "crypt_method" => req.crypt_method = v.to_owned(),
            other => bail!("{other}: unknown attribute; use username, password, crypt_method"),
        }
    }
    if req.password.is_empty() {
        eprintln!("password (one line on standard input):");
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        req.password = line.trim_end_matches(['\r', '\n']).to_owned();
    }
    let p = conn.passwds().await?.create_passwd(req).await?.into_inner();
    println!("{}: created ({})", p.key, p.crypt_method);
    Ok(ExitCode::SUCCESS)
}

pub async fn passwd_list(conn: &Connection, a: OutputArgs) -> anyhow::Result<ExitCode> {
    let rows = conn
        .passwds()
        .await?
        .list_passwds(pb::ListPasswdsRequest {})
        .await?
        .into_inner()
        .passwds;
    #[derive(Serialize)]
    struct Doc {
        key: String,
        username: String,
        crypt_method: String,
    }
    let docs: Vec<Doc> = rows
        .into_iter()
        .map(|p| Doc {
            key: p.key,
            username: p.username,
            crypt_method: p.crypt_method,
        })
        .collect();
    if a.format == Format::Table {
        let rows: Vec<Vec<String>> = docs
            .into_iter()
            .map(|d| vec![d.key, d.username, d.crypt_method])
            .collect();
        output::table(&["KEY", "USERNAME", "CRYPT_METHOD"], &rows);
    } else {
        output::document(a.format, &docs)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn passwd_delete(conn: &Connection, a: NameArg) -> anyhow::Result<ExitCode> {
    conn.passwds()
        .await?
        .delete_passwd(pb::PasswdRef {
            key: a.name.clone(),
        })
        .await?;
    println!("{}: deleted", a.name);
    Ok(ExitCode::SUCCESS)
}

pub async fn service_list(conn: &Connection, a: OutputArgs) -> anyhow::Result<ExitCode> {
    let services = conn
        .services()
        .await?
        .list_services(pb::ListServicesRequest {})
        .await?
        .into_inner()
        .services;
    #[derive(Serialize)]
    struct Doc {
        hostname: String,
        kind: String,
        id: String,
        version: String,
        online: bool,
        heartbeat_at: String,
    }
    let docs: Vec<Doc> = services
        .into_iter()
        .map(|s| Doc {
            heartbeat_at: s
                .heartbeat_at
                .map(|t| format!("{}", t.seconds))
                .unwrap_or_default(),
            hostname: s.hostname,
            kind: s.kind,
            id: s.id,
            version: s.version,
            online: s.online,
        })
        .collect();
    if a.format == Format::Table {
        let rows: Vec<Vec<String>> = docs
            .into_iter()
            .map(|d| {
                vec![
                    d.hostname,
                    d.kind,
                    if d.online {
                        "online".into()
                    } else {
                        "offline".into()
                    },
                    d.version,
                    d.id,
                ]
            })
            .collect();
        output::table(&["HOST", "KIND", "STATE", "VERSION", "ID"], &rows);
    } else {
        output::document(a.format, &docs)?;
    }
    Ok(ExitCode::SUCCESS)
}
