//! Node commands: create, import, update, delete, list, show, export.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use xcat3_proto::pb;

use crate::args::{
    BootdevArgs, CreateArgs, DeleteArgs, DeployArgs, EventsArgs, ExportArgs, Format, ImportArgs,
    ListArgs, PowerArgs, ShowArgs, UpdateArgs,
};
use crate::client::Connection;
use crate::doc::{NodeDoc, NodesDoc, read_nodes};
use crate::output::{self, ShowOk};
use crate::time::Time;

/// Splits `key=value` at the first `=`.
pub fn key_value(s: &str) -> anyhow::Result<(&str, &str)> {
    s.split_once('=')
        .with_context(|| format!("{s:?}: expected key=value"))
}

/// Parses `k=v,k=v` (the `--control` and `--nic` syntax).
fn pairs(s: &str) -> anyhow::Result<Vec<(String, String)>> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| key_value(p).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())))
        .collect()
}

/// The attributes of `create NODERANGE attr=value ... --control k=v,... --nic k=v,...`, as the
/// paths of `update` (the api parses both with one grammar): `--control k=v` is
/// `control/k=v`, and each `--nic mac=..,ip=..,name=..,primary=..` becomes `nics/<name>/mac`,
/// `nics/<name>/ip`, `nics/<name>/primary` (`<name>`: eth0, eth1, ... when not given); then
/// the `attr=value` arguments.
fn attributes(
    attrs: &[String],
    control: Option<&str>,
    nics: &[String],
) -> anyhow::Result<Vec<pb::AttributeChange>> {
    let change = |path: String, value: String| pb::AttributeChange { path, value };
    let mut out = Vec::new();
    if let Some(c) = control {
        for (k, v) in pairs(c)? {
            out.push(change(format!("control/{k}"), v));
        }
    }
    for (i, spec) in nics.iter().enumerate() {
        let fields = pairs(spec)?;
        let mut name = format!("eth{i}");
        let mut rest = Vec::new();
        for (k, v) in fields {
            match k.as_str() {
                "name" => name = v,
                "mac" | "ip" | "primary" => rest.push((k, v)),
                other => bail!("--nic: unknown key {other:?}; use mac, ip, name, primary"),
            }
        }
        // The MAC makes the NIC, so it goes first.
        rest.sort_by_key(|(k, _)| k != "mac");
        for (k, v) in rest {
            out.push(change(format!("nics/{name}/{k}"), v));
        }
    }
    // Last, so that `nics/eth1/primary=yes` finds the NIC a `--nic` made.
    for attr in attrs {
        let (k, v) = key_value(attr)?;
        out.push(change(k.to_owned(), v.to_owned()));
    }
    Ok(out)
}

async fn create_from_docs(
    conn: &Connection,
    docs: Vec<NodeDoc>,
    all_or_nothing: bool,
) -> anyhow::Result<ExitCode> {
    let nodes: Vec<pb::Node> = docs.into_iter().map(NodeDoc::into_pb).collect();
    let req = pb::CreateNodesRequest {
        nodes,
        all_or_nothing,
        ..Default::default()
    };
    let stream = conn.nodes().await?.create_nodes(req).await?.into_inner();
    output::results(stream, "created", ShowOk::Few).await
}

pub async fn create(conn: &Connection, a: CreateArgs) -> anyhow::Result<ExitCode> {
    if let Some(file) = &a.file {
        if !a.args.is_empty() || a.control.is_some() || !a.nics.is_empty() {
            bail!("create -f FILE takes no noderange or attributes: they come from the file");
        }
        return create_from_docs(conn, read_nodes(file)?, a.bulk.all_or_nothing).await;
    }
    let Some((noderange, attrs)) = a.args.split_first() else {
        bail!("create: give a noderange (or -f FILE)");
    };
    let req = pb::CreateNodesRequest {
        noderange: noderange.clone(),
        attributes: attributes(attrs, a.control.as_deref(), &a.nics)?,
        all_or_nothing: a.bulk.all_or_nothing,
        ..Default::default()
    };
    let stream = conn.nodes().await?.create_nodes(req).await?.into_inner();
    output::results(stream, "created", ShowOk::Few).await
}

pub async fn import(conn: &Connection, a: ImportArgs) -> anyhow::Result<ExitCode> {
    create_from_docs(conn, read_nodes(&a.file)?, a.bulk.all_or_nothing).await
}

