//! Named credential commands (`passwd-create`, `passwd-list`, `passwd-delete`).

use std::io::BufRead as _;
use std::process::ExitCode;

use anyhow::bail;
use serde::Serialize;
use xcat3_proto::pb;

use crate::args::{NameArg, OutputArgs, PasswdCreateArgs};
use crate::client::Connection;
use crate::nodes::key_value;
use crate::output;

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

#[derive(Serialize)]
struct PasswdDoc {
    key: String,
    username: String,
    crypt_method: String,
}

pub async fn passwd_list(conn: &Connection, a: OutputArgs) -> anyhow::Result<ExitCode> {
    let reply = conn
        .passwds()
        .await?
        .list_passwds(pb::ListPasswdsRequest {})
        .await?;
    let docs: Vec<PasswdDoc> = reply
        .into_inner()
        .passwds
        .into_iter()
        .map(|p| PasswdDoc {
            key: p.key,
            username: p.username,
            crypt_method: p.crypt_method,
        })
        .collect();
    output::records(a.format, &["KEY", "USERNAME", "CRYPT_METHOD"], &docs, |d| {
        vec![d.key.clone(), d.username.clone(), d.crypt_method.clone()]
    })?;
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
