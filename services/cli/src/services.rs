//! What runs: `service-list` and `conductor-list`.

use std::process::ExitCode;

use serde::Serialize;
use xcat3_proto::pb;

use crate::args::OutputArgs;
use crate::client::Connection;
use crate::output;
use crate::time::Time;

#[derive(Serialize)]
struct ServiceDoc {
    hostname: String,
    kind: String,
    id: String,
    version: String,
    online: bool,
    heartbeat_at: Time,
}

pub async fn service_list(conn: &Connection, a: OutputArgs) -> anyhow::Result<ExitCode> {
    let reply = conn
        .services()
        .await?
        .list_services(pb::ListServicesRequest {})
        .await?;
    let docs: Vec<ServiceDoc> = reply
        .into_inner()
        .services
        .into_iter()
        .map(|s| ServiceDoc {
            heartbeat_at: Time::from_pb(s.heartbeat_at),
            hostname: s.hostname,
            kind: s.kind,
            id: s.id,
            version: s.version,
            online: s.online,
        })
        .collect();
    output::records(
        a.format,
        &["HOST", "KIND", "STATE", "VERSION", "ID"],
        &docs,
        |d| {
            let state = if d.online { "online" } else { "offline" };
            vec![
                d.hostname.clone(),
                d.kind.clone(),
                state.into(),
                d.version.clone(),
                d.id.clone(),
            ]
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct ConductorDoc {
    id: String,
    host: String,
    addr: String,
    shards: Vec<u32>,
    in_flight: u64,
    /// The last answer; none when it did not answer.
    heartbeat_at: Time,
}

pub async fn conductor_list(conn: &Connection, a: OutputArgs) -> anyhow::Result<ExitCode> {
    let reply = conn
        .conductors()
        .await?
        .list_conductors(pb::ListConductorsRequest {})
        .await?
        .into_inner();
    let docs: Vec<ConductorDoc> = reply
        .conductors
        .into_iter()
        .map(|c| ConductorDoc {
            heartbeat_at: Time::from_pb(c.heartbeat_at),
            id: c.id,
            host: c.host,
            addr: c.addr,
            shards: c.shards,
            in_flight: c.in_flight,
        })
        .collect();
    output::records(
        a.format,
        &["ID", "HOST", "SHARDS", "IN-FLIGHT", "ADDRESS", "HEARTBEAT"],
        &docs,
        |c| {
            let heartbeat = c.heartbeat_at.table_or("no answer");
            vec![
                c.id.clone(),
                c.host.clone(),
                c.shards.len().to_string(),
                c.in_flight.to_string(),
                c.addr.clone(),
                heartbeat,
            ]
        },
    )?;
    Ok(ExitCode::SUCCESS)
}