pub async fn update(conn: &Connection, a: UpdateArgs) -> anyhow::Result<ExitCode> {
    let changes = a
        .changes
        .iter()
        .map(|c| {
            key_value(c).map(|(path, value)| pb::AttributeChange {
                path: path.to_owned(),
                value: value.to_owned(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let req = pb::UpdateNodesRequest {
        noderange: a.noderange,
        changes,
        all_or_nothing: a.bulk.all_or_nothing,
    };
    let stream = conn.nodes().await?.update_nodes(req).await?.into_inner();
    output::results(stream, "updated", ShowOk::Few).await
}

pub async fn delete(conn: &Connection, a: DeleteArgs) -> anyhow::Result<ExitCode> {
    let req = pb::DeleteNodesRequest {
        noderange: a.noderange,
        all_or_nothing: a.bulk.all_or_nothing,
    };
    let stream = conn.nodes().await?.delete_nodes(req).await?.into_inner();
    output::results(stream, "deleted", ShowOk::Few).await
}

/// The nodes of a noderange, and the names that are not nodes.
async fn fetch(
    conn: &Connection,
    noderange: &str,
) -> anyhow::Result<(Vec<pb::Node>, Vec<pb::NodeResult>)> {
    let req = pb::GetNodesRequest {
        noderange: noderange.to_owned(),
    };
    collect_pages(conn.nodes().await?.get_nodes(req).await?.into_inner()).await
}

async fn collect_pages(
    mut stream: tonic::Streaming<pb::NodePage>,
) -> anyhow::Result<(Vec<pb::Node>, Vec<pb::NodeResult>)> {
    let (mut nodes, mut missing) = (Vec::new(), Vec::new());
    while let Some(page) = stream.message().await? {
        nodes.extend(page.nodes);
        missing.extend(page.errors);
    }
    Ok((nodes, missing))
}

/// Reports names that are not nodes on stderr; exit status 1 if there were any.
fn report_missing(missing: &[pb::NodeResult]) -> ExitCode {
    for m in missing {
        eprintln!("{}: Error: no such node", m.name);
    }
    if missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub async fn list(conn: &Connection, a: ListArgs) -> anyhow::Result<ExitCode> {
    let (nodes, missing) = fetch(conn, a.noderange.as_deref().unwrap_or("")).await?;
    match a.output.format {
        Format::Table => {
            let rows: Vec<Vec<String>> = nodes
                .iter()
                .map(|n| {
                    let ip = n
                        .nics
                        .iter()
                        .find(|x| x.primary)
                        .map(|x| x.ip.clone())
                        .unwrap_or_default();
                    vec![
                        n.name.clone(),
                        n.groups.join(","),
                        n.mgt.clone(),
                        n.arch.clone(),
                        n.netboot.clone(),
                        ip,
                        n.provision_state.clone(),
                        n.power_state.clone(),
                    ]
                })
                .collect();
            output::table(
                &[
                    "NAME", "GROUPS", "MGT", "ARCH", "NETBOOT", "IP", "STATE", "POWER",
                ],
                &rows,
            );
        }
        format => output::document(
            format,
            &NodesDoc {
                nodes: nodes.into_iter().map(NodeDoc::from).collect(),
            },
        )?,
    }
    Ok(report_missing(&missing))
}

pub async fn show(conn: &Connection, a: ShowArgs) -> anyhow::Result<ExitCode> {
    let (nodes, missing) = fetch(conn, &a.noderange).await?;
    let doc = NodesDoc {
        nodes: nodes.into_iter().map(NodeDoc::from).collect(),
    };
    output::document(a.format.unwrap_or(Format::Yaml), &doc)?;
    Ok(report_missing(&missing))
}

pub async fn export(conn: &Connection, a: ExportArgs) -> anyhow::Result<ExitCode> {
    let (nodes, missing) = if a.with_secrets {
        let req = pb::GetNodesRequest {
            noderange: a.noderange.clone(),
        };
        collect_pages(conn.nodes().await?.export_nodes(req).await?.into_inner()).await?
    } else {
        fetch(conn, &a.noderange).await?
    };
    let docs: Vec<NodeDoc> = nodes.into_iter().map(NodeDoc::from).collect();
    let masked = docs
        .iter()
        .flat_map(|d| d.control.values())
        .filter(|v| *v == xcat3_types::MASK)
        .count();
    let count = docs.len();
    let text = serde_yaml::to_string(&NodesDoc { nodes: docs })?;
    write_private(&a.file, text.as_bytes())
        .with_context(|| format!("write {}", a.file.display()))?;
    println!("Exported {count} node(s) to {}", a.file.display());
    if masked > 0 {
        eprintln!(
            "note: {masked} secret value(s) are written as ******, which import refuses; \
             `export --with-secrets` (admin token) keeps them"
        );
    }
    Ok(report_missing(&missing))
}

/// Writes a file only its owner can read (mode 0600, also when it existed before): an export may
/// hold BMC passwords, and even a masked one maps the site's BMCs. Written to a temporary file
/// first, so a failed export leaves the old file whole.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

pub async fn power(conn: &Connection, a: PowerArgs) -> anyhow::Result<ExitCode> {
    let req = pb::PowerRequest {
        noderange: a.noderange,
        action: a.action,
        no_wait: a.no_wait,
    };
    let stream = conn.nodes().await?.power(req).await?.into_inner();
    output::results(stream, "power", ShowOk::All).await
}

pub async fn deploy(conn: &Connection, a: DeployArgs) -> anyhow::Result<ExitCode> {
    if a.delete {
        return undeploy(conn, a.noderange).await;
    }
    let mut keys = Vec::new();
    for path in &a.ssh_keys {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read the ssh key file {}", path.display()))?;
        keys.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    let req = pb::DeployRequest {
        noderange: a.noderange,
        osimage: a.osimage.unwrap_or_default(),
        reboot: a.reboot,
        timeout_seconds: a.timeout.map_or(0, |m| m.saturating_mul(60)),
        ssh_authorized_keys: keys,
    };
    let stream = conn.nodes().await?.deploy(req).await?.into_inner();
    output::results(stream, "deploy", ShowOk::All).await
}

pub async fn undeploy(conn: &Connection, noderange: String) -> anyhow::Result<ExitCode> {
    let stream = conn
        .nodes()
        .await?
        .undeploy(pb::UndeployRequest { noderange })
        .await?
        .into_inner();
    output::results(stream, "undeploy", ShowOk::All).await
}

pub async fn bootdev(conn: &Connection, a: BootdevArgs) -> anyhow::Result<ExitCode> {
    let req = pb::BootDeviceRequest {
        noderange: a.noderange,
        device: a.device,
        no_wait: a.no_wait,
    };
    let stream = conn.nodes().await?.boot_device(req).await?.into_inner();
    output::results(stream, "bootdev", ShowOk::All).await
}

#[derive(serde::Serialize)]
struct EventDoc {
    node: String,
    at: Time,
    kind: String,
    message: String,
    conductor: String,
}

pub async fn events(conn: &Connection, a: EventsArgs) -> anyhow::Result<ExitCode> {
    let req = pb::GetEventsRequest {
        noderange: a.noderange,
        limit: a.limit,
    };
    let mut stream = conn.nodes().await?.get_events(req).await?.into_inner();
    let mut docs = Vec::new();
    while let Some(page) = stream.message().await? {
        docs.extend(page.events.into_iter().map(|e| EventDoc {
            node: e.node,
            at: Time::from_pb(e.at),
            kind: e.kind,
            message: e.message,
            conductor: e.conductor,
        }));
    }
    output::records(
        a.output.format,
        &["AT", "NODE", "KIND", "MESSAGE", "CONDUCTOR"],
        &docs,
        |e| {
            vec![
                e.at.table_or("-"),
                e.node.clone(),
                e.kind.clone(),
                e.message.clone(),
                e.conductor.clone(),
            ]
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_create_becomes_update_paths() {
        let a = attributes(
            &["mgt=kvm".into(), "netboot=pxe".into()],
            Some("ssh_username=root,ssh_address=11.5.102.1"),
            &[
                "ip=11.5.102.60,name=eth0,primary=True,mac=52:54:00:36:ac:b1".into(),
                "mac=52:54:00:36:ac:b2".into(),
            ],
        )
        .unwrap();
        let paths: Vec<String> = a
            .iter()
            .map(|c| format!("{}={}", c.path, c.value))
            .collect();
        assert_eq!(
            paths,
            [
                "control/ssh_username=root",
                "control/ssh_address=11.5.102.1",
                "nics/eth0/mac=52:54:00:36:ac:b1",
                "nics/eth0/ip=11.5.102.60",
                "nics/eth0/primary=True",
                "nics/eth1/mac=52:54:00:36:ac:b2",
                "mgt=kvm",
                "netboot=pxe",
            ]
        );
        assert!(attributes(&["colour".into()], None, &[]).is_err());
        assert!(attributes(&[], None, &["mac=1,bogus=2".into()]).is_err());
    }
}
